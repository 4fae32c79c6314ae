"""Independent safety check of any trajectory (classical, learned, hand-written): the one safety
filter the arbiter (fmdrive/planning/arbiter.py) applies to every plan.

`check_trajectory` looks only at the trajectory (poses in odom, times, speeds) and the scene, never
at how the trajectory was made, so the language-model planner and the classical planner are judged
by the same rules and the same numbers (fmdrive/planning/limits.py):
  - finite numbers, consistent shapes, increasing times, no reversing;
  - speed not above the limit (or above the current speed, when already faster);
  - longitudinal acceleration / braking, jerk (change of acceleration between waypoints) and
    lateral acceleration within the vehicle limits, and no turn tighter than the car can
    (curvature = heading change per metre driven, on steps longer than CURVATURE_MIN_STEP_M);
  - speeds consistent with the distance between poses, and poses heading where they move;
  - the ego footprint keeps `safety_margin_m` from every object predicted with constant velocity;
  - from the trajectory's last state the car can still stop, braking at max_decel_mps2, behind
    what is then ahead of it in its corridor (the classical planner's own rule at its horizon);
  - the footprint stays on the road (between the outermost lane edges).
An object that stands (and is no pedestrian or cyclist) is met only where the footprint is within
the margin of it and also closer to it than now (footprint.not_closer_than_now says why).
A contact with an object that is straight behind the ego now (a follower), while the ego keeps its
lane, is not counted: braking cannot avoid it, and rejecting every plan for it would leave only an
emergency stop - the worst answer to a tailgater. Cutting in front of a follower in another lane
is counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmdrive.geometry import inv_T, wrap_angle
from fmdrive.planning.footprint import LANE_KEEP_TOLERANCE_M, footprint_gaps, margin_violations
from fmdrive.planning.frenet import Road, box_extent_sd
from fmdrive.planning.limits import VehicleLimits, effective_speed_limit
from fmdrive.planning.occlusion import OCCLUSION_TOLERANCE_MPS, dart_out_excess, occluders, people_about
from fmdrive.planning.prediction import MAX_OBJECT_SPEED_MPS, follow_lane, predict_constant_velocity

CHECK_DT_S = 0.1          # the trajectory is densified to this step for the collision check
CURVATURE_MIN_STEP_M = 0.5   # shorter steps say little about the path's curvature (standing, creeping)


@dataclass
class SafetyReport:
    ok: bool
    reasons: list = field(default_factory=list)
    min_clearance_m: float = float('inf')   # smallest gap ego footprint <-> predicted object
    max_accel_mps2: float = 0.0              # largest |longitudinal acceleration| (braking incl.)
    max_lat_accel_mps2: float = 0.0
    max_decel_mps2: float = 0.0              # largest braking deceleration (positive number)


def _densify(t_s, poses, speeds, dt_s):
    """Linear interpolation of (t, x, y, yaw, v) onto a regular time grid starting at t_s[0]."""
    t_dense = np.arange(t_s[0], t_s[-1] + 1e-9, dt_s)
    if t_dense[-1] < t_s[-1] - 1e-9:
        t_dense = np.r_[t_dense, t_s[-1]]
    yaw_u = np.unwrap(poses[:, 2])
    return (t_dense, np.interp(t_dense, t_s, poses[:, 0]), np.interp(t_dense, t_s, poses[:, 1]),
            np.interp(t_dense, t_s, yaw_u), np.interp(t_dense, t_s, speeds))


def check_trajectory(poses_odom, t_s, speeds, scene, limits: VehicleLimits | None = None) -> SafetyReport:
    """Check a trajectory (poses_odom (K, 3) x, y, yaw_rad in odom; t_s (K,) from the scene
    stamp; speeds (K,) m/s) against `scene` (fmdrive.objects.Scene) and `limits` (VehicleLimits,
    or anything extending it such as PlannerParams; defaults when None). Never raises on bad
    trajectory data: it reports it."""
    lim = limits if limits is not None else VehicleLimits()
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
    if abs(ego.speed_mps) > MAX_OBJECT_SPEED_MPS:
        return SafetyReport(False, [f'impossible ego speed {ego.speed_mps:.3g} m/s in the scene; '
                                    'cannot check'], float('nan'))
    if t[0] <= 0 or np.any(np.diff(t) <= 0):
        return SafetyReport(False, ['times must be positive and strictly increasing'], float('nan'))

    tol = float(lim.kinematic_tolerance)
    max_accel, max_decel = float(lim.max_accel_mps2), float(lim.max_decel_mps2)
    max_lat = float(lim.max_lat_accel_mps2)
    max_jerk = float(getattr(lim, 'max_jerk_mps3', VehicleLimits.max_jerk_mps3))
    max_curv = float(getattr(lim, 'max_curvature_1pm', VehicleLimits.max_curvature_1pm))
    limit = effective_speed_limit(lim, scene)
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
    if len(a_lon) > 1:
        t_mid = 0.5 * (tt[1:] + tt[:-1])
        jerk = np.abs(np.diff(a_lon) / np.diff(t_mid))
        max_j = float(jerk.max())
        if max_j > max_jerk * (1 + tol) + 0.05:
            reasons.append(f'jerk {max_j:.1f} m/s^3 above {max_jerk:.1f}')
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
    long_step = step_len > CURVATURE_MIN_STEP_M
    if long_step.any():
        curvature = np.abs(dyaw[long_step]) / step_len[long_step]
        if curvature.max() > max_curv * (1 + tol) + 1e-3:
            reasons.append(f'curvature {curvature.max():.2f} 1/m above {max_curv:.2f} (a turn tighter than '
                           f'{1 / max_curv:.1f} m radius)')
    moving = step_len > 1.0
    if moving.any():
        chord = np.arctan2(step[:, 1], step[:, 0])
        mid_yaw = P[:-1, 2] + 0.5 * dyaw
        off = np.abs(wrap_angle(chord - mid_yaw))
        if np.any(off[moving] > np.radians(30)):
            reasons.append('poses do not head where the trajectory moves (sideways or reversed)')

    # dense footprint, objects and road
    td, xd, yd, yawd, vd = _densify(tt, P, vv, CHECK_DT_S)
    length, width = float(lim.vehicle_length_m), float(lim.vehicle_width_m)
    to_center = float(lim.base_to_center_m)
    cx = xd + to_center * np.cos(yawd)
    cy = yd + to_center * np.sin(yawd)
    road = Road.around_ego(scene.lanes, lim.default_lane_width_m)
    _, d_path = road.reference.project(np.c_[xd, yd])
    objects = [o for o in (scene.objects or [])]
    pred = predict_constant_velocity(objects, td, lim.uncertainty_growth_mps, 0.0)
    if not road.assumed_lane:
        # as the classical planner predicts (classical.py _objects_in_frenet): a vehicle driving
        # along the road follows its curve, keeping its drift across it. Constant velocity alone has
        # an oncoming car on a left bend cut straight across the ego lane: measured on eval scenes
        # with their lanes, the filter then flagged every plan that kept to the bend (the classical
        # one, which was published anyway with '; unsafe')
        pred = follow_lane(pred, road.reference)
    gap, behind = footprint_gaps(np.c_[cx, cy], yawd, length / 2, width / 2, pred,
                                 exact_within_m=np.inf)
    keeps_lane = np.abs(d_path - d_path[0]) < LANE_KEEP_TOLERANCE_M
    counted = ~(behind & keeps_lane[:, None])
    min_gap = float(gap[counted].min(initial=np.inf))
    margin = float(lim.safety_margin_m)
    hit = (gap < margin) & counted
    # standing solid objects: only where the trajectory also comes closer than now
    hit = margin_violations(hit, np.c_[cx, cy], yawd, length / 2, width / 2, pred)
    hit[0] = False  # the present cannot be changed by any trajectory
    if hit.any():
        ti, ni = np.argwhere(hit)[0]
        reasons.append(f'collision: within {margin:.2f} m of object id={pred.ids[ni]} '
                       f'({pred.labels[ni]}) at t={td[ti]:.1f} s (gap {gap[ti, ni]:.2f} m)')

    hidden = _hidden_pedestrian_excess(road, pred, td, xd, yd, yawd, vd, lim)
    if hidden:
        reasons.append(hidden)

    stop = _cannot_stop_after_horizon(road, pred, td, xd, yd, float(vv[-1]), lim)
    if stop:
        reasons.append(stop)

    corners_l = np.array([to_center + length / 2, to_center + length / 2,
                          to_center - length / 2, to_center - length / 2])
    corners_w = np.array([width / 2, -width / 2, width / 2, -width / 2])
    c, s = np.cos(yawd)[:, None], np.sin(yawd)[:, None]
    corner_xy = np.stack([xd[:, None] + c * corners_l - s * corners_w,
                          yd[:, None] + s * corners_l + c * corners_w], axis=-1)
    _, d_corner = road.reference.project(corner_xy)
    outside = np.maximum(d_corner - road.left_edge_d_m, road.right_edge_d_m - d_corner).max(axis=1)
    outside = np.maximum(outside, 0.0)
    road_tol = float(lim.road_tolerance_m)
    if np.any(outside[1:] > outside[0] + road_tol):
        reasons.append(f'leaves the road by {outside.max():.2f} m')

    return SafetyReport(not reasons, reasons, min_gap, max(max_a, max_d), max_lat_seen, max_d)


END_SPEED_WINDOW_S = 0.5     # objects' speed along the road at the horizon's end: over its last 0.5 s
CORRIDOR_SLACK_M = 0.3       # lateral slack of the corridor, as the classical planner's headway check


def _hidden_pedestrian_excess(road, pred, td, xd, yd, yawd, vd, lim) -> str:
    """The reason, or '': faster past a standing vehicle beside the path than the car can stop
    from for a pedestrian stepping out past its far end (fmdrive/planning/occlusion.py, the rule
    the classical planner keeps as a limit)."""
    if len(pred) == 0 or float(getattr(lim, 'occlusion_lateral_m', 0.0)) <= 0 or len(td) < 2:
        return ''
    speeds = np.hypot(*(pred.center_xy[:, 1] - pred.center_xy[:, 0]).T) / max(float(td[1] - td[0]), 1e-6)
    s_o, d_o = road.reference.project(pred.center_xy[:, 0, :])
    th = road.reference.frame_at(s_o)[2]
    ext_s, ext_d = box_extent_sd(pred.half_length_m[:, 0], pred.half_width_m[:, 0], pred.yaw_rad[:, 0] - th)
    occ = occluders(pred.labels, speeds, d_o, ext_d)
    if not occ.any() or not people_about(pred.labels, pred.center_xy[:, 0, :], lim):
        return ''
    cx = xd + float(lim.base_to_center_m) * np.cos(yawd)
    cy = yd + float(lim.base_to_center_m) * np.sin(yawd)
    s_c, d_c = road.reference.project(np.c_[cx, cy])
    reachable = np.maximum(vd[0] - float(lim.comfort_decel_mps2) * (td[1:] - td[0]), 0.0)
    excess = dart_out_excess(s_c[1:] + float(lim.vehicle_length_m) / 2, d_c[1:], vd[1:], (s_o + ext_s)[occ],
                             d_o[occ], ext_d[occ], float(lim.vehicle_width_m) / 2, lim, reachable)
    if float(excess) <= OCCLUSION_TOLERANCE_MPS:
        return ''
    return (f'hidden pedestrians: {float(excess):.1f} m/s faster past a standing vehicle beside the path than '
            f'the car can stop from for someone stepping out past it')


def _cannot_stop_after_horizon(road, pred, td, xd, yd, v_end: float, lim) -> str:
    """The reason, or '' : an object ahead of the car in its corridor (Frenet, along the road) at
    the horizon's end, nearer than the car needs to stop behind it braking at max_decel_mps2 (both
    braking equally hard; + safety_margin_m). This is where a plan that keeps its speed towards a
    pedestrian standing in the lane 40 m ahead is caught: they meet after the 3 s horizon, so the
    collision check alone passes it (closed-loop scenario 449: the LM plan held 12.8 m/s there,
    the fallback could not stop when a second pedestrian stepped out nearer). The classical planner
    rejects its own candidates by the same rule (classical._object_checks)."""
    if len(pred) == 0 or len(td) < 2:
        return ''
    k = int(np.searchsorted(td, td[-1] - END_SPEED_WINDOW_S))
    k = min(k, len(td) - 2)
    s_o, d_o = road.reference.project(pred.center_xy[:, [k, -1], :])          # (N, 2)
    s_e, d_e = (float(a[0]) for a in road.reference.project(np.array([[xd[-1], yd[-1]]])))
    th = road.reference.frame_at(s_o[:, 1])[2]
    phi = pred.yaw_rad[:, -1] - th
    ext_s, ext_d = box_extent_sd(pred.half_length_m[:, -1], pred.half_width_m[:, -1], phi)
    v_obj = np.maximum((s_o[:, 1] - s_o[:, 0]) / max(float(td[-1] - td[k]), 1e-6), 0.0)
    front = float(lim.base_to_center_m) + float(lim.vehicle_length_m) / 2
    half_w = float(lim.vehicle_width_m) / 2
    ahead = (s_o[:, 1] > s_e) & (np.abs(d_o[:, 1] - d_e) < ext_d + half_w + CORRIDOR_SLACK_M)
    gap = s_o[:, 1] - ext_s - (s_e + front)
    need = (max(v_end, 0.0) ** 2 - v_obj ** 2) / (2 * float(lim.max_decel_mps2)) + float(lim.safety_margin_m)
    short = ahead & (gap < need)
    if not short.any():
        return ''
    n = int(np.argmax(np.where(short, need - gap, -np.inf)))
    return (f'cannot stop behind object id={pred.ids[n]} ({pred.labels[n]}) after the trajectory ends: '
            f'{max(gap[n], 0.0):.1f} m ahead at {v_end:.1f} m/s, needs {need[n]:.1f} m')
