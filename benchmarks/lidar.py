"""bench lidar: the learned LiDAR encoder (engines/lidar_centerpoint) side by side with torch and the
classical path, on the same simulated test frames, in one run.

Frames: the first 18 scenes (--quick: 9) of the dataset's `test` split (fmdrive/training/dataset.py:
seeds 303xxxx, scenario kind = index mod 9, domain-randomised), re-simulated here (deterministic) with 32 beams, and the same
scenes with 16 and 128 beams. Quality: BEV AP@0.5 per class with fmdrive.eval.metrics, points ->
load_detector(...).detect() (numpy pillars, ONNX Runtime, decoder) then refine_small_objects (the
vehicle's path: pedestrians and cones centred on their returns; the network's own centres are
printed too, ap_per_class_fp32_network_centres), fp32 and
int8 (int8_cpu, the variant ONNX Runtime picks on a CPU) and, on the 32-beam frames, int8_trt (the
QDQ graph TensorRT builds on the Jetson, executed here by ONNX Runtime: ap_int8_trt); the classical detector
(numpy + scipy, node parameters) on the very same points. On the 32-beam frames car AP is also
split by scenario kind (car_ap_per_kind_fp32 / _classical): the figure that showed crossing
traffic at intersections to be where the learned path loses cars (right centre, heading 90 deg off), and
car_ap_int8_minus_fp32: the INT8 gap with a 95 % interval from a paired bootstrap over the scenes
(a one-point gap on 18 scenes can be the scenes drawn: see that interval before tuning). Speed: the network alone on the same input
canvas, one thread each (the nodes share 2 cores): torch fp32 eager (LidarCenterPoint rebuilt with
the weights of the committed fp32.onnx, see _torch_model), ONNX Runtime fp32, ONNX Runtime int8;
median of the timed runs.

    fmdrive bench lidar [--quick] [--json]
"""
import os
import time

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import numpy as np  # noqa: E402

MODEL_DIR = 'engines/lidar_centerpoint'
TEST_SCENES = 9                  # one of each scenario kind (--quick)
FULL_TEST_SCENES = 18            # two of each: one cyclist track alone would decide the cyclist recall
FULL_FRAMES, QUICK_FRAMES = 40, 12
QUICK_OTHER_BEAMS_FRAMES = 6
TIMED_RUNS, QUICK_TIMED_RUNS = 30, 12


def test_frames(beams: int, frames_per_scene: int, scenes: int = TEST_SCENES):
    """The test split's scenes with `beams` beams (first frames_per_scene frames of each)."""
    from fmdrive.training.dataset import SPLIT_BEAMS, frames_of_scene, scene_spec, simulate_scene
    split = {v: k for k, v in SPLIT_BEAMS.items()}[beams]
    frames = []
    for i in range(scenes):
        spec = scene_spec(split, i)
        spec.duration_s = min(spec.duration_s, frames_per_scene / spec.camera_rate_hz)
        frames.extend(frames_of_scene(simulate_scene(spec, camera=False), f'{split}/scene_{i:04d}'))
    return frames


def _torch_model(card):
    """LidarCenterPoint with the weights of the committed fp32.onnx (BatchNorm folded, as exported):
    widths, depths and head sizes are read off the weight shapes, so no checkpoint is needed."""
    import onnx
    import torch
    from onnx import numpy_helper

    from fmdrive.training.export import fold_batchnorm, pixel_shuffle_to_transposed
    from fmdrive.training.lidar_model import LidarCenterPoint, LidarConfig
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(card.file('fp32').path)).graph.initializer}
    widths = tuple(weights[f'stages.{i}.layers.0.0.weight'].shape[0] for i in range(3))
    depths = tuple(sum(1 for k in weights if k.startswith(f'stages.{i}.layers.') and k.endswith('.0.weight')) - 1
                   for i in range(3))
    g = card.bev_grid
    cfg = LidarConfig(x_range_m=g.x_range_m, y_range_m=g.y_range_m, z_range_m=g.z_range_m, voxel_m=g.voxel_size_m[0],
                      output_stride=g.output_stride, bev_features=g.bev_features, classes=card.classes,
                      widths=widths, depths=depths, neck_channels=weights['ups.0.layers.0.weight'].shape[0],
                      head_channels=weights['heads.shared.0.weight'].shape[0],
                      embed_dim=weights['heads.heads.embedding.weight'].shape[0],
                      axis_head='heads.heads.rot_axis.weight' in weights)
    model = fold_batchnorm(LidarCenterPoint(cfg).eval())
    model.heads.normalize_embedding = False      # the exported graph's outputs: the same work in both
    state = model.state_dict()
    for k, v in state.items():          # a neck exported as 1x1 conv + pixel shuffle: back to the transposed
        if k not in weights and v.dim() == 4 and k.endswith('.weight'):      # conv the model trains with
            shuffled = k[:-len('weight')] + '0.weight'
            if shuffled in weights:
                weights[k], weights[k[:-len('weight')] + 'bias'] = pixel_shuffle_to_transposed(
                    weights[shuffled], weights[shuffled[:-len('weight')] + 'bias'], v.shape[2])
    missing = [k for k in state if k not in weights]
    if missing:
        raise RuntimeError(f'{card.file("fp32").path} lacks weights {missing[:3]} (export naming changed?)')
    model.load_state_dict({k: torch.from_numpy(weights[k].copy()) for k in state})
    return model


