"""fmdrive.msgs: numpy <-> ROS message conversion (message classes only, no node, no DDS)."""
import array

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, PointCloud2, PointField

from fmdrive import msgs
from fmdrive.geometry import make_T, quat_to_rot
from fmdrive.msgs import MessageError
from fmdrive.objects import EgoState, Lane, Object3D, Plan, Scene

STAMP_NS = 1_700_000_000_123_456_789


def wire(msg):
    """The message as a subscriber gets it: serialised to CDR and back."""
    return deserialize_message(serialize_message(msg), type(msg))


def rng_image(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def cloud_msg(records: np.ndarray, fields, point_step, height=1, row_step=None,
              bigendian=False, data=None):
    """A PointCloud2 around a raw structured array (any layout the test wants)."""
    width = records.nbytes // point_step // height
    msg = PointCloud2(height=height, width=width, is_bigendian=bigendian, point_step=point_step,
                      row_step=row_step or point_step * width, is_dense=False)
    msg.fields = [PointField(name=n, offset=o, datatype=t, count=1) for n, o, t in fields]
    msg.data = array.array('B', records.tobytes() if data is None else data)
    return msg


# ---------------------------------------------------------------- stamps
def test_stamp_round_trip_keeps_every_nanosecond():
    stamp = msgs.ns_to_stamp(STAMP_NS)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert msgs.stamp_to_ns(stamp) == STAMP_NS


# ---------------------------------------------------------------- images
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_colour_image_round_trip_returns_the_same_rgb(encoding):
    rgb = rng_image()
    msg = wire(msgs.rgb_to_image(rgb, STAMP_NS, 'camera_optical', encoding))
    assert msg.encoding == encoding and msgs.stamp_to_ns(msg.header.stamp) == STAMP_NS
    np.testing.assert_array_equal(msgs.image_to_rgb(msg), rgb)


def test_mono8_image_becomes_grey_rgb():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = Image(height=3, width=4, encoding='mono8', step=4)
    msg.data = array.array('B', grey.tobytes())
    rgb = msgs.image_to_rgb(msg)
    assert rgb.shape == (3, 4, 3)
    np.testing.assert_array_equal(rgb, np.repeat(grey[:, :, None], 3, axis=2))


def test_rgb8_image_is_returned_without_copying_the_data():
    msg = msgs.rgb_to_image(rng_image(), STAMP_NS, 'camera_optical')
    rgb = msgs.image_to_rgb(msg)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))


def test_image_row_padding_is_skipped():
    rgb = rng_image(4, 5)
    padded = np.zeros((4, 5 * 3 + 7), np.uint8)
    padded[:, :15] = rgb.reshape(4, 15)
    msg = Image(height=4, width=5, encoding='rgb8', step=22)
    msg.data = array.array('B', padded.tobytes())
    np.testing.assert_array_equal(msgs.image_to_rgb(msg), rgb)


@pytest.mark.parametrize('change, words', [
    ({'encoding': '16UC1'}, 'not supported'),
    ({'encoding': 'yuv422'}, 'not supported'),
    ({'width': 0}, 'zero size'),
    ({'height': 0}, 'zero size'),
    ({'step': 14}, 'step 14 is smaller'),
    ({'data': bytes(5 * 3 * 6 - 1)}, 'truncated'),
])
def test_bad_image_raises_message_error_saying_what_is_wrong(change, words):
    msg = msgs.rgb_to_image(rng_image(6, 5), STAMP_NS, 'camera_optical')
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(MessageError, match=words):
        msgs.image_to_rgb(msg)


def test_non_rgb_array_is_refused_when_encoding():
    with pytest.raises(MessageError, match='uint8'):
        msgs.rgb_to_image(np.zeros((4, 4, 3), np.float32), 0, 'camera_optical')


