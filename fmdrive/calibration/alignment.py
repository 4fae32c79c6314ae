"""How well a LiDAR-camera extrinsic aligns depth edges with image edges (the core of `calib-check`).

After Levinson & Thrun, "Automatic online calibration of cameras and lasers" (RSS 2013):

- image edges: gradient magnitude of the grey image, spread a few pixels by an inverse distance
  transform D = alpha * E + (1 - alpha) * max_q E(q) * gamma^dist(p, q) (L1 distance; computed
  exactly with two recursive scans per axis), so a point a pixel or two off an edge still counts;
- LiDAR depth discontinuities: along each scan ring (ordered by azimuth) a point whose neighbour
  is farther by jump_m is the near side of an occlusion edge; it should land on an image edge.
  Its weight is sqrt(jump_m);
- score = weighted mean of D at the projected discontinuity points / mean of D over the image.
  1.0 is what randomly placed points get; an aligned extrinsic scores clearly above it, and above
  every small perturbation of itself (that is what `perturbation_sweep` checks).

A perturbation that moves the projected edge points by less than a few pixels (on the sample:
10 cm along the optical axis, a median 1.6 px) cannot be seen in one frame; the sweep reports each
perturbation's median pixel shift so the verdict can leave those out and say so.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from fmdrive.calibration.camera_model import CalibrationError, CameraModel
from fmdrive.geometry import make_T, transform_points

MIN_JUMP_M = 0.3            # range jump that makes a point a depth discontinuity
RING_GAP_DEG = 0.05         # elevation gap that separates two scan rings (no ring field given)
MAX_AZIMUTH_GAP_DEG = 1.0   # neighbours farther apart than this (no return between) are not compared
EDGE_GAMMA = 0.8            # inverse distance transform decay per pixel (L1)
EDGE_ALPHA = 1.0 / 3.0      # weight of the raw edge strength in the spread edge map
MIN_SHIFT_PX = 3.0          # a perturbation must move edge points at least this much to be judged


# ---------------------------------------------------------------- image side
def image_edge_map(image_rgb, gamma: float = EDGE_GAMMA, alpha: float = EDGE_ALPHA) -> np.ndarray:
    """(H, W) float32 edge strength: Sobel gradient magnitude of the grey image, spread by an
    inverse distance transform (each pixel takes the strongest edge nearby, decayed by gamma^d)."""
    image = np.asarray(image_rgb)
    if image.ndim == 3:
        grey = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif image.ndim == 2:
        grey = image.astype(np.float32)
    else:
        raise ValueError(f'image must be (H, W) or (H, W, 3), got shape {image.shape}')
    edges = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    spread = edges.copy()
    for axis in (0, 1):  # max_q E(q) gamma^(|dx|+|dy|) is separable: 1D scans along each axis
        lines = np.moveaxis(spread, axis, 0)
        for i in range(1, lines.shape[0]):
            np.maximum(lines[i], gamma * lines[i - 1], out=lines[i])
        for i in range(lines.shape[0] - 2, -1, -1):
            np.maximum(lines[i], gamma * lines[i + 1], out=lines[i])
    return (alpha * edges + (1 - alpha) * spread).astype(np.float32)


# ---------------------------------------------------------------- LiDAR side
def scan_rings(points_lidar, ring_gap_deg: float = RING_GAP_DEG) -> np.ndarray:
    """(N,) ring index of each point from its elevation angle: rings are separated by gaps of
    more than ring_gap_deg in the sorted elevations (a spinning LiDAR's beams are discrete)."""
    xyz = np.asarray(points_lidar, dtype=np.float64)[:, :3]
    elevation = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    order = np.argsort(elevation)
    rings = np.empty(len(xyz), np.int64)
    rings[order] = np.r_[0, np.cumsum(np.diff(elevation[order]) > ring_gap_deg)]
    if len(xyz) and rings.max() > 512:
        # elevations too noisy to cluster (not a multi-beam spinning scan): fixed 0.2 deg bins
        rings = np.floor((elevation - elevation.min()) / 0.2).astype(np.int64)
    return rings


def depth_discontinuities(points_lidar, rings=None, min_jump_m: float = MIN_JUMP_M,
                          max_azimuth_gap_deg: float = MAX_AZIMUTH_GAP_DEG):
    """Near-side points of occlusion edges along the scan rings.

    Returns (index (M,) into points_lidar, jump_m (M,)): for each such point, how much farther
    its farther ring neighbour is. rings: (N,) beam index per point (the PointCloud2 'ring'
    field) or None to derive it from elevation angles.
    """
    xyz = np.asarray(points_lidar, dtype=np.float64)[:, :3]
    n = len(xyz)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0)
    rings = scan_rings(xyz) if rings is None else np.asarray(rings).reshape(-1)
    if len(rings) != n:
        raise ValueError(f'rings has {len(rings)} entries for {n} points')
    range_m = np.linalg.norm(xyz, axis=1)
    azimuth = np.arctan2(xyz[:, 1], xyz[:, 0])
    order = np.lexsort((azimuth, rings))
    r, ring, az = range_m[order], rings[order], azimuth[order]
    adjacent = (ring[1:] == ring[:-1]) & (np.diff(az) < np.radians(max_azimuth_gap_deg))
    step = np.diff(r)                                   # r[i+1] - r[i]
    jump_next = np.where(adjacent, step, 0.0)           # next neighbour farther by
    jump_prev = np.where(adjacent, -step, 0.0)          # previous neighbour farther by
    jump = np.maximum(np.r_[jump_next, 0.0], np.r_[0.0, jump_prev])
    keep = jump > min_jump_m
    return order[keep], jump[keep]


