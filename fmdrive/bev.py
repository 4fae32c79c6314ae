"""Oriented boxes in the bird's-eye view, vectorised: corners, exact intersection area (convex
polygon clipping), IoU, distance. Used at run time (tracker, planner) and by evaluation.

Boxes are (N, 5) rows of x, y, length, width, yaw_rad, or lists of Object3D.
"""
from __future__ import annotations

import numpy as np

from fmdrive.objects import Object3D

_EPS = 1e-9


def as_bev_boxes(boxes) -> np.ndarray:
    """(N, 5) x, y, length, width, yaw_rad from a list of Object3D, one Object3D or an array."""
    if isinstance(boxes, Object3D):
        boxes = [boxes]
    if isinstance(boxes, (list, tuple)) and boxes and isinstance(boxes[0], Object3D):
        return np.array([[o.center[0], o.center[1], o.size[0], o.size[1], o.yaw_rad]
                         for o in boxes], dtype=np.float64)
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 5))
    arr = arr.reshape(-1, arr.shape[-1])
    if arr.shape[1] != 5:
        raise ValueError(f'BEV boxes must be (N, 5) rows of x, y, length, width, yaw_rad; '
                         f'got shape {np.shape(boxes)}')
    return arr


def bev_corners(boxes) -> np.ndarray:
    """(N, 4, 2) counter-clockwise corners (same order as geometry.box_corners_bev)."""
    b = as_bev_boxes(boxes)
    hl, hw = b[:, 2:3] / 2, b[:, 3:4] / 2
    lx = np.concatenate([hl, -hl, -hl, hl], axis=1)                  # (N, 4)
    ly = np.concatenate([hw, hw, -hw, -hw], axis=1)
    c, s = np.cos(b[:, 4:5]), np.sin(b[:, 4:5])
    return np.stack([b[:, 0:1] + c * lx - s * ly, b[:, 1:2] + s * lx + c * ly], axis=-1)


def _cross2(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside_convex(points, poly):
    """(P, Q) bool: points (P, Q, 2) inside (or on) the CCW convex quads poly (P, 4, 2)."""
    edge = np.roll(poly, -1, axis=1) - poly                          # (P, 4, 2)
    rel = points[:, :, None, :] - poly[:, None, :, :]                # (P, Q, 4, 2)
    cr = _cross2(edge[:, None], rel)                                 # (P, Q, 4)
    scale = np.linalg.norm(edge, axis=-1).max(axis=1)[:, None, None] + 1.0
    return np.all(cr >= -1e-9 * scale * scale, axis=-1)


def intersection_area_pairs(corners_a: np.ndarray, corners_b: np.ndarray) -> np.ndarray:
    """(P,) exact intersection area of the convex quads corners_a[i] and corners_b[i] (P, 4, 2).

    The intersection of two convex polygons is the convex hull of: A's corners inside B, B's
    corners inside A, and the edge-edge crossings. All of them are vertices of that polygon, so an
    angular sort around their mean and a triangle fan give its area exactly, for all pairs at once.
    """
    P = len(corners_a)
    if P == 0:
        return np.zeros(0)
    a_in_b = _inside_convex(corners_a, corners_b)                    # (P, 4)
    b_in_a = _inside_convex(corners_b, corners_a)
    # edge i of A (p + t r) against edge j of B (q + u s)
    p = corners_a[:, :, None, :]
    r = (np.roll(corners_a, -1, axis=1) - corners_a)[:, :, None, :]
    q = corners_b[:, None, :, :]
    s = (np.roll(corners_b, -1, axis=1) - corners_b)[:, None, :, :]
    denom = _cross2(r, s)                                            # (P, 4, 4)
    ok = np.abs(denom) > _EPS
    safe = np.where(ok, denom, 1.0)
    t = _cross2(q - p, s) / safe
    u = _cross2(q - p, r) / safe
    hit = ok & (t >= -1e-12) & (t <= 1 + 1e-12) & (u >= -1e-12) & (u <= 1 + 1e-12)
    cross_pts = (p + t[..., None] * r).reshape(P, 16, 2)

    pts = np.concatenate([corners_a, corners_b, cross_pts], axis=1)  # (P, 24, 2)
    valid = np.concatenate([a_in_b, b_in_a, hit.reshape(P, 16)], axis=1)
    n_valid = valid.sum(axis=1)
    center = (pts * valid[..., None]).sum(axis=1) / np.maximum(n_valid, 1)[:, None]
    rel = pts - center[:, None, :]
    ang = np.where(valid, np.arctan2(rel[..., 1], rel[..., 0]), np.inf)
    order = np.argsort(ang, axis=1)
    rel = np.take_along_axis(rel, order[..., None], axis=1)
    valid_sorted = np.take_along_axis(valid, order, axis=1)
    # invalid slots (sorted to the end) repeat the first vertex: their fan terms vanish
    rel = np.where(valid_sorted[..., None], rel, rel[:, :1, :])
    area = 0.5 * _cross2(rel, np.roll(rel, -1, axis=1)).sum(axis=1)
    return np.where(n_valid >= 3, np.abs(area), 0.0)


def bev_iou_pairs(boxes_a, boxes_b) -> np.ndarray:
    """(P,) IoU of boxes_a[i] with boxes_b[i] (both (P, 5) or lists of Object3D)."""
    a, b = as_bev_boxes(boxes_a), as_bev_boxes(boxes_b)
    if len(a) != len(b):
        raise ValueError(f'bev_iou_pairs needs as many boxes in a as in b ({len(a)} != {len(b)})')
    inter = intersection_area_pairs(bev_corners(a), bev_corners(b))
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > _EPS, inter / np.maximum(union, _EPS), 0.0)


