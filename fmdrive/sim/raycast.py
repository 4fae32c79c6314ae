"""Vectorised ray casting shared by the camera renderer and the LiDAR: rays vs yawed boxes."""
from __future__ import annotations

import numpy as np

BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                      [0, 4], [1, 5], [2, 6], [3, 7]])
_UNIT_CORNERS = np.array([[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1],
                          [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]], float) / 2


def box_corners(center, size, yaw) -> np.ndarray:
    """(M, 8, 3) corners of M yawed boxes (bottom four, then top four)."""
    local = _UNIT_CORNERS[None] * size[:, None, :]
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], axis=-1) + center[:, None, :]


def ray_box(origin, dirs, center, size, yaw):
    """Slab test of rays (origin (3,), dirs (..., 3), not necessarily unit) against one box.

    Returns (t, face): t = ray parameter of the entry point (inf where missed or the origin is
    inside), face = 2 * axis + (1 if the outward normal is + along that axis) in the box frame.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    o = np.asarray(origin, float) - center
    ox, oy, oz = c * o[0] + s * o[1], -s * o[0] + c * o[1], o[2]
    dx = c * dirs[..., 0] + s * dirs[..., 1]
    dy = -s * dirs[..., 0] + c * dirs[..., 1]
    dz = dirs[..., 2]
    hx, hy, hz = size[0] / 2, size[1] / 2, size[2] / 2
    with np.errstate(divide='ignore', invalid='ignore'):
        ix, iy, iz = 1.0 / dx, 1.0 / dy, 1.0 / dz
        ax, bx = (-hx - ox) * ix, (hx - ox) * ix
        ay, by = (-hy - oy) * iy, (hy - oy) * iy
        az, bz = (-hz - oz) * iz, (hz - oz) * iz
    nx, fx = np.minimum(ax, bx), np.maximum(ax, bx)
    ny, fy = np.minimum(ay, by), np.maximum(ay, by)
    nz, fz = np.minimum(az, bz), np.maximum(az, bz)
    # a ray parallel to a slab and outside it gives nan/inf pairs: treat as a miss
    t_near = np.fmax(np.fmax(nx, ny), nz)
    t_far = np.fmin(np.fmin(fx, fy), fz)
    hit = (t_near <= t_far) & (t_near > 1e-3)
    t = np.where(hit, t_near, np.inf)
    axis = np.where(t_near == nx, 0, np.where(t_near == ny, 1, 2))
    d_axis = np.where(axis == 0, dx, np.where(axis == 1, dy, dz))
    face = 2 * axis + (d_axis < 0)
    return t, face


def face_normals_world(yaw) -> np.ndarray:
    """(M, 6, 3) outward normals in the world of faces 2*axis + positive (box frame)."""
    c, s = np.cos(yaw), np.sin(yaw)
    ex = np.stack([c, s, np.zeros_like(c)], -1)
    ey = np.stack([-s, c, np.zeros_like(c)], -1)
    ez = np.broadcast_to(np.array([0.0, 0.0, 1.0]), ex.shape)
    return np.stack([-ex, ex, -ey, ey, -ez, ez], axis=1)
