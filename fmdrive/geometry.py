"""Rigid transforms with numpy. Transforms are 4x4 and named T_<to>_<from>: p_to = T_to_from @ p_from."""
from __future__ import annotations

import numpy as np


def quat_to_rot(q_xyzw) -> np.ndarray:
    """Rotation matrix of a unit quaternion given as (x, y, z, w) (ROS order)."""
    x, y, z, w = np.asarray(q_xyzw, dtype=np.float64) / np.linalg.norm(q_xyzw)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rot_to_quat(R) -> np.ndarray:
    """(x, y, z, w) of a rotation matrix (Shepperd's method, numerically safe)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    q = np.array(q)
    return q / np.linalg.norm(q)


def yaw_to_quat(yaw_rad: float) -> np.ndarray:
    return np.array([0.0, 0.0, np.sin(yaw_rad / 2), np.cos(yaw_rad / 2)])


def quat_to_yaw(q_xyzw) -> float:
    x, y, z, w = q_xyzw
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def rot_z(yaw_rad: float) -> np.ndarray:
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_T(R=None, t=None) -> np.ndarray:
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = R
    if t is not None:
        T[:3, 3] = t
    return T


def pose2d_to_T(x: float, y: float, yaw_rad: float, z: float = 0.0) -> np.ndarray:
    """T_world_body of a planar pose."""
    return make_T(rot_z(yaw_rad), [x, y, z])


def inv_T(T) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def transform_points(T, points) -> np.ndarray:
    """Apply T (4x4) to an (N, 3+) array; extra columns (e.g. intensity) pass through."""
    points = np.asarray(points)
    out = points.copy() if points.dtype.kind == 'f' else points.astype(np.float64)
    out[:, :3] = points[:, :3] @ T[:3, :3].T + T[:3, 3]
    return out


def wrap_angle(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def box_corners_bev(center_xy, size_lw, yaw_rad) -> np.ndarray:
    """(4, 2) corners of an oriented rectangle, counter-clockwise starting front-left."""
    l, w = size_lw[0] / 2, size_lw[1] / 2
    local = np.array([[l, w], [-l, w], [-l, -w], [l, -w]])
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return local @ np.array([[c, s], [-s, c]]) + np.asarray(center_xy)[:2]


def box_corners_3d(center, size, yaw_rad) -> np.ndarray:
    """(8, 3) corners of an oriented 3D box: bottom four (as box_corners_bev), then top four."""
    bev = box_corners_bev(center[:2], size[:2], yaw_rad)
    z0, z1 = center[2] - size[2] / 2, center[2] + size[2] / 2
    return np.vstack([np.c_[bev, np.full(4, z0)], np.c_[bev, np.full(4, z1)]])
