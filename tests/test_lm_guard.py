"""Collision-aware decoding (planning/lm/guard.py, runtime.guarded_argmax): numpy only, no model."""
import numpy as np
import pytest

from fmdrive.objects import EgoState, Object3D, Scene
from fmdrive.planning.lm import format as fmt
from fmdrive.planning.lm.guard import CollisionGuard
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
    assert list(guard.free(2, [x_token(grammar, 0, 5.0), y_token(grammar, 0, 0.0)], [into, short])) == [False, True]
    # a waypoint cannot jump past the car either: 25 m at 1.0 s is beyond it, but halfway there is in it
    past = x_token(grammar, 1, 25.0)
    assert list(guard.free(2, [x_token(grammar, 0, 5.0), y_token(grammar, 0, 0.0)], [past])) == [False]
    # once the model has put waypoint 0 a lane over, 13 m along that lane is clear
    left = [x_token(grammar, 0, 5.0), y_token(grammar, 0, 3.5)]
    assert list(guard.free(2, left, [into])) == [True]
    # with the x fixed at 13 m, y = 0 meets the car, 3.5 m to the side does not
    tokens = left + [into]
    assert list(guard.free(3, tokens, [y_token(grammar, 1, 0.0), y_token(grammar, 1, 3.5)])) == [False, True]


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


def test_a_lead_that_brakes_is_predicted_stopping_and_a_plan_that_keeps_its_speed_is_not_clear(grammar):
    def lead(acceleration):
        return Object3D(center=np.array([20.0, 0.0, 0.8]), size=np.array([4.5, 1.9, 1.6]), label='car', id=5,
                        velocity=np.array([10.0, 0.0, 0.0]), acceleration=np.array(acceleration))
    braking = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [lead([-4.0, 0.0, 0.0])], [], 13.9), grammar)
    steady = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [lead([0.0, 0.0, 0.0])], [], 13.9), grammar)
    # the lead at 10 m/s braking at 4 m/s^2 stops after 12.5 m, at 2.5 s (constant velocity: 30 m on)
    np.testing.assert_allclose(braking.pred.center_xy[0, -1], [32.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(steady.pred.center_xy[0, -1], [50.0, 0.0], atol=1e-6)
    t = fmt.DT_S * np.arange(1, 7)
    keep_speed = np.c_[10.0 * t, np.zeros(6)]
    assert steady.plan_clear(keep_speed) and not braking.plan_clear(keep_speed)
    # speeding up, or braking too gently to matter, is constant velocity
    gentle = CollisionGuard(Scene(0, EgoState(speed_mps=10.0), [lead([-0.5, 0.0, 0.0])], [], 13.9), grammar)
    np.testing.assert_allclose(gentle.pred.center_xy[0, -1], [50.0, 0.0], atol=1e-6)
