"""Traffic agents: cars, pedestrians, cyclists and cones with simple, deterministic behaviours.

Every agent lives on a road line in (s, d) coordinates (the main road, or the crossing road
for cross traffic) and moves along it with the Intelligent Driver Model (IDM) when it drives.
Behaviours: follow, brake (hard braking at a set time), cut_in, cross (pedestrian crossing
the road when the ego comes near), parked, oncoming, cross_traffic (yields to an ego already
inside the intersection), static.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmdrive.objects import Object3D
from fmdrive.sim.scenario import DEFAULT_SIZES_M, LARGE_VEHICLE_TYPES
from fmdrive.sim.world import BoxSet

IDM_ACCEL_MPS2, IDM_DECEL_MPS2, IDM_HEADWAY_S, IDM_GAP_M = 1.5, 2.0, 1.2, 2.5
MAX_BRAKE_MPS2 = 9.0
PREDICT_S = np.arange(0.0, 3.01, 0.5)   # constant-velocity prediction horizon for in-path checks


def idm_accel(v, v0, gap_m=np.inf, dv=0.0, s0=IDM_GAP_M, a=IDM_ACCEL_MPS2, b=IDM_DECEL_MPS2,
              T=IDM_HEADWAY_S):
    """IDM acceleration for speed v, desired v0, bumper gap gap_m and closing speed dv."""
    free = 1.0 - (v / max(v0, 0.1)) ** 4
    if not np.isfinite(gap_m):
        return float(np.clip(a * free, -MAX_BRAKE_MPS2, a))
    s_star = s0 + max(0.0, v * T + v * dv / (2 * np.sqrt(a * b)))
    acc = a * (free - (s_star / max(gap_m, 0.1)) ** 2)
    return float(np.clip(acc, -MAX_BRAKE_MPS2, a))


@dataclass
class RoadObjects:
    """Objects expressed in one road's (s, d) frame: centre, extent along/across, velocity."""
    ids: np.ndarray
    s: np.ndarray
    d: np.ndarray
    length: np.ndarray     # extent along s
    width: np.ndarray      # extent along d
    vs: np.ndarray         # velocity along s (signed)
    vd: np.ndarray         # velocity along d
    overtakeable: np.ndarray

    @staticmethod
    def build(road, ids, x, y, yaw, l, w, vx, vy, overtakeable) -> 'RoadObjects':
        s, d = road.xy_to_sd(np.asarray(x, float), np.asarray(y, float))
        h = road.heading(s)
        c, sn = np.cos(h), np.sin(h)
        rel = np.asarray(yaw, float) - h
        length = np.abs(l * np.cos(rel)) + np.abs(w * np.sin(rel))
        width = np.abs(l * np.sin(rel)) + np.abs(w * np.cos(rel))
        vs = c * vx + sn * vy
        vd = -sn * vx + c * vy
        return RoadObjects(np.asarray(ids), np.asarray(s, float), np.asarray(d, float), length, width,
                           vs, vd, np.asarray(overtakeable, bool))

    def in_path(self, s_ref, direction, d_path, half_width_m, margin_m=0.3, exclude_id=None):
        """Mask of objects ahead (along `direction`) that are, or within PREDICT_S will be, inside
        the corridor d_path(s) +- (half_width + their half width + margin)."""
        if len(self.s) == 0:
            return np.zeros(0, bool)
        t = PREDICT_S[:, None]
        s_t = self.s + self.vs * t
        d_t = self.d + self.vd * t
        inside = np.abs(d_t - d_path(s_t)) < half_width_m + self.width / 2 + margin_m
        ahead = (self.s - s_ref) * direction + self.length / 2 > 0
        mask = inside.any(axis=0) & ahead
        if exclude_id is not None:
            mask &= self.ids != exclude_id
        return mask


