"""Publish a bag over ROS 2 with rclpy (what `ros2 bag play` does on the vehicle).

    fmdrive replay runs/drive1 --rate 1 --restamp

One publisher per topic (reliable by default; /tf_static and camera_info latched), messages in
bag-time order on a schedule computed from the start time (sleep errors never accumulate), and
/clock from the bag time at 100 Hz of wall time (as `ros2 bag play --clock 100`: at rate R each tick
advances the sim clock R x 10 ms), so nodes can run with use_sim_time.
Without restamp the stored CDR bytes are published as they are (no deserialisation).
restamp=True stamps each message with the wall time at which it is published, as a live sensor
would: its first std_msgs/Header stamp becomes the publish time and every other stamp in it
(Path poses, TF transforms, markers) moves by the same amount. Messages that carried the same
stamp in the bag (camera, LiDAR and odometry of one instant) get the same new stamp (the publish
time of the first of them), so their alignment is kept. receive time - header.stamp is then the
true latency of a node graph at any rate and never negative (a single constant offset would put
stamps in the future at rate > 1). The stats hold every (original, published) stamp pair
(`stamp_map_ns`) so eval can give each output back its bag stamp.
--remap FROM:=TO renames topics at publish.
"""
from __future__ import annotations

import re
import signal
import struct
import sys
import threading
import time
from functools import lru_cache

import numpy as np

from fmdrive import interrupts
from fmdrive.bags.reader import BagReader
from fmdrive.bags.typestore import BagError, message_class
from fmdrive.config import QOS, TOPICS
from fmdrive.bags.writer import default_qos_name

# /clock every 10 ms of wall time at any rate: one tick per 10 ms of sim time (2 ms of wall at 5x)
# woke the replay 500 times a second for nothing
CLOCK_PERIOD_S = 0.01
SUBSCRIBER_SETTLE_S = 0.5          # best effort only: after subscribers match, let their side finish matching


