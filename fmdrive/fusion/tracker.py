"""Multi-object tracker in the odom frame: constant-velocity Kalman filters + Hungarian assignment.

Per track the filter state is (x, y, vx, vy) in odom; height (z), size, yaw, score and label are
smoothed alongside. Acceleration is not a filter state (a constant-acceleration filter at 10 Hz
on 0.1-0.3 m centre noise is mostly noise): each track reports the least-squares slope of its
filtered velocity over the hits of the last `accel_window_s`, what a planner needs to see a lead
that brakes (zeros until the hits span `accel_min_span_s`). Detections from the classical LiDAR
detector have a box yaw that is only known modulo pi (an L-shape has no front), so yaw is blended
modulo pi and flipped to the direction of travel once the track moves.

Per frame:
1. Duplicates are merged: boxes sharing more than `duplicate_overlap` of the smaller footprint are
   one object (the detector splits a cluster and completes both parts to a full box, or reports a
   fragment next to the whole; two objects cannot overlap).
2. Association, three rounds of scipy's linear_sum_assignment on the centre distance between the
   predicted track and each detection: confirmed tracks, then lost ones (re-identification), then
   tentative ones. Gated by `gate_m` (widened for one-hit tracks by their class's top speed), class
   compatibility and footprint area ratio.
3. Births: an unmatched detection starts a track unless it lies inside a live track's box.

Lifecycle: a new track is tentative; after `min_hits` hits it is confirmed and published; a track
without a hit for more than `max_age_s` is no longer published. A tentative one is then deleted, a
confirmed one is kept "lost" for another `reid_window_s` and takes its id back if a detection shows
up where it predicts the object. Ids are integers from 1, never reused until reset().

ROS-free and vectorised over tracks: state means are an (N, 4) array, covariances (N, 4, 4).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from fmdrive.config import CLASSES, UNKNOWN
from fmdrive.objects import Object3D

NS_PER_S = 1_000_000_000
_UNASSIGNED_COST = 1e6
# Fastest plausible motion per class over ground (m/s): bounds how far a track with one hit (no
# velocity yet) may move to its second detection. Unknown objects get `unknown_velocity_gate_mps`.
MAX_SPEED_MPS = {'car': 40.0, 'cyclist': 12.0, 'pedestrian': 4.0, 'cone': 1.0}
# Label pairs a detector confuses often enough that a track may take a detection of the other one.
# The classical detector labels by cluster size, so small objects of similar footprint swap labels.
_CONFUSABLE = {frozenset(('pedestrian', 'cyclist')), frozenset(('pedestrian', 'cone'))}


@dataclass
class TrackerParams:
    max_age_s: float = 0.5              # a track without a hit for longer than this is not published
    reid_window_s: float = 2.0          # ...but a confirmed one is kept this long to take back its id
    gate_m: float = 3.0                 # largest centre distance (prediction -> detection) to match
    min_hits: int = 2                   # a track is confirmed (published) after this many hits
    measurement_std_m: float = 0.25     # detection centre noise (Kalman R)
    accel_std_mps2: float = 1.5         # white-acceleration process noise (Kalman Q)
    init_velocity_std_mps: float = 5.0  # velocity uncertainty of a new track
    unknown_velocity_gate_mps: float = 15.0  # gate widening per second for tracks with one hit
    class_mismatch_cost_m: float = 0.5  # extra cost for a compatible but different label
    max_area_ratio: float = 4.0         # footprints (length x width) further apart are not one object
    yaw_alpha: float = 0.4              # exponential smoothing of yaw, size, height and score
    size_alpha: float = 0.2
    z_alpha: float = 0.3
    score_alpha: float = 0.3
    miss_score_decay: float = 0.9       # score factor per frame without a hit
    moving_speed_mps: float = 1.0       # above this the box heading follows the velocity
    heading_ambiguous: bool = True      # detector yaw known only modulo pi (classical L-shape boxes)
    label_history: int = 20             # last N labels vote for the track's label
    duplicate_overlap: float = 0.5      # boxes sharing more than this of the smaller footprint are one object
    accel_window_s: float = 1.0         # acceleration = slope of the filtered velocity over this long
    accel_min_span_s: float = 0.5       # ...from hits spanning at least this (else reported as 0)

    def __post_init__(self):
        checks = {'max_age_s': self.max_age_s > 0, 'gate_m': self.gate_m > 0,
                  'reid_window_s': self.reid_window_s >= 0,
                  'min_hits': int(self.min_hits) >= 1, 'measurement_std_m': self.measurement_std_m > 0,
                  'accel_std_mps2': self.accel_std_mps2 > 0,
                  'init_velocity_std_mps': self.init_velocity_std_mps > 0,
                  'max_area_ratio': self.max_area_ratio >= 1,
                  'label_history': int(self.label_history) >= 1,
                  'accel_window_s': self.accel_window_s > 0, 'accel_min_span_s': self.accel_min_span_s > 0}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f'TrackerParams.{name} must be positive (min_hits and label_history '
                                 f'>= 1), got {getattr(self, name)!r}')
        for name in ('yaw_alpha', 'size_alpha', 'z_alpha', 'score_alpha', 'miss_score_decay',
                     'duplicate_overlap'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'TrackerParams.{name} must be in [0, 1], got {getattr(self, name)!r}')
        self.min_hits = int(self.min_hits)
        self.label_history = int(self.label_history)


def labels_compatible(a: str, b: str) -> bool:
    """May a track labelled a take a detection labelled b? Unknown matches everything."""
    return a == b or UNKNOWN in (a, b) or frozenset((a, b)) in _CONFUSABLE


def wrap_angle(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def wrap_half_turn(a):
    """An angle modulo pi, in [-pi/2, pi/2): the yaw difference of two boxes with no front."""
    return (np.asarray(a) + np.pi / 2) % np.pi - np.pi / 2


def is_valid_detection(obj: Object3D) -> bool:
    """False for detections with NaN/inf anywhere that matters, a non-positive size or no label."""
    try:
        values = np.concatenate([obj.center, obj.size, [obj.yaw_rad, obj.score]]).astype(np.float64)
    except (TypeError, ValueError, AttributeError):
        return False
    return bool(np.all(np.isfinite(values)) and np.all(obj.size > 0) and isinstance(obj.label, str))


def bev_boxes(objects: list[Object3D]) -> np.ndarray:
    """(N, 5) x, y, length, width, yaw_rad rows."""
    if not objects:
        return np.zeros((0, 5))
    return np.array([[o.center[0], o.center[1], o.size[0], o.size[1], o.yaw_rad] for o in objects])


def overlap_of_smaller(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(N, M) BEV intersection area over the smaller box's area (1: one box lies inside the other).
    Pairs whose circumscribed circles are apart are skipped (0)."""
    from fmdrive.bev import bev_corners, intersection_area_pairs
    out = np.zeros((len(boxes_a), len(boxes_b)))
    if out.size == 0:
        return out
    radius_a = 0.5 * np.hypot(boxes_a[:, 2], boxes_a[:, 3])
    radius_b = 0.5 * np.hypot(boxes_b[:, 2], boxes_b[:, 3])
    dist = np.hypot(boxes_a[:, None, 0] - boxes_b[None, :, 0], boxes_a[:, None, 1] - boxes_b[None, :, 1])
    ii, jj = np.nonzero(dist < radius_a[:, None] + radius_b[None, :])
    if ii.size:
        inter = intersection_area_pairs(bev_corners(boxes_a[ii]), bev_corners(boxes_b[jj]))
        smaller = np.minimum(boxes_a[ii, 2] * boxes_a[ii, 3], boxes_b[jj, 2] * boxes_b[jj, 3])
        out[ii, jj] = inter / np.maximum(smaller, 1e-9)
    return out