@dataclass
class Agent:
    id: int
    type: str
    behaviour: str
    size: np.ndarray                 # length, width, height
    colour: np.ndarray               # (3,) 0..255
    road: str                        # 'main' | 'cross'
    s: float
    d: float
    v: float                         # speed along the travel direction, >= 0
    direction: int = 1               # +1 along s, -1 against
    vd: float = 0.0                  # lateral speed (d/dt of d)
    v0: float = 0.0                  # desired speed
    params: dict = field(default_factory=dict)
    overtakeable: bool = False       # the expert may pass it (parked car, cone, cyclist)
    phase: str = 'drive'             # behaviour state
    timer: float = 0.0
    d_from: float = 0.0
    d_to: float = 0.0

    # ------------------------------------------------------------ pose
    def pose(self, world):
        line = world.main if self.road == 'main' else world.cross
        x, y = line.sd_to_xy(self.s, self.d)
        h = float(line.heading(self.s))
        vs = self.direction * self.v
        if self.type == 'pedestrian' and abs(self.vd) > 1e-3:
            yaw = h + np.sign(self.vd) * np.pi / 2
        elif self.direction < 0:
            yaw = h + np.pi + np.arctan2(-self.vd, self.v + 1e-9) if self.v > 0.5 else h + np.pi
        else:
            yaw = h + (np.arctan2(self.vd, self.v) if self.v > 0.5 else 0.0)
        vx = np.cos(h) * vs - np.sin(h) * self.vd
        vy = np.sin(h) * vs + np.cos(h) * self.vd
        return float(x), float(y), float(np.arctan2(np.sin(yaw), np.cos(yaw))), float(vx), float(vy)

    def object3d(self, world) -> Object3D:
        x, y, yaw, vx, vy = self.pose(world)
        label = 'car' if self.type in LARGE_VEHICLE_TYPES else self.type   # a vehicle, its size
        return Object3D(center=[x, y, self.size[2] / 2], size=self.size.copy(), yaw_rad=yaw,
                        label=label, score=1.0, id=self.id, velocity=[vx, vy, 0.0])

    def boxes(self, world) -> list:
        """Box rows (see BoxSet.from_rows) that draw this agent: a body plus details."""
        x, y, yaw, _, _ = self.pose(world)
        l, w, h = self.size
        c, s = np.cos(yaw), np.sin(yaw)
        col = tuple(self.colour)
        oid = self.id

        def part(dx, dz, pl, pw, ph, colour, intensity, bright=False, dy=0.0):
            return (x + c * dx - s * dy, y + s * dx + c * dy, dz + ph / 2, pl, pw, ph, yaw, colour,
                    intensity, oid, bright)

        if self.type == 'car':
            body_h = 0.55 * h
            glass = (45, 55, 65)
            return [part(0.0, 0.0, l, w, body_h, col, 60.0, True),
                    part(-0.08 * l, body_h, 0.55 * l, 0.92 * w, h - body_h, glass, 30.0)]
        if self.type == 'truck':     # cab in front, a gap, the cargo box behind
            cab = min(2.4, 0.3 * l)
            return [part(0.5 * l - 0.5 * cab, 0.0, cab, w, 0.8 * h, col, 60.0, True),
                    part(-0.5 * cab - 0.15, 0.0, l - cab - 0.3, w, h, (200, 200, 200), 70.0, True)]
        if self.type == 'bus':       # one body with a dark window band
            return [part(0.0, 0.0, l, w, 0.6 * h, col, 60.0, True),
                    part(0.0, 0.6 * h, l, 0.97 * w, 0.3 * h, (40, 50, 60), 30.0),
                    part(0.0, 0.9 * h, l, w, 0.1 * h, col, 60.0)]
        if self.type == 'pedestrian':
            legs = 0.47 * h
            return [part(0.0, 0.0, 0.5 * l, 0.7 * w, legs, (45, 45, 60), 30.0),
                    part(0.0, legs, 0.7 * l, w, 0.38 * h, col, 30.0),
                    part(0.0, 0.85 * h, 0.4 * l, 0.4 * w, 0.15 * h, (220, 180, 150), 30.0)]
        if self.type == 'cyclist':
            return [part(0.0, 0.0, l, 0.15, 0.95, (40, 40, 45), 45.0),
                    part(-0.1 * l, 0.95, 0.45, w, 0.55, col, 30.0),
                    part(-0.05 * l, 1.5, 0.25, 0.25, h - 1.5, (220, 180, 150), 30.0)]
        return [part(0.0, 0.0, l, w, 0.08, (30, 30, 30), 100.0),
                part(0.0, 0.08, 0.6 * l, 0.6 * w, h - 0.08, col, 180.0)]

    # ------------------------------------------------------------ behaviour
    def step(self, dt, t, world, objs: RoadObjects, ego):
        b = self.behaviour
        if b in ('parked', 'static'):
            return
        if b == 'cross':
            self._step_cross(dt, t, world, ego)
            return
        acc = self._drive_accel(t, world, objs, ego)
        if b == 'brake':
            if self.phase == 'drive' and t >= self.params.get('brake_time_s', 5.0):
                self.phase = 'braking'
            if self.phase == 'braking':
                acc = min(acc, -float(self.params.get('decel_mps2', 5.0)))
                if self.v <= 0.05:
                    self.phase, self.timer = 'stopped', 0.0
            elif self.phase == 'stopped':
                self.timer += dt
                acc = min(acc, 0.0) if self.timer < self.params.get('stop_duration_s', 3.0) else acc
                if self.timer >= self.params.get('stop_duration_s', 3.0):
                    self.phase = 'resumed'
        if b == 'cut_in':
            self._step_cut_in(dt, t, world, ego)
        self.v = max(0.0, self.v + acc * dt)
        self.s += self.direction * self.v * dt
        self.d += self.vd * dt

    def _drive_accel(self, t, world, objs, ego):
        if self.road == 'cross':
            return self._cross_traffic_accel(world, objs, ego)
        half_w = self.size[1] / 2
        if self.phase == 'changing':
            lo, hi = min(self.d_from, self.d_to), max(self.d_from, self.d_to)

            def d_path(s, d=(lo + hi) / 2):
                return d
            half_w += (hi - lo) / 2
        else:
            def d_path(s, d=self.d):
                return d
        mask = objs.in_path(self.s, self.direction, d_path, half_w, 0.2, exclude_id=self.id)
        if not mask.any():
            return idm_accel(self.v, self.v0)
        along = (objs.s[mask] - self.s) * self.direction - objs.length[mask] / 2 - self.size[0] / 2
        i = int(np.argmin(along))
        v_lead = objs.vs[mask][i] * self.direction
        return idm_accel(self.v, self.v0, along[i], self.v - v_lead)

    def _cross_traffic_accel(self, world, cross_objs, ego):
        half_w = self.size[1] / 2
        mask = cross_objs.in_path(self.s, self.direction, lambda s, d=self.d: d, half_w, 0.2,
                                  exclude_id=self.id)
        gap, dv = np.inf, 0.0
        if mask.any():
            along = (cross_objs.s[mask] - self.s) * self.direction - cross_objs.length[mask] / 2 \
                - self.size[0] / 2
            i = int(np.argmin(along))
            gap, dv = along[i], self.v - cross_objs.vs[mask][i] * self.direction
        # Yield to an ego that is already crossing: stop before the main road's zone.
        zone = world.cross_zone_s()
        front = self.s + self.direction * self.size[0] / 2
        entry = zone[0] - 1.5 if self.direction > 0 else zone[1] + 1.5
        before_zone = (entry - front) * self.direction > -0.5
        if ego.in_intersection and before_zone:
            stop_gap = (entry - front) * self.direction + IDM_GAP_M
            if stop_gap < gap:
                gap, dv = max(stop_gap, 0.1), self.v
        return idm_accel(self.v, self.v0, gap, dv)

    def _step_cut_in(self, dt, t, world, ego):
        p = self.params
        if self.phase == 'drive' and t >= p.get('cut_time_s', 2.0):
            target_d = world.lane_center_d(int(p.get('target_lane', 0)))
            # a reasonable driver: only cuts in with the ego far enough behind
            gap_to_ego = self.s - self.size[0] / 2 - ego.front_s
            if gap_to_ego > 4.0 + 0.6 * ego.v:
                self.phase, self.timer, self.d_from, self.d_to = 'changing', 0.0, self.d, target_d
        if self.phase == 'changing':
            duration = float(p.get('lane_change_s', 3.0))
            self.timer += dt
            u = min(self.timer / duration, 1.0)
            d_new = self.d_from + (self.d_to - self.d_from) * (1 - np.cos(np.pi * u)) / 2
            self.vd = (d_new - self.d) / dt
            if u >= 1.0:
                self.phase, self.vd = 'done', 0.0
                self.v0 = float(p.get('speed_after_mps', self.v0))
                self.d = self.d_to

    def _step_cross(self, dt, t, world, ego):
        p = self.params
        if self.phase == 'drive':   # waiting on the sidewalk
            trigger = self.s - ego.front_s < p.get('trigger_distance_m', 30.0) or \
                t >= p.get('start_time_s', np.inf)
            if trigger:
                self.phase = 'walking'
                self.vd = self.v0 * np.sign(self.d_to - self.d)
        if self.phase == 'walking':
            self.d += self.vd * dt
            if (self.d_to - self.d) * np.sign(self.vd) <= 0:
                self.d, self.vd, self.phase = self.d_to, 0.0, 'done'


