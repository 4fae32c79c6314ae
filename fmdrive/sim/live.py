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

    @property
    def num_frames(self) -> int:
        return self.sim.num_frames

    @property
    def finished(self) -> bool:
        return self.frame_index >= self.sim.num_frames - 1

    def first(self) -> SimFrame:
        self.frame_index = 0
        self._last_stamp = self.sim._stamp_ns()
        return self.sim._render_frame([(self._last_stamp, self.ego.state())])

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
        return self.sim._render_frame(odometry)

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
                              zip(('x', 'y', 'yaw'), (self.ego.x, self.ego.y, self.ego.yaw))}}
