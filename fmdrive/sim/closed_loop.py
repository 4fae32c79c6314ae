"""Closed-loop driving in the simulator: the planning stack drives the ego (in-process, no ROS).

    from fmdrive.sim.closed_loop import run_scenario
    result = run_scenario(19, seed=0, arbiter=Arbiter.from_node_params(params, primary))

The scenario of number `index` is the planning dataset's (fmdrive/sim/planning_dataset.py: the same
kinds, variants - combined, dense, near-miss - and instruction), so test-split numbers (9, 19,
29, ...) are scenarios no model was trained on. The agents run as in the dataset and react to the
ego; the ego is driven by the arbiter the planner node runs (LM or classical primary, one safety
filter, classical fallback), given at 10 Hz a Scene made from ground truth as the planner would see
it (objects within 80 m and not hidden behind nearer ones, with position and velocity noise; the
world's lanes; the road's speed limit; the scene text fusion would write), and the scenario's
instruction as its canonical intent from the time the scenario sets. Physics at 20 Hz with the
expert's vehicle (kinematic bicycle, steering angle and rate limits).

Controller (`PlanFollower`): pure pursuit along the newest plan's path (lookahead
max(4, 0.8 v + 2) m from the ego's projection onto it; beyond the plan's end along its last
heading) and the plan's speed 0.3 s ahead through a proportional speed loop (gain 1.5 /s) plus the
plan's own acceleration, limited to [-MAX_BRAKE, +2.5] m/s^2 and a jerk of 8 m/s^3.

Metrics of one run (ClosedLoopResult), against the expert driving the same scenario:
  collided        the ego's body met an agent's box (first contact; `collision_source` is the
                  source of the plan being followed then: llm | classical | fallback)
  off_road        the ego's body centre left the paved road by more than 0.3 m
  progress_m      distance along the road; progress_ratio = progress / the expert's
  max_jerk_mps3   largest |jerk| of the longitudinal acceleration averaged over 0.25 s (the
                  controller limits it to MAX_JERK_MPS3, so a stack that ever asks for a sharp
                  change reaches that limit: see the next three for how often and how hard)
  jerk_p95_mps3   95th percentile of that |jerk| over the run
  max_lat_acc_mps2  largest |v * yaw rate|
  (the longitudinal acceleration of these is the car's dv/dt, not the controller's command: a car
  held standing by its brakes does not decelerate; coming to rest ends the deceleration within one
  physics step, a jerk beyond MAX_JERK_MPS3 that a real car's stop has too)
  uncomfortable_frac  share of the run's time outside nuPlan's comfort bounds (its
                  ego_is_comfortable thresholds: |longitudinal jerk| <= 4.13 m/s^3, longitudinal
                  acceleration in [-4.05, 2.40] m/s^2, |lateral acceleration| <= 4.89 m/s^2,
                  |yaw rate| <= 0.95 rad/s)
  complied        the instruction carried out as the expert did (None without one): lane intents
                  end in the expert's final lane; pull_over and stop_at_intersection end stopped
                  (< 0.5 m/s) within 3 m (lateral / along) of where the expert stopped; slow_down
                  averages no more than the expert's speed + 1 m/s after it was asked
  success         not collided, not off road, progress >= 0.8 x the expert's - 5 m (a stop
                  behind a blocked lane the expert also made counts)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from fmdrive.geometry import inv_T
from fmdrive.objects import EgoState, Scene
from fmdrive.sim.agents import MAX_BRAKE_MPS2
from fmdrive.sim.expert import ExpertDriver
from fmdrive.sim.planning_dataset import (ACCEL_WINDOW_S, MAX_SCENE_OBJECTS, ODOM_HZ, IntentExpert, _perceived,
                                          ego_touches, scenario_world, step_agents, with_accelerations)

PLAN_EVERY_S = 0.1                  # 10 Hz, the sensors' rate
SPEED_GAIN = 1.5                    # 1/s
SPEED_PREVIEW_S = 0.3
MAX_ACCEL_MPS2 = 2.5
MAX_JERK_MPS3 = 8.0
OFF_ROAD_MARGIN_M = 0.3
# nuPlan's ego_is_comfortable bounds (nuplan-devkit, planning metrics)
COMFORT_MAX_LON_JERK_MPS3 = 4.13
COMFORT_LON_ACC_MPS2 = (-4.05, 2.40)
COMFORT_MAX_LAT_ACC_MPS2 = 4.89
COMFORT_MAX_YAW_RATE_RPS = 0.95
LANE_INTENTS = ('change_lane_left', 'change_lane_right', 'keep_lane', 'follow_lead', 'overtake')


@dataclass
class ClosedLoopResult:
    index: int
    kind: str
    variant: str
    intent: str
    collided: bool
    collision_t_s: float | None
    collision_source: str | None
    off_road: bool
    progress_m: float
    expert_progress_m: float
    progress_ratio: float
    max_jerk_mps3: float
    complied: bool | None
    success: bool
    sources: dict = field(default_factory=dict)      # plan source -> count
    plan_ms_p50: float = 0.0
    plan_ms_max: float = 0.0
    expert_collided: bool = False
    jerk_p95_mps3: float = 0.0
    max_lat_acc_mps2: float = 0.0
    uncomfortable_frac: float = 0.0
    budget_stops: int = 0                            # plans that braked because time ran out (budget_stop)

    def to_dict(self) -> dict:
        return asdict(self)


class CanonicalIntents:
    """The instruction classifier for canonical intent names (the closed loop gives the scenario's
    intent as its name, so no text encoder is needed; words are tested elsewhere)."""

    def classify(self, text: str):
        from fmdrive.planning.lm.format import INTENTS
        from fmdrive.planning.lm.intents import IntentResult
        intent = text.strip()
        if intent not in INTENTS:
            return IntentResult('none', f'refused: {intent[:40]!r} is not an intent name', float('nan'), '',
                                text[:80])
        return IntentResult(intent, None, 1.0, intent, text[:80])


class PlanFollower(ExpertDriver):
    """The expert's vehicle with its brain replaced by a controller that follows a Plan."""

    def __init__(self, world, spec):
        super().__init__(world, spec)
        self.plan = None
        self.plan_t = 0.0
        self.plan_source = None
        self.acc = 0.0              # the acceleration command after the limits (the controller's state)
        self.acc_measured = 0.0     # dv/dt: what the car did (0 while brakes hold it standing)

    def follow(self, plan, t: float, source: str):
        self.plan, self.plan_t, self.plan_source = plan, float(t), source

    def step(self, dt, t, objs=None, cross_agents=()):
        w = self.world
        acc_cmd, steer_cmd = -MAX_BRAKE_MPS2, self.steer
        if self.plan is not None and len(self.plan.poses):
            acc_cmd = self._speed_control(t)
            steer_cmd = self._pursuit()
        max_da = MAX_JERK_MPS3 * dt
        self.acc = float(np.clip(acc_cmd, max(-MAX_BRAKE_MPS2, self.acc - max_da),
                                 min(MAX_ACCEL_MPS2, self.acc + max_da)))
        max_step = self.MAX_STEER_RATE_RPS * dt
        self.steer = float(self.steer + np.clip(steer_cmd - self.steer, -max_step, max_step))
        v_before = self.v
        self.v = max(0.0, self.v + self.acc * dt)
        self.acc_measured = (self.v - v_before) / dt
        if self.v == 0.0:
            self.acc = min(self.acc, 0.0) if acc_cmd <= 0 else self.acc
        self.yaw_rate = self.v / self.WHEELBASE_M * np.tan(self.steer)
        self.x += self.v * np.cos(self.yaw) * dt
        self.y += self.v * np.sin(self.yaw) * dt
        yaw = self.yaw + self.yaw_rate * dt
        self.yaw = float(np.arctan2(np.sin(yaw), np.cos(yaw)))
        self.s, self.d = (float(v) for v in w.main.xy_to_sd(self.x, self.y))
        box = w.intersection_box_s()
        self.in_intersection = box is not None and \
            self.front_s > box[0] - 3.0 and self.s - self.REAR_OVERHANG_M < box[1] + 0.5

    def _speed_control(self, t: float) -> float:
        p = self.plan
        ts = np.r_[0.0, np.asarray(p.t_s, float)]
        vs = np.r_[p.speeds_mps[0], np.asarray(p.speeds_mps, float)]
        tau = t - self.plan_t + SPEED_PREVIEW_S
        v_ref = float(np.interp(tau, ts, vs))
        a_ff = float(np.interp(tau, ts[1:], np.gradient(vs[1:], ts[1:]))) if len(ts) > 2 else 0.0
        if v_ref < 0.05 and self.v < 0.5:
            return -MAX_BRAKE_MPS2 / 2          # hold still
        return SPEED_GAIN * (v_ref - self.v) + a_ff

    def _pursuit(self) -> float:
        pts = np.asarray(self.plan.poses[:, :2], float)
        here = np.array([self.x, self.y])
        seg = np.diff(pts, axis=0)
        lens = np.hypot(seg[:, 0], seg[:, 1])
        if len(pts) < 2 or lens.sum() < 0.5:
            return 0.0 if self.v < 0.5 else self.steer
        # projection of the ego onto the polyline
        rel = here - pts[:-1]
        u = np.clip(np.einsum('ij,ij->i', rel, seg) / np.maximum(lens ** 2, 1e-9), 0.0, 1.0)
        proj = pts[:-1] + u[:, None] * seg
        k = int(np.argmin(np.hypot(*(proj - here).T)))
        cum = np.r_[0.0, np.cumsum(lens)]
        s_here = cum[k] + u[k] * lens[k]
        s_goal = s_here + max(4.0, 0.8 * self.v + 2.0)
        if s_goal <= cum[-1]:
            j = int(np.clip(np.searchsorted(cum, s_goal) - 1, 0, len(seg) - 1))
            f = (s_goal - cum[j]) / max(lens[j], 1e-9)
            goal = pts[j] + f * seg[j]
        else:
            last = seg[np.nonzero(lens > 1e-3)[0][-1]]
            goal = pts[-1] + (s_goal - cum[-1]) * last / np.hypot(*last)
        dx, dy = goal - here
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        curvature = 2.0 * ly / max(lx * lx + ly * ly, 1e-6)
        steer = np.arctan(curvature * self.WHEELBASE_M)
        return float(np.clip(steer, -self.MAX_STEER_RAD, self.MAX_STEER_RAD))


