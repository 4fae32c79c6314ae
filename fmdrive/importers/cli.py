"""`fmdrive import FORMAT ...`: the arguments and the run of the three importers."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    fmt = parser.add_subparsers(dest='format', required=True, metavar='FORMAT')

    def common(p):
        p.add_argument('-o', '--output', required=True, metavar='RUN_DIR',
                       help='run dir to write (RUN_DIR/bag, RUN_DIR/ground_truth.json when labelled)')
        p.add_argument('--overwrite', action='store_true', help='replace RUN_DIR/bag if it exists')
        p.add_argument('--no-progress', action='store_true')

    k = fmt.add_parser('kitti', help='KITTI object split (velodyne, image_2, calib, label_2) or raw drive (oxts)')
    k.add_argument('path', help='KITTI object root / split folder, or a raw drive folder (..._sync)')
    k.add_argument('--split', default='training', help='object layout: the split folder (default training)')
    k.add_argument('--first', type=int, default=0, help='index of the first frame to import')
    k.add_argument('--frames', type=int, default=None, help='import at most this many frames')
    k.add_argument('--velodyne-height', type=float, default=None, metavar='M',
                   help='object layout: Velodyne height above the road (default 1.73)')
    k.add_argument('--imu-height', type=float, default=None, metavar='M',
                   help='raw layout: OXTS IMU height above the road (default 0.93)')
    common(k)

    n = fmt.add_parser('nuscenes', help='nuScenes v1.0 JSON tables (one scene\'s key frames)')
    n.add_argument('dataroot', help='folder holding <version>/ (the tables) and samples/')
    n.add_argument('--version', default='v1.0-mini')
    n.add_argument('--scene', default=None, help='scene name or token (default: the first)')
    n.add_argument('--camera', default='CAM_FRONT', help='camera channel')
    n.add_argument('--frames', type=int, default=None, help='import at most this many key frames')
    common(n)

    p = fmt.add_parser('pcd-image', help='one .pcd + image + intrinsics + extrinsics (e.g. the PJLab sample)')
    p.add_argument('--pcd', required=True)
    p.add_argument('--image', required=True)
    p.add_argument('--intrinsics', required=True, help='camera_info YAML or SensorsCalibration intrinsic JSON')
    p.add_argument('--extrinsics', required=True, help='extrinsics YAML or SensorsCalibration extrinsic JSON')
    p.add_argument('--lidar-frame', default='lidar')
    p.add_argument('--camera-frame', default='camera_optical')
    p.add_argument('--base-to-lidar', default=None, metavar='"x y z [roll pitch yaw]"',
                   help='LiDAR pose in base_link (m, deg) when the extrinsics do not give it')
    p.add_argument('--stamp-ns', type=int, default=1_000_000_000)
    common(p)


def run(args) -> int:
    """Run the chosen importer; one line on stderr and exit 2 for anything wrong with the input."""
    from fmdrive.bags.typestore import BagError
    from fmdrive.calibration.camera_model import CalibrationError
    from fmdrive.importers.common import DatasetError
    progress = not args.no_progress
    try:
        if args.format == 'kitti':
            from fmdrive.importers.kitti import IMU_HEIGHT_M, VELODYNE_HEIGHT_M, import_kitti
            summary = import_kitti(args.path, args.output, split=args.split, first=args.first,
                                   max_frames=args.frames, progress=progress, overwrite=args.overwrite,
                                   velodyne_height_m=args.velodyne_height or VELODYNE_HEIGHT_M,
                                   imu_height_m=args.imu_height or IMU_HEIGHT_M)
        elif args.format == 'nuscenes':
            from fmdrive.importers.nuscenes import import_nuscenes
            summary = import_nuscenes(args.dataroot, args.output, version=args.version, scene=args.scene,
                                      max_frames=args.frames, camera_channel=args.camera, progress=progress,
                                      overwrite=args.overwrite)
        else:
            from fmdrive.importers.pcd_image import import_pcd_image
            summary = import_pcd_image(args.pcd, args.image, args.intrinsics, args.extrinsics, args.output,
                                       lidar_frame=args.lidar_frame, camera_frame=args.camera_frame,
                                       base_to_lidar=args.base_to_lidar, stamp_ns=args.stamp_ns,
                                       overwrite=args.overwrite)
    except (DatasetError, CalibrationError, BagError, OSError) as e:
        print(f'fmdrive import {args.format}: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 2
    gt = summary['ground_truth']
    print(f'bag: {summary["bag"]}  ({summary["frames"]} frames, LiDAR frame {summary["lidar_frame"]}, '
          f'camera frame {summary["camera_frame"]})'
          + (f'  ground truth: {gt} ({summary.get("objects", 0)} boxes)' if gt else '  no labels'))
    return 0
