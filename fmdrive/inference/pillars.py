"""Points -> pillars -> BEV canvas in numpy, outside the networks (as TensorRT deployments do it).

Shared by the two LiDAR conventions:
- fmdrive_centerpoint feeds the network a canvas [1, F, ny, nx] of per-pillar statistics
  (`bev_canvas`, channels from the card's bev_grid.bev_features);
- autoware_centerpoint feeds its encoder the points of each pillar ([max_pillars, max_points, 9],
  `autoware_pillar_features`) and scatters the encoder's per-pillar output into the head's
  canvas (`scatter_to_bev`), the layout of Autoware lidar_centerpoint's CUDA pre-processing.
Row index = y cell, column index = x cell; cell (iy, ix) covers x_min + ix*vx .. + vx.
Everything is vectorised: no Python loop runs per point or per pillar.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmdrive.inference.card import BevGrid


@dataclass
class PillarIndex:
    """Which points fall in the grid and the flat cell (iy * nx + ix) of each."""
    keep: np.ndarray        # (N,) bool over the input points
    cell: np.ndarray        # (K,) int64 for the kept points
    points: np.ndarray      # (K, D) float32 kept points


def index_points(points: np.ndarray, grid: BevGrid) -> PillarIndex:
    """Points (N, >=3) in the grid's frame; ranges are [min, max) as in Autoware."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f'points must be (N, 3+) x, y, z[, ...], got {pts.shape}')
    (x0, x1), (y0, y1), (z0, z1) = grid.x_range_m, grid.y_range_m, grid.z_range_m
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    keep = (x >= x0) & (x < x1) & (y >= y0) & (y < y1) & (z >= z0) & (z < z1) & np.isfinite(pts[:, :3]).all(1)
    kept = pts[keep]
    ix = np.floor((kept[:, 0] - x0) / grid.voxel_size_m[0]).astype(np.int64)
    iy = np.floor((kept[:, 1] - y0) / grid.voxel_size_m[1]).astype(np.int64)
    ix = np.minimum(ix, grid.nx - 1)    # float rounding right at the max edge
    iy = np.minimum(iy, grid.ny - 1)
    return PillarIndex(keep, iy * grid.nx + ix, kept)


# channels that change sign when the canvas is mirrored across the x axis (y -> -y): the points' mean
# position inside their cell across it (x_offset_mean / y_offset_mean, in cells, -0.5 .. 0.5 about
# the cell's centre: where in a 0.4 m pillar a 0.6 m pedestrian stands, which counts and heights
# do not tell)
MIRROR_Y_NEGATED = ('y_offset_mean',)


def bev_canvas(points: np.ndarray, grid: BevGrid, features=None) -> np.ndarray:
    """[1, F, ny, nx] float32 per-pillar statistics of points (N, 3 or 4: x, y, z[, intensity]).
    Empty cells are 0 in every channel."""
    features = tuple(features or grid.bev_features)
    idx = index_points(points, grid)
    n_cells = grid.nx * grid.ny
    count = np.bincount(idx.cell, minlength=n_cells).astype(np.float32)
    occupied = count > 0
    safe = np.maximum(count, 1.0)
    z = idx.points[:, 2]
    intensity = idx.points[:, 3] if idx.points.shape[1] > 3 else np.zeros_like(z)
    out = np.zeros((len(features), n_cells), dtype=np.float32)
    for i, name in enumerate(features):
        if name == 'count':
            out[i] = count
        elif name == 'log_count':
            out[i] = np.log1p(count)
        elif name in ('z_mean', 'intensity_mean'):
            values = z if name == 'z_mean' else intensity
            out[i] = np.bincount(idx.cell, weights=values, minlength=n_cells) / safe
        elif name in ('z_max', 'intensity_max'):
            acc = np.full(n_cells, -np.inf, dtype=np.float32)
            np.maximum.at(acc, idx.cell, z if name == 'z_max' else intensity)
            out[i] = np.where(occupied, acc, 0.0)
        elif name == 'z_min':
            acc = np.full(n_cells, np.inf, dtype=np.float32)
            np.minimum.at(acc, idx.cell, z)
            out[i] = np.where(occupied, acc, 0.0)
        elif name in ('x_offset_mean', 'y_offset_mean'):
            axis = 0 if name == 'x_offset_mean' else 1
            lo, size = (grid.x_range_m if axis == 0 else grid.y_range_m)[0], grid.voxel_size_m[axis]
            cell_axis = idx.cell % grid.nx if axis == 0 else idx.cell // grid.nx
            u = (idx.points[:, axis].astype(np.float64) - lo) / size
            offset = np.clip(u - cell_axis - 0.5, -0.5, 0.5)    # (the max edge clamp of index_points)
            out[i] = np.bincount(idx.cell, weights=offset, minlength=n_cells) / safe
        else:
            raise ValueError(f'unknown BEV feature {name!r}')
    return out.reshape(1, len(features), grid.ny, grid.nx)


