"""`fmdrive sim`: run a scenario through the simulator and write a standard rosbag2 MCAP bag plus
ground truth into a run directory:

    RUN_DIR/scenario.yaml        the spec (re-runnable: fmdrive sim --scenario RUN_DIR/scenario.yaml)
    RUN_DIR/bag/                 rosbag2: camera image + camera_info, LiDAR points, odometry, /tf, /tf_static,
                                 the road's speed limit (/map/speed_limit, latched)
    RUN_DIR/ground_truth.json    per-frame boxes, classes, track ids, expert (ego) trajectory
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from fmdrive import config
from fmdrive.geometry import pose2d_to_T


def write_scenario(spec, run_dir, camera, extrinsics: dict, progress: bool = True, overwrite: bool = True) -> dict:
    """Simulate `spec` into run_dir. camera: CameraModel; extrinsics: {child: T_base_child}."""
    from tqdm import tqdm

    from fmdrive.bags.writer import BagWriter
    from fmdrive.msgs import (ego_to_odometry, fields_to_camera_info, rgb_to_image, transforms_to_tf,
                              xyzi_to_pointcloud2)
    from fmdrive.sim import Simulator
    from std_msgs.msg import Float32

    run_dir = Path(run_dir)
    bag_dir = run_dir / 'bag'
    if bag_dir.exists():
        if not overwrite:
            raise FileExistsError(f'{bag_dir} exists (use another output directory)')
        shutil.rmtree(bag_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.to_yaml(run_dir / 'scenario.yaml')
    T_base_lidar = extrinsics[config.FRAMES['lidar']]
    T_base_camera = extrinsics[config.FRAMES['camera']]
    sim = Simulator(spec, camera.K, camera.width, camera.height, T_base_camera, T_base_lidar)
    n_frames = int(round(spec.duration_s * spec.lidar_rate_hz))
    base, odom = config.FRAMES['base'], config.FRAMES['odom']
    T = config.TOPICS
    cam_fields = camera.to_camera_info_fields()
    cam_fields['frame_id'] = config.FRAMES['camera']
    t0 = time.perf_counter()
    sim_s = 0.0
    with BagWriter(bag_dir) as bag:
        first = True
        for frame in tqdm(sim.frames(), total=n_frames, desc=f'sim {spec.kind} seed {spec.seed}',
                          unit='frame', disable=not progress):
            stamp = frame.stamp_ns
            if first:
                bag.write(T['tf_static'], transforms_to_tf([(base, child, Tc) for child, Tc in extrinsics.items()
                                                            if child != base], stamp), stamp)
                bag.write(T['speed_limit'], Float32(data=float(spec.road.speed_limit_mps)), stamp)
                first = False
            for odom_stamp, ego in frame.odometry:
                bag.write(T['odometry'], ego_to_odometry(odom_stamp, ego, odom, base), odom_stamp)
                bag.write(T['tf'], transforms_to_tf([(odom, base, pose2d_to_T(ego.x, ego.y, ego.yaw_rad))],
                                                    odom_stamp), odom_stamp)
            bag.write(T['camera_info'], fields_to_camera_info(cam_fields, stamp), stamp)
            bag.write(T['image'], rgb_to_image(frame.image_rgb, stamp, config.FRAMES['camera']), stamp)
            bag.write(T['points'], xyzi_to_pointcloud2(frame.points_lidar, stamp, config.FRAMES['lidar']), stamp)
            sim_s += 1.0 / spec.lidar_rate_hz
    wall_s = time.perf_counter() - t0
    gt = sim.ground_truth()
    (run_dir / 'ground_truth.json').write_text(json.dumps(gt))
    return {'run_dir': str(run_dir), 'bag': str(bag_dir), 'frames': n_frames, 'sim_s': sim_s,
            'wall_s': wall_s, 'realtime_factor': sim_s / wall_s if wall_s > 0 else None}