def expert_run(index: int, seed: int = 0) -> dict:
    """The expert (IntentExpert, as in the dataset) on the same scenario: its progress, final lane,
    speed and stop position, and whether it collided."""
    _, spec, _, intent, t_intent, world, agents = scenario_world(index, seed)
    ego = IntentExpert(world, spec, intent, t_intent)
    dt = 1.0 / ODOM_HZ
    s0, speeds, collided = float(ego.s), [], False
    for k in range(int(round(spec.duration_s * ODOM_HZ))):
        t = k * dt
        objs, cross = step_agents(agents, world, ego, dt, t)
        ego.step(dt, t, objs, cross)
        speeds.append((t, ego.v))
        collided = collided or (k % 5 == 0 and ego_touches(ego, agents, world))
    return {'progress_m': float(ego.s) - s0, 's_end': float(ego.s), 'd_end': float(ego.d),
            'lane_end': int(world.lane_of_d(np.array([ego.d]))[0]), 'v_end': float(ego.v),
            'speeds': speeds, 'collided': collided}


def _scene(t: float, ego: PlanFollower, agents, world, spec, rng, history: list | None = None) -> Scene:
    """The frame's Scene as fusion would give it; `history` (the (t, objects in odom) of the frames
    before, kept by the caller) gives the objects the acceleration the tracker reports."""
    from fmdrive.fusion.scene import describe_scene
    state = ego.state()
    T_base_odom = inv_T(state.T_odom_base())
    history = [] if history is None else history
    history.append((t, [a.object3d(world) for a in agents]))
    while history and t - history[0][0] > ACCEL_WINDOW_S + 1e-6:
        history.pop(0)
    objects = [o.transformed(T_base_odom) for o in with_accelerations(history)]
    lane = int(np.clip(world.lane_of_d(np.array([ego.d]))[0], 0, world.num_lanes - 1))
    lanes = world.lanes_in_base(T_base_odom, ego.s, lane)
    stamp_ns = int(round(t * 1e9)) + 1_000_000_000
    scene = describe_scene(stamp_ns, EgoState(0.0, 0.0, 0.0, state.speed_mps, state.yaw_rate_rps),
                           _perceived(objects, rng), lanes, spec.road.speed_limit_mps, MAX_SCENE_OBJECTS)
    scene.ego = state                        # the planners plan in odom from the ego's pose
    return scene


