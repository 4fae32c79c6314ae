"""Planner LM training data: (scene text [+ intent] -> expert waypoints) from the simulator.

    fmdrive sim planning-dataset --out runs/planning_dataset --samples 20000 --seed 0

No sensors are rendered: the world, the agents and the expert ego step at 20 Hz, and every 0.25 s
of simulated time one sample is taken from ground truth:

  scene_text  fusion/scene.py `describe_scene` over the objects the ego could perceive (within
              80 m, not hidden behind a nearer object in bird's-eye view, positions and velocities
              with tracker-like noise), the lanes and the road's speed limit; the same function
              the fusion node runs, so training and runtime prompts match.
  intent      one of planning/lm/format.INTENTS. The expert really does it (`IntentExpert`):
              keep_lane / follow_lead (never overtake), change_lane_left/right (to the next lane
              of the driving direction when it is free; where there is none the expert keeps its
              lane - the safe answer to an impossible request), pull_over (to the kerb side of the
              rightmost lane, stopping within ~25 m), slow_down (desired speed x0.6),
              overtake (also passes moving cars, not only parked ones, slower than
              min(0.75 x desired speed, 8 m/s), when the left lane is free),
              stop_at_intersection (stops at the stop line; intersection
              roads only). An intent starts at a random time; frames whose 3 s future straddles
              that start are dropped, and lane-change intents label only the frames of the change.
  waypoints   the expert's base_link at +0.5 .. +3.0 s, in base_link of the frame (6 x 2 m).
  objects     ground truth in base_link now and at the six future times (for collision checks).

Scenarios: the built-in kinds, combinations of two kinds on one road, dense traffic (extra cars
in every lane), and near-miss variants (hard braking leads, late cut-ins, late pedestrians). With
--standing-start P, a share P of the scenarios has the expert start from standstill (the scenario as
drawn otherwise, from a random stream of its own, so the other scenarios and the closed loop's do
not change; default 0, so older cards' commands make the same data): without them a stopped ego
that may go again is rare (233 of 16327 training samples stopped and moving off within 3 s), and a
student trained so stayed at a creep after a stop in closed loop.
Deterministic for --seed; the split (train/val/test) is by scenario number, so no scenario
contributes to two splits. Written in shards of SHARD_SCENARIOS scenarios (JSON lines); a rerun
skips the shards that exist, so an interrupted run resumes.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from fmdrive.fusion.scene import describe_scene
from fmdrive.fusion.tracker import TrackerParams, velocity_slope
from fmdrive.geometry import inv_T
from fmdrive.objects import EgoState, Object3D
from fmdrive.planning.lm.format import DT_S, INTENTS, TRAJECTORY_STEPS
from fmdrive.sim.agents import IDM_GAP_M, idm_accel, make_agents, road_objects
from fmdrive.sim.expert import ExpertDriver, boxes_overlap
from fmdrive.sim.scenario import SCENARIO_KINDS, _Gen, generate_scenario
from fmdrive.sim.world import World

SHARD_SCENARIOS = 16
DURATION_S = 20.0
ODOM_HZ = 20                # physics rate: 2.5x faster than the bags' 50 Hz, same expert
SAMPLE_EVERY_S = 0.25
PERCEPTION_RANGE_M = 80.0
MAX_SCENE_OBJECTS = 8                 # fusion's max_scene_objects default (config.py)
ACCEL_WINDOW_S = TrackerParams.accel_window_s   # the tracker's default (fusion/tracker.py)
ACCEL_NOISE_MPS2 = 0.2      # per axis, about the spread of the tracker's estimate on a steady car
SPLITS = ('train', 'val', 'test')
VARIANTS = ('plain', 'plain', 'combined', 'dense', 'near_miss')
LANE_CHANGE_INTENTS = ('change_lane_left', 'change_lane_right')


class DatasetError(ValueError):
    """A planning-dataset request that cannot be met (bad sample count, unwritable directory)."""


def split_of(scenario_index: int) -> str:
    """1 in 10 scenarios is val, 1 in 10 test, the rest train."""
    r = scenario_index % 10
    return 'val' if r == 8 else 'test' if r == 9 else 'train'


# ---------------------------------------------------------------- the expert that follows intents
class IntentExpert(ExpertDriver):
    """ExpertDriver that carries out one intent from `t_start_s` on (see the module docstring)."""

    PULL_OVER_OFFSET_M = 0.45          # right of the rightmost lane's centre, still on the road

    def __init__(self, world, spec, intent='none', t_start_s=0.0):
        super().__init__(world, spec)
        self.intent, self.t_start_s = intent, float(t_start_s)
        self.active = False
        self.stop_s = None              # pull over: where to be stopped
        self.done_s = None              # lane change: time when the ego was in the new lane

    def activate(self, t):
        self.active = True
        w = self.world
        if self.intent in LANE_CHANGE_INTENTS:
            lane = self.home_lane + (1 if self.intent == 'change_lane_left' else -1)
            self.wanted_lane = lane if 0 <= lane < w.num_lanes else None
        elif self.intent == 'pull_over':
            self.home_lane = self.target_lane = -self.PULL_OVER_OFFSET_M / w.w   # a fractional lane
            self.stop_s = self.front_s + max(25.0, self.v ** 2 / (2 * 1.2) + 5.0)
        elif self.intent == 'slow_down':
            self.v_des = max(2.0, 0.6 * self.v_des)

    def step(self, dt, t, objs, cross_agents=()):
        if not self.active and self.intent != 'none' and t >= self.t_start_s:
            self.activate(t)
        super().step(dt, t, objs, cross_agents)
        if self.active and self.intent in LANE_CHANGE_INTENTS and self.done_s is None:
            lane = getattr(self, 'wanted_lane', None)
            if lane is None or abs(self.d - self.world.lane_center_d(lane)) < 0.3:
                self.done_s = t

    def _choose_lane(self, objs):
        if not self.active or self.intent in ('none', 'slow_down'):
            return super()._choose_lane(objs)
        if self.intent in ('keep_lane', 'follow_lead', 'pull_over', 'stop_at_intersection'):
            return                                       # never leave the lane
        if self.intent in LANE_CHANGE_INTENTS:
            lane = self.wanted_lane
            if lane is not None and self.home_lane != lane:
                ahead = np.flatnonzero(objs.s - self.s > -60.0)
                if len(ahead) == 0 or self._lane_free(objs, lane, ahead[0]) and \
                        self._side_lane_free(objs, lane):
                    self.home_lane = self.target_lane = lane
            return
        if self.intent == 'overtake' and self.target_lane == self.home_lane:
            relaxed = type(objs)(**{k: getattr(objs, k) for k in objs.__dataclass_fields__})
            relaxed.overtakeable = np.ones_like(objs.overtakeable)   # moving cars too
            return super()._choose_lane(relaxed)
        return super()._choose_lane(objs)

    def _side_lane_free(self, objs, lane):
        """Nothing in the target lane from 15 m behind to 20 m ahead (a plain merge check)."""
        d_lane = self.world.lane_center_d(lane)
        near = (np.abs(objs.d - d_lane) < self.world.w / 2 + 0.5) & (objs.ids != -1)
        rel = objs.s - self.s
        return not np.any(near & (rel > -15.0 - 2.0 * np.maximum(objs.vs - self.v, 0)) & (rel < 20.0))

    def _longitudinal(self, objs, d_path, cross_agents):
        acc = super()._longitudinal(objs, d_path, cross_agents)
        if not self.active:
            return acc
        stop_at = None
        if self.intent == 'pull_over':
            stop_at = self.stop_s
        elif self.intent == 'stop_at_intersection':
            box = self.world.intersection_box_s()
            if box is not None:
                line = box[0] - 3.0
                if self.front_s <= line + 0.5 and self.v ** 2 / (2 * 6.0) <= line - self.front_s + 1.0:
                    stop_at = line
                elif getattr(self, '_stopped_at_line', False):
                    stop_at = line
        if stop_at is not None:
            gap = stop_at - self.front_s + IDM_GAP_M
            acc = min(acc, idm_accel(self.v, self.v_des, max(gap, 0.1), self.v))
            if self.v < 0.05 and stop_at - self.front_s < 3.0:
                acc = min(acc, 0.0)
                self._stopped_at_line = True
        return acc


# ---------------------------------------------------------------- scenarios
def _scenario(index: int, seed: int, rng: np.random.Generator):
    """(spec, variant, intent, t_intent_s) of scenario number `index`."""
    kind = SCENARIO_KINDS[int(rng.integers(len(SCENARIO_KINDS)))]
    variant = VARIANTS[int(rng.integers(len(VARIANTS)))]
    scen_seed = int(seed) * 1_000_003 + index
    spec = generate_scenario(kind, scen_seed, DURATION_S)
    g = _Gen(rng)
    road = spec.road
    if variant == 'combined':           # the agents of a second kind that fit this road
        other = generate_scenario(SCENARIO_KINDS[int(rng.integers(len(SCENARIO_KINDS)))],
                                  scen_seed + 7, DURATION_S)
        for a in other.agents:
            if a.behaviour == 'cross_traffic' and road.type != 'intersection':
                continue
            if a.behaviour == 'oncoming' and not road.has_oncoming_lane:
                continue
            if a.behaviour == 'oncoming':
                a.lane = road.num_lanes
            elif a.lane >= road.num_lanes:
                a.lane = road.num_lanes - 1
            a.s_m = round(a.s_m + float(rng.uniform(-10, 25)), 2)
            if a.behaviour == 'cut_in':
                a.params['target_lane'] = min(int(a.params.get('target_lane', 0)), road.num_lanes - 1)
                if a.params['target_lane'] == a.lane:
                    continue
            spec.agents.append(a)
    elif variant == 'dense':             # a car every 15-35 m in every lane of the driving direction
        for lane in range(road.num_lanes):
            s = float(rng.uniform(-40, -10)) if lane != spec.ego.lane else float(rng.uniform(12, 30))
            while s < 180.0:
                if abs(s) > 8.0:
                    spec.agents.append(g.car('follow', lane, s, road.speed_limit_mps
                                             * float(rng.uniform(0.5, 0.95))))
                s += float(rng.uniform(15, 35))
    elif variant == 'near_miss':        # the same events, later and harder
        for a in spec.agents:
            if a.behaviour == 'brake':
                a.params['decel_mps2'] = round(float(rng.uniform(6.0, 8.5)), 2)
                a.s_m = round(max(10.0, a.s_m * 0.6), 2)
            elif a.behaviour == 'cut_in':
                a.s_m = round(max(6.0, a.s_m * 0.6), 2)
                a.params['lane_change_s'] = round(float(rng.uniform(1.2, 2.0)), 2)
            elif a.behaviour == 'cross':
                a.params['trigger_distance_m'] = round(float(a.params.get('trigger_distance_m', 30))
                                                       * 0.75, 2)
    spec.seed = scen_seed
    spec.duration_s = DURATION_S
    spec.odom_rate_hz = float(ODOM_HZ)
    spec.validate()
    # intent: half the scenarios carry none
    p = np.array([7, 1.0, 2.0, 2.0, 1.2, 1.2, 0.8, 1.2, 0.0])
    if road.type == 'intersection':
        p[-1] = 2.5
    intent = INTENTS[int(rng.choice(len(INTENTS), p=p / p.sum()))]
    t_intent = float(rng.uniform(0.0, 8.0)) if intent != 'none' else 0.0
    return spec, variant, intent, t_intent


# ---------------------------------------------------------------- perception as the planner sees it
def _visible(objects_base: list[Object3D]) -> list[bool]:
    """Within PERCEPTION_RANGE_M and not wholly behind a nearer object in bird's-eye view (the
    angular interval of its corners inside a nearer object's interval)."""
    from fmdrive.geometry import box_corners_bev
    spans = []
    for o in objects_base:
        c = box_corners_bev(o.center[:2], o.size[:2], o.yaw_rad)
        ang = np.arctan2(c[:, 1], c[:, 0])
        if np.ptp(ang) > np.pi:            # straddles +-pi (behind): no occlusion test
            spans.append((np.linalg.norm(o.center[:2]), -np.inf, np.inf, False))
        else:
            spans.append((np.linalg.norm(o.center[:2]), ang.min(), ang.max(), True))
    out = []
    for i, (dist, lo, hi, ok) in enumerate(spans):
        hidden = ok and any(j != i and d2 < dist - 1.0 and ok2 and l2 <= lo and h2 >= hi
                            for j, (d2, l2, h2, ok2) in enumerate(spans))
        out.append(dist <= PERCEPTION_RANGE_M and not hidden)
    return out


