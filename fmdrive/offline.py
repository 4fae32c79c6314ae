"""The graph's cores chained in one process without ROS, on simulator frames: the same
detector -> tracker/scene -> planner path the nodes run, minus DDS and message conversion. For
quick quality studies and benchmarks of one stage or the chain; the integration tests and
`fmdrive bench pipeline` are what measure the real graph.

    spec = generate_scenario('cut_in', seed=1, duration_s=8)
    for r in run_cores(simulate_frames(spec), speed_limit_mps=spec.road.speed_limit_mps): r.plan, ...

The planner runs through the same arbiter as the planner node (fmdrive/planning/arbiter.py).
The road's speed limit reaches the scene as a map would give it to the fusion node: run_cores'
speed_limit_mps (the scenario's), else the configured fallback (fusion.speed_limit_mps).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fmdrive import config


def simulate_frames(kind, seed: int = 0, duration_s: float = 20.0, beams: int = 32,
                    camera_scale: float = 1.0):
    """SimFrames of one generated scenario (kind, seed, duration_s), or of a ScenarioSpec given as
    `kind`, with the shipped calibration. camera_scale < 1 renders a smaller image (for studies
    that never look at the camera)."""
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.sim import ScenarioSpec, Simulator, generate_scenario

    camera = CameraModel.from_yaml(config.CAMERA_INFO_FILE)
    extrinsics = load_extrinsics(config.EXTRINSICS_FILE)
    K = np.asarray(camera.K, float).copy()
    K[:2] *= camera_scale
    width, height = max(8, int(camera.width * camera_scale)), max(8, int(camera.height * camera_scale))
    spec = kind if isinstance(kind, ScenarioSpec) else generate_scenario(kind, seed=seed,
                                                                          duration_s=duration_s)
    spec.lidar.beams = beams
    sim = Simulator(spec, K, width, height, extrinsics[config.FRAMES['camera']],
                    extrinsics[config.FRAMES['lidar']])
    yield from sim.frames()


@dataclass
class CoreResult:
    """What the graph would publish for one LiDAR frame, plus the frame's ground truth."""
    stamp_ns: int
    detections_base: list
    lanes: list
    tracks_base: list
    scene: object
    plan: object                           # what the planner node would publish (arbiter's choice)
    gt_objects_odom: list
    gt_ego: object
    timings_ms: dict = field(default_factory=dict)
    planning: object = None                # the ArbiterResult (source, status, safety, ...)


def run_cores(frames, detector_params=None, fusion_params=None, planner_params=None,
              speed_limit_mps: float | None = None, primary=None):
    """Yields a CoreResult per SimFrame: detect (classical LiDAR), track + describe, plan.

    planner_params: the planner node's parameters (dict, default config.node_params('planner'));
    speed_limit_mps: the road's limit (e.g. spec.road.speed_limit_mps) written into every scene;
    None = the fusion parameters' configured fallback. primary: a primary planner for the arbiter;
    None = the one the planner parameters ask for (`primary: llm` loads the LM planner, exactly as
    the planner node does: arbiter.load_primary), so offline runs plan as the node would."""
    import dataclasses

    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.fusion.core import FusionCore, FusionParams
    from fmdrive.perception.lidar_classical import ClassicalLidarDetector, ClassicalLidarParams
    from fmdrive.planning.arbiter import Arbiter, load_primary

    T_base_lidar = load_extrinsics(config.EXTRINSICS_FILE)[config.FRAMES['lidar']]
    detector = ClassicalLidarDetector(
        detector_params or ClassicalLidarParams.from_dict(config.node_params('lidar_encoder')), T_base_lidar)
    fusion_params = fusion_params or FusionParams.from_node_params(config.node_params('fusion'))
    if speed_limit_mps is not None:
        fusion_params = dataclasses.replace(fusion_params, speed_limit_mps=float(speed_limit_mps))
    fusion = FusionCore(fusion_params)
    planner_params = {**config.node_params('planner'), **(planner_params or {})}
    if primary is None:
        primary, _ = load_primary(planner_params)
    arbiter = Arbiter.from_node_params(planner_params, primary)
    for frame in frames:
        for stamp_ns, ego in frame.odometry:
            fusion.add_odometry(stamp_ns, ego)
        t0 = time.perf_counter()
        det = detector.detect(frame.points_lidar)
        t1 = time.perf_counter()
        fused = fusion.update(det.objects, frame.stamp_ns, det.lanes)
        t2 = time.perf_counter()
        planning = arbiter.plan(fused.scene) if fused.scene is not None else None
        t3 = time.perf_counter()
        yield CoreResult(frame.stamp_ns, det.objects, det.lanes, fused.objects_base, fused.scene,
                         planning.plan if planning is not None else None, frame.objects, frame.ego,
                         {'detect': (t1 - t0) * 1e3, 'fusion': (t2 - t1) * 1e3, 'plan': (t3 - t2) * 1e3},
                         planning)