def qos_profile(profile: dict):
    """rclpy QoSProfile of a fmdrive.config.QOS-style dict."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(profile['depth']),
                      reliability=ReliabilityPolicy[profile['reliability'].upper()],
                      durability=DurabilityPolicy[profile['durability'].upper()])


# ---------------------------------------------------------------- restamping
def _base_type(field_type: str) -> str:
    """'sequence<geometry_msgs/PoseStamped, 5>' / 'geometry_msgs/Point[4]' -> the element type."""
    base = re.sub(r'^sequence<([^,>]+).*>$', r'\1', field_type)
    return re.sub(r'(\[\d*\]|<=\d+)$', '', base)


@lru_cache(maxsize=None)
def _stamped_fields(cls) -> tuple:
    """(field name, is_header, is_sequence) of fields of cls that are or contain a Header."""
    out = []
    for name, field_type in cls.get_fields_and_field_types().items():
        base = _base_type(field_type)
        if '/' not in base:
            continue
        is_sequence = base != field_type
        if base == 'std_msgs/Header':
            out.append((name, True, is_sequence))
        elif _stamped_fields(message_class(base)):
            out.append((name, False, is_sequence))
    return tuple(out)


def first_stamp_ns(msg) -> int | None:
    """The first std_msgs/Header stamp of msg (depth first: header, then nested), None if none."""
    for name, is_header, is_sequence in _stamped_fields(type(msg)):
        value = getattr(msg, name)
        for item in (value if is_sequence else (value,)):
            if is_header:
                return item.stamp.sec * 1_000_000_000 + item.stamp.nanosec
            found = first_stamp_ns(item)
            if found is not None:
                return found
    return None


class Restamper:
    """Per-message restamp to wall time, remembering (original, published) stamp pairs.

    A stamp seen before in this pass maps to what it got then, so messages of one instant stay
    aligned; a new one gets the wall time it is given (the replay gives the time the message was
    due, never after its publish time) or the current one, strictly increasing so the map inverts.
    Stamp 0 means "unset" and stays 0."""

    def __init__(self):
        self.pairs: list[tuple[int, int]] = []
        self._current: dict[int, int] = {}
        self._last_ns = 0

    def new_pass(self) -> None:
        self._current = {}

    def published_stamp(self, original: int, wall_ns: int | None = None) -> int:
        published = self._current.get(original)
        if published is None:
            published = max(time.time_ns() if wall_ns is None else wall_ns, self._last_ns + 1)
            self._last_ns = published
            self._current[original] = published
            self.pairs.append((original, published))
        return published

    def restamp(self, msg, wall_ns: int | None = None) -> None:
        original = first_stamp_ns(msg)
        if original:
            shift_stamps(msg, self.published_stamp(original, wall_ns) - original)

    def restamp_serialized(self, data, wall_ns: int | None = None) -> bytes | None:
        """Restamped copy of the CDR bytes of a header_only() message, without deserialising it
        (a 4 MB cloud costs a memcpy instead of a round trip through Python); None when the bytes
        are not plain CDR (then restamp() the message)."""
        original = cdr_header_stamp_ns(data)
        if original is None:
            return None
        out = bytearray(data)
        if original:
            set_cdr_header_stamp(out, self.published_stamp(original, wall_ns))
        return bytes(out)


@lru_cache(maxsize=None)
def header_only(cls) -> bool:
    """Whether cls's only stamp is a leading std_msgs/Header `header` (Image, PointCloud2,
    CameraInfo, Odometry...): its stamp then sits at a fixed place of the CDR bytes."""
    fields = list(cls.get_fields_and_field_types().items())
    return bool(fields) and fields[0] == ('header', 'std_msgs/Header') and \
        _stamped_fields(cls) == (('header', True, False),)


_CDR_LE, _CDR_BE = b'\x00\x01', b'\x00\x00'


def cdr_header_stamp_ns(data) -> int | None:
    """The header stamp of serialized (CDR) bytes of a header_only() message: the 4-byte
    encapsulation, then int32 sec and uint32 nanosec. None when the encapsulation is not plain CDR."""
    kind = bytes(data[:2])
    if kind not in (_CDR_LE, _CDR_BE) or len(data) < 12:
        return None
    order = '<' if kind == _CDR_LE else '>'
    sec, nanosec = struct.unpack_from(order + 'iI', data, 4)
    return sec * 1_000_000_000 + nanosec


def set_cdr_header_stamp(data: bytearray, ns: int) -> None:
    """Write stamp ns into serialized bytes whose cdr_header_stamp_ns() is not None (in place)."""
    order = '<' if bytes(data[:2]) == _CDR_LE else '>'
    struct.pack_into(order + 'iI', data, 4, *divmod(ns, 1_000_000_000))


def shift_stamps(msg, offset_ns: int) -> None:
    """Add offset_ns to every std_msgs/Header stamp in msg, nested ones included (in place)."""
    for name, is_header, is_sequence in _stamped_fields(type(msg)):
        value = getattr(msg, name)
        for item in (value if is_sequence else (value,)):
            if is_header:
                ns = item.stamp.sec * 1_000_000_000 + item.stamp.nanosec + offset_ns
                item.stamp.sec, item.stamp.nanosec = divmod(ns, 1_000_000_000)
            else:
                shift_stamps(item, offset_ns)


# ---------------------------------------------------------------- replay
class _Stopper:
    """Ctrl-C / SIGTERM (main thread only) or a caller's Event end the replay cleanly."""

    def __init__(self, stop: threading.Event | None):
        self.event = stop or threading.Event()
        self.signals = 0          # how many Ctrl-C / SIGTERM arrived
        self._previous = {}

    def _on_signal(self, *_):
        self.signals += 1
        self.event.set()
        interrupts.note()

    def __enter__(self):
        if interrupts.interrupted():   # one that arrived just before (and was swallowed)
            self.event.set()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self.event

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def replay(bag, rate: float = 1.0, loop: bool = False, topics=None, restamp: bool = False,
           qos: str = 'reliable', clock: bool = True, start_paused: bool = False,
           wait_for_subscribers: list[str] | None = None, progress: bool = True,
           node_name: str = 'fmdrive_replay', stop: threading.Event | None = None,
           remap: dict | None = None) -> dict:
    """Publish bag (a path or BagReader) over ROS 2; returns statistics.

    rate: playback speed factor. loop: repeat until stopped. topics: subset to publish.
    qos: 'reliable' or 'sensor' (fmdrive.config.QOS) for all but latched topics.
    clock: publish /clock (the bag's own /clock topic is then skipped).
    start_paused: publish /clock at the start time, then wait for a message on ~/resume
    (std_msgs/Empty) or Enter on a terminal. wait_for_subscribers: topics (or {topic: the names of the
    nodes that read it, or a number of subscribers}) whose subscribers must be matched before the first message (then 0.5 s), named
    as published (after remap). stop: an Event that ends the replay (Ctrl-C does too).
    remap: {bag topic: topic to publish it on}. Returns {'published': {published topic: n},
    'late_ms_p50', 'late_ms_p99', 'late_ms_max', 'loops', 'wall_s', 'interrupted',
    'stamp_map_ns': [[original, published], ...] (restamp only)}.
    """
    if not rate > 0:
        raise ValueError(f'replay rate must be > 0, got {rate}')
    if qos not in QOS:
        raise ValueError(f'unknown qos {qos!r}; choose one of {", ".join(QOS)}')
    reader = bag if isinstance(bag, BagReader) else BagReader(bag)
    try:
        selected = [t for t in (topics or reader.topics)
                    if not (clock and t == TOPICS['clock'])]
        reader._connections(selected)  # BagError for topics not in the bag
        remap = dict(remap or {})
        unknown = [t for t in remap if t not in reader.topics]
        if unknown:
            raise BagError(f'cannot remap {", ".join(unknown)}: not in bag {reader.path} '
                           f'(it has {", ".join(sorted(reader.topics))})')
        classes = {t: message_class(reader.topics[t][0]) for t in selected}
        with _Stopper(stop) as stop_event:
            return _run(reader, selected, classes, rate, loop, restamp, qos, clock, start_paused,
                        wait_for_subscribers or [], progress, node_name, stop_event, remap)
    finally:
        if reader is not bag:
            reader.close()


