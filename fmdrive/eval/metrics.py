"""Quality metrics of a run: BEV detection AP, tracking id switches, planning L2 / collisions, latency.

Pure numpy on plain data (Object3D, Plan, GroundTruthFrame), so every metric is testable without
ROS. `eval_run(run_dir)` at the bottom is the loading layer: it reads a run dir (ground_truth.json,
bag/, output/, latency.json) through fmdrive.bags.reader and fmdrive.msgs and calls the metrics.

BEV boxes are (x, y, length, width, yaw_rad) rows; every function that takes boxes also takes a
list of Object3D. Ground truth lives in odom; detections and tracks are moved there with the GT
ego pose at their stamp before they are compared.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmdrive.bev import (as_bev_boxes, bev_corners, bev_iou, bev_iou_pairs,  # noqa: F401 (also eval's API)
                         intersection_area_pairs, iou_matrix, polygon_distance_pairs)
from fmdrive.config import CLASSES, TOPICS
from fmdrive.objects import EgoState, Object3D, Plan

# What counts as "must detect" (KITTI/nuScenes-like): enough LiDAR returns and not too far.
MIN_LIDAR_POINTS = 5
EVAL_RANGE_M = 50.0
# Ego footprint for collision checks: base_link is at the rear axle, the box centre is ahead of it.
EGO_SIZE_LW_M = (4.6, 1.9)
EGO_REAR_AXLE_TO_CENTER_M = 1.3
PLAN_HORIZONS_S = (1.0, 2.0, 3.0)
# How frames the graph dropped enter the metrics (also printed in every eval result).
DROPPED_FRAMES_POLICY = ('excluded: detection AP/recall, tracking and planning L2/collisions all '
                         'score the same frames_scored LiDAR frames, those answered with a plan; '
                         'frames without a plan are counted in dropped_sensor_frames, not scored')
# A sensor frame and a message "have the same stamp" when within this (sim stamps are exact).
STAMP_TOLERANCE_NS = 1_000_000

_EPS = 1e-9


class EvalError(Exception):
    """A run dir (or a file in it) that cannot be evaluated; the message says what to fix."""


# ============================================================== ground truth
@dataclass
class GroundTruthFrame:
    """One frame of ground_truth.json: ego pose and objects in odom."""
    stamp_ns: int
    ego: EgoState
    objects: list                                   # list[Object3D], odom
    num_lidar_points: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (M,)
    in_camera: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))        # (M,)

    def __post_init__(self):
        n = len(self.objects)
        if len(self.num_lidar_points) != n:   # unknown point counts: everything is visible
            self.num_lidar_points = np.full(n, np.iinfo(np.int32).max)
        if len(self.in_camera) != n:
            self.in_camera = np.ones(n, bool)
        self.num_lidar_points = np.asarray(self.num_lidar_points, dtype=np.int64)
        self.in_camera = np.asarray(self.in_camera, dtype=bool)

    def must_detect(self, min_lidar_points: int = MIN_LIDAR_POINTS,
                    range_m: float = EVAL_RANGE_M) -> np.ndarray:
        """(M,) bool: objects a detector is scored on; the others are "don't care"."""
        if not self.objects:
            return np.zeros(0, bool)
        centers = np.array([o.center[:2] for o in self.objects])
        dist_m = np.hypot(centers[:, 0] - self.ego.x, centers[:, 1] - self.ego.y)
        return (self.num_lidar_points >= min_lidar_points) & (dist_m <= range_m)


def load_ground_truth(path) -> tuple[dict, list[GroundTruthFrame]]:
    """(scenario dict, frames sorted by stamp) of a ground_truth.json written by the simulator."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f'{path}: ground truth not found; a run dir needs the simulator\'s '
                        f'ground_truth.json (run `fmdrive sim` to make one)')
    try:
        data = json.loads(path.read_text())
        frames = []
        for f in data['frames']:
            objs = f.get('objects', [])
            frames.append(GroundTruthFrame(
                stamp_ns=int(f['stamp_ns']),
                ego=EgoState(**{k: float(f['ego'].get(k, 0.0)) for k in
                                ('x', 'y', 'yaw_rad', 'speed_mps', 'yaw_rate_rps')}),
                objects=[Object3D.from_dict(o) for o in objs],
                num_lidar_points=np.array([o.get('num_lidar_points', 0) for o in objs], int),
                in_camera=np.array([o.get('in_camera', True) for o in objs], bool)))
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalError(f'{path}: not a valid ground truth file ({type(exc).__name__}: {exc}); '
                        f'expected {{"frames": [{{"stamp_ns", "ego", "objects"}}]}}') from exc
    frames.sort(key=lambda fr: fr.stamp_ns)
    return data.get('scenario', {}), frames


