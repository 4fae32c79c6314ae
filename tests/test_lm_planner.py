"""The LM planner (fmdrive/planning/lm/lm_planner.py) behind the arbiter, and the safety filter's
kinematic checks the LM's plans face. The model is the tiny onnx.helper transformer of
test_lm_runtime.py with a tokenizer holding format.py's tokens; its head is biased to answer
"stand still" (every waypoint at the origin), so the same model gives a safe plan for a car at
rest and an unsafe one (braking from 10 m/s to 0 at once) for a moving car."""
from __future__ import annotations

import numpy as np
import pytest
from test_lm_runtime import tiny_causal_lm_onnx, write_lm_card

from fmdrive.objects import EgoState, Object3D, Scene
from fmdrive.planning.arbiter import Arbiter, load_primary
from fmdrive.planning.classical import ClassicalPlanner
from fmdrive.planning.lm import format as fmt
from fmdrive.planning.lm.lm_planner import LMPlanner, waypoints_to_plan
from fmdrive.planning.limits import VehicleLimits
from fmdrive.planning.protocol import Planner
from fmdrive.planning.safety import check_trajectory

pytest.importorskip('tokenizers')
SCENE_TEXT = 't=12.3s. Ego: 0.0 m/s, speed limit 13.9 m/s, lane 0 of 2. Objects: car #3 ahead in ego lane, 18.4 m.'


