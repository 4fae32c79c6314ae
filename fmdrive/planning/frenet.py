"""Frenet frame along a lane centre line: s along the line, d to its left (metres).

A `ReferenceLine` is built from a centre line (in base_link), resampled at a fixed spacing and
extended straight at both ends, so every query has an answer. Conversions are vectorised over
arrays of any shape. The polynomial helpers give closed-form quintic / quartic profiles used to
sample candidate trajectories (Werling et al., "Optimal trajectory generation for dynamic street
scenarios in a Frenet frame", ICRA 2010).
"""
from __future__ import annotations

import threading

import numpy as np
from scipy.spatial import cKDTree

from fmdrive.geometry import wrap_angle


MAX_REFERENCE_LENGTH_M = 100_000.0   # resampled every spacing_m: longer is broken input, not a road


class ReferenceLineError(ValueError):
    """A centre line that cannot serve as a reference line (too few distinct finite points)."""


class ReferenceLine:
    """A centre line resampled every `spacing_m` with heading `theta_rad` and curvature `kappa_1pm`.

    The input points are extended by `extend_behind_m` before the first point and `extend_ahead_m`
    after the last one (straight, along the end headings), so short lanes still cover the horizon.
    """

    def __init__(self, points_xy, spacing_m: float = 0.5, extend_behind_m: float = 30.0,
                 extend_ahead_m: float = 150.0):
        pts = np.asarray(points_xy, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] < 2:
            raise ReferenceLineError(f'centre line must be an (M, 2+) array, got shape {pts.shape}')
        pts = pts[:, :2]
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        if len(pts) >= 2:  # drop repeated points (zero-length segments have no heading)
            keep = np.r_[True, np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-6]
            pts = pts[keep]
        if len(pts) < 2:
            raise ReferenceLineError('centre line needs at least 2 distinct finite points; '
                                     'pass a lane with a longer centreline or no lanes at all')
        head = pts[1] - pts[0]
        tail = pts[-1] - pts[-2]
        head /= np.linalg.norm(head)
        tail /= np.linalg.norm(tail)
        pts = np.vstack([pts[0] - extend_behind_m * head, pts, pts[-1] + extend_ahead_m * tail])
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        s_in = np.r_[0.0, np.cumsum(seg)]
        if not s_in[-1] <= MAX_REFERENCE_LENGTH_M:
            raise ReferenceLineError(f'centre line {s_in[-1]:.3g} m long (with its extensions); '
                                     f'more than {MAX_REFERENCE_LENGTH_M:.0f} m is broken input')
        n = max(int(np.ceil(s_in[-1] / spacing_m)) + 1, 2)
        s = np.linspace(0.0, s_in[-1], n)
        x = np.interp(s, s_in, pts[:, 0])
        y = np.interp(s, s_in, pts[:, 1])
        theta = np.unwrap(np.arctan2(np.gradient(y), np.gradient(x)))
        kappa = np.gradient(theta, s)
        if n >= 5:  # light smoothing: curvature of a resampled polyline is noisy
            kernel = np.ones(5) / 5.0
            kappa = np.convolve(np.pad(kappa, 2, mode='edge'), kernel, mode='valid')
        # s is measured from the first *input* point (the extension behind has negative s)
        self.s = s - extend_behind_m
        self.x, self.y, self.theta_rad, self.kappa_1pm = x, y, theta, kappa
        self._tree = cKDTree(np.c_[x, y])

    @classmethod
    def straight(cls, length_m: float = 200.0, **kwargs) -> 'ReferenceLine':
        """The x axis of base_link from 0 to length_m (the ego lane when no lanes are known)."""
        return cls(np.array([[0.0, 0.0], [length_m, 0.0]]), **kwargs)

    def frame_at(self, s):
        """x, y, theta_rad, kappa_1pm of the line at arc length s (any shape)."""
        s = np.asarray(s, dtype=np.float64)
        return (np.interp(s, self.s, self.x), np.interp(s, self.s, self.y),
                np.interp(s, self.s, self.theta_rad), np.interp(s, self.s, self.kappa_1pm))

    def to_cartesian(self, s, d, d_s=None):
        """x, y, yaw_rad of the point at (s, d); d_s = dd/ds gives the heading of a path d(s)."""
        xr, yr, th, kappa = self.frame_at(s)
        d = np.asarray(d, dtype=np.float64)
        x = xr - d * np.sin(th)
        y = yr + d * np.cos(th)
        if d_s is None:
            yaw = th
        else:
            yaw = th + np.arctan2(d_s, np.maximum(1.0 - kappa * d, 1e-3))
        return x, y, yaw

    def project(self, xy):
        """(s, d) of points (..., 2): arc length of the closest point and signed offset (left +)."""
        xy = np.asarray(xy, dtype=np.float64)
        shape = xy.shape[:-1]
        p = xy.reshape(-1, 2)
        if len(p) == 0:
            return np.zeros(shape), np.zeros(shape)
        finite = np.all(np.isfinite(p), axis=1)
        _, idx = self._tree.query(np.where(finite[:, None], p, 0.0))
        # refine on the two segments around the nearest sample
        n = len(self.s)
        best_s = np.full(len(p), np.nan)
        best_d = np.full(len(p), np.nan)
        best_dist = np.full(len(p), np.inf)
        for i0 in (np.clip(idx - 1, 0, n - 2), np.clip(idx, 0, n - 2)):
            ax, ay = self.x[i0], self.y[i0]
            bx, by = self.x[i0 + 1], self.y[i0 + 1]
            ux, uy = bx - ax, by - ay
            seg_len = np.hypot(ux, uy)
            ux, uy = ux / seg_len, uy / seg_len
            rx, ry = p[:, 0] - ax, p[:, 1] - ay
            along = rx * ux + ry * uy
            # beyond the line's ends the extension is straight, so no clamping there
            lo = np.where(i0 == 0, -np.inf, 0.0)
            hi = np.where(i0 == n - 2, np.inf, seg_len)
            along_c = np.clip(along, lo, hi)
            cross = ux * ry - uy * rx
            dist = np.hypot(along - along_c, cross)
            better = dist < best_dist
            best_dist = np.where(better, dist, best_dist)
            best_s = np.where(better, self.s[i0] + along_c, best_s)
            best_d = np.where(better, cross, best_d)
        best_s[~finite] = np.nan
        best_d[~finite] = np.nan
        return best_s.reshape(shape), best_d.reshape(shape)


