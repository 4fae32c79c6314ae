"""The simulator run live, frame by frame, with the ego following the plans it is given (closed
loop), ROS-free; fmdrive/sim/serve.py puts it on DDS.

    live = LiveSimulation(spec, camera, extrinsics)
    frame = live.first()                       # SimFrame at the first stamp
    while not live.finished:
        plan = ...                             # a Plan (odom) made from `frame`, or None
        frame = live.advance(plan)             # physics for one sensor period, then the next frame

The world, agents, sensors and vehicle are the simulator's (fmdrive/sim/simulator.py); the expert
is replaced by closed_loop.PlanFollower (pure pursuit + speed control along the newest plan; with
no plan yet it brakes). Collisions are the simulator's own check of the ego body against every
agent, at physics rate.
"""
from __future__ import annotations

import numpy as np

from fmdrive import config
from fmdrive.sim.closed_loop import PlanFollower
from fmdrive.sim.simulator import START_STAMP_NS, SimFrame, Simulator


class LiveSimulation:
    def __init__(self, spec, camera, extrinsics: dict):
        T_base_lidar = extrinsics[config.FRAMES['lidar']]
        T_base_camera = extrinsics[config.FRAMES['camera']]
        self.spec = spec
        self.sim = Simulator(spec, camera.K, camera.width, camera.height, T_base_camera, T_base_lidar)
        self.ego = PlanFollower(self.sim.world, spec)
        self.sim.expert = self.ego               # agents see (and react to) this vehicle
        self.frame_index = 0
        self.s0 = float(self.ego.s)
        self.plans_followed: dict[str, int] = {}
        self.frames_without_plan = 0
        self.stale_plans = 0                     # plans older than the frame before
        self._last_stamp = None
        self.track: list[tuple] = []             # (t_s, x, y, speed) of the ego at every frame

    @property
    def num_frames(self) -> int:
        return self.sim.num_frames

    @property
    def finished(self) -> bool:
        return self.frame_index >= self.sim.num_frames - 1

    def first(self) -> SimFrame:
        self.frame_index = 0
        self._last_stamp = self.sim._stamp_ns()
        self.track = []
        return self._tracked(self.sim._render_frame([(self._last_stamp, self.ego.state())]))

    def _tracked(self, frame: SimFrame) -> SimFrame:
        e = frame.ego
        self.track.append((round((frame.stamp_ns - START_STAMP_NS) / 1e9, 3), round(float(e.x), 3),
                           round(float(e.y), 3), round(float(e.speed_mps), 3)))
        return frame

    def advance(self, plan=None) -> SimFrame:
        """Follow `plan` (None: keep the previous one; none yet: brake) for one sensor period."""
        if plan is None:
            self.frames_without_plan += 1
        else:
            if self._last_stamp is not None and plan.stamp_ns < self._last_stamp:
                self.stale_plans += 1
            self.ego.follow(plan, (plan.stamp_ns - START_STAMP_NS) / 1e9, plan.source)
            self.plans_followed[plan.source] = self.plans_followed.get(plan.source, 0) + 1
        odometry = []
        for _ in range(self.sim.steps_per_frame):
            self.sim._physics_step()
            odometry.append((self.sim._stamp_ns(), self.ego.state()))
        self.frame_index += 1
        self._last_stamp = odometry[-1][0]
        return self._tracked(self.sim._render_frame(odometry))

    def summary(self) -> dict:
        collisions = self.sim.collisions
        first = collisions[0] if collisions else None
        return {'scenario': self.spec.kind, 'seed': int(self.spec.seed), 'frames': self.frame_index + 1,
                'sim_s': round(self.frame_index / self.sim.frame_rate_hz, 2),
                'collided': bool(collisions),
                'first_collision': None if first is None else {
                    't_s': round((first[0] - START_STAMP_NS) / 1e9, 2), 'agent_id': int(first[1])},
                'progress_m': round(float(self.ego.s) - self.s0, 2),
                'final_speed_mps': round(float(self.ego.v), 2),
                'plans_followed': dict(self.plans_followed),
                'frames_without_plan': self.frames_without_plan,
                'stale_plans': self.stale_plans,
                'ego_final': {k: round(float(v), 3) for k, v in
                              zip(('x', 'y', 'yaw'), (self.ego.x, self.ego.y, self.ego.yaw))},
                'ego_track': [list(row) for row in self.track]}