def bev_iou(box_a, box_b) -> float:
    """IoU of two oriented BEV boxes (Object3D or x, y, length, width, yaw_rad), exact."""
    return float(bev_iou_pairs(as_bev_boxes(box_a)[:1], as_bev_boxes(box_b)[:1])[0])


def iou_matrix(boxes_a, boxes_b) -> np.ndarray:
    """(N, M) pairwise BEV IoU. Pairs whose circumscribed circles are apart are skipped (0)."""
    a, b = as_bev_boxes(boxes_a), as_bev_boxes(boxes_b)
    out = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return out
    ra = 0.5 * np.hypot(a[:, 2], a[:, 3])
    rb = 0.5 * np.hypot(b[:, 2], b[:, 3])
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    ii, jj = np.nonzero(d < ra[:, None] + rb[None, :])
    if len(ii):
        out[ii, jj] = bev_iou_pairs(a[ii], b[jj])
    return out


def polygon_distance_pairs(corners_a: np.ndarray, corners_b: np.ndarray) -> np.ndarray:
    """(P,) smallest distance between convex quads a[i] and b[i] (0 when they overlap)."""
    def vertex_to_edges(v, poly):                                   # (P,4,2), (P,4,2) -> (P,)
        e0 = poly[:, None, :, :]
        e = (np.roll(poly, -1, axis=1) - poly)[:, None, :, :]
        w = v[:, :, None, :] - e0
        t = np.clip((w * e).sum(-1) / np.maximum((e * e).sum(-1), _EPS), 0.0, 1.0)
        return np.linalg.norm(w - t[..., None] * e, axis=-1).min(axis=(1, 2))
    dist = np.minimum(vertex_to_edges(corners_a, corners_b), vertex_to_edges(corners_b, corners_a))
    overlap = intersection_area_pairs(corners_a, corners_b) > 1e-9
    overlap |= _inside_convex(corners_a, corners_b).any(axis=1)
    overlap |= _inside_convex(corners_b, corners_a).any(axis=1)
    return np.where(overlap, 0.0, dist)
