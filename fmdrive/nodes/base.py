"""What every fmdrive node shares, so each node stays a thin adapter:

- parameters declared from config.py with descriptors (type, range, description, read-only); an
  invalid value stops the node at start with one line naming it; runtime changes are applied
  (`reconfigure`) or refused with the reason;
- subscriptions whose QoS matches what real drivers publish (`sensor_qos: auto` follows the
  publishers: best effort if any is, transient_local only if all are), incompatible-QoS events
  counted and warned once;
- bounded input queues that drop the oldest message (and count it), bad-input handling that never
  kills the node;
- liveliness: each input ages against the clock (rate over a window ending now, STALE on
  /diagnostics within stale_after_s of a topic going silent, naming it), and gaps in the stamp
  sequence of periodic inputs are counted as frames that never arrived (loss upstream or in DDS);
- one TF buffer per node fed by /tf_static and /tf, with the calibration YAML as the fallback;
- /diagnostics with processing_time_ms, pipeline_latency_ms, rates, drops, the calibration source and
  how many subscribers each output has matched (what `fmdrive run` waits on at start);
- a node that Fast DDS has cut off from shared memory (its listening port replaced by a peer, see
  fmdrive/shm_ports.py) says so and exits with EXIT_TRANSPORT_LOST, so that its supervisor starts
  it again (a new process opens its port anew) instead of leaving it on the graph, deaf.

Only rclpy API that exists in Humble, Jazzy and Kilted is used.
"""
from __future__ import annotations

import collections
import faulthandler
import gc
import signal
import statistics
import sys
import threading
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from fmdrive import config, interrupts
from fmdrive.msgs import MessageError, stamp_to_ns
from fmdrive.rate_gate import RateGate
from fmdrive.shm_ports import EXIT_TRANSPORT_LOST, PortWatch
from fmdrive.tf import TransformError

try:                                    # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:                     # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks


def _only(callbacks_cls, **callbacks):
    """Event callbacks with only the given ones: rclpy otherwise adds default incompatible-QoS and
    incompatible-type handlers to every publisher and subscription, and the single-threaded
    executor walks each of them in Python on every wake-up (at 50 Hz odometry and /tf, a large
    part of a node's CPU). Incompatible QoS is counted by the subscriptions (see subscribe)."""
    try:
        return callbacks_cls(use_default_callbacks=False, **callbacks)
    except TypeError:                   # a release without the flag
        return callbacks_cls(**callbacks)

WINDOW = 200               # samples kept for p50/p99 on /diagnostics
RECENT_WARNING_S = 5.0     # a warning keeps the node's status at WARN this long
RATE_WINDOW_S = 2.0        # input rates are counted over the last this-many seconds
STALE_CHECK_PERIOD_S = 0.1  # an input going stale (or coming back) is published at once, not at the next period
QOS_CHECK_PERIOD_S = 1.0   # how often `auto` QoS looks at the publishers of each input
TRANSPORT_CHECK_PERIOD_S = 1.0  # how often a node checks it can still receive over shared memory
LAST_WORD_S = 1.0              # how long an exiting node waits for its last /diagnostics to be acknowledged
TRANSPORT_LOST_CHECKS = 2       # consecutive checks that must agree before the node gives up its process
GAP_FACTOR = 1.6           # a stamp step this many typical periods long means frames went missing
GAP_LEARN_STEPS = 5        # stamp steps seen before gaps are judged (the first ones then too)
TF_WAIT_S = 1.0            # a frame no one has published yet is waited for this long from its first need
EXECUTOR_STUCK_S = 30.0    # a node whose executor runs nothing for this long (a callback, or a Fast DDS take,
                           # blocked in C) is ended: its stacks go to its log, exit code 1, and its supervisor
                           # (fmdrive run, launch's respawn) starts it again. Seen under load: a node
                           # restarted after kill -9, cut off from shared memory and stuck in a take, so that
                           # neither its /diagnostics nor its own shared-memory check ever ran again
TEARDOWN_TIMEOUT_S = 10.0  # a node's teardown (destroy_node, rclpy shutdown) that takes longer is cut off:
                           # its stacks go to its log and the process exits with code 1. Seen under load:
                           # rmw_destroy_node spinning at 100 % CPU for ever in Fast DDS's
                           # DomainParticipant::set_listener after the parent died, a node left behind
PARAM_TYPES = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
               str: Parameter.Type.STRING}


class TransportLost(Exception):
    """The node's DDS transport can no longer deliver to it; only a new process recovers."""


class ParameterError(Exception):
    """An invalid node parameter; the text names it (printed as one line, exit code 2)."""


