"""The LiDAR node runs a learned encoder from a model card (over ONNX Runtime here), and falls back to
the classical path, saying so on /diagnostics, when the card cannot run."""
import time

import numpy as np
import pytest
from fmdrive_msgs.msg import ObjectArray

from fmdrive import config
from fmdrive.msgs import xyzi_to_pointcloud2
from fmdrive.perception.lidar_learned import LearnedLidarDetector

from conftest import diagnostics_name
from test_inference_helpers import centerpoint_card, centerpoint_occupancy_model

T = config.TOPICS


def car_cluster_lidar(center_base=(12.0, 2.0), T_base_lidar=None):
    """A car-sized block of points (no ground), expressed in the LiDAR frame."""
    rng = np.random.default_rng(3)
    pts = np.c_[rng.uniform(-2.2, 2.2, 600) + center_base[0], rng.uniform(-0.9, 0.9, 600) + center_base[1],
                rng.uniform(0.2, 1.5, 600), np.full(600, 50.0)]
    T = np.eye(4) if T_base_lidar is None else T_base_lidar
    xyz = (pts[:, :3] - T[:3, 3]) @ T[:3, :3]                  # base -> lidar
    return np.c_[xyz, pts[:, 3]].astype(np.float32)


def tiny_card(tmp_path):
    directory = tmp_path / 'lidar_tiny'
    directory.mkdir()
    return centerpoint_card(directory, centerpoint_occupancy_model(directory / 'fp32.onnx')).parent


def test_the_learned_core_puts_the_car_where_it_is_in_base_link_whatever_the_mounting(tmp_path):
    from fmdrive.geometry import make_T, rot_z
    from fmdrive.inference.detectors import load_detector
    core = LearnedLidarDetector(load_detector(tiny_card(tmp_path), 'fp32', 'onnxruntime'), detect_lanes=False)
    T_rotated = make_T(rot_z(-np.pi / 2), [0.9, 0.0, 1.8])      # x right, y forward, 1.8 m up
    result = core.detect(car_cluster_lidar(T_base_lidar=T_rotated), T_rotated)
    assert result.objects and not result.warnings
    best = max(result.objects, key=lambda o: o.score)
    assert best.label == 'car' and np.hypot(best.center[0] - 12.0, best.center[1] - 2.0) < 1.5, best


@pytest.mark.timeout(180)
def test_the_node_runs_the_card_and_falls_back_to_classical_when_it_cannot(graph_nodes, probe, tmp_path):
    card_dir = tiny_card(tmp_path)
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'card.yaml').write_text((card_dir / 'card.yaml').read_text())   # its model file is missing
    probe.watch_diagnostics()
    probe.listen(T['lidar_objects'], ObjectArray)
    graph_nodes('lidar_encoder', overrides={'lidar_encoder': {'backend': 'onnxruntime', 'model': str(card_dir),
                                                              'precision': 'fp32'}})
    kv = probe.wait_for_diagnostics('lidar_encoder', lambda kv: 'backend' in kv, what='backend reported')
    assert kv['backend'].startswith('learned'), kv
    pub = probe.publisher(T['points'], type(xyzi_to_pointcloud2(np.zeros((1, 4), np.float32), 0, 'lidar')))
    probe.wait_for_subscribers([T['points']], nodes=[])
    assert probe.spin_until(lambda: pub.get_subscription_count() >= 1, 30)
    stamp = time.time_ns()

    def learned_car():
        return [m for m in probe.received[T['lidar_objects']] if m.source == 'lidar_learned'
                and any(o.label == 'car' for o in m.objects)]
    deadline = time.monotonic() + 60
    while not learned_car() and time.monotonic() < deadline:     # a new cloud until the node has matched
        pub.publish(xyzi_to_pointcloud2(car_cluster_lidar(center_base=(12.0 - 1.0, 2.0)), stamp, 'lidar'))
        probe.spin_until(learned_car, 1.0)
    assert learned_car(), 'no car from the learned encoder'
    # the broken card: the node still runs, on the classical path, and says why
    graph_nodes('lidar_encoder', overrides={'lidar_encoder': {'backend': 'onnxruntime', 'model': str(broken)}})
    name = diagnostics_name('lidar_encoder')
    probe.diagnostics.pop(name, None)
    kv = probe.wait_for_diagnostics('lidar_encoder', lambda kv: kv.get('backend') == 'classical (fallback)',
                                    what='classical fallback reported')
    assert 'learned encoder unavailable' in kv['mode']
