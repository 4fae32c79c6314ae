"""bench lidar-classical: quality and speed of the classical LiDAR detector on simulated sweeps.

Fixed-seed scenarios of several kinds (32/64/128-beam LiDAR at 10 Hz, no ROS, no bag) are
simulated, among them an 'urban' variant with trucks and buses, hedges and bushes, and a sensor
that reports intensity 0..1;
ClassicalLidarDetector.detect() runs on every sweep, single-threaded, and its boxes (base_link)
are moved to odom with the frame's ground-truth ego pose and scored against the simulator's
ground truth with fmdrive.eval.metrics (BEV AP@0.5 per class, recall, false positives).

    from benchmarks.lidar_classical import measure, run_scenarios   # or `fmdrive bench lidar-classical`
"""
import os
import time

# Timing is single-threaded: the nodes share 2 cores with each other. Set before numpy loads.
for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import numpy as np  # noqa: E402

# (kind, seed[, variant]): the kinds with cars, pedestrians, cyclists and cones next to roadside
# clutter; 'urban' adds trucks and buses, vegetation and an intensity scale of 0..1
SCENARIOS = (('cut_in', 1), ('pedestrian_crossing', 2), ('cyclist', 3), ('construction', 4),
             ('intersection', 5), ('parked_car', 6), ('car_following', 7, 'urban'),
             ('oncoming', 8, 'urban'))
QUICK_SCENARIOS = SCENARIOS[:3] + SCENARIOS[6:7]
DURATION_S, QUICK_DURATION_S = 8.0, 4.0
CAMERA_SCALE = 0.1     # the detector never sees the image: render a tiny one to save time


def simulate(kind: str, seed: int, duration_s: float, beams: int = 32, variant: str = ''):
    """SimFrames of one scenario (camera shrunk; LiDAR and ground truth as shipped)."""
    from fmdrive import config
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.sim import Simulator, generate_scenario
    from fmdrive.sim.scenario import add_large_vehicles

    spec = generate_scenario(kind, seed=seed, duration_s=duration_s)
    spec.lidar.beams = beams
    if variant == 'urban':
        add_large_vehicles(spec, seed, count=4)
        spec.road.vegetation_density = 1.0
        spec.lidar.intensity_scale = 1.0 / 255.0
    camera = CameraModel.from_yaml(config.CAMERA_INFO_FILE)
    extrinsics = load_extrinsics(config.EXTRINSICS_FILE)
    K = np.asarray(camera.K, float).copy()
    K[:2] *= CAMERA_SCALE
    width, height = max(8, int(camera.width * CAMERA_SCALE)), max(8, int(camera.height * CAMERA_SCALE))
    sim = Simulator(spec, K, width, height, extrinsics[config.FRAMES['camera']],
                    extrinsics[config.FRAMES['lidar']])
    yield from sim.frames()


def run_scenarios(scenarios, duration_s: float, params=None, beams: int = 32):
    """Detect on every frame: (detections per frame in odom, GroundTruthFrames, detect ms list)."""
    from fmdrive import config
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.eval.metrics import GroundTruthFrame
    from fmdrive.perception.lidar_classical import ClassicalLidarDetector, ClassicalLidarParams

    T_base_lidar = load_extrinsics(config.EXTRINSICS_FILE)[config.FRAMES['lidar']]
    detector = ClassicalLidarDetector(params or ClassicalLidarParams(), T_base_lidar)
    dets_odom, gt_frames, detect_ms = [], [], []
    for kind, seed, *variant in scenarios:
        for frame in simulate(kind, seed, duration_s, beams, *variant):
            t0 = time.perf_counter()
            result = detector.detect(frame.points_lidar)
            detect_ms.append((time.perf_counter() - t0) * 1e3)
            T_odom_base = frame.ego.T_odom_base()
            dets_odom.append([o.transformed(T_odom_base) for o in result.objects])
            gt_frames.append(GroundTruthFrame(
                stamp_ns=frame.stamp_ns, ego=frame.ego, objects=frame.objects,
                num_lidar_points=np.array([frame.lidar_points_per_object[o.id]
                                           for o in frame.objects], int)))
            gt_frames[-1].object_types = frame.object_types
    return dets_odom, gt_frames, detect_ms


