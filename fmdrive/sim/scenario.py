"""Scenario specs: what a simulated drive contains (road, ego, agents, sensor knobs, rates).

A spec is a plain dataclass that round-trips through YAML, so a user can write their own
(see scenarios/*.yaml). `generate_scenario(kind, seed)` draws one of the built-in kinds;
the seed varies speeds, positions, counts, road curvature, lane count and colours.
"""
from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

SCENARIO_KINDS = ('car_following', 'cut_in', 'pedestrian_crossing', 'parked_car', 'intersection',
                  'cyclist', 'occluded_pedestrian', 'oncoming', 'construction')
ROAD_TYPES = ('straight', 'curve', 'intersection')
AGENT_TYPES = ('car', 'pedestrian', 'cyclist', 'cone', 'truck', 'bus')
LARGE_VEHICLE_TYPES = ('truck', 'bus')   # ground truth labels them 'car', with their own size
BEHAVIOURS = ('follow', 'brake', 'cut_in', 'cross', 'parked', 'oncoming', 'cross_traffic', 'static')
LIDAR_BEAMS = (16, 32, 64, 128)

# Behaviour parameters a user may set in `agents[i].params` (anything else is a typo).
BEHAVIOUR_PARAMS = {
    'follow': ('d_offset_m',),
    'brake': ('d_offset_m', 'brake_time_s', 'decel_mps2', 'stop_duration_s'),
    'cut_in': ('d_offset_m', 'cut_time_s', 'target_lane', 'lane_change_s', 'speed_after_mps'),
    'cross': ('side', 'trigger_distance_m', 'start_time_s', 'd_offset_m'),
    'parked': ('d_offset_m',),
    'oncoming': ('d_offset_m',),
    'cross_traffic': ('direction',),
    'static': ('d_offset_m', 'd_m'),
}

DEFAULT_SIZES_M = {'car': (4.5, 1.9, 1.5), 'pedestrian': (0.6, 0.6, 1.75),
                   'cyclist': (1.8, 0.6, 1.7), 'cone': (0.4, 0.4, 0.7),
                   'truck': (9.0, 2.5, 3.6), 'bus': (12.0, 2.55, 3.2)}

CAR_COLOURS = ((230, 230, 228), (160, 162, 166), (30, 30, 34), (170, 25, 25), (25, 55, 140),
               (90, 92, 96), (30, 80, 45), (215, 180, 40), (120, 30, 60), (200, 90, 30))
SHIRT_COLOURS = ((200, 40, 40), (40, 90, 180), (230, 200, 60), (60, 150, 70), (240, 240, 240),
                 (40, 40, 40), (160, 80, 170), (250, 130, 40))


class ScenarioError(ValueError):
    """A scenario spec that cannot be simulated (unknown kind, unknown key, bad value)."""


@dataclass
class RoadSpec:
    type: str = 'straight'              # straight | curve | intersection
    curvature_1pm: float = 0.0          # 1/radius, + turns left; only for type curve
    num_lanes: int = 2                  # lanes in the ego's driving direction
    lane_width_m: float = 3.5
    speed_limit_mps: float = 13.9
    has_oncoming_lane: bool = True      # one lane of oncoming traffic left of the centre line
    intersection_s_m: float = 80.0      # where the crossing road is (type intersection)
    sidewalk_width_m: float = 3.0
    scenery_density: float = 1.0        # 0 = empty surroundings, 1 = town, 2 = dense
    vegetation_density: float = 0.0     # hedges and bushes on the verges (porous to the LiDAR)


@dataclass
class EgoSpec:
    speed_mps: float = 10.0             # initial and desired speed (capped by the speed limit)
    lane: int = 0                       # 0 = rightmost lane of the driving direction
    s_m: float = 0.0                    # start position along the road


@dataclass
class AgentSpec:
    type: str = 'car'                   # car | pedestrian | cyclist | cone
    behaviour: str = 'follow'           # see BEHAVIOURS
    lane: int = 0                       # num_lanes = the oncoming lane
    s_m: float = 30.0                   # along the road (cross_traffic: distance to the crossing)
    speed_mps: float = 0.0
    params: dict = field(default_factory=dict)
    size_m: list | None = None          # length, width, height; None = type default
    colour_rgb: list | None = None      # None = drawn from the seed