def drive_in_process(spec, camera, extrinsics: dict, overrides: dict | None = None, primary=None,
                     progress: bool = False) -> dict:
    """The twin of the DDS closed loop (fmdrive/sim/serve.py) without ROS: the same LiveSimulation
    driven lock-step by the graph's cores in one process (fmdrive/offline.run_cores: classical
    LiDAR detector -> fusion with the frame's odometry and the road's speed limit -> the planner
    node's arbiter), each frame's plan followed from the next physics step, as the server does with
    the plan stamped for that frame. overrides {node: {param: value}} as the graph takes them
    (lidar_encoder, fusion, planner; the LiDAR path is the classical one). Returns
    LiveSimulation.summary() (+ wall_s, plan sources)."""
    import sys
    import time

    from tqdm import tqdm

    from fmdrive.fusion.core import FusionParams
    from fmdrive.offline import run_cores
    from fmdrive.perception.lidar_classical import ClassicalLidarParams
    overrides = overrides or {}
    params = {node: {**config.node_params(node), **(overrides.get(node) or {})}
              for node in ('lidar_encoder', 'fusion', 'planner')}
    if params['lidar_encoder']['backend'] != 'classical':
        raise ValueError('the in-process closed loop runs the classical LiDAR path; '
                         f"lidar_encoder backend {params['lidar_encoder']['backend']!r} is not it")
    live = LiveSimulation(spec, camera, extrinsics)
    pending: list = []
    t0 = time.monotonic()

    def frames():
        frame = live.first()
        while True:
            yield frame
            if live.finished:
                return
            frame = live.advance(pending.pop() if pending else None)

    sources: dict[str, int] = {}
    bar = tqdm(total=live.num_frames, unit='frame', desc=f'in-process closed loop {spec.kind}',
               disable=not progress, file=sys.stderr)
    for result in run_cores(frames(), ClassicalLidarParams.from_dict(params['lidar_encoder']),
                            FusionParams.from_node_params(params['fusion']), params['planner'],
                            speed_limit_mps=spec.road.speed_limit_mps, primary=primary):
        bar.update(1)
        if result.plan is not None:
            pending[:] = [result.plan]
            sources[result.plan.source] = sources.get(result.plan.source, 0) + 1
    bar.close()
    return {**live.summary(), 'plans_received': sum(sources.values()), 'plan_sources': sources,
            'wall_s': round(time.monotonic() - t0, 2)}


def agreement(a: dict, b: dict) -> dict:
    """How closely two closed-loop runs of one scenario (summaries with ego_track) agree: the same
    collision outcome, progress and final speed differences, and the largest and mean distance
    between the two egos at the same sim time."""
    ta = {row[0]: row for row in a['ego_track']}
    tb = {row[0]: row for row in b['ego_track']}
    common = sorted(set(ta) & set(tb))
    gaps = np.array([np.hypot(ta[t][1] - tb[t][1], ta[t][2] - tb[t][2]) for t in common]) if common else np.zeros(0)
    return {'frames_compared': len(common),
            'same_collision_outcome': a['collided'] == b['collided'],
            'progress_diff_m': round(abs(a['progress_m'] - b['progress_m']), 3),
            'final_speed_diff_mps': round(abs(a['final_speed_mps'] - b['final_speed_mps']), 3),
            'max_position_diff_m': round(float(gaps.max()), 3) if len(gaps) else None,
            'mean_position_diff_m': round(float(gaps.mean()), 3) if len(gaps) else None}