# ---------------------------------------------------------------- score
def _check_image(image_rgb, camera: CameraModel) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.ndim not in (2, 3) or image.shape[:2] != (camera.height, camera.width):
        raise CalibrationError(
            f'the image is {image.shape[1] if image.ndim >= 2 else "?"}x{image.shape[0]} but the '
            f'camera_info says {camera.width}x{camera.height}; use the camera_info of this image '
            f'(CameraModel.scaled() for a resized one)')
    return image


def edge_score(edge_map, camera: CameraModel, T_camera_lidar, edge_points_lidar, weights) -> float:
    """Weighted mean edge strength at the projected edge points, over the image's mean (0 if none land)."""
    uv, _, in_image = camera.project(transform_points(np.asarray(T_camera_lidar, float),
                                                      np.asarray(edge_points_lidar, float)[:, :3]))
    if not in_image.any():
        return 0.0
    pix = np.rint(uv[in_image]).astype(np.int64)
    w = np.asarray(weights, float)[in_image]
    values = edge_map[pix[:, 1], pix[:, 0]]
    return float((values * w).sum() / w.sum() / max(float(edge_map.mean()), 1e-12))


def _prepare(points_lidar, image_rgb, camera, rings):
    image = _check_image(image_rgb, camera)
    points = np.asarray(points_lidar)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f'points_lidar must be (N, 3+), got shape {points.shape}')
    index, jump_m = depth_discontinuities(points, rings)
    return image_edge_map(image), points[index, :3].astype(np.float64), np.sqrt(jump_m)


def alignment_score(points_lidar, image_rgb, camera: CameraModel, T_camera_lidar, rings=None) -> float:
    """Edge alignment of one LiDAR sweep with one image under T_camera_lidar (higher = better;
    1.0 = no better than random placement)."""
    edge_map, edge_points, weights = _prepare(points_lidar, image_rgb, camera, rings)
    return edge_score(edge_map, camera, T_camera_lidar, edge_points, weights)


