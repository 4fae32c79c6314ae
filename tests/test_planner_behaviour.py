"""Specification of the classical planner's driving behaviour over successive frames: cruise speed,
car following (IDM) on what is or will be in the lane, passing only what is passable, oncoming
lanes, curves. Scenes are in base_link with the ego at the origin; stamps advance 0.1 s."""
import numpy as np

from fmdrive.objects import EgoState, Lane, Object3D, Scene
from fmdrive.planning.classical import ClassicalPlanner
from fmdrive.planning.frenet import ReferenceLine, Road
from fmdrive.planning.prediction import follow_lane, predict_constant_velocity
from fmdrive.planning.safety import check_trajectory

LANE_W = 3.5
NS = 100_000_000  # 0.1 s


def straight(offset, reverse=False):
    x = np.linspace(-10.0, 120.0, 60)
    x = x[::-1] if reverse else x
    return Lane(offset, LANE_W, np.c_[x, np.full_like(x, LANE_W * offset), np.zeros_like(x)])


def car(x, y, vx=0.0, id=1):
    return Object3D([x, y, 0.8], [4.5, 1.9, 1.5], 0.0, 'car', id=id, velocity=[vx, 0.0, 0.0])


def lateral_end(result, sc):
    return float(result.plan.poses[-1, 1] - sc.ego.y)


def test_a_speed_held_below_the_limit_is_kept_as_the_cruise_speed():
    planner = ClassicalPlanner()
    for k in range(20):
        sc = Scene(k * NS, EgoState(9.0 * k * 0.1, 0.0, 0.0, 9.0), [], [straight(0)], 13.9)
        r = planner.plan(sc)
    assert abs(r.plan.speeds_mps[-1] - 9.0) < 0.3
    fresh = ClassicalPlanner().plan(sc)
    assert fresh.plan.speeds_mps[-1] > 10.0     # no history: the limit is the target


def test_a_lead_seen_braking_is_predicted_to_keep_braking():
    planner, ego_x, lead_x, v_lead = ClassicalPlanner(), 0.0, 25.0, 12.0
    for k in range(6):
        sc = Scene(k * NS, EgoState(ego_x, 0.0, 0.0, 12.0), [car(lead_x - ego_x, 0.0, v_lead)],
                   [straight(0)], 13.9)
        r = planner.plan(sc)
        ego_x += 1.2
        lead_x += v_lead * 0.1
        v_lead -= 0.6                            # 6 m/s^2
    once = ClassicalPlanner().plan(sc)          # the same last frame, without the history
    assert r.plan.speeds_mps[-1] < once.plan.speeds_mps[-1] - 1.0
    assert check_trajectory(r.plan.poses, r.plan.t_s, r.plan.speeds_mps, sc).ok


def test_pedestrian_walking_away_from_the_lane_does_not_slow_the_ego():
    ped = Object3D([20.0, -3.0, 0.9], [0.6, 0.6, 1.7], 0.0, 'pedestrian', id=3,
                   velocity=[0.0, -1.4, 0.0])
    sc = Scene(0, EgoState(0.0, 0.0, 0.0, 10.0), [ped], [straight(0)], 13.9)
    assert ClassicalPlanner().plan(sc).plan.speeds_mps[-1] >= 10.0


def test_pedestrian_about_to_enter_the_lane_slows_the_ego_before_it_is_in_the_lane():
    ped = Object3D([25.0, -4.0, 0.9], [0.6, 0.6, 1.7], 0.0, 'pedestrian', id=3,
                   velocity=[0.0, 1.4, 0.0])   # enters the corridor in about 1.5 s
    sc = Scene(0, EgoState(0.0, 0.0, 0.0, 10.0), [ped], [straight(0)], 13.9)
    assert ClassicalPlanner().plan(sc).plan.speeds_mps[-1] < 8.0


def test_a_parked_car_is_passed_but_a_car_stopped_in_traffic_is_waited_for():
    lanes = [straight(0), straight(1)]
    parked = ClassicalPlanner().plan(Scene(0, EgoState(0, 0, 0, 10.0), [car(30.0, 0.0)], lanes, 13.9))
    assert parked.debug['lateral_target_m'] > 3.0
    planner = ClassicalPlanner()
    planner.plan(Scene(0, EgoState(0, 0, 0, 10.0), [car(35.0, 0.0, 12.0)], lanes, 13.9))
    sc = Scene(NS, EgoState(0, 0, 0, 10.0), [car(30.0, 0.0)], lanes, 13.9)
    queued = planner.plan(sc)
    assert abs(lateral_end(queued, sc)) < 0.5


def test_the_oncoming_lane_is_used_to_pass_only_while_it_is_clear():
    lanes = [straight(0), straight(1, reverse=True)]
    free = ClassicalPlanner().plan(Scene(0, EgoState(0, 0, 0, 10.0), [car(30.0, 0.0)], lanes, 13.9))
    assert free.debug['oncoming_lanes'] == [False, True]
    assert free.debug['lateral_target_m'] > 3.0
    sc = Scene(0, EgoState(0, 0, 0, 10.0), [car(30.0, 0.0), car(90.0, LANE_W, -12.0, id=2)],
               lanes, 13.9)
    busy = ClassicalPlanner().plan(sc)
    assert abs(lateral_end(busy, sc)) < 0.5