# ============================================================== detection
@dataclass
class DetectionMatch:
    """Per-class outcome of matching detections to ground truth over all frames."""
    scores: np.ndarray      # (D,) scores of the scored detections (don't-care ones removed)
    tp: np.ndarray          # (D,) bool
    num_gt: int             # "must detect" GT objects of the class
    num_matched_gt: int


def match_detections(detections_per_frame, gt_frames, label: str, iou_threshold: float = 0.5,
                     min_lidar_points: int = MIN_LIDAR_POINTS,
                     range_m: float = EVAL_RANGE_M) -> DetectionMatch:
    """Greedy matching by score, per frame, of `label` detections (odom) to `label` GT.

    A detection goes to the unmatched "must detect" GT with the highest IoU >= threshold (TP);
    failing that, one overlapping a "don't care" GT (too few LiDAR points, out of range), or
    lying out of range itself, is ignored; the rest (incl. duplicates) are false positives.
    """
    if len(detections_per_frame) != len(gt_frames):
        raise ValueError(f'detections_per_frame has {len(detections_per_frame)} frames but '
                         f'gt_frames has {len(gt_frames)}; pass one (possibly empty) list per frame')
    scores, tps = [], []
    num_gt = num_matched = 0
    for dets, gt in zip(detections_per_frame, gt_frames):
        dets = [d for d in dets if d.label == label]
        is_label = np.array([o.label == label for o in gt.objects], bool)
        care_all = gt.must_detect(min_lidar_points, range_m)
        gt_objs = [o for o, k in zip(gt.objects, is_label) if k]
        care = care_all[is_label] if len(gt.objects) else np.zeros(0, bool)
        num_gt += int(care.sum())
        if not dets:
            continue
        dets = sorted(dets, key=lambda d: -d.score)
        iou = iou_matrix(dets, gt_objs)                               # (D, G)
        det_xy = np.array([d.center[:2] for d in dets])
        det_far = np.hypot(det_xy[:, 0] - gt.ego.x, det_xy[:, 1] - gt.ego.y) > range_m
        taken = np.zeros(len(gt_objs), bool)
        for i, det in enumerate(dets):                                # D is small (objects)
            cand = np.where(care & ~taken, iou[i], -1.0)
            j = int(np.argmax(cand)) if len(cand) else -1
            if j >= 0 and cand[j] >= iou_threshold:
                taken[j] = True
                scores.append(det.score)
                tps.append(True)
            elif det_far[i] or (len(care) and np.any(~care & (iou[i] >= iou_threshold))):
                continue                                              # don't care
            else:
                scores.append(det.score)
                tps.append(False)
        num_matched += int(taken.sum())
    return DetectionMatch(np.array(scores, float), np.array(tps, bool), num_gt, num_matched)


def ap_from_match(match: DetectionMatch) -> float:
    """All-point interpolated AP (VOC 2010+/KITTI-40-style envelope). NaN if the class has no GT."""
    if match.num_gt == 0:
        return float('nan')
    if len(match.scores) == 0:
        return 0.0
    order = np.argsort(-match.scores, kind='stable')
    tp = match.tp[order].astype(float)
    ctp, cfp = np.cumsum(tp), np.cumsum(1.0 - tp)
    recall = ctp / match.num_gt
    precision = ctp / np.maximum(ctp + cfp, _EPS)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]                    # precision envelope
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def paired_ap_difference(detections_a, detections_b, gt_frames, groups, label: str, resamples: int = 2000,
                         seed: int = 0, iou_threshold: float = 0.5) -> dict:
    """AP(b) - AP(a) of one class on the same frames, with a 95 % interval from a paired bootstrap
    over `groups` (one key per frame, e.g. its scene: the frames of a scene are not independent, so
    whole scenes are drawn with replacement and both detectors see the same draw). Each group is
    matched once (matching is per frame), so a resample only re-sorts scores.
    {"difference", "ci95": [lo, hi], "groups", "resamples"}; difference None without GT."""
    if len(groups) != len(gt_frames):
        raise ValueError(f'groups has {len(groups)} keys for {len(gt_frames)} frames')
    return paired_difference_of_matches(
        groups, lambda idx: [match_detections([dets[i] for i in idx], [gt_frames[i] for i in idx], label,
                                              iou_threshold) for dets in (detections_a, detections_b)],
        resamples, seed)