def _perceived(objects_base, rng):
    """What fusion's tracker would give of the ground-truth objects: the visible ones, centre,
    velocity and acceleration with noise."""
    seen = []
    for o, vis in zip(objects_base, _visible(objects_base)):
        if not vis:
            continue
        dist = np.linalg.norm(o.center[:2])
        noise = 0.05 + 0.004 * dist
        seen.append(Object3D(o.center + np.r_[rng.normal(0, noise, 2), 0.0], o.size, o.yaw_rad,
                             o.label, 1.0, o.id, o.velocity + np.r_[rng.normal(0, 0.15, 2), 0.0],
                             acceleration=o.acceleration + np.r_[rng.normal(0, ACCEL_NOISE_MPS2, 2), 0.0]))
    return seen


def with_accelerations(history: list[tuple[float, list[Object3D]]]) -> list[Object3D]:
    """The last entry's objects (one frame) with `acceleration` = the least-squares slope of each
    one's ground-truth velocity over the entries of the last ACCEL_WINDOW_S (the tracker's estimate,
    fusion/tracker.py: an object braking for a second says so); zeros for an object seen once.
    history: (time s, objects) in time order, all in one frame."""
    t_last, current = history[-1]
    rows: dict[int, list] = {}
    for t, objects in history:
        if t_last - t <= ACCEL_WINDOW_S + 1e-6:
            for o in objects:
                rows.setdefault(o.id, []).append((t, o.velocity[0], o.velocity[1]))
    out = []
    for o in current:
        r = np.array(rows.get(o.id, []), float)
        acc = np.zeros(3)
        if len(r) >= 3:
            acc[:2] = velocity_slope(r[:, 0], r[:, 1:])
        out.append(Object3D(o.center, o.size, o.yaw_rad, o.label, o.score, o.id, o.velocity, o.box2d,
                            o.embedding, o.embedding_space, acc))
    return out