def score(dets_odom, gt_frames) -> dict:
    """AP / recall per class, and false positives per frame (any label, 'unknown' counted apart)."""
    from fmdrive.config import CLASSES, UNKNOWN
    from fmdrive.eval.metrics import detection_metrics, json_safe, match_detections

    det = detection_metrics(dets_odom, gt_frames)
    fp = {label: int((~match_detections(dets_odom, gt_frames, label).tp).sum()) for label in CLASSES}
    n = max(len(gt_frames), 1)
    unknown = sum(d.label == UNKNOWN for dets in dets_odom for d in dets)
    return json_safe({
        'car_bev_ap50': det['ap']['car'],
        'ap': {k: None if v != v else round(v, 4) for k, v in det['ap'].items()},
        'recall': {k: None if v != v else round(v, 4) for k, v in det['recall'].items()},
        'num_gt': det['num_gt'],
        'false_positives_per_frame': round(sum(fp.values()) / n, 3),
        'false_positives_by_class': fp,
        'unknown_per_frame': round(unknown / n, 3),
        'recall_by_type': _recall_by_type(dets_odom, gt_frames, ('truck', 'bus')),
    })


def _recall_by_type(dets_odom, gt_frames, types) -> dict:
    """Share of the "must detect" trucks / buses (GT label 'car') that a car box covers with BEV
    IoU >= 0.5; None where the type never had to be detected."""
    from fmdrive.eval.metrics import iou_matrix
    found = {t: 0 for t in types}
    total = {t: 0 for t in types}
    for dets, gt in zip(dets_odom, gt_frames):
        kinds = getattr(gt, 'object_types', {})
        care = gt.must_detect()
        idx = [j for j, o in enumerate(gt.objects) if care[j] and kinds.get(o.id) in types]
        if not idx:
            continue
        cars = [d for d in dets if d.label == 'car']
        iou = iou_matrix(cars, [gt.objects[j] for j in idx]) if cars else np.zeros((0, len(idx)))
        for k, j in enumerate(idx):
            t = kinds[gt.objects[j].id]
            total[t] += 1
            found[t] += int(len(cars) > 0 and iou[:, k].max() >= 0.5)
    return {t: round(found[t] / total[t], 4) if total[t] else None for t in types}


def measure(quick: bool = False, beams: int = 32, **_ignored) -> dict:
    scenarios = QUICK_SCENARIOS if quick else SCENARIOS
    duration_s = QUICK_DURATION_S if quick else DURATION_S
    dets_odom, gt_frames, detect_ms = run_scenarios(scenarios, duration_s, beams=int(beams))
    out = score(dets_odom, gt_frames)
    ms = np.asarray(detect_ms)
    out.update({
        'detect_ms_p50': round(float(np.percentile(ms, 50)), 2),
        'detect_ms_p99': round(float(np.percentile(ms, 99)), 2),
        'frames': len(gt_frames),
        'scenarios': [f'{kind} seed {seed}' + (f' {v[0]}' if v else '') for kind, seed, *v in scenarios],
        'beams': int(beams),
        'truck_recall': out['recall_by_type']['truck'],
        'bus_recall': out['recall_by_type']['bus'],
        'setup': f'{duration_s:.0f} s each, {int(beams)}-beam LiDAR @ 10 Hz, single thread, BEV IoU 0.5',
    })
    return out


if __name__ == '__main__':
    import json
    import sys
    beams = int(sys.argv[sys.argv.index("--beams") + 1]) if "--beams" in sys.argv else 32
    print(json.dumps(measure(quick="--quick" in sys.argv, beams=beams), indent=1))
