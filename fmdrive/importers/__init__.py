"""Importers of public driving datasets into standard rosbag2 MCAP bags (+ ground truth).

    fmdrive import kitti PATH -o runs/kitti          KITTI object layout or a KITTI raw drive (oxts)
    fmdrive import nuscenes DATAROOT -o runs/nusc    nuScenes v1.0 JSON tables (key frames)
    fmdrive import pcd-image --pcd P --image I ...   one LiDAR sweep + one image with calibration

Each writes RUN_DIR/bag (camera image + camera_info with the dataset's K/D/P, LiDAR points,
/tf_static with the dataset's own frame ids, odometry and /tf odom -> base_link when the dataset
has poses) and, when the dataset has labels, RUN_DIR/ground_truth.json in the format
docs/ground_truth_format.md describes (what `fmdrive eval` reads). Written from the formats'
public specifications; no dataset SDK is needed.
"""
