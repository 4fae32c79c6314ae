"""numpy <-> ROS 2 message conversion: sensor messages in, fmdrive types out, and back.

Every converter is a plain function over the message classes from the ROS wheels
(sensor_msgs, nav_msgs, geometry_msgs, tf2_msgs, fmdrive_msgs); nothing here creates a node.
Sensor input a user (or a bag) can get wrong raises MessageError with a message that says what
was wrong, so nodes can log it and drop the frame.

Speed: large arrays go into messages as array.array(typecode, arr.tobytes()) (0.1 ms for a
1280x720 image; assigning a numpy array costs ~100 ms) and come out with np.frombuffer /
np.ndarray(buffer=...) views, without per-point Python loops.
"""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import (Point, Pose, PoseStamped, Quaternion, Transform, TransformStamped,
                               Vector3)
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from fmdrive_msgs.msg import Lane as LaneMsg
from fmdrive_msgs.msg import LaneArray
from fmdrive_msgs.msg import Object as ObjectMsg
from fmdrive_msgs.msg import ObjectArray
from fmdrive_msgs.msg import Plan as PlanMsg
from fmdrive_msgs.msg import SceneDescription
from fmdrive.geometry import make_T, quat_to_rot, quat_to_yaw, rot_to_quat, yaw_to_quat
from fmdrive.objects import EgoState, Lane, Object3D, Plan, Scene

NS_PER_S = 1_000_000_000


class MessageError(ValueError):
    """A sensor message that cannot be converted; the text says what was wrong."""


