# Environment for ROS 2 from pip wheels (no ROS installation). Source after activating .venv:
#     . .venv/bin/activate && . scripts/ros_env.sh
# `make`, `fmdrive` and the tests set the same variables themselves (fmdrive/rosenv.py);
# this file is for an interactive shell. On the Jetson source /opt/ros/<distro>/setup.bash instead.
if [ -z "${VIRTUAL_ENV:-}" ]; then
  echo "ros_env.sh: activate the venv first (. .venv/bin/activate)" >&2
  return 1 2>/dev/null || exit 1
fi
_fmdrive_root=$(cd "$(dirname "$VIRTUAL_ENV")" && pwd)
case ":${AMENT_PREFIX_PATH:-}:" in
  *":$VIRTUAL_ENV:"*) ;;
  *) AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
export AMENT_PREFIX_PATH
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp          # pinned; ros-rclpy pulls in no RMW by itself
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST       # ROS_LOCALHOST_ONLY is ignored by Kilted
export FASTDDS_DEFAULT_PROFILES_FILE="$_fmdrive_root/config/fastdds_large_messages.xml"   # Fast DDS 3 (Kilted wheels)
unset _fmdrive_root