# ---------------------------------------------------------------- point clouds
def test_cloud_round_trip_with_and_without_ring():
    rng = np.random.default_rng(1)
    xyzi = rng.normal(size=(100, 4)).astype(np.float32)
    back = msgs.pointcloud2_to_xyzi(wire(msgs.xyzi_to_pointcloud2(xyzi, STAMP_NS, 'lidar')))
    np.testing.assert_array_equal(back, xyzi)
    xyzir = np.c_[xyzi, rng.integers(0, 64, 100)].astype(np.float32)
    msg = wire(msgs.xyzi_to_pointcloud2(xyzir, STAMP_NS, 'lidar'))
    assert msg.is_dense and msg.header.frame_id == 'lidar'
    assert [f.name for f in msg.fields] == ['x', 'y', 'z', 'intensity', 'ring']
    np.testing.assert_array_equal(msgs.pointcloud2_to_xyzi(msg, with_ring=True), xyzir)


def test_cloud_without_intensity_gets_zero_intensity_and_ring():
    rec = np.array([(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)], dtype='<f4')
    msg = cloud_msg(rec, [('x', 0, 7), ('y', 4, 7), ('z', 8, 7)], 12)
    out = msgs.pointcloud2_to_xyzi(msg, with_ring=True)
    np.testing.assert_array_equal(out, [[1, 2, 3, 0, 0], [4, 5, 6, 0, 0]])


def test_cloud_fields_at_unusual_offsets_and_integer_intensity_are_read():
    dt = np.dtype({'names': ['intensity', 'z', 'x', 'y', 'ring'],
                   'formats': ['u1', '<f4', '<f4', '<f4', '<u2'],
                   'offsets': [0, 4, 12, 20, 26], 'itemsize': 32})
    rec = np.zeros(3, dt)
    rec['x'], rec['y'], rec['z'] = [1, 2, 3], [4, 5, 6], [7, 8, 9]
    rec['intensity'], rec['ring'] = [10, 20, 255], [0, 31, 63]
    msg = cloud_msg(rec, [('intensity', 0, PointField.UINT8), ('z', 4, 7), ('x', 12, 7),
                          ('y', 20, 7), ('ring', 26, PointField.UINT16)], 32)
    out = msgs.pointcloud2_to_xyzi(msg, with_ring=True)
    np.testing.assert_array_equal(out, [[1, 4, 7, 10, 0], [2, 5, 8, 20, 31], [3, 6, 9, 255, 63]])


def test_float64_cloud_is_converted_to_float32():
    rec = np.array([(1.5, -2.25, 3.0, 0.5)], dtype='<f8')
    msg = cloud_msg(rec, [('x', 0, 8), ('y', 8, 8), ('z', 16, 8), ('intensity', 24, 8)], 32)
    out = msgs.pointcloud2_to_xyzi(msg)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.5, -2.25, 3.0, 0.5]])


