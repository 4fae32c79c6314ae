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
