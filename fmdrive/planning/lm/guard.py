"""Collision-aware decoding: the LM planner's greedy choice skips coordinates that would put the ego
footprint onto a predicted object (ROS-free, numpy).

The grammar (format.TrajectoryGrammar) guarantees a parseable trajectory; it knows nothing of the
scene. Greedy decoding takes the most likely coordinate token, and a student that regresses a
braking lead or a parked car's edge a few decimetres wrong drives into it (measured on held-out
scenarios: raw student plans meet a ground-truth box in ~5 % of samples, the expert's in 0.5 %).
The guard is a second, scene-dependent constraint on the same decoding: at each coordinate
position the decoder offers its most likely candidates in order, and takes the first the guard
accepts:
- an x candidate (how far the waypoint goes) is accepted when some y about where the y is likely
  to be (the anchor's, or on the line from the waypoint before to the goal, +- the span of the y
  candidates) leaves the footprint clear there;
- a y candidate when the footprint at (x chosen, y) is clear.
"Clear" is the safety filter's rule at that waypoint's time and halfway there from the waypoint
before it in time (or from the ego when that one is not decoded yet; a waypoint cannot jump past an
object): the ego footprint, headed along that chord, at least `safety_margin_m` from every object
predicted then (constant velocity, along the lanes when
the scene has lanes, with the filter's uncertainty growth; an object braking, by its tracked
acceleration, braking on to a stop), objects following behind in the ego's
lane and standing objects the ego is already nearer than that ignored as the filter ignores them.
When no candidate is clear the model's own choice stands: the guard only ever picks among what the
model ranks highest, and the safety filter still judges the whole plan (densely, with jerk, road and
occlusion rules the guard does not have), so the arbiter's fallback is unchanged.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fmdrive.objects import Scene
from fmdrive.planning.footprint import LANE_KEEP_TOLERANCE_M, footprint_gaps, margin_violations
from fmdrive.planning.frenet import Road
from fmdrive.planning.limits import VehicleLimits
from fmdrive.planning.lm import format as fmt
from fmdrive.planning.prediction import follow_lane, predict_constant_velocity

CANDIDATES = 24               # the decoder's most likely tokens offered to the guard at a position
LATERAL_SEARCH_M = 1.2        # an x is clear when some y within this of the likely y is clear: about the
LATERAL_STEP_M = 0.2          # span of the CANDIDATES y bins (0.1 m) the y position will offer, searched at this spacing
EXACT_WITHIN_M = 3.0          # object boxes farther than this (bounding circles) are not measured exactly
BRAKING_MPS2 = 0.8            # an object decelerating harder than this along its velocity is predicted braking
                              # to a stop (the scene text's "braking at" threshold, ACCEL_PHRASE_MPS2)
MAX_BRAKING_MPS2 = 10.0


def braking(pred, objects):
    """pred with the objects that decelerate (Object3D.acceleration against their velocity, over
    BRAKING_MPS2) slowed at that rate to a stop instead of keeping their speed: each one's path from
    now is the constant-velocity one, travelled only s(t) = v t - a t^2 / 2 (v^2 / 2a once stopped) of
    v t. The safety filter predicts constant velocity; a lead that brakes is what most collisions of
    the student's plans left after the constant-velocity guard are (a plan that keeps the gap to a
    lead at its current speed runs into it)."""
    by_id = {}
    for o in objects:
        by_id.setdefault(int(o.id), []).append(o)
    t = np.asarray(pred.t_s, np.float64)
    center = pred.center_xy.copy()
    changed = False
    for i, oid in enumerate(np.asarray(pred.ids).tolist()):
        same = by_id.get(int(oid), [])
        if int(oid) == 0 or len(same) != 1:
            continue
        v = np.asarray(same[0].velocity, np.float64)[:2]
        a = np.asarray(same[0].acceleration, np.float64)[:2]
        speed = float(np.hypot(*v))
        if not (speed > 0.5 and np.all(np.isfinite(a))):
            continue
        decel = min(-float(a @ v) / speed, MAX_BRAKING_MPS2)
        if decel < BRAKING_MPS2:
            continue
        s = np.where(t < speed / decel, speed * t - 0.5 * decel * t ** 2, speed ** 2 / (2 * decel))
        f = np.divide(s, speed * t, out=np.ones_like(t), where=t > 0)
        center[i] = center[i, :1] + (center[i] - center[i, :1]) * f[:, None]
        changed = True
    return dataclasses.replace(pred, center_xy=center) if changed else pred


class CollisionGuard:
    """free(step, tokens, candidates) -> bool per candidate token at output position `step`, given
    the coordinate tokens decoded before it (`tokens`, in output order)."""

    def __init__(self, scene: Scene, grammar: fmt.TrajectoryGrammar, anchor=None,
                 limits: VehicleLimits | None = None):
        lim = limits or VehicleLimits()
        self.grammar = grammar
        self.margin = float(lim.safety_margin_m)
        self.half_l, self.half_w = float(lim.vehicle_length_m) / 2, float(lim.vehicle_width_m) / 2
        self.to_center = float(lim.base_to_center_m)
        # now, then every half waypoint interval: index 2 (k + 1) is waypoint k, 2 k + 1 the midpoint before it
        times = 0.5 * fmt.DT_S * np.arange(0, 2 * fmt.TRAJECTORY_STEPS + 1)
        objects = list(scene.objects or [])
        pred = predict_constant_velocity(objects, times, lim.uncertainty_growth_mps, 0.0)
        road = Road.around_ego(scene.lanes, lim.default_lane_width_m) if len(pred) else None
        if road is not None and not road.assumed_lane:
            pred = follow_lane(pred, road.reference)
        self.pred = braking(pred, objects)
        self._at_k = [self._slice(self.pred, [0, 2 * k + 1, 2 * k + 2]) for k in range(fmt.TRAJECTORY_STEPS)]
        self.coords = [grammar.coordinates(k, anchor) for k in range(fmt.TRAJECTORY_STEPS)]
        self.anchor_y = (np.zeros(fmt.TRAJECTORY_STEPS) if anchor is None
                         else np.asarray(anchor, np.float64)[:, 1])
        self.checks = 0             # candidate footprints evaluated (for the planner's debug)

    @staticmethod
    def _slice(p, cols):
        """The prediction at the times `cols` only."""
        return dataclasses.replace(p, t_s=p.t_s[cols], center_xy=p.center_xy[:, cols], yaw_rad=p.yaw_rad[:, cols],
                                   half_length_m=p.half_length_m[:, cols], half_width_m=p.half_width_m[:, cols])

    def _footprints(self, before, xy):
        """Footprint centres and headings (C, 3, ...) now, halfway from `before` (C, 2) to `xy` (C, 2)
        and at xy, headed along that chord (the ego's heading where it hardly moves)."""
        chord = xy - before
        yaw = np.where(np.hypot(chord[:, 0], chord[:, 1]) > 0.3, np.arctan2(chord[:, 1], chord[:, 0]), 0.0)
        head = self.to_center * np.c_[np.cos(yaw), np.sin(yaw)]
        now = np.broadcast_to([self.to_center, 0.0], xy.shape)
        centres = np.stack([now, 0.5 * (before + xy) + head, xy + head], axis=1)
        yaws = np.stack([np.zeros(len(xy)), yaw, yaw], axis=1)
        lateral = np.stack([np.zeros(len(xy)), 0.5 * (before[:, 1] + xy[:, 1]), xy[:, 1]], axis=1)
        return centres, yaws, lateral

    def plan_clear(self, xy) -> bool:
        """Whether the (6, 2) waypoints (time order, base_link) keep the footprint clear at every
        waypoint and halfway between, by the same rule as free(): the decoder's fast path (most
        plans are)."""
        xy = np.asarray(xy, np.float64).reshape(fmt.TRAJECTORY_STEPS, 2)
        if len(self.pred) == 0:
            return True
        before = np.vstack([[0.0, 0.0], xy[:-1]])
        centres, yaws, lateral = self._footprints(before, xy)               # (6, 3, ...): now, halfway, at
        # one footprint per time of the prediction's grid: now, then halfway and at each waypoint
        path = np.concatenate([centres[:1, 0], centres[:, 1:].reshape(-1, 2)])[None]           # (1, 13, 2)
        path_yaw = np.concatenate([yaws[:1, 0], yaws[:, 1:].reshape(-1)])[None]
        path_lat = np.concatenate([lateral[:1, 0], lateral[:, 1:].reshape(-1)])[None]
        self.checks += len(xy)
        return not self._violations(path, path_yaw, path_lat, self.pred).any()

    def _violations(self, centres, yaws, lateral, pred) -> np.ndarray:
        """(C, T, N) footprints (C, T, 2) within the margin of objects at pred's T times, as the safety
        filter counts them (not at T = 0, the present; not a follower in the ego lane; standing objects
        only where nearer than now)."""
        gap, behind = footprint_gaps(centres, yaws, self.half_l, self.half_w, pred, EXACT_WITHIN_M)
        keeps_lane = np.abs(lateral) < LANE_KEEP_TOLERANCE_M
        too_close = (gap < self.margin) & ~(behind & keeps_lane[..., None])
        too_close[:, 0] = False                     # the present cannot be changed
        return margin_violations(too_close, centres, yaws, self.half_l, self.half_w, pred, EXACT_WITHIN_M)

    def _too_close(self, k: int, before, xy) -> np.ndarray:
        """(C,) whether the footprint moving from `before` to `xy` (C, 2) comes within the margin of
        an object at waypoint k's time or halfway to it, as the safety filter counts (not a follower
        in the ego lane; standing objects only where nearer than now)."""
        self.checks += len(xy)
        centres, yaws, lateral = self._footprints(np.asarray(before, np.float64), np.asarray(xy, np.float64))
        return self._violations(centres, yaws, lateral, self._at_k[k])[:, 1:].any(axis=(1, 2))

    def _decoded(self, tokens) -> dict:
        """{waypoint: (x, y)} of the coordinate pairs complete in `tokens`."""
        out = {}
        for i in range(0, len(tokens) - 1, 2):
            k = self.grammar.waypoint_of_step(i)
            xs, ys = self.coords[k]
            out[k] = (xs[self.grammar.bin_of(tokens[i])], ys[self.grammar.bin_of(tokens[i + 1])])
        return out

    def clear(self, k: int, xy: np.ndarray, known: dict) -> np.ndarray:
        """(C,) whether the footprint with its rear axle at each xy (C, 2) at waypoint k's time (and
        halfway there from the waypoint before, or from the ego when that one is not in `known`, the
        decoded waypoints) is clear."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if len(self.pred) == 0:
            return np.ones(len(xy), bool)
        before = known.get(k - 1, (0.0, 0.0))
        return ~self._too_close(k, np.broadcast_to(np.asarray(before, np.float64), xy.shape), xy)

    def _lateral_centre(self, k: int, known: dict) -> float:
        """Where the y of waypoint k is likely to be: on the line from the waypoint before it to the
        goal when both are decoded (`known`; goal-first order), else the waypoint before's (the
        anchor's when there is none), moved as the anchor moves."""
        last = fmt.TRAJECTORY_STEPS - 1
        y0, a0 = (known[k - 1][1], self.anchor_y[k - 1]) if k - 1 in known else (0.0, 0.0)
        if k != last and last in known and (k - 1 in known or k == 0):
            return float(y0 + (known[last][1] - y0) / (last - k + 1))
        if k - 1 in known:
            return float(y0 + self.anchor_y[k] - a0)
        return float(self.anchor_y[k])

    def free(self, step: int, tokens, candidates) -> np.ndarray:
        """(len(candidates),) bool: which candidate tokens at output position `step` keep the ego clear."""
        candidates = [int(c) for c in candidates]
        k = self.grammar.waypoint_of_step(step)
        xs, ys = self.coords[k]
        known = self._decoded(tokens)
        if step % 2 == 1:                           # y: the x of this waypoint is the token before
            x = xs[self.grammar.bin_of(tokens[step - 1])]
            y = ys[[self.grammar.bin_of(c) for c in candidates]]
            return self.clear(k, np.c_[np.full(len(y), x), y], known)
        # x: clear when some y the y position would be offered (about the likely y) leaves it clear
        near = self._lateral_centre(k, known) + np.arange(-LATERAL_SEARCH_M, LATERAL_SEARCH_M + 1e-9,
                                                           LATERAL_STEP_M)
        x = xs[[self.grammar.bin_of(c) for c in candidates]]
        grid = np.stack(np.meshgrid(x, near, indexing='ij'), axis=-1).reshape(-1, 2)   # (C * Y, 2)
        return self.clear(k, grid, known).reshape(len(x), len(near)).any(axis=1)
