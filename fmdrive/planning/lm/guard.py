"""Collision-aware decoding: the LM planner's greedy choice skips coordinates that would put the ego
footprint onto a predicted object (ROS-free, numpy).

The grammar (format.TrajectoryGrammar) guarantees a parseable trajectory; it knows nothing of the
scene. Greedy decoding takes the most likely coordinate token, and a student that regresses a
braking lead or a parked car's edge a few decimetres wrong drives into it (measured on held-out
scenarios: raw student plans meet a ground-truth box in ~5 % of samples, the expert's in 0.5 %).
The guard is a second, scene-dependent constraint on the same decoding: at each coordinate
position the decoder offers its most likely candidates in order, and takes the first the guard
accepts:
- an x candidate (how far the waypoint goes) is accepted when some y within one lane width of the
  anchor's lateral position leaves the footprint clear there;
- a y candidate when the footprint at (x chosen, y) is clear.
"Clear" is the safety filter's rule at that waypoint's time: the ego footprint (its heading the
chord from the waypoint before it in time, or from the ego when that one is not decoded yet) at
least `safety_margin_m` from every object predicted there (constant velocity, along the lanes when
the scene has lanes, with the filter's uncertainty growth), objects following behind in the ego's
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
LATERAL_SEARCH_M = 3.5        # an x is clear when some y within this of the anchor's y is clear
LATERAL_STEP_M = 0.25         # ... searched at this spacing
EXACT_WITHIN_M = 3.0          # object boxes farther than this (bounding circles) are not measured exactly


class CollisionGuard:
    """free(step, tokens, candidates) -> bool per candidate token at output position `step`, given
    the coordinate tokens decoded before it (`tokens`, in output order)."""

    def __init__(self, scene: Scene, grammar: fmt.TrajectoryGrammar, anchor=None,
                 limits: VehicleLimits | None = None):
        lim = limits or VehicleLimits()
        self.grammar, self.anchor = grammar, anchor
        self.margin = float(lim.safety_margin_m)
        self.half_l, self.half_w = float(lim.vehicle_length_m) / 2, float(lim.vehicle_width_m) / 2
        self.to_center = float(lim.base_to_center_m)
        times = fmt.DT_S * np.arange(0, fmt.TRAJECTORY_STEPS + 1)       # now, then each waypoint's time
        objects = list(scene.objects or [])
        pred = predict_constant_velocity(objects, times, lim.uncertainty_growth_mps, 0.0)
        road = Road.around_ego(scene.lanes, lim.default_lane_width_m)
        if len(pred) and not road.assumed_lane:
            pred = follow_lane(pred, road.reference)
        self.pred = pred
        self._now_and = [self._slice(pred, [0, k + 1]) for k in range(fmt.TRAJECTORY_STEPS)]
        self.coords = [grammar.coordinates(k, anchor) for k in range(fmt.TRAJECTORY_STEPS)]
        self.anchor_y = (np.zeros(fmt.TRAJECTORY_STEPS) if anchor is None
                         else np.asarray(anchor, np.float64)[:, 1])
        self.checks = 0             # candidate footprints evaluated (for the planner's debug)

    @staticmethod
    def _slice(p, cols):
        """The prediction at the times `cols` only."""
        return dataclasses.replace(p, t_s=p.t_s[cols], center_xy=p.center_xy[:, cols], yaw_rad=p.yaw_rad[:, cols],
                                   half_length_m=p.half_length_m[:, cols], half_width_m=p.half_width_m[:, cols])

    def plan_clear(self, xy) -> bool:
        """Whether the (6, 2) waypoints (time order, base_link) keep the footprint clear at every
        waypoint time, by the same rule as free(): the decoder's fast path (most plans are)."""
        xy = np.asarray(xy, np.float64).reshape(fmt.TRAJECTORY_STEPS, 2)
        if len(self.pred) == 0:
            return True
        self.checks += len(xy)
        pts = np.vstack([[0.0, 0.0], xy])
        chord = np.diff(pts, axis=0)
        yaw = np.where(np.hypot(chord[:, 0], chord[:, 1]) > 0.3, np.arctan2(chord[:, 1], chord[:, 0]), 0.0)
        yaw = np.r_[0.0, yaw]
        centres = (pts + self.to_center * np.c_[np.cos(yaw), np.sin(yaw)])[None]       # (1, 7, 2)
        return not self._too_close(centres, yaw[None], self.pred, np.r_[0.0, xy[:, 1]][None]).any()

    def _too_close(self, centres, yaws, pred, lateral) -> np.ndarray:
        """(C, T, N) footprints (C, T, 2) within the margin of objects, as the safety filter counts
        them (not at T = 0, the present; not a follower in the ego lane; standing objects only where
        nearer than now)."""
        gap, behind = footprint_gaps(centres, yaws, self.half_l, self.half_w, pred, EXACT_WITHIN_M)
        keeps_lane = np.abs(lateral) < LANE_KEEP_TOLERANCE_M
        too_close = (gap < self.margin) & ~(behind & keeps_lane[..., None])
        too_close[:, 0] = False                     # the present cannot be changed
        return margin_violations(too_close, centres, yaws, self.half_l, self.half_w, pred, EXACT_WITHIN_M)

    def _decoded(self, tokens) -> dict:
        """{waypoint: (x, y)} of the coordinate pairs complete in `tokens`."""
        out = {}
        for i in range(0, len(tokens) - 1, 2):
            k = self.grammar.waypoint_of_step(i)
            xs, ys = self.coords[k]
            out[k] = (xs[self.grammar.bin_of(tokens[i])], ys[self.grammar.bin_of(tokens[i + 1])])
        return out

    def clear(self, k: int, xy: np.ndarray, tokens) -> np.ndarray:
        """(C,) whether the footprint with its rear axle at each xy (C, 2) at waypoint k's time is clear."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if len(self.pred) == 0:
            return np.ones(len(xy), bool)
        self.checks += len(xy)
        before = self._decoded(tokens).get(k - 1, (0.0, 0.0)) if k > 0 else (0.0, 0.0)
        chord = xy - np.asarray(before, np.float64)
        yaw = np.where(np.hypot(chord[:, 0], chord[:, 1]) > 0.3, np.arctan2(chord[:, 1], chord[:, 0]), 0.0)
        # footprint centres now (the ego at the origin) and at time k
        centres = np.stack([np.broadcast_to([self.to_center, 0.0], xy.shape),
                            xy + self.to_center * np.c_[np.cos(yaw), np.sin(yaw)]], axis=1)   # (C, 2, 2)
        yaws = np.stack([np.zeros(len(xy)), yaw], axis=1)
        lateral = np.c_[np.zeros(len(xy)), xy[:, 1]]
        return ~self._too_close(centres, yaws, self._now_and[k], lateral)[:, 1].any(axis=-1)

    def free(self, step: int, tokens, candidates) -> np.ndarray:
        """(len(candidates),) bool: which candidate tokens at output position `step` keep the ego clear."""
        candidates = [int(c) for c in candidates]
        k = self.grammar.waypoint_of_step(step)
        xs, ys = self.coords[k]
        if step % 2 == 1:                           # y: the x of this waypoint is the token before
            x = xs[self.grammar.bin_of(tokens[step - 1])]
            y = ys[[self.grammar.bin_of(c) for c in candidates]]
            return self.clear(k, np.c_[np.full(len(y), x), y], tokens)
        near = self.anchor_y[k] + np.arange(-LATERAL_SEARCH_M, LATERAL_SEARCH_M + 1e-9, LATERAL_STEP_M)
        x = xs[[self.grammar.bin_of(c) for c in candidates]]
        grid = np.stack(np.meshgrid(x, near, indexing='ij'), axis=-1).reshape(-1, 2)   # (C * Y, 2)
        return self.clear(k, grid, tokens).reshape(len(x), len(near)).any(axis=1)
