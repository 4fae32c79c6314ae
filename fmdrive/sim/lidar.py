"""Spinning LiDAR ray-caster in numpy.

Beams (16/32/64/128) are spread evenly over the vertical field of view, each sweeping 360 deg
at h_res_deg. Rays hit the ground plane z = 0 (intensity by material: retro-reflective lane
markings bright, asphalt dark) and yawed boxes (slab test in each box frame; each box only
tests the beams and azimuth columns its bounding angles can cover). Range noise is Gaussian,
dropout is uniform random, intensity falls off with range and has noise, and is reported on the
spec's scale (intensity_scale: 1 = 0..255, 1/255 = 0..1). Foliage boxes are porous: some rays
pass through, the others end at a random depth inside.

No motion distortion: all rays of a sweep are cast from the pose at the frame stamp.
"""
from __future__ import annotations

import numpy as np

from fmdrive.sim.raycast import box_corners, ray_box
from fmdrive.sim.world import ASPHALT, GRASS, MARKING, SIDEWALK

GROUND_INTENSITY = np.zeros(4, np.float32)
GROUND_INTENSITY[GRASS] = 40.0        # vegetation
GROUND_INTENSITY[SIDEWALK] = 25.0
GROUND_INTENSITY[ASPHALT] = 15.0
GROUND_INTENSITY[MARKING] = 200.0     # retro-reflective paint
BRIGHT_END_GAIN = 2.0                 # licence plates and lights on car fronts/backs
FOLIAGE_PASS_FRACTION = 0.35          # rays that pass through a hedge or bush
FOLIAGE_DEPTH_M = 0.9                 # the others end up to this deep inside it