def paired_difference_of_matches(groups, match, resamples: int = 2000, seed: int = 0) -> dict:
    """The paired bootstrap of paired_ap_difference for any matching: match(frame indices of one
    group) -> (DetectionMatch of a, DetectionMatch of b) on those frames (BEV boxes, 2D boxes...)."""
    keys = list(dict.fromkeys(groups))
    per = {key: match([i for i, g in enumerate(groups) if g == key]) for key in keys}

    def ap(which: int, draw) -> float:
        ms = [per[keys[k]][which] for k in draw]
        return ap_from_match(DetectionMatch(np.concatenate([m.scores for m in ms]), np.concatenate([m.tp for m in ms]),
                                            sum(m.num_gt for m in ms), sum(m.num_matched_gt for m in ms)))

    everything = np.arange(len(keys))
    diff = ap(1, everything) - ap(0, everything)
    if diff != diff:
        return {'difference': None, 'ci95': None, 'groups': len(keys), 'resamples': 0}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        draw = rng.integers(0, len(keys), len(keys))
        d = ap(1, draw) - ap(0, draw)
        if d == d:                       # a draw without GT of the class says nothing
            draws.append(d)
    lo, hi = np.percentile(draws, [2.5, 97.5]) if draws else (float('nan'),) * 2
    return {'difference': float(diff), 'ci95': [float(lo), float(hi)], 'groups': len(keys), 'resamples': len(draws)}


def average_precision(detections_per_frame, gt_frames, label: str, iou_threshold: float = 0.5,
                      min_lidar_points: int = MIN_LIDAR_POINTS,
                      range_m: float = EVAL_RANGE_M) -> float:
    """BEV AP of one class over frames (detections in odom, one list per GT frame)."""
    return ap_from_match(match_detections(detections_per_frame, gt_frames, label, iou_threshold,
                                          min_lidar_points, range_m))


def detection_metrics(detections_per_frame, gt_frames, classes=CLASSES, iou_threshold: float = 0.5,
                      min_lidar_points: int = MIN_LIDAR_POINTS,
                      range_m: float = EVAL_RANGE_M) -> dict:
    """{"ap": {class: AP or NaN}, "recall": {class: recall or NaN}, "precision": {class: precision
    or NaN}, "num_gt": {class: int}}. Recall and precision are at the detector's operating point:
    every detection given counts (a detector's own score threshold sets that point); precision is
    NaN for a class with no scored detection (don't-care ones are not scored)."""
    out = {'ap': {}, 'recall': {}, 'precision': {}, 'num_gt': {}}
    for label in classes:
        m = match_detections(detections_per_frame, gt_frames, label, iou_threshold,
                             min_lidar_points, range_m)
        out['ap'][label] = ap_from_match(m)
        out['recall'][label] = m.num_matched_gt / m.num_gt if m.num_gt else float('nan')
        out['precision'][label] = float(m.tp.mean()) if len(m.tp) else float('nan')
        out['num_gt'][label] = m.num_gt
    return out


