"""The one TF buffer: chains of any frame ids, /tf interpolation, fallback and disagreement, cameras."""
import numpy as np
import pytest

from fmdrive.calibration.extrinsics import Extrinsics
from fmdrive.geometry import make_T, quat_to_rot, rot_z
from fmdrive.tf import TransformBuffer, TransformError, is_body_convention

R_OPTICAL_IN_BASE = quat_to_rot([-0.5, 0.5, -0.5, 0.5])   # base <- camera_optical (z fwd, x right, y down)


def chain_buffer():
    buf = TransformBuffer()
    buf.set_transform('base_link', 'lidar_top', make_T(rot_z(np.pi / 2), [1.0, 0.0, 1.8]))   # nuScenes-like: x right
    buf.set_transform('lidar_top', 'cam_front', make_T(R_OPTICAL_IN_BASE @ np.eye(3), [0.5, 0.0, -0.3]))
    return buf


def test_a_chain_of_transforms_is_composed_in_both_directions():
    buf = chain_buffer()
    p_cam = np.array([0.0, 0.0, 10.0, 1.0])                       # 10 m ahead of the camera
    T_base_cam = buf.lookup('base_link', 'cam_front')
    np.testing.assert_allclose(T_base_cam, buf.lookup('base_link', 'lidar_top') @ buf.lookup('lidar_top', 'cam_front'))
    np.testing.assert_allclose(buf.lookup('cam_front', 'base_link') @ T_base_cam, np.eye(4), atol=1e-12)
    # sibling lookups go through the common ancestor
    buf.set_transform('base_link', 'imu', make_T(t=[0.2, 0.0, 0.5]))
    np.testing.assert_allclose(buf.lookup('imu', 'cam_front') @ p_cam,
                               np.linalg.inv(buf.lookup('base_link', 'imu')) @ T_base_cam @ p_cam)


def test_unknown_frames_and_separate_trees_are_named_in_the_error():
    buf = chain_buffer()
    with pytest.raises(TransformError, match="unknown frame 'velodyne'.*known frames: base_link, cam_front"):
        buf.lookup('base_link', 'velodyne')
    buf.set_transform('map', 'odom', np.eye(4))
    with pytest.raises(TransformError, match='different trees'):
        buf.lookup('odom', 'lidar_top')


def test_invalid_transforms_are_refused_and_loops_never_form():
    buf = chain_buffer()
    with pytest.raises(TransformError, match='finite'):
        buf.set_transform('base_link', 'x', np.full((4, 4), np.nan))
    with pytest.raises(TransformError, match='rotation'):
        buf.set_transform('base_link', 'x', np.diag([2.0, 1, 1, 1]))
    # a transform that contradicts the tree replaces the edge it contradicts: the newest wins, no loop
    buf.set_transform('cam_front', 'base_link', np.eye(4))
    np.testing.assert_allclose(buf.lookup('cam_front', 'base_link'), np.eye(4))
    assert buf.replaced == ['base_link -> lidar_top dropped: cam_front -> base_link arrived after it']
    assert buf.add_transforms([('base_link', 'base_link', np.eye(4)), ('a', 'b', np.eye(4))]) == 1


def test_a_stray_transform_cannot_lock_the_true_calibration_out():
    buf = TransformBuffer()
    buf.set_transform('map', 'lidar', np.eye(4))
    buf.set_transform('lidar', 'base_link', np.eye(4))       # base_link under lidar: garbage
    buf.set_transform('base_link', 'lidar', make_T(t=[1.0, 0, 1.9]))   # the truth arrives
    np.testing.assert_allclose(buf.lookup('base_link', 'lidar')[:3, 3], [1.0, 0, 1.9])
    assert buf.source_of('base_link', 'lidar') == 'tf_static'


def test_dynamic_transforms_are_interpolated_at_the_stamp():
    buf = TransformBuffer()
    buf.set_transform('odom', 'base_link', make_T(t=[0.0, 0, 0]), stamp_ns=0, static=False)
    buf.set_transform('odom', 'base_link', make_T(rot_z(0.2), [1.0, 0, 0]), stamp_ns=100_000_000, static=False)
    T = buf.lookup('odom', 'base_link', 50_000_000)
    np.testing.assert_allclose(T[:3, 3], [0.5, 0, 0], atol=1e-9)
    np.testing.assert_allclose(np.arctan2(T[1, 0], T[0, 0]), 0.1, atol=1e-9)
    np.testing.assert_allclose(buf.lookup('odom', 'base_link')[:3, 3], [1.0, 0, 0])   # latest


def test_yaml_fallback_is_replaced_by_tf_static_and_a_disagreement_is_reported_once():
    yaml = Extrinsics('base_link', {'lidar': make_T(t=[1.0, 0, 1.9])}, source='calibration/extrinsics.yaml')
    buf = TransformBuffer.from_extrinsics(yaml)
    assert buf.source_of('base_link', 'lidar') == 'calibration/extrinsics.yaml'
    buf.set_transform('base_link', 'lidar', make_T(t=[1.2, 0, 1.7]))
    assert buf.source_of('base_link', 'lidar') == 'tf_static'
    np.testing.assert_allclose(buf.lookup('base_link', 'lidar')[:3, 3], [1.2, 0, 1.7])
    assert len(buf.disagreements) == 1 and 'calibration/extrinsics.yaml' in buf.disagreements[0]
    buf.add_extrinsics(yaml)    # the fallback never overrides what was published
    np.testing.assert_allclose(buf.lookup('base_link', 'lidar')[:3, 3], [1.2, 0, 1.7])


def test_a_body_convention_camera_frame_is_given_its_optical_pose():
    buf = TransformBuffer()
    buf.set_transform('base_link', 'camera', make_T(t=[1.5, 0, 1.4]))                  # x fwd, z up
    buf.set_transform('base_link', 'camera_optical', make_T(R_OPTICAL_IN_BASE, [1.5, 0, 1.4]))
    assert is_body_convention(buf.lookup('base_link', 'camera'))
    assert not is_body_convention(buf.lookup('base_link', 'camera_optical'))
    np.testing.assert_allclose(buf.optical_T('base_link', 'camera'), buf.optical_T('base_link', 'camera_optical'),
                               atol=1e-12)
