"""Specification of lane finding from LiDAR ground returns (fmdrive.perception.lanes).

Ground points are sampled the way a 32-beam spinning LiDAR 1.9 m above the road sees it: rings
that get sparser with range, 0.2 deg apart in azimuth. Paint is bright, asphalt is dark.
"""
import numpy as np
import pytest

from fmdrive.perception.lanes import LaneParams, detect_lanes, marking_threshold

SENSOR_XY = np.array([1.0, 0.0])
SENSOR_HEIGHT_M = 1.9


def ring_ground(beams=32, azimuth_step_deg=0.2, max_range_m=60.0):
    """(N, 2) x, y in base_link where the downward beams of a spinning LiDAR hit flat ground."""
    elevation = np.deg2rad(np.linspace(-30.67, 10.67, beams))
    ranges = SENSOR_HEIGHT_M / np.tan(-elevation[elevation < -0.01])
    ranges = ranges[ranges < max_range_m]
    azimuth = np.deg2rad(np.arange(0.0, 360.0, azimuth_step_deg))
    r, az = np.meshgrid(ranges, azimuth, indexing='ij')
    return np.c_[(r * np.cos(az)).ravel(), (r * np.sin(az)).ravel()] + SENSOR_XY


def road(lines, curvature=0.0, heading=0.0, marking=200.0, asphalt=15.0, noise=3.0, dashed=(),
         seed=0):
    """(N, 4) ground points x, y, z=0, intensity; paint 0.15 m wide on y = a + heading x + curvature x^2."""
    rng = np.random.default_rng(seed)
    xy = ring_ground()
    intensity = asphalt + rng.normal(0, noise, len(xy))
    for a in lines:
        on_line = np.abs(xy[:, 1] - (a + heading * xy[:, 0] + curvature * xy[:, 0] ** 2)) < 0.075
        if a in dashed:                   # 3 m of paint, 6 m gap; a dash where the near rings land
            on_line &= np.mod(xy[:, 0] - 4.0, 9.0) < 3.0
        intensity[on_line] = marking + rng.normal(0, noise, on_line.sum())
    return np.c_[xy, np.zeros(len(xy)), np.clip(intensity, 0, None)]


def lane_by_offset(lanes, offset):
    found = [lane for lane in lanes if lane.offset == offset]
    assert len(found) == 1, [lane.offset for lane in lanes]
    return found[0]


def test_lane_boundaries_from_bright_markings():
    curvature, heading = 0.002, 0.03                      # ~250 m radius, slightly turned
    points = road([-5.25, -1.75, 1.75, 5.25], curvature, heading, dashed=(-1.75, 1.75))
    lanes = detect_lanes(points, lane_width_m=3.5)
    ego = lane_by_offset(lanes, 0)
    x = ego.centerline[:, 0]
    assert x == pytest.approx(np.arange(0.0, 40.1, 2.0))
    assert np.abs(ego.centerline[:, 1] - (heading * x + curvature * x ** 2)).max() < 0.3
    assert np.abs(ego.centerline[:, 2]).max() < 0.05
    assert ego.width_m == pytest.approx(3.5, abs=0.2)
    for offset in (+1, -1):                               # the neighbours are seen too
        lane = lane_by_offset(lanes, offset)
        expected = offset * 3.5 + heading * x + curvature * x ** 2
        assert np.abs(lane.centerline[:, 1] - expected).max() < 0.3
        assert lane.width_m == pytest.approx(3.5, abs=0.2)


def test_crosswalk_ahead_does_not_bend_a_straight_lane():
    points = road([-5.25, -1.75, 1.75, 5.25])
    zebra = (points[:, 0] > 20.0) & (points[:, 0] < 23.0) & (np.mod(points[:, 1], 1.0) < 0.5)
    points[zebra, 3] = 200.0                               # stripes 0.5 m wide across the road
    ego = lane_by_offset(detect_lanes(points, lane_width_m=3.5), 0)
    assert np.abs(ego.centerline[:, 1]).max() < 0.1


def test_no_lanes_without_markings():
    assert detect_lanes(road([]), lane_width_m=3.5) == []


def test_no_lanes_from_scattered_bright_speckle():
    points = road([])
    speckle = np.random.default_rng(3).random(len(points)) < 0.01     # glass, leaves, reflectors
    points[speckle, 3] = 200.0
    assert detect_lanes(points, lane_width_m=3.5) == []


def test_only_the_right_edge_line_still_places_the_ego_lane():
    lanes = detect_lanes(road([-1.75]), lane_width_m=3.5)
    assert [lane.offset for lane in lanes] == [0]
    assert np.abs(lanes[0].centerline[:, 1]).max() < 0.3


def test_vehicle_off_centre_gets_the_lane_it_is_in():
    # driving 1 m left of the lane centre: the centre line is 1 m to the right
    lanes = detect_lanes(road([-2.75, 0.75, 4.25]), lane_width_m=3.5)
    ego = lane_by_offset(lanes, 0)
    assert np.abs(ego.centerline[:, 1] + 1.0).max() < 0.3
    assert lane_by_offset(lanes, +1).centerline[0, 1] == pytest.approx(2.5, abs=0.3)


def test_intensity_scale_of_the_sensor_does_not_matter():
    # another sensor reports reflectivity 0..1: same road, same lanes
    points = road([-1.75, 1.75], marking=0.8, asphalt=0.06, noise=0.01)
    lanes = detect_lanes(points, lane_width_m=3.5)
    assert np.abs(lane_by_offset(lanes, 0).centerline[:, 1]).max() < 0.3


def test_marking_threshold_sits_well_above_the_asphalt():
    asphalt = np.random.default_rng(0).normal(15.0, 3.0, 5000)
    threshold = marking_threshold(np.r_[asphalt, np.full(100, 200.0)])
    assert 30.0 <= threshold < 200.0


@pytest.mark.parametrize('points', [np.zeros((0, 4)), np.zeros((10, 3)), np.full((500, 4), np.nan),
                                    np.zeros(8)])
def test_degenerate_ground_gives_no_lanes(points):
    assert detect_lanes(points, lane_width_m=3.5, params=LaneParams()) == []


def test_offset_peaks_between_two_clumps_never_raise():
    """Regression: a smoothed-histogram peak between two clumps of paint had no point within the
    inlier distance, and np.ptp of nothing raised (seen on a simulated intersection sweep)."""
    from fmdrive.perception import lanes
    params = lanes.LaneParams()
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n = int(rng.integers(params.min_marking_points, 4 * params.min_marking_points))
        centres = rng.uniform(-8, 8, int(rng.integers(1, 4)))
        offsets = np.concatenate([c + rng.choice([-1, 1], n) * rng.uniform(0.25, 0.45, n) for c in centres])
        peaks = lanes._offset_peaks(offsets, rng.uniform(0, 30, len(offsets)), params)
        assert all(np.isfinite(peaks))


@pytest.mark.parametrize('asphalt, marking, noise', [(3.0, 40.0, 0.0), (100.0, 180.0, 4.0),
                                                     (0.02, 0.5, 0.005)])
def test_lanes_are_found_on_quantised_or_offset_intensity(asphalt, marking, noise):
    # uint8 reflectivity with the asphalt on one value, a sensor with an offset, a 0..1 scale
    points = road([-1.75, 1.75], marking=marking, asphalt=asphalt, noise=noise)
    if noise == 0.0:
        points[:, 3] = np.round(points[:, 3])
    lanes = detect_lanes(points, lane_width_m=3.5)
    assert np.abs(lane_by_offset(lanes, 0).centerline[:, 1]).max() < 0.3
