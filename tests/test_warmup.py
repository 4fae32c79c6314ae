"""The made-up frame each heavy node processes while it starts (fmdrive/warmup.py, FmdriveNode.warm_up):
it goes through the real processing, and leaves nothing behind that a real frame would see."""
import numpy as np
import pytest

from fmdrive import config, warmup
from fmdrive.calibration.extrinsics import load_extrinsics
from fmdrive.objects import EgoState, Lane, Object3D, Scene
from fmdrive.perception.lidar_classical import ClassicalLidarDetector
from fmdrive.planning.arbiter import Arbiter
from fmdrive.planning.classical import ClassicalPlanner
from fmdrive.tf import TransformBuffer


def mount():
    tf = TransformBuffer.from_extrinsics(load_extrinsics(config.EXTRINSICS_FILE))
    return tf.lookup('base_link', config.FRAMES['lidar'])


def test_the_sweep_is_in_the_lidar_frame_and_sees_ground_markings_and_the_car_ahead():
    T = mount()
    pts = warmup.sweep(T)
    assert pts.dtype == np.float32 and pts.shape[1] == 4 and len(pts) > 5000
    base = pts[:, :3] @ T[:3, :3].T + T[:3, 3]
    ground = np.abs(base[:, 2]) < 0.01
    assert ground.mean() > 0.5                                        # flat ground at z = 0 in base_link
    (cx, cy, _), (length, width, _) = warmup.CAR_AHEAD
    on_car = (np.abs(base[:, 0] - cx) <= length / 2 + 0.01) & (np.abs(base[:, 1] - cy) <= width / 2 + 0.01) & ~ground
    assert on_car.sum() > 100 and np.all(pts[on_car, 3] == np.float32(0.5))
    assert np.all(np.abs(np.abs(base[pts[:, 3] > 0.8, 1]) - warmup.LANE_WIDTH_M / 2) < 0.1)   # the markings
    assert len(warmup.sweep(T, beams=128)) > 3 * len(pts)
    level = warmup.sweep(np.eye(4))                                   # a mount at ground level (no TF):
    assert len(level) and np.all(np.linalg.norm(level[:, :3], axis=1) > 1.0)   # the car, no ground at its foot


def test_the_classical_lidar_path_finds_the_car_in_the_sweep_so_warming_runs_the_whole_path():
    T = mount()
    result = ClassicalLidarDetector(T_base_lidar=T).detect(warmup.sweep(T), T)
    cx = warmup.CAR_AHEAD[0][0]
    assert any(o.label == 'car' and abs(o.center[0] - cx) < 2.0 and abs(o.center[1]) < 1.0 for o in result.objects)


def test_the_scene_is_a_two_lane_road_with_a_slower_car_ahead():
    scene = warmup.scene()
    assert [lane.offset for lane in scene.lanes] == [0, 1] and scene.ego.speed_mps == 10.0
    assert 'car #1 ahead in ego lane' in scene.text


def real_scene(stamp_ns):
    x = np.linspace(-10.0, 150.0, 60)
    lanes = [Lane(o, 3.5, np.c_[x, np.full_like(x, 3.5 * o), np.zeros_like(x)]) for o in (0, 1)]
    # the same track id as the made-up lead, slower: a planner that kept the made-up frame's memory
    # would take it for a car braking hard
    lead = Object3D([20.0, 0.0, 0.8], [4.5, 1.9, 1.5], 0.0, 'car', id=1, velocity=[4.0, 0.0, 0.0])
    return Scene(stamp_ns, EgoState(0.0, 0.0, 0.0, 8.0), [lead], lanes, 13.9)


def arbiter(primary):
    return Arbiter(ClassicalPlanner(), primary, deadline_ms=60_000.0, fallback_budget_ms=60_000.0)


@pytest.mark.parametrize('instruction', ['', 'change lane left'])
@pytest.mark.parametrize('primary', ['classical', 'llm'])
def test_after_the_planner_nodes_warm_up_the_first_real_plans_are_a_fresh_arbiters(primary, instruction):
    from fmdrive.nodes.planner_node import PlannerNode
    from fmdrive.planning.arbiter import load_primary
    params = {**config.node_params('planner'), 'primary': primary}

    class Node:       # what PlannerNode.warm_up uses of the node
        arbiter = arbiter(load_primary(params)[0])
        primary = arbiter.primary

    fresh = arbiter(load_primary(params)[0])
    assert (Node.primary is None) == (primary == 'classical')
    PlannerNode.warm_up(Node)
    for stamp_ns in (100_000_000, 200_000_000):     # within the fail-safe's 0.5 s of the made-up frame
        warmed, cold = Node.arbiter.plan(real_scene(stamp_ns), instruction), fresh.plan(real_scene(stamp_ns), instruction)
        assert (warmed.plan.source, warmed.plan.status) == (cold.plan.source, cold.plan.status)
        np.testing.assert_allclose(warmed.plan.poses, cold.plan.poses, atol=1e-6)
        np.testing.assert_allclose(warmed.plan.speeds_mps, cold.plan.speeds_mps, atol=1e-6)


class FakeLogger:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)


class FakeNode:
    def __init__(self, fails):
        self.fails, self.diag_values, self.logger = fails, {}, FakeLogger()

    def get_logger(self):
        return self.logger

    def warm_up(self):
        if self.fails:
            raise ValueError('no such frame')


def test_a_warm_up_is_timed_on_diagnostics_and_one_that_fails_is_said_and_does_not_stop_the_node():
    from fmdrive.nodes.base import _warm_up
    ok, bad = FakeNode(False), FakeNode(True)
    _warm_up(ok)
    _warm_up(bad)
    assert ok.diag_values['warm_up_ms'].isdigit() and not ok.logger.lines
    assert 'warm_up_ms' not in bad.diag_values
    assert bad.logger.lines == ['warm-up failed (ValueError: no such frame); the first frame will be slower']