def run_scenario(index: int, seed: int, arbiter, expert: dict | None = None) -> ClosedLoopResult:
    """Drive scenario `index` with `arbiter` (its instructions should understand canonical intent
    names: CanonicalIntents); `expert` = expert_run(index, seed) when already computed."""
    expert = expert if expert is not None else expert_run(index, seed)
    _, spec, variant, intent, t_intent, world, agents = scenario_world(index, seed)
    ego = PlanFollower(world, spec)
    rng = np.random.default_rng([int(seed), int(index), 0xC105ED])
    dt = 1.0 / ODOM_HZ
    plan_every = int(round(PLAN_EVERY_S * ODOM_HZ))
    if hasattr(arbiter, 'reset'):
        arbiter.reset()                  # no memory, frame reuse, draft or lane change from the last drive
    elif arbiter.fallback is not None:   # (the planner node over DDS: its own)
        arbiter.fallback.reset()
    s0 = float(ego.s)
    collided, collision_t, collision_source, off_road = False, None, None, False
    sources, plan_ms, speeds, budget_stops, history = {}, [], [], 0, []
    right_edge = -world.num_lanes * world.w - OFF_ROAD_MARGIN_M
    left_edge = world.left_edge_d + OFF_ROAD_MARGIN_M
    for k in range(int(round(spec.duration_s * ODOM_HZ))):
        t = k * dt
        if k % plan_every == 0:
            instruction = intent if intent != 'none' and t >= t_intent else ''
            t0 = time.perf_counter()
            r = arbiter.plan(_scene(t, ego, agents, world, spec, rng, history), instruction)
            plan_ms.append((time.perf_counter() - t0) * 1e3)
            sources[r.source] = sources.get(r.source, 0) + 1
            budget_stops += 'budget_stop' in str(getattr(r.plan, 'status', ''))
            ego.follow(r.plan, t, r.source)
        step_agents(agents, world, ego, dt, t)
        ego.step(dt, t)
        speeds.append((t, ego.v, ego.acc_measured, ego.yaw_rate))
        bx, by, _, _, _ = ego.body_pose()
        d_body = float(world.main.xy_to_sd(bx, by)[1])
        # inside the crossing road's area the main road's edges do not bound the ego
        if not off_road and not ego.in_intersection and not right_edge <= d_body <= left_edge:
            off_road = True
        if not collided and ego_touches(ego, agents, world):
            collided, collision_t, collision_source = True, round(t, 2), ego.plan_source
    progress = float(ego.s) - s0
    comfort = comfort_metrics(speeds)
    complied = _complied(intent, t_intent, ego, world, [row[:3] for row in speeds], expert)
    ratio = progress / max(expert['progress_m'], 1e-6) if expert['progress_m'] > 1.0 else 1.0
    success = not collided and not off_road and progress >= 0.8 * expert['progress_m'] - 5.0
    return ClosedLoopResult(int(index), spec.kind, variant, intent, collided, collision_t, collision_source,
                            off_road, round(progress, 2), round(expert['progress_m'], 2), round(ratio, 3),
                            comfort['max_jerk_mps3'], complied, bool(success), sources,
                            round(float(np.median(plan_ms)), 2), round(float(np.max(plan_ms)), 2),
                            bool(expert['collided']), comfort['jerk_p95_mps3'], comfort['max_lat_acc_mps2'],
                            comfort['uncomfortable_frac'], budget_stops)