# ---------------------------------------------------------------- one scenario
def scenario_world(index: int, seed: int):
    """(rng, spec, variant, intent, t_intent, world, agents) of scenario number `index`; rng is the
    scenario's generator after the spec was drawn (the dataset draws its sample phase and
    perception noise from it next). Shared with the closed loop (sim/closed_loop.py)."""
    rng = np.random.default_rng([int(seed), int(index), 0x504C414E])
    spec, variant, intent, t_intent = _scenario(index, seed, rng)
    ss = np.random.SeedSequence([int(spec.seed), 20240611])
    rng_world, rng_agents, _, _ = (np.random.default_rng(s) for s in ss.spawn(4))
    travel = spec.duration_s * max(spec.ego.speed_mps, spec.road.speed_limit_mps)
    world = World(spec.road, rng_world, (-80.0, spec.ego.s_m + travel + 200.0))
    return rng, spec, variant, intent, t_intent, world, make_agents(spec, world, rng_agents)


def step_agents(agents, world, ego, dt: float, t: float):
    """One physics step of every agent (main road, then crossing road), each seeing the ego;
    returns (the agents as the ego's road_objects after they moved, the crossing agents)."""
    main = [a for a in agents if a.road == 'main']
    cross = [a for a in agents if a.road == 'cross']
    objs_main = road_objects(main, world, world.main, ego=ego)
    for a in main:
        a.step(dt, t, world, objs_main, ego)
    if cross:
        objs_cross = road_objects(cross, world, world.cross, ego=ego)
        for a in cross:
            a.step(dt, t, world, objs_cross, ego)
    return road_objects(agents, world, world.main), cross