def merge_duplicates(detections: list[Object3D], max_overlap: float) -> list[Object3D]:
    """One detection per physical object: a box sharing more than max_overlap of the smaller
    footprint with a higher-scored box is the same object (a cluster split in two, each part
    completed to a full box, or a fragment next to the whole). Two boxes of about the same
    footprint are averaged (score-weighted centre); a much smaller one is absorbed."""
    if len(detections) < 2 or max_overlap >= 1.0:
        return detections
    boxes = bev_boxes(detections)
    overlap = overlap_of_smaller(boxes, boxes)
    np.fill_diagonal(overlap, 0.0)
    if not (overlap > max_overlap).any():
        return detections
    order = np.argsort([-d.score for d in detections], kind='stable')
    area = boxes[:, 2] * boxes[:, 3]
    kept: list[int] = []
    absorbed: dict[int, list[int]] = {}
    for i in order:
        owner = next((k for k in kept if overlap[i, k] > max_overlap), None)
        if owner is None:
            kept.append(int(i))
        else:
            absorbed.setdefault(owner, []).append(int(i))
    out = []
    for k in sorted(kept):
        det = detections[k]
        twins = [j for j in absorbed.get(k, []) if area[j] > 0.5 * area[k]]
        if twins:
            group = [k] + twins
            w = np.array([max(detections[j].score, 1e-3) for j in group])
            center = (np.array([detections[j].center for j in group]) * w[:, None]).sum(0) / w.sum()
            det = Object3D(center, det.size.copy(), det.yaw_rad, det.label, det.score, det.id,
                           det.velocity.copy(), det.box2d, det.embedding, det.embedding_space)
        out.append(det)
    return out


