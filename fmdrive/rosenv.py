"""Environment for ROS processes that fmdrive starts (nodes, replay, record, benchmarks, tests).

On a machine where ROS 2 comes from pip wheels, scripts/ros_env.sh sets these for a shell; here the
same settings are applied to child processes so `fmdrive run` works from any shell. On a real ROS
install (the Jetson) the user's sourced environment wins: nothing set there is overridden.
"""
from __future__ import annotations

import os
import random
import sys

from fmdrive.config import FASTDDS_PROFILE

# Fast DDS reads its XML profile file from FASTDDS_DEFAULT_PROFILES_FILE since 3.0 (Kilted) and from
# FASTRTPS_DEFAULT_PROFILES_FILE before (Humble, Iron and Jazzy ship Fast DDS 2.x); Kilted's rmw
# still takes the old name but warns that it is deprecated. We read either and set the one the
# distribution's Fast DDS reads (ROS_DISTRO, which a sourced setup.bash sets; the pip wheels here are
# Kilted and set none).
PROFILE_ENV_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
FAST_DDS_2_DISTROS = ('humble', 'iron', 'jazzy')


def profile_env_var(env) -> str:
    """The variable the Fast DDS of env's ROS distribution reads its profile file from."""
    return PROFILE_ENV_VARS[1] if env.get('ROS_DISTRO', '').lower() in FAST_DDS_2_DISTROS else PROFILE_ENV_VARS[0]


def profile_file(env) -> str | None:
    """The Fast DDS XML profile file env points at (either variable), or None."""
    return next((env[v] for v in PROFILE_ENV_VARS if env.get(v)), None)


def set_profile_file(env, path) -> None:
    """Point Fast DDS at the profile `path` in env (a dict or os.environ), through the variable its
    distribution reads; the other one removed, so the two cannot disagree."""
    var = profile_env_var(env)
    for v in PROFILE_ENV_VARS:
        env.pop(v, None)
    env[var] = str(path)


def with_profile_file(env: dict, path) -> dict:
    """A copy of env with Fast DDS pointed at the profile `path` (set_profile_file)."""
    env = dict(env)
    set_profile_file(env, path)
    return env


def domain_id_of(env) -> int | None:
    """The ROS domain id env runs on (0 when unset), None when ROS_DOMAIN_ID is not a number."""
    try:
        return int(env.get('ROS_DOMAIN_ID', '0') or 0)
    except ValueError:
        return None


def launch_profile_env(profile, env=None) -> dict:
    """What a launch file sets so its nodes load the profile `profile` (our large-message one);
    nothing when the user's environment (default os.environ) already names a profile: theirs wins."""
    env = os.environ if env is None else env
    return {} if profile_file(env) else {profile_env_var(env): str(profile)}


def ros_env(domain_id: int | None = None, large_messages: bool = True, base: dict | None = None) -> dict:
    """A copy of `base` (default os.environ) with what a ROS process of ours needs."""
    env = dict(os.environ if base is None else base)
    venv = os.path.dirname(os.path.dirname(sys.executable))
    if 'AMENT_PREFIX_PATH' not in env and os.path.exists(os.path.join(venv, 'share')):
        env['AMENT_PREFIX_PATH'] = venv
    env.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    # the profile through both variables: Fast DDS 3 (Kilted) reads the first, Fast DDS 2 (Humble,
    # Jazzy) the second; one the user set wins
    if large_messages:
        env = with_profile_file(env, profile_file(env) or FASTDDS_PROFILE)
    else:
        for v in PROFILE_ENV_VARS:
            env.pop(v, None)  # unset: an empty value makes Fast DDS log errors
    if domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(domain_id)
    env.setdefault('PYTHONUNBUFFERED', '1')
    return env


_DOMAIN_LOCK_DIR = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'fmdrive-ros-domains')
_held_domain_locks: dict[int, int] = {}


def random_domain_id() -> int:
    """A domain id for an isolated run (tests, benchmarks) that no other fmdrive process on this host
    holds: each id is claimed with an exclusive flock on a file, kept until this process exits (the
    kernel drops the lock however the process dies), so parallel test runs can never share a domain.
    Domain 0 (everyone's default) and the low ids are left to the user's own graphs."""
    import fcntl
    os.makedirs(_DOMAIN_LOCK_DIR, exist_ok=True)
    candidates = list(range(10, 102))
    random.SystemRandom().shuffle(candidates)
    for domain in candidates:
        if domain in _held_domain_locks:
            continue
        fd = os.open(os.path.join(_DOMAIN_LOCK_DIR, f'{domain}.lock'), os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held_domain_locks[domain] = fd
        return domain
    raise RuntimeError(f'no free ROS domain id: all of 10-101 are held by other fmdrive processes '
                       f'(locks in {_DOMAIN_LOCK_DIR})')


def apply_to_this_process(domain_id: int | None = None) -> None:
    """Set the variables in this process before rclpy.init() (DDS reads them at participant creation)."""
    os.environ.update(ros_env(domain_id))


def open_node(name: str):
    """(context, node, executor): an rclpy node in its own context, without rclpy's signal handlers
    (the caller decides what Ctrl-C means), for tools such as replay, record and graph probes."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return context, node, executor


def close_node(context, node, executor) -> None:
    """Undo open_node (safe after an external shutdown of the context)."""
    import rclpy
    executor.shutdown()
    node.destroy_node()
    if context.ok():
        rclpy.shutdown(context=context)
