"""What the planner publishes when scenes stop coming (a dead or lagging upstream node, a sensor gone
silent): a stopping trajectory, so the controller always has a safe plan to follow.

The car kept driving along the last trajectory it was given, so the stop starts where that
trajectory says the car is now, at the speed it says, and brakes comfortably to a standstill
(harder only as needed to stop within the horizon, never beyond the emergency limit). Once
stopped, the next watchdog plan starts from rest and holds the car there.
"""
from __future__ import annotations

import numpy as np

from fmdrive.geometry import wrap_angle
from fmdrive.objects import EgoState, Plan, Scene

NS_PER_S = 1_000_000_000


def ego_along_plan(plan: Plan, t_s: float) -> EgoState | None:
    """Pose and speed the plan gives for t_s after its stamp (held at its ends); None if it is empty."""
    if plan is None or len(plan.poses) == 0 or not np.isfinite(plan.poses).all():
        return None
    t, poses = np.asarray(plan.t_s, float), np.asarray(plan.poses, float)
    speeds = np.asarray(plan.speeds_mps, float)
    if t[0] > 0:    # published plans start one step ahead: the pose at the stamp, back along the heading
        back = t[0] * speeds[0]
        start = poses[0] - [back * np.cos(poses[0, 2]), back * np.sin(poses[0, 2]), 0.0]
        t, poses, speeds = np.r_[0.0, t], np.vstack([start, poses]), np.r_[speeds[0], speeds]
    t_s = float(np.clip(t_s, t[0], t[-1]))
    x, y = np.interp(t_s, t, poses[:, 0]), np.interp(t_s, t, poses[:, 1])
    yaw = float(np.interp(t_s, t, np.unwrap(poses[:, 2])))
    speed = float(np.interp(t_s, t, speeds)) if t_s < t[-1] else float(speeds[-1])
    return EgoState(float(x), float(y), float(wrap_angle(yaw)), max(speed, 0.0), 0.0)


def stopping_plan(planner, last_scene: Scene | None, last_plan: Plan | None, now_ns: int, reason: str) -> Plan:
    """A stop from where the last plan puts the car now (else the last scene's ego, else rest at the
    origin), stamped now, source 'fallback', status 'safe_stop: <reason>'."""
    ego = None
    if last_plan is not None:
        ego = ego_along_plan(last_plan, (now_ns - last_plan.stamp_ns) / NS_PER_S)
    if ego is None and last_scene is not None:
        ego = last_scene.ego
    ego = ego or EgoState()
    limit = last_scene.speed_limit_mps if last_scene is not None else planner.params.speed_limit_mps
    scene = Scene(now_ns, ego, [], [], limit, text='')
    p = planner.params
    # comfortable, but at a standstill within the published horizon when that takes more
    decel = min(p.max_decel_mps2, max(p.comfort_decel_mps2, ego.speed_mps / p.horizon_s))
    plan = planner.stop(scene, f'safe_stop: {reason}', decel).plan
    plan.source = 'fallback'
    return plan