def perturbations(rot_deg=(1, 2), trans_m=(0.1,)) -> list[tuple[str, np.ndarray]]:
    """(name, delta) pairs; the perturbed extrinsic is delta @ T_camera_lidar, i.e. a rotation
    about / a shift along the camera's own optical axes (x right, y down, z forward)."""
    out = []
    for axis, name in enumerate('xyz'):
        unit = np.eye(3)[axis]
        for deg in rot_deg:
            for sign in (1, -1):
                a = np.radians(sign * deg)
                K = np.array([[0, -unit[2], unit[1]], [unit[2], 0, -unit[0]], [-unit[1], unit[0], 0]])
                R = np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K  # Rodrigues
                out.append((f'rot_{name}{"+" if sign > 0 else "-"}{deg:g}deg', make_T(R)))
        for t in trans_m:
            for sign in (1, -1):
                out.append((f'trans_{name}{"+" if sign > 0 else "-"}{t * 100:g}cm', make_T(t=sign * t * unit)))
    return out


def perturbation_sweep(points_lidar, image_rgb, camera: CameraModel, T_camera_lidar, rot_deg=(1, 2),
                       trans_m=(0.1,), rings=None, min_shift_px: float = MIN_SHIFT_PX) -> list[dict]:
    """Score of the given extrinsic (first entry, perturbation 'none') and of each perturbation.

    Each dict: perturbation, score, shift_px (median image shift of the in-image edge points),
    observable (shift_px >= min_shift_px: a perturbation this frame can tell apart).
    """
    T = np.asarray(T_camera_lidar, dtype=np.float64)
    edge_map, edge_points, weights = _prepare(points_lidar, image_rgb, camera, rings)
    uv0, _, in0 = camera.project(transform_points(T, edge_points))
    rows = [{'perturbation': 'none', 'score': edge_score(edge_map, camera, T, edge_points, weights),
             'shift_px': 0.0, 'observable': True}]
    for name, delta in perturbations(rot_deg, trans_m):
        T_pert = delta @ T
        uv, _, in_pert = camera.project(transform_points(T_pert, edge_points))
        both = in0 & in_pert
        shift = float(np.median(np.linalg.norm(uv[both] - uv0[both], axis=1))) if both.any() else 0.0
        rows.append({'perturbation': name,
                     'score': edge_score(edge_map, camera, T_pert, edge_points, weights),
                     'shift_px': round(shift, 2), 'observable': shift >= min_shift_px})
    return rows


# ---------------------------------------------------------------- overlay
def depth_colours(depth_m, near_m: float = 3.0, far_m: float = 60.0) -> np.ndarray:
    """(N, 3) uint8: red near -> green -> blue far (log scale)."""
    t = np.clip(np.log(np.maximum(depth_m, 1e-3) / near_m) / np.log(far_m / near_m), 0, 1)
    return (255 * np.stack([1 - t, 1 - np.abs(2 * t - 1), t], axis=1)).astype(np.uint8)


def render_overlay(points_lidar, image_rgb, camera: CameraModel, T_camera_lidar,
                   radius_px: int = 2) -> np.ndarray:
    """Copy of the image with the projected points drawn as small dots coloured by depth
    (where dots overlap, the nearest point's colour wins)."""
    image = _check_image(image_rgb, camera)
    out = np.array(image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2),
                   dtype=np.uint8)  # a contiguous copy, so the flat view below writes into it
    uv, depth, in_image = camera.project(transform_points(np.asarray(T_camera_lidar, float),
                                                          np.asarray(points_lidar, float)[:, :3]))
    pix = np.rint(uv[in_image]).astype(np.int64)
    depth_m = depth[in_image]
    colours = depth_colours(depth_m)
    d = np.arange(-radius_px, radius_px + 1)
    du, dv = np.meshgrid(d, d)
    disc = du * du + dv * dv <= radius_px * radius_px + radius_px  # round dot
    du, dv = du[disc], dv[disc]
    u = np.clip(pix[:, 0:1] + du, 0, camera.width - 1)            # (M, dots)
    v = np.clip(pix[:, 1:2] + dv, 0, camera.height - 1)
    flat = (v * camera.width + u).reshape(-1)
    dot_depth = np.repeat(depth_m, len(du))
    nearest = np.full(camera.width * camera.height, np.inf)
    np.minimum.at(nearest, flat, dot_depth)                        # z-buffer: the nearest dot wins
    wins = dot_depth == nearest[flat]
    out.reshape(-1, 3)[flat[wins]] = np.repeat(colours, len(du), axis=0)[wins]
    return out
