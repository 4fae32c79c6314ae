"""bench camera: the learned camera encoder (engines/camera_centernet) side by side with torch, on the
same simulated test frames, in one run.

Frames: the scenes of the dataset's `test` split (fmdrive/training/dataset.py: seeds 303xxxx, one per
scenario kind, domain-randomised: fog, night, noise, colour), re-simulated here (deterministic) at
the camera's 640x360. Quality: 2D AP@0.5 per class (camera_model.ap_2d; must-detect = a 2D box with
>= 40 visible source pixels), image -> load_detector(...).detect() (letterbox, ONNX Runtime, decoder:
the vehicle's path), fp32 and int8 (int8_cpu on a CPU). Speed: the network alone on the same input
tensor, one thread each: torch fp32 eager (CameraCenterNet rebuilt with the weights of the committed
fp32.onnx), ONNX Runtime fp32, ONNX Runtime int8; median of the timed runs.
int8_minus_fp32: AP int8 - fp32 of car and pedestrian with a 95 % interval from a paired bootstrap
over the scenes (the frames of a scene are not independent; eval/metrics.py): whether a gap of a
point or two is the quantization or the draw of scenes.

    fmdrive bench camera [--quick] [--json]
"""
import os
import time

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import numpy as np  # noqa: E402

MODEL_DIR = 'engines/camera_centernet'
TEST_SCENES = 9
FULL_FRAMES, QUICK_FRAMES = 40, 12
TIMED_RUNS, QUICK_TIMED_RUNS = 30, 12


def test_frames(frames_per_scene: int, scenes: int = TEST_SCENES):
    """(frames, source images) of the test split's scenes (first frames_per_scene of each)."""
    from fmdrive.training.dataset import frames_of_scene, scene_spec, simulate_scene
    frames, sources = [], []
    for i in range(scenes):
        spec = scene_spec('test', i)
        spec.duration_s = min(spec.duration_s, frames_per_scene / spec.camera_rate_hz)
        arrays = simulate_scene(spec, camera=True, source_images=True)
        frames.extend(frames_of_scene(arrays, f'test/scene_{i:04d}'))
        sources.extend(arrays['source_images'])
    return frames, sources


def _torch_model(card):
    import onnx
    import torch
    from onnx import numpy_helper

    from fmdrive.training.camera_model import CameraCenterNet, CameraConfig
    from fmdrive.training.export import fold_batchnorm
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(card.file('fp32').path)).graph.initializer}
    widths = (weights['stem.0.weight'].shape[0],) + tuple(weights[f'stages.{i}.0.0.weight'].shape[0] for i in range(3))
    depths = tuple(sum(1 for k in weights if k.startswith(f'stages.{i}.') and k.endswith('.0.weight')) - 1
                   for i in range(3))
    H, W = card.networks['model'].inputs[0].shape[2:]
    heat = card.networks['model'].output('heatmap').shape
    cfg = CameraConfig(input_hw=(H, W), stride=H // heat[2], classes=card.classes, widths=widths, depths=depths,
                       neck_channels=weights['ups.0.layers.0.weight'].shape[0],
                       head_channels=weights['shared.0.weight'].shape[0],
                       embed_dim=weights['heads.embedding.weight'].shape[0])
    model = fold_batchnorm(CameraCenterNet(cfg).eval())
    state = model.state_dict()
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


def _detect_all(detector, sources):
    """Detections as (boxes in letterboxed input pixels, scores, class), and the raw outputs."""
    from fmdrive.inference.preprocess import image_transform
    spec = detector.input
    dets, outs = [], []
    for img in sources:
        found = detector.detect(img)
        t = image_transform((img.shape[1], img.shape[0]), spec.shape[2:], spec.normalisation.letterbox)
        boxes = np.array([d.box2d for d in found]).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * t.scale_x + t.pad_x
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * t.scale_y + t.pad_y
        dets.append((boxes, np.array([d.score for d in found]), np.array([d.class_index for d in found], int)))
        outs.append({k: v.copy() for k, v in detector.last_outputs.items()})
    return dets, outs