def comfort_metrics(samples) -> dict:
    """Comfort of a drive from (t, speed, longitudinal acceleration, yaw rate) at ODOM_HZ: jerk of the
    acceleration averaged over 0.25 s (max and p95), the largest lateral acceleration, and the share
    of samples outside nuPlan's comfort bounds (COMFORT_*)."""
    rows = np.asarray(samples, float).reshape(-1, 4)
    if not len(rows):
        return {'max_jerk_mps3': 0.0, 'jerk_p95_mps3': 0.0, 'max_lat_acc_mps2': 0.0, 'uncomfortable_frac': 0.0}
    v, acc, yaw_rate = rows[:, 1], rows[:, 2], rows[:, 3]
    win = max(1, int(round(0.25 * ODOM_HZ)))
    acc_avg = np.convolve(acc, np.ones(win) / win, mode='valid')       # sample i: samples i..i+win-1
    jerk = np.abs(np.diff(acc_avg)) * ODOM_HZ if len(acc_avg) > 1 else np.zeros(1)
    jerk_at = np.zeros(len(rows))                                      # at each window's last sample
    jerk_at[win:win + len(jerk)] = jerk[:max(0, len(rows) - win)]
    lat = np.abs(v * yaw_rate)
    lo, hi = COMFORT_LON_ACC_MPS2
    bad = ((jerk_at > COMFORT_MAX_LON_JERK_MPS3) | (acc < lo) | (acc > hi) |
           (lat > COMFORT_MAX_LAT_ACC_MPS2) | (np.abs(yaw_rate) > COMFORT_MAX_YAW_RATE_RPS))
    return {'max_jerk_mps3': round(float(jerk.max()), 2), 'jerk_p95_mps3': round(float(np.percentile(jerk, 95)), 2),
            'max_lat_acc_mps2': round(float(lat.max()), 2), 'uncomfortable_frac': round(float(bad.mean()), 4)}


