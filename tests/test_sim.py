"""Specification of the scenario simulator: specs, determinism, the expert ego, ground truth."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fmdrive.geometry import make_T, quat_to_rot
from fmdrive.sim import (SCENARIO_KINDS, AgentSpec, ScenarioError, ScenarioSpec, SimFrame,
                         Simulator, START_STAMP_NS, generate_scenario)

ROOT = Path(__file__).resolve().parent.parent
K_SMALL = np.array([[100.0, 0, 79.5], [0, 100.0, 44.5], [0, 0, 1]])   # 160 x 90


def _extrinsics():
    doc = yaml.safe_load((ROOT / 'calibration' / 'extrinsics.yaml').read_text())
    return {t['child_frame_id']: make_T(quat_to_rot(t['rotation_xyzw']), t['translation'])
            for t in doc['transforms']}


def small_sim(spec):
    """A cheap simulator: 160x90 camera, 16-beam LiDAR at 1 deg."""
    spec.lidar.beams, spec.lidar.h_res_deg = 16, 1.0
    ext = _extrinsics()
    return Simulator(spec, K_SMALL, 160, 90, ext['camera_optical'], ext['lidar'])


def frame_hash(frame: SimFrame) -> str:
    h = hashlib.sha256(frame.image_rgb.tobytes())
    h.update(frame.points_lidar.tobytes())
    h.update(json.dumps([o.to_dict() for o in frame.objects]).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- determinism
def test_same_seed_gives_identical_frames():
    hashes = []
    for _ in range(2):
        sim = small_sim(generate_scenario('cut_in', 5, duration_s=0.5))
        hashes.append([frame_hash(f) for f in sim.frames()])
    assert len(hashes[0]) == 5
    assert hashes[0] == hashes[1]


def test_different_seeds_give_different_frames_and_specs():
    a, b = generate_scenario('cut_in', 1), generate_scenario('cut_in', 2)
    assert a.to_dict() != b.to_dict()
    fa = next(iter(small_sim(generate_scenario('cut_in', 1, 0.2)).frames()))
    fb = next(iter(small_sim(generate_scenario('cut_in', 2, 0.2)).frames()))
    assert frame_hash(fa) != frame_hash(fb)


def test_seeds_vary_road_lanes_curvature_and_agent_counts():
    specs = [generate_scenario('car_following', s) for s in range(12)]
    assert len({s.road.num_lanes for s in specs}) > 1
    assert len({s.road.type for s in specs}) > 1
    assert len({len(s.agents) for s in specs}) > 1
    assert len({tuple(s.agents[0].colour_rgb) for s in specs}) > 1


# ---------------------------------------------------------------- kinds and specs
@pytest.mark.parametrize('kind', SCENARIO_KINDS)
def test_every_kind_generates_and_runs_a_few_frames(kind):
    sim = small_sim(generate_scenario(kind, 0, duration_s=0.5))
    frames = list(sim.frames())
    assert len(frames) == 5
    f = frames[-1]
    assert f.image_rgb.shape == (90, 160, 3) and f.image_rgb.dtype == np.uint8
    assert f.points_lidar.ndim == 2 and f.points_lidar.shape[1] == 5
    assert f.points_lidar.dtype == np.float32
    assert f.objects and all(o.label in ('car', 'pedestrian', 'cyclist', 'cone') for o in f.objects)
    assert f.lanes and any(lane.offset == 0 for lane in f.lanes)


def test_required_kinds_are_offered():
    for kind in ('car_following', 'cut_in', 'pedestrian_crossing', 'parked_car', 'intersection',
                 'cyclist'):
        assert kind in SCENARIO_KINDS


def test_unknown_kind_raises_scenario_error_listing_the_kinds():
    with pytest.raises(ScenarioError, match='car_following.*cut_in'):
        generate_scenario('moon_landing', 0)


def test_user_yaml_round_trips(tmp_path):
    spec = generate_scenario('intersection', 3, duration_s=12.0)
    spec.camera.fog, spec.lidar.beams = 0.3, 64
    path = tmp_path / 'mine.yaml'
    spec.to_yaml(path)
    again = ScenarioSpec.from_yaml(path)
    assert again == spec
    assert ScenarioSpec.from_dict(spec.to_dict()) == spec


def test_a_minimal_user_yaml_takes_defaults(tmp_path):
    path = tmp_path / 'min.yaml'
    path.write_text('kind: custom\nagents:\n  - {type: car, behaviour: parked, s_m: 40}\n')
    spec = ScenarioSpec.from_yaml(path)
    assert spec.road.lane_width_m == 3.5 and spec.lidar.beams == 32
    assert spec.agents == [AgentSpec(type='car', behaviour='parked', s_m=40.0)]


@pytest.mark.parametrize('text, key', [
    ('road: {num_lanse: 2}', 'road.num_lanse'),
    ('agents: [{type: car, behaviuor: follow}]', 'agents[0].behaviuor'),
    ('agents: [{type: car, behaviour: brake, params: {brake_tme_s: 2}}]',
     'agents[0].params.brake_tme_s'),
    ('lidar: {beams: 20}', 'lidar.beams'),
    ('camera: {fog: 3}', 'camera.fog'),
    ('road: {num_lanes: two}', 'road.num_lanes'),
    ('ego: {lane: 3}', 'ego.lane'),
    ('agents: [{type: tram}]', 'agents[0].type'),
    ('colour: red', 'colour'),
])
def test_bad_keys_and_values_raise_scenario_error_naming_the_key(tmp_path, text, key):
    path = tmp_path / 'bad.yaml'
    path.write_text(text + '\n')
    with pytest.raises(ScenarioError) as err:
        ScenarioSpec.from_yaml(path)
    assert key in str(err.value)
    assert isinstance(err.value, ValueError)


def test_example_user_scenarios_load_and_run():
    files = sorted((ROOT / 'scenarios').glob('*.yaml'))
    assert len(files) >= 2
    for path in files:
        spec = ScenarioSpec.from_yaml(path)
        spec.duration_s = 0.3
        assert len(list(small_sim(spec).frames())) == 3


# ---------------------------------------------------------------- the expert ego
@pytest.mark.parametrize('kind', SCENARIO_KINDS)
def test_ego_never_collides(kind):
    for seed in range(4):
        sim = small_sim(generate_scenario(kind, seed, duration_s=15.0))
        sim.drive()
        assert sim.collisions == [], f'{kind} seed {seed}: ego collided {sim.collisions[:3]}'


def test_ego_overtakes_a_parked_car_in_its_lane():
    passed = 0
    for seed in range(4):
        spec = generate_scenario('parked_car', seed, duration_s=20.0)
        sim = small_sim(spec)
        sim.drive()
        parked = sim.agents[0]
        assert parked.behaviour == 'parked'
        passed += sim.expert.s > parked.s + 10.0
    assert passed >= 2


def test_ego_waits_at_the_stop_line_for_crossing_traffic():
    spec = ScenarioSpec.from_dict({
        'road': {'type': 'intersection', 'intersection_s_m': 60.0, 'num_lanes': 1,
                 'scenery_density': 0.0},
        'ego': {'speed_mps': 10.0},
        'agents': [{'type': 'car', 'behaviour': 'cross_traffic', 's_m': 80.0, 'speed_mps': 10.0,
                    'params': {'direction': 1}}]})
    sim = small_sim(spec)
    odometry = sim.drive()
    speeds = np.array([e.speed_mps for _, e in odometry])
    assert speeds.min() < 3.0                     # it yielded ...
    assert sim.expert.s > 70.0                    # ... and crossed afterwards
    assert sim.collisions == []


def test_ego_yields_to_a_crossing_pedestrian():
    spec = ScenarioSpec.from_dict({
        'road': {'scenery_density': 0.0, 'num_lanes': 1},
        'ego': {'speed_mps': 10.0},
        'agents': [{'type': 'pedestrian', 'behaviour': 'cross', 's_m': 50.0, 'speed_mps': 0.8,
                    'params': {'side': 'right', 'trigger_distance_m': 35.0}}]})
    sim = small_sim(spec)
    odometry = sim.drive()
    assert min(e.speed_mps for _, e in odometry) < 5.0
    assert sim.collisions == []


# ---------------------------------------------------------------- frames and ground truth
def test_frames_are_stamped_at_10_hz_with_50_hz_odometry():
    frames = list(small_sim(generate_scenario('car_following', 0, duration_s=0.5)).frames())
    stamps = [f.stamp_ns for f in frames]
    assert stamps[0] == START_STAMP_NS == 1_700_000_000 * 10**9
    assert np.all(np.diff(stamps) == 100_000_000)
    assert len(frames[0].odometry) == 1
    for f in frames[1:]:
        assert len(f.odometry) == 5
        assert f.odometry[-1][0] == f.stamp_ns and f.odometry[-1][1] == f.ego


def test_ground_truth_ids_are_stable_and_json_serialisable():
    sim = small_sim(generate_scenario('cut_in', 2, duration_s=1.0))
    frames = list(sim.frames())
    gt = json.loads(json.dumps(sim.ground_truth()))
    assert gt['frame_rate_hz'] == 10 and gt['complete']
    assert gt['scenario'] == sim.spec.to_dict()
    assert len(gt['frames']) == len(frames) == 10
    ids = [sorted(o['id'] for o in fr['objects']) for fr in gt['frames']]
    assert all(i == ids[0] for i in ids) and len(set(ids[0])) == len(ids[0])
    # the same object moves smoothly between frames (ids are not shuffled)
    by_id = [{o['id']: np.array(o['center']) for o in fr['objects']} for fr in gt['frames']]
    for a, b in zip(by_id, by_id[1:]):
        assert all(np.linalg.norm(a[i][:2] - b[i][:2]) < 3.0 for i in a)
    first = gt['frames'][0]
    assert set(first['ego']) == {'x', 'y', 'yaw_rad', 'speed_mps', 'yaw_rate_rps'}
    obj = first['objects'][0]
    assert {'id', 'label', 'center', 'size', 'yaw_rad', 'velocity', 'num_lidar_points',
            'in_camera'} <= set(obj)


def test_lead_car_is_seen_by_both_sensors():
    spec = ScenarioSpec.from_dict({
        'road': {'scenery_density': 0.0}, 'ego': {'speed_mps': 0.0},
        'agents': [{'type': 'car', 'behaviour': 'parked', 's_m': 20.0}]})
    spec.duration_s = 0.1
    sim = small_sim(spec)
    frame = next(iter(sim.frames()))
    lead = frame.objects[0]
    assert frame.lidar_points_per_object[lead.id] > 10
    assert lead.box2d is not None
    u_c = (lead.box2d[0] + lead.box2d[2]) / 2
    assert abs(u_c - 79.5) < 10
    gt = sim.ground_truth()['frames'][0]['objects'][0]
    assert gt['in_camera'] and gt['num_lidar_points'] == frame.lidar_points_per_object[lead.id]


def test_object_velocity_is_over_ground_in_odom():
    spec = ScenarioSpec.from_dict({
        'road': {'scenery_density': 0.0, 'num_lanes': 2}, 'ego': {'speed_mps': 0.0},
        'agents': [{'type': 'car', 'behaviour': 'follow', 'lane': 1, 's_m': 20.0,
                    'speed_mps': 8.0}]})
    sim = small_sim(spec)
    frames = list(sim.frames())
    v = frames[1].objects[0].velocity
    assert v[0] == pytest.approx(8.0, abs=0.3) and abs(v[1]) < 0.1
    dx = frames[2].objects[0].center[0] - frames[1].objects[0].center[0]
    assert dx == pytest.approx(0.8, abs=0.05)


def test_lanes_are_in_base_link_around_the_ego():
    frame = next(iter(small_sim(generate_scenario('car_following', 4, 0.1)).frames()))
    ego_lane = next(lane for lane in frame.lanes if lane.offset == 0)
    ahead = ego_lane.centerline[ego_lane.centerline[:, 0] > 0]
    assert abs(ahead[0, 1]) < 0.2            # the ego drives on its lane centre
    assert np.all(np.diff(ego_lane.centerline[:, 0]) > 0)


def test_trucks_and_buses_are_ground_truth_cars_with_their_type_and_size():
    from fmdrive.sim.scenario import add_large_vehicles
    spec = generate_scenario('oncoming', seed=8, duration_s=0.3)
    add_large_vehicles(spec, seed=8, count=6)
    large = [a for a in spec.agents if a.type in ('truck', 'bus')]
    assert large and all(6.0 <= a.size_m[0] <= 18.0 for a in large)
    spec.road.vegetation_density = 1.0
    sim = small_sim(spec)
    frame = next(iter(sim.frames()))
    by_id = {o.id: o for o in frame.objects}
    for i, a in enumerate(spec.agents, start=1):
        if a.type in ('truck', 'bus'):
            assert by_id[i].label == 'car' and frame.object_types[i] == a.type
            assert by_id[i].size[0] == pytest.approx(a.size_m[0])
    gt = sim.ground_truth()['frames'][0]['objects']
    assert {o['type'] for o in gt} >= {a.type for a in large}
    assert sim.world.scenery.porous.any()                  # hedges and bushes were planted
