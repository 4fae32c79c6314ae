"""Ego footprint against predicted objects: the geometry the classical planner (to choose) and the
safety filter (to judge) both need, so neither imports the other.

The ego footprint is an oriented rectangle around `base_to_center_m` ahead of the rear axle;
objects are the oriented boxes of `PredictedObjects` at the same times.
"""
from __future__ import annotations

import numpy as np

from fmdrive.planning.prediction import PredictedObjects

LANE_KEEP_TOLERANCE_M = 0.5  # lateral displacement below which the ego counts as keeping its lane
# Standing solid objects (standing_solid, not_closer_than_now): slower than STANDING_MPS and not
# VULNERABLE; how much closer than now a trajectory may still come to one (numerical slack)
STANDING_MPS = 0.5
VULNERABLE = ('pedestrian', 'cyclist')
ESCAPE_TOLERANCE_M = 0.05


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


def without_growth(pred: PredictedObjects) -> PredictedObjects:
    """The same predicted objects with their boxes at every time as at the first (no uncertainty
    growth; pred.t_s[0] = 0, where prediction adds none)."""
    from dataclasses import replace
    n_t = pred.center_xy.shape[1]
    return replace(pred, half_length_m=np.repeat(pred.half_length_m[:, :1], n_t, axis=1),
                   half_width_m=np.repeat(pred.half_width_m[:, :1], n_t, axis=1))


def standing_solid(pred: PredictedObjects) -> np.ndarray:
    """(N,) objects that stand still (predicted speed < STANDING_MPS) and are not pedestrians or cyclists."""
    if len(pred) == 0 or pred.center_xy.shape[1] < 2:
        return np.zeros(len(pred), bool)
    xy, t = pred.center_xy, pred.t_s
    speed = np.hypot(*(xy[:, -1] - xy[:, 0]).T) / max(float(t[-1] - t[0]), 1e-6)
    return (speed < STANDING_MPS) & ~np.isin(np.asarray(pred.labels, dtype=object), VULNERABLE)


def not_closer_than_now(real_gap: np.ndarray) -> np.ndarray:
    """(..., T, N) where a footprint comes closer to an object than at the first time (less
    ESCAPE_TOLERANCE_M), gaps measured on boxes without growth (without_growth).

    Used for standing solid objects (standing_solid): a violation of the margin counts only where
    the trajectory also comes closer to the object than the car is now. Whatever stands still
    cannot be met by a trajectory that never comes nearer to it than the car already is; without
    this, a car stopped (or steered) within the margin of a parked car finds every trajectory,
    standing still included (the predicted box grows), rejected for that car: emergency stops for
    ever beside something that does not move. Measured: closed-loop scenario 419, the ego 0.18 m
    from a parked car, 20 s of emergency stops, progress half the expert's. Pedestrians, cyclists
    and moving objects keep the plain margin."""
    real_gap = np.asarray(real_gap)
    return real_gap < real_gap[..., :1, :] - ESCAPE_TOLERANCE_M


def margin_violations(too_close: np.ndarray, ego_xy, ego_yaw, ego_half_l: float, ego_half_w: float,
                      pred: PredictedObjects, exact_within_m: float = np.inf) -> np.ndarray:
    """too_close (..., T, N) (footprints within the margin of objects, from footprint_gaps on the
    same footprints and pred) with the violations that do not count removed: for standing solid
    objects only those where the footprint also comes closer than now (not_closer_than_now).
    The one rule the classical planner (choosing) and the safety filter (judging) share."""
    too_close = np.array(too_close, dtype=bool)
    if too_close.size == 0:
        return too_close
    solid = standing_solid(pred) & too_close.reshape(-1, too_close.shape[-1]).any(axis=0)
    if solid.any():
        real, _ = footprint_gaps(ego_xy, ego_yaw, ego_half_l, ego_half_w, without_growth(pred),
                                 exact_within_m=exact_within_m)
        too_close[..., solid] &= not_closer_than_now(real)[..., solid]
    return too_close