def _run(reader, selected, classes, rate, loop, restamp, qos, clock, start_paused,
         wait_for_subscribers, progress, node_name, stop_event, remap) -> dict:
    from rclpy.executors import ExternalShutdownException
    from rclpy.serialization import deserialize_message
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import Empty
    from tqdm import tqdm

    from fmdrive.msgs import ns_to_stamp
    from fmdrive.rosenv import close_node, open_node

    context, node, executor = open_node(node_name)
    out_name = {t: remap.get(t, t) for t in selected}
    publishers = {t: node.create_publisher(classes[t], out_name[t],
                                           qos_profile(QOS[default_qos_name(out_name[t], qos)]))
                  for t in selected}
    clock_pub = node.create_publisher(Clock, TOPICS['clock'], qos_profile(
        {'reliability': 'reliable', 'durability': 'volatile', 'depth': 1})) if clock else None
    resumed = threading.Event()
    node.create_subscription(Empty, '~/resume', lambda _msg: resumed.set(), 10)

    def publish_clock(sim_ns: int) -> None:
        if clock_pub is not None:
            clock_pub.publish(Clock(clock=ns_to_stamp(sim_ns)))

    published = {t: 0 for t in selected}
    restamper = Restamper() if restamp else None
    late_s, loops, t_begin = [], 0, time.monotonic()
    per_pass = sum(reader.topics[t][1] for t in selected)
    bar = tqdm(total=None if loop else per_pass, unit='msg', desc='replay', disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        _wait_for_subscribers(node, executor, {out_name[t]: p for t, p in publishers.items()},
                              wait_for_subscribers, stop_event)
        if start_paused and not stop_event.is_set():
            publish_clock(time.time_ns() if restamp else reader.start_ns)
            node.get_logger().info(f'paused: publish std_msgs/Empty on '
                                   f'{node.get_fully_qualified_name()}/resume or press Enter')
            while not (resumed.is_set() or stop_event.is_set() or _enter_pressed()):
                executor.spin_once(timeout_sec=0.05)
        clock_period_s = CLOCK_PERIOD_S
        def sim_now_ns(t0: float, now: float) -> int:
            # restamped stamps are wall times, so /clock is too; else the bag's time
            return time.time_ns() if restamp else reader.start_ns + int((now - t0) * 1e9 * rate)

        while not stop_event.is_set():
            t0 = time.monotonic()
            if restamper is not None:
                restamper.new_pass()
            next_clock = t0
            for topic, _, stamp_ns, data in reader.raw_messages(selected):
                target = t0 + (stamp_ns - reader.start_ns) / 1e9 / rate
                while not stop_event.is_set():
                    now = time.monotonic()
                    if now >= target:
                        break
                    if clock_pub is not None and now >= next_clock:
                        publish_clock(sim_now_ns(t0, now))
                        next_clock = now + clock_period_s
                    wake = min(target, next_clock) if clock_pub is not None else target
                    time.sleep(min(max(wake - now, 0.0), 0.1))
                if stop_event.is_set():
                    break
                if restamper is not None:
                    # the wall time the message was due, as a live sensor stamps at capture: a replay
                    # that falls behind (a busy computer) shows as latency, not as uneven stamps
                    due_ns = time.time_ns() - int(max(0.0, time.monotonic() - target) * 1e9)
                    msg = restamper.restamp_serialized(data, due_ns) if header_only(classes[topic]) else None
                    if msg is None:
                        msg = deserialize_message(bytes(data), classes[topic])
                        restamper.restamp(msg, due_ns)
                    publish_clock(time.time_ns())
                    publishers[topic].publish(msg)
                else:
                    publish_clock(stamp_ns)
                    publishers[topic].publish(bytes(data))
                late_s.append(time.monotonic() - target)
                published[topic] += 1
                bar.update(1)
            else:
                loops += 1
                if not loop or per_pass == 0:
                    break
        _wait_for_acks(publishers.values())
    except (KeyboardInterrupt, ExternalShutdownException):
        stop_event.set()
    finally:
        bar.close()
        close_node(context, node, executor)
    late_ms = np.asarray(late_s) * 1e3
    pick = (lambda q: round(float(np.percentile(late_ms, q)), 3)) if late_ms.size else \
        (lambda q: None)
    stats = {'published': {out_name[t]: n for t, n in published.items()},
             'late_ms_p50': pick(50), 'late_ms_p99': pick(99), 'late_ms_max': pick(100),
             'loops': loops, 'wall_s': round(time.monotonic() - t_begin, 3),
             'interrupted': stop_event.is_set(), 'rate': rate, 'restamp': bool(restamp)}
    if restamper is not None:
        stats['stamp_map_ns'] = [list(pair) for pair in restamper.pairs]
    return stats


def missing_subscribers(node, publishers: dict, expected: dict) -> list:
    """The topics of `expected` ({topic: the names of the nodes that must read it, or a count})
    whose subscribers are not all matched yet: every named node (at least `count` subscriptions)
    discovered as a subscriber, and our publisher of the topic matched to at least one and to every
    subscription discovered so far. Names, not a count: a node reading a topic only while watched
    (the visualizer, when a recorder takes its overlay) can be the one discovered and matched first,
    and a count of one is then met while the node that needs the data is not matched yet.
    A discovered subscription is not yet a matched one: messages sent in between are lost."""
    missing = []
    for topic, want in expected.items():
        try:
            found = [info.node_name for info in node.get_subscriptions_info_by_topic(topic)]
        except Exception:  # noqa: BLE001 - graph query while shutting down
            found = []
        named = () if isinstance(want, int) else tuple(want)
        need = want if isinstance(want, int) else len(named)
        matched = publishers[topic].get_subscription_count() if topic in publishers else len(found)
        if not set(named) <= set(found) or matched < max(need, len(found), 1):
            missing.append(topic)
    return missing


def _wait_for_subscribers(node, executor, publishers, topics, stop_event) -> None:
    """Until missing_subscribers() is empty for `topics` ({topic: node names or count}, or a list
    of topics: at least one subscriber each)."""
    if not topics:
        return
    expected = dict(topics) if isinstance(topics, dict) else {t: 1 for t in topics}
    last_log = time.monotonic()

    from rclpy.qos import ReliabilityPolicy
    reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers.values())
    while not stop_event.is_set():
        missing = missing_subscribers(node, publishers, expected)
        if not missing:
            # Reliable: a reader our writer has matched gets every sample from now on (resent until
            # acknowledged), so matching is the condition. Best effort has no acknowledgement: the
            # reader's side of the match cannot be observed, so give it a moment.
            if not reliable:
                time.sleep(SUBSCRIBER_SETTLE_S)
            return
        if time.monotonic() - last_log > 5.0:
            node.get_logger().info(f'waiting for subscribers on {", ".join(missing)}')
            last_log = time.monotonic()
        executor.spin_once(timeout_sec=0.05)


