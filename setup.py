"""ament_python package `fmdrive` (the repository root is the ROS package).

On the Jetson: `colcon build` in ros2_ws/ (ros2_ws/src/fmdrive links back here).
Elsewhere: scripts/setup.sh installs it editable into .venv.
"""
from glob import glob

from setuptools import find_packages, setup

package_name = 'fmdrive'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=['fmdrive', 'fmdrive.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*')),
        ('share/' + package_name + '/calibration', glob('calibration/*.yaml')),
        ('share/' + package_name + '/benchmarks', glob('benchmarks/*.py')),
        ('share/' + package_name + '/scenarios', glob('scenarios/*.yaml')),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='fmdrive maintainers',
    maintainer_email='fmdrive@example.com',
    description='ROS 2 perception-and-planning stack for a car: camera + LiDAR -> trajectory.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'fmdrive = fmdrive.cli:main',
            'camera_encoder = fmdrive.nodes.start:camera_encoder',
            'lidar_encoder = fmdrive.nodes.start:lidar_encoder',
            'fusion = fmdrive.nodes.start:fusion',
            'planner = fmdrive.nodes.start:planner',
            'visualizer = fmdrive.nodes.start:visualizer',
        ],
    },
)