# ============================================================== tracking
def clear_mot_pairs(tracks_per_frame, gt_frames, gate_m: float = 2.0) -> list[dict]:
    """Per frame {gt id: track id}, CLEAR-MOT style: the previous frame's GT-track pairs are kept
    while their centres stay within gate_m; the rest are assigned by the Hungarian method on BEV
    centre distance (gated). Tracks with id 0 (untracked) are ignored."""
    from scipy.optimize import linear_sum_assignment
    if len(tracks_per_frame) != len(gt_frames):
        raise ValueError(f'tracks_per_frame has {len(tracks_per_frame)} frames but gt_frames has '
                         f'{len(gt_frames)}; pass one (possibly empty) list per frame')
    prev_pairs: dict[int, int] = {}                                   # gt id -> track id
    out = []
    for tracks, gt in zip(tracks_per_frame, gt_frames):
        tracks = [t for t in tracks if t.id != 0]
        if not tracks or not gt.objects:
            prev_pairs = {}
            out.append({})
            continue
        t_xy = np.array([t.center[:2] for t in tracks])
        g_xy = np.array([o.center[:2] for o in gt.objects])
        dist = np.linalg.norm(g_xy[:, None, :] - t_xy[None, :, :], axis=-1)   # (G, T)
        t_index = {int(t.id): k for k, t in enumerate(tracks)}
        pairs: dict[int, int] = {}
        used_g, used_t = set(), set()
        for gi, o in enumerate(gt.objects):                           # keep last frame's pairs
            tid = prev_pairs.get(int(o.id))
            k = t_index.get(tid) if tid is not None else None
            if k is not None and k not in used_t and dist[gi, k] <= gate_m:
                pairs[int(o.id)] = tid
                used_g.add(gi)
                used_t.add(k)
        free_g = [g for g in range(len(gt.objects)) if g not in used_g]
        free_t = [k for k in range(len(tracks)) if k not in used_t]
        if free_g and free_t:
            sub = dist[np.ix_(free_g, free_t)]
            rows, cols = linear_sum_assignment(np.where(sub <= gate_m, sub, 1e6))
            for r, c in zip(rows, cols):
                if sub[r, c] <= gate_m:
                    pairs[int(gt.objects[free_g[r]].id)] = int(tracks[free_t[c]].id)
        out.append(pairs)
        prev_pairs = pairs
    return out


def id_switches(tracks_per_frame, gt_frames, gate_m: float = 2.0) -> dict:
    """CLEAR-MOT identity switches: a GT object whose matched track id (clear_mot_pairs) differs
    from its last one. Returns {"id_switches", "tracks", "matches"}."""
    last_track_of_gt: dict[int, int] = {}
    switches = matches = 0
    for pairs in clear_mot_pairs(tracks_per_frame, gt_frames, gate_m):
        for gid, tid in pairs.items():
            if gid in last_track_of_gt and last_track_of_gt[gid] != tid:
                switches += 1
            last_track_of_gt[gid] = tid
        matches += len(pairs)
    track_ids = {int(t.id) for tracks in tracks_per_frame for t in tracks if t.id != 0}
    return {'id_switches': switches, 'tracks': len(track_ids), 'matches': matches}


# ============================================================== planning
def ego_boxes(poses_xyyaw: np.ndarray, size_lw=EGO_SIZE_LW_M,
              rear_axle_to_center_m: float = EGO_REAR_AXLE_TO_CENTER_M) -> np.ndarray:
    """(K, 5) BEV boxes of the ego car at base_link poses (x, y, yaw_rad) in odom."""
    p = np.asarray(poses_xyyaw, dtype=np.float64).reshape(-1, 3)
    cx = p[:, 0] + rear_axle_to_center_m * np.cos(p[:, 2])
    cy = p[:, 1] + rear_axle_to_center_m * np.sin(p[:, 2])
    return np.c_[cx, cy, np.full(len(p), size_lw[0]), np.full(len(p), size_lw[1]), p[:, 2]]


def _interp_pose(t_query, t, poses):
    """Linear interpolation of (x, y, yaw) poses (yaw unwrapped) at t_query."""
    yaw = np.unwrap(poses[:, 2])
    return np.c_[np.interp(t_query, t, poses[:, 0]), np.interp(t_query, t, poses[:, 1]),
                 np.interp(t_query, t, yaw)]


def plan_with_start(plan: Plan, gt_ego: EgoState | None) -> tuple[np.ndarray, np.ndarray]:
    """(t_s, poses) of a plan with the ego pose at t=0 prepended when the plan lacks it."""
    t = np.asarray(plan.t_s, dtype=np.float64)
    poses = np.asarray(plan.poses, dtype=np.float64).reshape(-1, 3)
    if gt_ego is not None and (len(t) == 0 or t[0] > 1e-6):
        t = np.r_[0.0, t]
        poses = np.vstack([[gt_ego.x, gt_ego.y, gt_ego.yaw_rad], poses])
    return t, poses


