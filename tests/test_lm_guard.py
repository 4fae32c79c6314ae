"""Collision-aware decoding (planning/lm/guard.py, runtime.guarded_argmax): numpy only, no model."""
import numpy as np
import pytest

from fmdrive.objects import EgoState, Object3D, Scene
from fmdrive.planning.lm import format as fmt
from fmdrive.planning.lm.guard import TOP, CollisionGuard
from fmdrive.planning.lm.runtime import guarded_argmax


@pytest.fixture(scope='module')
def grammar():
    vocab = {t: i for i, t in enumerate(fmt.SPECIAL_TOKENS)}
    return fmt.TrajectoryGrammar(vocab, 'forward')


def stopped_car_ahead(x_m: float = 15.0) -> Scene:
    """The ego at 10 m/s on a straight road (no lanes: the assumed lane), a car standing in its lane."""
    car = Object3D(center=np.array([x_m, 0.0, 0.8]), size=np.array([4.5, 1.9, 1.6]), label='car', id=7)
    return Scene(0, EgoState(speed_mps=10.0), [car], [], 13.9)


def x_token(grammar, waypoint, x, anchor=None):
    xs, _ = grammar.coordinates(waypoint, anchor)
    return int(grammar.x_ids[int(np.argmin(np.abs(xs - x)))])


def y_token(grammar, waypoint, y, anchor=None):
    _, ys = grammar.coordinates(waypoint, anchor)
    return int(grammar.y_ids[int(np.argmin(np.abs(ys - y)))])


def test_guarded_argmax_takes_the_most_likely_id_the_guard_accepts():
    logits = np.array([0.0, 5.0, 4.0, 3.0, 2.0])
    allowed = np.array([1, 2, 3, 4])
    assert guarded_argmax(logits, allowed, lambda c: np.ones(len(c), bool)) == (1, False)
    assert guarded_argmax(logits, allowed, lambda c: np.isin(c, [3, 4])) == (3, True)
    # nothing acceptable among the offered candidates: the model's own choice stands
    assert guarded_argmax(logits, allowed, lambda c: np.zeros(len(c), bool)) == (1, False)
    assert guarded_argmax(logits, allowed, lambda c: c == 4, candidates=2) == (1, False)


def test_the_guard_refuses_coordinates_that_put_the_ego_onto_a_standing_car(grammar):
    guard = CollisionGuard(stopped_car_ahead(15.0), grammar)
    # waypoint 1 (1.0 s): 13 m along puts the footprint onto the car wherever the y position would look
    # (about the likely y, here straight on); 6 m stops short of it
    into, short = x_token(grammar, 1, 13.0), x_token(grammar, 1, 6.0)
    assert list(guard.free(2, [x_token(grammar, 0, 5.0), y_token(grammar, 0, 0.0)], [into, short])) == [0, TOP]
    # a waypoint cannot jump past the car either: 25 m at 1.0 s is beyond it, but halfway there is in it
    past = x_token(grammar, 1, 25.0)
    assert list(guard.free(2, [x_token(grammar, 0, 5.0), y_token(grammar, 0, 0.0)], [past])) == [0]
    # once the model has put waypoint 0 a lane over, 13 m along that lane is clear
    left = [x_token(grammar, 0, 5.0), y_token(grammar, 0, 3.5)]
    assert list(guard.free(2, left, [into])) == [TOP]
    # with the x fixed at 13 m, y = 0 meets the car, 3.5 m to the side does not
    tokens = left + [into]
    assert list(guard.free(3, tokens, [y_token(grammar, 1, 0.0), y_token(grammar, 1, 3.5)])) == [0, TOP]


def test_plan_clear_judges_a_whole_plan_by_the_same_rule(grammar):
    guard = CollisionGuard(stopped_car_ahead(15.0), grammar)
    t = fmt.DT_S * np.arange(1, 7)
    through = np.c_[10.0 * t, np.zeros(6)]                     # 30 m straight on: through the car
    stopping = np.c_[np.minimum(10.0 * t - 1.5 * t ** 2, 8.0), np.zeros(6)]
    assert not guard.plan_clear(through)
    assert guard.plan_clear(stopping)
    empty = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [], [], 13.9), grammar)
    assert empty.plan_clear(through)


def test_a_follower_behind_and_the_present_do_not_count(grammar):
    """A car close behind in the ego lane is the follower's business (as in the safety filter)."""
    follower = Object3D(center=np.array([-6.0, 0.0, 0.8]), size=np.array([4.5, 1.9, 1.6]), label='car', id=3,
                        velocity=np.array([12.0, 0.0, 0.0]))
    guard = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [follower], [], 13.9), grammar)
    t = fmt.DT_S * np.arange(1, 7)
    assert guard.plan_clear(np.c_[10.0 * t, np.zeros(6)])


