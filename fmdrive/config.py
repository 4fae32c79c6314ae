"""The one source of truth: topic names, frame ids, QoS profiles, object classes and default
node parameters. Nodes, launch files, the graph, the simulator and the tests all read from here.

Nothing in this module imports ROS, so cores and tests can use it without rclpy.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
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
    'speed_limit': '/map/speed_limit',   # not in DESIGN §2: the road's limit (std_msgs/Float32, m/s, latched)
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
    TOPICS['speed_limit']: 'std_msgs/msg/Float32',
    TOPICS['plan']: 'fmdrive_msgs/msg/Plan',
    TOPICS['trajectory']: 'nav_msgs/msg/Path',
    TOPICS['markers']: 'visualization_msgs/msg/MarkerArray',
    TOPICS['overlay']: 'sensor_msgs/msg/Image',
    TOPICS['diagnostics']: 'diagnostic_msgs/msg/DiagnosticArray',
    TOPICS['tf']: 'tf2_msgs/msg/TFMessage',
    TOPICS['tf_static']: 'tf2_msgs/msg/TFMessage',
    TOPICS['clock']: 'rosgraph_msgs/msg/Clock',
}

SENSOR_TOPICS = (TOPICS['image'], TOPICS['camera_info'], TOPICS['points'], TOPICS['odometry'], TOPICS['speed_limit'])
OUTPUT_TOPICS = (TOPICS['lidar_objects'], TOPICS['camera_objects'], TOPICS['lanes'], TOPICS['objects'],
                 TOPICS['scene'], TOPICS['plan'], TOPICS['trajectory'], TOPICS['markers'], TOPICS['overlay'],
                 TOPICS['diagnostics'])

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

# ---------------------------------------------------------------- node parameters
# Per node: default, description, valid range or choices, and whether a change needs a restart.
# Nodes declare every parameter with a ROS ParameterDescriptor built from these (so
# `ros2 param describe` shows them), refuse invalid values at start with one line naming the
# parameter, and apply or refuse runtime changes. config/params.yaml is generated from the defaults
# (and checked against them by a test), so the YAML used by launch files never drifts from code.
@dataclass(frozen=True)
class Param:
    default: object
    description: str
    range: tuple | None = None       # (min, max), inclusive, for numbers
    choices: tuple | None = None     # allowed values, for strings
    read_only: bool = False          # True: a change needs a node restart (refused at runtime)

    def check(self, name: str, value) -> str | None:
        """None if `value` is valid for this parameter, else why not (one line naming it)."""
        kind = type(self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            hint = f' (write {value}.0)' if kind is float and isinstance(value, int) else ''
            return (f'parameter {name!r} must be a {kind.__name__}, got {type(value).__name__} '
                    f'{value!r}{hint}: {self.description}')
        if self.range is not None and not (self.range[0] <= value <= self.range[1]):
            return (f'parameter {name!r} = {value!r} is out of range [{self.range[0]}, {self.range[1]}]: '
                    f'{self.description}')
        if self.choices is not None and value not in self.choices:
            return (f'parameter {name!r} = {value!r} is not one of {", ".join(map(repr, self.choices))}: '
                    f'{self.description}')
        return None


SPEED_LIMIT_MPS = 13.9  # 50 km/h: the road's limit while no map gives one (scene and planner share it)
MAX_SPEED_MPS = 36.1    # 130 km/h: never planned above, whatever the road says
FALLBACK_BUDGET_MS = 250.0  # the classical planner's hard time bound (~20 ms idle x86, several times that loaded)

COMMON_PARAM_SPECS = {
    'sensor_qos': Param('auto', 'QoS of sensor subscriptions: auto adapts to the publishers (best effort '
                        'if any publisher is, as camera and LiDAR drivers are; reliable otherwise, as replay); '
                        'sensor = best effort; reliable = reliable', choices=('auto', 'sensor', 'reliable'),
                        read_only=True),
    'queue_size': Param(2, 'bounded input queue per heavy topic; when full the oldest message is dropped '
                        'and counted', range=(1, 100)),
    'diagnostics_period_s': Param(1.0, 'period of /diagnostics', range=(0.05, 60.0), read_only=True),
    'stale_after_s': Param(0.5, 'an input silent this long is reported STALE on /diagnostics (and the '
                           'planner stops the car when scenes stop)', range=(0.05, 60.0)),
    'base_frame': Param('base_link', 'the vehicle frame every output is expressed in', read_only=True),
    'extrinsics_file': Param('', 'fallback calibration YAML when nothing is on /tf_static '
                             '("" = calibration/extrinsics.yaml of this package)', read_only=True),
    'camera_info_file': Param('', 'fallback camera_info YAML until one arrives on the topic '
                              '("" = calibration/camera_front.yaml)', read_only=True),
}

NODE_PARAM_SPECS = {
    'camera_encoder': {
        'backend': Param('auto', 'runtime of the learned camera encoder `model`: auto (TensorRT when present, '
                         'else ONNX Runtime), tensorrt or onnxruntime; a model that cannot load leaves the node '
                         'unavailable (said on /diagnostics, nothing published) and the graph runs LiDAR-only',
                         choices=('auto', 'tensorrt', 'onnxruntime'), read_only=True),
        'model': Param('engines/camera_centernet', 'model directory (card.yaml) of the camera encoder, relative '
                       'to the package or absolute', read_only=True),
        'precision': Param('int8', 'precision variant of the card to run', choices=('fp32', 'fp16', 'int8'),
                           read_only=True),
        'inference_threads': Param(1, 'ONNX Runtime intra-op threads (the graph shares the cores)',
                                   range=(1, 16), read_only=True),
        'max_rate_hz': Param(5.0, 'highest rate images are encoded at; frames in between are skipped at the '
                             'door and counted as throttled (a 2-core machine: 5; a Jetson: 10 or more; 0: no '
                             'limit)', range=(0.0, 1000.0)),
        'publish_features': Param(False, 'also publish the dense embedding map on /perception/camera/features '
                                  '(fp16, about 0.5 MB a frame)'),
    },
    'lidar_encoder': {
        'backend': Param('classical', 'detector: classical (ground plane + grid clusters), or the learned encoder of '
                         '`model` on auto (TensorRT when present, else ONNX Runtime), tensorrt or onnxruntime; '
                         'a learned encoder that cannot load falls back to classical, said on /diagnostics',
                         choices=('classical', 'auto', 'tensorrt', 'onnxruntime'), read_only=True),
        'model': Param('engines/lidar_centerpoint', 'model directory (card.yaml) of the learned encoder, '
                       'relative to the package or absolute', read_only=True),
        'precision': Param('int8', 'precision variant of the card to run', choices=('fp32', 'fp16', 'int8'),
                           read_only=True),
        'inference_threads': Param(1, 'ONNX Runtime intra-op threads (the graph shares the cores)',
                                   range=(1, 16), read_only=True),
        'refine_small_objects': Param(True, 'learned encoder: pedestrians and cones take their BEV centre from '
                                      'their own returns (a network on a 0.4 m grid places them about 0.2 m '
                                      'off; fmdrive/perception/lidar_learned.py)', read_only=True),
        'unknown_obstacles': Param(True, 'learned encoder: the classical path runs beside it and every cluster no '
                                   'learned box explains is published as label unknown (a bin, a post, debris: '
                                   'the network knows four classes); its ground fit finds the lanes', read_only=True),
        'max_rate_hz': Param(12.0, 'highest rate clouds are processed at, in wall time (a 10 Hz LiDAR with 20% '
                             'margin; delivery jitter is absorbed); faster input (a 20 Hz sensor, a bag replayed at 5x) is thinned '
                             'at the door, counted as throttled, instead of building latency. Set it to your '
                             'sensor rate if the computer keeps up; 0: no limit', range=(0.0, 1000.0)),
        'range_m': Param(60.0, 'points farther than this (horizontal) are ignored', range=(5.0, 300.0)),
        'max_points': Param(60000, 'a sweep with more points (after the crop) is thinned near the sensor, '
                            'where it is densest, to about this many: a 64/128-beam sensor costs what a '
                            '32-beam one does; far points are all kept', range=(5000, 10000000)),
        'z_min_m': Param(-3.0, 'lowest point kept, relative to the ground under the sensor', range=(-20.0, 5.0)),
        'z_max_m': Param(4.8, 'highest point clustered, relative to the ground (above a bus roof)',
                         range=(0.5, 20.0)),
        'ground_distance_m': Param(0.2, 'points within this of the ground plane are ground', range=(0.02, 2.0)),
        'ransac_iterations': Param(100, 'RANSAC iterations of the ground fit', range=(10, 10000)),
        'max_ground_tilt_deg': Param(15.0, 'steepest ground plane accepted', range=(1.0, 45.0)),
        'cluster_cell_m': Param(0.2, "cell of the bird's-eye grid whose connected components are objects",
                                range=(0.05, 1.0)),
        'cluster_gap_cells': Param(1, 'cells each occupied cell grows by before joining (bridges gaps of '
                                   'about (2 n + 1) cells)', range=(0, 5)),
        'min_box_points': Param(5, 'fewest points an object box is fitted to', range=(1, 10000)),
        'max_object_length_m': Param(18.5, 'longest object kept (an articulated bus is 18 m)', range=(0.5, 40.0)),
        'max_object_height_m': Param(4.5, 'tallest object kept (taller: building, tree, pole)',
                                     range=(0.5, 10.0)),
        'detect_lanes': Param(True, 'find lane markings from intensity'),
        'lane_width_m': Param(3.5, 'lane width assumed when only one marking is seen', range=(2.0, 6.0)),
    },
    'fusion': {
        'max_age_s': Param(0.5, 'a track not seen for this long is dropped', range=(0.05, 10.0)),
        'gate_m': Param(3.0, 'association gate (centre distance)', range=(0.1, 20.0)),
        'min_hits': Param(2, 'a track is published after this many hits', range=(1, 100)),
        'odom_buffer_s': Param(5.0, 'odometry history kept for lookups at sensor stamps', range=(0.5, 60.0),
                               read_only=True),
        'speed_limit_mps': Param(SPEED_LIMIT_MPS, 'speed limit written into the scene until one arrives on '
                                 '/map/speed_limit', range=(0.0, 70.0)),
        'max_scene_objects': Param(8, 'objects named in the scene text (all stay in the structure)',
                                   range=(0, 200)),
    },
    'planner': {
        'queue_size': Param(1, 'scenes waiting to be planned: only the newest (a plan for an older scene is '
                            'stale when a newer one is there); one replaced unplanned is counted as dropped',
                            range=(1, 100)),
        'horizon_s': Param(3.0, 'length of the published trajectory', range=(0.5, 20.0)),
        'dt_s': Param(0.5, 'waypoint spacing of the published trajectory', range=(0.05, 2.0)),
        'speed_limit_mps': Param(SPEED_LIMIT_MPS, "the road's limit when the scene carries none (0 or not finite)",
                                 range=(0.0, 70.0)),
        'max_speed_mps': Param(MAX_SPEED_MPS, 'highest speed planned whatever the road allows', range=(1.0, 70.0)),
        'deadline_ms': Param(100.0, 'time the primary (LM) planner gets before it is abandoned and the classical '
                             'fallback is published; deadline_met=false when the whole call took longer',
                             range=(1.0, 10000.0)),
        'fallback_budget_ms': Param(FALLBACK_BUDGET_MS, "the classical planner's own time budget; a step it cannot "
                                    'start within it is replaced by braking (status budget_stop)',
                                    range=(10.0, 10000.0)),
        'stall_margin_m': Param(2.0, "a safe primary (LM) plan covering this many metres less than the classical "
                                "plan over the horizon, the classical plan safe too, is replaced by it: an LM that "
                                "continues the ego's speed stays stopped after a stop (0: off)", range=(0.0, 100.0)),
        'instruction_margin_m': Param(1.0, 'while a lane instruction stands (change lane, keep lane), a safe '
                                      'primary (LM) plan ending this many metres farther from that lane than the '
                                      'classical plan, or while a slowing one stands (slow down, stop, pull over), '
                                      'one going this many metres farther along, the classical plan safe too, is '
                                      'replaced by it (0: off)', range=(0.0, 20.0)),
        'watchdog_period_s': Param(0.1, 'how often the planner checks that scenes still arrive; while they '
                                   'do not it publishes a safe stopping trajectory at this period',
                                   range=(0.02, 1.0), read_only=True),
        # classical until the committed student earns it: its open-loop L2@3s is 7.5 m (classical 3.9)
        # and the safety filter rejects all its plans on sim test scenes (bench planner llm_share 0)
        'primary': Param('classical', 'planner published when its plan is safe and on time: llm (the language-'
                         'model planner of lm_model, the classical one its fallback; when it is absent or cannot '
                         'load the classical planner runs alone, said on /diagnostics) or classical (the classical '
                         'planner alone)',
                         choices=('llm', 'classical'), read_only=True),
        'lm_model': Param('engines/planner_student', 'model directory (card.yaml, ONNX, tokenizer.json) of the LM '
                          'planner, relative to the package or absolute', read_only=True),
        'lm_precision': Param('int8', 'precision variant of the LM planner (int8 runs fp32 when the card has no '
                              'int8 file)', choices=('fp32', 'fp16', 'int8'), read_only=True),
        'lm_backend': Param('auto', 'runtime of the LM planner: auto (TensorRT when present, else ONNX Runtime), '
                            'tensorrt or onnxruntime', choices=('auto', 'tensorrt', 'onnxruntime'), read_only=True),
        'lm_threads': Param(1, 'ONNX Runtime intra-op threads of the LM planner', range=(1, 16), read_only=True),
        'lm_draft': Param(True, "verify the last plan's tokens as a draft in the prefill call (speculative "
                          'decoding: the same plan, fewer forward calls when consecutive plans agree)',
                          read_only=True),
        'lm_guard': Param(True, 'collision-aware decoding: among its most likely coordinates the LM planner takes '
                          'the first that keeps the ego clear of the predicted objects (the safety filter still '
                          'judges the plan)', read_only=True),
    },
    'visualizer': {
        'overlay_max_rate_hz': Param(5.0, 'highest rate of the overlay image', range=(0.1, 60.0)),
        'draw_points': Param(True, 'draw LiDAR points on the overlay'),
    },
}

COMMON_PARAMS = {k: p.default for k, p in COMMON_PARAM_SPECS.items()}
NODE_PARAMS = {node: {k: p.default for k, p in specs.items()} for node, specs in NODE_PARAM_SPECS.items()}

NODES = tuple(NODE_PARAMS)


def node_params(node: str) -> dict:
    """Defaults of one node: its own parameters plus the common ones (a fresh copy)."""
    if node not in NODE_PARAMS:
        raise KeyError(f'unknown node {node!r}; known: {", ".join(NODES)}')
    return {**copy.deepcopy(COMMON_PARAMS), **copy.deepcopy(NODE_PARAMS[node])}


def node_param_specs(node: str) -> dict:
    """{name: Param} of one node, common parameters included."""
    if node not in NODE_PARAM_SPECS:
        raise KeyError(f'unknown node {node!r}; known: {", ".join(NODES)}')
    return {**COMMON_PARAM_SPECS, **NODE_PARAM_SPECS[node]}


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