def make_agents(spec, world, rng) -> list:
    """Agents of a scenario spec, ids 1..N in spec order."""
    agents = []
    w = world.w
    for i, a in enumerate(spec.agents):
        size = np.array(a.size_m if a.size_m is not None else DEFAULT_SIZES_M[a.type], float)
        colour = np.array(a.colour_rgb if a.colour_rgb is not None else rng.integers(30, 230, 3),
                          float)
        p = dict(a.params)
        common = dict(id=i + 1, type=a.type, behaviour=a.behaviour, size=size, colour=colour,
                      params=p, v0=a.speed_mps, overtakeable=a.behaviour in ('parked', 'static')
                      or a.type == 'cyclist')
        d = world.lane_center_d(a.lane) + float(p.get('d_offset_m', 0.0))
        if a.behaviour == 'cross':
            side = p.get('side', 'right')
            out = 1.0 + float(p.get('d_offset_m', 0.0))
            d_right, d_left = world.right_edge_d - out, world.left_edge_d + out
            d0, d1 = (d_right, d_left) if side == 'right' else (d_left, d_right)
            agents.append(Agent(road='main', s=a.s_m, d=d0, v=0.0, d_from=d0, d_to=d1, **common))
        elif a.behaviour == 'cross_traffic':
            direction = int(p.get('direction', 1))
            s_centre = world.cross_centre_s()
            agents.append(Agent(road='cross', s=s_centre - direction * a.s_m,
                                d=-direction * w / 2, v=a.speed_mps, direction=direction, **common))
        elif a.behaviour == 'oncoming':
            agents.append(Agent(road='main', s=a.s_m, d=world.lane_center_d(world.num_lanes)
                                + float(p.get('d_offset_m', 0.0)), v=a.speed_mps, direction=-1,
                                **common))
        elif a.behaviour == 'static' and 'd_m' in p:
            agents.append(Agent(road='main', s=a.s_m, d=float(p['d_m']), v=0.0, **common))
        else:
            v = a.speed_mps if a.behaviour not in ('parked', 'static') else 0.0
            agents.append(Agent(road='main', s=a.s_m, d=d, v=v, **common))
    return agents


def agent_boxes(agents, world) -> BoxSet:
    rows = []
    for a in agents:
        rows.extend(a.boxes(world))
    return BoxSet.from_rows(rows)


def road_objects(agents, world, road, ego=None) -> RoadObjects:
    """All agents (and the ego body, id -1) in the (s, d) frame of `road`."""
    rows = [(a.id, *a.pose(world), a.size[0], a.size[1], a.overtakeable) for a in agents]
    if ego is not None:
        rows.append((-1, *ego.body_pose(), ego.LENGTH_M, ego.WIDTH_M, False))
    if not rows:
        z = np.zeros(0)
        return RoadObjects(z.astype(int), z, z, z, z, z, z, z.astype(bool))
    arr = np.array([r[:8] for r in rows], float)
    ids, x, y, yaw, vx, vy, l, w = arr.T
    return RoadObjects.build(road, ids.astype(int), x, y, yaw, l, w, vx, vy, [r[8] for r in rows])
