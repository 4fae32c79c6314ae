"""The planner LM's dataset (sim/planning_dataset.py): expert intents, samples, shards."""
import json
import re

import numpy as np
import pytest

from fmdrive.planning.lm import format as fmt
from fmdrive.sim import planning_dataset as pd
from fmdrive.sim.agents import road_objects
from fmdrive.sim.scenario import EgoSpec, RoadSpec, ScenarioSpec
from fmdrive.sim.world import World


def _drive(intent, seconds=8.0, lanes=2, speed=12.0):
    """An empty straight road; the ego follows `intent` from t = 0. Returns (expert, world)."""
    spec = ScenarioSpec(road=RoadSpec(num_lanes=lanes, speed_limit_mps=13.9), ego=EgoSpec(speed_mps=speed))
    world = World(spec.road, np.random.default_rng(0), (-80.0, 400.0))
    expert = pd.IntentExpert(world, spec, intent, 0.0)
    dt = 1.0 / pd.ODOM_HZ
    for k in range(int(seconds * pd.ODOM_HZ)):
        expert.step(dt, k * dt, road_objects([], world, world.main))
    return expert, world


def test_change_lane_left_ends_in_the_left_lane():
    expert, world = _drive('change_lane_left')
    assert abs(expert.d - world.lane_center_d(1)) < 0.3


def test_change_lane_left_without_a_left_lane_keeps_the_lane():
    expert, world = _drive('change_lane_left', lanes=1)
    assert abs(expert.d - world.lane_center_d(0)) < 0.3


def test_pull_over_stops_right_of_the_lane_centre():
    expert, world = _drive('pull_over', seconds=15.0)
    assert expert.v < 0.2
    assert expert.d < world.lane_center_d(0) - 0.3


def test_slow_down_drives_slower_than_no_intent():
    slow, _ = _drive('slow_down')
    plain, _ = _drive('none')
    assert slow.v < 0.75 * plain.v


def test_samples_are_deterministic_and_waypoints_follow_the_ego_speed():
    a = pd.simulate_scenario(3, 0)
    b = pd.simulate_scenario(3, 0)
    assert a == b and len(a) > 10
    for s in a:
        wp = np.array(s['waypoints'])
        assert wp.shape == (fmt.TRAJECTORY_STEPS, 2)
        assert abs(wp[0, 0] - s['ego_speed_mps'] * fmt.DT_S) < 2.5      # within 0.5 s of braking
        assert s['intent'] in fmt.INTENTS and s['split'] == pd.split_of(3)
        assert len(s['objects'][0]['future']) == fmt.TRAJECTORY_STEPS if s['objects'] else True
        fmt.prompt_text(s['scene_text'], s['intent'])                  # a valid prompt
        for o in s['objects']:             # the slope the text's "braking at" is said from (the guard reads it)
            assert len(o['acceleration']) == 2 and np.all(np.isfinite(o['acceleration']))
    braking = [o for s in a for o in s['objects'] if o['acceleration'][0] < -0.8]
    assert not braking or any('braking at' in s['scene_text'] for s in a)


def test_samples_with_lanes_carry_the_road_the_text_describes_and_are_otherwise_the_same():
    """Benchmarks re-simulate samples with their lanes (the planner and safety filter need the road);
    the lanes draw no random numbers, so the samples are those of the dataset."""
    plain = pd.simulate_scenario(3, 0)
    rows = pd.simulate_scenario(3, 0, with_lanes=True)
    assert [{k: v for k, v in r.items() if k != 'lanes'} for r in rows] == plain
    for r in rows:
        offsets = sorted(ln['offset'] for ln in r['lanes'])
        assert 0 in offsets and offsets == list(range(offsets[0], offsets[0] + len(offsets)))
        ego_lane = next(ln for ln in r['lanes'] if ln['offset'] == 0)
        line = np.asarray(ego_lane['centerline'])
        assert line.shape[1] == 2 and line[0, 0] < 0 < line[-1, 0]            # from behind the car to ahead
        assert abs(np.interp(0.0, line[:, 0], line[:, 1])) < ego_lane['width_m']   # the car is on it
        m = re.search(r'in lane (\d+) of (\d+)', r['scene_text'])
        assert m and int(m.group(2)) <= len(r['lanes'])


