"""Specification of the simulated sensors: the LiDAR ray-caster and the camera renderer."""
import numpy as np
import pytest

from fmdrive.geometry import make_T, pose2d_to_T, quat_to_rot
from fmdrive.sim.camera import CameraRenderer
from fmdrive.sim.lidar import LidarScanner
from fmdrive.sim.scenario import CameraSpec, LidarSpec, RoadSpec
from fmdrive.sim.world import ASPHALT, MARKING, BoxSet, World

T_BASE_LIDAR = make_T(t=[1.0, 0.0, 1.9])
T_BASE_CAMERA = make_T(quat_to_rot([-0.5, 0.5, -0.5, 0.5]), [1.6, 0.0, 1.4])
K = np.array([[200.0, 0, 159.5], [0, 200.0, 89.5], [0, 0, 1]])   # 320 x 180
EGO_AT_ORIGIN = np.eye(4)


def empty_world(**road):
    return World(RoadSpec(scenery_density=0.0, **road), np.random.default_rng(0))


def one_box(x, y=0.0, size=(4.5, 1.9, 1.5), yaw=0.0, owner=7):
    return BoxSet.from_rows([(x, y, size[2] / 2, *size, yaw, (200, 30, 30), 60.0, owner, True)])


def scan(world, boxes=None, **lidar):
    spec = LidarSpec(**{'range_noise_m': 0.0, 'dropout': 0.0, **lidar})
    scanner = LidarScanner(spec, T_BASE_LIDAR, np.random.default_rng(1))
    return scanner.scan(EGO_AT_ORIGIN, world, boxes if boxes is not None else BoxSet.empty())


def lane_world():
    """Ego on the centre of lane 0 of a one-lane road without oncoming lane: world y = 0 is the
    lane centre after shifting the ego pose."""
    return empty_world(num_lanes=1, has_oncoming_lane=False)


# ---------------------------------------------------------------- LiDAR
def test_lidar_sees_a_box_10m_ahead_at_the_right_range():
    world = empty_world()
    # lidar at x = 1 m; the box's rear face at x = 11 m, i.e. 10 m ahead of the sensor
    points, owner = scan(world, one_box(11.0 + 4.5 / 2, y=-1.75), range_noise_m=0.02)
    on_box = points[owner == 7]
    assert len(on_box) > 20
    rear = on_box[(on_box[:, 2] < 1.5 - 1.9 - 0.05)       # below the roof and inside the
                  & (np.abs(on_box[:, 1] + 1.75) < 0.85)]  # width: the rear face
    assert np.median(rear[:, 0]) == pytest.approx(10.0, abs=0.05)
    assert np.all(np.abs(rear[:, 0] - 10.0) < 0.1)
    assert np.all(on_box[:, 2] + 1.9 > -0.05) and np.all(on_box[:, 2] + 1.9 < 1.55)


def test_box_behind_the_lidar_is_seen_too_and_casts_a_shadow():
    world = empty_world()
    points, owner = scan(world, one_box(-10.0, y=-1.75, size=(4.5, 1.9, 3.0)))  # taller than it
    behind = points[owner == 7]
    assert len(behind) > 20 and np.all(behind[:, 0] < -8.0)
    # the box covers bearings about 4..19 deg right of straight back; behind it is shadow
    bearing_deg = np.degrees(np.arctan2(-points[:, 1], -points[:, 0]))
    farther = np.hypot(points[:, 0], points[:, 1]) > 13.0
    shadow = farther & (bearing_deg > 6) & (bearing_deg < 16) & (points[:, 0] < 0) & (owner == 0)
    assert not shadow.any()


def test_ground_ring_points_have_z_zero_in_odom():
    world = empty_world()
    T_odom_base = pose2d_to_T(5.0, -1.75, 0.3)
    spec = LidarSpec(range_noise_m=0.02, dropout=0.0)
    points, _ = LidarScanner(spec, T_BASE_LIDAR, np.random.default_rng(2)).scan(
        T_odom_base, world, BoxSet.empty())
    lowest = points[points[:, 4] == 0]
    assert len(lowest) == 1800
    T_odom_lidar = T_odom_base @ T_BASE_LIDAR
    z_odom = lowest[:, :3] @ T_odom_lidar[2, :3] + T_odom_lidar[2, 3]
    assert np.all(np.abs(z_odom) < 0.05)


