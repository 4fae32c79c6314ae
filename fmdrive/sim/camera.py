"""Pinhole camera renderer: per-pixel ray casting in numpy.

Every pixel's ray (through K, from the camera pose in odom) hits, nearest first:
  - oriented boxes (agents, buildings, trees...), z-buffered; each box only tests the pixels of
    its projected screen rectangle (corners clipped at the near plane);
  - the analytic ground plane z = 0, coloured by material (asphalt, lane markings, sidewalk,
    grass) with a faint texture;
  - otherwise the sky gradient.
Shading is Lambertian (sun direction) plus ambient. Domain knobs (CameraSpec): fog (blend to
grey with depth), night (dark, lit by the ego's headlights), Gaussian noise, RGB gain shift.
"""
from __future__ import annotations

import numpy as np

from fmdrive.sim.raycast import BOX_EDGES, box_corners, face_normals_world, ray_box
from fmdrive.sim.world import ASPHALT, GRASS, MARKING, SIDEWALK

GROUND_RGB = np.zeros((4, 3), np.float32)
GROUND_RGB[GRASS] = (78, 118, 52)
GROUND_RGB[SIDEWALK] = (150, 148, 142)
GROUND_RGB[ASPHALT] = (88, 88, 92)
GROUND_RGB[MARKING] = (232, 232, 226)
SKY_HORIZON_RGB = np.array([205, 216, 232], np.float32)
SKY_ZENITH_RGB = np.array([85, 135, 205], np.float32)
FOG_RGB = np.array([178, 180, 184], np.float32)
NIGHT_SKY_RGB = np.array([6, 8, 18], np.float32)
SUN_DIR = np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])
AMBIENT, DIFFUSE = 0.45, 0.6
NEAR_M, FAR_M = 0.1, 600.0


