"""What every fmdrive node shares: parameters from config.py, QoS, bounded input queues that drop the
oldest message (and count it), bad-input handling that never kills the node, and /diagnostics with
processing_time_ms, pipeline_latency_ms, input rates and dropped/bad input counts.

Only rclpy API that exists in Humble, Jazzy and Kilted is used.
"""
from __future__ import annotations

import collections
import threading
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from fmdrive import config
from fmdrive.msgs import MessageError, stamp_to_ns

WINDOW = 200  # samples kept for p50/p99 on /diagnostics
RECENT_WARNING_S = 5.0  # a warning keeps the node's status at WARN this long


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


class InputStats:
    """Per input topic: counts, arrival rate, last stamp (to notice stamps going backwards)."""

    def __init__(self):
        self.received = 0
        self.dropped = 0
        self.bad = 0
        self.arrivals = collections.deque(maxlen=50)
        self.last_stamp_ns = None
        self.stamps_backwards = 0

    def rate_hz(self) -> float:
        if len(self.arrivals) < 2:
            return 0.0
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else 0.0


class FmdriveNode(Node):
    """Base class: `name` must be a key of config.NODE_PARAMS."""

    def __init__(self, name: str):
        super().__init__(name)
        self.p = {}
        for key, default in config.node_params(name).items():
            self.p[key] = self.declare_parameter(key, default).value
        self._lock = threading.Lock()               # guards the core between callbacks and worker
        self._inputs: dict[str, InputStats] = {}
        self._queues: dict[str, collections.deque] = {}
        self._handlers = {}
        self._cv = threading.Condition()
        self._seq = 0
        self._processing_ms = collections.deque(maxlen=WINDOW)
        self._latency_ms = collections.deque(maxlen=WINDOW)
        self._internal_errors = 0
        self._last_warning = ''
        self._last_warning_time = -1e9
        self._warn_times: dict[str, float] = {}
        self._mode = 'ok'
        self.diag_values: dict[str, str] = {}   # node-specific entries for /diagnostics
        self._running = True
        self._diag_pub = self.create_publisher(DiagnosticArray, config.TOPICS['diagnostics'], make_qos('reliable', 10))
        self.create_timer(float(self.p['diagnostics_period_s']), self.publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name=f'{name}_worker', daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ subscriptions
    def sensor_qos(self) -> QoSProfile:
        return make_qos(self.p['sensor_qos'])

    def subscribe(self, key: str, msg_type, handler, qos: QoSProfile | None = None, queued: bool = False):
        """Subscribe to config.TOPICS[key]. queued=True: heavy work, done on the worker thread from a
        bounded queue (queue_size) that drops the oldest message when full; otherwise handled in the
        callback (cheap inputs such as odometry)."""
        topic = config.TOPICS[key]
        self._inputs[topic] = InputStats()
        if queued:
            self._queues[topic] = collections.deque()
            self._handlers[topic] = handler

        def callback(msg, topic=topic):
            stats = self._inputs[topic]
            stats.received += 1
            stats.arrivals.append(time.monotonic())
            if queued:
                with self._cv:
                    q = self._queues[topic]
                    if len(q) >= int(self.p['queue_size']):
                        q.popleft()
                        stats.dropped += 1
                    self._seq += 1
                    q.append((self._seq, msg))
                    self._cv.notify()
            else:
                self._handle(topic, handler, msg)

        return self.create_subscription(msg_type, topic, callback, qos or make_qos('reliable'))

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

    def _handle(self, topic, handler, msg):
        stats = self._inputs[topic]
        try:
            stamp = getattr(msg, 'header', None)
            if stamp is not None:
                stamp_ns = stamp_to_ns(msg.header.stamp)
                if stats.last_stamp_ns is not None and stamp_ns < stats.last_stamp_ns:
                    stats.stamps_backwards += 1
                    self.warn(f'stamps went backwards on {topic} by '
                              f'{(stats.last_stamp_ns - stamp_ns) / 1e6:.1f} ms (bag loop or clock jump)',
                              key=f'backwards{topic}')
                stats.last_stamp_ns = stamp_ns
            with self._lock:
                handler(msg)
        except BAD_INPUT as e:
            stats.bad += 1
            self.warn(f'bad message on {topic}: {e}', key=f'bad{topic}')
            self.publish_diagnostics()
        except Exception as e:  # noqa: BLE001 - a node must keep serving whatever one message does
            self._internal_errors += 1
            self.warn(f'error while handling {topic}: {type(e).__name__}: {e}', key=f'err{topic}')
            if self._internal_errors <= 3:
                self.get_logger().error(traceback.format_exc())
            self.publish_diagnostics()

    # ------------------------------------------------------------------ calibration
    def load_extrinsics(self) -> dict:
        """{child_frame: T_base_child} from the extrinsics file (parameter extrinsics_file)."""
        from fmdrive.calibration.extrinsics import load_extrinsics
        return load_extrinsics(self.p['extrinsics_file'] or config.EXTRINSICS_FILE)

    def load_camera_model(self):
        """The camera model from camera_info_file; a valid /sensors/camera/camera_info replaces it."""
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
        st = DiagnosticStatus()
        st.name = f'fmdrive/{self.get_name()}'
        st.hardware_id = 'fmdrive'
        bad = sum(s.bad for s in self._inputs.values())
        dropped = sum(s.dropped for s in self._inputs.values())
        degraded = self._mode != 'ok'
        recent = time.monotonic() - self._last_warning_time < RECENT_WARNING_S
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
            'dropped_inputs': str(dropped), 'bad_inputs': str(bad),
            'internal_errors': str(self._internal_errors),
            'last_warning': self._last_warning,
            **self.diag_values,
        }
        for topic, s in self._inputs.items():
            values[f'{topic}/rate_hz'] = f'{s.rate_hz():.2f}'
            values[f'{topic}/received'] = str(s.received)
            values[f'{topic}/dropped'] = str(s.dropped)
            values[f'{topic}/bad'] = str(s.bad)
            values[f'{topic}/stamps_backwards'] = str(s.stamps_backwards)
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
    """init -> spin -> destroy -> shutdown; Ctrl-C and external shutdown end the node quietly."""
    rclpy.init(args=args)
    node = None
    try:
        node = node_cls()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
