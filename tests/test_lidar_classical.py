"""Specification of the classical LiDAR detector (fmdrive.perception.lidar_classical).

Sweeps are ray-cast here in numpy: a 32-beam spinning LiDAR 1.9 m above flat (or tilted) ground,
boxes for cars, pedestrians, a building and poles. No simulator, no ROS.
"""
from pathlib import Path

import numpy as np
import pytest

from fmdrive.calibration.extrinsics import T_base_lidar
from fmdrive.geometry import make_T
from fmdrive.perception.boxes import complete_partial_car, fit_lshape, min_area_rectangle
from fmdrive.perception.lidar_classical import (ClassicalLidarDetector, ClassicalLidarParams,
                                                LidarResult)

T_BASE_LIDAR = make_T(t=[1.0, 0.0, 1.9])
REAL_PCD = Path(__file__).parent / 'data' / 'pjlab_lidar2camera' / '0.pcd'

CAR = (4.5, 1.9, 1.5)
PEDESTRIAN = (0.6, 0.6, 1.75)
BUILDING = (20.0, 10.0, 8.0)
POLE = (0.3, 0.3, 6.0)


def box(x, y, size, yaw_rad=0.0, ground_z=0.0):
    return dict(center=np.array([x, y, ground_z + size[2] / 2]), size=np.array(size), yaw=yaw_rad)


def ray_cast_sweep(boxes=(), ground_normal=(0.0, 0.0, 1.0), beams=32, azimuth_step_deg=0.2,
                   range_noise_m=0.02, seed=0, max_range_m=100.0):
    """(N, 4) x, y, z, intensity in the lidar frame of a sweep over ground and boxes (base_link)."""
    rng = np.random.default_rng(seed)
    origin = T_BASE_LIDAR[:3, 3]
    elevation = np.deg2rad(np.linspace(-30.67, 10.67, beams))
    azimuth = np.deg2rad(np.arange(0.0, 360.0, azimuth_step_deg))
    el, az = np.meshgrid(elevation, azimuth, indexing='ij')
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    t_hit = np.full(len(d), np.inf)
    intensity = np.zeros(len(d))
    n = np.asarray(ground_normal, float) / np.linalg.norm(ground_normal)   # plane through 0
    with np.errstate(divide='ignore', invalid='ignore'):
        t_ground = -(n @ origin) / (d @ n)
        hit = t_ground > 0
        t_hit[hit] = t_ground[hit]
        intensity[hit] = 15.0
        for b in boxes:
            c, s = np.cos(-b['yaw']), np.sin(-b['yaw'])
            R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
            o_local, d_local = R @ (origin - b['center']), d @ R.T
            half = b['size'] / 2
            t1, t2 = (-half - o_local) / d_local, (half - o_local) / d_local
            t_near = np.nanmax(np.minimum(t1, t2), axis=1)
            t_far = np.nanmin(np.maximum(t1, t2), axis=1)
            hit = (t_far >= t_near) & (t_near > 0) & (t_near < t_hit)
            t_hit[hit] = t_near[hit]
            intensity[hit] = 60.0
    keep = t_hit < max_range_m
    r = t_hit[keep] + rng.normal(0, range_noise_m, keep.sum())
    xyz = d[keep] * r[:, None]                       # lidar frame = base_link axes, shifted
    return np.c_[xyz, intensity[keep]].astype(np.float32)


def street(extra=()):
    """A building and three poles by the road, plus the given road users."""
    clutter = [box(25.0, 16.0, BUILDING), box(-20.0, -15.0, BUILDING, yaw_rad=0.3),
               box(8.0, 6.0, POLE), box(20.0, -6.0, POLE), box(35.0, 6.0, POLE)]
    return list(extra) + clutter


@pytest.fixture(scope='module')
def detector():
    return ClassicalLidarDetector(ClassicalLidarParams(), T_BASE_LIDAR)


def near(objects, x, y, radius_m=3.0):
    return [o for o in objects if np.hypot(o.center[0] - x, o.center[1] - y) < radius_m]


def yaw_error_rad(a, b):
    """Difference of two box headings, modulo pi (a box has no front)."""
    return abs((a - b + np.pi / 2) % np.pi - np.pi / 2)


