"""Constant-velocity prediction of tracked objects, with an uncertainty margin that grows in time.

Every object keeps its velocity over ground (base_link axes) and its box yaw. Pedestrians and
cyclists change direction quickly, so their boxes are inflated by a margin growing with the
prediction time (`growth_mps * t`); cars grow slowly. Objects with a non-finite centre are dropped
(nothing can be said about where they are), a non-finite velocity counts as standing still and a
non-finite or degenerate size falls back to the class's typical size; each repair is reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Typical footprint (length, width) m per class, used when a detection's size is unusable.
DEFAULT_SIZE_LW = {'car': (4.5, 1.9), 'pedestrian': (0.6, 0.6), 'cyclist': (1.8, 0.7),
                   'cone': (0.4, 0.4)}
FALLBACK_SIZE_LW = (1.0, 1.0)

# Beyond these an input is broken, not a road user: an object farther than MAX_OBJECT_RANGE_M is
# dropped (it cannot matter within a planning horizon, and 1e308 m overflows the geometry), a
# speed above MAX_OBJECT_SPEED_MPS is treated like a non-finite one, a size above MAX_OBJECT_SIZE_M
# like an unusable one.
MAX_OBJECT_RANGE_M = 1000.0
MAX_OBJECT_SPEED_MPS = 100.0
MAX_OBJECT_SIZE_M = 50.0

# Growth of the uncertainty margin (m per s of prediction) per class; others use 'default'.
DEFAULT_GROWTH_MPS = {'pedestrian': 0.4, 'cyclist': 0.3, 'car': 0.1, 'cone': 0.0, 'default': 0.2}


@dataclass
class PredictedObjects:
    """N objects at T times, in the frame of the input objects (base_link at the scene stamp)."""
    t_s: np.ndarray                 # (T,)
    center_xy: np.ndarray           # (N, T, 2) m
    yaw_rad: np.ndarray             # (N, T)
    half_length_m: np.ndarray       # (N, T) incl. the uncertainty margin
    half_width_m: np.ndarray        # (N, T) incl. the uncertainty margin
    labels: list = field(default_factory=list)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    notes: list = field(default_factory=list)   # repairs made to the input (dropped objects, ...)

    def __len__(self) -> int:
        return self.center_xy.shape[0]

    def bounding_radius_m(self) -> np.ndarray:
        """(N, T) radius of the circle around each predicted box."""
        return np.hypot(self.half_length_m, self.half_width_m)


def predict_constant_velocity(objects, t_s, growth_mps: dict | None = None,
                              base_margin_m: float = 0.0) -> PredictedObjects:
    """Predict `objects` (list of Object3D) at times `t_s` (T,) with constant velocity."""
    growth = dict(DEFAULT_GROWTH_MPS if growth_mps is None else growth_mps)
    t = np.asarray(t_s, dtype=np.float64).reshape(-1)
    notes = []
    keep = []
    for i, obj in enumerate(objects):
        c = np.asarray(obj.center, dtype=np.float64)
        if c.shape[0] < 2 or not np.all(np.isfinite(c[:2])):
            notes.append(f'dropped object id={obj.id} ({obj.label}): non-finite centre')
            continue
        if np.hypot(c[0], c[1]) > MAX_OBJECT_RANGE_M:
            notes.append(f'dropped object id={obj.id} ({obj.label}): farther than '
                         f'{MAX_OBJECT_RANGE_M:.0f} m')
            continue
        keep.append(obj)
    n = len(keep)
    if n == 0:
        empty = np.zeros((0, len(t)))
        return PredictedObjects(t, np.zeros((0, len(t), 2)), empty, empty.copy(), empty.copy(),
                                [], np.zeros(0, np.int64), notes)
    center = np.array([o.center[:2] for o in keep], dtype=np.float64)
    velocity = np.array([np.asarray(o.velocity, np.float64)[:2] for o in keep])
    with np.errstate(over='ignore', invalid='ignore'):
        bad_v = ~np.all(np.isfinite(velocity), axis=1) \
            | ~(np.hypot(velocity[:, 0], velocity[:, 1]) <= MAX_OBJECT_SPEED_MPS)
    if bad_v.any():
        velocity[bad_v] = 0.0
        notes.append(f'{int(bad_v.sum())} object(s) with non-finite or impossible velocity treated '
                     'as standing')
    yaw = np.array([o.yaw_rad for o in keep], dtype=np.float64)
    yaw[~np.isfinite(yaw)] = 0.0
    labels = [o.label for o in keep]
    size = np.array([np.asarray(o.size, np.float64)[:2] for o in keep])
    bad_size = ~np.all(np.isfinite(size) & (size > 0.05) & (size <= MAX_OBJECT_SIZE_M), axis=1)
    if bad_size.any():
        size[bad_size] = [DEFAULT_SIZE_LW.get(labels[i], FALLBACK_SIZE_LW)
                          for i in np.flatnonzero(bad_size)]
        notes.append(f'{int(bad_size.sum())} object(s) with unusable size given their class size')
    rate = np.array([growth.get(lbl, growth.get('default', 0.0)) for lbl in labels])
    margin = base_margin_m + rate[:, None] * np.maximum(t, 0.0)[None, :]       # (N, T)
    center_t = center[:, None, :] + velocity[:, None, :] * t[None, :, None]     # (N, T, 2)
    return PredictedObjects(
        t_s=t, center_xy=center_t, yaw_rad=np.repeat(yaw[:, None], len(t), axis=1),
        half_length_m=size[:, 0:1] / 2 + margin, half_width_m=size[:, 1:2] / 2 + margin,
        labels=labels, ids=np.array([int(o.id) for o in keep], dtype=np.int64), notes=notes)


def follow_lane(pred: PredictedObjects, reference, max_heading_diff_rad: float = np.radians(30),
                labels=('car', 'cyclist')) -> PredictedObjects:
    """Vehicles driving along the road (heading within max_heading_diff_rad of the reference
    line, either direction) keep their offset from it: they follow the curve instead of leaving
    it on a straight line. `reference` is a frenet.ReferenceLine in the frame of `pred`.
    The others keep their constant-velocity prediction. Returns a new PredictedObjects."""
    n, n_t = pred.center_xy.shape[:2]
    if n == 0 or n_t < 2:
        return pred
    t = pred.t_s
    dt = t[1] - t[0]
    vel = (pred.center_xy[:, 1] - pred.center_xy[:, 0]) / dt                    # (N, 2)
    s0, d0 = reference.project(pred.center_xy[:, 0])
    _, _, th, _ = reference.frame_at(s0)
    c, s = np.cos(th), np.sin(th)
    v_s = vel[:, 0] * c + vel[:, 1] * s
    v_d = -vel[:, 0] * s + vel[:, 1] * c
    speed = np.hypot(v_s, v_d)
    along = (np.abs(v_d) <= np.tan(max_heading_diff_rad) * np.abs(v_s)) & (speed > 0.5) \
        & np.isin(np.array(pred.labels, dtype=object), list(labels)) & np.isfinite(s0)
    if not along.any():
        return pred
    idx = np.flatnonzero(along)
    s_t = s0[idx, None] + v_s[idx, None] * t[None]
    d_t = d0[idx, None] + v_d[idx, None] * t[None]
    x, y, yaw_ref = reference.to_cartesian(s_t, d_t)
    center = pred.center_xy.copy()
    center[idx] = np.stack([x, y], -1)
    yaw = pred.yaw_rad.copy()
    # keep the box's yaw relative to the road
    rel = pred.yaw_rad[idx, :1] - th[idx, None]
    yaw[idx] = yaw_ref + rel
    return PredictedObjects(pred.t_s, center, yaw, pred.half_length_m, pred.half_width_m,
                            pred.labels, pred.ids, pred.notes)