def _median_ms(fn, runs: int) -> float:
    fn()
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(ts)), 2)


def _sensor_xy():
    from fmdrive import config
    from fmdrive.calibration.extrinsics import load_extrinsics
    return load_extrinsics(config.EXTRINSICS_FILE)[config.FRAMES['lidar']][:2, 3]


def _detect_all(detector, frames, raw: list | None = None):
    """Detections as the node publishes them (the network's boxes, pedestrians and cones then
    centred on their returns: fmdrive.perception.lidar_learned.refine_small_objects) and the
    network's outputs; `raw` (a list) receives the network's boxes unrefined."""
    from fmdrive.perception.lidar_learned import refine_small_objects
    sensor = _sensor_xy()
    dets, outs = [], []
    for f in frames:
        objects = detector.detect(f.points)
        if raw is not None:
            raw.append(objects)
        dets.append(refine_small_objects(objects, f.points, sensor))
        outs.append({k: v.copy() for k, v in detector.last_outputs.items()})
    return dets, outs


def trt_variant_card(card):
    """The card with its int8_cpu file left out, so ONNX Runtime on the CPU runs int8_trt: the QDQ
    graph TensorRT builds on the Jetson (symmetric S8 activations), executed here; None without one."""
    import dataclasses
    if 'int8_trt' not in card.files:
        return None
    return dataclasses.replace(card, files={k: v for k, v in card.files.items() if k != 'int8_cpu'})


def scenario_kind(frame) -> str:
    """The scenario kind of a test frame (scene index mod the kinds, as dataset.scene_spec picks it)."""
    from fmdrive.sim import SCENARIO_KINDS
    return SCENARIO_KINDS[int(frame.scene.rsplit('_', 1)[1]) % len(SCENARIO_KINDS)]


def car_ap_per_kind(detections, frames) -> dict:
    """Car BEV AP@0.5 per scenario kind (None where a kind has no car to detect): where the
    overall figure comes from (crossing traffic at intersections is the hard case)."""
    from fmdrive.training.lidar_data import score_detections
    out = {}
    for kind in dict.fromkeys(scenario_kind(f) for f in frames):
        idx = [i for i, f in enumerate(frames) if scenario_kind(f) == kind]
        out[kind] = score_detections([detections[i] for i in idx], [frames[i] for i in idx])['car_bev_ap50']
    return out


def int8_gap(d32, d8, frames) -> dict:
    """Car AP int8 - fp32 with a 95 % interval from a paired bootstrap over the scenes (the frames of
    a scene are not independent): whether a gap of a point is the quantization or the draw of scenes."""
    from fmdrive.eval.metrics import paired_ap_difference
    r = paired_ap_difference(d32, d8, [f.gt_frame() for f in frames], [f.scene for f in frames], 'car')
    return {'difference': None if r['difference'] is None else round(r['difference'], 4),
            'ci95': None if r['ci95'] is None else [round(v, 4) for v in r['ci95']],
            'scenes': r['groups'], 'resamples': r['resamples']}


def _quality(frames, fp32, int8, classical: bool, int8_trt=None, per_kind: bool = False) -> dict:
    from fmdrive.training.export import output_cosine
    from fmdrive.training.lidar_data import classical_detections, score_detections
    raw32 = []
    d32, o32 = _detect_all(fp32, frames, raw32)
    d8, o8 = _detect_all(int8, frames)
    s32, s8 = score_detections(d32, frames), score_detections(d8, frames)
    net = score_detections(raw32, frames)
    out = {'frames': len(frames), 'ap_fp32': s32['car_bev_ap50'], 'ap_int8': s8['car_bev_ap50'],
           'ap_per_class_fp32': s32['ap'], 'ap_per_class_int8': s8['ap'],
           'ap_per_class_fp32_network_centres': net['ap'], 'recall_fp32': s32['recall'],
           'recall_int8': s8['recall'], 'precision_fp32': s32['precision'], 'num_gt': s32['num_gt'], 'cosine_int8_vs_fp32': round(output_cosine(o8, o32), 5)}
    if per_kind:
        out['car_ap_per_kind_fp32'] = car_ap_per_kind(d32, frames)
        out['car_ap_int8_minus_fp32'] = int8_gap(d32, d8, frames)
    if int8_trt is not None:
        dt, ot = _detect_all(int8_trt, frames)
        st = score_detections(dt, frames)
        out.update({'ap_int8_trt': st['car_bev_ap50'], 'ap_per_class_int8_trt': st['ap'],
                    'cosine_int8_trt_vs_fp32': round(output_cosine(ot, o32), 5)})
    if classical:
        dc, ms = classical_detections(frames)
        sc = score_detections(dc, frames)
        if per_kind:
            out['car_ap_per_kind_classical'] = car_ap_per_kind(dc, frames)
        out.update({'ap_classical': sc['car_bev_ap50'], 'ap_per_class_classical': sc['ap'],
                    'recall_classical': sc['recall'], 'precision_classical': sc['precision'],
                    'classical_detect_ms_p50': round(float(np.median(ms)), 2)})
    return out