def test_car_ahead_is_detected_with_car_size_and_yaw(detector):
    # only the rear (and a sliver of roof) is visible: the box must still be a whole car
    result = detector.detect(ray_cast_sweep(street([box(15.0, 0.0, CAR)])))
    cars = [o for o in near(result.objects, 15.0, 0.0) if o.label == 'car']
    assert len(cars) == 1, [o.to_dict() for o in result.objects]
    car = cars[0]
    assert car.size[0] == pytest.approx(4.5, abs=0.6)
    assert car.size[1] == pytest.approx(1.9, abs=0.4)
    assert car.size[2] == pytest.approx(1.5, abs=0.4)
    assert car.center[:2] == pytest.approx([15.0, 0.0], abs=0.6)
    assert car.center[2] - car.size[2] / 2 == pytest.approx(0.0, abs=0.15)   # stands on the road
    assert yaw_error_rad(car.yaw_rad, 0.0) < np.deg2rad(8)
    assert 0.0 < car.score <= 1.0 and car.id == 0


def test_car_beside_the_road_is_completed_away_from_the_sensor(detector):
    # parked on the right, long side towards us: the hidden half lies further right, not left
    result = detector.detect(ray_cast_sweep(street([box(6.0, -5.0, CAR)])))
    cars = [o for o in near(result.objects, 6.0, -5.0) if o.label == 'car']
    assert len(cars) == 1, [o.to_dict() for o in result.objects]
    assert cars[0].size[1] == pytest.approx(1.9, abs=0.4)
    assert cars[0].center[1] == pytest.approx(-5.0, abs=0.4)


def test_pedestrian_is_classified_as_pedestrian(detector):
    result = detector.detect(ray_cast_sweep(street([box(10.0, 3.0, PEDESTRIAN)])))
    found = near(result.objects, 10.0, 3.0, radius_m=1.0)
    assert [o.label for o in found] == ['pedestrian']
    assert found[0].size[2] == pytest.approx(1.75, abs=0.35)
    assert max(found[0].size[:2]) < 1.2


def test_cyclist_riding_ahead_is_a_cyclist_not_the_rear_of_a_car(detector):
    # its 1.8 m side runs along the line of sight: a car's rear would face the sensor instead
    result = detector.detect(ray_cast_sweep(street([box(18.0, -3.0, (1.8, 0.6, 1.7), yaw_rad=0.1)])))
    assert [o.label for o in near(result.objects, 18.0, -3.0)] == ['cyclist']


def test_roadside_fence_seen_edge_on_is_not_a_car(detector):
    # a 5 m piece of 1.1 m high fence beside the road ahead: one thin side, no end face
    result = detector.detect(ray_cast_sweep([box(25.0, 7.0, (5.0, 0.1, 1.1))]))
    assert [o.label for o in near(result.objects, 25.0, 7.0)] in ([], ['unknown'])


def test_ring_column_is_accepted_and_ignored(detector):
    sweep = ray_cast_sweep(street([box(10.0, 3.0, PEDESTRIAN)]))
    with_ring = np.c_[sweep, np.arange(len(sweep)) % 32].astype(np.float32)
    a, b = detector.detect(sweep), detector.detect(with_ring)
    assert [o.to_dict() for o in a.objects] == [o.to_dict() for o in b.objects]
    assert b.ground_points.shape[1] == 4


def test_building_is_not_reported_as_an_object(detector):
    result = detector.detect(ray_cast_sweep(street()))
    for x, y in ((25.0, 16.0), (-20.0, -15.0)):           # the buildings, anywhere on them
        assert near(result.objects, x, y, radius_m=12.0) == [], [o.to_dict() for o in result.objects]
    for x, y in ((8.0, 6.0), (20.0, -6.0), (35.0, 6.0)):  # 6 m poles are no road users either
        assert near(result.objects, x, y, radius_m=1.0) == []
    assert len(result.nonground_points) > 0               # they were seen, and dropped on purpose


@pytest.mark.parametrize('points', [
    np.zeros((0, 4), np.float32), np.zeros((0, 5), np.float32), np.full((100, 4), np.nan),
    np.array([[5.0, 0.0, -1.9, 10.0]], np.float32), np.zeros((7, 2)), np.zeros(12), None,
    'not a cloud', np.full((50, 4), 1e30), np.full((50, 4), np.inf), [[1.0, 2.0], [3.0]],
], ids=['empty', 'empty5', 'all_nan', 'one_point', 'two_columns', 'flat', 'none', 'string',
        'huge', 'inf', 'ragged'])
