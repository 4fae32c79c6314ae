"""The static world: road geometry (s, d) <-> (x, y), ground materials, lanes and scenery boxes.

World frame = odom: flat ground z = 0, x forward at the start, y left, z up. The main road's
reference line starts at the origin heading +x and is straight or a constant-curvature arc;
d is the signed lateral offset (+ left). The driving lanes lie right of the reference line,
the optional oncoming lane left of it (right-hand traffic):

    d = +w   left road edge (with an oncoming lane; else d = 0)
    d = 0    centre line (solid, only with an oncoming lane)
    d = -k w lane boundaries (dashed) ...        d = -n w  right road edge
An intersection road crosses perpendicular to the main road at s = intersection_s_m.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmdrive.objects import Lane

GRASS, SIDEWALK, ASPHALT, MARKING = 0, 1, 2, 3
MATERIAL_NAMES = ('grass', 'sidewalk', 'asphalt', 'marking')
MARKING_WIDTH_M = 0.15
DASH_ON_M, DASH_PERIOD_M = 3.0, 9.0


class RoadLine:
    """A reference line: straight (curvature 0) or an arc, from `origin_xy` heading `heading_rad`.

    Arcs are valid for |s| < pi / |curvature| (half a circle each way)."""

    def __init__(self, curvature_1pm=0.0, origin_xy=(0.0, 0.0), heading_rad=0.0):
        self.k = float(curvature_1pm)
        self.origin = np.asarray(origin_xy, dtype=np.float64)
        self.heading0 = float(heading_rad)
        self._c, self._s = np.cos(self.heading0), np.sin(self.heading0)

    def sd_to_xy(self, s, d):
        s, d = np.asarray(s, dtype=np.float64), np.asarray(d, dtype=np.float64)
        if abs(self.k) < 1e-9:
            lx, ly = s, d
        else:
            th = s * self.k
            r = 1.0 / self.k
            lx = np.sin(th) * (r - d)
            ly = r - np.cos(th) * (r - d)
        return (self.origin[0] + self._c * lx - self._s * ly,
                self.origin[1] + self._s * lx + self._c * ly)

    def xy_to_sd(self, x, y):
        dx, dy = np.asarray(x) - self.origin[0], np.asarray(y) - self.origin[1]
        lx = self._c * dx + self._s * dy
        ly = -self._s * dx + self._c * dy
        if abs(self.k) < 1e-9:
            return lx, ly
        r = 1.0 / self.k
        sg = np.sign(r)
        vx, vy = lx, ly - r
        th = np.arctan2(vx * sg, -vy * sg)
        return th * r, r - sg * np.hypot(vx, vy)

    def heading(self, s):
        return self.heading0 + np.asarray(s, dtype=np.float64) * self.k


@dataclass
class BoxSet:
    """Oriented boxes (yaw only) standing in the world, with their look and LiDAR material."""
    center: np.ndarray       # (M, 3) m, odom
    size: np.ndarray         # (M, 3) length, width, height
    yaw: np.ndarray          # (M,) rad
    colour: np.ndarray       # (M, 3) float32 0..255 albedo
    intensity: np.ndarray    # (M,) float32 LiDAR reflectivity 0..255
    owner: np.ndarray        # (M,) int32: agent id, 0 = scenery
    bright_ends: np.ndarray  # (M,) bool: front/back faces carry plates and lights (brighter)
    porous: np.ndarray = None  # (M,) bool: foliage; LiDAR rays enter it, some pass through

    def __post_init__(self):
        if self.porous is None:
            self.porous = np.zeros(len(self.yaw), bool)

    @staticmethod
    def empty() -> 'BoxSet':
        return BoxSet(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3), np.float32),
                      np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, bool),
                      np.zeros(0, bool))

    @staticmethod
    def concat(sets) -> 'BoxSet':
        sets = [b for b in sets if len(b)]
        if not sets:
            return BoxSet.empty()
        return BoxSet(*(np.concatenate([getattr(b, f) for b in sets]) for f in
                        ('center', 'size', 'yaw', 'colour', 'intensity', 'owner', 'bright_ends',
                         'porous')))

    @staticmethod
    def from_rows(rows) -> 'BoxSet':
        """rows of (cx, cy, cz, l, w, h, yaw, (r, g, b), intensity, owner, bright_ends[, porous])."""
        if not rows:
            return BoxSet.empty()
        return BoxSet(np.array([r[0:3] for r in rows], float), np.array([r[3:6] for r in rows], float),
                      np.array([r[6] for r in rows], float), np.array([r[7] for r in rows], np.float32),
                      np.array([r[8] for r in rows], np.float32), np.array([r[9] for r in rows], np.int32),
                      np.array([r[10] for r in rows], bool),
                      np.array([len(r) > 11 and bool(r[11]) for r in rows], bool))

    def __len__(self):
        return len(self.yaw)


class World:
    """Roads, materials, lanes and scenery of one scenario (static over the drive)."""

    def __init__(self, road_spec, rng: np.random.Generator, s_range_m=(-80.0, 450.0)):
        r = road_spec
        self.spec = r
        self.w = float(r.lane_width_m)
        self.num_lanes = int(r.num_lanes)
        self.has_oncoming = bool(r.has_oncoming_lane)
        self.sidewalk_m = float(r.sidewalk_width_m)
        curvature = r.curvature_1pm if r.type == 'curve' else 0.0
        if abs(curvature) > 1e-9:  # keep the road within half a circle
            lim = 0.95 * np.pi / abs(curvature)
            s_range_m = (max(s_range_m[0], -0.3 * lim), min(s_range_m[1], lim))
        self.s_range_m = s_range_m
        self.main = RoadLine(curvature)
        self.right_edge_d = -self.num_lanes * self.w
        self.left_edge_d = self.w if self.has_oncoming else 0.0
        self.cross = None
        if r.type == 'intersection':
            self.intersection_s_m = float(r.intersection_s_m)
            self.cross = RoadLine(0.0, (self.intersection_s_m, -200.0), np.pi / 2)
            self.cross_half_m = self.w       # one lane each way
        self.scenery = self._make_scenery(rng, float(r.scenery_density))
        if r.vegetation_density > 0:   # its own stream: the rest of the world stays as it was
            rng_veg = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
            self.scenery = BoxSet.concat([self.scenery,
                                          self._make_vegetation(rng_veg, float(r.vegetation_density))])

    # ------------------------------------------------------------ lanes
    def lane_center_d(self, lane) -> float:
        """Lateral offset of a lane centre; lane num_lanes is the oncoming lane."""
        return -(self.num_lanes - lane - 0.5) * self.w

    def lane_of_d(self, d) -> np.ndarray:
        return np.clip(np.floor(np.asarray(d) / self.w + self.num_lanes), 0,
                       self.num_lanes - (0 if self.has_oncoming else 1)).astype(int)

    def intersection_box_s(self):
        """(s_start, s_end) of the crossing road's asphalt on the main road, or None."""
        if self.cross is None:
            return None
        return self.intersection_s_m - self.cross_half_m, self.intersection_s_m + self.cross_half_m

    def cross_centre_s(self) -> float:
        """s on the crossing road where it meets the main road's reference line (y = 0)."""
        return float(self.cross.xy_to_sd(self.intersection_s_m, 0.0)[0])

    def cross_zone_s(self):
        """(start, end) along the crossing road of the main road's asphalt."""
        c = self.cross_centre_s()
        return c + self.right_edge_d, c + self.left_edge_d

    def lanes_in_base(self, T_base_odom, s_ego, ego_lane, ahead_m=60.0, behind_m=10.0, step_m=2.0):
        """Ground-truth lane centre lines in base_link, offset relative to the ego's lane."""
        s = np.arange(s_ego - behind_m, s_ego + ahead_m + 1e-6, step_m)
        lanes = []
        for lane in range(self.num_lanes + (1 if self.has_oncoming else 0)):
            x, y = self.main.sd_to_xy(s, np.full_like(s, self.lane_center_d(lane)))
            pts = np.c_[x, y, np.zeros_like(x)] @ T_base_odom[:3, :3].T + T_base_odom[:3, 3]
            if lane == self.num_lanes:  # oncoming: ordered along its own driving direction
                pts = pts[::-1]
            lanes.append(Lane(offset=int(lane - ego_lane), width_m=self.w, centerline=pts))
        return lanes

    # ------------------------------------------------------------ ground
    def ground_material(self, x, y) -> np.ndarray:
        """Material code (GRASS, SIDEWALK, ASPHALT, MARKING) of ground points, vectorised."""
        s, d = self.main.xy_to_sd(x, y)
        mat = np.full(np.shape(s), GRASS, np.uint8)
        re, le, sw = self.right_edge_d, self.left_edge_d, self.sidewalk_m
        on_main = (d >= re) & (d <= le)
        mat[((d >= re - sw) & (d < re)) | ((d > le) & (d <= le + sw))] = SIDEWALK
        marks = self._main_markings(s, d)
        if self.cross is not None:
            sc, dc = self.cross.xy_to_sd(x, y)
            adc = np.abs(dc)
            on_cross = adc <= self.cross_half_m
            mat[(adc > self.cross_half_m) & (adc <= self.cross_half_m + sw) & ~on_main] = SIDEWALK
            mat[on_cross] = ASPHALT
            marks &= ~on_cross
            half = MARKING_WIDTH_M / 2
            cross_marks = ((np.abs(dc) < half) & (np.mod(sc, DASH_PERIOD_M) < DASH_ON_M)) | \
                (np.abs(adc - (self.cross_half_m - 0.25)) < half)
            cross_marks &= on_cross & ~((d >= re - 0.5) & (d <= le + 0.5))
            s0 = self.intersection_s_m - self.cross_half_m
            stop_line = (s > s0 - 3.0) & (s < s0 - 2.6) & (d >= re) & (d <= 0.0)
            marks |= cross_marks | stop_line
        mat[on_main] = ASPHALT
        mat[marks] = MARKING
        return mat

    def _main_markings(self, s, d):
        half = MARKING_WIDTH_M / 2
        re, le = self.right_edge_d, self.left_edge_d
        m = (np.abs(d - (re + 0.25)) < half) | (np.abs(d - (le - 0.25)) < half)
        if self.has_oncoming:
            m |= np.abs(d) < half
        dashed = np.mod(s, DASH_PERIOD_M) < DASH_ON_M
        for k in range(1, self.num_lanes):
            m |= (np.abs(d + k * self.w) < half) & dashed
        return m

    # ------------------------------------------------------------ scenery
    def _make_vegetation(self, rng, density):
        """Hedges and bushes on the verge beyond the sidewalks: porous to the LiDAR, car-sized
        clutter for detectors (a bush is as big as a car, a hedge as long as a bus)."""
        rows = []
        s0, s1 = self.s_range_m
        inter = self.intersection_box_s()
        for side in (-1, 1):
            edge = (self.right_edge_d if side < 0 else self.left_edge_d) + side * self.sidewalk_m
            s = s0 + rng.uniform(0, 8)
            while s < s1:
                hedge = rng.random() < 0.4
                length = rng.uniform(6, 16) if hedge else rng.uniform(1.2, 4.0)
                depth = rng.uniform(0.8, 1.5) if hedge else rng.uniform(1.2, 3.0)
                height = rng.uniform(0.9, 2.0) if hedge else rng.uniform(0.8, 2.4)
                sc = s + length / 2
                if inter is None or not (inter[0] - 4 - length / 2 < sc < inter[1] + 4 + length / 2):
                    x, y = self.main.sd_to_xy(sc, edge + side * (0.3 + depth / 2 + rng.uniform(0, 1.0)))
                    colour = (rng.uniform(30, 70), rng.uniform(90, 150), rng.uniform(25, 55))
                    rows.append((x, y, height / 2, length, depth, height,
                                 self.main.heading(sc) + rng.uniform(-0.1, 0.1), colour,
                                 float(rng.uniform(25, 60)), 0, False, True))
                s += length + rng.uniform(3, 20) / max(density, 0.2)
        return BoxSet.from_rows(rows)

    def _make_scenery(self, rng, density):
        """Buildings, street-light poles and trees beside the road (clutter for detectors)."""
        rows = []
        if density <= 0:
            return BoxSet.from_rows(rows)
        s0, s1 = self.s_range_m
        inter = self.intersection_box_s()

        def free(s, margin):
            return inter is None or not (inter[0] - margin < s < inter[1] + margin)

        for side in (-1, 1):
            edge = (self.right_edge_d if side < 0 else self.left_edge_d) + side * self.sidewalk_m
            s = s0 + rng.uniform(0, 10)
            while s < s1:  # buildings
                length = rng.uniform(8, 25)
                depth, height = rng.uniform(8, 15), rng.uniform(5, 20)
                setback = rng.uniform(3, 10)
                sc = s + length / 2
                if free(sc, length / 2 + 6) and rng.random() < min(1.0, 0.75 * density):
                    d = edge + side * (setback + depth / 2)
                    x, y = self.main.sd_to_xy(sc, d)
                    colour = (rng.uniform(120, 220), rng.uniform(100, 190), rng.uniform(80, 170))
                    rows.append((x, y, height / 2, length, depth, height, self.main.heading(sc),
                                 colour, 50.0, 0, False))
                s += length + rng.uniform(2, 15) / max(density, 0.3)
            s = s0 + rng.uniform(0, 20)
            while s < s1:  # street-light poles at the kerb
                if free(s, 3):
                    x, y = self.main.sd_to_xy(s, edge - side * (self.sidewalk_m - 0.4))
                    rows.append((x, y, 3.5, 0.25, 0.25, 7.0, 0.0, (110, 110, 115), 70.0, 0, False))
                s += rng.uniform(25, 40)
            s = s0 + rng.uniform(0, 10)
            while s < s1:  # trees: trunk + canopy, on the grass strip
                if free(s, 5) and rng.random() < min(1.0, 0.6 * density):
                    x, y = self.main.sd_to_xy(s, edge + side * rng.uniform(0.8, 2.5))
                    trunk_h, canopy = rng.uniform(1.8, 3.0), rng.uniform(2.2, 4.0)
                    yaw = rng.uniform(0, np.pi / 2)
                    rows.append((x, y, trunk_h / 2, 0.3, 0.3, trunk_h, yaw, (90, 65, 40), 35.0, 0,
                                 False))
                    rows.append((x, y, trunk_h + canopy / 2, canopy, canopy, canopy, yaw,
                                 (rng.uniform(40, 80), rng.uniform(100, 150), rng.uniform(30, 60)),
                                 40.0, 0, False))
                s += rng.uniform(12, 30) / max(density, 0.3)
        if self.cross is not None:  # corner buildings along the crossing road
            for side_main in (-1, 1):
                for side_cross in (-1, 1):
                    edge_main = self.right_edge_d if side_main < 0 else self.left_edge_d
                    d_main = edge_main + side_main * (self.sidewalk_m + 20)
                    x = self.intersection_s_m + side_cross * (self.cross_half_m + self.sidewalk_m + 9)
                    rows.append((x, d_main, 6.0, 12, 20, 12.0, 0.0,
                                 (rng.uniform(120, 200), rng.uniform(100, 170), 110), 50.0, 0,
                                 False))
        return BoxSet.from_rows(rows)
