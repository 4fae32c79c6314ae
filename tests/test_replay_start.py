"""Replay starts only when every subscriber the graph declares for each topic has matched: a
one-message bag replayed into the running graph reaches every node that reads it, every time (a
fresh replay process discovers the nodes one by one, so 'some subscriber matched' is not enough)."""
import numpy as np
import pytest

from fmdrive import config
from fmdrive.bags.replay import replay
from fmdrive.bags.writer import BagWriter
from fmdrive.graph import GRAPH
from fmdrive.msgs import xyzi_to_pointcloud2
from fmdrive.pipeline_run import expected_subscribers

from conftest import counter

ROUNDS = 20
READERS = [n.name for n in GRAPH if 'points' in n.eager_inputs]   # (the visualizer's is lazy: unwatched here)


@pytest.mark.timeout(400)
def test_a_one_message_bag_reaches_every_node_every_time(running_graph, probe, tmp_path):
    bag = tmp_path / 'one_cloud'
    with BagWriter(bag) as writer:
        cloud = xyzi_to_pointcloud2(np.random.default_rng(0).normal(0, 5, (500, 4)).astype(np.float32),
                                    1_700_000_000_000_000_000, 'lidar')
        writer.write(config.TOPICS['points'], cloud, 1_700_000_000_000_000_000)
    probe.watch_diagnostics()
    topic = config.TOPICS['points']

    def received(node):
        return counter(probe.diagnostics.get(f'fmdrive/{node}', {}), f'{topic}/received')
    probe.wait_for_diagnostics(READERS[0], lambda kv: True, what='first diagnostics')
    probe.wait_for_diagnostics(READERS[-1], lambda kv: True, what='first diagnostics')
    start = {n: received(n) for n in READERS}
    for k in range(1, ROUNDS + 1):
        stats = replay(str(bag), restamp=True, progress=False, clock=False,
                       wait_for_subscribers=expected_subscribers(GRAPH, ('points',)), node_name=f'replay_{k}')
        assert stats['published'][topic] == 1
        for node in READERS:
            probe.wait_for_diagnostics(node, lambda kv, node=node: counter(kv, f'{topic}/received') >= start[node] + k,
                                       timeout_s=30, what=f'round {k}: the cloud received')
    assert {n: received(n) - start[n] for n in READERS} == {n: ROUNDS for n in READERS}
    assert running_graph.dead() == {}


def test_a_watched_visualizer_matched_first_does_not_start_the_replay_before_the_lidar_node():
    """Seen in a fresh-clone CI: a replay at 4x started once one subscriber of the clouds had matched,
    the visualizer (it reads them while a recorder takes its overlay); the LiDAR node's reader
    matched after the 2.5 s replay was over and it got none of 40 clouds. The wait is by name now,
    and for every subscription discovered."""
    from types import SimpleNamespace

    from fmdrive.bags.replay import missing_subscribers
    topic = config.TOPICS['points']

    def graph(found, matched):
        node = SimpleNamespace(get_subscriptions_info_by_topic=lambda t: [SimpleNamespace(node_name=n) for n in found])
        return node, {topic: SimpleNamespace(get_subscription_count=lambda: matched)}

    wanted = expected_subscribers(GRAPH, ('points',))
    assert wanted == {topic: READERS}
    assert missing_subscribers(*graph(['visualizer'], 1), wanted) == [topic]            # the race seen
    assert missing_subscribers(*graph(['visualizer', *READERS], 1), wanted) == [topic]  # discovered, not matched
    assert missing_subscribers(*graph(['visualizer', *READERS], 1 + len(READERS)), wanted) == []
    assert missing_subscribers(*graph(READERS, len(READERS)), wanted) == []             # overlay unwatched
    assert missing_subscribers(*graph([], 0), {topic: 1}) == [topic]                    # a count still works
    assert missing_subscribers(*graph(['rviz'], 1), {topic: 1}) == []
