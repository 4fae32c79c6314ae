"""Replay a bag through the fmdrive graph and watch it in RViz (on a machine with ROS 2 installed).

    ros2 launch fmdrive replay.launch.py bag:=runs/demo/bag [rate:=1.0] [rviz:=true]

`ros2 bag play --clock` drives sim time; the graph (fmdrive/graph.py) runs with use_sim_time and
reliable sensor QoS so nothing is lost. Where launch is not installable, `fmdrive replay` +
`fmdrive run --use-sim-time` do the same.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fmdrive.graph import GRAPH, RESPAWN_DELAY_S
from fmdrive.rosenv import launch_profile_env


def generate_launch_description():
    share = get_package_share_directory('fmdrive')
    params_file = LaunchConfiguration('params_file')
    # a node that dies is started again, and drawing runs niced, as `fmdrive run` does (fmdrive/graph.py)
    nodes = [Node(package='fmdrive', executable=n.executable, name=n.name, output='screen',
                  respawn=True, respawn_delay=RESPAWN_DELAY_S,
                  prefix=f'nice -n {n.nice}' if n.nice else None,
                  parameters=[params_file, {'use_sim_time': True, 'sensor_qos': 'reliable'}])
             for n in GRAPH]
    # the large-message Fast DDS profile (config/fastdds_large_messages.xml) unless the user names one
    profile = [SetEnvironmentVariable(var, value) for var, value in
               launch_profile_env(os.path.join(share, 'config', 'fastdds_large_messages.xml')).items()]
    return LaunchDescription([
        *profile,
        DeclareLaunchArgument('bag', description='rosbag2 directory (e.g. from `fmdrive sim`)'),
        DeclareLaunchArgument('rate', default_value='1.0'),
        DeclareLaunchArgument('params_file', default_value=os.path.join(share, 'config', 'params.yaml')),
        DeclareLaunchArgument('rviz', default_value='true'),
        *nodes,
        ExecuteProcess(cmd=['ros2', 'bag', 'play', LaunchConfiguration('bag'), '--clock',
                            '--rate', LaunchConfiguration('rate')], output='screen'),
        Node(package='rviz2', executable='rviz2', arguments=['-d', os.path.join(share, 'config', 'fmdrive.rviz')],
             parameters=[{'use_sim_time': True}], condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
