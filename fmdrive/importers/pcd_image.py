"""`fmdrive import pcd-image --pcd P --image I --intrinsics C --extrinsics E -o RUN_DIR`.

One LiDAR sweep (PCD v0.7) and the camera image taken with it, with their calibration, into a
one-frame bag, e.g. the PJLab SensorsCalibration sample in tests/data/pjlab_lidar2camera.

- intrinsics: a ROS camera_info YAML, or a SensorsCalibration *-intrinsic.json (cam_K, cam_dist;
  the image size is taken from the image itself).
- extrinsics: our extrinsics YAML (any parent, e.g. base_link -> lidar and base_link -> camera, or
  lidar -> camera_optical), or a SensorsCalibration *-extrinsic.json (sensor_calib =
  T_camera_lidar).
- base_link -> lidar: from the extrinsics YAML when it has it, else --base-to-lidar
  "x y z [roll pitch yaw]" (metres, degrees; default identity: set the LiDAR's mounting height
  for the graph's ground model).
The files carry no time: the frame is stamped --stamp-ns (default 1 s).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fmdrive import config
from fmdrive.calibration.camera_model import CalibrationError, CameraModel
from fmdrive.calibration.extrinsics import load_extrinsics
from fmdrive.calibration.pcd import read_pcd
from fmdrive.geometry import inv_T, make_T
from fmdrive.importers.common import DatasetError, SensorFrame, read_image, write_run
from fmdrive.tf import TransformBuffer


def parse_base_to_lidar(text: str | None) -> np.ndarray:
    """4x4 of 'x y z [roll pitch yaw]' (m, deg; commas allowed)."""
    if not text:
        return np.eye(4)
    try:
        values = [float(v) for v in text.replace(',', ' ').split()]
    except ValueError:
        raise DatasetError(f'--base-to-lidar {text!r}: give "x y z [roll pitch yaw]" numbers') from None
    if len(values) not in (3, 6):
        raise DatasetError(f'--base-to-lidar {text!r}: 3 or 6 numbers, got {len(values)}')
    roll, pitch, yaw = np.radians(values[3:] if len(values) == 6 else (0.0, 0.0, 0.0))
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    R = (np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]]) @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
         @ np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]]))
    return make_T(R, values[:3])


def load_camera(path, width: int, height: int, frame_id: str) -> CameraModel:
    path = Path(path)
    if path.suffix.lower() == '.json':
        from fmdrive.calibration.pjlab import camera_from_pjlab_json
        camera = camera_from_pjlab_json(path, width, height)
        camera.frame_id = frame_id
        return camera
    camera = CameraModel.from_yaml(path, frame_id=frame_id)
    if (camera.width, camera.height) != (width, height):
        raise DatasetError(f'{path} is for {camera.width}x{camera.height} images but the image is {width}x{height}')
    return camera


def load_transforms(path, lidar_frame: str, camera_frame: str, T_base_lidar_default) -> list:
    """[(parent, child, T)] for /tf_static: base_link -> lidar -> ... -> camera."""
    path = Path(path)
    base = config.FRAMES['base']
    if path.suffix.lower() == '.json':
        from fmdrive.calibration.pjlab import T_camera_lidar_from_pjlab_json
        T_camera_lidar = T_camera_lidar_from_pjlab_json(path)
        U, _, Vt = np.linalg.svd(T_camera_lidar[:3, :3])        # the JSON is orthonormal to ~1e-6 only
        T_camera_lidar[:3, :3] = U @ Vt
        return [(base, lidar_frame, T_base_lidar_default), (lidar_frame, camera_frame, inv_T(T_camera_lidar))]
    ext = load_extrinsics(path)
    transforms = [(ext.frame_id, child, T) for child, T in ext.items()]
    buf = TransformBuffer()
    buf.add_transforms(transforms)
    for frame in (lidar_frame, camera_frame):
        if frame not in buf.frames():
            raise DatasetError(f'{path} has no frame {frame!r} (frames: {", ".join(sorted(buf.frames()))}); '
                               'pass --lidar-frame / --camera-frame')
    if base not in buf.frames():
        # hang the file's tree under base_link at its root, so that base_link -> lidar is the default
        root = ext.frame_id
        transforms.insert(0, (base, root, T_base_lidar_default @ buf.lookup(lidar_frame, root)))
    return transforms


def import_pcd_image(pcd, image, intrinsics, extrinsics, out_dir, *, lidar_frame: str = config.FRAMES['lidar'],
                     camera_frame: str = config.FRAMES['camera'], base_to_lidar: str | None = None,
                     stamp_ns: int = 1_000_000_000, progress: bool = False, overwrite: bool = False) -> dict:
    image_rgb = read_image(image)
    try:
        camera = load_camera(intrinsics, image_rgb.shape[1], image_rgb.shape[0], camera_frame)
        static = load_transforms(extrinsics, lidar_frame, camera_frame, parse_base_to_lidar(base_to_lidar))
        points = read_pcd(pcd)
    except CalibrationError as e:
        raise DatasetError(str(e)) from None
    frame = SensorFrame(stamp_ns=int(stamp_ns), points_lidar=points, lidar_frame=lidar_frame,
                        image_rgb=image_rgb, camera=camera)
    return write_run(out_dir, [frame], static, source=Path(pcd), dataset='pcd-image', total=1,
                     progress=progress, overwrite=overwrite,
                     extra_summary={'image': str(image), 'intrinsics': str(intrinsics),
                                    'extrinsics': str(extrinsics)})