# ---------------------------------------------------------------- time and headers
def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (nanosec always in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def _header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# ---------------------------------------------------------------- images
# encoding -> (channels, index of R, G, B in the pixel); mono8 is expanded to grey RGB
_IMAGE_ENCODINGS = {
    'rgb8': (3, (0, 1, 2)),
    'bgr8': (3, (2, 1, 0)),
    'rgba8': (4, (0, 1, 2)),
    'bgra8': (4, (2, 1, 0)),
    'mono8': (1, (0, 0, 0)),
}


def _data_buffer(msg, what: str, step_name: str, step: int, height: int) -> memoryview:
    """msg.data as bytes, checked to hold step*height bytes (MessageError when truncated)."""
    buffer = memoryview(msg.data).cast('B')
    if len(buffer) < step * height:
        raise MessageError(f'{what} data is truncated: {len(buffer)} bytes, expected {step_name}*height = '
                           f'{step}*{height} = {step * height}')
    return buffer


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image (rgb8, bgr8, rgba8, bgra8 or mono8).

    Returns a view on msg.data when the layout allows it (rgb8, also bgr8/rgba8/bgra8 as strided
    views); row padding (step > width * channels) is skipped, never copied. mono8 is copied into
    grey RGB. Do not modify the result if the message is still used elsewhere.
    """
    encoding = msg.encoding.lower()
    if encoding not in _IMAGE_ENCODINGS:
        raise MessageError(f'image encoding {msg.encoding!r} is not supported; publish one of '
                           f'{", ".join(_IMAGE_ENCODINGS)} (e.g. convert with image_proc)')
    channels, rgb_index = _IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise MessageError(f'image has zero size ({width}x{height}); the camera driver sent an '
                           'empty frame')
    if step < width * channels:
        raise MessageError(f'image step {step} is smaller than width*channels = {width}*{channels}'
                           f' = {width * channels} bytes for {encoding}; the header is wrong')
    buffer = _data_buffer(msg, 'image', 'step', step, height)
    pixels = np.ndarray((height, width, channels), dtype=np.uint8, buffer=buffer,
                        strides=(step, channels, 1))
    if encoding == 'mono8':
        return np.repeat(pixels, 3, axis=2)
    if rgb_index == (0, 1, 2):
        return pixels[:, :, :3]
    return pixels[:, :, 2::-1]  # BGR(A) -> RGB as a negative-stride view


def rgb_to_image(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = 'rgb8') -> Image:
    """Image message from (H, W, 3) uint8 RGB, as rgb8, bgr8, rgba8, bgra8 or mono8."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise MessageError(f'expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}')
    encoding = encoding.lower()
    if encoding == 'rgb8':
        pixels = rgb
    elif encoding == 'bgr8':
        pixels = rgb[:, :, ::-1]
    elif encoding in ('rgba8', 'bgra8'):
        pixels = np.empty(rgb.shape[:2] + (4,), np.uint8)
        pixels[:, :, :3] = rgb if encoding == 'rgba8' else rgb[:, :, ::-1]
        pixels[:, :, 3] = 255
    elif encoding == 'mono8':
        grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        pixels = np.clip(np.rint(grey), 0, 255).astype(np.uint8)[:, :, None]
    else:
        raise MessageError(f'cannot encode an image as {encoding!r}; use one of '
                           f'{", ".join(_IMAGE_ENCODINGS)}')
    height, width, channels = pixels.shape
    msg = Image(header=_header(stamp_ns, frame_id), height=height, width=width,
                encoding=encoding, is_bigendian=0, step=width * channels)
    msg.data = array.array('B', np.ascontiguousarray(pixels).tobytes())
    return msg


# ---------------------------------------------------------------- point clouds
_POINTFIELD_DTYPES = {
    PointField.INT8: 'i1', PointField.UINT8: 'u1', PointField.INT16: 'i2',
    PointField.UINT16: 'u2', PointField.INT32: 'i4', PointField.UINT32: 'u4',
    PointField.FLOAT32: 'f4', PointField.FLOAT64: 'f8',
}


def pointcloud2_to_xyzi(msg: PointCloud2, with_ring: bool = False) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity [(N, 5) + ring] of a PointCloud2.

    Reads the fields at any offsets, float32/float64 (any integer type for intensity and ring),
    either byte order, organised clouds (height > 1) with row padding. intensity (and ring) are 0
    when the cloud has no such field. Points with a NaN/inf coordinate are dropped.
    """
    columns = ('x', 'y', 'z', 'intensity') + (('ring',) if with_ring else ())
    fields = {f.name: f for f in msg.fields}
    missing = [c for c in 'xyz' if c not in fields]
    if missing:
        raise MessageError(f'point cloud has no field {"/".join(missing)} (fields: '
                           f'{", ".join(fields) or "none"}); x, y and z are required')
    height, width = int(msg.height), int(msg.width)
    if height * width == 0:
        return np.zeros((0, len(columns)), np.float32)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height == 1 and row_step == 0:
        row_step = width * point_step  # some drivers leave row_step unset for unorganised clouds
    byte_order = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for name in columns:
        field = fields.get(name)
        if field is None:
            continue
        if field.datatype not in _POINTFIELD_DTYPES:
            raise MessageError(f'point cloud field {name!r} has unknown datatype {field.datatype}')
        kind = _POINTFIELD_DTYPES[field.datatype]
        if name in 'xyz' and kind[0] != 'f':
            raise MessageError(f'point cloud field {name!r} must be FLOAT32 or FLOAT64, got '
                               f'datatype {field.datatype}')
        dtype = np.dtype(byte_order + kind)
        if field.offset + dtype.itemsize > point_step:
            raise MessageError(f'point cloud field {name!r} (offset {field.offset}, '
                               f'{dtype.itemsize} bytes) does not fit in point_step {point_step}')
        names.append(name)
        formats.append(dtype)
        offsets.append(field.offset)
    if row_step < width * point_step:
        raise MessageError(f'point cloud row_step {row_step} is smaller than width*point_step = '
                           f'{width}*{point_step}; the header is wrong')
    buffer = _data_buffer(msg, 'point cloud', 'row_step', row_step, height)
    if (names[:4] == ['x', 'y', 'z', 'intensity'] and offsets[:4] == [0, 4, 8, 12]
            and all(f == np.dtype('<f4') for f in formats[:4]) and len(names) == len(columns)
            and not with_ring and point_step % 4 == 0 and row_step == width * point_step):
        # the common packed layout: one strided float32 view, no per-field copies
        xyzi = np.ndarray((height * width, 4), dtype='<f4', buffer=buffer,
                          strides=(point_step, 4))
        return _finite_rows(np.array(xyzi, dtype=np.float32))
    point_dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                            'itemsize': point_step})
    points = np.ndarray((height, width), dtype=point_dtype, buffer=buffer,
                        strides=(row_step, point_step))
    out = np.zeros((height * width, len(columns)), np.float32)
    for i, name in enumerate(columns):
        if name in names:
            out[:, i] = points[name].reshape(-1)
    return _finite_rows(out)


def _finite_rows(points: np.ndarray) -> np.ndarray:
    """points (contiguous) without its rows that hold a NaN/inf; one whole-array check first,
    since a per-row reduction over 4 columns costs more than the copy that made the array."""
    if np.isfinite(points).all():
        return points
    return points[np.isfinite(points).all(axis=1)]


def xyzi_to_pointcloud2(points: np.ndarray, stamp_ns: int, frame_id: str) -> PointCloud2:
    """PointCloud2 of (N, 4) x, y, z, intensity [(N, 5) + ring]: float32 fields, ring uint16.

    Layout: x, y, z, intensity at 0/4/8/12 (point_step 16); with ring, ring at 16 and
    point_step 20 (padded to 4-byte alignment, like common LiDAR drivers).
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] not in (4, 5):
        raise MessageError(f'expected (N, 4) x, y, z, intensity or (N, 5) + ring points, got '
                           f'shape {points.shape}')
    with_ring = points.shape[1] == 5
    fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, name in enumerate(('x', 'y', 'z', 'intensity'))]
    if with_ring:
        fields.append(PointField(name='ring', offset=16, datatype=PointField.UINT16, count=1))
        packed = np.zeros(len(points), np.dtype({'names': ['xyzi', 'ring'],
                                                 'formats': [('<f4', 4), '<u2'],
                                                 'offsets': [0, 16], 'itemsize': 20}))
        packed['xyzi'] = points[:, :4]
        packed['ring'] = points[:, 4]
        point_step = 20
    else:
        packed = np.ascontiguousarray(points, dtype='<f4')
        point_step = 16
    msg = PointCloud2(header=_header(stamp_ns, frame_id), height=1, width=len(points),
                      fields=fields, is_bigendian=False, point_step=point_step,
                      row_step=point_step * len(points), is_dense=True)
    msg.data = array.array('B', packed.tobytes())
    return msg