def planning_metrics(plans, gt_frames, horizons_s=PLAN_HORIZONS_S, ego_size_lw=EGO_SIZE_LW_M,
                     rear_axle_to_center_m: float = EGO_REAR_AXLE_TO_CENTER_M) -> dict:
    """Open-loop planning quality against the expert drive recorded in the ground truth.

    l2_<h>s: mean distance between the plan's position at t=h and the expert's actual position at
    stamp+h (interpolated over GT frames; plans whose stamp+h lies past the drive are left out).
    collision_rate: fraction of plans whose ego footprint, at every GT frame within the plan's
    horizon, overlaps a GT object's box at that same time (the GT's real future motion).
    min_distance_m: smallest footprint-to-box gap over all plans and times.
    """
    plans = list(plans)
    if not gt_frames:
        raise ValueError('planning_metrics needs at least one ground-truth frame')
    gt_t_ns = np.array([f.stamp_ns for f in gt_frames], dtype=np.int64)
    expert = np.array([[f.ego.x, f.ego.y, f.ego.yaw_rad] for f in gt_frames])
    gt_by_stamp = {int(f.stamp_ns): f for f in gt_frames}
    l2 = {h: [] for h in horizons_s}
    collided, min_dist, per_plan_min = [], np.inf, []
    for plan in plans:
        if len(plan.t_s) == 0:
            continue
        t0_ns = int(plan.stamp_ns)
        t_rel = (gt_t_ns - t0_ns) / 1e9
        start = gt_by_stamp.get(t0_ns)
        t_plan, poses = plan_with_start(plan, start.ego if start else None)
        for h in horizons_s:
            if h <= t_plan[-1] + 1e-6 and t_rel[0] <= h <= t_rel[-1]:
                p = _interp_pose(h, t_plan, poses)[0, :2]
                e = np.array([np.interp(h, t_rel, expert[:, 0]), np.interp(h, t_rel, expert[:, 1])])
                l2[h].append(float(np.linalg.norm(p - e)))
        # collision / distance at every GT frame inside (0, horizon]
        in_h = np.nonzero((t_rel > 1e-9) & (t_rel <= t_plan[-1] + 1e-6))[0]
        pair_ego, pair_obj = [], []
        for k in in_h:
            frame = gt_frames[k]
            if not frame.objects:
                continue
            box = ego_boxes(_interp_pose(t_rel[k], t_plan, poses), ego_size_lw,
                            rear_axle_to_center_m)
            objs = as_bev_boxes(frame.objects)
            pair_ego.append(np.repeat(box, len(objs), axis=0))
            pair_obj.append(objs)
        if pair_ego:
            ca, cb = bev_corners(np.vstack(pair_ego)), bev_corners(np.vstack(pair_obj))
            dist = polygon_distance_pairs(ca, cb)
            collided.append(bool(np.any(dist <= 0.0)))
            per_plan_min.append(float(dist.min()))
            min_dist = min(min_dist, float(dist.min()))
        else:
            collided.append(False)
    out = {f'l2_{h:g}s': (float(np.mean(l2[h])) if l2[h] else float('nan')) for h in horizons_s}
    out.update({
        'collision_rate': float(np.mean(collided)) if collided else float('nan'),
        'collisions': int(np.sum(collided)),
        'min_distance_m': float(min_dist) if np.isfinite(min_dist) else float('nan'),
        'mean_min_distance_m': float(np.mean(per_plan_min)) if per_plan_min else float('nan'),
        'plans': len(plans),
    })
    return out


