"""Network outputs -> our detections, one decoder per io_convention (the card says which).

- fmdrive_centernet (2D): heatmap [1,C,h,w] after sigmoid, size [1,2,h,w] (box width, height in
  input pixels), offset [1,2,h,w] (sub-cell dx, dy of the centre), optional depth [1,1,h,w] (m) and
  embedding [1,E,h,w] (raw or unit: the vector read at a peak is L2-normalised); peaks by 3x3 max-pool NMS, top-K, letterbox undone to source pixels.
- yolox (2D): output [1, N, 5+C] = (dx, dy, log w, log h, objectness, class scores) per anchor of
  the stride-8/16/32 grids; centre = (cell + d) * stride, size = exp(log) * stride, score =
  objectness * class score, then NMS (as YOLOX's demo_postprocess + multiclass_nms).
- fmdrive_centerpoint (3D): heatmap [1,C,H,W] after sigmoid, offset [1,2,H,W], z [1,1,H,W] (box
  centre, m), size [1,3,H,W] (log length, width, height), rot [1,2,H,W] (sin, cos of yaw),
  optional embedding [1,E,H,W] (normalised at the peaks, as above), optional rot_axis [1,2,H,W]
  (sin, cos of 2 x yaw: the box's axis, the same for a heading and its reverse; when present the
  yaw is the one of its two headings nearer to rot's); x = x_min + (ix + dx) * voxel_x * stride, likewise y.
- autoware_centerpoint (3D): head outputs heatmap (logits), reg (dx, dy), height (z), dim (log w, l,
  h), rot (sin, cos), vel (vx, vy), decoded as Autoware lidar_centerpoint does (per-cell best class,
  score threshold, per-class yaw-norm threshold, circle NMS) and mmdet3d's yaw turned into ours.
Cells are addressed from the grid corner: centre = (cell index + offset) * cell size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmdrive.inference.card import ModelCard
from fmdrive.inference.preprocess import ImageTransform
from fmdrive.objects import Object3D


@dataclass
class Detection2D:
    """A 2D detection on the source image."""
    box2d: np.ndarray                       # (4,) u_min, v_min, u_max, v_max source pixels
    score: float
    label: str                              # fmdrive label (card class_map)
    class_index: int = -1                   # the model's class channel
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    depth_m: float | None = None

    def to_dict(self) -> dict:
        d = {'box2d': [round(float(v), 2) for v in self.box2d], 'score': round(float(self.score), 4),
             'label': self.label}
        if self.depth_m is not None:
            d['depth_m'] = round(float(self.depth_m), 3)
        return d


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float32)))


def unit(v: np.ndarray) -> np.ndarray:
    """v / |v| as float32 (a zero vector stays zero): embeddings are compared by cosine, and a
    network may leave the normalisation of its embedding map to the decoder."""
    v = np.asarray(v, np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def heatmap_peaks(heatmap: np.ndarray, top_k: int, threshold: float):
    """CenterNet peak extraction on [C, h, w]: a cell is a peak when it equals the max of its 3x3
    neighbourhood (the max-pool NMS); returns (scores, class, iy, ix) of the top_k peaks above
    threshold, best first."""
    heat = np.asarray(heatmap, dtype=np.float32)
    h, w = heat.shape[1:]
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    pooled = heat.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            np.maximum(pooled, padded[:, dy:dy + h, dx:dx + w], out=pooled)
    scores = np.where(heat == pooled, heat, 0.0).reshape(-1)
    k = min(top_k, scores.size)
    best = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    best = best[np.argsort(-scores[best], kind='stable')]
    best = best[scores[best] > threshold]
    cls, rest = np.divmod(best, h * w)
    iy, ix = np.divmod(rest, w)
    return scores[best], cls, iy, ix


def nms_xyxy(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, classes=None) -> np.ndarray:
    """Greedy NMS; indices kept, best first. With classes, boxes of different classes never
    suppress each other (offset trick)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    if classes is not None:
        boxes = boxes + (np.asarray(classes, dtype=np.float64) * (boxes.max() + 1.0))[:, None]
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-np.asarray(scores), kind='stable')
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def circle_nms(xy: np.ndarray, scores: np.ndarray, distance_m: float) -> np.ndarray:
    """Keep the best box within distance_m of any other (centre distance), as CenterPoint does."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    order = np.argsort(-np.asarray(scores), kind='stable')
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[np.hypot(*(xy[rest] - xy[i]).T) > distance_m]
    return np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- 2D
def decode_fmdrive_centernet(outputs: dict, card: ModelCard, transform: ImageTransform) -> list[Detection2D]:
    p = card.decoder
    heat = outputs['heatmap'][0]
    input_h = card.networks['model'].inputs[0].shape[2]
    stride = input_h / heat.shape[1]
    scores, cls, iy, ix = heatmap_peaks(heat, int(p.get('top_k', 100)), float(p.get('score_threshold', 0.3)))
    offset, size = outputs['offset'][0], outputs['size'][0]
    cx = (ix + offset[0, iy, ix]) * stride
    cy = (iy + offset[1, iy, ix]) * stride
    w, h = np.maximum(size[0, iy, ix], 0.0), np.maximum(size[1, iy, ix], 0.0)
    boxes = transform.to_source(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
    emb = outputs.get('embedding')
    depth = outputs.get('depth')
    return [Detection2D(boxes[j], float(scores[j]), card.label(int(cls[j])), int(cls[j]),
                        np.zeros(0, np.float32) if emb is None else unit(emb[0][:, iy[j], ix[j]]),
                        None if depth is None else float(depth[0, 0, iy[j], ix[j]]))
            for j in range(len(scores))]


def yolox_grid(input_hw: tuple, strides=(8, 16, 32)) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) cell x, y and (N,) stride of every YOLOX anchor, in the order of the output rows."""
    H, W = input_hw
    grids, expanded = [], []
    for s in strides:
        xv, yv = np.meshgrid(np.arange(W // s), np.arange(H // s))
        grids.append(np.stack([xv, yv], axis=2).reshape(-1, 2))
        expanded.append(np.full(grids[-1].shape[0], s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def decode_yolox(outputs: dict, card: ModelCard, transform: ImageTransform) -> list[Detection2D]:
    p = card.decoder
    out = np.asarray(next(iter(outputs.values())), dtype=np.float32)[0]
    H, W = card.networks['model'].inputs[0].shape[2:]
    grid, stride = yolox_grid((H, W), tuple(p.get('strides', (8, 16, 32))))
    cxy = (out[:, :2] + grid) * stride[:, None]
    wh = np.exp(np.minimum(out[:, 2:4], 20.0)) * stride[:, None]
    class_scores = out[:, 4:5] * out[:, 5:]
    cls = class_scores.argmax(1)
    score = class_scores[np.arange(len(cls)), cls]
    sel = np.nonzero(score > float(p.get('score_threshold', 0.3)))[0]
    boxes = np.concatenate([cxy[sel] - wh[sel] / 2, cxy[sel] + wh[sel] / 2], axis=1)
    keep = nms_xyxy(boxes, score[sel], float(p.get('nms_iou', 0.45)),
                    None if p.get('class_agnostic_nms', False) else cls[sel])
    keep = keep[:int(p.get('top_k', 100))]
    src = transform.to_source(boxes[keep])
    return [Detection2D(src[j], float(score[sel][i]), card.label(int(cls[sel][i])), int(cls[sel][i]))
            for j, i in enumerate(keep)]


# ---------------------------------------------------------------------------------------------- 3D
def _cell_centres(card: ModelCard, iy, ix, dx, dy):
    g = card.bev_grid
    x = g.x_range_m[0] + (ix + dx) * g.voxel_size_m[0] * g.output_stride
    y = g.y_range_m[0] + (iy + dy) * g.voxel_size_m[1] * g.output_stride
    return x, y


def axis_with_direction(axis: np.ndarray, direction_yaw: np.ndarray) -> np.ndarray:
    """Yaw (rad, in (-pi, pi]) from an axis head's (2, N) (sin 2 yaw, cos 2 yaw) and a direction: of
    the axis's two headings, the one nearer to direction_yaw (N,)."""
    a = 0.5 * np.arctan2(axis[0], axis[1])
    near = np.abs(np.angle(np.exp(1j * (direction_yaw - a)))) <= np.pi / 2
    yaw = np.where(near, a, a + np.pi)
    return (yaw + np.pi) % (2 * np.pi) - np.pi


def decode_fmdrive_centerpoint(outputs: dict, card: ModelCard) -> list[Object3D]:
    p = card.decoder
    scores, cls, iy, ix = heatmap_peaks(outputs['heatmap'][0], int(p.get('top_k', 100)),
                                        float(p.get('score_threshold', 0.3)))
    offset, size, rot = outputs['offset'][0], outputs['size'][0], outputs['rot'][0]
    x, y = _cell_centres(card, iy, ix, offset[0, iy, ix], offset[1, iy, ix])
    z = outputs['z'][0][0, iy, ix]
    lwh = np.exp(np.minimum(size[:, iy, ix], 10.0)).T
    yaw = np.arctan2(rot[0, iy, ix], rot[1, iy, ix])
    if 'rot_axis' in outputs:
        yaw = axis_with_direction(outputs['rot_axis'][0][:, iy, ix], yaw)
    emb = outputs.get('embedding')
    keep = np.arange(len(scores))
    if float(p.get('circle_nms_dist_m', 0.0)) > 0:
        keep = circle_nms(np.stack([x, y], 1), scores, float(p['circle_nms_dist_m']))
    return [Object3D(center=(x[j], y[j], z[j]), size=lwh[j], yaw_rad=float(yaw[j]), label=card.label(int(cls[j])),
                     score=float(scores[j]),
                     embedding=np.zeros(0, np.float32) if emb is None else unit(emb[0][:, iy[j], ix[j]]),
                     embedding_space='' if emb is None else card.name)
            for j in keep]


def decode_autoware_centerpoint(outputs: dict, card: ModelCard) -> list[Object3D]:
    p = card.decoder
    heat = sigmoid(outputs['heatmap'][0])                                     # [C, H, W] logits in
    C = heat.shape[0]
    cls_map = heat.argmax(0)
    score_map = np.take_along_axis(heat, cls_map[None], 0)[0]
    rot = outputs['rot'][0]
    yaw_norm = np.hypot(rot[0], rot[1])
    thresholds = np.asarray(p.get('yaw_norm_thresholds', [0.0] * C), dtype=np.float32)
    if thresholds.size != C:
        thresholds = np.zeros(C, np.float32)
    score_map = np.where(yaw_norm >= thresholds[cls_map], score_map, 0.0)
    iy, ix = np.nonzero(score_map > float(p.get('score_threshold', 0.35)))
    scores = score_map[iy, ix]
    cls = cls_map[iy, ix]
    reg, dim, vel = outputs['reg'][0], outputs['dim'][0], outputs['vel'][0]
    x, y = _cell_centres(card, iy, ix, reg[0, iy, ix], reg[1, iy, ix])
    z = outputs['height'][0][0, iy, ix]
    width, length, height = np.exp(np.minimum(dim[:3, iy, ix], 10.0))
    yaw = np.arctan2(rot[0, iy, ix], rot[1, iy, ix])
    if p.get('yaw_convention', 'mmdet3d_v0') == 'mmdet3d_v0':
        yaw = -yaw - np.pi / 2                       # as Autoware's box3DToDetectedObject
    yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
    keep = circle_nms(np.stack([x, y], 1), scores, float(p.get('circle_nms_dist_m', 0.5)))
    keep = keep[:int(p.get('top_k', 500))]
    has_twist = bool(p.get('has_twist', False))
    return [Object3D(center=(x[j], y[j], z[j]), size=(length[j], width[j], height[j]), yaw_rad=float(yaw[j]),
                     label=card.label(int(cls[j])), score=float(scores[j]),
                     velocity=(vel[0, iy[j], ix[j]], vel[1, iy[j], ix[j]], 0.0) if has_twist else (0, 0, 0))
            for j in keep]