@pytest.mark.parametrize('order', sorted(fmt.PLAN_ORDERS))
def test_the_guards_coordinates_are_the_ones_waypoints_reads(order):
    vocab = {t: i for i, t in enumerate(fmt.SPECIAL_TOKENS)}
    g = fmt.TrajectoryGrammar(vocab, order)
    anchor = fmt.anchor_waypoints(8.0, 0.1)
    rng = np.random.default_rng(0)
    tokens = []
    for step in range(2 * fmt.TRAJECTORY_STEPS):
        ids = g.allowed_ids(step)
        tokens.append(int(ids[rng.integers(len(ids))]))
    xy = g.waypoints(tokens, anchor)
    for step in range(0, 2 * fmt.TRAJECTORY_STEPS, 2):
        k = g.waypoint_of_step(step)
        xs, ys = g.coordinates(k, anchor)
        assert np.isclose(xs[g.bin_of(tokens[step])], xy[k, 0]) and np.isclose(ys[g.bin_of(tokens[step + 1])], xy[k, 1])


def lead(acceleration, x_m: float = 20.0):
    """A car ahead in the ego lane at 10 m/s with the tracked acceleration given."""
    return Object3D(center=np.array([x_m, 0.0, 0.8]), size=np.array([4.5, 1.9, 1.6]), label='car', id=5,
                    velocity=np.array([10.0, 0.0, 0.0]), acceleration=np.array(acceleration))


def hypotheses(guard, object_id):
    """Where the guard's hypotheses put object `object_id` at 3 s (x, sorted)."""
    rows = np.flatnonzero(np.asarray(guard.pred.ids) == object_id)
    return sorted(round(float(guard.pred.center_xy[r, -1, 0]), 6) for r in rows)


def test_a_lead_that_brakes_is_predicted_stopping_and_a_plan_that_keeps_its_speed_is_not_clear(grammar):
    braking = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [lead([-4.0, 0.0, 0.0])], [], 13.9), grammar)
    # constant velocity (30 m on at 3 s) and the tracked braking: 10 m/s at 4 m/s^2 stops after 12.5 m
    # (it already brakes harder than the hypothesis of a lead starting to brake, which it replaces)
    assert hypotheses(braking, 5) == [32.5, 50.0]
    t = fmt.DT_S * np.arange(1, 7)
    keep_speed = np.c_[10.0 * t, np.zeros(6)]
    assert not braking.plan_clear(keep_speed)


def test_a_steady_lead_may_start_braking_and_a_plan_too_close_behind_it_is_not_clear(grammar):
    far = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [lead([0.0, 0.0, 0.0], 20.0)], [], 13.9), grammar)
    # constant velocity, and braking at LEAD_BRAKE_MPS2 = 3 from now: 30 - 13.5 m on at 3 s
    assert hypotheses(far, 5) == [36.5, 50.0]
    t = fmt.DT_S * np.arange(1, 7)
    keep_speed = np.c_[10.0 * t, np.zeros(6)]
    assert far.plan_clear(keep_speed)            # 20 m behind (about 1.4 s): clear even if it brakes
    near = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [lead([0.0, 0.0, 0.0], 12.0)], [], 13.9), grammar)
    assert not near.plan_clear(keep_speed)       # 12 m behind at the same speed: not if it brakes
    # braking too gently to matter is constant velocity and the hypothesis
    gentle = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [lead([-0.5, 0.0, 0.0])], [], 13.9), grammar)
    assert hypotheses(gentle, 5) == [36.5, 50.0]


def crossing_car(y_m: float, yaw_rad: float, x_m: float = 12.0, label: str = 'car') -> Object3D:
    """A vehicle standing at (x_m, y_m) with the heading given."""
    return Object3D(center=np.array([x_m, y_m, 0.8]), size=np.array([4.5, 1.9, 1.6]), yaw_rad=yaw_rad,
                    label=label, id=9, velocity=np.zeros(3))


def test_a_vehicle_standing_across_the_way_may_set_off_and_the_plan_must_let_it(grammar):
    t = fmt.DT_S * np.arange(1, 7)
    slow_on = np.c_[4.0 * t, np.zeros(6)]                       # 12 m in 3 s: across its path at 12 m
    waiting = CollisionGuard(Scene(0, EgoState(speed_mps=4.0), [crossing_car(6.0, -np.pi / 2)], [], 13.9), grammar)
    # standing (constant velocity) and setting off at START_MPS2 = 1.5 along its heading: 6.75 m at 3 s
    rows = np.flatnonzero(np.asarray(waiting.pred.ids) == 9)
    assert sorted(np.round(waiting.pred.center_xy[rows, -1, 1], 6).tolist()) == [-0.75, 6.0]
    assert not waiting.plan_clear(slow_on)
    stop_short = np.c_[np.minimum(4.0 * t, 6.0), np.zeros(6)]
    assert waiting.plan_clear(stop_short)
    # parked along the road, headed away from the ego's way, or a pedestrian: standing only
    for other in (crossing_car(6.0, 0.0), crossing_car(6.0, np.pi / 2), crossing_car(6.0, -np.pi / 2, label='pedestrian')):
        guard = CollisionGuard(Scene(0, EgoState(speed_mps=4.0), [other], [], 13.9), grammar)
        assert len(guard.pred) == 1 and guard.plan_clear(slow_on)


