"""Training frames from the simulator with domain randomisation, one compressed npz per scene.

    fmdrive sim dataset --out runs/dataset --scenes 80          # train/val/test splits, resumable
    frames = load_split('runs/dataset', 'train')                 # list[Frame] (points, image, boxes in base_link)

No bags: the simulator is stepped in-process and each scene keeps what training needs:
- LiDAR points in base_link (x, y, z, intensity; float16, cropped to DATA_RANGE_M) - the BEV input is
  computed from them with fmdrive.inference.pillars, the very code the vehicle runs;
- the camera image letterboxed (uint8, before normalisation) to the camera card's input size with
  fmdrive.inference.preprocess's transform, so training sees what the runtime feeds;
- ground truth in base_link: centre, size, yaw, class index (config.CLASSES; trucks and buses are
  'car'), track id, LiDAR points on the object, 2D box in letterboxed input pixels.

Splits draw their scenarios from disjoint seeds (SPLIT_SEEDS). Every knob of a scene comes from
numpy's SeedSequence([split seed, scene index]) -> the same command writes the same arrays.
Scene kinds cycle through every SCENARIO_KIND; domain knobs: beams 16/32/64/128, range noise, dropout,
intensity scale (0..255, 0..1, other gains), fog, night, pixel noise, colour shift, vegetation,
trucks and buses. The `test` split has 32 beams (the classical benchmark's sensor) and `test16` /
`test128` are the very same scenes re-simulated with 16 and 128 beams.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmdrive import config

SPLIT_SEEDS = {'train': 101, 'val': 202, 'test': 303}
SPLIT_BEAMS = {'test': 32, 'test16': 16, 'test128': 128}     # fixed beams; train/val draw them
FRAME_RATE_HZ = 5.0           # 0.2 s apart: more varied frames per simulated second than 10 Hz
SCENE_DURATION_S = 8.0
DATA_RANGE_M = 52.0           # points kept within |x|, |y| < this (the BEV grid is +-51.2 m)
Z_RANGE_M = (-3.0, 5.0)
CAMERA_INPUT_HW = (192, 320)  # the camera card's input: 640x360 -> 320x180 letterboxed into 320x192
LETTERBOX_PAD = 114
DATASET_VERSION = 1


def split_base(split: str) -> str:
    return 'test' if split in SPLIT_BEAMS else split


def scene_spec(split: str, index: int, duration_s: float = SCENE_DURATION_S):
    """The randomised ScenarioSpec of scene `index` of a split (deterministic)."""
    from fmdrive.sim import SCENARIO_KINDS, generate_scenario
    from fmdrive.sim.scenario import LIDAR_BEAMS, add_large_vehicles

    base = split_base(split)
    if base not in SPLIT_SEEDS:
        raise ValueError(f'unknown split {split!r}; splits: {", ".join(list(SPLIT_SEEDS) + list(SPLIT_BEAMS))}')
    rng = np.random.default_rng([SPLIT_SEEDS[base], int(index), zlib.crc32(b'fmdrive-dataset')])
    kind = SCENARIO_KINDS[index % len(SCENARIO_KINDS)]
    seed = SPLIT_SEEDS[base] * 10000 + int(index)
    spec = generate_scenario(kind, seed=seed, duration_s=duration_s)
    spec.camera_rate_hz = spec.lidar_rate_hz = FRAME_RATE_HZ
    li, cam = spec.lidar, spec.camera
    li.beams = int(rng.choice(LIDAR_BEAMS, p=[0.2, 0.3, 0.3, 0.2]))
    li.range_noise_m = round(float(rng.uniform(0.0, 0.05)), 4)
    li.dropout = round(float(rng.uniform(0.0, 0.15)), 4)
    li.intensity_scale = float(rng.choice([1.0, 1.0 / 255.0, round(float(rng.uniform(0.3, 2.0)), 3)]))
    cam.fog = 0.0 if rng.random() < 0.6 else round(float(rng.uniform(0.1, 0.8)), 3)
    cam.night = bool(rng.random() < 0.2)
    cam.noise_std = round(float(rng.uniform(0.0, 8.0)), 2)
    cam.colour_shift = [round(float(g), 3) for g in rng.uniform(0.8, 1.2, 3)]
    spec.road.vegetation_density = 0.0 if rng.random() < 0.5 else round(float(rng.uniform(0.3, 1.5)), 2)
    if rng.random() < 0.35:
        add_large_vehicles(spec, seed, count=int(rng.integers(1, 5)))
    if split in SPLIT_BEAMS:
        li.beams = SPLIT_BEAMS[split]
    return spec


@dataclass
class Frame:
    """One training frame; everything in base_link."""
    points: np.ndarray          # (N, 4) float32 x, y, z, intensity
    image: np.ndarray | None    # (H, W, 3) uint8 letterboxed camera input, or None
    centers: np.ndarray         # (M, 3)
    sizes: np.ndarray           # (M, 3) length, width, height
    yaws: np.ndarray            # (M,)
    labels: np.ndarray          # (M,) int index into config.CLASSES
    ids: np.ndarray             # (M,) track ids (unique within the scene)
    lidar_points: np.ndarray    # (M,) LiDAR returns on the object
    boxes2d: np.ndarray         # (M, 4) letterboxed input pixels, NaN when not in the image
    camera_pixels: np.ndarray   # (M,) visible pixels
    scene: str = ''
    beams: int = 0

    def gt_objects(self) -> list:
        """Object3D list (base_link) for fmdrive.eval.metrics."""
        from fmdrive.objects import Object3D
        return [Object3D(c, s, float(y), config.CLASSES[int(k)], id=int(i))
                for c, s, y, k, i in zip(self.centers, self.sizes, self.yaws, self.labels, self.ids)]

    def gt_frame(self):
        """A GroundTruthFrame with the ego at the origin: metrics in base_link equal metrics in odom."""
        from fmdrive.eval.metrics import GroundTruthFrame
        from fmdrive.objects import EgoState
        return GroundTruthFrame(0, EgoState(), self.gt_objects(), self.lidar_points.astype(int))


def _letterbox(image: np.ndarray) -> tuple[np.ndarray, object]:
    from PIL import Image

    from fmdrive.inference.card import Letterbox
    from fmdrive.inference.preprocess import image_transform
    H, W = CAMERA_INPUT_HW
    t = image_transform((image.shape[1], image.shape[0]), (H, W), Letterbox(LETTERBOX_PAD, 'center'))
    new_w, new_h = round(image.shape[1] * t.scale_x), round(image.shape[0] * t.scale_y)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    out = np.full((H, W, 3), LETTERBOX_PAD, np.uint8)
    out[int(t.pad_y):int(t.pad_y) + new_h, int(t.pad_x):int(t.pad_x) + new_w] = resized
    return out, t


def simulate_scene(spec, camera: bool = True, source_images: bool = False) -> dict:
    """Arrays of every frame of one scenario (see the module docstring); source_images also keeps
    the full camera images (benchmarks feed them to the detector as a camera would)."""
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.geometry import inv_T
    from fmdrive.sim import Simulator

    cam = CameraModel.from_yaml(config.CAMERA_INFO_FILE)
    extrinsics = load_extrinsics(config.EXTRINSICS_FILE)
    T_base_lidar = extrinsics[config.FRAMES['lidar']]
    scale = 1.0 if camera else 0.05      # a LiDAR-only set renders a token image
    K = np.asarray(cam.K, float).copy()
    K[:2] *= scale
    sim = Simulator(spec, K, max(8, int(cam.width * scale)), max(8, int(cam.height * scale)),
                    extrinsics[config.FRAMES['camera']], T_base_lidar)
    cls_index = {c: i for i, c in enumerate(config.CLASSES)}
    points, n_points, images, objs, n_objs, sources = [], [], [], [], [], []
    for frame in sim.frames():
        p = frame.points_lidar[:, :4].astype(np.float64)
        p[:, :3] = p[:, :3] @ T_base_lidar[:3, :3].T + T_base_lidar[:3, 3]
        keep = ((np.abs(p[:, 0]) < DATA_RANGE_M) & (np.abs(p[:, 1]) < DATA_RANGE_M)
                & (p[:, 2] >= Z_RANGE_M[0]) & (p[:, 2] < Z_RANGE_M[1]))
        points.append(p[keep].astype(np.float16))
        n_points.append(int(keep.sum()))
        transform = None
        if camera:
            img, transform = _letterbox(frame.image_rgb)
            images.append(img)
            if source_images:
                sources.append(frame.image_rgb)
        T_base_odom = inv_T(frame.ego.T_odom_base())
        rows = []
        for o in frame.objects:
            if o.label not in cls_index:
                continue
            b = o.transformed(T_base_odom)
            box = np.full(4, np.nan)
            if transform is not None and o.box2d is not None:
                box = np.asarray(o.box2d, float).copy()
                box[[0, 2]] = box[[0, 2]] * transform.scale_x + transform.pad_x
                box[[1, 3]] = box[[1, 3]] * transform.scale_y + transform.pad_y
            rows.append(np.concatenate([b.center, b.size, [b.yaw_rad, cls_index[o.label], o.id,
                                        frame.lidar_points_per_object.get(o.id, 0),
                                        frame.camera_pixels_per_object.get(o.id, 0)], box]))
        objs.append(np.asarray(rows, np.float64).reshape(-1, 15))
        n_objs.append(len(rows))
    out = {'points': np.concatenate(points), 'points_per_frame': np.asarray(n_points, np.int64),
           'objects': np.concatenate(objs).astype(np.float32), 'objects_per_frame': np.asarray(n_objs, np.int64),
           'beams': np.int64(spec.lidar.beams), 'version': np.int64(DATASET_VERSION),
           'spec_json': np.asarray(json.dumps(spec.to_dict()))}
    if camera:
        out['images'] = np.stack(images)
    if sources:
        out['source_images'] = np.stack(sources)
    return out


def scene_path(out_dir, split: str, index: int) -> Path:
    return Path(out_dir) / split / f'scene_{index:04d}.npz'


def write_split(out_dir, split: str, scenes: int, camera: bool = True, progress: bool = True,
                duration_s: float = SCENE_DURATION_S) -> dict:
    """Simulate scenes 0..scenes-1 of a split into out_dir/split/; finished scenes are skipped
    (a scene file appears atomically when complete), so an interrupted run resumes."""
    from tqdm import tqdm
    done = skipped = 0
    (Path(out_dir) / split).mkdir(parents=True, exist_ok=True)
    for index in tqdm(range(scenes), desc=f'dataset {split}', unit='scene', disable=not progress):
        path = scene_path(out_dir, split, index)
        if path.is_file():
            skipped += 1
            continue
        arrays = simulate_scene(scene_spec(split, index, duration_s), camera=camera)
        tmp = path.with_suffix('.tmp.npz')
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        done += 1
    return {'split': split, 'written': done, 'skipped': skipped}


def write_dataset(out_dir, scenes: int, val_scenes: int | None = None, test_scenes: int | None = None,
                  camera: bool = True, progress: bool = True, duration_s: float = SCENE_DURATION_S) -> list:
    """train (scenes), val and test (default scenes // 8, at least 4 each) and test16 / test128."""
    val_scenes = max(4, scenes // 8) if val_scenes is None else val_scenes
    test_scenes = max(4, scenes // 8) if test_scenes is None else test_scenes
    plan = [('train', scenes), ('val', val_scenes), ('test', test_scenes), ('test16', test_scenes),
            ('test128', test_scenes)]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / 'dataset.json').write_text(json.dumps({
        'version': DATASET_VERSION, 'splits': dict(plan), 'split_seeds': SPLIT_SEEDS, 'frame_rate_hz': FRAME_RATE_HZ,
        'scene_duration_s': duration_s, 'camera_input_hw': CAMERA_INPUT_HW, 'camera': camera}, indent=1))
    # the re-simulated 16/128-beam test scenes serve the LiDAR figures only: no camera (faster)
    return [write_split(out_dir, split, n, camera and split not in ('test16', 'test128'), progress, duration_s)
            for split, n in plan if n > 0]


def frames_of_scene(arrays, scene: str = '') -> list[Frame]:
    """Frames of one scene's arrays (an npz or simulate_scene's dict)."""
    pts = np.split(np.asarray(arrays['points'], np.float32), np.cumsum(arrays['points_per_frame'])[:-1])
    objs = np.split(np.asarray(arrays['objects']), np.cumsum(arrays['objects_per_frame'])[:-1])
    images = arrays['images'] if 'images' in arrays else None
    beams = int(arrays['beams'])
    frames = []
    for k, (p, o) in enumerate(zip(pts, objs)):
        frames.append(Frame(p, None if images is None else images[k], o[:, 0:3].astype(np.float64),
                            o[:, 3:6].astype(np.float64), o[:, 6].astype(np.float64), o[:, 7].astype(np.int64),
                            o[:, 8].astype(np.int64), o[:, 9].astype(np.int64), o[:, 11:15].astype(np.float64),
                            o[:, 10].astype(np.int64), scene, beams))
    return frames


def load_split(data_dir, split: str, max_scenes: int | None = None, images: bool = True) -> list[Frame]:
    files = sorted((Path(data_dir) / split).glob('scene_*.npz'))
    files = [f for f in files if not f.name.endswith('.tmp.npz')][:max_scenes]
    if not files:
        raise FileNotFoundError(f'no scenes in {Path(data_dir) / split} (make them with `fmdrive sim dataset '
                                f'--out {data_dir} --scenes N`)')
    frames = []
    for f in files:
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files if images or k != 'images'}
        frames.extend(frames_of_scene(arrays, f'{split}/{f.stem}'))
    return frames