def test_after_passing_the_ego_returns_to_the_right_lane():
    lanes = [straight(-1), straight(0)]          # the ego is in the left one of two lanes
    sc = Scene(0, EgoState(0, 0, 0, 10.0), [car(-20.0, -LANE_W, 0.0)], lanes, 13.9)
    r = ClassicalPlanner().plan(sc)
    assert r.debug['lateral_target_m'] < -3.0


def test_a_tight_curve_lowers_the_desired_speed():
    radius = 40.0
    a = np.linspace(-0.3, 2.5, 200)
    line = np.c_[radius * np.sin(a), radius * (1 - np.cos(a)), np.zeros_like(a)]
    r = ClassicalPlanner().plan(Scene(0, EgoState(0, 0, 0, 12.0), [], [Lane(0, LANE_W, line)], 13.9))
    assert r.debug['desired_speed_mps'] < np.sqrt(2.5 * radius) + 0.3
    assert r.plan.speeds_mps[-1] < 11.0


def test_road_marks_a_lane_running_against_the_ego_lane_as_oncoming():
    road = Road.from_lanes([straight(0), straight(1), straight(2, reverse=True)])
    assert road.lane_oncoming.tolist() == [False, False, True]


def test_a_car_driving_along_a_curved_lane_is_predicted_to_follow_it():
    radius = 50.0
    a = np.linspace(-0.5, 2.0, 300)
    ref = ReferenceLine(np.c_[radius * np.sin(a), radius * (1 - np.cos(a))])
    other = Object3D([0.0, 0.0, 0.8], [4.5, 1.9, 1.5], 0.0, 'car', id=1, velocity=[10.0, 0, 0])
    pred = follow_lane(predict_constant_velocity([other], np.arange(0, 3.01, 0.5)), ref)
    _, d = ref.project(pred.center_xy[0])
    assert np.all(np.abs(d) < 0.1)                # a straight line would leave by ~9 m


def cone(x, y, id):
    return Object3D([x, y, 0.35], [0.4, 0.4, 0.7], 0.0, 'cone', id=id, velocity=[0.0, 0.0, 0.0])


def test_a_taper_of_cones_closing_the_lane_is_passed_in_the_free_oncoming_lane_not_waited_behind():
    # closed-loop scenario 109: cones sweep across the ego's lane 28-48 m ahead on a one-lane road
    lanes = [straight(0), straight(1, reverse=True)]
    taper = [cone(28.0 + 4.0 * k, -1.5 + 0.45 * k, id=10 + k) for k in range(6)]
    sc = Scene(0, EgoState(0, 0, 0, 9.0), taper, lanes, 11.1)
    r = ClassicalPlanner().plan(sc)
    assert r.debug['oncoming_lanes'] == [False, True]
    assert r.debug['lateral_target_m'] > 3.0, r.status
    assert check_trajectory(r.plan.poses, r.plan.t_s, r.plan.speeds_mps, sc).ok
    # with oncoming traffic in that lane the car waits behind the taper instead
    busy = Scene(0, EgoState(0, 0, 0, 9.0), taper + [car(70.0, LANE_W, -11.0, id=2)], lanes, 11.1)
    assert abs(lateral_end(ClassicalPlanner().plan(busy), busy)) < 0.5


def test_a_car_parked_half_in_the_lane_is_passed_with_a_nudge_within_the_lane():
    lanes = [straight(0), straight(1, reverse=True)]
    sc = Scene(0, EgoState(0, 0, 0, 9.0), [car(30.0, -2.2)], lanes, 11.1)
    r = ClassicalPlanner().plan(sc)
    assert 0.3 < r.debug['lateral_target_m'] < LANE_W / 2, r.debug['lateral_target_m']


def test_a_car_seen_driving_that_parks_at_the_kerb_is_passed_not_queued_behind():
    # closed-loop scenario 419: a car drove ahead of the ego, parked half in the lane, and the ego
    # waited behind it for ever as behind a car queueing in traffic
    lanes = [straight(0), straight(1, reverse=True)]
    planner = ClassicalPlanner()
    planner.plan(Scene(0, EgoState(0, 0, 0, 3.0), [car(20.0, 0.0, 10.0)], lanes, 13.9))   # seen driving
    parked = Scene(NS, EgoState(0, 0, 0, 3.0), [car(12.0, -2.0)], lanes, 13.9)
    r = planner.plan(parked)
    assert lateral_end(r, parked) > 0.5, r.debug
    assert check_trajectory(r.plan.poses, r.plan.t_s, r.plan.speeds_mps, parked).ok
    # standing where it drove (a queue), it is still waited for
    planner = ClassicalPlanner()
    planner.plan(Scene(0, EgoState(0, 0, 0, 3.0), [car(20.0, 0.0, 10.0)], lanes, 13.9))
    queued = Scene(NS, EgoState(0, 0, 0, 3.0), [car(12.0, 0.3)], lanes, 13.9)
    assert abs(lateral_end(planner.plan(queued), queued)) < 0.5