# ============================================================== latency
def latency_percentiles(latencies_ms) -> dict:
    """{"p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "count"} (NaN when empty)."""
    x = np.asarray(latencies_ms, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {'p50_ms': float('nan'), 'p90_ms': float('nan'), 'p99_ms': float('nan'),
                'max_ms': float('nan'), 'mean_ms': float('nan'), 'count': 0}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {'p50_ms': float(p50), 'p90_ms': float(p90), 'p99_ms': float(p99),
            'max_ms': float(x.max()), 'mean_ms': float(x.mean()), 'count': int(len(x))}


# ============================================================== loading a run dir
def nearest_frame_index(stamps_ns: np.ndarray, stamp_ns: int,
                        tolerance_ns: int = STAMP_TOLERANCE_NS) -> int | None:
    """Index of the sorted stamp nearest to stamp_ns, or None if none is within tolerance."""
    if len(stamps_ns) == 0:
        return None
    i = int(np.searchsorted(stamps_ns, stamp_ns))
    best = min((j for j in (i - 1, i) if 0 <= j < len(stamps_ns)),
               key=lambda j: abs(int(stamps_ns[j]) - stamp_ns))
    return best if abs(int(stamps_ns[best]) - stamp_ns) <= tolerance_ns else None


@dataclass
class RunOutputs:
    """What eval needs from a run's output bag, already converted to core types."""
    lidar_objects: dict = field(default_factory=dict)   # stamp_ns -> list[Object3D] base_link
    camera_objects: dict = field(default_factory=dict)  # image stamp_ns -> list[Object3D] with box2d (pixels)
    lidar_sources: set = field(default_factory=set)     # ObjectArray.source of the LiDAR objects seen
    tracks: dict = field(default_factory=dict)          # stamp_ns -> list[Object3D] base_link
    plans: list = field(default_factory=list)           # list[Plan] (odom)
    planner_latency_ms: list = field(default_factory=list)

    def restore_stamps(self, to_bag_stamp) -> None:
        """Give every output the stamp its input had in the bag (undoing a restamped replay), so
        it compares with the ground truth; to_bag_stamp maps a published stamp to the bag's."""
        self.lidar_objects = {to_bag_stamp(s): v for s, v in self.lidar_objects.items()}
        self.camera_objects = {to_bag_stamp(s): v for s, v in self.camera_objects.items()}
        self.tracks = {to_bag_stamp(s): v for s, v in self.tracks.items()}
        for plan in self.plans:
            plan.stamp_ns = to_bag_stamp(plan.stamp_ns)


def replay_stamp_restorer(run_dir):
    """published stamp -> bag stamp, from run_dir/replay.json: the per-message restamp map
    (`stamp_map_ns`, [[bag, published], ...]) or an older run's constant `stamp_offset_ns`;
    the identity when the replay did not restamp. A stamp not in the map is kept as it is."""
    path = Path(run_dir) / 'replay.json'
    if not path.exists():
        return lambda stamp_ns: stamp_ns
    try:
        data = json.loads(path.read_text())
        if data.get('stamp_map_ns'):
            back = {int(published): int(original) for original, published in data['stamp_map_ns']}
            return lambda stamp_ns: back.get(stamp_ns, stamp_ns)
        offset = int(data.get('stamp_offset_ns') or 0)
    except (ValueError, AttributeError, TypeError) as e:
        raise EvalError(f'{path}: not a replay summary ({e}); delete it if the run was not '
                        'restamped') from None
    return lambda stamp_ns: stamp_ns - offset


def check_run_dir(run_dir) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalError(f'{run_dir}: run dir not found (expected a dir made by `fmdrive sim` '
                        f'+ `fmdrive run`, holding ground_truth.json, bag/ and output/)')
    for name in ('ground_truth.json', 'bag', 'output'):
        if not (run_dir / name).exists():
            raise EvalError(f'{run_dir}: missing {name}; a run dir needs ground_truth.json, bag/ '
                            f'(input) and output/ (recorded graph outputs)')
    return run_dir


def read_outputs(output_bag, progress: bool = False) -> RunOutputs:
    """Convert the recorded outputs (objects, tracks, plans, planner diagnostics) of a run, with
    the stamps the input bag had (a restamped replay's shift, from replay.json beside, is undone)."""
    from fmdrive.bags.reader import BagReader
    from fmdrive.msgs import msg_to_objects, msg_to_plan, stamp_to_ns
    from tqdm import tqdm

    out = RunOutputs()
    topics = [TOPICS['lidar_objects'], TOPICS['camera_objects'], TOPICS['objects'], TOPICS['plan'],
              TOPICS['diagnostics']]
    with BagReader(output_bag) as reader:
        for topic, msg in tqdm(present_messages(reader, topics), desc='output bag', unit='msg',
                               total=sum(reader.topics.get(t, ('', 0))[1] for t in topics),
                               disable=not progress, leave=False):
            _collect_output(out, topic, msg, msg_to_objects, msg_to_plan, stamp_to_ns)
    out.restore_stamps(replay_stamp_restorer(Path(output_bag).parent))
    return out


def present_messages(reader, topics):
    """(topic, msg) of those of `topics` the bag has (a run may lack e.g. /diagnostics)."""
    have = [t for t in topics if t in reader.topics]
    if not have:
        return iter(())
    return ((topic, msg) for topic, _, msg in reader.messages(topics=have))


def _collect_output(out: RunOutputs, topic: str, msg, msg_to_objects, msg_to_plan,
                    stamp_to_ns) -> None:
    if topic == TOPICS['lidar_objects']:
        out.lidar_objects[stamp_to_ns(msg.header.stamp)] = msg_to_objects(msg)
        out.lidar_sources.add(msg.source)
    elif topic == TOPICS['camera_objects']:
        out.camera_objects[stamp_to_ns(msg.header.stamp)] = msg_to_objects(msg)
    elif topic == TOPICS['objects']:
        out.tracks[stamp_to_ns(msg.header.stamp)] = msg_to_objects(msg)
    elif topic == TOPICS['plan']:
        out.plans.append(msg_to_plan(msg))
    elif topic == TOPICS['diagnostics']:
        # the planner's status (name "fmdrive/planner") carries now - LiDAR stamp per plan
        values = [kv.value for st in msg.status if 'planner' in st.name.lower()
                  for kv in st.values if kv.key == 'pipeline_latency_ms']
        for v in values:
            try:
                out.planner_latency_ms.append(float(v))
            except ValueError:
                pass


def read_lidar_stamps(input_bag, progress: bool = False) -> list[int]:
    """Header stamps of the LiDAR frames of the input bag."""
    from tqdm import tqdm

    from fmdrive.bags.reader import BagReader
    from fmdrive.msgs import stamp_to_ns
    with BagReader(input_bag) as reader:
        # ours, else the bag's one point-cloud topic (a user's driver name, remapped at replay)
        clouds = [t for t, (msgtype, _) in reader.topics.items() if msgtype == 'sensor_msgs/msg/PointCloud2']
        topic = TOPICS['points'] if TOPICS['points'] in reader.topics else (clouds[0] if len(clouds) == 1 else None)
        if topic is None:
            raise EvalError(f'{input_bag}: no {TOPICS["points"]} and {len(clouds)} other PointCloud2 topics '
                            f'in the input bag (topics: {", ".join(sorted(reader.topics)) or "none"}); '
                            'is it a sensor bag?')
        it = present_messages(reader, [topic])
        return [stamp_to_ns(msg.header.stamp)
                for _, msg in tqdm(it, desc='input bag', unit='frame', leave=False,
                                   total=reader.topics[topic][1], disable=not progress)]


def load_latency_json(path) -> dict | None:
    """{"e2e_p50_ms", "e2e_p99_ms"} from latency.json: either those keys (as `bench pipeline`
    writes them) or a list of end-to-end samples in ms (bare, or under "e2e_ms"/"samples_ms")."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise EvalError(f'{path}: not valid JSON ({exc}); delete it or rewrite it') from exc
    if isinstance(data, dict) and 'e2e_p50_ms' in data and 'e2e_p99_ms' in data:
        # null = not measured (e.g. no trajectory was recorded); keep it null, never a crash
        out = {'e2e_p50_ms': _number_or_none(path, data, 'e2e_p50_ms'),
               'e2e_p99_ms': _number_or_none(path, data, 'e2e_p99_ms'), 'source': 'latency.json'}
        for key in ('dds_lost_inputs', 'dds_lost_inputs_by_node', 'queue_dropped_inputs',
                    'dropped_inputs_by_node'):
            if key in data:
                out[key] = data[key]
        return out
    samples = data if isinstance(data, list) else (
        data.get('e2e_ms', data.get('samples_ms')) if isinstance(data, dict) else None)
    if samples is None:
        raise EvalError(f'{path}: expected keys e2e_p50_ms/e2e_p99_ms or a list of samples (ms)')
    try:
        samples = [np.nan if v is None else float(v) for v in samples]
    except (TypeError, ValueError):
        raise EvalError(f'{path}: latency samples must be numbers (ms) or null') from None
    p = latency_percentiles(samples)
    return {'e2e_p50_ms': p['p50_ms'], 'e2e_p99_ms': p['p99_ms'], 'source': 'latency.json'}


def _number_or_none(path, data: dict, key: str) -> float | None:
    value = data[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvalError(f'{path}: {key} must be a number of ms or null, not {value!r}')
    return float(value)


def _to_odom(objects_base, ego: EgoState):
    T_odom_base = ego.T_odom_base()
    return [o.transformed(T_odom_base) for o in objects_base]


def eval_run(run_dir, progress: bool = True) -> dict:
    """All metrics of one run dir, JSON-ready: None (null) means "not measurable in this run"
    (e.g. the AP of a class the scenario does not have)."""
    from tqdm import tqdm

    run_dir = check_run_dir(run_dir)
    scenario, gt_frames = load_ground_truth(run_dir / 'ground_truth.json')
    if not gt_frames:
        raise EvalError(f'{run_dir / "ground_truth.json"}: no frames; re-run the simulator')
    outputs = read_outputs(run_dir / 'output', progress=progress)
    lidar_stamps = read_lidar_stamps(run_dir / 'bag', progress=progress)

    gt_stamps = np.array([f.stamp_ns for f in gt_frames], dtype=np.int64)

    def by_gt_index(stamped: dict) -> dict:
        out = {}
        for stamp, objs in stamped.items():
            k = nearest_frame_index(gt_stamps, stamp)
            if k is not None:
                out[k] = objs
        return out

    dets_at, tracks_at = by_gt_index(outputs.lidar_objects), by_gt_index(outputs.tracks)
    # Dropped frames (DROPPED_FRAMES_POLICY): every quality metric scores the same frames, the
    # LiDAR frames the graph answered with a plan; the others are counted, not scored.
    plan_stamps = np.array(sorted(p.stamp_ns for p in outputs.plans), dtype=np.int64)
    answered = [s for s in lidar_stamps if nearest_frame_index(plan_stamps, s) is not None]
    dropped = len(lidar_stamps) - len(answered)
    eval_k = sorted({k for s in answered if (k := nearest_frame_index(gt_stamps, s)) is not None})
    det_frames, trk_frames, frames = [], [], []
    for k in tqdm(eval_k, desc='eval frames', unit='frame', disable=not progress, leave=False):
        ego = gt_frames[k].ego
        frames.append(gt_frames[k])
        det_frames.append(_to_odom(dets_at.get(k, []), ego))
        trk_frames.append(_to_odom(tracks_at.get(k, []), ego))

    det = detection_metrics(det_frames, frames)
    detection = {'car_bev_ap50': det['ap']['car'], 'ap50': det['ap'], 'recall': det['recall'],
                 'precision': det['precision'], 'num_gt': det['num_gt'], 'frames': len(det_frames), 'source': 'lidar',
                 'lidar_encoder': '+'.join(sorted(outputs.lidar_sources)) or None}
    if any('learned' in s for s in outputs.lidar_sources):
        # the learned path's figures next to the classical path's, on the very frames scored
        from fmdrive.eval.baseline import BASELINE, BASELINE_PARAMS, classical_detections
        base_at = classical_detections(run_dir / 'bag', answered, gt_stamps, progress=progress)
        base = detection_metrics([_to_odom(base_at.get(k, []), gt_frames[k].ego) for k in eval_k], frames)
        detection[BASELINE] = {'car_bev_ap50': base['ap']['car'], 'ap50': base['ap'], 'recall': base['recall'],
                               'precision': base['precision'], 'params': BASELINE_PARAMS}
    trk = id_switches(trk_frames, frames)
    scored_stamps = {gt_frames[k].stamp_ns for k in eval_k}
    plan = planning_metrics([p for p in outputs.plans
                             if (k := nearest_frame_index(gt_stamps, p.stamp_ns)) is not None
                             and gt_frames[k].stamp_ns in scored_stamps], gt_frames)

    latency = load_latency_json(run_dir / 'latency.json')
    if latency is None and outputs.planner_latency_ms:
        p = latency_percentiles(outputs.planner_latency_ms)
        latency = {'e2e_p50_ms': p['p50_ms'], 'e2e_p99_ms': p['p99_ms'], 'source': 'diagnostics'}
    if latency is None:
        latency = {'e2e_p50_ms': None, 'e2e_p99_ms': None, 'source': None}

    return json_safe({
        'run_dir': str(run_dir),
        'scenario': scenario.get('kind', scenario.get('name', '')) if isinstance(scenario, dict)
        else str(scenario),
        'detection': detection,
        'tracking': {'id_switches': trk['id_switches'], 'tracks': trk['tracks'],
                     'matches': trk['matches'], 'frames': len(trk_frames)},
        'planning': plan,
        'latency': latency,
        'sensor_frames': len(lidar_stamps),
        'dropped_sensor_frames': int(dropped),
        'frames_scored': len(eval_k),
        'dropped_frames_policy': DROPPED_FRAMES_POLICY,
    })


def json_safe(value):
    """The same structure with NaN/inf as None and numpy scalars as Python numbers (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
