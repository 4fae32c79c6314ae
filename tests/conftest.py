"""Shared fixtures: an isolated ROS domain per test session, a running graph, a probe node.

Tests that use DDS (any test that asks for ros_domain, probe or running_graph, directly or through
another fixture) are marked `ros` here, so `pytest -m "not ros"` runs the unit tests alone.
Synchronisation is always on an observable condition (matched endpoints, values on /diagnostics,
messages received), never on time.
"""
import os
import queue
import threading
import time

import pytest

from fmdrive.rosenv import random_domain_id, ros_env

DDS_FIXTURES = {'ros_domain', 'probe', 'running_graph', 'graph_nodes'}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if DDS_FIXTURES & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.ros)


@pytest.fixture(scope='session')
def ros_domain():
    """Every test run gets its own ROS_DOMAIN_ID and stays on localhost."""
    domain = random_domain_id()
    os.environ.update(ros_env(domain))
    return domain


def diagnostics_name(node_name: str) -> str:
    """The DiagnosticStatus.name a graph node publishes under."""
    return f'fmdrive/{node_name}'


class Probe:
    """A node in the test process: publish test input, collect what the graph publishes."""

    def __init__(self, name='fmdrive_test_probe'):
        import rclpy
        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(name, context=self.ctx)
        from rclpy.executors import SingleThreadedExecutor
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.received = {}
        self.pubs = {}
        self.diagnostics = {}   # status name ('fmdrive/<node>') -> latest {key: value}

    def listen(self, topic, msg_type, qos=None):
        from fmdrive.nodes.base import make_qos
        if topic in self.received:
            return
        self.received[topic] = []
        self.node.create_subscription(msg_type, topic, self.received[topic].append, qos or make_qos('reliable'))

    def watch_diagnostics(self):
        """Subscribe to /diagnostics and keep the latest values of every status (the nodes publish
        them in order over a reliable topic, so the latest is the newest)."""
        from diagnostic_msgs.msg import DiagnosticArray

        from fmdrive import config
        from fmdrive.nodes.base import make_qos
        topic = config.TOPICS['diagnostics']
        if topic in self.received:
            return
        self.received[topic] = []

        def on_diagnostics(msg):
            self.received[topic].append(msg)
            for st in msg.status:
                self.diagnostics[st.name] = {v.key: v.value for v in st.values}
        self.node.create_subscription(DiagnosticArray, topic, on_diagnostics, make_qos('reliable', 50))

    def publisher(self, topic, msg_type, qos=None):
        from fmdrive.nodes.base import make_qos
        if topic not in self.pubs:
            self.pubs[topic] = self.node.create_publisher(msg_type, topic, qos or make_qos('reliable'))
        return self.pubs[topic]

    def wait_for_subscribers(self, topics, nodes=None, timeout_s=60.0, lazy=False):
        """Until, for each topic, every graph node that declares it as an input (GRAPH[].inputs; its
        lazy inputs only with lazy=True, when something watches what they are for) has
        subscribed to it and our publisher has matched that many subscriptions (plus our own, if we
        listen to the topic too). A discovered subscription is not yet a matched one, and a count of
        'at least one' is met by whichever node matches first."""
        from fmdrive import config
        from fmdrive.graph import GRAPH
        key_of = {t: k for k, t in config.TOPICS.items()}
        nodes = GRAPH if nodes is None else nodes
        want = {t: {n.name for n in nodes if key_of[t] in (n.inputs if lazy else n.eager_inputs)} for t in topics}

        def missing():
            out = []
            for t, names in want.items():
                seen = {info.node_name for info in self.node.get_subscriptions_info_by_topic(t)}
                expected = len(names) + (1 if t in self.received else 0)
                if not names <= seen or self.pubs[t].get_subscription_count() < expected:
                    out.append(f'{t} (want {", ".join(sorted(names))}; matched '
                               f'{self.pubs[t].get_subscription_count()}/{expected})')
            return out
        if not self.spin_until(lambda: not missing(), timeout_s):
            raise AssertionError(f'subscribers not matched after {timeout_s:.0f} s: {"; ".join(missing())}')

    def wait_for_diagnostics(self, node_name, predicate, timeout_s=60.0, what=''):
        """Until the latest /diagnostics of graph node `node_name` satisfies predicate({key: value});
        returns those values. Call watch_diagnostics() first."""
        name = diagnostics_name(node_name)

        def ok():
            kv = self.diagnostics.get(name)
            return kv is not None and predicate(kv)
        if not self.spin_until(ok, timeout_s):
            raise AssertionError(f'{name} on /diagnostics: {what or "condition"} not met after {timeout_s:.0f} s; '
                                 f'latest: {self.diagnostics.get(name)}')
        return self.diagnostics[name]

    def spin_until(self, condition, timeout_s=15.0):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