class LidarScanner:
    """Casts one sweep per call; points come back in the LiDAR frame."""

    def __init__(self, lidar_spec, T_base_lidar, rng: np.random.Generator):
        self.spec = lidar_spec
        self.T_base_lidar = np.asarray(T_base_lidar, float)
        self.rng = rng
        self.beams = int(lidar_spec.beams)
        self.elevation_rad = np.deg2rad(np.linspace(lidar_spec.vfov_deg[0], lidar_spec.vfov_deg[1],
                                                    self.beams))
        self.columns = int(round(360.0 / lidar_spec.h_res_deg))
        self.azimuth_rad = np.arange(self.columns) * (2 * np.pi / self.columns)
        ce, se = np.cos(self.elevation_rad)[:, None], np.sin(self.elevation_rad)[:, None]
        self.dirs_lidar = np.stack([ce * np.cos(self.azimuth_rad)[None], ce * np.sin(self.azimuth_rad)[None],
                                    np.broadcast_to(se, (self.beams, self.columns))], -1)
        R = self.T_base_lidar[:3, :3]
        self._level = abs(R[2, 2] - 1.0) < 1e-6   # only yawed: beam culling by elevation is exact

    def scan(self, T_odom_base, world, boxes):
        """(points (N, 5) float32 x, y, z, intensity, ring in the LiDAR frame,
        owner (N,) int32 agent id of each point, 0 = ground/scenery)."""
        spec = self.spec
        T_odom_lidar = T_odom_base @ self.T_base_lidar
        R, o = T_odom_lidar[:3, :3], T_odom_lidar[:3, 3]
        dirs = self.dirs_lidar @ R.T                                   # (B, C, 3) world, unit
        B, C = self.beams, self.columns
        rng_m = np.full((B, C), np.inf)
        intensity = np.zeros((B, C), np.float32)
        owner = np.zeros((B, C), np.int32)

        dz = dirs[..., 2]
        with np.errstate(divide='ignore'):
            t_ground = np.where(dz < -1e-6, -o[2] / dz, np.inf)
        ground = t_ground < spec.max_range_m
        rng_m[ground] = t_ground[ground]

        for i, b0, b1, cols in self._candidates(T_odom_lidar, o, boxes):
            for c0, c1 in cols:
                t, face = ray_box(o, dirs[b0:b1, c0:c1], boxes.center[i], boxes.size[i],
                                  boxes.yaw[i])
                if boxes.porous[i]:   # foliage: a third of the rays pass, the rest end inside
                    hit = np.isfinite(t)
                    passes = self.rng.random(t.shape) < FOLIAGE_PASS_FRACTION
                    depth = self.rng.uniform(0.0, FOLIAGE_DEPTH_M, t.shape)
                    t = np.where(hit & ~passes, t + depth, np.inf)
                sub = rng_m[b0:b1, c0:c1]
                closer = t < sub
                if not closer.any():
                    continue
                sub[closer] = t[closer]
                gain = np.where(boxes.bright_ends[i] & (face < 2), BRIGHT_END_GAIN, 1.0)
                intensity[b0:b1, c0:c1][closer] = (boxes.intensity[i] * gain)[closer]
                owner[b0:b1, c0:c1][closer] = boxes.owner[i]

        on_ground = ground & (rng_m == t_ground)
        gx = o[0] + t_ground[on_ground] * dirs[..., 0][on_ground]
        gy = o[1] + t_ground[on_ground] * dirs[..., 1][on_ground]
        intensity[on_ground] = GROUND_INTENSITY[world.ground_material(gx, gy)]
        owner[on_ground] = 0

        keep = rng_m < spec.max_range_m
        if spec.dropout > 0:
            keep &= self.rng.random((B, C)) >= spec.dropout
        r = rng_m[keep]
        if spec.range_noise_m > 0:
            r = r + self.rng.normal(0.0, spec.range_noise_m, r.shape)
        falloff = 1.0 - 0.35 * np.clip(r / spec.max_range_m, 0, 1)
        inten = np.clip(intensity[keep] * falloff + self.rng.normal(0.0, 2.0, r.shape), 0, 255)
        if spec.intensity_scale != 1.0:   # another sensor's scale (1/255: reflectivity 0..1)
            inten = inten * spec.intensity_scale
        ring = np.broadcast_to(np.arange(B)[:, None], (B, C))[keep]
        xyz = self.dirs_lidar[keep] * r[:, None]
        points = np.column_stack([xyz, inten, ring]).astype(np.float32)
        return points, owner[keep]

    def _candidates(self, T_odom_lidar, o, boxes):
        """(box index, beam slice, column slices) of the boxes the sweep can hit."""
        if not len(boxes):
            return []
        spec = self.spec
        rel = boxes.center - o
        c, s = np.cos(boxes.yaw), np.sin(boxes.yaw)
        lx, ly = np.abs(c * rel[:, 0] + s * rel[:, 1]), np.abs(-s * rel[:, 0] + c * rel[:, 1])
        d_min = np.hypot(np.maximum(lx - boxes.size[:, 0] / 2, 0), np.maximum(ly - boxes.size[:, 1] / 2, 0))
        near = np.flatnonzero(d_min < spec.max_range_m)
        if len(near) == 0:
            return []
        T_lidar_odom = np.linalg.inv(T_odom_lidar)
        corners = box_corners(boxes.center[near], boxes.size[near], boxes.yaw[near])
        cl = corners @ T_lidar_odom[:3, :3].T + T_lidar_odom[:3, 3]          # (m, 8, 3)
        cen = boxes.center[near] @ T_lidar_odom[:3, :3].T + T_lidar_odom[:3, 3]
        az_c = np.arctan2(cen[:, 1], cen[:, 0])
        daz = np.arctan2(np.sin(np.arctan2(cl[..., 1], cl[..., 0]) - az_c[:, None]),
                         np.cos(np.arctan2(cl[..., 1], cl[..., 0]) - az_c[:, None]))
        az_lo, az_hi = az_c + daz.min(1), az_c + daz.max(1)
        inside = d_min[near] <= 0.0
        step = 2 * np.pi / self.columns
        # elevation bounds: top/bottom of the box seen from its nearest and farthest points
        z_lo, z_hi = cl[..., 2].min(1), cl[..., 2].max(1)
        far = np.hypot(cl[..., 0], cl[..., 1]).max(1)
        dn = np.maximum(d_min[near], 1e-3)
        el_hi = np.where(z_hi > 0, np.arctan2(z_hi, dn), np.arctan2(z_hi, far))
        el_lo = np.where(z_lo < 0, np.arctan2(z_lo, dn), np.arctan2(z_lo, far))
        out = []
        el = self.elevation_rad
        for j, i in enumerate(near):
            if self._level:
                b0 = int(np.searchsorted(el, el_lo[j] - 1e-6))
                b1 = int(np.searchsorted(el, el_hi[j] + 1e-6, side='right'))
                if b1 <= b0:
                    continue
            else:
                b0, b1 = 0, self.beams
            if inside[j] or az_hi[j] - az_lo[j] > np.pi:
                cols = [(0, self.columns)]
            else:
                k0 = int(np.floor(az_lo[j] / step)) - 1
                k1 = int(np.ceil(az_hi[j] / step)) + 2
                k0m = k0 % self.columns
                n = min(k1 - k0, self.columns)
                cols = [(k0m, min(k0m + n, self.columns))]
                if k0m + n > self.columns:
                    cols.append((0, k0m + n - self.columns))
            out.append((int(i), b0, b1, cols))
        return out