def int8_gaps(d32, d8, frames, classes=('car', 'pedestrian')) -> dict:
    """Per class: AP int8 - fp32, its 95 % interval from a paired bootstrap over the scenes."""
    from fmdrive import config
    from fmdrive.eval.metrics import paired_difference_of_matches
    from fmdrive.training.camera_model import match_2d
    out = {}
    for name in classes:
        c = config.CLASSES.index(name)
        r = paired_difference_of_matches(
            [f.scene for f in frames],
            lambda idx: [match_2d([d[i] for i in idx], [frames[i] for i in idx], c) for d in (d32, d8)])
        out[name] = {'difference': None if r['difference'] is None else round(r['difference'], 4),
                     'ci95': None if r['ci95'] is None else [round(v, 4) for v in r['ci95']],
                     'scenes': r['groups']}
    return out


def measure(quick: bool = False, model_dir: str | None = None, scenes: int = TEST_SCENES, **_ignored) -> dict:
    import torch

    from fmdrive import config
    from fmdrive.inference.detectors import load_detector
    from fmdrive.inference.preprocess import image_to_input
    from fmdrive.profile import host_cpu
    from fmdrive.training.camera_model import OUTPUT_NAMES, ap_2d
    from fmdrive.training.export import output_cosine
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    model_dir = model_dir or config.package_file(MODEL_DIR)
    fp32 = load_detector(model_dir, 'fp32', 'onnxruntime', threads=1)
    int8 = load_detector(model_dir, 'int8', 'onnxruntime', threads=1)
    n = QUICK_FRAMES if quick else FULL_FRAMES
    frames, sources = test_frames(n, scenes)
    d32, o32 = _detect_all(fp32, sources)
    d8, o8 = _detect_all(int8, sources)
    s32, s8 = ap_2d(d32, frames), ap_2d(d8, frames)
    names = ('heatmap', 'size', 'offset', 'depth', 'embedding')
    x_np, _ = image_to_input(sources[0], fp32.input)
    model = _torch_model(fp32.card)
    x = torch.from_numpy(x_np)
    runs = QUICK_TIMED_RUNS if quick else TIMED_RUNS
    with torch.inference_mode():
        torch_ms = _median_ms(lambda: model(x), runs)
        ref = [t.numpy() for t in model(x)]
    b32, b8 = fp32.backend, int8.backend
    ort32_ms = _median_ms(lambda: b32.infer({'image': x_np}), runs)
    ort8_ms = _median_ms(lambda: b8.infer({'image': x_np}), runs)
    got = b32.infer({'image': x_np})
    return {
        'torch_fp32_ms': torch_ms, 'ort_fp32_ms': ort32_ms, 'ort_int8_ms': ort8_ms,
        'speedup_int8_vs_torch': round(torch_ms / ort8_ms, 2), 'speedup_int8_vs_ort_fp32': round(ort32_ms / ort8_ms, 2),
        'ap_fp32': s32['map'], 'ap_int8': s8['map'], 'cosine_int8_vs_fp32': round(output_cosine(o8, o32, names), 5),
        'ap_per_class_fp32': s32['ap'], 'ap_per_class_int8': s8['ap'], 'recall_fp32': s32['recall'],
        'recall_int8': s8['recall'], 'num_gt': s32['num_gt'], 'frames': len(frames),
        'int8_minus_fp32': int8_gaps(d32, d8, frames),
        'torch_vs_onnx_max_abs_diff': float(max(np.abs(r - got[k]).max() for k, r in zip(OUTPUT_NAMES, ref))),
        'params_m': round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        'model': fp32.card.name, 'int8_variant': int8.backend.describe()['variant'],
        'host_cpu': host_cpu(),
        'setup': f'{scenes} test scenes (seeds 3030000+i, one per scenario kind), first {n} frames at 5 Hz, 640x360 '
                 'camera letterboxed to the card input; ap_* = 2D mAP@0.5 over the classes with ground truth; '
                 'timing: network only, 1 thread, median',
        'bench_seconds': round(time.perf_counter() - t_start, 1),
    }


if __name__ == '__main__':
    import json
    import sys
    print(json.dumps(measure(quick='--quick' in sys.argv), indent=1))
