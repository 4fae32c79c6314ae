"""Calibration: camera model (camera_info YAML), extrinsics, PCD reading, LiDAR-camera alignment check.

The light modules are re-exported here; the alignment check (scipy) is imported from
fmdrive.calibration.alignment / fmdrive.calibration.check when needed.
"""
from fmdrive.calibration.camera_model import CalibrationError, CameraModel
from fmdrive.calibration.extrinsics import (Extrinsics, MissingFrameError, T_base_camera, T_base_lidar,
                                            load_extrinsics, save_extrinsics)
from fmdrive.calibration.pcd import PCDError, read_pcd

__all__ = ['CalibrationError', 'CameraModel', 'Extrinsics', 'MissingFrameError', 'PCDError',
           'T_base_camera', 'T_base_lidar', 'load_extrinsics', 'read_pcd', 'save_extrinsics']