def box_extent_sd(half_length, half_width, yaw_to_line):
    """Half extents (ext_s, ext_d) along and across a reference line of boxes turned yaw_to_line
    (box yaw minus the line's heading there) from it (broadcasts)."""
    c, s = np.abs(np.cos(yaw_to_line)), np.abs(np.sin(yaw_to_line))
    return half_length * c + half_width * s, half_length * s + half_width * c


def quintic_coefficients(x0, v0, a0, x1, v1, a1, T):
    """Coefficients c0..c5 (stacked on the last axis) of the quintic from (x0, v0, a0) at 0 to
    (x1, v1, a1) at T. All arguments broadcast."""
    x0, v0, a0, x1, v1, a1, T = np.broadcast_arrays(*(np.asarray(a, np.float64)
                                                      for a in (x0, v0, a0, x1, v1, a1, T)))
    T2, T3 = T * T, T * T * T
    h = x1 - x0 - v0 * T - 0.5 * a0 * T2
    dv = v1 - v0 - a0 * T
    da = a1 - a0
    c3 = (10 * h - 4 * dv * T + 0.5 * da * T2) / T3
    c4 = (-15 * h + 7 * dv * T - da * T2) / (T3 * T)
    c5 = (6 * h - 3 * dv * T + 0.5 * da * T2) / (T3 * T2)
    return np.stack([x0, v0, 0.5 * a0, c3, c4, c5], axis=-1)


def quartic_coefficients(x0, v0, a0, v1, a1, T):
    """Coefficients c0..c4 of the quartic from (x0, v0, a0) at 0 to speed v1, accel a1 at T."""
    x0, v0, a0, v1, a1, T = np.broadcast_arrays(*(np.asarray(a, np.float64)
                                                  for a in (x0, v0, a0, v1, a1, T)))
    A = v1 - v0 - a0 * T
    B = a1 - a0
    c3 = A / (T * T) - B / (3 * T)
    c4 = (B - 6 * c3 * T) / (12 * T * T)
    return np.stack([x0, v0, 0.5 * a0, c3, c4], axis=-1)


