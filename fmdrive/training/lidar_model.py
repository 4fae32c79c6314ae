"""The LiDAR encoder: a PointPillars-style BEV CNN with CenterPoint heads, in one file.

    bev [1, F, ny, nx]  (per-pillar statistics, numpy: fmdrive.inference.pillars.bev_canvas)
      -> stem (stride 2) -> stage 2 (stride 4) -> stage 3 (stride 8)       backbone
      -> each stage brought back to stride 2 and concatenated               neck (as PointPillars)
      -> heatmap (sigmoid), offset, z, size (log l, w, h), rot (sin, cos), embedding (L2-normalised in training; raw in the ONNX export, unit vectors after the decoder)

Pillarisation and scatter stay outside the network (as TensorRT deployments do), so the ONNX graph
is plain convolutions with static shapes. The outputs are the `fmdrive_centerpoint` convention
(docs/model_cards.md). Targets and losses for training live here too, next to the heads they train.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fmdrive import config

OUTPUT_NAMES = ('heatmap', 'offset', 'z', 'size', 'rot', 'embedding')
AXIS_OUTPUT = 'rot_axis'


def output_names(cfg) -> tuple:
    """The network's outputs in ONNX order: OUTPUT_NAMES, then rot_axis when the config has that head."""
    return OUTPUT_NAMES + ((AXIS_OUTPUT,) if getattr(cfg, 'axis_head', False) else ())


@dataclass
class LidarConfig:
    # the BEV grid (written into the card's bev_grid)
    x_range_m: tuple = (-51.2, 51.2)
    y_range_m: tuple = (-51.2, 51.2)
    z_range_m: tuple = (-3.0, 5.0)
    voxel_m: float = 0.4
    output_stride: int = 2
    bev_features: tuple = ('log_count', 'z_max', 'z_min', 'z_mean')   # no intensity: its scale differs per sensor
    classes: tuple = config.CLASSES
    # the network
    widths: tuple = (32, 64, 128)       # channels at stride 2, 4, 8
    depths: tuple = (1, 2, 2)           # 3x3 convs per stage after its (strided) entry conv; few at
                                        # stride 2, where a conv costs 4x one at stride 4 (CPU training)
    neck_channels: int = 16             # per stage, after upsampling to stride 2
    head_channels: int = 32
    embed_dim: int = 64
    axis_head: bool = False             # a 'rot_axis' head: (sin 2 yaw, cos 2 yaw), the box's axis free of its
                                        # direction (see rotation_loss); older models have none

    @property
    def grid_hw(self) -> tuple:
        return (round((self.y_range_m[1] - self.y_range_m[0]) / self.voxel_m),
                round((self.x_range_m[1] - self.x_range_m[0]) / self.voxel_m))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> 'LidarConfig':
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def bev_grid(self):
        from fmdrive.inference.card import BevGrid
        return BevGrid(tuple(self.x_range_m), tuple(self.y_range_m), tuple(self.z_range_m),
                       (self.voxel_m, self.voxel_m, self.z_range_m[1] - self.z_range_m[0]), self.output_stride,
                       bev_features=tuple(self.bev_features))


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Stage(nn.Module):
    """A strided conv that halves the resolution, then `depth` 3x3 convs."""

    def __init__(self, c_in: int, c_out: int, depth: int):
        super().__init__()
        self.layers = nn.Sequential(conv_bn_relu(c_in, c_out, 2), *[conv_bn_relu(c_out, c_out) for _ in range(depth)])

    def forward(self, x):
        return self.layers(x)