# ---------------------------------------------------------------- camera_info
def camera_info_to_fields(msg: CameraInfo) -> dict:
    """Plain-list dict of a CameraInfo: width, height, k, d, r, p, distortion_model, frame_id."""
    return {'width': int(msg.width), 'height': int(msg.height),
            'k': [float(v) for v in msg.k], 'd': [float(v) for v in msg.d],
            'r': [float(v) for v in msg.r], 'p': [float(v) for v in msg.p],
            'distortion_model': msg.distortion_model, 'frame_id': msg.header.frame_id}


def fields_to_camera_info(fields: dict, stamp_ns: int) -> CameraInfo:
    """CameraInfo from the dict CameraModel.to_camera_info_fields() returns.

    r defaults to identity and p to [K | 0] when absent.
    """
    missing = [key for key in ('width', 'height', 'k', 'frame_id') if key not in fields]
    if missing:
        raise MessageError(f'camera_info fields lack {", ".join(missing)}')
    k = np.asarray(fields['k'], float).reshape(-1)
    r = np.asarray(fields.get('r', np.eye(3)), float).reshape(-1)
    if 'p' in fields:
        p = np.asarray(fields['p'], float).reshape(-1)
    else:
        p = np.c_[k.reshape(3, 3), np.zeros(3)].reshape(-1) if k.size == 9 else k
    for name, values, n in (('k', k, 9), ('r', r, 9), ('p', p, 12)):
        if values.size != n:
            raise MessageError(f'camera_info {name} needs {n} values, got {values.size}')
    return CameraInfo(header=_header(stamp_ns, fields['frame_id']), width=int(fields['width']),
                      height=int(fields['height']),
                      distortion_model=fields.get('distortion_model', 'plumb_bob'),
                      d=[float(v) for v in fields.get('d', ())], k=k.tolist(), r=r.tolist(),
                      p=p.tolist())


