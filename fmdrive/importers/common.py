"""What every importer shares: a frame of sensor data, the ground-truth file, the bag writing.

An importer turns its dataset into a stream of `SensorFrame`s (numpy only) plus the static
transforms; `write_run` writes the run dir:

    RUN_DIR/bag/                 rosbag2 MCAP: image, camera_info, points, /tf_static [, /tf, odometry]
    RUN_DIR/ground_truth.json    labels, when the dataset has them (docs/ground_truth_format.md)
    RUN_DIR/import.json          what was imported from where (frames, frame ids, source paths)

Topics are the stack's own (fmdrive.config.TOPICS), so `fmdrive replay RUN_DIR/bag` feeds the graph
as it is; frame ids are the dataset's, and the TF tree says how they hang together.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmdrive import config
from fmdrive.geometry import box_corners_3d, inv_T, rot_to_quat
from fmdrive.objects import EgoState

GT_FORMAT = 'fmdrive-ground-truth'
GT_VERSION = 1


class DatasetError(ValueError):
    """A dataset folder or file that cannot be imported; the message says what is wrong."""


@dataclass
class SensorFrame:
    """One LiDAR sweep with the camera image taken with it, as the dataset gives them.

    points_lidar (N, 4|5) x, y, z, intensity [, ring] in lidar_frame; image_rgb (H, W, 3) uint8;
    camera: CameraModel (frame_id = the camera frame); objects_base: labelled boxes in base_link at
    the LiDAR stamp (centre of the box, size l/w/h, yaw about base_link z), each with attributes
    `num_lidar_points`/`in_camera` computed here when the dataset does not give them;
    T_odom_base: the vehicle pose at the LiDAR stamp (None: no poses in the dataset); transforms:
    [(parent, child, T)] that change between frames (published on /tf at the LiDAR stamp)."""
    stamp_ns: int
    points_lidar: np.ndarray
    lidar_frame: str
    image_rgb: np.ndarray | None = None
    image_stamp_ns: int | None = None
    camera: object = None
    objects_base: list | None = None
    object_extras: list | None = None            # one dict per object (source_label, ...)
    T_odom_base: np.ndarray | None = None
    speed_mps: float = 0.0
    yaw_rate_rps: float = 0.0
    transforms: list = field(default_factory=list)
    odometry: list = field(default_factory=list)  # extra [(stamp_ns, T_odom_base, speed, yaw_rate)]


# ------------------------------------------------------------------ geometry helpers
def yaw_of(T) -> float:
    return float(np.arctan2(T[1, 0], T[0, 0]))


def ego_of(T_odom_base, speed_mps: float = 0.0, yaw_rate_rps: float = 0.0) -> EgoState:
    """The 2D ego state eval uses (x, y, yaw of base_link in odom)."""
    if T_odom_base is None:
        return EgoState()
    return EgoState(float(T_odom_base[0, 3]), float(T_odom_base[1, 3]), yaw_of(T_odom_base),
                    float(speed_mps), float(yaw_rate_rps))


def points_in_boxes(points_xyz, objects) -> np.ndarray:
    """(M,) number of points inside each box (same frame as the boxes; yaw about z)."""
    pts = np.asarray(points_xyz, dtype=np.float64)[:, :3]
    counts = np.zeros(len(objects), np.int64)
    for k, o in enumerate(objects):                  # a few boxes per frame; points vectorised
        c, s = np.cos(o.yaw_rad), np.sin(o.yaw_rad)
        d = pts - o.center
        x = c * d[:, 0] + s * d[:, 1]
        y = -s * d[:, 0] + c * d[:, 1]
        inside = (np.abs(x) <= o.size[0] / 2) & (np.abs(y) <= o.size[1] / 2) & (np.abs(d[:, 2]) <= o.size[2] / 2)
        counts[k] = int(inside.sum())
    return counts


def boxes_in_camera(objects_base, camera, T_camera_base) -> np.ndarray:
    """(M,) bool: any corner of the box projects into the image in front of the camera."""
    out = np.zeros(len(objects_base), bool)
    if camera is None or T_camera_base is None:
        return out
    for k, o in enumerate(objects_base):
        corners = box_corners_3d(o.center, o.size, o.yaw_rad)
        pc = corners @ T_camera_base[:3, :3].T + T_camera_base[:3, 3]
        _, _, in_image = camera.project(pc)
        out[k] = bool(in_image.any())
    return out


def gt_objects(frame: SensorFrame, T_base_lidar, T_camera_base) -> list[dict]:
    """The frame's labelled boxes as ground-truth dicts in odom (via the 2D ego pose, which is the
    contract eval uses: base_link = inverse(pose2d(ego)) @ odom)."""
    objs = frame.objects_base or []
    extras = frame.object_extras or [{} for _ in objs]
    pts_base = frame.points_lidar[:, :3] @ T_base_lidar[:3, :3].T + T_base_lidar[:3, 3]
    counts = points_in_boxes(pts_base, objs)
    in_cam = boxes_in_camera(objs, frame.camera, T_camera_base)
    ego = ego_of(frame.T_odom_base)
    T_odom_base2d = ego.T_odom_base()
    out = []
    for o, extra, n, seen in zip(objs, extras, counts, in_cam):
        d = o.transformed(T_odom_base2d).to_dict()
        d.pop('score', None)
        d['num_lidar_points'] = int(extra.pop('num_lidar_points', n))
        d['in_camera'] = bool(seen)
        d.update(extra)
        out.append(d)
    return out


# ------------------------------------------------------------------ messages
def odometry_msg(stamp_ns: int, T_odom_base, speed_mps: float, yaw_rate_rps: float,
                 odom: str, base: str):
    """nav_msgs/Odometry with the full 3D pose (datasets give roll and pitch too)."""
    from nav_msgs.msg import Odometry

    from fmdrive.msgs import ns_to_stamp
    msg = Odometry(child_frame_id=base)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = odom
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = (float(v) for v in T_odom_base[:3, 3])
    q.x, q.y, q.z, q.w = (float(v) for v in rot_to_quat(T_odom_base[:3, :3]))
    msg.twist.twist.linear.x = float(speed_mps)
    msg.twist.twist.angular.z = float(yaw_rate_rps)
    return msg


# ------------------------------------------------------------------ the run dir
def prepare_run_dir(out_dir, overwrite: bool) -> Path:
    out = Path(out_dir)
    if (out / 'bag').exists():
        if not overwrite:
            raise DatasetError(f'{out / "bag"} exists already; choose another -o or pass --overwrite')
        shutil.rmtree(out / 'bag')
    for name in ('ground_truth.json', 'import.json'):
        if (out / name).exists() and overwrite:
            (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_run(out_dir, frames, static_transforms: list, *, source: str, dataset: str,
              total: int | None = None, progress: bool = True, overwrite: bool = False,
              base: str = config.FRAMES['base'], odom: str = config.FRAMES['odom'],
              labelled: bool = False, extra_summary: dict | None = None) -> dict:
    """Write the frames (an iterable of SensorFrame) into RUN_DIR/bag and, if labelled,
    RUN_DIR/ground_truth.json. static_transforms: [(parent, child, T)] for /tf_static (the first
    frame's stamp). Returns the summary also written to RUN_DIR/import.json."""
    from tqdm import tqdm

    from fmdrive.bags.writer import BagWriter
    from fmdrive.msgs import fields_to_camera_info, rgb_to_image, transforms_to_tf, xyzi_to_pointcloud2
    from fmdrive.tf import TransformBuffer

    out = prepare_run_dir(out_dir, overwrite)
    T = config.TOPICS
    buf = TransformBuffer()
    buf.add_transforms(static_transforms)
    gt_frames, n, lidar_frame, camera_frame = [], 0, None, None
    with BagWriter(out / 'bag') as bag:
        for frame in tqdm(frames, total=total, desc=f'import {dataset}', unit='frame', disable=not progress):
            stamp = int(frame.stamp_ns)
            if n == 0:
                first_stamp = stamp
                if static_transforms:
                    bag.write(T['tf_static'], transforms_to_tf(static_transforms, stamp), stamp)
            for parent, child, T_pc in frame.transforms:
                buf.set_transform(parent, child, T_pc, stamp, static=False)
            if frame.transforms:
                bag.write(T['tf'], transforms_to_tf(frame.transforms, stamp), stamp)
            for o_stamp, T_ob, v, w in sorted(frame.odometry, key=lambda x: x[0]):
                bag.write(T['odometry'], odometry_msg(o_stamp, T_ob, v, w, odom, base), o_stamp)
                bag.write(T['tf'], transforms_to_tf([(odom, base, T_ob)], o_stamp), o_stamp)
            if frame.T_odom_base is not None:
                bag.write(T['odometry'], odometry_msg(stamp, frame.T_odom_base, frame.speed_mps,
                                                      frame.yaw_rate_rps, odom, base), stamp)
                bag.write(T['tf'], transforms_to_tf([(odom, base, frame.T_odom_base)], stamp), stamp)
            if frame.image_rgb is not None and frame.camera is not None:
                i_stamp = int(frame.image_stamp_ns if frame.image_stamp_ns is not None else stamp)
                fields = frame.camera.to_camera_info_fields()
                camera_frame = fields['frame_id']
                bag.write(T['camera_info'], fields_to_camera_info(fields, i_stamp), i_stamp)
                bag.write(T['image'], rgb_to_image(frame.image_rgb, i_stamp, camera_frame), i_stamp)
            lidar_frame = frame.lidar_frame
            pts = np.asarray(frame.points_lidar, dtype=np.float32)
            bag.write(T['points'], xyzi_to_pointcloud2(pts[:, :5] if pts.shape[1] >= 5 else pts[:, :4],
                                                       stamp, frame.lidar_frame), stamp)
            if labelled:
                T_base_lidar = buf.lookup(base, frame.lidar_frame, stamp)
                T_camera_base = (inv_T(buf.optical_T(base, camera_frame, stamp))
                                 if frame.camera is not None and camera_frame else None)
                gt_frames.append({'stamp_ns': stamp, 'ego': vars(ego_of(frame.T_odom_base, frame.speed_mps,
                                                                       frame.yaw_rate_rps)),
                                  'objects': gt_objects(frame, T_base_lidar, T_camera_base)})
            n += 1
    if n == 0:
        shutil.rmtree(out / 'bag', ignore_errors=True)
        raise DatasetError(f'{source}: no frames to import')
    summary = {'dataset': dataset, 'source': str(source), 'frames': n, 'bag': str(out / 'bag'),
               'lidar_frame': lidar_frame, 'camera_frame': camera_frame, 'base_frame': base,
               'first_stamp_ns': first_stamp, 'ground_truth': None, **(extra_summary or {})}
    if labelled:
        gt = {'format': GT_FORMAT, 'version': GT_VERSION, 'source': f'{dataset}: {source}',
              'frames_in': odom, 'base_frame': base,
              'scenario': {'kind': dataset, 'name': Path(str(source)).name},
              'frames': gt_frames}
        (out / 'ground_truth.json').write_text(json.dumps(gt))
        summary['ground_truth'] = str(out / 'ground_truth.json')
        summary['objects'] = sum(len(f['objects']) for f in gt_frames)
    (out / 'import.json').write_text(json.dumps(summary, indent=1))
    return summary


def read_image(path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'image {path} not found')
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert('RGB'))
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f'cannot read image {path}: {e}') from None


def pose_T(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, float)
    T[:3, 3] = np.asarray(t, float).reshape(3)
    return T