def _bad_input_errors() -> tuple:
    """Exceptions that mean 'this message is bad' (counted as bad input, not as a node error)."""
    from fmdrive.calibration.camera_model import CalibrationError
    return (MessageError, CalibrationError)


BAD_INPUT = _bad_input_errors()


def make_qos(kind: str, depth: int | None = None) -> QoSProfile:
    spec = config.QOS[kind]
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth or spec['depth'],
        reliability=(ReliabilityPolicy.BEST_EFFORT if spec['reliability'] == 'best_effort'
                     else ReliabilityPolicy.RELIABLE),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if spec['durability'] == 'transient_local'
                    else DurabilityPolicy.VOLATILE))


def compatible_qos(publishers, depth: int, fallback: QoSProfile) -> QoSProfile:
    """A subscription profile every one of `publishers` (TopicEndpointInfo) matches: best effort if
    any offers best effort, transient_local only if all are (what rosbag2's recorder does)."""
    if not publishers:
        return fallback
    best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
    latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def descriptor(name: str, spec: config.Param) -> ParameterDescriptor:
    d = ParameterDescriptor(name=name, type=PARAM_TYPES[type(spec.default)].value,
                            description=spec.description, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = 'one of: ' + ', '.join(map(str, spec.choices))
    if spec.range is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]))]
    elif spec.range is not None and isinstance(spec.default, int):
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    return d


class InputStats:
    """Per input topic: counts, arrival times, stamp order and gaps."""

    def __init__(self, aged: str | None, gaps: bool):
        self.aged = aged                  # 'always', 'after_first' or None (latched/event topics)
        self.gaps = gaps                  # count gaps in the stamp sequence (periodic topics)
        self.received = 0
        self.dropped = 0                  # by the node's queue (oldest out when full)
        self.throttled = 0                # by its rate gate, before the queue
        self.bad = 0
        self.missing = 0                  # frames the stamp sequence says never arrived
        self.arrivals = collections.deque(maxlen=512)
        self.last_stamp_ns = None
        self.periods_ns = collections.deque(maxlen=31)
        self.first_steps: list[int] | None = []   # steps kept until the period is learnt
        self.stamps_backwards = 0
        self.incompatible_qos = 0
        self.qos = ''
        self.paused = False               # unsubscribed for now (not needed): never stale, nothing lost
        self.resumed_at = 0.0             # monotonic time it was last subscribed again

    def rate_hz(self, now: float) -> float:
        """Messages per second over the RATE_WINDOW_S ending now: silence brings it to 0."""
        recent = sum(1 for t in self.arrivals if now - t <= RATE_WINDOW_S)
        return recent / RATE_WINDOW_S

    def silent_s(self, now: float, since: float) -> float:
        return now - max(self.arrivals[-1] if self.arrivals else since, self.resumed_at)

    def note_stamp(self, stamp_ns: int) -> int | None:
        """Record a stamp; returns how far it went backwards (ns) if it did."""
        last, self.last_stamp_ns = self.last_stamp_ns, stamp_ns
        if last is None:
            return None
        step = stamp_ns - last
        if step < 0:
            self.stamps_backwards += 1
            self.periods_ns.clear()       # a bag loop or clock jump: learn the period again
            self.first_steps = []
            return -step
        if step == 0 or not self.gaps:
            return None
        if self.first_steps is not None:
            # The period is not known yet: keep the first steps and judge them together once there are
            # enough, against their shortest (a periodic sensor's stamps step by one period unless
            # frames went missing), so a loss among the first frames is counted too.
            self.first_steps.append(step)
            if len(self.first_steps) == GAP_LEARN_STEPS:
                first, self.first_steps = self.first_steps, None
                for s in first:
                    self._judge(s, float(min(first)))
            return None
        # statistics.median sorts the 31 steps in ~1 us; np.median of a deque took ~12 us, 4.5 % of
        # fusion's time at 5x (py-spy), on every message of every periodic input
        self._judge(step, float(statistics.median(self.periods_ns)))
        return None

    def _judge(self, step: int, typical: float):
        if step > GAP_FACTOR * typical:
            self.missing += int(round(step / typical)) - 1   # a gap is not a period sample
        else:
            self.periods_ns.append(step)