@dataclass
class CameraSpec:
    fog: float = 0.0                    # 0 clear .. 1 thick (visibility ~50 m)
    night: bool = False                 # dark, lit by the ego's headlights
    noise_std: float = 2.0              # Gaussian pixel noise, 0..255 units
    colour_shift: list = field(default_factory=lambda: [1.0, 1.0, 1.0])  # per-channel RGB gain


@dataclass
class LidarSpec:
    beams: int = 32
    vfov_deg: list = field(default_factory=lambda: [-25.0, 15.0])
    h_res_deg: float = 0.2
    max_range_m: float = 100.0
    range_noise_m: float = 0.02
    dropout: float = 0.01
    intensity_scale: float = 1.0        # reported intensity = 0..255 reflectivity * this (1/255:
                                        # a sensor reporting 0..1)


@dataclass
class ScenarioSpec:
    kind: str = 'custom'
    seed: int = 0
    duration_s: float = 20.0
    road: RoadSpec = field(default_factory=RoadSpec)
    ego: EgoSpec = field(default_factory=EgoSpec)
    agents: list = field(default_factory=list)          # list[AgentSpec]
    camera: CameraSpec = field(default_factory=CameraSpec)
    lidar: LidarSpec = field(default_factory=LidarSpec)
    camera_rate_hz: float = 10.0
    lidar_rate_hz: float = 10.0
    odom_rate_hz: float = 50.0

    # ------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> 'ScenarioSpec':
        """Build and validate a spec; ScenarioError names the offending key."""
        if not isinstance(d, dict):
            raise ScenarioError(f'a scenario must be a mapping of keys, got {type(d).__name__}')
        d = dict(d)
        sub = {}
        for key, sub_cls in (('road', RoadSpec), ('ego', EgoSpec), ('camera', CameraSpec),
                             ('lidar', LidarSpec)):
            sub[key] = _build(sub_cls, d.pop(key, {}) or {}, key)
        agents_raw = d.pop('agents', []) or []
        if not isinstance(agents_raw, list):
            raise ScenarioError('agents: expected a list of agents')
        agents = [_build(AgentSpec, a, f'agents[{i}]') for i, a in enumerate(agents_raw)]
        spec = _build(cls, d, '', extra={**sub, 'agents': agents})
        spec.validate()
        return spec

    def to_yaml(self, path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path) -> 'ScenarioSpec':
        path = Path(path)
        if not path.is_file():
            raise ScenarioError(f'scenario file {path} does not exist')
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ScenarioError(f'{path} is not valid YAML: {exc}') from exc
        try:
            return cls.from_dict(d)
        except ScenarioError as exc:
            raise ScenarioError(f'{path}: {exc}') from None

    # ------------------------------------------------------------ validation
    def validate(self) -> None:
        r, e, c, li = self.road, self.ego, self.camera, self.lidar
        _check(isinstance(self.seed, int), 'seed', 'must be an integer')
        _check(0 < self.duration_s <= 3600, 'duration_s', 'must be in (0, 3600] seconds')
        _check(r.type in ROAD_TYPES, 'road.type', f'must be one of {", ".join(ROAD_TYPES)}')
        _check(abs(r.curvature_1pm) <= 0.01, 'road.curvature_1pm',
               'must be within +-0.01 (radius >= 100 m)')
        _check(isinstance(r.num_lanes, int) and 1 <= r.num_lanes <= 4, 'road.num_lanes',
               'must be an integer 1..4')
        _check(2.5 <= r.lane_width_m <= 5.0, 'road.lane_width_m', 'must be in [2.5, 5.0] m')
        _check(0 < r.speed_limit_mps <= 40, 'road.speed_limit_mps', 'must be in (0, 40] m/s')
        _check(r.intersection_s_m >= 20, 'road.intersection_s_m', 'must be >= 20 m')
        _check(0.5 <= r.sidewalk_width_m <= 10, 'road.sidewalk_width_m', 'must be in [0.5, 10] m')
        _check(0 <= r.scenery_density <= 3, 'road.scenery_density', 'must be in [0, 3]')
        _check(0 <= r.vegetation_density <= 3, 'road.vegetation_density', 'must be in [0, 3]')
        _check(0 <= e.speed_mps <= 40, 'ego.speed_mps', 'must be in [0, 40] m/s')
        _check(isinstance(e.lane, int) and 0 <= e.lane < r.num_lanes, 'ego.lane',
               f'must be a lane index 0..{r.num_lanes - 1} (0 = rightmost)')
        _check(0 <= c.fog <= 1, 'camera.fog', 'must be in [0, 1]')
        _check(isinstance(c.night, bool), 'camera.night', 'must be true or false')
        _check(0 <= c.noise_std <= 50, 'camera.noise_std', 'must be in [0, 50]')
        _check(isinstance(c.colour_shift, (list, tuple)) and len(c.colour_shift) == 3
               and all(0.3 <= float(g) <= 2.0 for g in c.colour_shift), 'camera.colour_shift',
               'must be three RGB gains in [0.3, 2.0], e.g. [1.0, 1.0, 1.0]')
        _check(li.beams in LIDAR_BEAMS, 'lidar.beams', f'must be one of {LIDAR_BEAMS}')
        _check(isinstance(li.vfov_deg, (list, tuple)) and len(li.vfov_deg) == 2
               and -60 <= li.vfov_deg[0] < li.vfov_deg[1] <= 60, 'lidar.vfov_deg',
               'must be [lowest, highest] beam elevation in degrees, e.g. [-25, 15]')
        _check(0.05 <= li.h_res_deg <= 2.0, 'lidar.h_res_deg', 'must be in [0.05, 2.0] degrees')
        _check(5 <= li.max_range_m <= 300, 'lidar.max_range_m', 'must be in [5, 300] m')
        _check(0 <= li.range_noise_m <= 1, 'lidar.range_noise_m', 'must be in [0, 1] m')
        _check(0 <= li.dropout < 1, 'lidar.dropout', 'must be in [0, 1)')
        _check(1e-4 <= li.intensity_scale <= 1e3, 'lidar.intensity_scale',
               'must be in [1e-4, 1000] (1 = 0..255, 1/255 = 0..1)')
        _check(self.camera_rate_hz > 0 and self.camera_rate_hz == self.lidar_rate_hz,
               'lidar_rate_hz', 'must equal camera_rate_hz (one SimFrame per sensor tick)')
        ratio = self.odom_rate_hz / self.camera_rate_hz
        _check(self.odom_rate_hz > 0 and abs(ratio - round(ratio)) < 1e-9 and ratio >= 1,
               'odom_rate_hz', 'must be a whole multiple of camera_rate_hz (e.g. 50 for 10 Hz)')
        for i, a in enumerate(self.agents):
            key = f'agents[{i}]'
            _check(a.type in AGENT_TYPES, f'{key}.type', f'must be one of {", ".join(AGENT_TYPES)}')
            _check(a.behaviour in BEHAVIOURS, f'{key}.behaviour',
                   f'must be one of {", ".join(BEHAVIOURS)}')
            max_lane = r.num_lanes if r.has_oncoming_lane else r.num_lanes - 1
            _check(isinstance(a.lane, int) and 0 <= a.lane <= max_lane, f'{key}.lane',
                   f'must be 0..{max_lane} (0 = rightmost; {r.num_lanes} = oncoming lane if any)')
            _check(0 <= a.speed_mps <= 40, f'{key}.speed_mps', 'must be in [0, 40] m/s')
            _check(a.size_m is None or (len(a.size_m) == 3 and all(0.05 < float(v) < 30
                                                                   for v in a.size_m)),
                   f'{key}.size_m', 'must be [length, width, height] in metres, or null')
            _check(a.colour_rgb is None or (len(a.colour_rgb) == 3 and all(0 <= int(v) <= 255
                                                                           for v in a.colour_rgb)),
                   f'{key}.colour_rgb', 'must be [r, g, b] 0..255, or null')
            _check(isinstance(a.params, dict), f'{key}.params', 'must be a mapping')
            allowed = BEHAVIOUR_PARAMS[a.behaviour]
            for p in a.params:
                _check(p in allowed, f'{key}.params.{p}',
                       f'is not a parameter of behaviour {a.behaviour!r}; '
                       f'known: {", ".join(allowed)}')
            if a.behaviour == 'cross_traffic':
                _check(r.type == 'intersection', f'{key}.behaviour',
                       'cross_traffic needs road.type: intersection')
            if a.behaviour == 'oncoming':
                _check(r.has_oncoming_lane, f'{key}.behaviour',
                       'oncoming needs road.has_oncoming_lane: true')
            if a.behaviour == 'cross':
                _check(a.params.get('side', 'right') in ('right', 'left'), f'{key}.params.side',
                       "must be 'right' or 'left'")