def test_empty_and_nan_clouds_give_no_objects_and_do_not_raise(detector, points):
    result = detector.detect(points)
    assert isinstance(result, LidarResult)
    assert result.objects == [] and result.lanes == []
    assert result.ground_points.shape[1] == 4 and result.nonground_points.shape[1] == 4
    assert 'total' in result.timings_ms
    if not (isinstance(points, np.ndarray) and points.shape == (1, 4)):
        assert result.warnings                            # says what was wrong with the input


def test_all_ground_sweep_gives_the_ground_plane_and_no_objects(detector):
    result = detector.detect(ray_cast_sweep())
    assert result.objects == [] and result.warnings == []
    assert result.ground_plane == pytest.approx([0, 0, 1, 0], abs=0.02)
    assert len(result.nonground_points) == 0
    assert {'prepare', 'ground', 'cluster', 'boxes', 'lanes', 'total'} <= set(result.timings_ms)


def test_a_million_points_are_handled_with_a_warning():
    rng = np.random.default_rng(1)
    points = np.c_[rng.uniform(-70, 70, (1_000_000, 2)), rng.uniform(-4, 2, (1_000_000, 1)),
                   rng.uniform(0, 255, (1_000_000, 1))].astype(np.float32)
    params = ClassicalLidarParams(max_cluster_points=20000)
    result = ClassicalLidarDetector(params, T_BASE_LIDAR).detect(points)
    assert any('max_cluster_points' in w for w in result.warnings)
    assert len(result.nonground_points) <= 20000


def test_tilted_ground_is_removed(detector):
    # the road rises 5 deg ahead and the car on it stands on the slope
    slope = np.deg2rad(5.0)
    normal = np.array([-np.sin(slope), 0.0, np.cos(slope)])
    # (the crop ceiling z_max_m is in base_link: a car much further up would be cut by it)
    car = box(10.0, -4.0, CAR, ground_z=10.0 * np.tan(slope))
    result = detector.detect(ray_cast_sweep([car], ground_normal=normal))
    assert np.degrees(np.arccos(np.clip(result.ground_plane[:3] @ normal, -1, 1))) < 1.0
    assert abs(result.ground_plane[3]) < 0.1
    # far up the slope the road is 3+ m above base_link z = 0, and still ground, not obstacles
    assert result.ground_points[:, 0].max() > 30.0
    assert [o.label for o in result.objects] == ['car']
    assert result.objects[0].center[1] == pytest.approx(-4.0, abs=0.8)


def test_wall_next_to_the_road_does_not_become_the_ground(detector):
    # a long wall close by gets more RANSAC inliers than the far-away ground
    wall = box(5.0, 3.5, (60.0, 0.4, 2.9))
    result = detector.detect(ray_cast_sweep([wall]))
    assert result.ground_plane[:3] == pytest.approx([0, 0, 1], abs=0.02)
    assert near(result.objects, 5.0, 3.5, radius_m=30.0) == []


@pytest.mark.parametrize('yaw_deg', [30.0, -55.0, 80.0])
def test_box_yaw_follows_a_rotated_car(detector, yaw_deg):
    yaw = np.deg2rad(yaw_deg)
    result = detector.detect(ray_cast_sweep(street([box(12.0, -5.0, CAR, yaw_rad=yaw)])))
    cars = [o for o in near(result.objects, 12.0, -5.0) if o.label == 'car']
    assert len(cars) == 1
    assert yaw_error_rad(cars[0].yaw_rad, yaw) < np.deg2rad(8)
    assert cars[0].size[0] == pytest.approx(4.5, abs=0.6)
    assert cars[0].center[:2] == pytest.approx([12.0, -5.0], abs=0.6)


def test_lshape_fit_of_two_visible_sides_recovers_the_rectangle():
    yaw = np.deg2rad(20)
    u, v = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
    s = np.linspace(-0.5, 0.5, 40)[:, None]
    near_side = np.array([10.0, 2.0]) + s * 4.5 * u - 0.95 * v    # the two sides facing the origin
    near_end = np.array([10.0, 2.0]) - 2.25 * u + s * 1.9 * v
    centre, length_m, width_m, yaw_rad = fit_lshape(np.vstack([near_side, near_end]))
    assert (length_m, width_m) == pytest.approx((4.5, 1.9), abs=0.05)
    assert yaw_error_rad(yaw_rad, yaw) < np.deg2rad(1.5)
    assert centre == pytest.approx([10.0, 2.0], abs=0.05)


