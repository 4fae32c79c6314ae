"""refine_small_objects: pedestrians and cones from the learned LiDAR encoder take their BEV centre
from their own returns (the network's 0.4 m grid places them ~0.2 m off, below IoU 0.5 on 0.6 m
boxes). Synthetic returns of a cylinder seen from the sensor, the way a LiDAR sees a person."""
import numpy as np
import pytest

from fmdrive.objects import Object3D
from fmdrive.perception.lidar_learned import REFINE_MAX_SHIFT_M, refine_small_objects

SENSOR = np.array([1.0, 0.0])


def mount():
    """T_base_lidar: the LiDAR 1 m ahead of base_link, 1.8 m up, not rotated (SENSOR is its x, y)."""
    T = np.eye(4)
    T[:3, 3] = [*SENSOR, 1.8]
    return T


def person(centre, radius=0.29, height=1.75, ground_z=0.0, step=0.03, seed=0):
    """Returns from the half of a vertical cylinder that faces the sensor, plus ground around it."""
    rng = np.random.default_rng(seed)
    centre = np.asarray(centre, float)
    towards = np.arctan2(*(SENSOR - centre)[::-1])
    a = towards + np.linspace(-np.pi / 2 * 0.9, np.pi / 2 * 0.9, 12)
    z = np.arange(ground_z + 0.1, ground_z + height, step * 4)
    aa, zz = np.meshgrid(a, z)
    pts = np.stack([centre[0] + radius * np.cos(aa.ravel()), centre[1] + radius * np.sin(aa.ravel()), zz.ravel(),
                    np.full(aa.size, 20.0)], 1)
    ground = np.c_[centre + rng.uniform(-1.5, 1.5, (200, 2)), np.full(200, ground_z), np.full(200, 5.0)]
    return np.vstack([pts, ground]).astype(np.float32)


def detection(centre, label='pedestrian', size=(0.6, 0.6, 1.75), z=0.875, **kw):
    return Object3D(center=(centre[0], centre[1], z), size=size, label=label, score=0.8, **kw)


@pytest.mark.parametrize('truth', [(10.0, 3.0), (25.0, -8.0), (-6.0, 4.0), (4.0, 12.0)])
def test_a_pedestrian_placed_off_by_the_grid_is_moved_onto_its_returns(truth):
    truth = np.array(truth)
    off = truth + [0.2, -0.15]
    out = refine_small_objects([detection(off)], person(truth), SENSOR)
    assert np.hypot(*(np.asarray(out[0].center[:2]) - truth)) < 0.06
    assert np.hypot(*(off - truth)) > 0.2
    assert out[0].size.tolist() == pytest.approx([0.6, 0.6, 1.75]) and out[0].score == 0.8
    assert out[0].center[2] == pytest.approx(0.875)


def test_side_by_side_pedestrians_keep_their_own_returns():
    a, b = np.array([12.0, 1.0]), np.array([12.0, 1.75])
    pts = np.vstack([person(a), person(b, seed=1)])
    out = refine_small_objects([detection(a + [0.15, 0.1]), detection(b + [-0.1, -0.15])], pts, SENSOR)
    assert np.hypot(*(np.asarray(out[0].center[:2]) - a)) < 0.08
    assert np.hypot(*(np.asarray(out[1].center[:2]) - b)) < 0.08


def test_cars_and_objects_without_returns_are_left_as_the_network_gave_them():
    truth = np.array([10.0, 3.0])
    car = detection((20.0, 0.0), 'car', (4.5, 1.9, 1.5), 0.75)
    lonely = detection((30.0, 10.0))                       # nothing there (or under 3 returns)
    objs = [car, lonely, detection(truth)]
    out = refine_small_objects(objs, person(truth), SENSOR)
    assert out[0] is car and out[1] is lonely
    assert objs[2].center.tolist() == pytest.approx([10.0, 3.0, 0.875])   # the input is not changed
    assert refine_small_objects(objs, np.zeros((0, 4), np.float32), SENSOR) == objs