def ego_touches(ego, agents, world) -> bool:
    """The ego's body overlaps an agent's box."""
    ex, ey, eyaw, _, _ = ego.body_pose()
    for a in agents:
        x, y, yaw, _, _ = a.pose(world)
        if abs(x - ex) + abs(y - ey) < 12.0 and boxes_overlap(
                (ex, ey), ego.LENGTH_M, ego.WIDTH_M, eyaw, (x, y), a.size[0], a.size[1], yaw):
            return True
    return False


def standing_start(index: int, seed: int, share: float) -> bool:
    """Whether the expert of scenario `index` starts from standstill (a stream of its own)."""
    return share > 0 and bool(np.random.default_rng([int(seed), int(index), 0x5374]).random() < share)


def simulate_scenario(index: int, seed: int, standing_start_share: float = 0.0, with_lanes: bool = False) -> list[dict]:
    """All samples of scenario number `index` (deterministic for (index, seed, share)). with_lanes:
    each sample also holds the ground-truth lane centre lines in base_link (`lanes`: offset from the
    ego's lane, width, (x, y) points along the driving direction), what fusion gives the planner in
    the graph and the closed loop gives it in-process, so a benchmark's Scene of the sample has the
    road the scene text describes (the written dataset leaves them out: the model reads the text,
    and they would treble its size)."""
    rng, spec, variant, intent, t_intent, world, agents = scenario_world(index, seed)
    expert = IntentExpert(world, spec, intent, t_intent)
    standing = standing_start(index, seed, standing_start_share)
    if standing:
        expert.v = 0.0                       # keeps its desired speed: it drives off
    dt = 1.0 / ODOM_HZ
    steps = int(round(spec.duration_s * ODOM_HZ))
    every = int(round(SAMPLE_EVERY_S * ODOM_HZ))
    horizon = int(round(TRAJECTORY_STEPS * DT_S * ODOM_HZ))
    future_step = int(round(DT_S * ODOM_HZ))
    phase = int(rng.integers(every))
    frames, collided = [], False
    ego_log, agents_log = {}, {}
    for k in range(steps + 1):
        t = k * dt
        if k % every == phase:      # only what samples and their futures read (every | future_step)
            ego_log[k] = expert.state()
            agents_log[k] = [a.object3d(world) for a in agents]
        if k % every == phase and k + horizon <= steps:
            lane = expert.home_lane if expert.target_lane == expert.home_lane else expert.target_lane
            lane = int(np.clip(round(lane), 0, world.num_lanes - 1))
            frames.append((k, t, expert.active, expert.done_s, lane, float(expert.s)))
        if k == steps:
            break
        objs, cross = step_agents(agents, world, expert, dt, t)
        expert.step(dt, t, objs, cross)
        if not collided and k % 5 == 0:
            collided = ego_touches(expert, agents, world)

    samples = []
    for k, t, active, done_s, lane, s_ego in frames:
        if intent != 'none':
            if not active and t + TRAJECTORY_STEPS * DT_S > t_intent:
                continue                     # its future already follows the intent
            if active and intent in LANE_CHANGE_INTENTS and done_s is not None and t > done_s + 1.0:
                continue                     # the change is over: the request is satisfied
            if active and intent in ('pull_over', 'stop_at_intersection') and t > t_intent + 8.0:
                continue                     # long stopped at the kerb / line: enough of those
        label = intent if active else 'none'
        ego = ego_log[k]
        T_base_odom = inv_T(ego.T_odom_base())
        fut = np.array([[ego_log[k + future_step * (i + 1)].x, ego_log[k + future_step * (i + 1)].y]
                        for i in range(TRAJECTORY_STEPS)])
        wp = fut @ T_base_odom[:2, :2].T + T_base_odom[:2, 3]
        window = [(j * dt, agents_log[j]) for j in range(k - int(round(ACCEL_WINDOW_S * ODOM_HZ)), k + 1)
                  if j in agents_log]
        objects_base = [o.transformed(T_base_odom) for o in with_accelerations(window)]
        lanes = world.lanes_in_base(T_base_odom, s_ego, lane)
        stamp_ns = int(round(t * 1e9))
        scene = describe_scene(stamp_ns, EgoState(0.0, 0.0, 0.0, ego.speed_mps, ego.yaw_rate_rps),
                               _perceived(objects_base, rng), lanes, spec.road.speed_limit_mps,
                               MAX_SCENE_OBJECTS)
        future_objects = []
        accel = {int(o.id): o.acceleration for o in objects_base}
        for o in agents_log[k]:
            track = []
            for i in range(TRAJECTORY_STEPS):
                later = next(b for b in agents_log[k + future_step * (i + 1)] if b.id == o.id)
                lb = later.transformed(T_base_odom)
                track.append([round(float(lb.center[0]), 3), round(float(lb.center[1]), 3),
                              round(float(lb.yaw_rad), 4)])
            ob = o.transformed(T_base_odom)
            future_objects.append({'id': int(o.id), 'label': o.label,
                                   'size': [round(float(v), 3) for v in o.size[:2]],
                                   'now': [round(float(ob.center[0]), 3), round(float(ob.center[1]), 3),
                                           round(float(ob.yaw_rad), 4)],
                                   # base_link m/s^2, the slope the scene text's "braking at" comes from
                                   'acceleration': [round(float(v), 3) for v in accel.get(int(o.id), np.zeros(3))[:2]],
                                   'future': track})
        samples.append({
            'scenario_index': int(index), 'scenario_seed': int(spec.seed), 'kind': spec.kind,
            'variant': variant, 'standing_start': standing, 'split': split_of(index), 't_s': round(t, 2), 'intent': label,
            'scene_text': scene.text, 'ego_speed_mps': round(float(ego.speed_mps), 4),
            'ego_yaw_rate_rps': round(float(ego.yaw_rate_rps), 5),
            'speed_limit_mps': float(spec.road.speed_limit_mps),
            'waypoints': [[round(float(x), 4), round(float(y), 4)] for x, y in wp],
            'objects': future_objects, 'expert_collided': bool(collided)})
        if with_lanes:
            samples[-1]['lanes'] = [{'offset': int(ln.offset), 'width_m': round(float(ln.width_m), 3),
                                     'centerline': np.round(ln.centerline[:, :2], 3).tolist()} for ln in lanes]
    return samples