def test_min_area_rectangle_of_a_full_outline_and_of_a_line():
    rng = np.random.default_rng(0)
    yaw = 0.4
    local = np.vstack([[[2.0, 1.0], [-2.0, 1.0], [-2.0, -1.0], [2.0, -1.0]],
                       rng.uniform([-2, -1], [2, 1], (50, 2))])      # a 4 x 2 m outline, filled
    rotated = local @ np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]]) + [5.0, 1.0]
    centre, length_m, width_m, yaw_rad = min_area_rectangle(rotated)
    assert (length_m, width_m) == pytest.approx((4.0, 2.0), abs=1e-6)
    assert yaw_error_rad(yaw_rad, yaw) < 1e-6 and centre == pytest.approx([5.0, 1.0], abs=1e-6)
    _, length_m, width_m, yaw_rad = min_area_rectangle([[0, 0], [1, 1], [2, 2]])
    assert width_m == pytest.approx(0.0, abs=1e-9) and yaw_error_rad(yaw_rad, np.pi / 4) < 1e-6


def test_partial_car_grows_away_from_the_sensor():
    # rear face 1.9 m wide seen 10 m ahead: the car extends forward, away from the sensor
    centre, length_m, width_m, yaw_rad = complete_partial_car([10.0, 0.0], 1.9, 0.2, np.pi / 2,
                                                              [1.0, 0.0])
    assert (length_m, width_m) == pytest.approx((4.5, 1.9))
    assert yaw_error_rad(yaw_rad, 0.0) < 1e-9
    assert centre == pytest.approx([10.0 + (4.5 - 0.2) / 2, 0.0])


def test_invalid_calibration_and_params_raise_clear_errors():
    with pytest.raises(ValueError, match='T_base_lidar'):
        ClassicalLidarDetector(ClassicalLidarParams(), np.eye(3))
    with pytest.raises(ValueError, match='cluster_cell_m'):
        ClassicalLidarParams(cluster_cell_m=0.0)
    with pytest.raises(ValueError, match='z_min_m'):
        ClassicalLidarParams(z_min_m=2.0, z_max_m=1.0)


def test_params_from_node_parameters_and_extrinsics_from_the_repo():
    params = ClassicalLidarParams.from_dict({'backend': 'classical', 'cluster_cell_m': 0.25,
                                             'range_m': 50.0, 'voxel_m': 0.15})   # retired: ignored
    assert (params.cluster_cell_m, params.range_m) == (0.25, 50.0)
    assert T_base_lidar() == pytest.approx(T_BASE_LIDAR)


