"""`fmdrive sim --serve` / `fmdrive demo --closed-loop`: the simulator live on DDS, driven by the
graph's plans (closed loop over real ROS 2).

Each sensor period the server publishes /clock (the frame's stamp), odometry and /tf at the
odometry rate, camera_info, the camera image and the LiDAR cloud - the topics and QoS of the bags
`fmdrive sim` writes (/tf_static and /map/speed_limit latched, once) - then waits for the planner's
answer to that frame on /planning/plan (fmdrive_msgs/Plan: the trajectory of /planning/trajectory
with its speeds and source), and drives the ego one period along it (LiveSimulation: pure pursuit +
speed control). Lock-step on sim time: the graph runs with use_sim_time, so a slow machine makes
the run slower, never different; a plan that does not come within `plan_timeout_s` of wall time
is counted (`frames_without_plan`) and the ego keeps following the previous one (none yet: it
brakes), as a vehicle whose planner went quiet would. The planner watchdog's safe stop (stamped
'now', which here is the frame's stamp) is followed only when no plan made from the frame comes in
time.
"""
from __future__ import annotations

import sys
import threading
import time

from fmdrive import config, interrupts


PRE_ROLL_S = 60.0          # /clock runs from first stamp - this, at wall pace, until the graph is ready


def serve(spec, camera, extrinsics: dict, plan_timeout_s: float = 3.0, progress: bool = True,
          stop: threading.Event | None = None, wait_for_subscribers: dict | None = None,
          subscriber_timeout_s: float = 60.0, before_start=None) -> dict:
    """Run `spec` closed loop on the current ROS domain; returns LiveSimulation.summary() plus
    what the server saw (plans received, sources, wall time). wait_for_subscribers {topic: node names
    or a count}: start once every topic's subscribers are matched (replay.missing_subscribers).
    before_start(): called first (e.g. the graph's wait_ready). During both waits a pre-roll
    /clock runs up to the first stamp at wall pace: nodes on sim time need a moving clock for
    their timers (/diagnostics, which readiness waits on) before any sensor data exists."""
    from rclpy.executors import ExternalShutdownException
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import Float32
    from tqdm import tqdm

    from fmdrive.bags.replay import qos_profile
    from fmdrive.bags.writer import default_qos_name
    from fmdrive.geometry import pose2d_to_T
    from fmdrive.msgs import (ego_to_odometry, fields_to_camera_info, msg_to_plan, ns_to_stamp, rgb_to_image,
                              transforms_to_tf, xyzi_to_pointcloud2)
    from fmdrive.rosenv import close_node, open_node
    from fmdrive.sim.live import LiveSimulation
    from fmdrive_msgs.msg import Plan as PlanMsg
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    T, F = config.TOPICS, config.FRAMES
    stop = stop or threading.Event()
    live = LiveSimulation(spec, camera, extrinsics)
    cam_fields = camera.to_camera_info_fields()
    cam_fields['frame_id'] = F['camera']
    context, node, executor = open_node('fmdrive_sim')
    kinds = {'image': Image, 'camera_info': CameraInfo, 'points': PointCloud2, 'odometry': Odometry,
             'tf': TFMessage, 'tf_static': TFMessage, 'speed_limit': Float32}
    pubs = {k: node.create_publisher(cls, T[k], qos_profile(config.QOS[default_qos_name(T[k])]))
            for k, cls in kinds.items()}
    clock = node.create_publisher(Clock, T['clock'], qos_profile(
        {'reliability': 'reliable', 'durability': 'volatile', 'depth': 1}))
    plans: dict[int, object] = {}
    received = {'plans': 0, 'sources': {}}

    def on_plan(msg):
        try:
            plan = msg_to_plan(msg)
        except Exception:  # noqa: BLE001 - a broken plan is no plan (counted as missing)
            return
        if _planned(plans.get(plan.stamp_ns)) and not _planned(plan):
            return          # a watchdog stop stamped now never replaces the plan made from the frame
        plans[plan.stamp_ns] = plan
        received['plans'] += 1
        received['sources'][plan.source] = received['sources'].get(plan.source, 0) + 1

    node.create_subscription(PlanMsg, T['plan'], on_plan, qos_profile(config.QOS['reliable']))
    t_begin = time.monotonic()
    bar = tqdm(total=live.num_frames, unit='frame', desc=f'closed loop {spec.kind}', disable=not progress,
               file=sys.stderr)
    try:
        done = threading.Event()
        pre_roll = threading.Thread(target=_pre_roll, args=(clock, live.sim._stamp_ns(), done), daemon=True)
        pre_roll.start()
        try:
            if before_start is not None:
                before_start()
            _wait_for(node, executor, {T[k]: p for k, p in pubs.items()}, wait_for_subscribers or {}, stop,
                      subscriber_timeout_s)
        finally:
            done.set()
            pre_roll.join()
        frame = live.first()
        pubs['tf_static'].publish(transforms_to_tf([(F['base'], child, Tc) for child, Tc in extrinsics.items()
                                                   if child != F['base']], frame.stamp_ns))
        pubs['speed_limit'].publish(Float32(data=float(spec.road.speed_limit_mps)))
        while not stop.is_set():
            stamp = frame.stamp_ns
            clock.publish(Clock(clock=ns_to_stamp(stamp)))
            for odom_stamp, ego in frame.odometry:
                pubs['odometry'].publish(ego_to_odometry(odom_stamp, ego, F['odom'], F['base']))
                T_odom_base = pose2d_to_T(ego.x, ego.y, ego.yaw_rad)
                pubs['tf'].publish(transforms_to_tf([(F['odom'], F['base'], T_odom_base)], odom_stamp))
            pubs['camera_info'].publish(fields_to_camera_info(cam_fields, stamp))
            pubs['image'].publish(rgb_to_image(frame.image_rgb, stamp, F['camera']))
            pubs['points'].publish(xyzi_to_pointcloud2(frame.points_lidar, stamp, F['lidar']))
            bar.update(1)
            if live.finished:
                break
            deadline = time.monotonic() + plan_timeout_s
            while not _planned(plans.get(stamp)) and time.monotonic() < deadline and not stop.is_set():
                executor.spin_once(timeout_sec=0.01)
            frame = live.advance(plans.pop(stamp, None))
            for old in [s for s in plans if s < stamp]:
                plans.pop(old)
    except (KeyboardInterrupt, ExternalShutdownException):
        stop.set()
    except RuntimeError as e:
        if not interrupts.disguised(e):     # a Ctrl-C that landed while a plan was being taken
            raise
        stop.set()
    finally:
        bar.close()
        close_node(context, node, executor)
    return {**live.summary(), 'plans_received': received['plans'], 'plan_sources': received['sources'],
            'wall_s': round(time.monotonic() - t_begin, 2), 'interrupted': stop.is_set(),
            'plan_timeout_s': plan_timeout_s}


