"""On the vehicle: the fmdrive graph on live sensors.

    ros2 launch fmdrive fmdrive.launch.py [params_file:=my_params.yaml] [rviz:=true]

The node list comes from fmdrive/graph.py (the same list `fmdrive run` starts where launch_ros is not
installed). Sensors use the sensor-data QoS (best effort); the sensor mounting from
calibration/extrinsics.yaml is published on /tf_static.
"""
import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fmdrive.graph import GRAPH, RESPAWN_DELAY_S
from fmdrive.rosenv import launch_profile_env


def static_transforms(extrinsics_file):
    with open(extrinsics_file) as f:
        doc = yaml.safe_load(f)
    for tf in doc['transforms']:
        (x, y, z), (qx, qy, qz, qw) = tf['translation'], tf['rotation_xyzw']
        yield Node(package='tf2_ros', executable='static_transform_publisher',
                   name=f'tf_{doc["frame_id"]}_{tf["child_frame_id"]}',
                   arguments=['--x', str(x), '--y', str(y), '--z', str(z), '--qx', str(qx), '--qy', str(qy),
                              '--qz', str(qz), '--qw', str(qw), '--frame-id', doc['frame_id'],
                              '--child-frame-id', tf['child_frame_id']])


def generate_launch_description():
    share = get_package_share_directory('fmdrive')
    params_file = LaunchConfiguration('params_file')
    use_sim_time = LaunchConfiguration('use_sim_time')
    sensor_qos = LaunchConfiguration('sensor_qos')
    # a node that dies is started again, and drawing runs niced, as `fmdrive run` does (fmdrive/graph.py)
    nodes = [Node(package='fmdrive', executable=n.executable, name=n.name, output='screen',
                  respawn=True, respawn_delay=RESPAWN_DELAY_S,
                  prefix=f'nice -n {n.nice}' if n.nice else None,
                  parameters=[params_file, {'use_sim_time': use_sim_time, 'sensor_qos': sensor_qos}])
             for n in GRAPH]
    # the large-message Fast DDS profile (config/fastdds_large_messages.xml) unless the user names one
    profile = [SetEnvironmentVariable(var, value) for var, value in
               launch_profile_env(os.path.join(share, 'config', 'fastdds_large_messages.xml')).items()]
    return LaunchDescription([
        *profile,
        DeclareLaunchArgument('params_file', default_value=os.path.join(share, 'config', 'params.yaml')),
        DeclareLaunchArgument('use_sim_time', default_value='false'),
        DeclareLaunchArgument('sensor_qos', default_value='sensor', description='sensor | reliable'),
        DeclareLaunchArgument('rviz', default_value='false'),
        *nodes,
        *static_transforms(os.path.join(share, 'calibration', 'extrinsics.yaml')),
        Node(package='rviz2', executable='rviz2', arguments=['-d', os.path.join(share, 'config', 'fmdrive.rviz')],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
