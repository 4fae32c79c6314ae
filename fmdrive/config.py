"""The one source of truth: topic names, frame ids, QoS profiles, object classes and default
node parameters. Nodes, launch files, the graph, the simulator and the tests all read from here.

Nothing in this module imports ROS, so cores and tests can use it without rclpy.
"""
from __future__ import annotations

import copy
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # repository root (= the ROS package)

# ---------------------------------------------------------------- topics (DESIGN.md §2)
TOPICS = {
    'image': '/sensors/camera/image_raw',
    'camera_info': '/sensors/camera/camera_info',
    'points': '/sensors/lidar/points',
    'odometry': '/vehicle/odometry',
    'camera_objects': '/perception/camera/objects',
    'camera_features': '/perception/camera/features',
    'lidar_objects': '/perception/lidar/objects',
    'lanes': '/perception/lanes',  # not in DESIGN §2: LiDAR lane markings -> fusion (see note)
    'objects': '/perception/objects',
    'scene': '/scene/description',
    'instruction': '/planning/instruction',
    'plan': '/planning/plan',
    'trajectory': '/planning/trajectory',
    'markers': '/visualization/markers',
    'overlay': '/visualization/overlay',
    'diagnostics': '/diagnostics',
    'tf': '/tf',
    'tf_static': '/tf_static',
    'clock': '/clock',
}

# Message type of every topic, as "pkg/msg/Type" (what rosbag2 metadata and MCAP schemas use).
TOPIC_TYPES = {
    TOPICS['image']: 'sensor_msgs/msg/Image',
    TOPICS['camera_info']: 'sensor_msgs/msg/CameraInfo',
    TOPICS['points']: 'sensor_msgs/msg/PointCloud2',
    TOPICS['odometry']: 'nav_msgs/msg/Odometry',
    TOPICS['camera_objects']: 'fmdrive_msgs/msg/ObjectArray',
    TOPICS['camera_features']: 'fmdrive_msgs/msg/FeatureMap',
    TOPICS['lidar_objects']: 'fmdrive_msgs/msg/ObjectArray',
    TOPICS['lanes']: 'fmdrive_msgs/msg/LaneArray',
    TOPICS['objects']: 'fmdrive_msgs/msg/ObjectArray',
    TOPICS['scene']: 'fmdrive_msgs/msg/SceneDescription',
    TOPICS['instruction']: 'std_msgs/msg/String',
    TOPICS['plan']: 'fmdrive_msgs/msg/Plan',
    TOPICS['trajectory']: 'nav_msgs/msg/Path',
    TOPICS['markers']: 'visualization_msgs/msg/MarkerArray',
    TOPICS['overlay']: 'sensor_msgs/msg/Image',
    TOPICS['diagnostics']: 'diagnostic_msgs/msg/DiagnosticArray',
    TOPICS['tf']: 'tf2_msgs/msg/TFMessage',
    TOPICS['tf_static']: 'tf2_msgs/msg/TFMessage',
    TOPICS['clock']: 'rosgraph_msgs/msg/Clock',
}

SENSOR_TOPICS = (TOPICS['image'], TOPICS['camera_info'], TOPICS['points'], TOPICS['odometry'])
OUTPUT_TOPICS = (TOPICS['lidar_objects'], TOPICS['lanes'], TOPICS['objects'], TOPICS['scene'], TOPICS['plan'],
                 TOPICS['trajectory'], TOPICS['markers'], TOPICS['overlay'], TOPICS['diagnostics'])

# ---------------------------------------------------------------- frames (REP-103/105)
FRAMES = {
    'base': 'base_link',        # x forward, y left, z up
    'lidar': 'lidar',
    'camera': 'camera_optical',  # z forward, x right, y down
    'odom': 'odom',
    'map': 'map',
}

# ---------------------------------------------------------------- object classes
CLASSES = ('car', 'pedestrian', 'cyclist', 'cone')
UNKNOWN = 'unknown'