def test_ground_returns_and_a_wall_beside_it_do_not_move_it():
    truth = np.array([10.0, 3.0])
    # only ground under the detection: nothing between 0.2 m above its bottom and its top
    ground = person(truth)[-200:]
    assert refine_small_objects([detection(truth + 0.1)], ground, SENSOR)[0].center[:2].tolist() == \
        pytest.approx((truth + 0.1).tolist())
    # a wall 0.55 m away is all the detection sees: its returns would move it further than allowed
    ys = np.linspace(-0.3, 0.3, 15)
    wall = np.array([[truth[0] + 0.55, truth[1] + y, z, 10.0] for y in ys for z in np.arange(0.3, 1.8, 0.1)],
                    np.float32)
    assert np.hypot(*(wall[:, :2].mean(0) - truth)) > REFINE_MAX_SHIFT_M
    out = refine_small_objects([detection(truth)], wall, SENSOR)
    assert out[0].center[:2].tolist() == pytest.approx(truth.tolist())


def test_a_cone_on_a_slope_uses_its_own_box_for_the_height_band():
    truth = np.array([8.0, -2.0])
    pts = person(truth, radius=0.2, height=0.7, ground_z=0.6)      # the road rises 0.6 m there
    det = detection(truth + [-0.12, 0.12], 'cone', (0.4, 0.4, 0.7), z=0.95)
    out = refine_small_objects([det], pts, SENSOR)
    assert np.hypot(*(np.asarray(out[0].center[:2]) - truth)) < 0.06


def test_the_learned_lidar_path_refines_in_base_link_and_keeps_the_network_boxes_if_refining_fails(monkeypatch):
    """LearnedLidarDetector takes the sweep in the LiDAR frame: the returns are moved to base_link
    with the mount before they are compared with the network's boxes (base_link)."""
    from types import SimpleNamespace

    import fmdrive.perception.lidar_learned as ll
    truth = np.array([10.0, 3.0])
    T = mount()
    sweep = person(truth)
    sweep[:, :3] -= T[:3, 3]                                     # the same returns in the LiDAR frame
    net = SimpleNamespace(detect=lambda base: [detection(truth + [0.2, -0.15])], last_timing_ms={})
    core = ll.LearnedLidarDetector(net, detect_lanes=False)
    result = core.detect(sweep, T)
    assert np.hypot(*(result.objects[0].center[:2] - truth)) < 0.06 and 'refine_ms' in result.timings_ms
    off = ll.LearnedLidarDetector(net, detect_lanes=False, refine_small=False).detect(sweep, T)
    assert off.objects[0].center[:2].tolist() == pytest.approx((truth + [0.2, -0.15]).tolist())

    def broken(*_a, **_k):
        raise FloatingPointError('boom')
    monkeypatch.setattr(ll, 'refine_small_objects', broken)
    kept = core.detect(sweep, T)
    assert kept.objects[0].center[:2].tolist() == pytest.approx((truth + [0.2, -0.15]).tolist())
    assert any('refining small objects failed (FloatingPointError: boom)' in w for w in kept.warnings)


# ------------------------------------------------------------------ obstacles of no class
def test_clusters_no_learned_box_explains_join_as_unknown_obstacles():
    from fmdrive.perception.lidar_learned import unexplained_obstacles
    car = Object3D(center=(10.0, 0.0, 0.75), size=(4.5, 1.9, 1.5), yaw_rad=0.0, label='car', score=0.9)
    crossing = Object3D(center=(30.0, 5.0, 0.75), size=(4.5, 1.9, 1.5), yaw_rad=np.pi / 2, label='car', score=0.9)
    clusters = [
        Object3D(center=(10.3, 0.4, 0.7), size=(3.9, 1.8, 1.4), label='car', score=0.5),        # the same car
        Object3D(center=(30.0, 7.3, 0.7), size=(1.0, 1.8, 1.4), label='unknown', score=0.2),    # its rear, along y
        Object3D(center=(20.0, 5.0, 0.5), size=(0.6, 0.6, 0.9), label='unknown', score=0.2),    # a bin
        Object3D(center=(15.0, -3.0, 0.7), size=(4.4, 1.8, 1.4), label='car', score=0.6),       # missed by the net
        Object3D(center=(10.0, 2.5, 1.0), size=(8.0, 6.0, 2.0), label='unknown', score=0.1),    # car + hedge behind
    ]
    out = unexplained_obstacles(clusters, [car, crossing])
    assert [(tuple(o.center[:2]), o.label) for o in out] == [((20.0, 5.0), 'unknown'), ((15.0, -3.0), 'unknown')]
    assert out[1].size.tolist() == pytest.approx([4.4, 1.8, 1.4]) and out[1].score == 0.6
    assert [o.label for o in unexplained_obstacles(clusters[:1], [])] == ['unknown']