def test_big_endian_cloud_is_decoded():
    rec = np.array([(1.0, 2.0, 3.0, 4.0), (-1.0, -2.0, -3.0, 40.0)], dtype='>f4')
    msg = cloud_msg(rec, [('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('intensity', 12, 7)], 16,
                    bigendian=True)
    np.testing.assert_array_equal(msgs.pointcloud2_to_xyzi(msg), rec.astype('<f4'))


def test_organised_cloud_with_row_padding_is_read_row_by_row():
    height, width, point_step, row_step = 3, 4, 16, 4 * 16 + 8
    xyzi = np.arange(height * width * 4, dtype=np.float32).reshape(height, width, 4)
    rows = np.zeros((height, row_step), np.uint8)
    rows[:, :width * point_step] = xyzi.view(np.uint8).reshape(height, -1)
    msg = cloud_msg(xyzi.reshape(-1), [('x', 0, 7), ('y', 4, 7), ('z', 8, 7),
                                       ('intensity', 12, 7)],
                    point_step, height=height, row_step=row_step, data=rows.tobytes())
    msg.width = width
    np.testing.assert_array_equal(msgs.pointcloud2_to_xyzi(msg), xyzi.reshape(-1, 4))


def test_points_with_nan_or_inf_coordinates_are_dropped():
    xyzi = np.array([[1, 1, 1, 1], [np.nan, 0, 0, 1], [2, 2, 2, 2], [0, np.inf, 0, 1]],
                    np.float32)
    out = msgs.pointcloud2_to_xyzi(msgs.xyzi_to_pointcloud2(xyzi, 0, 'lidar'))
    np.testing.assert_array_equal(out, [[1, 1, 1, 1], [2, 2, 2, 2]])


def test_organised_ouster_like_cloud_with_nan_returns_time_and_padding_is_read():
    # 2 rings x 3 columns, point_step 48: x y z, 4 bytes padding, intensity float, t uint32,
    # reflectivity/ring/ambient uint16, range uint32 - as the Ouster driver publishes it
    dt = np.dtype({'names': ['x', 'y', 'z', 'intensity', 't', 'reflectivity', 'ring', 'ambient'],
                   'formats': ['<f4', '<f4', '<f4', '<f4', '<u4', '<u2', '<u2', '<u2'],
                   'offsets': [0, 4, 8, 16, 20, 24, 26, 28], 'itemsize': 48})
    rec = np.zeros(6, dt)
    rec['x'], rec['y'], rec['z'] = np.arange(6) + 1.0, 2.0, -1.0
    rec['intensity'] = [0.1, 0.5, 0.9, 0.2, 0.3, 0.4]                 # 0..1 reflectivity
    rec['t'], rec['ring'] = np.arange(6) * 1000, [0, 0, 0, 1, 1, 1]
    rec['x'][[1, 4]] = np.nan                                          # no return: NaN point
    fields = [('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('intensity', 16, 7), ('t', 20, 6),
              ('reflectivity', 24, 4), ('ring', 26, 4), ('ambient', 28, 4)]
    msg = cloud_msg(rec, fields, 48, height=2)
    out = msgs.pointcloud2_to_xyzi(msg, with_ring=True)
    np.testing.assert_allclose(out, [[1, 2, -1, 0.1, 0], [3, 2, -1, 0.9, 0],
                                     [4, 2, -1, 0.2, 1], [6, 2, -1, 0.4, 1]], rtol=1e-6)


@pytest.mark.parametrize('kind, datatype, values', [
    ('<u2', PointField.UINT16, [0, 300, 65535]), ('u1', PointField.UINT8, [0, 17, 255]),
    ('<f4', PointField.FLOAT32, [0.0, 0.25, 1.0]), ('<f4', PointField.FLOAT32, [0.0, 99.0, 255.0])])
def test_intensity_of_any_type_and_scale_is_kept_raw(kind, datatype, values):
    # Hesai-like: x y z intensity ring, then a float64 timestamp; the value is never rescaled
    dt = np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring', 'timestamp'],
                   'formats': ['<f4', '<f4', '<f4', kind, '<u2', '<f8'],
                   'offsets': [0, 4, 8, 12, 16, 24], 'itemsize': 32})
    rec = np.zeros(3, dt)
    rec['x'], rec['intensity'], rec['timestamp'] = [1, 2, 3], values, 1.7e9
    msg = cloud_msg(rec, [('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('intensity', 12, datatype),
                          ('ring', 16, PointField.UINT16), ('timestamp', 24, PointField.FLOAT64)], 32)
    out = msgs.pointcloud2_to_xyzi(msg)
    np.testing.assert_allclose(out[:, 3], np.asarray(values, np.float32))
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3])


def test_empty_cloud_gives_an_empty_array_not_an_error():
    msg = msgs.xyzi_to_pointcloud2(np.zeros((0, 4), np.float32), 0, 'lidar')
    assert msgs.pointcloud2_to_xyzi(msg).shape == (0, 4)
    assert msgs.pointcloud2_to_xyzi(msg, with_ring=True).shape == (0, 5)


def test_cloud_without_z_raises_message_error():
    rec = np.zeros(2, dtype='<f4')
    msg = cloud_msg(rec, [('x', 0, 7), ('y', 4, 7)], 8)
    with pytest.raises(MessageError, match='no field z'):
        msgs.pointcloud2_to_xyzi(msg)