# ---------------------------------------------------------------- odometry
def odometry_to_ego(msg: Odometry) -> tuple[int, EgoState]:
    """(stamp_ns, EgoState): pose in the odometry frame, speed = twist.linear.x."""
    q = msg.pose.pose.orientation
    ego = EgoState(x=float(msg.pose.pose.position.x), y=float(msg.pose.pose.position.y),
                   yaw_rad=quat_to_yaw((q.x, q.y, q.z, q.w)),
                   speed_mps=float(msg.twist.twist.linear.x),
                   yaw_rate_rps=float(msg.twist.twist.angular.z))
    return stamp_to_ns(msg.header.stamp), ego


def ego_to_odometry(stamp_ns: int, ego: EgoState, frame_id: str = 'odom',
                    child: str = 'base_link') -> Odometry:
    msg = Odometry(header=_header(stamp_ns, frame_id), child_frame_id=child)
    msg.pose.pose = _pose2d(ego.x, ego.y, ego.yaw_rad)
    msg.twist.twist.linear.x = float(ego.speed_mps)
    msg.twist.twist.angular.z = float(ego.yaw_rate_rps)
    return msg


def _pose2d(x: float, y: float, yaw_rad: float) -> Pose:
    qx, qy, qz, qw = yaw_to_quat(float(yaw_rad))
    return Pose(position=Point(x=float(x), y=float(y), z=0.0),
                orientation=Quaternion(x=float(qx), y=float(qy), z=float(qz), w=float(qw)))


def _pose_yaw(pose: Pose) -> float:
    q = pose.orientation
    return quat_to_yaw((q.x, q.y, q.z, q.w))


# ---------------------------------------------------------------- objects
def _object_to_msg(obj: Object3D) -> ObjectMsg:
    msg = ObjectMsg(id=int(obj.id), label=obj.label, score=float(obj.score),
                    has_box2d=obj.box2d is not None,
                    has_box3d=bool(np.any(obj.size > 0)),  # camera-only detections have no size
                    center=Point(x=float(obj.center[0]), y=float(obj.center[1]),
                                 z=float(obj.center[2])),
                    size=Vector3(x=float(obj.size[0]), y=float(obj.size[1]),
                                 z=float(obj.size[2])),
                    yaw_rad=float(obj.yaw_rad),
                    velocity=Vector3(x=float(obj.velocity[0]), y=float(obj.velocity[1]),
                                     z=float(obj.velocity[2])),
                    acceleration=Vector3(x=float(obj.acceleration[0]), y=float(obj.acceleration[1]),
                                         z=float(obj.acceleration[2])),
                    embedding_space=obj.embedding_space)
    if obj.box2d is not None:
        msg.box2d = np.asarray(obj.box2d, np.float32).reshape(4)
    embedding = np.asarray(obj.embedding, np.float32).reshape(-1)
    msg.embedding = array.array('f', embedding.tobytes())
    return msg


def _msg_to_object(msg: ObjectMsg) -> Object3D:
    return Object3D(center=(msg.center.x, msg.center.y, msg.center.z),
                    size=(msg.size.x, msg.size.y, msg.size.z), yaw_rad=float(msg.yaw_rad),
                    label=msg.label, score=float(msg.score), id=int(msg.id),
                    velocity=(msg.velocity.x, msg.velocity.y, msg.velocity.z),
                    acceleration=(msg.acceleration.x, msg.acceleration.y, msg.acceleration.z),
                    box2d=np.asarray(msg.box2d, np.float64).copy() if msg.has_box2d else None,
                    embedding=np.frombuffer(msg.embedding, np.float32).copy(),
                    embedding_space=msg.embedding_space)


def objects_to_msg(objects: list, stamp_ns: int, frame_id: str, source: str) -> ObjectArray:
    """fmdrive_msgs/ObjectArray of a list of Object3D (geometry in frame_id)."""
    return ObjectArray(header=_header(stamp_ns, frame_id), source=source,
                       objects=[_object_to_msg(obj) for obj in objects])


