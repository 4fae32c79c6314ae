"""Independent safety check of any trajectory (classical, learned, hand-written).

`check_trajectory` looks only at the trajectory (poses in odom, times, speeds) and the scene, never
at how the trajectory was made, so the language-model planner and the classical planner are judged
by the same rules:
  - finite numbers, consistent shapes, increasing times, no reversing;
  - speed not above the limit (or above the current speed, when already faster);
  - longitudinal acceleration / braking and lateral acceleration within the vehicle limits;
  - speeds consistent with the distance between poses, and poses heading where they move;
  - the ego footprint keeps `safety_margin_m` from every object predicted with constant velocity;
  - the footprint stays on the road (between the outermost lane edges).
A contact with an object that is straight behind the ego now (a follower), while the ego keeps its
lane, is not counted: braking cannot avoid it, and rejecting every plan for it would leave only an
emergency stop - the worst answer to a tailgater. Cutting in front of a follower in another lane
is counted.

The footprint geometry helpers here (`oriented_box_gaps`, `footprint_gaps`) are shared with the
classical planner.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmdrive.geometry import inv_T, wrap_angle
from fmdrive.planning.frenet import Road
from fmdrive.planning.prediction import PredictedObjects, predict_constant_velocity

CHECK_DT_S = 0.1          # the trajectory is densified to this step for the collision check
LANE_KEEP_TOLERANCE_M = 0.5  # lateral displacement below which the ego counts as keeping its lane


@dataclass
class SafetyReport:
    ok: bool
    reasons: list = field(default_factory=list)
    min_clearance_m: float = float('inf')   # smallest gap ego footprint <-> predicted object
    max_accel_mps2: float = 0.0              # largest |longitudinal acceleration| (braking incl.)
    max_lat_accel_mps2: float = 0.0
    max_decel_mps2: float = 0.0              # largest braking deceleration (positive number)


def oriented_box_gaps(a_xy, a_yaw, a_half_l, a_half_w, b_xy, b_yaw, b_half_l, b_half_w):
    """Signed gap (m) between oriented rectangles A and B along the separating axes (broadcasts).

    Positive: separated by at least that distance (a lower bound of the true distance).
    Negative: overlapping (minus the smallest penetration along the four axes)."""
    dx = b_xy[..., 0] - a_xy[..., 0]
    dy = b_xy[..., 1] - a_xy[..., 1]
    ca, sa = np.cos(a_yaw), np.sin(a_yaw)
    cb, sb = np.cos(b_yaw), np.sin(b_yaw)
    cos_d = np.abs(ca * cb + sa * sb)
    sin_d = np.abs(sa * cb - ca * sb)
    g1 = np.abs(dx * ca + dy * sa) - a_half_l - (b_half_l * cos_d + b_half_w * sin_d)
    g2 = np.abs(-dx * sa + dy * ca) - a_half_w - (b_half_l * sin_d + b_half_w * cos_d)
    g3 = np.abs(dx * cb + dy * sb) - b_half_l - (a_half_l * cos_d + a_half_w * sin_d)
    g4 = np.abs(-dx * sb + dy * cb) - b_half_w - (a_half_l * sin_d + a_half_w * cos_d)
    return np.maximum(np.maximum(g1, g2), np.maximum(g3, g4))


def footprint_gaps(ego_xy, ego_yaw, ego_half_l: float, ego_half_w: float,
                   pred: PredictedObjects, exact_within_m: float = 3.0):
    """Gaps between ego footprints and predicted objects at the same times.

    ego_xy (..., T, 2) footprint centres, ego_yaw (..., T); pred holds N objects at those T times.
    Returns gap (..., T, N) and behind (..., T, N): at the first time the object's centre was
    straight behind the ego's rear edge (a follower; the flag holds for all times).
    Only pairs whose bounding circles come within `exact_within_m` get their exact oriented-box
    gap; the others get +inf (meaning: farther than exact_within_m). Pass
    exact_within_m=np.inf for exact gaps everywhere."""
    ego_xy = np.asarray(ego_xy, dtype=np.float64)
    lead = ego_xy.shape[:-1]
    n = len(pred)
    if n == 0:
        return np.full(lead + (0,), np.inf), np.zeros(lead + (0,), bool)
    flat_xy = ego_xy.reshape(-1, ego_xy.shape[-2], 2)            # (C, T, 2)
    n_c, n_t = flat_xy.shape[:2]
    yaw = np.broadcast_to(np.asarray(ego_yaw, np.float64), lead).reshape(n_c, n_t)
    gap = np.full((n_c, n_t, n), np.inf)
    # followers: straight behind the footprint at the first time step
    rel0 = pred.center_xy[None, :, 0, :] - flat_xy[:, None, 0, :]          # (C, N, 2)
    c0, s0 = np.cos(yaw[:, :1]), np.sin(yaw[:, :1])                         # (C, 1)
    lon0 = rel0[..., 0] * c0 + rel0[..., 1] * s0
    lat0 = -rel0[..., 0] * s0 + rel0[..., 1] * c0
    behind0 = (lon0 < -ego_half_l) & (np.abs(lat0) < ego_half_w + pred.half_width_m[None, :, 0])
    behind = np.broadcast_to(behind0[:, None, :], (n_c, n_t, n))
    reach = (np.hypot(ego_half_l, ego_half_w) + pred.bounding_radius_m().T
             + exact_within_m)                                   # (T, N)
    # (time, object) pairs that come within reach of the box around all footprints at that time
    lo, hi = flat_xy.min(axis=0), flat_xy.max(axis=0)            # (T, 2)
    oxy = np.moveaxis(pred.center_xy, 0, 1)                      # (T, N, 2)
    out = np.maximum(np.maximum(lo[:, None, :] - oxy, oxy - hi[:, None, :]), 0.0)
    t_k, n_k = np.nonzero(np.hypot(out[..., 0], out[..., 1]) < reach)
    if len(t_k):
        dx = oxy[t_k, n_k, 0] - flat_xy[:, t_k, 0]               # (C, K)
        dy = oxy[t_k, n_k, 1] - flat_xy[:, t_k, 1]
        near = dx * dx + dy * dy < reach[t_k, n_k] ** 2
        c_i, k_i = np.nonzero(near)
        if len(c_i):
            ti, ni = t_k[k_i], n_k[k_i]
            e_yaw = yaw[c_i, ti]
            ddx, ddy = dx[c_i, k_i], dy[c_i, k_i]
            zero = np.zeros((len(c_i), 2))
            gap[c_i, ti, ni] = oriented_box_gaps(zero, e_yaw, ego_half_l, ego_half_w,
                                                 np.stack([ddx, ddy], -1), pred.yaw_rad[ni, ti],
                                                 pred.half_length_m[ni, ti],
                                                 pred.half_width_m[ni, ti])
    gap = gap.reshape(lead + (n,))
    behind = behind.reshape(lead + (n,))
    return gap, behind


def _densify(t_s, poses, speeds, dt_s):
    """Linear interpolation of (t, x, y, yaw, v) onto a regular time grid starting at t_s[0]."""
    t_dense = np.arange(t_s[0], t_s[-1] + 1e-9, dt_s)
    if t_dense[-1] < t_s[-1] - 1e-9:
        t_dense = np.r_[t_dense, t_s[-1]]
    yaw_u = np.unwrap(poses[:, 2])
    return (t_dense, np.interp(t_dense, t_s, poses[:, 0]), np.interp(t_dense, t_s, poses[:, 1]),
            np.interp(t_dense, t_s, yaw_u), np.interp(t_dense, t_s, speeds))


def _param(params, name, default):
    v = getattr(params, name, default)
    return float(default if v is None or not np.isfinite(v) else v)


def check_trajectory(poses_odom, t_s, speeds, scene, params=None) -> SafetyReport:
    """Check a trajectory (poses_odom (K, 3) x, y, yaw_rad in odom; t_s (K,) from the scene
    stamp; speeds (K,) m/s) against `scene` (fmdrive.objects.Scene) and the limits in `params`
    (a PlannerParams; defaults when None). Never raises on bad trajectory data: it reports it."""
    if params is None:
        from fmdrive.planning.classical import PlannerParams
        params = PlannerParams()
    reasons = []
    try:
        poses = np.asarray(poses_odom, dtype=np.float64)
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        v = np.asarray(speeds, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        return SafetyReport(False, [f'malformed trajectory: {err}'], float('nan'))
    if poses.ndim != 2 or poses.shape[1] != 3 or len(t) != len(poses) or len(v) != len(poses):
        return SafetyReport(False, [f'malformed trajectory: poses {poses.shape}, t_s {t.shape}, '
                                    f'speeds {v.shape}; expected (K, 3), (K,), (K,)'], float('nan'))
    if len(poses) == 0:
        return SafetyReport(False, ['empty trajectory'], float('nan'))
    if not (np.all(np.isfinite(poses)) and np.all(np.isfinite(t)) and np.all(np.isfinite(v))):
        return SafetyReport(False, ['non-finite values (NaN/inf) in the trajectory'], float('nan'))
    ego = scene.ego
    ego_state = np.array([ego.x, ego.y, ego.yaw_rad, ego.speed_mps], dtype=np.float64)
    if not np.all(np.isfinite(ego_state)):
        return SafetyReport(False, ['non-finite ego state in the scene; cannot check'], float('nan'))
    if t[0] <= 0 or np.any(np.diff(t) <= 0):
        return SafetyReport(False, ['times must be positive and strictly increasing'], float('nan'))

    tol = _param(params, 'kinematic_tolerance', 0.1)
    max_accel = _param(params, 'max_accel_mps2', 2.0)
    max_decel = _param(params, 'max_decel_mps2', 6.0)
    max_lat = _param(params, 'max_lat_accel_mps2', 3.0)
    limit = _param(params, 'speed_limit_mps', 13.9)
    if scene.speed_limit_mps is not None and np.isfinite(scene.speed_limit_mps) \
            and scene.speed_limit_mps > 0:
        limit = min(limit, float(scene.speed_limit_mps))
    v0 = max(float(ego.speed_mps), 0.0)

    # everything in base_link at the scene stamp, with the current state prepended at t = 0
    T_base_odom = inv_T(ego.T_odom_base())
    xy = poses[:, :2] @ T_base_odom[:2, :2].T + T_base_odom[:2, 3]
    yaw = wrap_angle(poses[:, 2] - ego.yaw_rad)
    P = np.vstack([[0.0, 0.0, 0.0], np.c_[xy, yaw]])
    tt = np.r_[0.0, t]
    vv = np.r_[v0, v]

    if np.any(v < -0.1):
        reasons.append(f'reversing: speed down to {v.min():.2f} m/s')
    speed_cap = max(limit, v0)
    if np.any(v > speed_cap * (1 + tol) + 0.1):
        reasons.append(f'speed {v.max():.2f} m/s above the limit {limit:.2f} m/s')
    dt = np.diff(tt)
    a_lon = np.diff(vv) / dt
    max_a = float(a_lon.max(initial=0.0))
    max_d = max(0.0, float(-a_lon.min(initial=0.0)))
    if max_a > max_accel * (1 + tol) + 0.05:
        reasons.append(f'acceleration {max_a:.2f} m/s^2 above {max_accel:.2f}')
    if max_d > max_decel * (1 + tol) + 0.05:
        reasons.append(f'braking {max_d:.2f} m/s^2 above {max_decel:.2f}')
    dyaw = wrap_angle(np.diff(P[:, 2]))
    v_mid = 0.5 * (vv[1:] + vv[:-1])
    a_lat = np.abs(v_mid * dyaw / dt)
    max_lat_seen = float(a_lat.max(initial=0.0))
    if max_lat_seen > max_lat * (1 + tol) + 0.05:
        reasons.append(f'lateral acceleration {max_lat_seen:.2f} m/s^2 above {max_lat:.2f}')
    step = np.diff(P[:, :2], axis=0)
    step_len = np.hypot(step[:, 0], step[:, 1])
    expected = v_mid * dt
    bad = np.abs(step_len - expected) > np.maximum(1.0, 0.3 * expected)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        reasons.append(f'speeds inconsistent with poses: moved {step_len[i]:.2f} m in '
                       f'{dt[i]:.2f} s at {v_mid[i]:.2f} m/s (segment {i})')
    moving = step_len > 1.0
    if moving.any():
        chord = np.arctan2(step[:, 1], step[:, 0])
        mid_yaw = P[:-1, 2] + 0.5 * dyaw
        off = np.abs(wrap_angle(chord - mid_yaw))
        if np.any(off[moving] > np.radians(30)):
            reasons.append('poses do not head where the trajectory moves (sideways or reversed)')

    # dense footprint, objects and road
    td, xd, yd, yawd, _ = _densify(tt, P, vv, CHECK_DT_S)
    length = _param(params, 'vehicle_length_m', 4.5)
    width = _param(params, 'vehicle_width_m', 1.9)
    to_center = _param(params, 'base_to_center_m', 1.4)
    cx = xd + to_center * np.cos(yawd)
    cy = yd + to_center * np.sin(yawd)
    road = Road.from_lanes(scene.lanes, getattr(params, 'default_lane_width_m', 3.5))
    _, d_path = road.reference.project(np.c_[xd, yd])
    objects = [o for o in (scene.objects or [])]
    pred = predict_constant_velocity(objects, td, getattr(params, 'uncertainty_growth_mps', None),
                                     0.0)
    gap, behind = footprint_gaps(np.c_[cx, cy], yawd, length / 2, width / 2, pred,
                                 exact_within_m=np.inf)
    keeps_lane = np.abs(d_path - d_path[0]) < LANE_KEEP_TOLERANCE_M
    counted = ~(behind & keeps_lane[:, None])
    min_gap = float(gap[counted].min(initial=np.inf))
    margin = _param(params, 'safety_margin_m', 0.2)
    hit = (gap < margin) & counted
    hit[0] = False  # the present cannot be changed by any trajectory
    if hit.any():
        ti, ni = np.argwhere(hit)[0]
        reasons.append(f'collision: within {margin:.2f} m of object id={pred.ids[ni]} '
                       f'({pred.labels[ni]}) at t={td[ti]:.1f} s (gap {gap[ti, ni]:.2f} m)')

    corners_l = np.array([to_center + length / 2, to_center + length / 2,
                          to_center - length / 2, to_center - length / 2])
    corners_w = np.array([width / 2, -width / 2, width / 2, -width / 2])
    c, s = np.cos(yawd)[:, None], np.sin(yawd)[:, None]
    corner_xy = np.stack([xd[:, None] + c * corners_l - s * corners_w,
                          yd[:, None] + s * corners_l + c * corners_w], axis=-1)
    _, d_corner = road.reference.project(corner_xy)
    outside = np.maximum(d_corner - road.left_edge_d_m, road.right_edge_d_m - d_corner).max(axis=1)
    outside = np.maximum(outside, 0.0)
    road_tol = _param(params, 'road_tolerance_m', 0.3)
    if np.any(outside[1:] > outside[0] + road_tol):
        reasons.append(f'leaves the road by {outside.max():.2f} m')

    return SafetyReport(not reasons, reasons, min_gap, max(max_a, max_d), max_lat_seen, max_d)