@dataclass
class Pillars:
    """Pillars in Autoware's encoder layout."""
    features: np.ndarray    # (max_pillars, max_points, 9) float32, zero padded
    coords: np.ndarray      # (P, 2) int64 (iy, ix) of the P real pillars (rows 0..P-1 of features)
    num_points: np.ndarray  # (P,) points used per pillar (<= max_points)


def autoware_pillar_features(points: np.ndarray, grid: BevGrid) -> Pillars:
    """Points (N, 4): x, y, z and time lag (0 for a single sweep) -> per-pillar point features
    x, y, z, t, x - mean_x, y - mean_y, z - mean_z, x - centre_x, y - centre_y; the first
    max_points of a pillar in input order are used, at most max_pillars pillars (lowest cell first)."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim == 2 and pts.shape[1] == 3:
        pts = np.concatenate([pts, np.zeros((len(pts), 1), np.float32)], axis=1)
    idx = index_points(pts, grid)
    M, P_max = grid.max_points_per_pillar, grid.max_pillars
    order = np.argsort(idx.cell, kind='stable')           # input order kept inside each pillar
    cell_sorted = idx.cell[order]
    cells, start, counts = np.unique(cell_sorted, return_index=True, return_counts=True)
    cells, start, counts = cells[:P_max], start[:P_max], counts[:P_max]
    pillar_of_sorted = np.repeat(np.arange(len(cells)), counts)
    n_in_kept_pillars = int(counts.sum())
    rank = np.arange(n_in_kept_pillars) - np.repeat(start, counts)
    used = rank < M
    p = pillar_of_sorted[used]
    r = rank[used]
    xyzt = idx.points[order[:n_in_kept_pillars]][used, :4]
    num_points = np.minimum(counts, M)
    sums = np.zeros((len(cells), 3), np.float64)
    np.add.at(sums, p, xyzt[:, :3])
    mean = (sums / num_points[:, None]).astype(np.float32)
    iy, ix = cells // grid.nx, cells % grid.nx
    centre_x = (ix + 0.5) * grid.voxel_size_m[0] + grid.x_range_m[0]
    centre_y = (iy + 0.5) * grid.voxel_size_m[1] + grid.y_range_m[0]
    features = np.zeros((P_max, M, 9), np.float32)
    features[p, r, 0:4] = xyzt
    features[p, r, 4:7] = xyzt[:, :3] - mean[p]
    features[p, r, 7] = xyzt[:, 0] - centre_x[p]
    features[p, r, 8] = xyzt[:, 1] - centre_y[p]
    return Pillars(features, np.stack([iy, ix], axis=1), num_points.astype(np.int32))


def scatter_to_bev(pillar_features: np.ndarray, coords: np.ndarray, grid: BevGrid) -> np.ndarray:
    """Per-pillar vectors (max_pillars, [1,] C) of which the first len(coords) are real ->
    [1, C, ny, nx] float32 canvas, zeros where no pillar is."""
    feats = np.asarray(pillar_features, dtype=np.float32)
    feats = feats.reshape(feats.shape[0], -1)
    coords = np.asarray(coords)
    canvas = np.zeros((feats.shape[1], grid.ny, grid.nx), np.float32)
    canvas[:, coords[:, 0], coords[:, 1]] = feats[:len(coords)].T
    return canvas[None]