def test_some_scenarios_start_from_standstill_and_the_expert_drives_off():
    """A student trained without standing starts crept after a stop in closed loop."""
    standing = [i for i in range(40) if pd.standing_start(i, 0, 0.2)]
    assert 3 <= len(standing) <= 16 and not any(pd.standing_start(i, 0, 0.0) for i in range(40))
    rows = pd.simulate_scenario(standing[0], 0, 0.2)
    assert all(r['standing_start'] for r in rows)
    first = min(rows, key=lambda r: r['t_s'])
    assert first['t_s'] <= pd.SAMPLE_EVERY_S and first['ego_speed_mps'] < 0.5
    assert np.hypot(*first['waypoints'][-1]) > 3.0      # moving off within 3 s
    # the closed loop's scenarios are drawn as before: the standing start is the dataset's alone
    from fmdrive.sim.closed_loop import expert_run
    assert expert_run(standing[0], 0)['speeds'][0][1] > 1.0
    assert not any(r['standing_start'] for r in pd.simulate_scenario(standing[0], 0))   # the default: none


def test_splits_are_by_scenario():
    assert [pd.split_of(i) for i in range(10)].count('train') == 8
    assert pd.split_of(8) == 'val' and pd.split_of(19) == 'test'


def test_dataset_resumes_from_its_shards_and_refuses_another_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(pd, 'SHARD_SCENARIOS', 1)
    monkeypatch.setattr(pd, 'simulate_scenario', lambda i, seed, share: [{'split': pd.split_of(i), 'i': i}] * 3)
    r = pd.write_planning_dataset(tmp_path, samples=5, seed=4, progress=False)
    assert r['samples'] == 6 and r['shards'] == 2
    first = (tmp_path / 'shard_00000.jsonl').stat().st_mtime_ns
    monkeypatch.setattr(pd, 'simulate_scenario', lambda i, seed, share: pytest.fail('shard recomputed'))
    assert pd.write_planning_dataset(tmp_path, samples=5, seed=4, progress=False)['samples'] == 6
    assert (tmp_path / 'shard_00000.jsonl').stat().st_mtime_ns == first
    assert json.loads((tmp_path / 'meta.json').read_text())['seed'] == 4
    with pytest.raises(pd.DatasetError, match='seed 4'):
        pd.write_planning_dataset(tmp_path, samples=5, seed=5, progress=False)
    with pytest.raises(pd.DatasetError, match='standing-start 0'):
        pd.write_planning_dataset(tmp_path, samples=5, seed=4, progress=False, standing_start=0.2)
    with pytest.raises(pd.DatasetError, match=r'\[0, 1\]'):
        pd.write_planning_dataset(tmp_path / 'x', samples=5, seed=4, progress=False, standing_start=1.5)


def test_ground_truth_acceleration_is_the_slope_of_the_last_second_of_velocities():
    from fmdrive.objects import Object3D

    def lead(v):
        return Object3D([20.0, 0.0, 0.8], [4.5, 1.9, 1.5], label='car', id=3, velocity=[v, 0.0, 0.0])
    # braking at 2 m/s^2 over the last second, steady before (outside the window)
    history = [(t, [lead(10.0 if t < 1.0 else 10.0 - 2.0 * (t - 1.0))]) for t in np.arange(0.0, 2.01, 0.25)]
    out = pd.with_accelerations(history)
    assert out[0].acceleration == pytest.approx([-2.0, 0.0, 0.0])
    assert out[0].velocity[0] == pytest.approx(8.0) and out[0].id == 3
    assert not pd.with_accelerations(history[-1:])[0].acceleration.any()    # seen once: nothing to say


def test_samples_say_when_a_lead_brakes():
    texts = [s['scene_text'] for k in (9, 19, 29) for s in pd.simulate_scenario(k, 0)]
    assert any('braking at' in t for t in texts)
    assert sum('braking at' in t for t in texts) < 0.5 * len(texts)