# ---------------------------------------------------------------- the dataset
def write_planning_dataset(out: str | os.PathLike, samples: int = 20000, seed: int = 0,
                           progress: bool = True, standing_start: float = 0.0) -> dict:
    """Shards of JSON lines under `out` until at least `samples` samples exist (resumable)."""
    if samples < 1:
        raise DatasetError(f'--samples must be >= 1, got {samples}')
    if not 0.0 <= standing_start <= 1.0:
        raise DatasetError(f'--standing-start must be a share in [0, 1], got {standing_start}')
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / 'meta.json'
    meta = {'seed': int(seed), 'shard_scenarios': SHARD_SCENARIOS, 'duration_s': DURATION_S,
            'sample_every_s': SAMPLE_EVERY_S, 'format': 'fmdrive.planning.lm.format',
            'standing_start': float(standing_start),
            'command': f'fmdrive sim planning-dataset --out {out} --samples {samples} --seed {seed}'
                       + (f' --standing-start {standing_start:g}' if standing_start else '')}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get('seed') != seed or old.get('shard_scenarios') != SHARD_SCENARIOS:
            raise DatasetError(f'{out} holds a dataset of seed {old.get("seed")}; use another --out '
                               f'or the same --seed')
        if float(old.get('standing_start', 0.0)) != float(standing_start):
            raise DatasetError(f'{out} holds a dataset of --standing-start {old.get("standing_start", 0.0):g}; '
                               f'use another --out or the same share')
    meta_path.write_text(json.dumps(meta, indent=1))
    from tqdm import tqdm
    bar = tqdm(total=samples, unit='sample', disable=not progress, desc='planning-dataset')
    total, shard, t0 = 0, 0, time.perf_counter()
    counts = {s: 0 for s in SPLITS}
    while total < samples:
        path = out / f'shard_{shard:05d}.jsonl'
        if not path.exists():
            rows = []
            for i in range(shard * SHARD_SCENARIOS, (shard + 1) * SHARD_SCENARIOS):
                rows += simulate_scenario(i, seed, standing_start)
            tmp = path.with_suffix('.tmp')
            tmp.write_text(''.join(json.dumps(r, separators=(',', ':')) + '\n' for r in rows))
            tmp.replace(path)                      # a shard exists only when complete
        with path.open() as f:
            for line in f:
                counts[json.loads(line)['split']] += 1
                total += 1
                bar.update(1)
        shard += 1
    bar.close()
    result = {'out': str(out), 'samples': total, 'shards': shard, 'splits': counts,
              'seconds': round(time.perf_counter() - t0, 1)}
    (out / 'summary.json').write_text(json.dumps(result, indent=1))
    return result


def load_planning_dataset(path, split: str | None = None) -> list[dict]:
    """The samples of a dataset directory (one split, or all)."""
    path = Path(path)
    shards = sorted(path.glob('shard_*.jsonl'))
    if not shards:
        raise DatasetError(f'{path} holds no planning dataset (no shard_*.jsonl); make one with '
                           f'`fmdrive sim planning-dataset --out {path}`')
    rows = []
    for s in shards:
        with s.open() as f:
            rows += [r for r in map(json.loads, f) if split is None or r['split'] == split]
    return rows