def velocity_slope(t_s: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """(2,) least-squares slope (m/s^2) of velocities (N, 2) at times t_s (N,), N >= 2 distinct
    times: the acceleration a track reports (and the planning dataset gives its ground truth)."""
    t = np.asarray(t_s, np.float64) - np.mean(t_s)
    v = np.asarray(velocity, np.float64)
    return (t[:, None] * (v - v.mean(0))).sum(0) / float((t * t).sum())


@dataclass
class _Track:
    id: int
    last_hit_ns: int
    z: float
    size: np.ndarray
    yaw_rad: float
    score: float
    labels: deque                       # (label, score) of recent hits
    label: str = UNKNOWN                # majority over `labels`, refreshed by vote_label()
    hits: int = 1
    confirmed: bool = False
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    embedding_space: str = ''
    velocities: deque = field(default_factory=lambda: deque(maxlen=64))   # (stamp_ns, vx, vy) after each hit

    def acceleration(self, window_s: float, min_span_s: float) -> np.ndarray:
        """(2,) least-squares slope of the filtered velocity over the hits of the last window_s
        (m/s^2); zeros when those hits span less than min_span_s (a new track, a long gap)."""
        if len(self.velocities) < 3:
            return np.zeros(2)
        last = self.velocities[-1][0]
        rows = np.array([r for r in self.velocities if last - r[0] <= window_s * NS_PER_S + 1e3], float)
        t = (rows[:, 0] - last) / NS_PER_S
        if len(rows) < 3 or t[-1] - t[0] < min_span_s:
            return np.zeros(2)
        return velocity_slope(t, rows[:, 1:])

    def vote_label(self) -> None:
        """Score-weighted majority over the history; unknown only if nothing else was seen."""
        votes: dict[str, float] = {}
        for label, score in self.labels:
            votes[label] = votes.get(label, 0.0) + max(score, 1e-3)
        known = {k: v for k, v in votes.items() if k != UNKNOWN}
        if not known:
            self.label = UNKNOWN
            return
        order = {c: i for i, c in enumerate(CLASSES)}
        # Highest vote wins; ties go to the earlier class in CLASSES, then alphabetical: deterministic.
        self.label = min(known, key=lambda k: (-known[k], order.get(k, len(order)), k))


class MultiObjectTracker:
    """Tracks Object3D detections in the odom frame; update() returns the confirmed tracks."""

    def __init__(self, params: TrackerParams | None = None):
        self.params = params or TrackerParams()
        p = self.params
        self._R = np.eye(2) * p.measurement_std_m ** 2
        self.reset()
        self.last_warning: str | None = None
        self.last_dropped = 0

    # ---------------------------------------------------------------- public
    def reset(self) -> None:
        """Forget all tracks; ids start again from 1."""
        self._x = np.zeros((0, 4))
        self._P = np.zeros((0, 4, 4))
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._stamp_ns: int | None = None

    def transform(self, T_new_old: np.ndarray) -> None:
        """Re-express every track in another frame (a planar 4x4 rigid transform, yaw about z).

        Used when the tracking frame changes, e.g. from base_link (no odometry yet) to odom.
        """
        R = np.asarray(T_new_old, dtype=np.float64)[:2, :2]
        t = np.asarray(T_new_old, dtype=np.float64)[:2, 3]
        G = np.zeros((4, 4))
        G[:2, :2] = G[2:, 2:] = R
        self._x = self._x @ G.T
        self._x[:, :2] += t
        self._P = G @ self._P @ G.T
        dyaw = float(np.arctan2(R[1, 0], R[0, 0]))
        dz = float(np.asarray(T_new_old)[2, 3])
        for track in self._tracks:
            track.yaw_rad = float(wrap_angle(track.yaw_rad + dyaw))
            track.z += dz
            track.velocities = deque(((st, *(R @ (vx, vy))) for st, vx, vy in track.velocities),
                                     maxlen=track.velocities.maxlen)

    @property
    def num_tracks(self) -> int:
        """Live tracks, tentative included (not the lost ones kept for re-identification)."""
        return int((~self._lost()).sum()) if self._tracks else 0

    def update(self, detections_odom: list[Object3D], stamp_ns: int) -> list[Object3D]:
        """Advance to stamp_ns, fuse the detections (odom frame), return confirmed tracks by id.

        A repeated stamp is skipped (the current tracks are returned); a stamp older than the last
        one resets the tracker (a looped bag). Both set `last_warning`. Detections with NaN/inf are
        dropped and counted in `last_dropped`.
        """
        self.last_warning = None
        stamp_ns = int(stamp_ns)
        if self._stamp_ns is not None and stamp_ns == self._stamp_ns:
            self.last_warning = f'repeated stamp {stamp_ns} ns: frame skipped by the tracker'
            self.last_dropped = 0
            return self._output()
        if self._stamp_ns is not None and stamp_ns < self._stamp_ns:
            back_s = (self._stamp_ns - stamp_ns) / NS_PER_S
            self.last_warning = f'stamp went back by {back_s:.3f} s (bag loop?): tracker reset'
            self.reset()
        detections = [d for d in detections_odom if is_valid_detection(d)]
        self.last_dropped = len(detections_odom) - len(detections)
        detections = merge_duplicates(detections, self.params.duplicate_overlap)

        dt_s = 0.0 if self._stamp_ns is None else (stamp_ns - self._stamp_ns) / NS_PER_S
        self._stamp_ns = stamp_ns
        if self._tracks:
            self._predict(dt_s)
            self._delete_expired(stamp_ns)
        matches, unmatched_dets = self._associate(detections, dt_s)
        self._update_matched(matches, detections, stamp_ns)
        matched_tracks = {t for t, _ in matches}
        for t in range(len(self._tracks)):
            if t not in matched_tracks:
                self._tracks[t].score *= self.params.miss_score_decay
        for d in self._births(detections, unmatched_dets):
            self._start_track(detections[d], stamp_ns)
        self._align_heading_with_velocity()
        return self._output()

    # ---------------------------------------------------------------- Kalman filter
    def _predict(self, dt_s: float) -> None:
        F = np.eye(4)
        F[0, 2] = F[1, 3] = dt_s
        q = self.params.accel_std_mps2 ** 2
        a, b, c = dt_s ** 4 / 4, dt_s ** 3 / 2, dt_s ** 2
        Q = q * np.array([[a, 0, b, 0], [0, a, 0, b], [b, 0, c, 0], [0, b, 0, c]])
        self._x = self._x @ F.T
        self._P = F @ self._P @ F.T + Q

    def _lost(self) -> np.ndarray:
        """(N,) bool: tracks without a hit for more than max_age_s (kept only for re-identification)."""
        max_age_ns = self.params.max_age_s * NS_PER_S + 1e3  # 1 us tolerance for float params
        return np.array([self._stamp_ns - t.last_hit_ns > max_age_ns for t in self._tracks], bool)

    def _delete_expired(self, stamp_ns: int) -> None:
        """Tentative tracks go after max_age_s without a hit, confirmed ones after max_age_s +
        reid_window_s: an object missed for a while (occluded, detector miss) that reappears where
        its track predicts it takes its old id back instead of a new one."""
        p = self.params
        age_ns = np.array([stamp_ns - t.last_hit_ns for t in self._tracks], float)
        confirmed = np.array([t.confirmed for t in self._tracks], bool)
        limit_ns = (p.max_age_s + np.where(confirmed, p.reid_window_s, 0.0)) * NS_PER_S + 1e3
        keep = age_ns <= limit_ns
        if not keep.all():
            self._x, self._P = self._x[keep], self._P[keep]
            self._tracks = [t for t, k in zip(self._tracks, keep) if k]

    def _update_matched(self, matches: list[tuple[int, int]], detections: list[Object3D],
                        stamp_ns: int) -> None:
        if not matches:
            return
        p = self.params
        ti = np.array([t for t, _ in matches])
        Z = np.array([detections[d].center[:2] for _, d in matches])
        P = self._P[ti]
        S = P[:, :2, :2] + self._R
        K = P[:, :, :2] @ np.linalg.inv(S)                       # (k, 4, 2)
        innovation = Z - self._x[ti, :2]
        self._x[ti] += (K @ innovation[:, :, None])[:, :, 0]
        P = P - K @ P[:, :2, :]
        self._P[ti] = 0.5 * (P + np.swapaxes(P, 1, 2))
        for t, d in matches:
            track, det = self._tracks[t], detections[d]
            yaw_diff = wrap_angle(det.yaw_rad - track.yaw_rad)
            if p.heading_ambiguous:
                yaw_diff = wrap_half_turn(yaw_diff)
            track.yaw_rad = float(wrap_angle(track.yaw_rad + p.yaw_alpha * yaw_diff))
            track.size = track.size + p.size_alpha * (det.size - track.size)
            track.z += p.z_alpha * (det.center[2] - track.z)
            track.score += p.score_alpha * (det.score - track.score)
            track.labels.append((det.label, float(det.score)))
            track.vote_label()
            track.hits += 1
            track.last_hit_ns = stamp_ns
            track.confirmed = track.confirmed or track.hits >= p.min_hits
            track.velocities.append((stamp_ns, float(self._x[t, 2]), float(self._x[t, 3])))
            if det.embedding.size:
                track.embedding, track.embedding_space = det.embedding, det.embedding_space

    def _start_track(self, det: Object3D, stamp_ns: int) -> None:
        p = self.params
        x0 = np.array([det.center[0], det.center[1], 0.0, 0.0])
        P0 = np.diag([p.measurement_std_m ** 2] * 2 + [p.init_velocity_std_mps ** 2] * 2)
        self._x = np.vstack([self._x, x0[None]])
        self._P = np.concatenate([self._P, P0[None]])
        labels = deque([(det.label, float(det.score))], maxlen=p.label_history)
        self._tracks.append(_Track(
            id=self._next_id, last_hit_ns=stamp_ns, z=float(det.center[2]), size=det.size.copy(),
            yaw_rad=float(wrap_angle(det.yaw_rad)), score=float(det.score), labels=labels, label=det.label,
            confirmed=p.min_hits <= 1, embedding=det.embedding, embedding_space=det.embedding_space))
        self._next_id += 1

    def _births(self, detections: list[Object3D], unmatched: list[int]) -> list[int]:
        """The unmatched detections that may start a track: not those lying inside a live track's
        box (a fragment or second box of an object already tracked; two objects cannot overlap)."""
        if not unmatched or not self._tracks or self.params.duplicate_overlap >= 1.0:
            return list(unmatched)
        det_boxes = bev_boxes([detections[d] for d in unmatched])
        overlap = overlap_of_smaller(det_boxes, self._bev_boxes()[~self._lost()])
        inside = overlap.max(axis=1) > self.params.duplicate_overlap
        return [d for d, skip in zip(unmatched, inside) if not skip]

    def _bev_boxes(self) -> np.ndarray:
        """(N, 5) predicted BEV boxes x, y, length, width, yaw_rad of all tracks."""
        if not self._tracks:
            return np.zeros((0, 5))
        lw = np.array([t.size[:2] for t in self._tracks])
        yaw = np.array([t.yaw_rad for t in self._tracks])
        return np.c_[self._x[:, :2], lw, yaw]

    def _align_heading_with_velocity(self) -> None:
        """Flip boxes of moving tracks whose yaw points backwards (heading known only modulo pi)."""
        if not self._tracks or not self.params.heading_ambiguous:
            return
        speed = np.hypot(self._x[:, 2], self._x[:, 3])
        heading = np.arctan2(self._x[:, 3], self._x[:, 2])
        yaw = np.array([t.yaw_rad for t in self._tracks])
        established = np.array([t.hits >= self.params.min_hits for t in self._tracks])
        flip = established & (speed > self.params.moving_speed_mps) & (np.cos(yaw - heading) < 0)
        for t in np.flatnonzero(flip):
            self._tracks[t].yaw_rad = float(wrap_angle(yaw[t] + np.pi))

    # ---------------------------------------------------------------- association
    def _associate(self, detections: list[Object3D], dt_s: float):
        """Three rounds of optimal assignment: confirmed tracks first, then lost ones (not seen for
        more than max_age_s, re-identification), then tentative ones."""
        n_det = len(detections)
        if not self._tracks or n_det == 0:
            return [], list(range(n_det))
        det_xy = np.array([d.center[:2] for d in detections])
        det_area = np.array([d.size[0] * d.size[1] for d in detections])
        det_labels = [d.label for d in detections]
        confirmed = np.array([t.confirmed for t in self._tracks])
        lost = self._lost()
        matches: list[tuple[int, int]] = []
        free_dets = np.arange(n_det)
        for round_tracks in (np.flatnonzero(confirmed & ~lost), np.flatnonzero(confirmed & lost),
                             np.flatnonzero(~confirmed)):
            if round_tracks.size == 0 or free_dets.size == 0:
                continue
            cost = self._cost(round_tracks, det_xy[free_dets], det_area[free_dets],
                              [det_labels[d] for d in free_dets], dt_s)
            rows, cols = linear_sum_assignment(cost)
            ok = cost[rows, cols] < _UNASSIGNED_COST
            matches += [(int(round_tracks[r]), int(free_dets[c])) for r, c in zip(rows[ok], cols[ok])]
            free_dets = np.delete(free_dets, cols[ok])
        return matches, [int(d) for d in free_dets]

    def _cost(self, track_idx: np.ndarray, det_xy: np.ndarray, det_area: np.ndarray,
              det_labels: list[str], dt_s: float) -> np.ndarray:
        """(tracks, detections) centre distance + label penalty; gated pairs cost _UNASSIGNED_COST.

        Gates: centre distance (widened for a track with one hit by the fastest speed of its
        class), label compatibility and footprint area ratio (a pedestrian track does not take a
        car-sized box, a car track not a pole)."""
        p = self.params
        dist = np.linalg.norm(self._x[track_idx, None, :2] - det_xy[None, :, :], axis=2)
        track_labels = [self._tracks[t].label for t in track_idx]
        one_hit = np.array([self._tracks[t].hits == 1 for t in track_idx])
        max_speed = np.array([min(MAX_SPEED_MPS.get(label, p.unknown_velocity_gate_mps),
                                  p.unknown_velocity_gate_mps) for label in track_labels])
        gate = p.gate_m + one_hit * max_speed * max(dt_s, 0.0)
        track_area = np.array([self._tracks[t].size[0] * self._tracks[t].size[1] for t in track_idx])
        area_ratio = np.maximum(track_area[:, None], det_area[None, :]) / np.maximum(
            np.minimum(track_area[:, None], det_area[None, :]), 1e-6)
        uniq_t, inv_t = np.unique(track_labels, return_inverse=True)
        uniq_d, inv_d = np.unique(det_labels, return_inverse=True)
        compat = np.array([[labels_compatible(a, b) for b in uniq_d] for a in uniq_t])[inv_t][:, inv_d]
        same = (uniq_t[:, None] == uniq_d[None, :])[inv_t][:, inv_d]
        cost = dist + np.where(same, 0.0, p.class_mismatch_cost_m)
        cost[(dist > gate[:, None]) | ~compat | (area_ratio > p.max_area_ratio)] = _UNASSIGNED_COST
        return cost

    # ---------------------------------------------------------------- output
    def _output(self) -> list[Object3D]:
        out = []
        lost = self._lost() if self._tracks else np.zeros(0, bool)
        for i, t in enumerate(self._tracks):
            if not t.confirmed or lost[i]:
                continue
            x, y, vx, vy = self._x[i]
            ax, ay = t.acceleration(self.params.accel_window_s, self.params.accel_min_span_s)
            out.append(Object3D(center=[x, y, t.z], size=t.size.copy(), yaw_rad=t.yaw_rad,
                                label=t.label, score=float(np.clip(t.score, 0.0, 1.0)), id=t.id,
                                velocity=[vx, vy, 0.0], embedding=t.embedding,
                                embedding_space=t.embedding_space, acceleration=[ax, ay, 0.0]))
        out.sort(key=lambda o: o.id)
        return out
