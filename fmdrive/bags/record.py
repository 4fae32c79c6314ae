"""Record ROS 2 topics into a rosbag2 MCAP bag (what `ros2 bag record` does on the vehicle).

    fmdrive record /sensors/lidar/points /planning/trajectory -o runs/rec1 --duration 30

Types come from fmdrive.config.TOPIC_TYPES, or from the ROS graph for other topics. A topic is
subscribed once a publisher of it is seen, with QoS adapted to the publishers (best effort if
any publisher is, transient_local if all are, so latched /tf_static is recorded too).
Messages are taken serialised (raw=True) and written as received, stamped with their receive
time, like ros2 bag record. Stops on Ctrl-C/SIGTERM, duration_s, idle_timeout_s, until() or
a caller's stop Event; the bag is always closed properly.
"""
from __future__ import annotations

import sys
import threading
import time

from fmdrive.bags.replay import _Stopper, qos_profile
from fmdrive.bags.typestore import BagError, message_class
from fmdrive.bags.writer import BagWriter
from fmdrive.config import QOS, TOPIC_TYPES

GRAPH_POLL_S = 0.2


def _adapted_profile(publishers_info, qos: str) -> dict:
    """QoS to subscribe with, matching every publisher seen (rosbag2's adaptation, simplified)."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    profile = dict(QOS[qos])
    if any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers_info):
        profile['reliability'] = 'best_effort'
    if publishers_info and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                               for p in publishers_info):
        profile['durability'] = 'transient_local'
    return profile


def _graph_type(node, topic: str) -> str | None:
    for name, types in node.get_topic_names_and_types():
        if name == topic and types:
            return types[0]
    return None


def record(topics, out_path, duration_s: float | None = None,
           idle_timeout_s: float | None = None, progress: bool = True, qos: str = 'reliable',
           until=None, stop: threading.Event | None = None, overwrite: bool = False,
           node_name: str = 'fmdrive_record') -> dict:
    """Record topics into the bag out_path until a stop condition; returns {topic: count}.

    idle_timeout_s counts from the start and from the last message received.
    until: a callable polled ~20 times a second; recording stops when it returns True.
    """
    if not topics:
        raise ValueError('record needs at least one topic')
    if qos not in QOS:
        raise ValueError(f'unknown qos {qos!r}; choose one of {", ".join(QOS)}')
    from rclpy.executors import ExternalShutdownException
    from tqdm import tqdm

    from fmdrive.rosenv import close_node, open_node

    topics = list(dict.fromkeys(topics))
    writer = BagWriter(out_path, overwrite=overwrite)  # BagError if it exists
    context, node, executor = open_node(node_name)
    counts = {t: 0 for t in topics}
    pending = list(topics)
    last_message = [time.monotonic()]
    bar = tqdm(unit='msg', desc='record', disable=not progress, file=sys.stderr,
               dynamic_ncols=True)

    def subscribe_ready_topics() -> None:
        for topic in list(pending):
            publishers_info = node.get_publishers_info_by_topic(topic)
            if not publishers_info:
                continue
            msgtype = TOPIC_TYPES.get(topic) or _graph_type(node, topic)
            if msgtype is None:
                continue
            cls = message_class(msgtype)
            profile = _adapted_profile(publishers_info, qos)
            writer.add_topic(topic, msgtype, qos=profile)

            def on_message(data, topic=topic, msgtype=msgtype):
                writer.write_raw(topic, msgtype, data, time.time_ns())
                counts[topic] += 1
                last_message[0] = time.monotonic()
                bar.update(1)

            node.create_subscription(cls, topic, on_message, qos_profile(profile), raw=True)
            pending.remove(topic)
            node.get_logger().info(f'recording {topic} ({msgtype}, {profile["reliability"]}, '
                                   f'{profile["durability"]})')

    t_start = time.monotonic()
    next_poll = t_start
    try:
        with _Stopper(stop) as stop_event:
            while not stop_event.is_set():
                now = time.monotonic()
                if pending and now >= next_poll:
                    subscribe_ready_topics()
                    next_poll = now + GRAPH_POLL_S
                executor.spin_once(timeout_sec=0.05)
                now = time.monotonic()
                if duration_s is not None and now - t_start >= duration_s:
                    break
                if idle_timeout_s is not None and now - last_message[0] >= idle_timeout_s:
                    break
                if until is not None and until():
                    break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        bar.close()
        close_node(context, node, executor)
        writer.close()
    if pending:
        print(f'record: never saw a publisher of {", ".join(pending)}', file=sys.stderr)
    return counts


# ---------------------------------------------------------------- CLI
def add_record_arguments(parser) -> None:
    """Arguments of `fmdrive record TOPICS... -o OUT [--duration S]`."""
    parser.add_argument('topics', nargs='+', help='topics to record')
    parser.add_argument('-o', '--output', required=True, help='bag directory to create')
    parser.add_argument('--duration', type=float, default=None, help='stop after S seconds')
    parser.add_argument('--idle-timeout', type=float, default=None,
                        help='stop after S seconds without a message')
    parser.add_argument('--qos', choices=sorted(QOS), default='reliable')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing bag')
    parser.add_argument('--no-progress', dest='progress', action='store_false')


def run_record(args) -> int:
    """Run `fmdrive record` from parsed arguments; 2 with one error line on bad input."""
    try:
        counts = record(args.topics, args.output, duration_s=args.duration,
                        idle_timeout_s=args.idle_timeout, progress=args.progress, qos=args.qos,
                        overwrite=args.overwrite)
    except (BagError, ValueError) as err:
        print(f'fmdrive record: error: {err}', file=sys.stderr)
        return 2
    print(f'recorded {sum(counts.values())} messages into {args.output}: '
          + ', '.join(f'{t} {n}' for t, n in counts.items()), file=sys.stderr)
    return 0
