"""Dataset frames -> what the LiDAR encoder trains and is scored on: BEV canvases (cached on disk per
grid), targets per batch, and BEV AP of decoded outputs against the frames' ground truth.

The canvas is fmdrive.inference.pillars.bev_canvas - the function the vehicle runs - so training
and inference share one pre-processing. No torch here: calibration and benchmarks use it too.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def grid_key(grid) -> str:
    text = json.dumps([grid.x_range_m, grid.y_range_m, grid.z_range_m, grid.voxel_size_m, list(grid.bev_features)])
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def bev_canvases(frames, grid, cache_path: Path | None = None, progress: bool = True) -> np.ndarray:
    """(N, F, ny, nx) float16 canvases of the frames' points; cached in cache_path (.npy) when given
    (a cache for other frames or another grid is recomputed: its name carries the grid key and its
    length must match)."""
    from tqdm import tqdm

    from fmdrive.inference.pillars import bev_canvas
    if cache_path is not None and Path(cache_path).is_file():
        cached = np.load(cache_path, mmap_mode='r')
        if cached.shape[0] == len(frames):
            return np.asarray(cached)
    out = np.zeros((len(frames), len(grid.bev_features), grid.ny, grid.nx), np.float16)
    for i, f in enumerate(tqdm(frames, desc='BEV canvases', unit='frame', disable=not progress)):
        out[i] = bev_canvas(f.points, grid)[0]
    if cache_path is not None:
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(cache_path) + '.tmp.npy')
        np.save(tmp, out)
        tmp.replace(cache_path)
    return out


def split_canvases(data_dir, split: str, grid, max_scenes=None, progress: bool = True):
    """(frames, canvases) of a dataset split, canvases cached under DATA_DIR/cache/."""
    from fmdrive.training.dataset import load_split
    frames = load_split(data_dir, split, max_scenes, images=False)
    tag = f'{split}_{len(frames)}' + (f'_max{max_scenes}' if max_scenes else '')
    cache = Path(data_dir) / 'cache' / f'bev_{grid_key(grid)}_{tag}.npy'
    return frames, bev_canvases(frames, grid, cache, progress)


def score_detections(detections_base, frames) -> dict:
    """BEV AP@0.5 / recall per class of detections (base_link, one list per frame), with the eval's
    metrics (must-detect: >= 5 LiDAR points, <= 50 m)."""
    from fmdrive.eval.metrics import detection_metrics, json_safe
    det = detection_metrics(detections_base, [f.gt_frame() for f in frames])
    r4 = lambda d: {k: None if v != v else round(float(v), 4) for k, v in d.items()}  # noqa: E731
    return json_safe({'car_bev_ap50': None if det['ap']['car'] != det['ap']['car'] else round(det['ap']['car'], 4),
                      'ap': r4(det['ap']), 'recall': r4(det['recall']), 'precision': r4(det['precision']),
                      'num_gt': det['num_gt'],
                      'frames': len(frames)})


def classical_detections(frames, params=None) -> tuple[list, list]:
    """The classical LiDAR path on the same frames: (detections in base_link per frame, detect ms).
    The frames hold points in base_link; the detector takes the LiDAR frame, as on the vehicle."""
    import time

    from fmdrive import config
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.geometry import inv_T
    from fmdrive.perception.lidar_classical import ClassicalLidarDetector, ClassicalLidarParams
    T_base_lidar = load_extrinsics(config.EXTRINSICS_FILE)[config.FRAMES['lidar']]
    T_lidar_base = inv_T(T_base_lidar)
    detector = ClassicalLidarDetector(params or ClassicalLidarParams.from_dict(config.node_params('lidar_encoder')),
                                      T_base_lidar)
    dets, ms = [], []
    for f in frames:
        p = np.asarray(f.points, np.float64).copy()
        p[:, :3] = p[:, :3] @ T_lidar_base[:3, :3].T + T_lidar_base[:3, 3]
        t0 = time.perf_counter()
        result = detector.detect(p.astype(np.float32))
        ms.append((time.perf_counter() - t0) * 1e3)
        dets.append(list(result.objects))
    return dets, ms