def msg_to_objects(msg: ObjectArray) -> list:
    """list[Object3D] of an ObjectArray (embedding float32, box2d when has_box2d)."""
    return [_msg_to_object(obj) for obj in msg.objects]


# ---------------------------------------------------------------- scene
def _lane_to_msg(lane: Lane) -> LaneMsg:
    centerline = np.asarray(lane.centerline, np.float64).reshape(-1, 3)
    return LaneMsg(offset=int(lane.offset), width_m=float(lane.width_m),
                   centerline=[Point(x=float(x), y=float(y), z=float(z)) for x, y, z in centerline.tolist()])


def _msg_to_lane(msg: LaneMsg) -> Lane:
    return Lane(offset=int(msg.offset), width_m=float(msg.width_m),
                centerline=np.array([(p.x, p.y, p.z) for p in msg.centerline], np.float64).reshape(-1, 3))


def lanes_to_msg(lanes: list, stamp_ns: int, frame_id: str, source: str) -> LaneArray:
    return LaneArray(header=_header(stamp_ns, frame_id), source=source, lanes=[_lane_to_msg(ln) for ln in lanes])


def msg_to_lanes(msg: LaneArray) -> list:
    return [_msg_to_lane(ln) for ln in msg.lanes]


def scene_to_msg(scene: Scene, frame_id: str = 'base_link') -> SceneDescription:
    return SceneDescription(header=_header(scene.stamp_ns, frame_id),
                            ego_pose=_pose2d(scene.ego.x, scene.ego.y, scene.ego.yaw_rad),
                            ego_speed_mps=float(scene.ego.speed_mps),
                            ego_yaw_rate_rps=float(scene.ego.yaw_rate_rps),
                            speed_limit_mps=float(scene.speed_limit_mps),
                            objects=[_object_to_msg(obj) for obj in scene.objects],
                            lanes=[_lane_to_msg(ln) for ln in scene.lanes], text=scene.text)


def msg_to_scene(msg: SceneDescription) -> Scene:
    ego = EgoState(x=float(msg.ego_pose.position.x), y=float(msg.ego_pose.position.y),
                   yaw_rad=_pose_yaw(msg.ego_pose), speed_mps=float(msg.ego_speed_mps),
                   yaw_rate_rps=float(msg.ego_yaw_rate_rps))
    return Scene(stamp_ns=stamp_to_ns(msg.header.stamp), ego=ego,
                 objects=[_msg_to_object(obj) for obj in msg.objects],
                 lanes=[_msg_to_lane(ln) for ln in msg.lanes],
                 speed_limit_mps=float(msg.speed_limit_mps), text=msg.text)


# ---------------------------------------------------------------- RViz markers
_MARKER_TYPES = {'cube': Marker.CUBE, 'line_strip': Marker.LINE_STRIP, 'text': Marker.TEXT_VIEW_FACING,
                 'delete_all': Marker.CUBE}