def test_lane_markings_are_brighter_than_asphalt():
    world = empty_world(num_lanes=2, has_oncoming_lane=True)
    T_odom_base = pose2d_to_T(0.0, world.lane_center_d(0), 0.0)
    spec = LidarSpec(beams=64, h_res_deg=0.1, range_noise_m=0.0, dropout=0.0)
    points, owner = LidarScanner(spec, T_BASE_LIDAR, np.random.default_rng(3)).scan(
        T_odom_base, world, BoxSet.empty())
    T_odom_lidar = T_odom_base @ T_BASE_LIDAR
    xy = points[:, :3] @ T_odom_lidar[:2, :3].T + T_odom_lidar[:2, 3]
    near = np.hypot(points[:, 0], points[:, 1]) < 25
    mat = world.ground_material(xy[:, 0], xy[:, 1])
    marking = points[near & (mat == MARKING), 3]
    asphalt = points[near & (mat == ASPHALT), 3]
    assert len(marking) > 10 and len(asphalt) > 100
    assert marking.mean() > 5 * asphalt.mean()
    assert np.all((points[:, 3] >= 0) & (points[:, 3] <= 255))


@pytest.mark.parametrize('beams', [16, 32, 64, 128])
def test_ring_count_equals_beam_count(beams):
    points, _ = scan(empty_world(), beams=beams, h_res_deg=2.0, vfov_deg=[-25.0, -2.0])
    rings = np.unique(points[:, 4])
    assert len(rings) == beams
    assert rings.min() == 0 and rings.max() == beams - 1


def test_points_beyond_max_range_are_not_returned():
    points, _ = scan(empty_world(), max_range_m=30.0)
    assert np.linalg.norm(points[:, :3], axis=1).max() <= 30.0
    assert len(points) > 1000


def test_dropout_removes_that_fraction_of_returns():
    full, _ = scan(empty_world(), dropout=0.0)
    thinned, _ = scan(empty_world(), dropout=0.3)
    assert len(thinned) / len(full) == pytest.approx(0.7, abs=0.02)


def test_lidar_columns_wrap_around_behind_the_sensor():
    """A box straddling azimuth 180 deg (where the sweep wraps) is hit on both sides."""
    points, owner = scan(empty_world(), one_box(-8.0, y=0.0, size=(2.0, 6.0, 3.0)))
    on_box = points[owner == 7]
    assert (on_box[:, 1] > 1.0).any() and (on_box[:, 1] < -1.0).any()


# ---------------------------------------------------------------- camera
def render(world, boxes=None, T_odom_base=None, **camera):
    spec = CameraSpec(**{'noise_std': 0.0, **camera})
    cam = CameraRenderer(K, 320, 180, T_BASE_CAMERA, spec, np.random.default_rng(0))
    pose = pose2d_to_T(0.0, world.lane_center_d(0), 0.0) if T_odom_base is None else T_odom_base
    return cam.render(pose, world, boxes if boxes is not None else BoxSet.empty())


def test_camera_renders_a_box_ahead_in_the_image_centre():
    world = lane_world()
    d0 = world.lane_center_d(0)
    empty, _, _ = render(world)
    with_box, owner, depth = render(world, one_box(20.0, y=d0))
    diff = np.abs(with_box.astype(int) - empty.astype(int)).sum(-1) > 30
    assert diff[90:105, 150:170].all()                  # the image centre shows the box
    assert (owner[90:105, 150:170] == 7).all()
    assert depth[90, 160] == pytest.approx(20.0 - 4.5 / 2 - 1.6, abs=0.05)
    cols = np.flatnonzero(diff.any(0))
    assert abs((cols.min() + cols.max()) / 2 - 159.5) < 3
    assert not diff[:, :100].any() and not diff[:, 220:].any()


def test_box_behind_the_camera_is_not_drawn():
    world = lane_world()
    empty, _, _ = render(world)
    behind, owner, _ = render(world, one_box(-10.0, y=world.lane_center_d(0)))
    assert np.array_equal(empty, behind) and not owner.any()


def test_nearer_box_hides_the_farther_one():
    world = lane_world()
    d0 = world.lane_center_d(0)
    boxes = BoxSet.concat([one_box(30.0, y=d0, owner=1), one_box(15.0, y=d0, owner=2)])
    _, owner, _ = render(world, boxes)
    assert owner[90, 160] == 2 and not (owner == 1).any()


