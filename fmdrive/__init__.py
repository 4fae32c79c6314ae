"""fmdrive: a ROS 2 perception-and-planning stack for a car (camera + LiDAR -> trajectory)."""
__version__ = '0.1.0'
