"""Turn a simulated run into a bag that looks like a user's own drive, not like ours:

- driver topic names (/velodyne_points, /camera/image_raw, /camera/camera_info), offered with the
  sensor-data QoS a driver uses (best effort, volatile; camera_info not latched);
- its own /tf_static with other frame ids and a chain base_link -> lidar_top -> cam_front, the LiDAR
  mounted rotated as nuScenes' is (x right, y forward), the camera frame in body convention
  (x forward, z up) rather than optical, so nothing works unless the TF chain is followed;
- intensity as float 0..1 instead of 0..255, no odometry and no /tf.

The points are re-expressed in the new LiDAR frame, so the scene is physically the same and the
ground truth (boxes in base_link at each stamp) still holds.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from fmdrive import config
from fmdrive.bags.reader import BagReader
from fmdrive.bags.writer import BagWriter
from fmdrive.geometry import inv_T, make_T, rot_z
from fmdrive.msgs import pointcloud2_to_xyzi, transforms_to_tf, xyzi_to_pointcloud2
from fmdrive.tf import R_BODY_OPTICAL

DRIVER_TOPICS = {'points': '/velodyne_points', 'image': '/camera/image_raw', 'camera_info': '/camera/camera_info'}
SENSOR_DATA = {'reliability': 'best_effort', 'depth': 5, 'durability': 'volatile'}
LIDAR_FRAME, CAMERA_FRAME = 'lidar_top', 'cam_front'


def remaps() -> dict:
    """What a user passes to run our graph on this bag: {driver topic: fmdrive topic}."""
    return {topic: config.TOPICS[key] for key, topic in DRIVER_TOPICS.items()}


def make_foreign_run(sim_run: Path, out_run: Path) -> Path:
    """out_run/bag (the user's bag) + out_run/ground_truth.json from a simulated run directory."""
    sim_run, out_run = Path(sim_run), Path(out_run)
    if out_run.exists():
        shutil.rmtree(out_run)
    out_run.mkdir(parents=True)
    shutil.copy(sim_run / 'ground_truth.json', out_run / 'ground_truth.json')
    T = config.TOPICS
    with BagReader(sim_run / 'bag') as reader:
        T_base_lidar_sim = T_base_cam_optical = None
        for _, _, msg in reader.messages([T['tf_static']]):
            for tf in msg.transforms:
                from fmdrive.msgs import tf_to_transforms
                for parent, child, Tpc in tf_to_transforms(type(msg)(transforms=[tf])):
                    if child == config.FRAMES['lidar']:
                        T_base_lidar_sim = Tpc
                    elif child == config.FRAMES['camera']:
                        T_base_cam_optical = Tpc
        # the same sensor origin, turned so that its x axis points right and y forward (nuScenes)
        T_base_lidar = make_T(rot_z(-np.pi / 2), T_base_lidar_sim[:3, 3])
        T_lidar_from_sim = inv_T(T_base_lidar) @ T_base_lidar_sim
        T_base_cam_body = T_base_cam_optical @ inv_T(make_T(R_BODY_OPTICAL))
        T_lidar_cam_body = inv_T(T_base_lidar) @ T_base_cam_body
        with BagWriter(out_run / 'bag') as bag:
            for key, topic in DRIVER_TOPICS.items():
                bag.add_topic(topic, config.TOPIC_TYPES[T[key]], SENSOR_DATA)
            first = True
            for topic, stamp, msg in reader.messages([T['points'], T['image'], T['camera_info']]):
                if first:
                    bag.write(T['tf_static'], transforms_to_tf([('base_link', LIDAR_FRAME, T_base_lidar),
                                                                (LIDAR_FRAME, CAMERA_FRAME, T_lidar_cam_body)],
                                                               stamp), stamp)
                    first = False
                if topic == T['points']:
                    pts = pointcloud2_to_xyzi(msg)
                    xyz = pts[:, :3] @ T_lidar_from_sim[:3, :3].T + T_lidar_from_sim[:3, 3]
                    xyzi = np.c_[xyz, pts[:, 3] / 255.0].astype(np.float32)
                    out = xyzi_to_pointcloud2(xyzi, stamp, LIDAR_FRAME)
                    out.header.stamp = msg.header.stamp
                    bag.write(DRIVER_TOPICS['points'], out, stamp)
                else:
                    msg.header.frame_id = CAMERA_FRAME
                    bag.write(DRIVER_TOPICS['image' if topic == T['image'] else 'camera_info'], msg, stamp)
    (out_run / 'foreign_bag.json').write_text(json.dumps({'from': str(sim_run), 'remaps': remaps()}))
    return out_run / 'bag'