def test_sky_is_above_the_horizon_and_the_road_below():
    world = lane_world()
    img, _, depth = render(world)
    assert np.isinf(depth[:80]).all()
    sky = img[10, 160].astype(int)
    road = img[170, 160].astype(int)
    assert sky[2] > sky[0] + 40                      # blue
    assert abs(road[0] - road[2]) < 15 and road.mean() < 120  # grey asphalt


def test_lane_markings_appear_white_on_the_road():
    world = empty_world(num_lanes=2, has_oncoming_lane=True)
    img, _, _ = render(world)
    bottom = img[160:180].astype(int).mean(-1)
    assert (bottom > 200).sum() > 20                # markings
    assert (bottom < 110).sum() > 1000              # asphalt


def test_fog_pulls_far_pixels_towards_grey():
    world = lane_world()
    clear, _, _ = render(world)
    foggy, _, _ = render(world, fog=1.0)
    grey = np.array([178, 180, 184])
    far = slice(91, 96)
    assert np.abs(foggy[far].astype(int) - grey).mean() < np.abs(clear[far].astype(int) - grey).mean()
    assert np.abs(foggy[far].astype(int) - grey).mean() < 25


def test_night_is_dark_except_where_the_headlights_reach():
    world = lane_world()
    day, _, _ = render(world)
    night, _, _ = render(world, night=True)
    assert night.mean() < 0.4 * day.mean()
    assert night[150:180, 140:180].mean() > 2 * night[:60].mean()


def test_noise_and_colour_shift_change_the_image_deterministically():
    world = lane_world()
    a, _, _ = render(world, noise_std=5.0, colour_shift=[1.2, 1.0, 0.8])
    b, _, _ = render(world, noise_std=5.0, colour_shift=[1.2, 1.0, 0.8])
    plain, _, _ = render(world)
    assert np.array_equal(a, b)
    assert a[..., 0].mean() > plain[..., 0].mean() + 5 and a[..., 2].mean() < plain[..., 2].mean() - 5


def test_project_boxes_gives_pixel_rectangles_and_nan_behind():
    world = lane_world()
    cam = CameraRenderer(K, 320, 180, T_BASE_CAMERA, CameraSpec(), np.random.default_rng(0))
    d0 = world.lane_center_d(0)
    T = pose2d_to_T(0.0, d0, 0.0)
    rects = cam.project_boxes(T, np.array([[20.0, d0, 0.75], [-20.0, d0, 0.75]]),
                              np.array([[4.5, 1.9, 1.5]] * 2), np.zeros(2))
    u0, v0, u1, v1 = rects[0]
    assert u0 < 159.5 < u1 and v0 < 89.5 < v1
    assert (u1 - u0) == pytest.approx(200 * 1.9 / (20 - 2.25 - 1.6), rel=0.05)
    assert np.isnan(rects[1]).all()


def test_intensity_scale_knob_reports_the_same_sweep_on_another_scale():
    world = lane_world()
    full, _ = scan(world, range_noise_m=0.0, dropout=0.0)
    unit, _ = scan(world, range_noise_m=0.0, dropout=0.0, intensity_scale=1.0 / 255.0)
    np.testing.assert_allclose(unit[:, 3], full[:, 3] / 255.0, rtol=1e-5, atol=1e-6)
    assert unit[:, 3].max() <= 1.0 < full[:, 3].max()


def test_foliage_lets_rays_in_and_through_while_a_solid_box_stops_them_at_its_face():
    world = empty_world()
    solid = one_box(11.0 + 1.5, y=0.0, size=(3.0, 3.0, 1.6))
    bush = BoxSet(solid.center, solid.size, solid.yaw, solid.colour, solid.intensity, solid.owner,
                  solid.bright_ends, np.ones(1, bool))
    hard, hard_owner = scan(world, solid, range_noise_m=0.0, dropout=0.0)
    soft, soft_owner = scan(world, bush, range_noise_m=0.0, dropout=0.0)
    depth_hard = hard[hard_owner == 7, 0] - 10.0           # face 10 m ahead of the sensor
    depth_soft = soft[soft_owner == 7, 0] - 10.0
    assert np.abs(depth_hard[np.abs(hard[hard_owner == 7, 1]) < 1.3]).max() < 0.01
    assert np.median(depth_soft) > 0.2 and depth_soft.max() <= 1.0
    assert (soft_owner == 7).sum() < 0.8 * (hard_owner == 7).sum()     # some rays pass through