class CameraRenderer:
    """Renders RGB images of a World + boxes through a pinhole model (no distortion)."""

    def __init__(self, K, width, height, T_base_camera, camera_spec, rng: np.random.Generator):
        self.K = np.asarray(K, float)
        self.width, self.height = int(width), int(height)
        self.T_base_camera = np.asarray(T_base_camera, float)
        self.spec = camera_spec
        self.rng = rng
        u, v = np.meshgrid(np.arange(self.width) + 0.0, np.arange(self.height) + 0.0)
        Kinv = np.linalg.inv(self.K)
        pix = np.stack([u, v, np.ones_like(u)], -1)
        self.dirs_camera = (pix @ Kinv.T).astype(np.float32)   # z = 1: ray parameter = depth

    def render(self, T_odom_base, world, boxes):
        """(image (H, W, 3) uint8, owner (H, W) int32 agent id per pixel (0 none), depth_m (H, W)
        camera z depth, inf for sky)."""
        T_odom_cam = T_odom_base @ self.T_base_camera
        R, o = T_odom_cam[:3, :3], T_odom_cam[:3, 3]
        dirs = self.dirs_camera @ R.T.astype(np.float32)           # (H, W, 3) world
        H, W = self.height, self.width
        depth = np.full((H, W), np.inf, np.float32)
        box_idx = np.full((H, W), -1, np.int32)
        face = np.zeros((H, W), np.int8)

        for i, (v0, v1, u0, u1) in self._box_rects(T_odom_cam, boxes):
            sub = dirs[v0:v1, u0:u1]
            t, f = ray_box(o, sub, boxes.center[i], boxes.size[i], boxes.yaw[i])
            dsub = depth[v0:v1, u0:u1]
            closer = t < dsub
            if closer.any():
                dsub[closer] = t[closer]
                box_idx[v0:v1, u0:u1][closer] = i
                face[v0:v1, u0:u1][closer] = f[closer]

        rgb = np.empty((H, W, 3), np.float32)
        dz = dirs[..., 2]
        with np.errstate(divide='ignore'):
            t_ground = np.where(dz < -1e-6, -o[2] / dz, np.inf)
        ground = (t_ground < depth) & (t_ground < FAR_M)
        depth[ground] = t_ground[ground]
        gx = o[0] + t_ground[ground] * dirs[..., 0][ground]
        gy = o[1] + t_ground[ground] * dirs[..., 1][ground]
        mat = world.ground_material(gx, gy)
        texture = _texture(gx, gy, t_ground[ground])
        rgb[ground] = GROUND_RGB[mat] * ((AMBIENT + DIFFUSE * SUN_DIR[2]) * texture)[:, None]

        hit_box = (box_idx >= 0) & ~ground
        if len(boxes):
            shade = AMBIENT + DIFFUSE * np.clip(face_normals_world(boxes.yaw) @ SUN_DIR, 0, None)
            bi, fi = box_idx[hit_box], face[hit_box]
            rgb[hit_box] = boxes.colour[bi] * shade[bi, fi][:, None].astype(np.float32)

        sky = ~ground & ~hit_box
        depth[sky] = np.inf
        norm = np.linalg.norm(dirs, axis=-1)
        elev = np.clip(dz / norm * 3.0, 0.0, 1.0)[sky][:, None]
        rgb[sky] = SKY_HORIZON_RGB * (1 - elev) + SKY_ZENITH_RGB * elev

        dist = np.where(np.isfinite(depth), depth * norm, np.inf)
        self._weather(rgb, dist, dirs, o, T_odom_base, sky)
        owner = np.where(box_idx >= 0, boxes.owner[np.maximum(box_idx, 0)] if len(boxes) else 0, 0)
        owner[ground] = 0
        return _finish(rgb), owner.astype(np.int32), depth

    # ------------------------------------------------------------ helpers
    def _box_rects(self, T_odom_cam, boxes):
        """(index, (v0, v1, u0, u1)) of every box that may be visible (pixel slices, 1 px margin)."""
        idx, rect = self._project(T_odom_cam, boxes.center, boxes.size, boxes.yaw)
        if len(idx) == 0:
            return []
        u0 = np.clip(np.floor(rect[:, 0]) - 1, 0, self.width).astype(int)
        v0 = np.clip(np.floor(rect[:, 1]) - 1, 0, self.height).astype(int)
        u1 = np.clip(np.ceil(rect[:, 2]) + 2, 0, self.width).astype(int)
        v1 = np.clip(np.ceil(rect[:, 3]) + 2, 0, self.height).astype(int)
        ok = (u1 > u0) & (v1 > v0)
        return [(int(idx[j]), (v0[j], v1[j], u0[j], u1[j])) for j in np.flatnonzero(ok)]

    def _project(self, T_odom_cam, center, size, yaw):
        """Indices of boxes with a part in front of the near plane and their unclipped pixel
        rectangles (u_min, v_min, u_max, v_max): corners in front plus the points where box edges
        cross the near plane, projected."""
        if len(yaw) == 0:
            return np.zeros(0, int), np.zeros((0, 4))
        T_cam_odom = np.linalg.inv(T_odom_cam)
        centres_cam = center @ T_cam_odom[:3, :3].T + T_cam_odom[:3, 3]
        radius = np.linalg.norm(size, axis=1) / 2
        keep = (centres_cam[:, 2] > -radius) & (np.linalg.norm(centres_cam, axis=1) - radius < FAR_M)
        idx = np.flatnonzero(keep)
        if len(idx) == 0:
            return idx, np.zeros((0, 4))
        corners = box_corners(center[idx], size[idx], yaw[idx])
        cam = corners @ T_cam_odom[:3, :3].T + T_cam_odom[:3, 3]          # (m, 8, 3)
        p0, p1 = cam[:, BOX_EDGES[:, 0]], cam[:, BOX_EDGES[:, 1]]          # (m, 12, 3)
        z0, z1 = p0[..., 2] - NEAR_M, p1[..., 2] - NEAR_M
        crosses = z0 * z1 < 0
        with np.errstate(divide='ignore', invalid='ignore'):
            a = np.where(crosses, z0 / (z0 - z1), 0.0)
        pc = p0 + a[..., None] * (p1 - p0)
        pts = np.concatenate([cam, pc], axis=1)                             # (m, 20, 3)
        valid = np.concatenate([cam[..., 2] >= NEAR_M, crosses], axis=1)
        z = np.where(valid, np.maximum(pts[..., 2], NEAR_M), 1.0)
        u = self.K[0, 0] * pts[..., 0] / z + self.K[0, 2]
        v = self.K[1, 1] * pts[..., 1] / z + self.K[1, 2]
        big = 1e9
        rect = np.stack([np.where(valid, u, big).min(1), np.where(valid, v, big).min(1),
                         np.where(valid, u, -big).max(1), np.where(valid, v, -big).max(1)], 1)
        ok = valid.any(1)
        return idx[ok], rect[ok]

    def project_boxes(self, T_odom_base, center, size, yaw) -> np.ndarray:
        """(M, 4) pixel rectangles (u_min, v_min, u_max, v_max) of boxes clipped to the image;
        rows of nan for boxes entirely behind the camera or outside the image."""
        out = np.full((len(yaw), 4), np.nan)
        idx, rect = self._project(T_odom_base @ self.T_base_camera, np.asarray(center, float),
                                  np.asarray(size, float), np.asarray(yaw, float))
        if len(idx):
            rect = rect.copy()
            rect[:, [0, 2]] = np.clip(rect[:, [0, 2]], 0, self.width - 1)
            rect[:, [1, 3]] = np.clip(rect[:, [1, 3]], 0, self.height - 1)
            inside = (rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1])
            out[idx[inside]] = rect[inside]
        return out

    def _weather(self, rgb, dist, dirs, o, T_odom_base, sky):
        spec = self.spec
        finite = np.isfinite(dist)
        haze = np.where(finite, 1.0 - np.exp(-dist / 900.0), 0.0).astype(np.float32)
        rgb += (SKY_HORIZON_RGB - rgb) * haze[..., None]
        if spec.night:
            light = np.full(dist.shape, 0.07, np.float32)
            pts = o + np.where(finite, dist / np.linalg.norm(dirs, axis=-1), 0)[..., None] * dirs
            T_base_odom = np.linalg.inv(T_odom_base)
            pb = pts @ T_base_odom[:3, :3].T + T_base_odom[:3, 3]
            fwd = pb[..., 0] - 3.6
            ang = np.arctan2(np.abs(pb[..., 1]), np.maximum(fwd, 1e-3))
            beam = np.exp(-(ang / 0.45) ** 2) * np.exp(-np.maximum(fwd, 0) / 40.0) * 2.2
            light += np.where(finite & (fwd > 0) & (pb[..., 2] < 2.5), beam, 0).astype(np.float32)
            rgb *= light[..., None]
            rgb[sky] = NIGHT_SKY_RGB
        if spec.fog > 0:
            f = np.where(finite, 1.0 - np.exp(-dist * spec.fog * 0.05), min(1.0, 1.5 * spec.fog))
            fog_rgb = FOG_RGB * (0.12 if spec.night else 1.0)
            rgb += (fog_rgb - rgb) * f[..., None].astype(np.float32)
        rgb *= np.asarray(spec.colour_shift, np.float32)
        if spec.noise_std > 0:
            rgb += self.rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(spec.noise_std)


def _texture(x, y, dist):
    """Multiplicative grain on the ground that fades with distance (hides aliasing)."""
    n = np.sin(np.floor(x * 4.0) * 12.9898 + np.floor(y * 4.0) * 78.233) * 43758.5453
    n = n - np.floor(n)
    return (1.0 + (n - 0.5) * 0.16 * np.exp(-dist / 25.0)).astype(np.float32)


def _finish(rgb):
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