def _wait_for_acks(publishers, timeout_s: float = 5.0) -> None:
    """Let reliable readers receive the tail of the bag before the publishers go away."""
    from rclpy.duration import Duration
    deadline = time.monotonic() + timeout_s
    for pub in publishers:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            pub.wait_for_all_acked(Duration(seconds=remaining))
        except Exception:  # best-effort publishers cannot be acked
            pass


def _enter_pressed() -> bool:
    if not sys.stdin or not sys.stdin.isatty():
        return False
    import select
    ready, _, _ = select.select([sys.stdin], [], [], 0)
    if ready:
        sys.stdin.readline()
        return True
    return False


# ---------------------------------------------------------------- CLI
def parse_remap(text: str) -> tuple[str, str]:
    """'/from:=/to' -> ('/from', '/to') (argparse type; ROS remap syntax, absolute names)."""
    import argparse
    source, sep, target = text.partition(':=')
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f'remap {text!r} is not FROM:=TO (e.g. '
                                         '/velodyne_points:=/sensors/lidar/points)')
    names = ['/' + n.lstrip('/') for n in (source, target)]
    if any(not re.fullmatch(r'(/[A-Za-z_][A-Za-z0-9_]*)+', n) for n in names):
        raise argparse.ArgumentTypeError(f'remap {text!r}: topic names are /words/like_this')
    return names[0], names[1]


