"""The camera encoder: a small CNN with CenterNet heads, in one file.

    image [1, 3, 192, 320]  (letterboxed 640x360 camera, ImageNet mean/std: the card's normalisation)
      -> stem (stride 2) -> stages at stride 4, 8, 16 -> each brought back to stride 4, concatenated
      -> heatmap (sigmoid, car/pedestrian/cyclist/cone), size (w, h px), offset, depth (m),
         embedding (L2-normalised, per object at its peak)

The outputs are the `fmdrive_centernet` convention (docs/model_cards.md). Targets and losses sit
next to the heads; the focal and embedding losses are the LiDAR encoder's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fmdrive import config
from fmdrive.training.lidar_model import Up, conv_bn_relu, embedding_loss, focal_loss, gather, gaussian_radius

OUTPUT_NAMES = ('heatmap', 'size', 'offset', 'depth', 'embedding')
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CAMERA_XYZ_BASE = (1.6, 0.0, 1.4)     # calibration/extrinsics.yaml: depth = distance from the camera


@dataclass
class CameraConfig:
    input_hw: tuple = (192, 320)
    stride: int = 4
    classes: tuple = config.CLASSES
    widths: tuple = (24, 48, 96, 160)   # stride 2 (stem), 4, 8, 16
    depths: tuple = (1, 2, 2)           # 3x3 convs after each strided entry (stride 4, 8, 16)
    neck_channels: int = 32
    head_channels: int = 48
    embed_dim: int = 64

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> 'CameraConfig':
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class CameraCenterNet(nn.Module):
    def __init__(self, cfg: CameraConfig):
        super().__init__()
        self.cfg = cfg
        w, d = cfg.widths, cfg.depths
        self.stem = conv_bn_relu(3, w[0], 2)
        self.stages = nn.ModuleList([nn.Sequential(conv_bn_relu(w[i], w[i + 1], 2),
                                                   *[conv_bn_relu(w[i + 1], w[i + 1]) for _ in range(d[i])])
                                     for i in range(3)])
        # stage i runs at stride 4 * 2^i; the heads at cfg.stride (4)
        self.ups = nn.ModuleList([Up(w[i + 1], cfg.neck_channels, 2 ** i) for i in range(3)])
        self.shared = conv_bn_relu(3 * cfg.neck_channels, cfg.head_channels)
        channels = {'heatmap': len(cfg.classes), 'size': 2, 'offset': 2, 'depth': 1, 'embedding': cfg.embed_dim}
        self.heads = nn.ModuleDict({n: nn.Conv2d(cfg.head_channels, c, 1) for n, c in channels.items()})
        nn.init.constant_(self.heads['heatmap'].bias, -2.19)

    def forward(self, image):
        x, feats = self.stem(image), []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        x = self.shared(torch.cat([up(f) for up, f in zip(self.ups, feats)], dim=1))
        out = {n: h(x) for n, h in self.heads.items()}
        out['heatmap'] = torch.sigmoid(out['heatmap'])
        out['size'] = F.relu(out['size']) * 16.0     # px; the scale keeps the raw output near 1
        out['depth'] = F.relu(out['depth']) * 10.0   # m
        out['embedding'] = F.normalize(out['embedding'], dim=1)
        return tuple(out[n] for n in OUTPUT_NAMES)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def normalise(images_uint8: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 letterboxed RGB -> (B, 3, H, W) float32, as preprocess.image_to_input."""
    x = images_uint8.astype(np.float32) / 255.0
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def visible(frame, min_pixels: int = 40) -> np.ndarray:
    """(M,) objects the camera shows: a 2D box and enough visible pixels (letterboxed input is 1/4 of
    the source pixels; the count is in source pixels)."""
    b = frame.boxes2d
    ok = np.isfinite(b).all(1) & (frame.camera_pixels >= min_pixels)
    return ok & (b[:, 2] - b[:, 0] >= 2) & (b[:, 3] - b[:, 1] >= 2)


def make_targets(frame, cfg: CameraConfig, flip_x: bool = False, instance_base: int = 0) -> dict:
    H, W = cfg.input_hw[0] // cfg.stride, cfg.input_hw[1] // cfg.stride
    heat = np.zeros((len(cfg.classes), H, W), np.float32)
    rows = []
    cam = np.asarray(CAMERA_XYZ_BASE)
    for j in np.nonzero(visible(frame))[0]:
        u0, v0, u1, v1 = frame.boxes2d[j]
        if flip_x:
            u0, u1 = cfg.input_hw[1] - u1, cfg.input_hw[1] - u0
        cx, cy = (u0 + u1) / 2 / cfg.stride, (v0 + v1) / 2 / cfg.stride
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < W and 0 <= iy < H):
            continue
        r = max(0, int(gaussian_radius((v1 - v0) / cfg.stride, (u1 - u0) / cfg.stride, 0.7)))
        from fmdrive.training.lidar_model import _draw_gaussian
        _draw_gaussian(heat[int(frame.labels[j])], ix, iy, r)
        rows.append((iy * W + ix, u1 - u0, v1 - v0, cx - ix, cy - iy,
                     float(np.linalg.norm(frame.centers[j] - cam)), instance_base + int(frame.ids[j])))
    a = np.asarray(rows, np.float64).reshape(-1, 7)
    return {'heatmap': heat, 'index': a[:, 0].astype(np.int64), 'size': a[:, 1:3].astype(np.float32),
            'offset': a[:, 3:5].astype(np.float32), 'depth': a[:, 5].astype(np.float32),
            'instance': a[:, 6].astype(np.int64)}


