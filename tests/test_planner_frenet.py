"""Specification of the Frenet frame helpers and constant-velocity prediction."""
import numpy as np
import pytest

from fmdrive.objects import Lane, Object3D
from fmdrive.planning.frenet import (ReferenceLine, ReferenceLineError, Road, polyval,
                                     quartic_coefficients, quintic_coefficients)
from fmdrive.planning.prediction import predict_constant_velocity


def arc(radius=50.0, n=100, angle=1.2):
    th = np.linspace(0.0, angle, n)
    return np.c_[radius * np.sin(th), radius - radius * np.cos(th)]


def test_quintic_meets_position_speed_and_acceleration_at_both_ends():
    c = quintic_coefficients(1.0, 2.0, 0.5, 3.0, -1.0, 0.2, 2.0)
    assert [polyval(c, 0.0, k) for k in range(3)] == pytest.approx([1.0, 2.0, 0.5])
    assert [polyval(c, 2.0, k) for k in range(3)] == pytest.approx([3.0, -1.0, 0.2])


def test_quartic_reaches_the_target_speed_with_zero_acceleration():
    c = quartic_coefficients(0.0, 5.0, 0.0, 10.0, 0.0, 3.0)
    assert polyval(c, 3.0, 1) == pytest.approx(10.0)
    assert polyval(c, 3.0, 2) == pytest.approx(0.0, abs=1e-9)


def test_frenet_round_trip_on_a_curved_line():
    ref = ReferenceLine(arc())
    s = np.array([5.0, 20.0, 40.0])
    d = np.array([-1.5, 0.0, 2.0])
    x, y, _ = ref.to_cartesian(s, d)
    s2, d2 = ref.project(np.c_[x, y])
    np.testing.assert_allclose(s2, s, atol=0.05)
    np.testing.assert_allclose(d2, d, atol=0.05)


def test_curvature_of_an_arc_is_one_over_its_radius():
    ref = ReferenceLine(arc(radius=40.0))
    assert ref.frame_at(20.0)[3] == pytest.approx(1 / 40.0, rel=0.03)


def test_points_beyond_the_line_ends_project_onto_its_straight_extension():
    ref = ReferenceLine(np.array([[0.0, 0.0], [10.0, 0.0]]))
    s, d = ref.project(np.array([[60.0, -2.0], [-5.0, 1.0]]))
    np.testing.assert_allclose(s, [60.0, -5.0])
    np.testing.assert_allclose(d, [-2.0, 1.0])


def test_a_line_with_fewer_than_two_distinct_points_is_refused():
    with pytest.raises(ReferenceLineError, match='at least 2 distinct'):
        ReferenceLine(np.array([[1.0, 1.0], [1.0, 1.0], [np.nan, 0.0]]))


def test_road_from_lanes_gives_lane_centres_and_edges():
    x = np.linspace(0, 50, 20)
    lanes = [Lane(o, 3.5, np.c_[x, np.full_like(x, 3.5 * o), np.zeros_like(x)]) for o in (-1, 0, 1)]
    road = Road.from_lanes(lanes)
    np.testing.assert_allclose(road.lane_center_d_m, [-3.5, 0.0, 3.5], atol=1e-6)
    assert road.left_edge_d_m == pytest.approx(5.25) and road.right_edge_d_m == pytest.approx(-5.25)
    assert list(road.lane_index_of([3.0, -0.4, -4.0])) == [1, 0, -1]
    assert not road.assumed_lane


def test_road_without_lanes_assumes_a_straight_ego_lane():
    road = Road.from_lanes([])
    assert road.assumed_lane
    assert (road.right_edge_d_m, road.left_edge_d_m) == (-1.75, 1.75)


def test_constant_velocity_prediction_moves_objects_and_grows_pedestrian_margins():
    car = Object3D([10.0, 0.0, 0.8], [4.5, 1.9, 1.5], 0.0, 'car', velocity=[5.0, 1.0, 0.0])
    ped = Object3D([5.0, 5.0, 0.9], [0.6, 0.6, 1.7], 0.0, 'pedestrian')
    pred = predict_constant_velocity([car, ped], np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(pred.center_xy[0, 2], [20.0, 2.0])
    np.testing.assert_allclose(pred.center_xy[1, 2], [5.0, 5.0])
    growth_ped = pred.half_width_m[1, 2] - pred.half_width_m[1, 0]
    growth_car = pred.half_width_m[0, 2] - pred.half_width_m[0, 0]
    assert growth_ped > growth_car > 0


def test_prediction_repairs_or_drops_broken_objects_and_says_so():
    broken = [Object3D([np.nan, 0.0, 0.0], [1, 1, 1], 0.0, 'car'),
              Object3D([5.0, 0.0, 0.0], [1, 1, 1], 0.0, 'car', velocity=[np.nan, 0, 0]),
              Object3D([9.0, 0.0, 0.0], [np.nan, 1, 1], 0.0, 'pedestrian')]
    pred = predict_constant_velocity(broken, np.array([0.0, 1.0]))
    assert len(pred) == 2 and len(pred.notes) == 3
    np.testing.assert_allclose(pred.center_xy[0, 1], [5.0, 0.0])
    assert pred.half_length_m[1, 0] == pytest.approx(0.3)


def test_around_ego_gives_the_same_read_only_road_for_the_same_lanes_and_a_new_one_for_new_lanes():
    x = np.linspace(-10, 80, 46)
    lanes = [Lane(o, 3.5, np.c_[x, np.full_like(x, 3.5 * o), np.zeros_like(x)]) for o in (-1, 0)]
    road = Road.around_ego(lanes)
    assert Road.around_ego(lanes) is road
    with pytest.raises(ValueError):
        road.lane_center_d_m[0] = 9.0
    assert Road.around_ego(lanes, 3.0) is not road                     # another default width
    lanes.append(Lane(1, 3.5, np.c_[x, np.full_like(x, 3.5), np.zeros_like(x)]))
    wider = Road.around_ego(lanes)                                     # the same list, a lane more
    assert wider is not road and len(wider.lane_center_d_m) == 3
    copy = list(lanes)
    assert Road.around_ego(copy) is not wider
    np.testing.assert_allclose(Road.around_ego(copy).lane_center_d_m, wider.lane_center_d_m)
