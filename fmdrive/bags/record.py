"""Record ROS 2 topics into a rosbag2 MCAP bag (what `ros2 bag record` does on the vehicle).

    fmdrive record /sensors/lidar/points /planning/trajectory -o runs/rec1 --duration 30

Types come from fmdrive.config.TOPIC_TYPES, or from the ROS graph for other topics. A topic is
subscribed once a publisher of it is seen, with QoS adapted to the publishers (best effort if
any publisher is, transient_local if all are, so latched /tf_static is recorded too).
Messages are taken serialised (raw=True) and written as received, stamped with their receive
time, like ros2 bag record. Stops on Ctrl-C/SIGTERM, duration_s, idle_timeout_s, until() or
a caller's stop Event, but first drains: messages already on their way are taken until no
message has arrived for drain_quiet_s on any topic but the periodic ones (/diagnostics, /clock),
or each topic reached its `expected` count, within drain_max_s (a second Ctrl-C skips it).
The bag is always closed properly; what was written is flushed to disk every second, so even a
SIGKILLed recorder leaves an MCAP that `fmdrive bag recover` turns into a readable bag.
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
FLUSH_PERIOD_S = 1.0
STATUS_PERIOD_S = 0.25
PERIODIC_TOPICS = ('/diagnostics', '/clock', '/rosout', '/parameter_events')


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
           node_name: str = 'fmdrive_record', drain_quiet_s: float = 0.5,
           drain_max_s: float = 10.0, expected: dict | None = None,
           status_file=None) -> dict:
    """Record topics into the bag out_path until a stop condition; returns {topic: count}.

    idle_timeout_s counts from the start and from the last message received.
    until: a callable polled ~20 times a second; recording stops when it returns True.
    Then the drain (module doc): expected = {topic: count} ends it as soon as reached.
    status_file: JSON {"counts", "pending", "state"} rewritten 4 times a second (for a parent
    process that waits on what the recorder has received).
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
    last_data_message = [time.monotonic()]
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
                if topic not in PERIODIC_TOPICS:
                    last_data_message[0] = last_message[0]
                bar.update(1)

            node.create_subscription(cls, topic, on_message, qos_profile(profile), raw=True)
            pending.remove(topic)
            node.get_logger().info(f'recording {topic} ({msgtype}, {profile["reliability"]}, '
                                   f'{profile["durability"]})')

    def write_status(state: str) -> None:
        if status_file is not None:
            _write_json_atomically(status_file, {'counts': counts, 'flushed': flushed,
                                                 'pending': pending, 'state': state})

    flushed = {t: 0 for t in topics}   # counts on disk as complete chunks
    t_start = time.monotonic()
    next_poll = next_flush = next_status = t_start
    stopper = _Stopper(stop)
    try:
        with stopper as stop_event:
            def tick(state: str) -> None:
                nonlocal next_poll, next_flush, next_status
                now = time.monotonic()
                if pending and now >= next_poll:
                    subscribe_ready_topics()
                    next_poll = now + GRAPH_POLL_S
                executor.spin_once(timeout_sec=0.05)
                now = time.monotonic()
                if now >= next_flush:
                    writer.flush()
                    flushed.update(counts)
                    next_flush = now + FLUSH_PERIOD_S
                    next_status = now
                if now >= next_status:
                    write_status(state)
                    next_status = now + STATUS_PERIOD_S

            while not stop_event.is_set():
                tick('recording')
                now = time.monotonic()
                if duration_s is not None and now - t_start >= duration_s:
                    break
                if idle_timeout_s is not None and now - last_message[0] >= idle_timeout_s:
                    break
                if until is not None and until():
                    break
            # drain: what is on its way arrives before the bag is closed
            interrupts = stopper.signals
            drain_end = time.monotonic() + drain_max_s
            while time.monotonic() < drain_end:
                if stopper.signals > interrupts:
                    break  # (another) Ctrl-C during the drain: stop now
                if expected and all(counts.get(t, 0) >= n for t, n in expected.items()):
                    break
                if not expected and time.monotonic() - last_data_message[0] >= drain_quiet_s:
                    break
                tick('draining')
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        bar.close()
        close_node(context, node, executor)
        writer.close()
        write_status('done')
    if pending:
        print(f'record: never saw a publisher of {", ".join(pending)}', file=sys.stderr)
    return counts


def _write_json_atomically(path, obj) -> None:
    import json
    import os
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f)
    os.replace(tmp, path)


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
    parser.add_argument('--drain', type=float, default=0.5, metavar='S',
                        help='on stop, keep taking messages until none came for S seconds '
                             '(periodic /diagnostics and /clock aside; at most 10 s)')
    parser.add_argument('--status-file', default=None, help=argparse_suppress())
    parser.add_argument('--no-progress', dest='progress', action='store_false')


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def run_record(args) -> int:
    """Run `fmdrive record` from parsed arguments; 2 with one error line on bad input."""
    try:
        counts = record(args.topics, args.output, duration_s=args.duration,
                        idle_timeout_s=args.idle_timeout, progress=args.progress, qos=args.qos,
                        overwrite=args.overwrite, drain_quiet_s=args.drain,
                        status_file=args.status_file)
    except (BagError, ValueError) as err:
        print(f'fmdrive record: error: {err}', file=sys.stderr)
        return 2
    print(f'recorded {sum(counts.values())} messages into {args.output}: '
          + ', '.join(f'{t} {n}' for t, n in counts.items()), file=sys.stderr)
    return 0