def test_the_learned_path_publishes_a_bin_it_has_no_class_for():
    """A bin by the lane, before the car: the network (faked: it sees the car ahead only) has no class for it; the
    classical clusters run beside it and the bin comes out as `unknown`, the car once."""
    from types import SimpleNamespace

    from fmdrive import warmup
    from fmdrive.perception.lidar_classical import ClassicalLidarDetector, ClassicalLidarParams
    from fmdrive.perception.lidar_learned import LearnedLidarDetector
    T = mount()
    sweep = warmup.sweep(T, beams=64)
    ys, zs = np.meshgrid(np.arange(-0.3, 0.31, 0.04), np.arange(0.05, 0.8, 0.04))
    bin_face = np.c_[np.full(ys.size, 7.0 - 0.3), ys.ravel() - 1.5, zs.ravel(), np.full(ys.size, 0.3)]
    bin_face[:, :3] -= T[:3, 3]                                   # base_link -> the LiDAR frame (no rotation)
    sweep = np.vstack([sweep, bin_face.astype(np.float32)])
    (cx, cy, cz), lwh = warmup.CAR_AHEAD
    seen = Object3D(center=(cx, cy, cz), size=lwh, label='car', score=0.9)
    net = SimpleNamespace(detect=lambda base: [seen], last_timing_ms={})
    classical = ClassicalLidarDetector(ClassicalLidarParams(), T)
    learned_only = LearnedLidarDetector(net, detect_lanes=False).detect(sweep, T)
    assert [o.label for o in learned_only.objects] == ['car']
    hybrid = LearnedLidarDetector(net, detect_lanes=False, classical=classical).detect(sweep, T)
    unknown = [o for o in hybrid.objects if o.label == 'unknown']
    assert [o.label for o in hybrid.objects].count('car') == 1, hybrid.objects
    assert any(np.hypot(o.center[0] - 7.0, o.center[1] + 1.5) < 0.6 for o in unknown), hybrid.objects
    assert not any(np.hypot(o.center[0] - cx, o.center[1] - cy) < 3.0 for o in unknown)
    assert 'classical_ms' in hybrid.timings_ms


def test_a_sweep_the_network_fails_on_gets_the_classical_objects_with_their_classes():
    from types import SimpleNamespace

    from fmdrive import warmup
    from fmdrive.perception.lidar_classical import ClassicalLidarDetector, ClassicalLidarParams
    from fmdrive.perception.lidar_learned import LearnedLidarDetector
    T = mount()

    def broken(base):
        raise RuntimeError('ORT session lost')
    net = SimpleNamespace(detect=broken, last_timing_ms={})
    sweep = warmup.sweep(T, beams=64)
    classical = ClassicalLidarDetector(ClassicalLidarParams(), T)
    result = LearnedLidarDetector(net, detect_lanes=False, classical=classical).detect(sweep, T)
    assert [o.label for o in result.objects] == [o.label for o in classical.detect(sweep, T).objects]
    assert 'car' in [o.label for o in result.objects]
    assert any("learned LiDAR encoder failed (RuntimeError: ORT session lost); the classical path's objects" in w
               for w in result.warnings)