def _check(ok, key, what):
    if not ok:
        raise ScenarioError(f'{key}: {what}')


def _build(cls, d, where, extra=None):
    """cls(**d) with unknown keys and wrong types reported by name."""
    if not isinstance(d, dict):
        raise ScenarioError(f'{where or "scenario"}: expected a mapping, got {d!r}')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in d.items():
        name = f'{where}.{k}' if where else k
        if k not in fields:
            raise ScenarioError(f'{name}: unknown key; known keys: {", ".join(fields)}')
        default = _default(fields[k])
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise ScenarioError(f'{name}: must be true or false, got {v!r}')
        elif isinstance(default, int) and not isinstance(default, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
                raise ScenarioError(f'{name}: must be an integer, got {v!r}')
            v = int(v)
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ScenarioError(f'{name}: must be a number, got {v!r}')
            v = float(v)
        elif isinstance(default, str) and not isinstance(v, str):
            raise ScenarioError(f'{name}: must be a string, got {v!r}')
        kwargs[k] = v
    kwargs.update(extra or {})
    return cls(**kwargs)


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _plain(x):
    """numpy scalars/tuples -> plain YAML/JSON types."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


# ---------------------------------------------------------------- built-in scenario kinds
def generate_scenario(kind: str, seed: int, duration_s: float = 20.0) -> ScenarioSpec:
    """A random scenario of `kind`; the same (kind, seed) always gives the same spec."""
    if kind not in SCENARIO_KINDS:
        raise ScenarioError(f'unknown scenario kind {kind!r}; known kinds: '
                            f'{", ".join(SCENARIO_KINDS)}')
    rng = np.random.default_rng([int(seed), zlib.crc32(kind.encode())])
    g = _Gen(rng)
    road = RoadSpec(
        type='straight', num_lanes=int(rng.integers(1, 3)),
        lane_width_m=round(float(rng.uniform(3.3, 3.75)), 2),
        speed_limit_mps=float(rng.choice([11.1, 13.9, 16.7])),
        has_oncoming_lane=bool(rng.random() < 0.7),
        sidewalk_width_m=round(float(rng.uniform(2.0, 4.0)), 2),
        scenery_density=round(float(rng.uniform(0.6, 1.6)), 2))
    if rng.random() < 0.5:
        road.type = 'curve'
        road.curvature_1pm = round(float(rng.choice([-1, 1]) * rng.uniform(1 / 600, 1 / 200)), 5)
    ego = EgoSpec(speed_mps=round(road.speed_limit_mps * float(rng.uniform(0.75, 1.0)), 2), lane=0)
    agents = []
    v = ego.speed_mps

    if kind == 'car_following':
        road.num_lanes = int(rng.integers(1, 4))
        ego.lane = int(rng.integers(0, road.num_lanes))
        s_lead = float(rng.uniform(20, 40))
        agents.append(g.car('brake', ego.lane, s_lead, v * rng.uniform(0.9, 1.05), params={
            'brake_time_s': round(float(rng.uniform(2.5, max(3.0, 0.5 * duration_s))), 2),
            'decel_mps2': round(float(rng.uniform(3.0, 7.0)), 2),
            'stop_duration_s': round(float(rng.uniform(1.0, 4.0)), 2)}))
        if rng.random() < 0.5:
            agents.append(g.car('follow', ego.lane, s_lead + rng.uniform(20, 35), v * 1.05))
    elif kind == 'cut_in':
        road.num_lanes = int(rng.integers(2, 4))
        ego.lane = int(rng.integers(0, road.num_lanes))
        src = ego.lane + 1 if (ego.lane == 0 or (ego.lane < road.num_lanes - 1
                                                 and rng.random() < 0.5)) else ego.lane - 1
        agents.append(g.car('cut_in', src, rng.uniform(10, 22), v + rng.uniform(-0.5, 2.0), params={
            'cut_time_s': round(float(rng.uniform(1.0, 4.0)), 2), 'target_lane': ego.lane,
            'lane_change_s': round(float(rng.uniform(2.0, 4.0)), 2),
            'speed_after_mps': round(float(v * rng.uniform(0.6, 1.0)), 2)}))
    elif kind == 'pedestrian_crossing':
        s_ped = float(rng.uniform(50, 90))
        side = str(rng.choice(['right', 'left']))
        trigger = round(v * 2.2 + float(rng.uniform(8, 18)), 2)
        for k in range(int(rng.integers(1, 3))):
            agents.append(g.pedestrian('cross', s_ped + 1.2 * k, rng.uniform(1.1, 1.7),
                                       {'side': side, 'trigger_distance_m': trigger}))
    elif kind == 'occluded_pedestrian':
        road.num_lanes = 1
        s_car = float(rng.uniform(50, 80))
        agents.append(g.car('parked', 0, s_car, 0.0,
                            params={'d_offset_m': -(road.lane_width_m / 2 + 0.5)}))
        agents.append(g.pedestrian('cross', s_car + 3.0, rng.uniform(1.2, 1.8), {
            'side': 'right', 'trigger_distance_m': round(v * 2.0 + float(rng.uniform(6, 12)), 2)}))
    elif kind == 'parked_car':
        road.has_oncoming_lane = road.num_lanes == 1 or bool(rng.random() < 0.5)
        agents.append(g.car('parked', 0, rng.uniform(40, 80), 0.0,
                            params={'d_offset_m': round(float(rng.uniform(-0.4, 0.2)), 2)}))
    elif kind == 'intersection':
        road.type, road.curvature_1pm = 'intersection', 0.0
        road.has_oncoming_lane = True
        road.intersection_s_m = round(float(rng.uniform(50, 90)), 1)
        for _ in range(int(rng.integers(1, 5))):
            direction = int(rng.choice([-1, 1]))
            agents.append(g.car('cross_traffic', 0, rng.uniform(20, 110), rng.uniform(7, 12),
                                params={'direction': direction}))
    elif kind == 'cyclist':
        road.has_oncoming_lane = road.num_lanes == 1 or bool(rng.random() < 0.5)
        agents.append(g.agent('cyclist', 'follow', 0, rng.uniform(25, 60), rng.uniform(3.5, 6.0),
                              {'d_offset_m': -round(road.lane_width_m / 2 - 0.7, 2)}))
    elif kind == 'oncoming':
        road.num_lanes, road.has_oncoming_lane = 1, True
        s = float(rng.uniform(40, 80))
        for _ in range(int(rng.integers(2, 6))):
            agents.append(g.car('oncoming', 1, s, rng.uniform(8, 14)))
            s += float(rng.uniform(20, 60))
    elif kind == 'construction':
        road.has_oncoming_lane = road.num_lanes == 1 or bool(rng.random() < 0.5)
        s0 = float(rng.uniform(45, 75))
        w = road.lane_width_m
        taper = 12.0
        for k in range(5):  # taper from the right edge to the lane's left third
            agents.append(g.agent('cone', 'static', 0, s0 + k * taper / 4, 0.0,
                                  {'d_offset_m': round(-w / 2 + 0.3 + k * (w - 1.0) / 4, 2)}))
        length = float(rng.uniform(20, 40))
        for s in np.arange(s0 + taper + 4.0, s0 + taper + length, float(rng.uniform(3.5, 5.0))):
            agents.append(g.agent('cone', 'static', 0, s, 0.0,
                                  {'d_offset_m': round(w / 2 - 0.7, 2)}))

    _add_background(g, rng, road, ego, agents, kind)
    return ScenarioSpec(kind=kind, seed=int(seed), duration_s=float(duration_s), road=road, ego=ego,
                        agents=agents)


class _Gen:
    """Draws agent sizes and colours from the scenario rng."""

    def __init__(self, rng):
        self.rng = rng

    def agent(self, type_, behaviour, lane, s_m, speed_mps, params=None):
        rng = self.rng
        base = DEFAULT_SIZES_M[type_]
        if type_ == 'car':
            size = [rng.uniform(3.9, 5.0), rng.uniform(1.75, 2.0), rng.uniform(1.4, 1.75)]
            colour = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))]
        elif type_ == 'pedestrian':
            size = [rng.uniform(0.5, 0.7), rng.uniform(0.5, 0.7), rng.uniform(1.55, 1.9)]
            colour = SHIRT_COLOURS[int(rng.integers(len(SHIRT_COLOURS)))]
        elif type_ == 'cyclist':
            size = [rng.uniform(1.7, 1.9), 0.6, rng.uniform(1.6, 1.8)]
            colour = SHIRT_COLOURS[int(rng.integers(len(SHIRT_COLOURS)))]
        elif type_ == 'truck':
            size = [rng.uniform(6.5, 12.0), rng.uniform(2.4, 2.55), rng.uniform(3.0, 4.0)]
            colour = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))]
        elif type_ == 'bus':
            size = [rng.choice([rng.uniform(10.5, 12.5), rng.uniform(17.0, 18.0)]), 2.55,
                    rng.uniform(3.0, 3.4)]
            colour = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))]
        else:
            size, colour = list(base), (255, 110, 20)
        return AgentSpec(type=type_, behaviour=behaviour, lane=int(lane), s_m=round(float(s_m), 2),
                         speed_mps=round(float(speed_mps), 2), params=dict(params or {}),
                         size_m=[round(float(x), 2) for x in size], colour_rgb=list(colour))

    def car(self, behaviour, lane, s_m, speed_mps, params=None):
        return self.agent('car', behaviour, lane, s_m, speed_mps, params)

    def pedestrian(self, behaviour, s_m, speed_mps, params=None):
        return self.agent('pedestrian', behaviour, 0, s_m, speed_mps, params)


def add_large_vehicles(spec: ScenarioSpec, seed: int, count: int = 3) -> ScenarioSpec:
    """Trucks and buses added to a spec: parked at the kerb and, with an oncoming lane, oncoming.

    Drawn from their own stream (seed), so the rest of the spec is unchanged."""
    rng = np.random.default_rng([int(seed), zlib.crc32(b'large_vehicles')])
    g = _Gen(rng)
    w = spec.road.lane_width_m
    for _ in range(int(count)):
        type_ = 'truck' if rng.random() < 0.6 else 'bus'
        if spec.road.has_oncoming_lane and rng.random() < 0.5:
            agent = g.agent(type_, 'oncoming', spec.road.num_lanes, rng.uniform(50, 150),
                            rng.uniform(7, 11))
        else:
            s = float(rng.uniform(10, 140))
            if any(abs(a.s_m - s) < 15 for a in spec.agents):
                continue
            agent = g.agent(type_, 'parked', 0, s, 0.0, params={'d_offset_m': -(w / 2 + 1.4)})
        spec.agents.append(agent)
    return spec


def _add_background(g, rng, road, ego, agents, kind):
    """Traffic and clutter that does not block the ego: oncoming cars, faster cars in other
    lanes far ahead, cars parked on the kerb, people standing on the sidewalks."""
    w = road.lane_width_m
    if road.has_oncoming_lane and kind not in ('oncoming', 'parked_car', 'cyclist', 'construction'):
        s = float(rng.uniform(60, 150))
        for _ in range(int(rng.integers(0, 3))):
            agents.append(g.car('oncoming', road.num_lanes, s, rng.uniform(8, 13)))
            s += float(rng.uniform(40, 90))
    if kind in ('parked_car', 'cyclist', 'construction') and road.has_oncoming_lane:
        # they meet the ego around the obstacle: it waits for them, then passes
        s = float(rng.uniform(60, 160))
        for _ in range(int(rng.integers(0, 2))):
            agents.append(g.car('oncoming', road.num_lanes, s, rng.uniform(8, 12)))
            s += float(rng.uniform(60, 120))
    for lane in range(road.num_lanes):
        if lane in (ego.lane, ego.lane + 1) or kind in ('cut_in',):
            continue
        if rng.random() < 0.6:
            agents.append(g.car('follow', lane, rng.uniform(30, 60), road.speed_limit_mps))
    for _ in range(int(rng.integers(0, 4))):  # parked on the kerb, off the driving lanes
        s = float(rng.uniform(-20, 160))
        if any(abs(a.s_m - s) < 8 for a in agents):
            continue
        agents.append(g.car('parked', 0, s, 0.0, params={'d_offset_m': -(w / 2 + 0.9)}))
    for _ in range(int(rng.integers(0, 4))):  # standing on a sidewalk
        side = -1 if rng.random() < 0.5 else 1
        d = -(w / 2 + 1.8) if side < 0 else (road.num_lanes - 0.5 + road.has_oncoming_lane) * w + 1.8
        agents.append(g.pedestrian('static', rng.uniform(0, 150), 0.0,
                                   {'d_offset_m': round(d, 2)}))