def test_a_goal_decoded_first_cannot_jump_past_a_standing_car(grammar):
    goal_first = fmt.TrajectoryGrammar({t: i for i, t in enumerate(fmt.SPECIAL_TOKENS)}, 'goal_first')
    guard = CollisionGuard(stopped_car_ahead(22.0), goal_first)
    # at 3 s, 30 m along is past the car (the footprint there is clear of it), but the way there from
    # the ego at 10 m/s meets it; 15 m (braking) stays short
    past, short = x_token(goal_first, 5, 30.0), x_token(goal_first, 5, 15.0)
    assert list(guard.free(0, [], [past, short])) == [0, TOP]
    # a lane over, the way there is clear
    assert list(guard.free(1, [past], [y_token(goal_first, 5, 0.0), y_token(goal_first, 5, 3.5)])) == [0, TOP]


def test_guarded_argmax_offers_candidates_in_chunks_in_the_models_order():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=400)
    allowed = np.arange(20, 400)
    order = allowed[np.argsort(-logits[allowed], kind='stable')]
    offered = []

    def only(target):
        def accept(c):
            offered.append(len(c))
            return c == target
        return accept
    # the 100th most likely is the first accepted: found without offering the rest
    assert guarded_argmax(logits, allowed, only(order[99])) == (int(order[99]), True)
    assert offered == [1, 15, 60, 240] and sum(offered[:-1]) < 100 <= sum(offered)
    offered.clear()
    assert guarded_argmax(logits, allowed, only(-1)) == (int(order[0]), False)     # none: the model's choice
    assert sum(offered) == allowed.size


def test_an_x_that_keeps_the_line_comes_before_one_that_needs_a_swerve(grammar):
    """A car standing half in the ego lane (its edge about at the centre line) 15 m ahead: 11 m along
    at 1.0 s is clear only 1.2 m to the right (level 1, the y would swerve), 6 m is clear on the line
    (TOP); the decoder takes the 6 m even though the model ranks 11 m first."""
    car = Object3D(center=np.array([15.0, 1.0, 0.8]), size=np.array([4.5, 1.9, 1.6]), label='car', id=7)
    guard = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [car], [], 13.9), grammar)
    before = [x_token(grammar, 0, 5.0), y_token(grammar, 0, 0.0)]
    swerve, keep = x_token(grammar, 1, 11.0), x_token(grammar, 1, 6.0)
    assert list(guard.free(2, before, [swerve, keep])) == [1, TOP]
    logits = np.zeros(max(swerve, keep) + 1)
    logits[swerve], logits[keep] = 2.0, 1.0
    accept = lambda c: guard.free(2, before, c)        # noqa: E731
    assert guarded_argmax(logits, np.array([swerve, keep]), accept, top=TOP) == (keep, True)
    # nothing keeps the line: the swerve, the model's first choice among those clear at all
    assert guarded_argmax(logits, np.array([swerve]), accept, top=TOP) == (swerve, False)


def test_guarded_argmax_takes_the_highest_level_in_the_models_order():
    logits = np.array([0.0, 5.0, 4.0, 3.0, 2.0])
    allowed = np.array([1, 2, 3, 4])
    levels = {1: 0, 2: 1, 3: 2, 4: 2}
    accept = lambda c: np.array([levels[int(i)] for i in c])       # noqa: E731
    assert guarded_argmax(logits, allowed, accept, top=2) == (3, True)
    assert guarded_argmax(logits, allowed, accept, top=1) == (2, True)


def test_two_objects_with_one_track_id_get_no_braking_or_setting_off_hypothesis(grammar):
    # which of the two moves how is unknown: each keeps its own constant-velocity (here standing) path
    a, b = crossing_car(6.0, -np.pi / 2), crossing_car(6.0, -np.pi / 2)
    b.center = np.array([6.0, -8.0, 0.8])
    guard = CollisionGuard(Scene(0, EgoState(speed_mps=4.0), [a, b], [], 13.9), grammar)
    assert len(guard.pred) == 2
    alone = CollisionGuard(Scene(0, EgoState(speed_mps=4.0), [a], [], 13.9), grammar)
    assert len(alone.pred) == 2                                   # standing + setting off