def add_replay_arguments(parser) -> None:
    """Arguments of `fmdrive replay BAG [--rate R] [--loop] [--restamp] [--topics ...]`."""
    parser.add_argument('bag', help='bag directory (metadata.yaml + .mcap) or .mcap file')
    parser.add_argument('--rate', type=float, default=1.0, help='playback speed factor')
    parser.add_argument('--loop', action='store_true', help='repeat until Ctrl-C')
    parser.add_argument('--restamp', action='store_true',
                        help='stamp each message with the wall time it is due, as a live sensor '
                             'stamps at capture (end-to-end latency = receive time - stamp, at any rate)')
    parser.add_argument('--remap', action='append', default=[], metavar='FROM:=TO',
                        type=parse_remap, help='publish bag topic FROM on TO (repeatable)')
    parser.add_argument('--stats', default=None, metavar='replay.json',
                        help='write the replay statistics (with the restamp map) to this file')
    parser.add_argument('--topics', nargs='+', default=None, help='only these topics')
    parser.add_argument('--qos', choices=sorted(QOS), default='reliable',
                        help='QoS of non-latched topics (default reliable)')
    parser.add_argument('--no-clock', dest='clock', action='store_false',
                        help='do not publish /clock')
    parser.add_argument('--start-paused', action='store_true',
                        help='wait for ~/resume (std_msgs/Empty) or Enter before playing')
    parser.add_argument('--wait-for-subscribers', nargs='+', default=None, metavar='TOPIC',
                        help='start only once each of these topics has a subscriber')
    parser.add_argument('--no-progress', dest='progress', action='store_false')


def run_replay(args) -> int:
    """Run `fmdrive replay` from parsed arguments; 2 with one error line on a bad bag."""
    try:
        stats = replay(args.bag, rate=args.rate, loop=args.loop, topics=args.topics,
                       restamp=args.restamp, qos=args.qos, clock=args.clock,
                       start_paused=args.start_paused,
                       wait_for_subscribers=args.wait_for_subscribers, progress=args.progress,
                       remap=dict(getattr(args, 'remap', None) or []))
    except (BagError, ValueError) as err:
        print(f'fmdrive replay: error: {err}', file=sys.stderr)
        return 2
    if getattr(args, 'stats', None):
        import json
        from pathlib import Path
        Path(args.stats).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stats).write_text(json.dumps(stats))
    total = sum(stats['published'].values())
    print(f'published {total} messages on {len(stats["published"])} topics in '
          f'{stats["wall_s"]:.1f} s (late p99 {stats["late_ms_p99"]} ms)'
          + (' - interrupted' if stats['interrupted'] else ''), file=sys.stderr)
    return 0