class Up(nn.Module):
    """Back to stride 2 with a transposed conv (kernel = stride: no overlap); the export writes it as
    the same 1x1 conv + pixel shuffle (export.transposed_to_pixel_shuffle), which quantizes to INT8."""

    def __init__(self, c_in: int, c_out: int, factor: int):
        super().__init__()
        up = nn.ConvTranspose2d(c_in, c_out, factor, factor, bias=False) if factor > 1 else nn.Conv2d(c_in, c_out, 1,
                                                                                                     bias=False)
        self.layers = nn.Sequential(up, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.layers(x)


class CenterPointHeads(nn.Module):
    """One shared 3x3 conv, then a 1x1 conv per output."""

    def __init__(self, c_in: int, cfg: LidarConfig):
        super().__init__()
        self.shared = conv_bn_relu(c_in, cfg.head_channels)
        channels = {'heatmap': len(cfg.classes), 'offset': 2, 'z': 1, 'size': 3, 'rot': 2, 'embedding': cfg.embed_dim}
        if cfg.axis_head:
            channels[AXIS_OUTPUT] = 2
        self.heads = nn.ModuleDict({name: nn.Conv2d(cfg.head_channels, c, 1) for name, c in channels.items()})
        nn.init.constant_(self.heads['heatmap'].bias, -2.19)    # prior 0.1: focal loss starts stable (CenterNet)
        # training normalises the whole map (the loss reads it at object cells); the export does not:
        # an L2 norm over every cell of [1, E, H, W] cost a quarter of the INT8 network's time, and the
        # decoder normalises the few vectors it reads at the peaks (fmdrive/inference/decoders.py)
        self.normalize_embedding = True

    def forward(self, x):
        x = self.shared(x)
        out = {name: head(x) for name, head in self.heads.items()}
        out['heatmap'] = torch.sigmoid(out['heatmap'])
        if self.normalize_embedding:
            out['embedding'] = F.normalize(out['embedding'], dim=1)
        return out


class LidarCenterPoint(nn.Module):
    def __init__(self, cfg: LidarConfig):
        super().__init__()
        self.cfg = cfg
        w, d = cfg.widths, cfg.depths
        c_in = len(cfg.bev_features)
        self.stages = nn.ModuleList([Stage(c_in, w[0], d[0]), Stage(w[0], w[1], d[1]), Stage(w[1], w[2], d[2])])
        # stage i runs at stride 2^(i+1); the heads run at cfg.output_stride (2)
        self.ups = nn.ModuleList([Up(w[i], cfg.neck_channels, 2 ** (i + 1) // cfg.output_stride) for i in range(3)])
        self.heads = CenterPointHeads(3 * cfg.neck_channels, cfg)

    def forward(self, bev):
        feats, x = [], bev
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        x = torch.cat([up(f) for up, f in zip(self.ups, feats)], dim=1)
        out = self.heads(x)
        return tuple(out[name] for name in output_names(self.cfg))     # the ONNX outputs, in this order

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------------------- targets
def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float = 0.1) -> float:
    """CenterNet's radius: the largest centre shift that keeps IoU >= min_overlap (the r3 case of
    the three quadratic cases, which is the binding one for small overlaps as in CenterPoint)."""
    h, w = length_cells, width_cells
    a1, b1, c1 = 1, h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


@dataclass
class Targets:
    heatmap: np.ndarray             # (C, H, W) float32 gaussians
    index: np.ndarray               # (K,) flat head cell of each object (iy * W + ix)
    offset: np.ndarray              # (K, 2)
    z: np.ndarray                   # (K,)
    log_size: np.ndarray            # (K, 3)
    rot: np.ndarray                 # (K, 2) sin, cos
    instance: np.ndarray            # (K,) int64 instance key (scene, track id) for the embedding loss
    extra: dict = field(default_factory=dict)


def make_targets(frame, cfg: LidarConfig, flip_y: bool = False, instance_base: int = 0,
                 min_points: int = 1) -> Targets:
    """Targets of one frame (a dataset.Frame, boxes in base_link) on the head grid. Objects with
    fewer than min_points LiDAR returns are not targets (nothing to see). flip_y mirrors y (the
    BEV canvas must be flipped along its rows to match)."""
    ny, nx = cfg.grid_hw
    H, W = ny // cfg.output_stride, nx // cfg.output_stride
    cell = cfg.voxel_m * cfg.output_stride
    heat = np.zeros((len(cfg.classes), H, W), np.float32)
    rows = []
    for c, s, yaw, label, tid, npts in zip(frame.centers, frame.sizes, frame.yaws, frame.labels, frame.ids,
                                           frame.lidar_points):
        if npts < min_points:
            continue
        x, y = float(c[0]), float(-c[1] if flip_y else c[1])
        yaw = float(-yaw if flip_y else yaw)
        fx, fy = (x - cfg.x_range_m[0]) / cell, (y - cfg.y_range_m[0]) / cell
        ix, iy = int(math.floor(fx)), int(math.floor(fy))
        if not (0 <= ix < W and 0 <= iy < H):
            continue
        r = max(1, int(gaussian_radius(s[0] / cell, s[1] / cell)))
        _draw_gaussian(heat[int(label)], ix, iy, r)
        rows.append((iy * W + ix, fx - ix, fy - iy, float(c[2]), *np.log(np.maximum(s, 0.05)), math.sin(yaw),
                     math.cos(yaw), instance_base + int(tid)))
    a = np.asarray(rows, np.float64).reshape(-1, 10)
    return Targets(heat, a[:, 0].astype(np.int64), a[:, 1:3].astype(np.float32), a[:, 3].astype(np.float32),
                   a[:, 4:7].astype(np.float32), a[:, 7:9].astype(np.float32), a[:, 9].astype(np.int64))


def _draw_gaussian(heat: np.ndarray, cx: int, cy: int, radius: int):
    sigma = (2 * radius + 1) / 6
    yy, xx = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
    H, W = heat.shape
    l, r = min(cx, radius), min(W - cx, radius + 1)
    t, b = min(cy, radius), min(H - cy, radius + 1)
    patch = heat[cy - t:cy + b, cx - l:cx + r]
    np.maximum(patch, g[radius - t:radius + b, radius - l:radius + r], out=patch)


# ---------------------------------------------------------------------------------------- losses
def focal_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """CornerNet/CenterNet penalty-reduced focal loss on sigmoid outputs, per object."""
    pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    neg_weight = torch.pow(1 - gt, 4)
    pos_loss = torch.log(pred) * torch.pow(1 - pred, 2) * pos
    neg_loss = torch.log(1 - pred) * torch.pow(pred, 2) * neg_weight * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def embedding_loss(emb: torch.Tensor, instance: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss over object embeddings: the same object in two frames of a scene
    (batches hold consecutive frames) is pulled together, every other object pushed away, so the
    embedding is what a tracker or a fusion stage can associate on."""
    if emb.shape[0] < 2:
        return emb.sum() * 0.0
    sim = emb @ emb.t() / temperature
    eye = torch.eye(len(emb), dtype=torch.bool)
    positives = (instance[:, None] == instance[None, :]) & ~eye
    has_pos = positives.any(1)
    if not has_pos.any():
        return emb.sum() * 0.0
    sim = sim.masked_fill(eye, -1e9)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    per_anchor = -(log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)
    return per_anchor[has_pos].mean()


def gather(head: torch.Tensor, batch_index: torch.Tensor, cell_index: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (K, C) values at the objects' cells."""
    B, C, H, W = head.shape
    return head.reshape(B, C, H * W)[batch_index, :, cell_index]


DIRECTION_WEIGHT = 0.2     # rot_loss 'axis': weight of the plain (direction-aware) term beside the flip-free one


def rotation_loss(pred: torch.Tensor, target: torch.Tensor, mode: str = 'l1') -> torch.Tensor:
    """L1 on (sin, cos) of the yaw. 'l1': against the heading as labelled. 'axis': against the
    labelled heading or its reverse, whichever is nearer, plus DIRECTION_WEIGHT x the plain term.
    Where the shape cannot tell front from back (a car crossing at 40 m: +90 or -90 degrees are
    equally likely), plain L1 is as low at the average of the two, (0, 0), as at either; with
    'axis' the box's axis is cheapest and the direction is learned where the context tells it
    (BEV IoU does not depend on the direction; SECOND's sine-error loss has the same aim).
    Measured (2026-12-03, runs/lidar5): this did NOT cure the crossing cars the models miss (0 of
    107 found on the full test; the rotation head still gives the road's heading at their cells,
    on training frames too), so the cause lies elsewhere; 'l1' stays the default.
    What the L1 model gives at crossing cars (2026-12-05, the committed model on test scene 4): sin
    ~0.0 and cos between -0.2 and +0.4, against (0, +-1) at cars along the road - exactly the L1
    optimum when the y-flip makes +90 and -90 degrees equally likely for one shape; atan2 of that
    is the road's heading. The axis head (LidarConfig.axis_head) regresses (sin 2 yaw, cos 2 yaw),
    which has one value for a heading and its reverse, so the ambiguity has nothing to average;
    the decoder takes the axis from it and the direction from this head. That alone was not enough
    (cos 2 yaw ~ +0.75 at crossing cars, target -1: the network gave them the road's axis from
    context); weighted towards crossing cars (centerpoint_loss axis_crossing_weight 10) it learned
    them: full-test intersection car AP 0.18 -> 0.79."""
    plain = (pred - target).abs().sum(1)
    if mode == 'l1':
        return plain.mean() / 2
    if mode != 'axis':
        raise ValueError(f'unknown rotation loss {mode!r} (l1 | axis)')
    flipped = (pred + target).abs().sum(1)
    return (torch.minimum(plain, flipped).mean() + DIRECTION_WEIGHT * plain.mean()) / 2


def axis_target(rot: torch.Tensor) -> torch.Tensor:
    """(K, 2) (sin, cos) of the yaw -> (sin 2 yaw, cos 2 yaw): the same for a heading and its reverse."""
    s, c = rot[:, 0], rot[:, 1]
    return torch.stack([2 * s * c, c * c - s * s], dim=1)


def centerpoint_loss(outputs: tuple, batch: dict, weights: dict | None = None,
                     rot_loss: str = 'l1', axis_crossing_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Total loss and its parts. outputs: the network's, in output_names order (rot_axis last, when
    present: L1 against (sin 2 yaw, cos 2 yaw)). batch: heatmap (B, C, H, W), batch_index /
    cell_index (K,), offset (K, 2), z (K,), log_size (K, 3), rot (K, 2), instance (K,). rot_loss:
    rotation_loss mode."""
    w = {'heatmap': 1.0, 'offset': 1.0, 'z': 1.0, 'size': 1.0, 'rot': 1.0, 'embedding': 0.1, 'rot_axis': 1.0,
         **(weights or {})}
    heatmap, offset, z, size, rot, embedding = outputs[:6]
    rot_axis = outputs[6] if len(outputs) > 6 else None
    parts = {'heatmap': focal_loss(heatmap, batch['heatmap'])}
    b, k = batch['batch_index'], batch['cell_index']
    if len(k):
        parts['offset'] = F.l1_loss(gather(offset, b, k), batch['offset'])
        parts['z'] = F.l1_loss(gather(z, b, k)[:, 0], batch['z'])
        parts['size'] = F.l1_loss(gather(size, b, k), batch['log_size'])
        parts['rot'] = rotation_loss(gather(rot, b, k), batch['rot'], rot_loss)
        if rot_axis is not None:
            per_object = (gather(rot_axis, b, k) - axis_target(batch['rot'])).abs().sum(1) / 2
            ow = 1.0 + (float(axis_crossing_weight) - 1.0) * batch['rot'][:, 0].abs()
            parts['rot_axis'] = (ow * per_object).sum() / ow.sum()
        parts['embedding'] = embedding_loss(gather(embedding, b, k), batch['instance'])
    total = sum(w[name] * value for name, value in parts.items())
    return total, {name: float(v.detach()) for name, v in parts.items()}
