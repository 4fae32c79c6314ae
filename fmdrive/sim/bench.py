"""Time the simulator per frame: `python -m fmdrive.sim.bench [kind] [seed] [frames]`.

Uses the shipped calibration (640x360 camera, LiDAR mounting) and the spec's 32-beam LiDAR at
0.2 deg. Prints one JSON object: median ms per frame for agents, camera and LiDAR, and the
sensor-only realtime factor (simulated s per wall s, without bag writing).
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import yaml

from fmdrive.config import CAMERA_INFO_FILE, EXTRINSICS_FILE
from fmdrive.geometry import make_T, quat_to_rot
from fmdrive.sim.scenario import generate_scenario
from fmdrive.sim.simulator import Simulator


def shipped_calibration():
    """(K, width, height, T_base_camera, T_base_lidar) from calibration/*.yaml."""
    cam = yaml.safe_load(CAMERA_INFO_FILE.read_text())
    K = np.array(cam['camera_matrix']['data'], float).reshape(3, 3)
    ext = {t['child_frame_id']: make_T(quat_to_rot(t['rotation_xyzw']), t['translation'])
           for t in yaml.safe_load(EXTRINSICS_FILE.read_text())['transforms']}
    return K, int(cam['image_width']), int(cam['image_height']), ext['camera_optical'], ext['lidar']


def measure(kind='car_following', seed=0, frames=30) -> dict:
    spec = generate_scenario(kind, seed, duration_s=frames / 10.0)
    sim = Simulator(spec, *shipped_calibration())
    t0 = time.perf_counter()
    n = sum(1 for _ in sim.frames())
    wall_s = time.perf_counter() - t0
    med = {k: float(np.median(v)) if v else 0.0 for k, v in sim.timings_ms.items()}
    return {'kind': kind, 'seed': seed, 'frames': n, 'beams': spec.lidar.beams,
            'h_res_deg': spec.lidar.h_res_deg, 'image': [sim.camera.width, sim.camera.height],
            'camera_ms': round(med['camera'], 1), 'lidar_ms': round(med['lidar'], 1),
            'agents_ms': round(med['agents'], 2),
            'frame_ms': round(1e3 * wall_s / n, 1),
            'realtime_factor': round(n / sim.frame_rate_hz / wall_s, 2)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    kind = argv[0] if argv else 'car_following'
    seed = int(argv[1]) if len(argv) > 1 else 0
    frames = int(argv[2]) if len(argv) > 2 else 30
    print(json.dumps(measure(kind, seed, frames)))


if __name__ == '__main__':
    main()