def centernet_loss(outputs: tuple, batch: dict) -> tuple[torch.Tensor, dict]:
    heatmap, size, offset, depth, embedding = outputs
    parts = {'heatmap': focal_loss(heatmap, batch['heatmap'])}
    b, k = batch['batch_index'], batch['cell_index']
    if len(k):
        # size in log space: a 10 px cone and a 200 px bus weigh alike
        parts['size'] = F.l1_loss(torch.log(gather(size, b, k) + 1.0), torch.log(batch['size'] + 1.0))
        parts['offset'] = F.l1_loss(gather(offset, b, k), batch['offset'])
        parts['depth'] = F.l1_loss(torch.log(gather(depth, b, k)[:, 0] + 1.0), torch.log(batch['depth'] + 1.0))
        parts['embedding'] = embedding_loss(gather(embedding, b, k), batch['instance'])
    w = {'heatmap': 1.0, 'size': 1.0, 'offset': 1.0, 'depth': 1.0, 'embedding': 0.1}
    total = sum(w[n] * v for n, v in parts.items())
    return total, {n: float(v.detach()) for n, v in parts.items()}


def match_2d(detections, frames, c: int, iou_threshold: float = 0.5):
    """DetectionMatch of class index c over frames (see ap_2d): greedy by score, must-detect =
    visible(), a detection on a don't-care box of the class ignored."""
    from fmdrive.eval.metrics import DetectionMatch
    scores, tps, num_gt, matched = [], [], 0, 0
    for (boxes, sc, cl), f in zip(detections, frames):
        is_c = f.labels == c
        care = visible(f)[is_c]
        gt = f.boxes2d[is_c]
        num_gt += int(care.sum())
        sel = np.nonzero(cl == c)[0]
        sel = sel[np.argsort(-sc[sel], kind='stable')]
        taken = np.zeros(len(gt), bool)
        for i in sel:
            iou = _iou(boxes[i], gt) if len(gt) else np.zeros(0)
            cand = np.where(care & ~taken, iou, -1.0)
            j = int(np.argmax(cand)) if len(cand) else -1
            if j >= 0 and cand[j] >= iou_threshold:
                taken[j] = True
                scores.append(sc[i])
                tps.append(True)
            elif len(gt) and np.any(~care & (np.nan_to_num(iou) >= iou_threshold)):
                continue
            else:
                scores.append(sc[i])
                tps.append(False)
        matched += int(taken.sum())
    return DetectionMatch(np.array(scores, float), np.array(tps, bool), num_gt, matched)


def ap_2d(detections, frames, classes=config.CLASSES, iou_threshold: float = 0.5) -> dict:
    """2D AP@0.5 per class (VOC all-point) in letterboxed input pixels; detections per frame are
    (boxes (D, 4), scores (D,), class (D,)). Must-detect = visible(); other boxes of the class are
    don't-care (a detection on them is ignored)."""
    from fmdrive.eval.metrics import ap_from_match
    out = {'ap': {}, 'recall': {}, 'num_gt': {}}
    for c, name in enumerate(classes):
        m = match_2d(detections, frames, c, iou_threshold)
        ap = ap_from_match(m)
        out['ap'][name] = None if ap != ap else round(ap, 4)
        out['recall'][name] = round(m.num_matched_gt / m.num_gt, 4) if m.num_gt else None
        out['num_gt'][name] = m.num_gt
    aps = [v for v in out['ap'].values() if v is not None]
    out['map'] = round(float(np.mean(aps)), 4) if aps else 0.0
    return out


def _iou(box, boxes):
    boxes = np.nan_to_num(np.asarray(boxes, float), nan=-1e6)
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def decode_batch(outputs: dict, card, j: int = 0):
    """Decoded (boxes in input pixels, scores, class) of item j, with the card's own decoder."""
    from fmdrive.inference.decoders import decode_fmdrive_centernet
    from fmdrive.inference.preprocess import ImageTransform
    H, W = card.networks['model'].inputs[0].shape[2:]
    identity = ImageTransform(1.0, 1.0, 0.0, 0.0, (W, H))
    dets = decode_fmdrive_centernet({k: v[j:j + 1] for k, v in outputs.items()}, card, identity)
    if not dets:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)
    return (np.stack([d.box2d for d in dets]), np.array([d.score for d in dets]),
            np.array([d.class_index for d in dets]))


_ = math