def _complied(intent, t_intent, ego, world, speeds, expert) -> bool | None:
    if intent == 'none':
        return None
    lane_end = int(world.lane_of_d(np.array([ego.d]))[0])
    if intent in LANE_INTENTS:
        return lane_end == expert['lane_end']
    if intent == 'pull_over':
        return ego.v < 0.5 and abs(ego.d - expert['d_end']) <= 3.0
    if intent == 'stop_at_intersection':
        return ego.v < 0.5 and abs(ego.s - expert['s_end']) <= 3.0
    if intent == 'slow_down':
        after = [v for t, v, _ in speeds if t >= t_intent + 2.0]
        ref = [v for t, v in expert['speeds'] if t >= t_intent + 2.0]
        return bool(after) and float(np.mean(after)) <= float(np.mean(ref)) + 1.0
    return None


def summarise(results: list) -> dict:
    """Success rate, collisions (and those under an LLM plan), off-road, progress, comfort and
    instruction compliance over a set of ClosedLoopResult."""
    n = len(results)
    if n == 0:
        return {'scenarios': 0}
    with_intent = [r for r in results if r.complied is not None]
    return {'scenarios': n,
            'success_rate': round(sum(r.success for r in results) / n, 3),
            'collisions': sum(r.collided for r in results),
            'collisions_under_llm_plan': sum(r.collided and r.collision_source == 'llm' for r in results),
            'off_road': sum(r.off_road for r in results),
            'progress_ratio_mean': round(float(np.mean([min(r.progress_ratio, 1.5) for r in results])), 3),
            'max_jerk_mps3_p50': round(float(np.median([r.max_jerk_mps3 for r in results])), 2),
            'max_jerk_mps3_max': round(float(np.max([r.max_jerk_mps3 for r in results])), 2),
            'jerk_p95_mps3_mean': round(float(np.mean([r.jerk_p95_mps3 for r in results])), 2),
            'max_lat_acc_mps2_max': round(float(np.max([r.max_lat_acc_mps2 for r in results])), 2),
            'uncomfortable_frac_mean': round(float(np.mean([r.uncomfortable_frac for r in results])), 4),
            'comfortable_runs': round(sum(r.uncomfortable_frac == 0.0 for r in results) / n, 3),
            'instruction_compliance': round(sum(bool(r.complied) for r in with_intent) / len(with_intent), 3)
            if with_intent else None,
            'instructions': len(with_intent),
            'expert_collisions': sum(r.expert_collided for r in results),
            'plan_sources': {k: sum(r.sources.get(k, 0) for r in results)
                             for k in sorted({k for r in results for k in r.sources})}}