def counter(kv: dict, key: str) -> int:
    """An integer counter from a node's /diagnostics values (0 when absent)."""
    try:
        return int(kv.get(key, 0))
    except ValueError:
        return 0


def listening_ports_of(pid: int) -> set:
    """The Fast DDS shared-memory ports process pid listens on now (fmdrive/shm_ports.py)."""
    from fmdrive.shm_ports import fd_links, listening_ports
    return listening_ports(fd_links(f'/proc/{pid}/fd'))


def wait_for_listening_ports(pid: int, timeout_s: float = 60.0) -> set:
    """listening_ports_of(pid) once it is not empty (the node's participant is up), or an empty set
    when timeout_s passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = listening_ports_of(pid)
        if held:
            return held
        time.sleep(0.1)  # polling another process's open files; the condition is its port lock
    return set()


class LineReader:
    """The lines of a child's text stream, read on a thread, so every wait for one has a deadline."""

    def __init__(self, stream):
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)  # end of stream: the process closed it (exited)

    def drain(self) -> list:
        """Every line read so far (those already waited past included), without waiting."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return self.seen
            if line is None:
                self.lines.put(None)
                return self.seen
            self.seen.append(line)

    def until(self, predicate, timeout_s=120.0):
        """The first line (from here on) for which predicate(line) holds; AssertionError with what
        was read when the stream ends or the deadline passes first."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f'no such line within {timeout_s:.0f} s; read:\n' + ''.join(self.seen)) from None
            if line is None:
                self.lines.put(None)  # stays ended for the next caller
                raise AssertionError('the stream ended first; read:\n' + ''.join(self.seen))
            self.seen.append(line)
            if predicate(line):
                return line


@pytest.fixture
def probe(ros_domain):
    p = Probe()
    yield p
    p.close()


@pytest.fixture(scope='module')
def running_graph(ros_domain, tmp_path_factory):
    """The whole graph (one process per node), as `fmdrive run` starts it; but the LiDAR node
    examines every cloud (no max_rate_hz), because these tests send them back to back."""
    from fmdrive.graph import GraphProcesses
    graph = GraphProcesses(ros_env(ros_domain), tmp_path_factory.mktemp('graph_logs'),
                           overrides={'lidar_encoder': {'max_rate_hz': 0.0}})
    graph.start()
    try:
        graph.wait_ready(timeout_s=60)
        yield graph
    finally:
        codes = graph.stop()
        print('graph exit codes:', codes)


@pytest.fixture
def graph_nodes(ros_domain, tmp_path):
    """Start some graph nodes as processes: graph_nodes('fusion', overrides={...}); stopped afterwards."""
    from fmdrive.graph import GRAPH, GraphProcesses
    by_name = {n.name: n for n in GRAPH}
    started = []

    def start(*names, overrides=None):
        graph = GraphProcesses(ros_env(ros_domain), tmp_path / f'logs{len(started)}',
                               nodes=tuple(by_name[n] for n in names), overrides=overrides or {})
        started.append(graph.start())
        return graph
    yield start
    for graph in started:
        graph.stop()