def _planned(plan) -> bool:
    """A plan made from a scene: not the planner watchdog's safe stop (stamped 'now', which in
    lock-step is the frame's stamp too; taken only when nothing else comes in time)."""
    return plan is not None and not str(plan.status).startswith('safe_stop')


def _wait_for(node, executor, publishers: dict, wanted: dict, stop, timeout_s: float) -> None:
    """Until each wanted topic ({topic: node names or count}) has its subscribers matched
    (replay.missing_subscribers), or the timeout: go anyway, the lock-step waits per frame."""
    from fmdrive.bags.replay import missing_subscribers
    end = time.monotonic() + timeout_s
    wanted = {t: w for t, w in wanted.items() if t in publishers}
    while wanted and not stop.is_set() and time.monotonic() < end:
        if not missing_subscribers(node, publishers, wanted):
            return
        executor.spin_once(timeout_sec=0.05)


def _pre_roll(clock, first_ns: int, done: threading.Event) -> None:
    from rosgraph_msgs.msg import Clock

    from fmdrive.msgs import ns_to_stamp
    t0 = time.monotonic()
    while not done.is_set():
        now = first_ns - int(PRE_ROLL_S * 1e9) + int((time.monotonic() - t0) * 1e9)
        clock.publish(Clock(clock=ns_to_stamp(min(now, first_ns - 1_000_000))))
        done.wait(0.02)