def markers_to_msg(markers: list, stamp_ns: int) -> MarkerArray:
    """visualization_msgs/MarkerArray from fmdrive.visualization.markers_data() dicts."""
    out = MarkerArray()
    for m in markers:
        mk = Marker(ns=m['ns'], id=int(m['id']), type=_MARKER_TYPES[m['type']],
                    action=Marker.DELETEALL if m['action'] == 'deleteall' else Marker.ADD)
        mk.header = _header(stamp_ns, m['frame_id'])
        (px, py, pz), (qx, qy, qz, qw) = m['pose']['position'], m['pose']['orientation']
        mk.pose = Pose(position=Point(x=px, y=py, z=pz), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
        mk.scale = Vector3(x=m['scale'][0], y=m['scale'][1], z=m['scale'][2])
        mk.color = ColorRGBA(r=m['color'][0], g=m['color'][1], b=m['color'][2], a=m['color'][3])
        mk.points = [Point(x=x, y=y, z=z) for x, y, z in m['points']]
        mk.text = m['text']
        lifetime_ns = int(m['lifetime_s'] * NS_PER_S)
        mk.lifetime = Duration(sec=lifetime_ns // NS_PER_S, nanosec=lifetime_ns % NS_PER_S)
        out.markers.append(mk)
    return out


# ---------------------------------------------------------------- plans and paths
def plan_to_msg(plan: Plan, frame_id: str = 'odom') -> PlanMsg:
    poses = np.asarray(plan.poses, np.float64).reshape(-1, 3)
    msg = PlanMsg(header=_header(plan.stamp_ns, frame_id),
                  poses=[_pose2d(x, y, yaw) for x, y, yaw in poses.tolist()],
                  source=plan.source, status=plan.status, deadline_met=bool(plan.deadline_met),
                  cost=float(plan.cost), planning_time_ms=float(plan.planning_time_ms))
    msg.time_from_start_s = array.array('f', np.asarray(plan.t_s, '<f4').tobytes())
    msg.speeds_mps = array.array('f', np.asarray(plan.speeds_mps, '<f4').tobytes())
    return msg


def msg_to_plan(msg: PlanMsg) -> Plan:
    poses = np.array([(p.position.x, p.position.y, _pose_yaw(p)) for p in msg.poses],
                     np.float64).reshape(-1, 3)
    return Plan(stamp_ns=stamp_to_ns(msg.header.stamp), poses=poses,
                t_s=np.frombuffer(msg.time_from_start_s, np.float32).astype(np.float64),
                speeds_mps=np.frombuffer(msg.speeds_mps, np.float32).astype(np.float64),
                source=msg.source, status=msg.status, deadline_met=bool(msg.deadline_met),
                cost=float(msg.cost), planning_time_ms=float(msg.planning_time_ms))


def plan_to_path(plan: Plan, frame_id: str = 'odom') -> Path:
    """nav_msgs/Path: one PoseStamped per waypoint, stamped plan stamp + t_s."""
    poses = np.asarray(plan.poses, np.float64).reshape(-1, 3)
    offsets_ns = np.rint(np.asarray(plan.t_s, np.float64) * NS_PER_S).astype(np.int64)
    return Path(header=_header(plan.stamp_ns, frame_id),
                poses=[PoseStamped(header=_header(int(plan.stamp_ns) + dt_ns, frame_id),
                                   pose=_pose2d(x, y, yaw))
                       for (x, y, yaw), dt_ns in zip(poses.tolist(), offsets_ns.tolist())])


def path_to_xy_yaw(msg: Path) -> np.ndarray:
    """(K, 3) x, y, yaw_rad of a nav_msgs/Path."""
    return np.array([(p.pose.position.x, p.pose.position.y, _pose_yaw(p.pose))
                     for p in msg.poses], np.float64).reshape(-1, 3)


# ---------------------------------------------------------------- tf
def transforms_to_tf(transforms: list, stamp_ns: int) -> TFMessage:
    """TFMessage of [(parent, child, T_parent_child 4x4), ...]."""
    out = []
    for parent, child, T in transforms:
        T = np.asarray(T, np.float64)
        qx, qy, qz, qw = rot_to_quat(T[:3, :3])
        tx, ty, tz = T[:3, 3]
        out.append(TransformStamped(
            header=_header(stamp_ns, parent), child_frame_id=child,
            transform=Transform(translation=Vector3(x=float(tx), y=float(ty), z=float(tz)),
                                rotation=Quaternion(x=float(qx), y=float(qy), z=float(qz),
                                                    w=float(qw)))))
    return TFMessage(transforms=out)


def tf_to_transforms(msg: TFMessage) -> list:
    """[(parent, child, T_parent_child 4x4), ...] of a TFMessage."""
    out = []
    for tf in msg.transforms:
        t, q = tf.transform.translation, tf.transform.rotation
        T = make_T(quat_to_rot((q.x, q.y, q.z, q.w)), (t.x, t.y, t.z))
        out.append((tf.header.frame_id, tf.child_frame_id, T))
    return out