def test_cloud_with_point_step_too_small_for_its_fields_raises_message_error():
    msg = msgs.xyzi_to_pointcloud2(np.zeros((4, 4), np.float32), 0, 'lidar')
    msg.point_step = 12
    with pytest.raises(MessageError, match='does not fit in point_step 12'):
        msgs.pointcloud2_to_xyzi(msg)


def test_truncated_cloud_raises_message_error():
    msg = msgs.xyzi_to_pointcloud2(np.zeros((10, 4), np.float32), 0, 'lidar')
    msg.data = msg.data[:-1]
    with pytest.raises(MessageError, match='truncated'):
        msgs.pointcloud2_to_xyzi(msg)


# ---------------------------------------------------------------- camera_info, odometry
def test_camera_info_fields_round_trip():
    fields = {'width': 640, 'height': 360, 'k': [400.0, 0, 319.5, 0, 400.0, 179.5, 0, 0, 1],
              'd': [0.1, -0.01, 0, 0, 0], 'r': [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
              'p': [400.0, 0, 319.5, 0, 0, 400.0, 179.5, 0, 0, 0, 1, 0],
              'distortion_model': 'plumb_bob', 'frame_id': 'camera_optical'}
    msg = wire(msgs.fields_to_camera_info(fields, STAMP_NS))
    assert msgs.stamp_to_ns(msg.header.stamp) == STAMP_NS
    assert msgs.camera_info_to_fields(msg) == fields


def test_camera_info_with_wrong_k_length_raises_message_error():
    with pytest.raises(MessageError, match='k needs 9 values'):
        msgs.fields_to_camera_info({'width': 1, 'height': 1, 'k': [1, 2, 3],
                                    'frame_id': 'camera_optical'}, 0)


def test_odometry_round_trip_gives_the_same_ego_state():
    ego = EgoState(x=12.5, y=-3.0, yaw_rad=2.5, speed_mps=8.25, yaw_rate_rps=-0.125)
    msg = wire(msgs.ego_to_odometry(STAMP_NS, ego))
    assert (msg.header.frame_id, msg.child_frame_id) == ('odom', 'base_link')
    stamp_ns, back = msgs.odometry_to_ego(msg)
    assert stamp_ns == STAMP_NS
    assert back.x == ego.x and back.y == ego.y and back.speed_mps == ego.speed_mps
    assert back.yaw_rad == pytest.approx(ego.yaw_rad) and back.yaw_rate_rps == ego.yaw_rate_rps


# ---------------------------------------------------------------- objects, scene, plan
def make_objects():
    car = Object3D(center=(10.0, 1.5, 0.8), size=(4.5, 1.9, 1.6), yaw_rad=0.25, label='car',
                   score=0.875, id=7, velocity=(5.0, 0.5, 0.0), acceleration=(-2.5, 0.25, 0.0),
                   box2d=np.array([10.0, 20.0, 110.0, 90.0]),
                   embedding=np.linspace(-1, 1, 384).astype(np.float32), embedding_space='shared')
    cone = Object3D(center=(5.0, -2.0, 0.3), size=(0.3, 0.3, 0.6), label='cone', score=0.5)
    return [car, cone]


def assert_same_objects(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.id, g.label, g.embedding_space) == (w.id, w.label, w.embedding_space)
        np.testing.assert_allclose(g.center, w.center)
        np.testing.assert_allclose(g.size, w.size)
        np.testing.assert_allclose(g.velocity, w.velocity)
        np.testing.assert_allclose(g.acceleration, w.acceleration)
        assert g.yaw_rad == pytest.approx(w.yaw_rad) and g.score == pytest.approx(w.score)
        assert (g.box2d is None) == (w.box2d is None)
        if w.box2d is not None:
            np.testing.assert_allclose(g.box2d, w.box2d)
        assert g.embedding.dtype == np.float32
        np.testing.assert_array_equal(g.embedding, w.embedding)


def test_objects_round_trip_with_embedding_and_box2d():
    objects = make_objects()
    msg = wire(msgs.objects_to_msg(objects, STAMP_NS, 'base_link', 'fusion'))
    assert msg.source == 'fusion' and msg.header.frame_id == 'base_link'
    assert msg.objects[0].has_box2d and not msg.objects[1].has_box2d
    assert_same_objects(msgs.msg_to_objects(msg), objects)


def test_scene_round_trip():
    lane = Lane(offset=1, width_m=3.5, centerline=np.array([[0, 3.5, 0], [10, 3.5, 0],
                                                            [20, 3.6, 0.1]]))
    scene = Scene(stamp_ns=STAMP_NS, ego=EgoState(1.0, 2.0, 0.5, 10.0, 0.02),
                  objects=make_objects(), lanes=[lane], speed_limit_mps=13.5,
                  text='a car ahead in the ego lane')
    back = msgs.msg_to_scene(wire(msgs.scene_to_msg(scene)))
    assert back.stamp_ns == STAMP_NS and back.text == scene.text
    assert back.speed_limit_mps == pytest.approx(13.5)
    assert back.ego.x == 1.0 and back.ego.yaw_rad == pytest.approx(0.5)
    assert back.ego.speed_mps == pytest.approx(10.0)
    assert_same_objects(back.objects, scene.objects)
    assert back.lanes[0].offset == 1 and back.lanes[0].width_m == pytest.approx(3.5)
    np.testing.assert_allclose(back.lanes[0].centerline, lane.centerline)


def make_plan():
    t_s = np.arange(1, 7) * 0.5
    poses = np.c_[t_s * 10, t_s * 0.5, np.full(6, 0.05)]
    return Plan(stamp_ns=STAMP_NS, poses=poses, t_s=t_s, speeds_mps=np.full(6, 10.0),
                source='llm', status='ok', deadline_met=False, cost=1.5, planning_time_ms=42.0)


def test_plan_round_trip():
    plan = make_plan()
    back = msgs.msg_to_plan(wire(msgs.plan_to_msg(plan)))
    assert (back.stamp_ns, back.source, back.status, back.deadline_met) == \
        (STAMP_NS, 'llm', 'ok', False)
    np.testing.assert_allclose(back.poses, plan.poses, atol=1e-9)
    np.testing.assert_allclose(back.t_s, plan.t_s)
    np.testing.assert_allclose(back.speeds_mps, plan.speeds_mps)
    assert back.cost == pytest.approx(1.5) and back.planning_time_ms == pytest.approx(42.0)


def test_path_has_one_pose_per_waypoint_stamped_at_its_time():
    plan = make_plan()
    msg = wire(msgs.plan_to_path(plan))
    assert len(msg.poses) == 6 and msg.header.frame_id == 'odom'
    assert [msgs.stamp_to_ns(p.header.stamp) - STAMP_NS for p in msg.poses] == \
        [int(t * 1e9) for t in plan.t_s]
    np.testing.assert_allclose(msgs.path_to_xy_yaw(msg), plan.poses, atol=1e-9)


def test_tf_round_trip_keeps_the_transforms():
    R = quat_to_rot([-0.5, 0.5, -0.5, 0.5])
    transforms = [('base_link', 'lidar', make_T(t=[1.0, 0.0, 1.9])),
                  ('base_link', 'camera_optical', make_T(R, [1.6, 0.0, 1.4]))]
    msg = wire(msgs.transforms_to_tf(transforms, STAMP_NS))
    assert msgs.stamp_to_ns(msg.transforms[0].header.stamp) == STAMP_NS
    back = msgs.tf_to_transforms(msg)
    assert [(p, c) for p, c, _ in back] == [('base_link', 'lidar'), ('base_link', 'camera_optical')]
    for (_, _, T), (_, _, want) in zip(back, transforms):
        np.testing.assert_allclose(T, want, atol=1e-12)