class FmdriveNode(Node):
    """Base class: `name` must be a key of config.NODE_PARAM_SPECS."""

    def __init__(self, name: str):
        super().__init__(name)
        self._running = True
        self._cv = threading.Condition()
        self.specs = config.node_param_specs(name)
        self.p = self._declare_parameters()
        self._lock = threading.Lock()               # guards the core between callbacks and worker
        self._inputs: dict[str, InputStats] = {}
        self._subs: dict[str, dict] = {}            # topic -> {sub, msg_type, callback, mode, depth, profile}
        self._queues: dict[str, collections.deque] = {}
        self._handlers = {}
        self._unlocked: set[str] = set()            # topics whose handlers run without the node lock
        self._publishers_by_topic: dict[str, object] = {}
        self._seq = 0
        self._processing_ms = collections.deque(maxlen=WINDOW)
        self._latency_ms = collections.deque(maxlen=WINDOW)
        self._internal_errors = 0
        self._last_warning = ''
        self._last_warning_time = -1e9
        self._warn_times: dict[str, float] = {}
        self._mode = 'ok'
        self._started = time.monotonic()
        self.tf = None                              # fmdrive.tf.TransformBuffer once use_tf() is called
        self._tf_first_need: dict[str, float] = {}  # frame -> when a message first needed it (lookup_waiting)
        self.diag_values: dict[str, str] = {}       # node-specific entries for /diagnostics
        self._diag_pub = self.create_publisher(DiagnosticArray, config.TOPICS['diagnostics'], make_qos('reliable', 10),
                                               event_callbacks=_only(PublisherEventCallbacks))
        self.create_timer(float(self.p['diagnostics_period_s']), self.publish_diagnostics)
        self.create_timer(QOS_CHECK_PERIOD_S, self._housekeeping)
        self._transport_problems: list[str] = []
        self._port_watch = PortWatch()
        self.create_timer(TRANSPORT_CHECK_PERIOD_S, self._check_transport)
        self._stale_now: list[str] = []
        self.create_timer(STALE_CHECK_PERIOD_S, self._check_stale)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name=f'{name}_worker', daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> dict:
        overrides = getattr(self, '_parameter_overrides', {})
        values = {}
        for key, spec in self.specs.items():
            given = overrides.get(key)
            if given is not None:
                problem = spec.check(key, given.value)
                if problem:
                    raise ParameterError(f'{self.get_name()}: {problem}')
            value = spec.default if given is None else given.value
            if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)                # 60 for a double: what the user meant
            values[key] = self.declare_parameter(key, value, descriptor(key, spec), ignore_override=True).value
        return values

    def _on_set_parameters(self, params) -> SetParametersResult:
        changed = {}
        for param in params:
            spec = self.specs.get(param.name)
            if spec is None:
                continue                            # use_sim_time and other rclpy parameters
            if spec.read_only:
                return SetParametersResult(successful=False,
                                           reason=f'{param.name} is read-only: restart the node to change it')
            problem = spec.check(param.name, param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            changed[param.name] = float(param.value) if isinstance(spec.default, float) else param.value
        if not changed:
            return SetParametersResult(successful=True)
        candidate = {**self.p, **changed}
        try:
            with self._lock:
                self.reconfigure(candidate, changed)
        except (ValueError, TypeError) as e:
            return SetParametersResult(successful=False, reason=f'refused: {e}')
        self.p = candidate
        self.get_logger().info('parameters changed: ' + ', '.join(f'{k}={v!r}' for k, v in changed.items()))
        return SetParametersResult(successful=True)

    def reconfigure(self, params: dict, changed: dict) -> None:
        """Apply new parameter values (called under the node lock; raise ValueError to refuse).
        Parameters read from self.p at each use need nothing here; nodes rebuild their cores."""

    # ------------------------------------------------------------------ subscriptions
    def _initial_qos(self, kind: str, depth: int) -> QoSProfile:
        if kind == 'sensor':
            return make_qos('sensor' if self.p['sensor_qos'] == 'sensor' else 'reliable', depth)
        return make_qos(kind, depth)

    def subscribe(self, key: str, msg_type, handler, qos: str = 'reliable', queued: bool = False,
                  aged: str | None = 'after_first', gaps: bool = True, depth: int | None = None,
                  locked: bool = True, max_rate_param: str | None = None):
        """Subscribe to config.TOPICS[key].

        qos: 'sensor' (follows the sensor_qos parameter), 'reliable', 'latched', or 'any' (matches
        whatever publishes, e.g. camera_info: volatile or latched, reliable or best effort).
        queued=True: heavy work on the worker thread from a bounded queue (queue_size) that drops the
        oldest message when full; otherwise handled in the callback (cheap inputs).
        aged: 'always' (STALE when silent, also before the first message), 'after_first' (STALE
        once a flowing topic goes silent) or None (latched or event topics). gaps: count holes in
        the stamp sequence (periodic topics). locked=False: the handler does not touch the core and
        must not wait for the node lock the worker holds through a whole frame (the TF buffer has
        its own), or the executor stalls behind the heavy work and DDS drops what arrives meanwhile.
        max_rate_param: the node parameter (Hz, 0 = no limit) of a RateGate deciding, before the
        queue, whether a frame is processed at all (the rest counted as throttled); a runtime change
        of the parameter applies from the next frame.
        Stamps are noted on arrival, so stamp gaps ('missing') count only what never arrived."""
        topic = config.TOPICS[key]
        stats = self._inputs[topic] = InputStats(aged, gaps)
        if queued:
            self._queues[topic] = collections.deque()
            self._handlers[topic] = handler
        if not locked:
            self._unlocked.add(topic)
        gate = RateGate() if max_rate_param else None

        def callback(msg, topic=topic):
            stats.received += 1
            now = time.monotonic()
            stats.arrivals.append(now)
            self._note_stamp(topic, stats, msg)
            if gate is not None:
                gate.max_hz = float(self.p[max_rate_param])
            if gate is not None and not gate.admit(now):
                stats.throttled += 1
                return
            if queued:
                with self._cv:
                    q = self._queues[topic]
                    while len(q) >= int(self.p['queue_size']):
                        q.popleft()
                        stats.dropped += 1
                    self._seq += 1
                    q.append((self._seq, msg))
                    self._cv.notify()
            else:
                self._handle(topic, handler, msg)

        adaptive = qos == 'any' or (qos == 'sensor' and self.p['sensor_qos'] == 'auto')
        # Light inputs: deep enough that a burst (replay, a short stall of the executor) loses
        # nothing before the callback runs; the vehicle's fixed 'sensor' setting keeps 5.
        # Heavy (queued) inputs keep no more in DDS than the node's own queue: a backlog inside the
        # reader would build latency under load, so the oldest go there (KEEP_LAST) and are counted
        # as stamp gaps ('missing'), next to the queue's own drops.
        fixed_sensor = qos == 'sensor' and self.p['sensor_qos'] == 'sensor'
        depth = depth or (int(self.p['queue_size']) if queued else
                          config.QOS['sensor' if fixed_sensor else 'reliable']['depth'])
        profile = self._initial_qos('reliable' if qos == 'any' else qos, depth)
        entry = {'msg_type': msg_type, 'callback': callback, 'adaptive': adaptive, 'depth': depth}
        self._subs[topic] = entry
        self._create_subscription(topic, entry, profile)
        if adaptive:
            self._adapt_qos(only=topic)
        return entry['sub']

    def _create_subscription(self, topic: str, entry: dict, profile: QoSProfile):
        stats = self._inputs.get(topic)

        def incompatible(event, topic=topic):
            if stats is not None:
                stats.incompatible_qos += 1
            if entry['adaptive']:
                return                    # _adapt_qos re-creates the subscription within a second
            policy = getattr(getattr(event, 'last_policy_kind', None), 'name', 'a policy')
            self.warn(f'a publisher on {topic} offers a QoS this subscription cannot match ({policy}); '
                      f'its messages are not received', key=f'qos{topic}', period_s=60.0)

        if entry.get('sub') is not None:
            self.destroy_subscription(entry['sub'])
        entry['sub'] = self.create_subscription(
            entry['msg_type'], topic, entry['callback'], profile,
            event_callbacks=_only(SubscriptionEventCallbacks, incompatible_qos=incompatible))
        entry['profile'] = profile
        if stats is not None:
            stats.qos = (f'{profile.reliability.name.lower()}/{profile.durability.name.lower()}')

    def _housekeeping(self):
        self._adapt_qos()
        self._prune_tf()

    def _check_transport(self):
        """Exit (TransportLost) once this process has been cut off from its shared-memory port in
        TRANSPORT_LOST_CHECKS checks in a row: it would stay on the graph and never receive again."""
        problems = self._port_watch.check()
        self._transport_problems = problems
        if self._port_watch.consecutive >= TRANSPORT_LOST_CHECKS:
            self.publish_diagnostics()  # the last word on /diagnostics (sending still works) says why
            self._let_last_word_out()
            raise TransportLost(f'{self.get_name()} can no longer receive over Fast DDS shared memory: '
                                f'{"; ".join(problems)}; exiting (code {EXIT_TRANSPORT_LOST}) '
                                f'to be started again')

    def _let_last_word_out(self):
        """Before the process exits: give the reliable /diagnostics writer up to LAST_WORD_S to have its
        last message acknowledged (an exit right after publish can drop it under load). Bounded: a
        process cut off from its shared-memory port may never hear the acknowledgements."""
        try:
            self._diag_pub.wait_for_all_acked(Duration(seconds=LAST_WORD_S))
        except Exception:  # noqa: BLE001 - leaving anyway; the message was published
            pass

    def _adapt_qos(self, only: str | None = None):
        """`auto` QoS: re-create a subscription whose profile no longer matches every publisher."""
        for topic, entry in self._subs.items():
            if not entry['adaptive'] or (only and topic != only) or entry.get('paused'):
                continue
            try:
                pubs = [p for p in self.get_publishers_info_by_topic(topic) if p.node_name != self.get_name()]
            except Exception:  # noqa: BLE001 - graph query during shutdown
                continue
            want = compatible_qos(pubs, entry['depth'], entry['profile'])
            have = entry['profile']
            if (want.reliability, want.durability) != (have.reliability, have.durability):
                self._create_subscription(topic, entry, want)
                self.get_logger().info(f'{topic}: subscribing {self._inputs[topic].qos} to match its publishers')

    def warm_up(self) -> None:
        """Run the node's processing once on a made-up input (fmdrive/warmup.py) before the first real
        frame, so that frame is no slower than the rest; publish nothing and keep no state from it.
        run_node calls it after construction, before spinning. Heavy nodes override it."""

    def advertise(self, key: str, msg_type, qos: QoSProfile | None = None):
        """A publisher on config.TOPICS[key]; /diagnostics reports how many subscribers it matched."""
        topic = config.TOPICS[key]
        pub = self.create_publisher(msg_type, topic, qos or make_qos('reliable'),
                                    event_callbacks=_only(PublisherEventCallbacks))
        self._publishers_by_topic[topic] = pub
        return pub

    def _work(self):
        while self._running:
            with self._cv:
                while self._running and not any(self._queues.values()):
                    self._cv.wait(0.2)
                if not self._running:
                    return
                # oldest arrival first across queues keeps causality between topics
                topic = min((t for t, q in self._queues.items() if q), key=lambda t: self._queues[t][0][0])
                _, msg = self._queues[topic].popleft()
            self._handle(topic, self._handlers[topic], msg)

    def _note_stamp(self, topic, stats, msg):
        header = getattr(msg, 'header', None)
        if header is None:
            return
        try:
            back_ns = stats.note_stamp(stamp_to_ns(header.stamp))
        except (AttributeError, TypeError, ValueError):
            return                         # a malformed header is the handler's to report
        if back_ns:
            self.warn(f'stamps went backwards on {topic} by {back_ns / 1e6:.1f} ms (bag loop or clock jump)',
                      key=f'backwards{topic}')

    def _handle(self, topic, handler, msg):
        stats = self._inputs[topic]
        try:
            if topic in self._unlocked:
                handler(msg)
            else:
                with self._lock:
                    handler(msg)
        except BAD_INPUT as e:
            stats.bad += 1
            self.warn(f'bad message on {topic}: {e}', key=f'bad{topic}')
            self.publish_diagnostics()
        except Exception as e:  # noqa: BLE001 - a node must keep serving whatever one message does
            if not self._running or not self.context.ok():
                return      # shutting down (Ctrl-C): the context is gone, publishing fails, no one to tell
            self._internal_errors += 1
            self.warn(f'error while handling {topic}: {type(e).__name__}: {e}', key=f'err{topic}')
            if self._internal_errors <= 3:
                self.get_logger().error(traceback.format_exc())
            self.publish_diagnostics()

    def stale_inputs(self) -> list[str]:
        """What is STALE now, one phrase per input ('/x silent for 1.3 s', '/y never received')."""
        now, limit = time.monotonic(), float(self.p['stale_after_s'])
        out = []
        for topic, s in self._inputs.items():
            if s.paused:
                continue
            if s.aged == 'always' or (s.aged == 'after_first' and s.received):
                silent = s.silent_s(now, self._started)
                if silent > limit:
                    out.append(f'{topic} silent for {silent:.1f} s' if s.received else f'{topic} never received')
        return out

    def _check_stale(self):
        stale = [phrase.split(' ')[0] for phrase in self.stale_inputs()]
        if stale != self._stale_now:
            went = sorted(set(stale) - set(self._stale_now))
            if went:
                self.get_logger().warning('input stale: ' + ', '.join(went))
            self._stale_now = stale
            self.publish_diagnostics()

    # ------------------------------------------------------------------ calibration
    def load_extrinsics(self):
        """The fallback calibration file (parameter extrinsics_file) as an Extrinsics."""
        from fmdrive.calibration.extrinsics import load_extrinsics
        return load_extrinsics(self.p['extrinsics_file'] or config.EXTRINSICS_FILE)

    def use_tf(self):
        """One TF buffer for this node: /tf_static (latched) and /tf, the calibration YAML underneath."""
        from fmdrive.msgs import TFMessage
        from fmdrive.tf import TransformBuffer, stamped_transforms
        self.tf = TransformBuffer.from_extrinsics(self.load_extrinsics())

        def on_tf(msg, static):
            rejected = self.tf.add_transforms(stamped_transforms(msg), static=static)
            if rejected:
                raise MessageError(f'{rejected} invalid transform(s) (empty or equal frame ids, NaN, '
                                   'non-unit quaternion, or a loop)')
            for line in self.tf.disagreements:
                self.warn(f'calibration: {line}', key=line, period_s=1e9)
            self.tf.disagreements.clear()

        self.subscribe('tf_static', TFMessage, lambda m: on_tf(m, True), 'latched', aged=None, gaps=False, depth=100,
                       locked=False)
        self.subscribe('tf', TFMessage, lambda m: on_tf(m, False), 'any', aged=None, gaps=False, depth=100,
                       locked=False)
        self._tf_needs: set = set()       # (target, source) pairs looked up since the last check
        self.diag_values['tf_subscription'] = 'active'
        return self.tf

    def pause_input(self, key: str, why: str) -> None:
        """Unsubscribe from config.TOPICS[key] for now: nothing is taken, it is never stale, what it
        misses is not counted as lost (its qos reads 'paused' on /diagnostics)."""
        topic = config.TOPICS[key]
        entry = self._subs.get(topic)
        if entry is None or entry.get('paused'):
            return
        self.destroy_subscription(entry['sub'])
        entry['sub'], entry['paused'] = None, True
        self._inputs[topic].paused, self._inputs[topic].qos = True, 'paused'
        self.get_logger().info(f'{topic} unsubscribed: {why}')

    def resume_input(self, key: str, why: str) -> None:
        topic = config.TOPICS[key]
        entry = self._subs.get(topic)
        if entry is None or not entry.get('paused'):
            return
        entry['paused'] = False
        self._inputs[topic].paused = False
        self._inputs[topic].resumed_at = time.monotonic()   # silent while paused: staleness starts now
        self._create_subscription(topic, entry, entry['profile'])
        if entry['adaptive']:
            self._adapt_qos(only=topic)
        self.get_logger().info(f'{topic} subscribed again: {why}')

    def tf_wanted(self) -> bool:
        """Whether the node needs transforms at all right now (the visualizer: only while drawing)."""
        return True

    def _prune_tf(self):
        """/tf carries the vehicle's motion at 50 Hz or more; a node whose every lookup is answered
        by /tf_static alone (sensor mounts), or that needs no transform now, stops taking it, and
        takes it again as soon as a lookup is not (a mount published on /tf, a frame that moved)."""
        entry = self._subs.get(config.TOPICS['tf'])
        if self.tf is None or entry is None:
            return
        # the lookups since the last check decide (a fallback used once, before /tf_static
        # arrived, must not keep /tf forever); none since: nothing changes
        needs, self._tf_needs = set(self._tf_needs), set()
        wanted = self.tf_wanted()
        if wanted and not needs:
            return
        static_only = bool(needs) and all(
            self.tf.can_transform(t, s) and self.tf.source_of(t, s) == 'tf_static' for t, s in needs)
        if static_only or not wanted:
            self.pause_input('tf', 'every transform this node uses is on /tf_static' if wanted
                             else 'no transform needed now')
        else:
            self.resume_input('tf', 'a transform this node uses is not on /tf_static')
        self.diag_values['tf_subscription'] = 'active' if not entry.get('paused') else \
            ('paused (all used transforms static)' if wanted else 'paused (no transform needed now)')

    def _tf_used(self, target: str, source: str) -> str:
        """Note a lookup (for _prune_tf); returns where its chain comes from."""
        self._tf_needs.add((target, source))
        return self.tf.source_of(target, source)

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray:
        """T_<target>_<source> from the node's TF buffer; the source (tf, tf_static or the YAML file)
        is reported on /diagnostics. Raises TransformError (counted as bad input) when unknown."""
        try:
            T = self.tf.lookup(target, source, stamp_ns)
        except TransformError:
            self._tf_needs.add((target, source))   # /tf may be what would answer it: keep taking it
            raise
        self.diag_values[f'calibration_source/{source}'] = self._tf_used(target, source)
        return T

    def lookup_waiting(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray:
        """lookup, but while `source` is a frame the buffer has never held, a message needing it waits
        for it, up to TF_WAIT_S from the first such message: a bag's /tf_static (transient local) is
        matched by DDS a moment after its first cloud, and tf2's MessageFilter holds a message for
        its transform the same way. Called from the worker thread: TF arrives through unlocked
        callbacks on the executor meanwhile. Past the wait (a frame nobody publishes), no more
        waiting: TransformError at once, as lookup."""
        try:
            return self.lookup(target, source, stamp_ns)
        except TransformError:
            first = self._tf_first_need.setdefault(source, time.monotonic())
            while source not in self.tf.frames() and time.monotonic() - first < TF_WAIT_S and self._running:
                time.sleep(0.01)
            return self.lookup(target, source, stamp_ns)

    def load_camera_model(self):
        """The camera model from camera_info_file; a valid camera_info on the topic replaces it."""
        from fmdrive.calibration.camera_model import CameraModel
        return CameraModel.from_yaml(self.p['camera_info_file'] or config.CAMERA_INFO_FILE)

    # ------------------------------------------------------------------ bookkeeping
    def warn(self, text: str, key: str | None = None, period_s: float = 2.0):
        """A rate-limited warning (per key) that also shows on /diagnostics."""
        self._last_warning = text
        now = time.monotonic()
        self._last_warning_time = now
        key = key or text
        if now - self._warn_times.get(key, -1e9) >= period_s:
            self._warn_times[key] = now
            self.get_logger().warning(text)

    def set_mode(self, mode: str):
        self._mode = mode

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def record(self, processing_ms: float, stamp_ns: int | None):
        """Call after publishing an output: processing time and latency now - sensor stamp."""
        self._processing_ms.append(processing_ms)
        if stamp_ns:
            self._latency_ms.append((self.now_ns() - stamp_ns) / 1e6)

    def publish_diagnostics(self):
        def pct(values, q):
            return f'{np.percentile(values, q):.2f}' if values else 'nan'
        now = time.monotonic()
        st = DiagnosticStatus()
        st.name = f'fmdrive/{self.get_name()}'
        st.hardware_id = 'fmdrive'
        stale = self.stale_inputs()
        degraded = self._mode != 'ok'
        recent = now - self._last_warning_time < RECENT_WARNING_S
        if self._transport_problems:
            st.level = DiagnosticStatus.ERROR
            st.message = 'cannot receive over shared memory: ' + '; '.join(self._transport_problems)
        elif stale:
            st.level = DiagnosticStatus.STALE
            st.message = 'stale: ' + ', '.join(stale)
        else:
            st.level = DiagnosticStatus.WARN if (degraded or recent) else DiagnosticStatus.OK
            st.message = self._mode if degraded else (self._last_warning if recent else 'ok')
        proc, lat = list(self._processing_ms), list(self._latency_ms)
        values = {
            'mode': self._mode,
            'processing_time_ms': f'{proc[-1]:.2f}' if proc else 'nan',
            'processing_time_ms_p50': pct(proc, 50), 'processing_time_ms_p99': pct(proc, 99),
            'pipeline_latency_ms': f'{lat[-1]:.2f}' if lat else 'nan',
            'pipeline_latency_ms_p50': pct(lat, 50), 'pipeline_latency_ms_p99': pct(lat, 99),
            'outputs': str(len(proc)),
            'dropped_inputs': str(sum(s.dropped for s in self._inputs.values())),
            'throttled_inputs': str(sum(s.throttled for s in self._inputs.values())),
            'missing_inputs': str(sum(s.missing for s in self._inputs.values())),
            'bad_inputs': str(sum(s.bad for s in self._inputs.values())),
            'incompatible_qos': str(sum(s.incompatible_qos for s in self._inputs.values())),
            'stale_inputs': ', '.join(stale),
            'internal_errors': str(self._internal_errors),
            'transport': '; '.join(self._transport_problems) or 'ok',
            'last_warning': self._last_warning,
            **self.diag_values,
        }
        for topic, s in self._inputs.items():
            values[f'{topic}/rate_hz'] = f'{s.rate_hz(now):.2f}'
            values[f'{topic}/received'] = str(s.received)
            values[f'{topic}/dropped'] = str(s.dropped)
            values[f'{topic}/throttled'] = str(s.throttled)
            values[f'{topic}/missing'] = str(s.missing)
            values[f'{topic}/bad'] = str(s.bad)
            values[f'{topic}/stamps_backwards'] = str(s.stamps_backwards)
            values[f'{topic}/qos'] = s.qos
            values[f'{topic}/silent_s'] = f'{s.silent_s(now, self._started):.2f}'
        for topic, pub in self._publishers_by_topic.items():
            values[f'matched_subscribers/{topic}'] = str(pub.get_subscription_count())
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self._diag_pub.publish(arr)

    def destroy_node(self):
        self._running = False
        with self._cv:
            self._cv.notify_all()
        return super().destroy_node()


def run_node(node_cls, args=None):
    """init -> spin -> destroy -> shutdown; Ctrl-C and external shutdown end the node quietly; an
    invalid parameter ends it with one line and exit code 2 (a supervisor must not restart it); a
    node cut off from its transport ends with one line and EXIT_TRANSPORT_LOST (restart it).

    A Ctrl-C can land while rclpy converts a taken message to Python (the message class's Python
    __init__ runs there): the KeyboardInterrupt is then swallowed by pybind11 and comes out of
    spin as a RuntimeError (interrupts.disguised): the interrupt flag, set by the handler installed
    before rclpy's (which chains to it), tells that error from a real one.

    rclpy's own SIGINT handler shuts the context down from its thread, and Python runs ours (the
    KeyboardInterrupt) only at the main thread's next check, which can come after spin or the
    constructor has already failed on the dead context (RCLError "the given context is not valid"),
    or in the middle of the except clause or the teardown: such an error is the interrupt, and a
    KeyboardInterrupt that comes late ends the node like the first (measured: 1 Ctrl-C in ~80 under
    load ended the process by the signal, exit -2, before this)."""
    interrupts.install()
    node, code = None, 0
    try:
        try:
            rclpy.init(args=args)
            node = node_cls()
            _warm_up(node)
            # what the node built at start (models, tables, rclpy objects) lives as long as it does:
            # moved out of the collector's sight, a full collection no longer walks it mid-frame
            gc.collect()
            gc.freeze()
            _arm_executor_watchdog()
            node.create_timer(1.0, _arm_executor_watchdog)
            rclpy.spin(node)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except RuntimeError as e:
            if not interrupts.disguised(e) and rclpy.ok():
                raise
        except ParameterError as e:
            print(f'error: {e}', file=sys.stderr, flush=True)
            code = 2
        except TransportLost as e:
            print(f'error: {e}', file=sys.stderr, flush=True)
            code = EXIT_TRANSPORT_LOST
        finally:
            _end(node)
    except KeyboardInterrupt:
        pass                    # came late, through an except clause: the node has ended (_end)
    if code:
        sys.exit(code)


def _warm_up(node):
    """node.warm_up() (a made-up frame through the node's processing, fmdrive/warmup.py), timed on
    /diagnostics (warm_up_ms). A failure there never stops the node: real frames decide."""
    t0 = time.perf_counter()
    try:
        node.warm_up()
    except Exception as e:  # noqa: BLE001 - the made-up frame is ours; the real ones are judged on arrival
        node.get_logger().warning(f'warm-up failed ({type(e).__name__}: {e}); the first frame will be slower')
        return
    node.diag_values['warm_up_ms'] = f'{(time.perf_counter() - t0) * 1e3:.0f}'


def _end(node):
    """The node's teardown, whole, whatever signals come meanwhile: interrupts are ignored first (a
    handler still pending runs inside signal.signal, and its KeyboardInterrupt is the interrupt
    already being handled), then the teardown is bounded, the node destroyed, rclpy shut down."""
    while True:
        try:
            _ignore_interrupts()
            break
        except KeyboardInterrupt:
            continue
    _bound_teardown()
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()
    _ignore_interrupts()    # rclpy's shutdown puts back the handler it found at init


def _arm_executor_watchdog():
    """(Re)arm faulthandler's C watchdog thread: unless this runs again within EXECUTOR_STUCK_S (a
    timer of the node's executor re-arms it every second), every thread's stack goes to stderr (the
    node's log) and the process exits with code 1. A C thread, as in _bound_teardown: it fires even
    while the main thread is blocked inside rclpy holding the GIL. Only run_node arms it (never a node
    made inside another process, such as a test's)."""
    faulthandler.dump_traceback_later(EXECUTOR_STUCK_S, exit=True)


def _bound_teardown(timeout_s: float | None = None):
    """The process ends within timeout_s (TEARDOWN_TIMEOUT_S) from here, whatever the teardown does:
    faulthandler's watchdog is a C thread, so it fires even while the main thread holds the GIL
    inside a hung C call (a Python timer thread would never run then); it writes every thread's
    stack to stderr (the node's log) and exits with code 1."""
    faulthandler.dump_traceback_later(TEARDOWN_TIMEOUT_S if timeout_s is None else timeout_s, exit=True)


def _ignore_interrupts():
    """The node is ending: a second Ctrl-C, or the supervisor's SIGINT or SIGTERM arriving after the
    terminal's, must not break its teardown with a KeyboardInterrupt from inside rclpy (the
    teardown is bounded by _bound_teardown; SIGKILL still ends it)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except ValueError:      # not the main thread
            return