# ---------------------------------------------------------------- QoS
# 'sensor': best effort, depth 5 (the vehicle; a late frame is worth nothing).
# 'reliable': reliable, keep last, deep enough that replay and tests lose nothing.
QOS = {
    'sensor': {'reliability': 'best_effort', 'depth': 5, 'durability': 'volatile'},
    'reliable': {'reliability': 'reliable', 'depth': 50, 'durability': 'volatile'},
    'latched': {'reliability': 'reliable', 'depth': 1, 'durability': 'transient_local'},
}

# ---------------------------------------------------------------- default parameters
# Per node. config/params.yaml is generated from (and checked against) this dict by a test,
# so the YAML used by launch files never drifts from the defaults in code.
COMMON_PARAMS = {
    'sensor_qos': 'reliable',        # 'sensor' on the vehicle, 'reliable' for replay and tests
    'queue_size': 2,                 # bounded input queue per topic; the oldest is dropped
    'diagnostics_period_s': 1.0,
    'extrinsics_file': '',           # '' = calibration/extrinsics.yaml of this package
    'camera_info_file': '',          # '' = calibration/camera_front.yaml (a camera_info topic wins)
}

NODE_PARAMS = {
    'lidar_encoder': {
        'backend': 'classical',      # classical (open3d); the learned encoder arrives with the models
        'range_m': 60.0,
        'z_min_m': -3.0,
        'z_max_m': 3.0,
        'voxel_m': 0.15,
        'ground_distance_m': 0.2,
        'ransac_iterations': 100,
        'max_ground_tilt_deg': 15.0,
        'cluster_eps_m': 0.7,
        'cluster_min_points': 5,
        'min_box_points': 5,
        'max_object_length_m': 7.0,
        'max_object_height_m': 3.0,
        'detect_lanes': True,
        'lane_width_m': 3.5,
    },
    'fusion': {
        'max_age_s': 0.5,            # a track not seen for this long is dropped
        'gate_m': 3.0,               # association gate (centre distance)
        'min_hits': 2,               # a track is published after this many hits
        'odom_buffer_s': 5.0,
        'speed_limit_mps': 13.9,     # no map yet: the configured limit goes into the scene
        'max_scene_objects': 8,      # objects named in the scene text (all stay in the structure)
    },
    'planner': {
        'horizon_s': 3.0,
        'dt_s': 0.5,
        'speed_limit_mps': 13.9,
        'deadline_ms': 100.0,
    },
    'visualizer': {
        'overlay_max_rate_hz': 5.0,
        'draw_points': True,
    },
}

NODES = tuple(NODE_PARAMS)  # the nodes this issue ships; camera_encoder joins with the models


def node_params(node: str) -> dict:
    """Defaults of one node: its own parameters plus the common ones (a fresh copy)."""
    if node not in NODE_PARAMS:
        raise KeyError(f'unknown node {node!r}; known: {", ".join(NODES)}')
    return {**copy.deepcopy(COMMON_PARAMS), **copy.deepcopy(NODE_PARAMS[node])}


# ---------------------------------------------------------------- files shipped in the repo
def package_file(relative: str) -> Path:
    """A file shipped with the package: from the source tree (editable install, this repo), else from
    the ament share directory (colcon install on the vehicle)."""
    here = PACKAGE_ROOT / relative
    if here.exists():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('fmdrive')) / relative
    except Exception:  # noqa: BLE001 - no ament index: report the source-tree path in the error
        return here


CAMERA_INFO_FILE = package_file('calibration/camera_front.yaml')
EXTRINSICS_FILE = package_file('calibration/extrinsics.yaml')
PARAMS_FILE = package_file('config/params.yaml')
FASTDDS_PROFILE = package_file('config/fastdds_large_messages.xml')
RVIZ_FILE = package_file('config/fmdrive.rviz')