def measure(quick: bool = False, model_dir: str | None = None, scenes: int | None = None, **_ignored) -> dict:
    import torch

    from fmdrive import config
    from fmdrive.inference.detectors import load_detector
    from fmdrive.inference.pillars import bev_canvas
    from fmdrive.profile import host_cpu
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    model_dir = model_dir or config.package_file(MODEL_DIR)
    fp32 = load_detector(model_dir, 'fp32', 'onnxruntime', threads=1)
    int8 = load_detector(model_dir, 'int8', 'onnxruntime', threads=1)
    card = fp32.card
    scenes = scenes or (TEST_SCENES if quick else FULL_TEST_SCENES)
    n = QUICK_FRAMES if quick else FULL_FRAMES
    frames32 = test_frames(32, n, scenes)
    trt_card = trt_variant_card(card)
    int8_trt = load_detector(trt_card, 'int8', 'onnxruntime', threads=1) if trt_card is not None else None
    out = _quality(frames32, fp32, int8, classical=True, int8_trt=int8_trt, per_kind=True)

    # speed: the network on one and the same canvas (a busy test frame)
    busiest = int(np.argmax([len(f.centers) for f in frames32]))
    canvas = bev_canvas(frames32[busiest].points, card.bev_grid)
    model = _torch_model(card)
    x = torch.from_numpy(canvas)
    runs = QUICK_TIMED_RUNS if quick else TIMED_RUNS
    with torch.inference_mode():
        torch_ms = _median_ms(lambda: model(x), runs)
        ref = [t.numpy() for t in model(x)]
    b32, b8 = fp32.backends['model'], int8.backends['model']
    ort32_ms = _median_ms(lambda: b32.infer({'bev': canvas}), runs)
    ort8_ms = _median_ms(lambda: b8.infer({'bev': canvas}), runs)
    got = b32.infer({'bev': canvas})
    bev_ms = _median_ms(lambda: bev_canvas(frames32[busiest].points, card.bev_grid), runs)
    from fmdrive.training.lidar_model import output_names
    out.update({
        'torch_fp32_ms': torch_ms, 'ort_fp32_ms': ort32_ms, 'ort_int8_ms': ort8_ms,
        'speedup_int8_vs_torch': round(torch_ms / ort8_ms, 2), 'speedup_int8_vs_ort_fp32': round(ort32_ms / ort8_ms, 2),
        'bev_canvas_ms': bev_ms,
        'torch_vs_onnx_max_abs_diff': float(max(np.abs(r - got[k]).max() for k, r in zip(output_names(model.cfg), ref))),
    })
    m = QUICK_OTHER_BEAMS_FRAMES if quick else FULL_FRAMES
    for beams in (16, 128):
        q = _quality(test_frames(beams, m, scenes), fp32, int8, classical=True)
        out[f'beams{beams}'] = {k: q[k] for k in ('frames', 'ap_fp32', 'ap_int8', 'ap_classical', 'ap_per_class_fp32',
                                                  'ap_per_class_fp32_network_centres',
                                                  'ap_per_class_classical', 'recall_fp32', 'recall_classical',
                                                  'precision_fp32', 'precision_classical', 'cosine_int8_vs_fp32')}
    out.update({
        'model': card.name, 'int8_variant': int8.describe()['networks']['model']['variant'],
        'host_cpu': host_cpu(),
        'setup': f'{scenes} test scenes (seeds 3030000+i, scenario kind i mod 9), first {n} frames at 5 Hz, '
                 f'32 beams (16/128: first {m}); BEV IoU 0.5, must-detect >= 5 points within 50 m; '
                 'ap_* = car BEV AP@0.5; learned: as the node publishes them (pedestrians and cones centred on '
                 'their returns; ap_per_class_fp32_network_centres: the network\'s own centres); recall/precision '
                 'at the decoder threshold; timing: network only, 1 thread, median',
        'bench_seconds': round(time.perf_counter() - t_start, 1),
    })
    return out


if __name__ == '__main__':
    import json
    import sys
    print(json.dumps(measure(quick='--quick' in sys.argv), indent=1))