def make_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = sorted(set((fmt.HEADER + fmt.frame_text(SCENE_TEXT, 'none')).split()) - set(fmt.SPECIAL_TOKENS))
    vocab = {t: i for i, t in enumerate(fmt.SPECIAL_TOKENS + tuple(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=fmt.UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(fmt.SPECIAL_TOKENS))
    tok.save(str(path))
    return vocab


@pytest.fixture(scope='module')
def standing_model(tmp_path_factory):
    """A model dir whose LM always answers x = 0 m, y = 0 m (plus <eot>)."""
    d = tmp_path_factory.mktemp('planner_student')
    vocab = make_tokenizer(d / 'tokenizer.json')
    bias = np.zeros(len(vocab), np.float32)
    bias[vocab[fmt.X_TOKENS[20]]] = bias[vocab[fmt.Y_TOKENS[120]]] = 30.0   # 0.0 m in x and in y
    tiny_causal_lm_onnx(d / 'fp32.onnx', vocab=len(vocab), head_scale=0.01, head_bias=bias, max_pos=512)
    write_lm_card(d, {'fp32': 'fp32.onnx'}, vocab=len(vocab))
    return d


@pytest.fixture(scope='module')
def planner(standing_model):
    return LMPlanner.load(standing_model, 'int8', 'onnxruntime')


def scene(speed=0.0, x=10.0, y=-4.0, yaw=0.5, objects=()):
    return Scene(1_000_000_000, EgoState(x, y, yaw, speed), list(objects), [], 13.9, SCENE_TEXT)


def test_lm_planner_is_a_planner_with_source_llm(planner):
    assert isinstance(planner, Planner) and planner.source == 'llm'
    assert planner.precision == 'fp32'       # int8 asked, the card has none: fp32 runs


def test_plan_is_six_waypoints_in_odom_every_half_second(planner):
    s = scene()
    result = planner.plan(s, 'keep_lane')
    plan = result.plan
    np.testing.assert_allclose(plan.t_s, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    np.testing.assert_allclose(plan.poses[:, :2], [[10.0, -4.0]] * 6, atol=1e-9)   # standing, in odom
    np.testing.assert_allclose(plan.speeds_mps, 0.0)
    assert plan.source == 'llm' and result.debug['intent'] == 'keep_lane'
    assert len(result.debug['tokens']) == fmt.PLAN_TOKENS


def test_prompt_is_header_plus_frame_and_the_header_is_cached(planner, standing_model):
    planner.plan(scene(), 'none')
    result = planner.plan(scene(), 'pull_over')
    header, frame = planner.prompt_ids(scene(), 'pull_over')
    assert planner.prefix_cache and result.debug['prefix_hit']
    # the same scene text, another intent: only from the intent token on is prefilled (frame reuse)
    reused = result.debug['reused_frame_tokens']
    assert reused == len(frame) - 2 and result.debug['prefilled_tokens'] == 2     # <intent_...> <plan>
    header_only = LMPlanner.load(standing_model, 'int8', 'onnxruntime', frame_reuse=False)
    header_only.plan(scene(), 'none')
    r = header_only.plan(scene(), 'pull_over')
    assert r.debug['prefix_hit'] and r.debug['prefilled_tokens'] == len(frame) and len(header) > len(frame) / 2
    assert r.debug['tokens'] == result.debug['tokens']
    ids = planner.encode(fmt.prompt_text(SCENE_TEXT, 'pull_over'))
    assert header + frame == ids


def test_reset_forgets_the_last_frame_but_keeps_the_header_cache(standing_model):
    """A new drive (the closed loop's next scenario) reuses no KV and drafts no plan of the last one."""
    p = LMPlanner.load(standing_model, 'int8', 'onnxruntime')
    first = p.plan(scene(), 'none')
    again = p.plan(scene(), 'none')
    assert again.debug['reused_frame_tokens'] > 0 and again.debug['draft_tokens'] == fmt.PLAN_TOKENS - 1
    p.reset()
    fresh = p.plan(scene(), 'none')
    assert fresh.debug['prefix_hit'] and fresh.debug['reused_frame_tokens'] == 0 and fresh.debug['draft_tokens'] == 0
    assert fresh.debug['tokens'] == first.debug['tokens']


def test_waypoints_become_speeds_and_headings_a_safety_check_accepts():
    s = scene(speed=10.0, yaw=0.0, x=0.0, y=0.0)
    t = 0.5 * np.arange(1, 7)
    xy = np.c_[10.0 * t, np.zeros(6)]
    xy[:, 0] = np.round(xy[:, 0] / fmt.X_BIN_M) * fmt.X_BIN_M       # what the bins give back
    plan = waypoints_to_plan(s, xy)
    np.testing.assert_allclose(plan.speeds_mps, 10.0, atol=0.3)
    np.testing.assert_allclose(plan.poses[:, 2], 0.0, atol=1e-9)
    assert check_trajectory(plan.poses, plan.t_s, plan.speeds_mps, s).ok
    turn = waypoints_to_plan(s, np.c_[10.0 * t, 0.3 * t ** 2])      # drifting left: headings follow
    assert np.all(np.diff(turn.poses[:, 2]) > 0)


@pytest.fixture(scope='module')
def keep_going_model(tmp_path_factory):
    """A model dir whose card says plan_anchor constant_velocity and whose LM always answers 'no
    change' (x and y residual 0 m)."""
    d = tmp_path_factory.mktemp('planner_anchored')
    vocab = make_tokenizer(d / 'tokenizer.json')
    bias = np.zeros(len(vocab), np.float32)
    zero_x = int(round(-fmt.X_RESIDUAL_RANGE_M[0] / fmt.X_BIN_M))
    bias[vocab[fmt.X_TOKENS[zero_x]]] = bias[vocab[fmt.Y_TOKENS[120]]] = 30.0
    tiny_causal_lm_onnx(d / 'fp32.onnx', vocab=len(vocab), head_scale=0.01, head_bias=bias, max_pos=512)
    write_lm_card(d, {'fp32': 'fp32.onnx'}, vocab=len(vocab),
                  decoder_extra={'plan_anchor': 'constant_velocity', 'plan_order': 'goal_first'})
    return d


def test_anchored_card_reads_the_plan_relative_to_the_ego_rollout(keep_going_model):
    p = LMPlanner.load(keep_going_model, 'fp32', 'onnxruntime')
    assert p.describe()['plan_anchor'] == 'constant_velocity' and p.describe()['plan_order'] == 'goal_first'
    t = 0.5 * np.arange(1, 7)
    for speed in (0.0, 7.3, 12.0):
        r = p.plan(scene(speed=speed, yaw=0.0, x=0.0, y=0.0))
        np.testing.assert_allclose(r.debug['waypoints_base'], np.c_[speed * t, np.zeros(6)], atol=1e-6)
        np.testing.assert_allclose(r.plan.speeds_mps, speed, atol=0.05)
        assert check_trajectory(r.plan.poses, r.plan.t_s, r.plan.speeds_mps, scene(speed=speed, yaw=0.0, x=0.0,
                                                                                    y=0.0)).ok


@pytest.fixture(scope='module')
def keep_going_or_left_model(tmp_path_factory):
    """As keep_going_model, with one lane (3.5 m) to the left as its second choice for every y."""
    d = tmp_path_factory.mktemp('planner_left')
    vocab = make_tokenizer(d / 'tokenizer.json')
    bias = np.zeros(len(vocab), np.float32)
    zero_x = int(round(-fmt.X_RESIDUAL_RANGE_M[0] / fmt.X_BIN_M))
    bias[vocab[fmt.X_TOKENS[zero_x]]] = bias[vocab[fmt.Y_TOKENS[120]]] = 30.0
    bias[vocab[fmt.Y_TOKENS[155]]] = 29.0           # y = +3.5 m
    tiny_causal_lm_onnx(d / 'fp32.onnx', vocab=len(vocab), head_scale=0.01, head_bias=bias, max_pos=512)
    write_lm_card(d, {'fp32': 'fp32.onnx'}, vocab=len(vocab),
                  decoder_extra={'plan_anchor': 'constant_velocity', 'plan_order': 'goal_first'})
    return d


def test_the_collision_guard_steers_decoding_round_an_object_the_model_does_not_see(keep_going_or_left_model):
    """The text says nothing of the car standing 15 m ahead, so the model keeps going; the guard reads
    the scene's objects and, among the model's own likeliest coordinates, takes the lane to the left."""
    from fmdrive.planning.lm.guard import CollisionGuard
    car = Object3D(center=np.array([15.0, 0.0, 0.8]), size=np.array([4.5, 1.9, 1.6]), label='car', id=4)
    sc = scene(speed=10.0, yaw=0.0, x=0.0, y=0.0, objects=[car])
    blind = LMPlanner.load(keep_going_or_left_model, 'fp32', 'onnxruntime', guard=False).plan(sc)
    guarded = LMPlanner.load(keep_going_or_left_model, 'fp32', 'onnxruntime').plan(sc)
    p = LMPlanner.load(keep_going_or_left_model, 'fp32', 'onnxruntime')
    judge = CollisionGuard(sc, p.grammar, p.anchor(sc))
    assert not judge.plan_clear(blind.debug['waypoints_base'])
    assert judge.plan_clear(guarded.debug['waypoints_base'])
    assert guarded.debug['guard_redecoded'] and guarded.debug['guarded_tokens'] >= 1
    y = np.asarray(guarded.debug['waypoints_base'])[:, 1]
    assert set(np.round(y, 1)) <= {0.0, 3.5}, y          # only coordinates the model itself ranks first or second
    # nothing in the way: one decode, the model's own plan
    free = LMPlanner.load(keep_going_or_left_model, 'fp32', 'onnxruntime').plan(
        scene(speed=10.0, yaw=0.0, x=0.0, y=0.0))
    assert not free.debug['guard_redecoded'] and free.debug['guarded_tokens'] == 0
    np.testing.assert_allclose(free.debug['waypoints_base'], blind.debug['waypoints_base'])


def test_a_card_with_an_unknown_plan_anchor_or_order_is_refused_by_name(tmp_path, keep_going_model):
    import shutil

    import yaml

    from fmdrive.planning.lm.lm_planner import LMPlannerError
    d = tmp_path / 'bad_anchor'
    shutil.copytree(keep_going_model, d)
    card = yaml.safe_load((d / 'card.yaml').read_text())
    card['decoder']['plan_anchor'] = 'lane_centre'
    (d / 'card.yaml').write_text(yaml.safe_dump(card))
    with pytest.raises(LMPlannerError, match='plan_anchor'):
        LMPlanner.load(d, 'fp32', 'onnxruntime')
    card['decoder']['plan_anchor'] = 'constant_velocity'
    card['decoder']['plan_order'] = 'sideways'
    (d / 'card.yaml').write_text(yaml.safe_dump(card))
    with pytest.raises(LMPlannerError, match='plan_order'):
        LMPlanner.load(d, 'fp32', 'onnxruntime')


def test_a_card_with_the_compact_prompt_style_is_prompted_in_it_and_an_unknown_style_refused(
        tmp_path, keep_going_model):
    import shutil

    import yaml

    from fmdrive.planning.lm.lm_planner import LMPlannerError
    d = tmp_path / 'compact'
    shutil.copytree(keep_going_model, d)
    card = yaml.safe_load((d / 'card.yaml').read_text())
    card['decoder']['prompt_style'] = 'compact'
    (d / 'card.yaml').write_text(yaml.safe_dump(card))
    p = LMPlanner.load(d, 'fp32', 'onnxruntime')
    assert p.describe()['prompt_style'] == 'compact'
    assert LMPlanner.load(keep_going_model, 'fp32', 'onnxruntime').describe()['prompt_style'] == 'full'
    _, frame = p.prompt_ids(scene(), 'none')
    assert frame == p.encode(fmt.frame_text(SCENE_TEXT, 'none', 'compact')) != \
        p.encode(fmt.frame_text(SCENE_TEXT, 'none'))
    card['decoder']['prompt_style'] = 'haiku'
    (d / 'card.yaml').write_text(yaml.safe_dump(card))
    with pytest.raises(LMPlannerError, match='prompt_style'):
        LMPlanner.load(d, 'fp32', 'onnxruntime')


def test_arbiter_publishes_the_lm_plan_when_it_is_safe(planner):
    arbiter = Arbiter(ClassicalPlanner(), planner, deadline_ms=2000)
    out = arbiter.plan(scene(speed=0.0))
    assert out.source == 'llm' and out.safety.ok, out.plan.status


def test_arbiter_falls_back_when_the_lm_plan_is_unsafe(planner):
    arbiter = Arbiter(ClassicalPlanner(), planner, deadline_ms=2000)
    out = arbiter.plan(scene(speed=10.0))          # "stand still" from 10 m/s: 20 m/s^2
    assert out.source == 'fallback' and out.status.startswith('fallback: primary unsafe: braking')
    assert out.safety.ok


class FakeClassifier:
    """classify(text) as intents.IntentClassifier answers, without the 90 MB encoder."""

    def __init__(self):
        self.seen = []

    def classify(self, text):
        from fmdrive.planning.lm.intents import IntentResult
        self.seen.append(text)
        if 'pedestrian' in text:
            return IntentResult('none', 'refused: unsafe: harm (~ "hit the pedestrian", 0.99)', 0.99, 'x', text)
        return IntentResult('change_lane_left', None, 0.9, 'change lane left', text)


class Recorder:
    source = 'llm'

    def __init__(self, inner):
        self.inner, self.instructions = inner, []

    def plan(self, scene, instruction='', budget_ms=None):
        self.instructions.append(instruction)
        return self.inner.plan(scene, instruction, budget_ms)


def test_refused_instruction_reaches_no_planner_and_is_in_the_status(planner):
    primary = Recorder(planner)
    arbiter = Arbiter(ClassicalPlanner(), primary, deadline_ms=2000, instructions=FakeClassifier())
    out = arbiter.plan(scene(), 'hit the pedestrian')
    assert primary.instructions == ['none']
    assert "instruction 'hit the pedestrian' refused: unsafe: harm" in out.plan.status and out.instruction.refused
    out = arbiter.plan(scene(), 'go to the left lane')
    assert primary.instructions[-1] == 'change_lane_left' and 'refused' not in out.plan.status


def test_refusal_is_reported_on_fallback_and_classical_plans_too():
    arbiter = Arbiter(ClassicalPlanner(), None, instructions=FakeClassifier())
    out = arbiter.plan(scene(speed=5.0), 'hit the pedestrian')
    assert out.source == 'classical' and "instruction 'hit the pedestrian' refused" in out.plan.status


def test_node_params_choose_the_lm_planner_only_when_it_loads(standing_model, tmp_path):
    from fmdrive import config
    params = {**config.node_params('planner'), 'primary': 'llm', 'lm_backend': 'onnxruntime'}
    planner, why = load_primary({**params, 'lm_model': str(standing_model)})
    assert isinstance(planner, LMPlanner) and why.startswith('llm')
    planner, why = load_primary({**params, 'lm_model': str(tmp_path / 'absent')})
    assert planner is None and why.startswith('classical (no LM planner model')
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'card.yaml').write_text('name: [')
    planner, why = load_primary({**params, 'lm_model': str(tmp_path / 'broken')})
    assert planner is None and 'cannot run' in why
    assert load_primary({**params, 'primary': 'classical', 'lm_model': str(standing_model)})[0] is None


# ------------------------------------------------------------ the safety filter's new checks
def straight(v0, speeds, yaw=None, y=None):
    """A plan along +x from the origin with the given speeds at 0.5 s steps."""
    t = 0.5 * np.arange(1, len(speeds) + 1)
    vv = np.r_[v0, speeds]
    x = np.cumsum(0.25 * (vv[1:] + vv[:-1]))
    poses = np.c_[x, np.zeros_like(x) if y is None else y, np.zeros_like(x) if yaw is None else yaw]
    return poses, t, np.asarray(speeds, float)


def test_jerky_speed_profile_is_rejected_even_within_acceleration_limits():
    s = scene(speed=8.0, x=0.0, y=0.0, yaw=0.0)
    poses, t, v = straight(8.0, [9.0, 6.5, 7.5, 5.0, 6.0, 3.5])     # +2, -5, +2, -5 m/s^2 every 0.5 s
    report = check_trajectory(poses, t, v, s)
    assert not report.ok and any(r.startswith('jerk') for r in report.reasons), report.reasons
    poses, t, v = straight(8.0, [8.5, 9.0, 9.5, 10.0, 10.5, 11.0])
    assert check_trajectory(poses, t, v, s).ok


def test_a_turn_tighter_than_the_car_can_is_rejected():
    s = scene(speed=1.5, x=0.0, y=0.0, yaw=0.0)
    t = 0.5 * np.arange(1, 7)
    # 1.5 m/s around a 2 m radius: lateral acceleration ~1.1 m/s^2 is fine, the radius is not
    ang = 1.5 * t / 2.0
    poses = np.c_[2.0 * np.sin(ang), 2.0 * (1 - np.cos(ang)), ang]
    report = check_trajectory(poses, t, np.full(6, 1.5), s, VehicleLimits(max_lat_accel_mps2=3.0))
    assert any(r.startswith('curvature') for r in report.reasons), report.reasons


def test_lm_plan_through_a_predicted_object_is_rejected(planner):
    parked = Object3D(center=[12.0, -4.0 + 0.0, 0.8], size=[4.5, 1.9, 1.6], label='car', id=7)
    s = scene(speed=0.0, x=0.0, y=0.0, yaw=0.0, objects=[parked])
    ahead = waypoints_to_plan(s, np.c_[np.linspace(2, 14, 6) * 1.0, np.zeros(6)] + [[0, -4.0]])
    report = check_trajectory(ahead.poses, ahead.t_s, ahead.speeds_mps, s)
    assert any(r.startswith('collision') for r in report.reasons), report.reasons


# ------------------------------------------------------------ the eval's scenes and collisions
def bench_module():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / 'benchmarks' / 'planner.py'
    spec = importlib.util.spec_from_file_location('bench_planner', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_scene_of_a_sample_has_its_objects_moving_and_collisions_are_counted_on_their_futures():
    from fmdrive.planning.limits import VehicleLimits
    b = bench_module()
    t = 0.5 * np.arange(1, 7)
    crossing = {'id': 5, 'label': 'pedestrian', 'size': [0.6, 0.6], 'now': [15.0, 3.0, -np.pi / 2],
                'future': [[15.0, 3.0 - 1.0 * k, -np.pi / 2] for k in t]}       # walks right at 1 m/s
    sample = {'objects': [crossing], 'ego_speed_mps': 5.0, 'ego_yaw_rate_rps': 0.0, 'speed_limit_mps': 13.9,
              'scene_text': SCENE_TEXT, 'waypoints': np.c_[5.0 * t, np.zeros(6)].tolist()}
    scene = b.sample_scene(sample)
    np.testing.assert_allclose(scene.objects[0].velocity, [0.0, -1.0, 0.0], atol=1e-9)
    assert scene.ego.speed_mps == 5.0 and scene.text == SCENE_TEXT
    lim = VehicleLimits()
    assert b._collides(sample, np.c_[5.0 * t, np.zeros(6)], lim)        # at 15 m when the pedestrian is there
    assert not b._collides(sample, np.c_[2.0 * t, np.zeros(6)], lim)    # slow: stays short of it
    scores = b._scores([sample], [np.c_[5.0 * t, np.full(6, 1.0)]], lim)
    assert scores['l2_3s'] == 1.0 and scores['collision_rate'] == 1.0
    assert scene.lanes == []                                             # no lanes given: none made up
    x = np.arange(-10.0, 60.0, 2.0)
    sample['lanes'] = [{'offset': 0, 'width_m': 3.5, 'centerline': np.c_[x, np.zeros_like(x)].tolist()},
                       {'offset': 1, 'width_m': 3.5, 'centerline': np.c_[x, np.full_like(x, 3.5)].tolist()}]
    lanes = b.sample_scene(sample).lanes
    assert [(ln.offset, ln.width_m) for ln in lanes] == [(0, 3.5), (1, 3.5)]
    assert lanes[1].centerline.shape == (len(x), 3) and np.allclose(lanes[1].centerline[:, 1], 3.5)


def test_on_tensorrt_the_planner_runs_fp16_when_the_card_has_no_tensorrt_int8(standing_model, monkeypatch):
    from test_lm_runtime import install_fake_tensorrt
    install_fake_tensorrt(monkeypatch, '10.3.0')
    planner = LMPlanner.load(standing_model, 'int8', 'auto')       # auto: the (fake) GPU is here
    assert planner.precision == 'fp16' and planner.describe()['backend'] == 'tensorrt'
    plan = planner.plan(scene(), 'none').plan
    np.testing.assert_allclose(plan.poses[:, :2], [[10.0, -4.0]] * 6, atol=1e-9)