def read_ascii_pcd(path) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity of an ASCII PCD with fields x y z intensity."""
    with open(path) as f:
        header = [next(f) for _ in range(11)]
    assert header[-1].split() == ['DATA', 'ascii'] and header[2].split()[1:5] == ['x', 'y', 'z', 'intensity']
    return np.loadtxt(path, skiprows=11, dtype=np.float32)[:, :4]


@pytest.mark.skipif(not REAL_PCD.exists(), reason=f'{REAL_PCD} is absent (real Pandar64 sample)')
def test_real_pandar64_sweep_gives_some_car_sized_boxes(detector):
    result = detector.detect(read_ascii_pcd(REAL_PCD))
    assert abs(result.ground_plane[2]) > np.cos(np.deg2rad(5))      # the road is near-horizontal
    assert abs(result.ground_plane[3]) < 0.5                         # ~1.9-2.1 m under the sensor
    assert len(result.ground_points) > 10000
    cars = [o for o in result.objects if o.label == 'car']
    assert len(cars) >= 2
    for car in cars:
        assert 3.5 <= car.size[0] <= 6.5 and 1.4 <= car.size[1] <= 2.6 and car.size[2] <= 2.4


# ---------------------------------------------------------------- roadside clutter (ray look-ups)
def tree(x, y, trunk_height_m=2.2, canopy_m=3.0):
    """A trunk with a cube of canopy on top, as the simulator builds trees."""
    return [box(x, y, (0.3, 0.3, trunk_height_m)),
            box(x, y, (canopy_m, canopy_m, canopy_m), ground_z=trunk_height_m)]


@pytest.mark.parametrize('trunk_height_m', [1.8, 2.2, 2.7])
def test_tree_by_the_road_is_neither_a_pedestrian_nor_a_car(detector, trunk_height_m):
    # the trunk alone looks like a person; the canopy cut by the z crop like a car on stilts
    result = detector.detect(ray_cast_sweep(tree(14.0, -7.0, trunk_height_m)))
    assert near(result.objects, 14.0, -7.0, radius_m=3.0) == [], \
        [o.to_dict() for o in result.objects]


def test_floating_sign_is_not_reported(detector):
    # a 2 m x 1 m board 2 m above the road edge, held by nothing the sensor sees
    result = detector.detect(ray_cast_sweep([box(18.0, -6.0, (0.2, 2.0, 1.0), ground_z=2.0)]))
    assert near(result.objects, 18.0, -6.0) == []


def test_thin_post_taller_than_a_person_is_not_a_pedestrian(detector):
    result = detector.detect(ray_cast_sweep([box(12.0, 5.0, (0.25, 0.25, 2.6))]))
    assert 'pedestrian' not in [o.label for o in near(result.objects, 12.0, 5.0, radius_m=1.5)]


def test_wall_far_away_is_not_cut_into_cars(detector):
    # 40 m off, beams are 0.9 m apart: each row of the wall used to be a car-sized slice
    result = detector.detect(ray_cast_sweep([box(40.0, 12.0, (15.0, 8.0, 10.0), yaw_rad=0.2)]))
    assert near(result.objects, 40.0, 12.0, radius_m=10.0) == []


def test_car_behind_a_thin_pole_is_still_a_car(detector):
    # the pole blocks a column or two of the rays above the car, not its whole outline
    result = detector.detect(ray_cast_sweep([box(20.0, -1.0, CAR), box(16.0, -1.2, POLE)]))
    assert [o.label for o in near(result.objects, 20.0, -1.0)] == ['car']


def test_far_car_seen_by_one_or_two_beams_is_a_car(detector):
    # at 40 m its top may fall between two beams: the visible part is lower than a car
    result = detector.detect(ray_cast_sweep([box(40.0, -3.5, CAR)]))
    assert [o.label for o in near(result.objects, 40.0, -3.5)] == ['car']


def test_cone_and_pedestrian_boxes_are_completed_to_their_size(detector):
    result = detector.detect(ray_cast_sweep([box(9.0, -2.0, (0.4, 0.4, 0.7)),
                                             box(11.0, 3.0, PEDESTRIAN)]))
    cones = [o for o in near(result.objects, 9.0, -2.0, radius_m=1.0) if o.label == 'cone']
    people = [o for o in near(result.objects, 11.0, 3.0, radius_m=1.0) if o.label == 'pedestrian']
    assert len(cones) == 1 and len(people) == 1
    assert cones[0].size[:2] == pytest.approx([0.4, 0.4], abs=0.1)
    assert cones[0].center[:2] == pytest.approx([9.0, -2.0], abs=0.15)
    assert people[0].center[:2] == pytest.approx([11.0, 3.0], abs=0.2)


# ---------------------------------------------------------------- simulator
def test_simulated_street_precision_and_recall():
    """A fixed simulated scenario (trees, poles, buildings, cars and people): most road users are
    found, and the roadside clutter does not turn into a stream of false road users."""
    from fmdrive import config
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.eval.metrics import GroundTruthFrame, match_detections
    from fmdrive.sim import Simulator, generate_scenario

    extrinsics = load_extrinsics(config.EXTRINSICS_FILE)
    spec = generate_scenario('pedestrian_crossing', seed=2, duration_s=4.0)
    spec.lidar.beams = 32
    K = np.array([[50.0, 0, 32], [0, 50.0, 18], [0, 0, 1]])     # tiny camera: only LiDAR is used
    sim = Simulator(spec, K, 64, 36, extrinsics['camera_optical'], extrinsics['lidar'])
    detector = ClassicalLidarDetector(ClassicalLidarParams(), extrinsics['lidar'])
    detections, gt_frames, unknown = [], [], 0
    for frame in sim.frames():
        objects = detector.detect(frame.points_lidar).objects
        unknown += sum(o.label == 'unknown' for o in objects)
        detections.append([o.transformed(frame.ego.T_odom_base()) for o in objects])
        gt_frames.append(GroundTruthFrame(frame.stamp_ns, frame.ego, frame.objects, np.array(
            [frame.lidar_points_per_object[o.id] for o in frame.objects], int)))
    matches = {label: match_detections(detections, gt_frames, label)
               for label in ('car', 'pedestrian', 'cyclist', 'cone')}
    assert matches['car'].num_gt > 20 and matches['pedestrian'].num_gt > 20
    assert matches['car'].num_matched_gt / matches['car'].num_gt >= 0.8
    assert matches['pedestrian'].num_matched_gt / matches['pedestrian'].num_gt >= 0.6
    false_positives = sum(int((~m.tp).sum()) for m in matches.values())
    assert false_positives <= 1.5 * len(gt_frames), false_positives
    assert unknown <= 1.0 * len(gt_frames), unknown


# ---------------------------------------------------------------- real sensor layouts, big vehicles
def test_per_call_mounting_of_a_rotated_lidar_at_another_height_gives_the_same_car(detector):
    # nuScenes-like: lidar x right, y forward, 1.6 m up; the sweep is expressed in that frame
    sweep = ray_cast_sweep(street([box(15.0, 0.0, CAR)]))
    lifted = sweep.copy()
    lifted[:, 2] += 0.3                                   # same scene seen from 1.6 m
    R = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])   # base <- lidar
    T_rotated = make_T(R=R, t=[1.0, 0.0, 1.6])
    rotated = np.c_[(lifted[:, :3] - 0.0) @ R, lifted[:, 3]].astype(np.float32)   # R^T p
    cars = [o for o in near(detector.detect(rotated, T_base_lidar=T_rotated).objects, 15.0, 0.0)
            if o.label == 'car']
    assert len(cars) == 1 and cars[0].center[:2] == pytest.approx([15.0, 0.0], abs=0.6)
    # the constructor's mounting is untouched by a per-call one
    assert detector.T_base_lidar == pytest.approx(T_BASE_LIDAR)


@pytest.mark.parametrize('length_m, height_m', [(10.0, 3.6), (17.5, 3.2)])
def test_truck_and_bus_beside_the_road_are_cars_with_their_own_length(detector, length_m, height_m):
    result = detector.detect(ray_cast_sweep([box(14.0, -6.0, (length_m, 2.5, height_m))]))
    cars = [o for o in near(result.objects, 14.0, -6.0, radius_m=length_m / 2) if o.label == 'car']
    assert len(cars) == 1, [o.to_dict() for o in result.objects]
    assert cars[0].size[0] == pytest.approx(length_m, rel=0.15)
    assert cars[0].size[2] == pytest.approx(height_m, abs=0.5)


def test_small_car_seen_on_two_sides_keeps_its_fitted_size(detector):
    # a 3.8 x 1.7 m city car, front-left quarter towards the sensor: not blown up to 4.5 x 1.9
    result = detector.detect(ray_cast_sweep([box(12.0, 5.0, (3.8, 1.7, 1.45), yaw_rad=-0.6)]))
    cars = [o for o in near(result.objects, 12.0, 5.0) if o.label == 'car']
    assert len(cars) == 1
    assert cars[0].size[0] == pytest.approx(3.8, abs=0.35)
    assert cars[0].size[1] == pytest.approx(1.7, abs=0.25)


def test_see_through_bush_of_car_size_is_not_a_car(detector):
    # foliage: returns from up to 0.9 m inside its volume, not from one face
    bush = ray_cast_sweep([box(14.0, -6.0, (3.0, 2.0, 1.6))], seed=4)
    on_bush = np.hypot(bush[:, 0] + 1.0 - 14.0, bush[:, 1] + 6.0) < 2.0
    rng = np.random.default_rng(5)
    rays = bush[on_bush, :3] / np.linalg.norm(bush[on_bush, :3], axis=1, keepdims=True)
    bush[on_bush, :3] += rays * rng.uniform(0.0, 0.9, (on_bush.sum(), 1)).astype(np.float32)
    assert 'car' not in [o.label for o in near(detector.detect(bush).objects, 14.0, -6.0)]