def polyval(coeffs, t, derivative: int = 0):
    """Value (or derivative) of polynomials with coefficients c0..cn on the last axis at t.

    coeffs (..., n+1) and t broadcast against coeffs[..., 0]."""
    coeffs = np.asarray(coeffs, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    n = coeffs.shape[-1]
    out = np.zeros(np.broadcast_shapes(coeffs.shape[:-1], t.shape))
    for k in range(n - 1, derivative - 1, -1):  # Horner on the differentiated polynomial
        factor = 1.0
        for j in range(derivative):
            factor *= k - j
        out = out * t + factor * coeffs[..., k]
    return out


DEFAULT_LANE_WIDTH_M = 3.5
# Lane points farther than this from the ego say nothing about the next seconds, and a broken one
# (1e12 m) would make the resampled reference line absurdly long (memory, time): they are dropped.
MAX_LANE_RANGE_M = 1000.0


_AROUND_EGO: dict = {}              # Road.around_ego's last roads, oldest first
_AROUND_EGO_SIZE = 8
_AROUND_EGO_LOCK = threading.Lock()


class Road:
    """The drivable road around the ego: a reference line (the ego lane centre) and, in its
    Frenet frame, the centre offset and width of every known lane and the road edges.

    Built by `Road.from_lanes`; with no usable lane the ego lane is assumed to be centred on the
    current pose along the current heading, `default_width_m` wide (`assumed_lane` is then True).
    """

    def __init__(self, reference: ReferenceLine, lane_offsets: np.ndarray, lane_center_d_m: np.ndarray,
                 lane_width_m: np.ndarray, assumed_lane: bool, notes: list, lane_oncoming=None):
        order = np.argsort(lane_center_d_m)
        self.reference = reference
        self.lane_offsets = np.asarray(lane_offsets, dtype=np.int64)[order]
        self.lane_center_d_m = np.asarray(lane_center_d_m, dtype=np.float64)[order]
        self.lane_width_m = np.asarray(lane_width_m, dtype=np.float64)[order]
        # lanes whose centre line runs against the reference (oncoming traffic)
        self.lane_oncoming = (np.zeros(len(order), bool) if lane_oncoming is None
                              else np.asarray(lane_oncoming, dtype=bool)[order])
        self.left_edge_d_m = float(np.max(self.lane_center_d_m + self.lane_width_m / 2))
        self.right_edge_d_m = float(np.min(self.lane_center_d_m - self.lane_width_m / 2))
        self.assumed_lane = assumed_lane
        self.notes = notes

    @classmethod
    def from_lanes(cls, lanes, default_width_m: float = DEFAULT_LANE_WIDTH_M) -> 'Road':
        notes = []
        usable = []
        for lane in lanes or []:
            pts = np.asarray(getattr(lane, 'centerline', np.zeros((0, 3))), dtype=np.float64)
            width = float(getattr(lane, 'width_m', np.nan))
            if pts.ndim != 2 or pts.shape[1] < 2:
                notes.append(f'lane {getattr(lane, "offset", "?")} ignored: centreline not (M, 3)')
                continue
            pts = pts[np.all(np.isfinite(pts[:, :2]), axis=1), :2]
            far = np.hypot(pts[:, 0], pts[:, 1]) > MAX_LANE_RANGE_M
            if far.any():
                notes.append(f'lane {lane.offset}: {int(far.sum())} centreline points farther than '
                             f'{MAX_LANE_RANGE_M:.0f} m ignored')
                pts = pts[~far]
            if len(pts) < 2 or np.ptp(pts, axis=0).max() < 1e-3:
                notes.append(f'lane {lane.offset} ignored: fewer than 2 distinct finite points')
                continue
            if not np.isfinite(width) or width <= 0.5:
                notes.append(f'lane {lane.offset}: unusable width {width}, using {default_width_m} m')
                width = default_width_m
            usable.append((int(lane.offset), width, pts))
        if not usable:
            ref = ReferenceLine.straight()
            return cls(ref, [0], [0.0], [default_width_m], True, notes)
        ego = [u for u in usable if u[0] == 0]
        if not ego:  # no lane marked as ego: take the one passing closest to the ego
            dist = [np.min(np.hypot(u[2][:, 0], u[2][:, 1])) for u in usable]
            ego = [usable[int(np.argmin(dist))]]
            notes.append(f'no lane with offset 0; using lane {ego[0][0]} as ego lane')
        ref = ReferenceLine(ego[0][2])
        offsets, centers, widths, oncoming = [], [], [], []
        for offset, width, pts in usable:
            if pts is ego[0][2]:
                centre, against = 0.0, False
            else:
                s, d = ref.project(pts)
                centre = float(np.median(d))
                # centre lines are ordered along their driving direction: one that runs against
                # the reference is an oncoming lane
                against = bool(np.median(np.diff(s)) < 0) if len(s) >= 2 else False
            offsets.append(offset)
            centers.append(centre)
            widths.append(width)
            oncoming.append(against)
        return cls(ref, offsets, centers, widths, False, notes, oncoming)

    @classmethod
    def around_ego(cls, lanes, default_width_m: float = DEFAULT_LANE_WIDTH_M) -> 'Road':
        """`from_lanes` as the ego (at the origin of base_link, heading +x) can use it: lanes whose
        ego lane runs more than 90 deg against the ego heading (wrong data, or an oncoming lane
        taken for ours) are ignored and the ego lane is assumed; 60-90 deg off is noted. The
        planner and the safety filter both build their road here, so they agree on where it is.

        One planning cycle asks for the road of the same lanes several times (arbiter, classical
        planner, collision guard, safety filter; about 0.5 ms each): the last few are kept, found by
        the identity of the lanes list and of each lane in it (a Scene is built per frame, its lanes
        not changed after). The Road returned is shared: read it, do not change it."""
        key = (id(lanes), float(default_width_m))
        members = tuple(map(id, lanes)) if isinstance(lanes, (list, tuple)) else None
        with _AROUND_EGO_LOCK:
            hit = _AROUND_EGO.get(key)
            if hit is not None and hit[0] is lanes and hit[1] == members:
                return hit[2]
        road = cls._around_ego(lanes, default_width_m)
        for value in vars(road).values():                  # shared: a reader that writes fails loudly
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        with _AROUND_EGO_LOCK:
            _AROUND_EGO[key] = (lanes, members, road)      # holds lanes: its id is not reused meanwhile
            while len(_AROUND_EGO) > _AROUND_EGO_SIZE:
                del _AROUND_EGO[next(iter(_AROUND_EGO))]
        return road

    @classmethod
    def _around_ego(cls, lanes, default_width_m: float) -> 'Road':
        road = cls.from_lanes(lanes, default_width_m)
        s0 = float(road.reference.project(np.zeros(2))[0])
        heading_err = float(wrap_angle(0.0 - road.reference.frame_at(s0)[2]))
        if not road.assumed_lane and abs(heading_err) > np.radians(90):
            notes = road.notes + [f'lanes run {np.degrees(abs(heading_err)):.0f} deg against the '
                                  'ego heading; lanes ignored']
            road = cls.from_lanes([], default_width_m)
            road.notes = notes
        elif abs(heading_err) > np.radians(60):
            road.notes.append(f'ego heading {np.degrees(heading_err):.0f} deg off the lane direction')
        return road

    def lane_index_of(self, d_m) -> np.ndarray:
        """Position (in lanes, 0 = ego lane, + left) of the lane nearest to offset(s) d_m."""
        d = np.asarray(d_m, dtype=np.float64)
        nearest = np.argmin(np.abs(d[..., None] - self.lane_center_d_m), axis=-1)
        ego_pos = int(np.argmin(np.abs(self.lane_center_d_m)))
        return nearest - ego_pos

    def nearest_lane_center_d(self, d_m) -> np.ndarray:
        d = np.asarray(d_m, dtype=np.float64)
        nearest = np.argmin(np.abs(d[..., None] - self.lane_center_d_m), axis=-1)
        return self.lane_center_d_m[nearest]
