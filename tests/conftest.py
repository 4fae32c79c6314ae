"""Shared fixtures: an isolated ROS domain per test session, a running graph, a probe node."""
import os
import time

import pytest

from fmdrive.rosenv import random_domain_id, ros_env


@pytest.fixture(scope='session')
def ros_domain():
    """Every test run gets its own ROS_DOMAIN_ID and stays on localhost."""
    domain = random_domain_id()
    os.environ.update(ros_env(domain))
    return domain


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

    def listen(self, topic, msg_type, qos=None):
        from fmdrive.nodes.base import make_qos
        self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, self.received[topic].append, qos or make_qos('reliable'))

    def publisher(self, topic, msg_type, qos=None):
        from fmdrive.nodes.base import make_qos
        if topic not in self.pubs:
            self.pubs[topic] = self.node.create_publisher(msg_type, topic, qos or make_qos('reliable'))
        return self.pubs[topic]

    def wait_for_subscribers(self, topics, timeout_s=20.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.pubs[t].get_subscription_count() > 0 for t in topics):
                self.spin(0.5)  # let the reader side finish matching
                return
            self.spin(0.05)
        raise AssertionError(f'no subscriber on {topics} after {timeout_s} s')

    def spin(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

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


@pytest.fixture
def probe(ros_domain):
    p = Probe()
    yield p
    p.close()


@pytest.fixture(scope='module')
def running_graph(ros_domain, tmp_path_factory):
    """The whole graph (one process per node), as `fmdrive run` starts it."""
    from fmdrive.graph import GraphProcesses
    graph = GraphProcesses(ros_env(ros_domain), tmp_path_factory.mktemp('graph_logs'))
    graph.start()
    try:
        graph.wait_ready(timeout_s=60)
        yield graph
    finally:
        codes = graph.stop()
        print('graph exit codes:', codes)
