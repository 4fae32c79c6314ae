"""The expert driver of the ego: privileged (it sees ground truth), rule-based and collision-free.

Longitudinal: IDM on the nearest object in the ego's corridor (including pedestrians and cars
predicted to enter it within 3 s), a stop at the stop line while crossing traffic conflicts,
the speed limit and a lateral-acceleration cap in curves.
Lateral: pure pursuit along a ramp from the current offset to the target lane's centre line;
the target lane changes to the left to pass a parked car / cones / cyclist when that lane is
free, and back when the home lane is clear. Motion: kinematic bicycle model.
"""
from __future__ import annotations

import numpy as np

from fmdrive.objects import EgoState
from fmdrive.sim.agents import IDM_GAP_M, MAX_BRAKE_MPS2, RoadObjects, idm_accel


class ExpertDriver:
    WHEELBASE_M = 2.8
    LENGTH_M, WIDTH_M, HEIGHT_M = 4.6, 1.9, 1.5
    REAR_OVERHANG_M = 1.0            # base_link (rear axle) to the rear bumper
    MAX_STEER_RAD, MAX_STEER_RATE_RPS = 0.6, 0.8
    LAT_ACCEL_MPS2 = 2.5

    def __init__(self, world, spec):
        self.world = world
        e = spec.ego
        self.home_lane = self.target_lane = int(e.lane)
        d0 = world.lane_center_d(e.lane)
        x, y = world.main.sd_to_xy(e.s_m, d0)
        self.x, self.y = float(x), float(y)
        self.yaw = float(world.main.heading(e.s_m))
        self.v = float(e.speed_mps)
        self.v_des = min(float(e.speed_mps), float(spec.road.speed_limit_mps))
        if abs(world.main.k) > 1e-9:
            self.v_des = min(self.v_des, np.sqrt(self.LAT_ACCEL_MPS2 / abs(world.main.k)))
        self.steer = 0.0
        self.yaw_rate = 0.0
        self.s, self.d = e.s_m, d0
        self.in_intersection = False
        self._plan = (self.s, d0, d0, 12.0)   # lateral plan: s_start, d_start, d_end, ramp_m

    # ------------------------------------------------------------ geometry
    @property
    def front_s(self):
        return self.s + self.LENGTH_M - self.REAR_OVERHANG_M

    def body_pose(self):
        """x, y, yaw, vx, vy of the body centre (for other agents and collision checks)."""
        off = self.LENGTH_M / 2 - self.REAR_OVERHANG_M
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return self.x + c * off, self.y + s * off, self.yaw, c * self.v, s * self.v

    def state(self) -> EgoState:
        return EgoState(float(self.x), float(self.y), float(self.yaw), float(self.v), float(self.yaw_rate))

    # ------------------------------------------------------------ control
    def step(self, dt, t, objs: RoadObjects, cross_agents=()):
        w = self.world
        self.s, self.d = (float(v) for v in w.main.xy_to_sd(self.x, self.y))
        self._choose_lane(objs)
        d_target = w.lane_center_d(self.target_lane)
        if d_target != self._plan[2]:   # a new lane: ramp from where we are now
            self._plan = (self.s, self.d, d_target, max(12.0, 2.5 * self.v))
        s_start, d_start, d_end, ramp_m = self._plan

        def d_path(s):
            u = np.clip((np.asarray(s) - s_start) / ramp_m, 0.0, 1.0)
            return d_start + (d_end - d_start) * u * u * (3 - 2 * u)

        acc = self._longitudinal(objs, d_path, cross_agents)
        self._lateral(dt, d_path)
        self.v = max(0.0, self.v + acc * dt)
        self.yaw_rate = self.v / self.WHEELBASE_M * np.tan(self.steer)
        self.x += self.v * np.cos(self.yaw) * dt
        self.y += self.v * np.sin(self.yaw) * dt
        self.yaw = float(np.arctan2(np.sin(self.yaw + self.yaw_rate * dt),
                                    np.cos(self.yaw + self.yaw_rate * dt)))
        box = w.intersection_box_s()
        self.s = float(w.main.xy_to_sd(self.x, self.y)[0])
        self.in_intersection = box is not None and \
            self.front_s > box[0] - 3.0 and self.s - self.REAR_OVERHANG_M < box[1] + 0.5

    def _lateral(self, dt, d_path):
        lookahead = max(4.0, 0.8 * self.v + 2.0)
        s_la = self.s + lookahead
        px, py = self.world.main.sd_to_xy(s_la, d_path(s_la))
        dx, dy = px - self.x, py - self.y
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        dist2 = lx * lx + ly * ly
        curvature = 2.0 * ly / max(dist2, 1e-6)
        steer = np.clip(np.arctan(curvature * self.WHEELBASE_M), -self.MAX_STEER_RAD,
                        self.MAX_STEER_RAD)
        max_step = self.MAX_STEER_RATE_RPS * dt
        self.steer = float(self.steer + np.clip(steer - self.steer, -max_step, max_step))

    def _longitudinal(self, objs, d_path, cross_agents):
        margin = 0.3 if self._plan[1] == self._plan[2] else 0.5
        mask = objs.in_path(self.s, 1, d_path, self.WIDTH_M / 2, margin, exclude_id=-1)
        gap, dv, s0 = np.inf, 0.0, IDM_GAP_M
        if mask.any():
            along = objs.s[mask] - objs.length[mask] / 2 - self.front_s
            i = int(np.argmin(along))
            gap, dv = float(along[i]), self.v - float(objs.vs[mask][i])
            if objs.overtakeable[mask][i] and self.target_lane == self.home_lane:
                s0 = 8.0   # room to steer around it from a standstill
        stop_gap = self._intersection_stop_gap(cross_agents)
        if stop_gap is not None and stop_gap + IDM_GAP_M < gap:
            gap, dv, s0 = stop_gap + IDM_GAP_M, self.v, IDM_GAP_M
        acc = idm_accel(self.v, self.v_des, gap, dv, s0=s0)
        if np.isfinite(gap) and gap < 1.0 and dv > 0:
            acc = -MAX_BRAKE_MPS2
        return acc

    # ------------------------------------------------------------ lane choice
    def _choose_lane(self, objs):
        w = self.world
        d_home = w.lane_center_d(self.home_lane)
        half = self.WIDTH_M / 2
        home = objs.in_path(self.s, 1, lambda s: d_home, half, 0.3, exclude_id=-1)
        if self.target_lane == self.home_lane:
            ahead = home & (objs.s - objs.length / 2 - self.front_s < 45.0)
            if not ahead.any():
                return
            along = np.where(ahead, objs.s - objs.length / 2 - self.front_s, np.inf)
            i = int(np.argmin(along))
            slow = objs.vs[i] < min(0.75 * self.v_des, 8.0) and objs.overtakeable[i]
            left = self.home_lane + 1
            exists = left < w.num_lanes or (left == w.num_lanes and w.has_oncoming)
            if slow and exists and self._lane_free(objs, left, i):
                self.target_lane = left
            return
        # overtaking: abort while still in the home lane if the target lane stopped being free
        if abs(self.d - d_home) < 0.6:
            blocking = home & (objs.s - objs.length / 2 - self.front_s < 45.0)
            idx = np.flatnonzero(blocking)
            if len(idx) == 0 or not self._lane_free(objs, self.target_lane, idx[
                    np.argmin(objs.s[idx])]):
                self.target_lane = self.home_lane
                return
        # return once nothing in the home lane is beside or shortly ahead of the ego
        near = home & (objs.s + objs.length / 2 > self.s - self.REAR_OVERHANG_M - 3.0) & \
            (objs.s - objs.length / 2 < self.front_s + 12.0 + 0.5 * self.v)
        if not near.any():
            self.target_lane = self.home_lane

    def _lane_free(self, objs, lane, obstacle_idx):
        w = self.world
        d_lane = w.lane_center_d(lane)
        in_lane = objs.in_path(self.s - 40.0, 1, lambda s: d_lane, self.WIDTH_M / 2, 0.5,
                               exclude_id=-1)
        rel = objs.s - self.s
        obstacle_end = rel[obstacle_idx] + objs.length[obstacle_idx] / 2
        if lane == w.num_lanes:   # the oncoming lane: clear for the whole manoeuvre
            v_obs = max(float(objs.vs[obstacle_idx]), 0.0)
            pass_m = obstacle_end + 10.0 + self.REAR_OVERHANG_M
            t_pass = _time_to_cover(pass_m, max(self.v - v_obs, 0.0),
                                    max(self.v_des - v_obs, 1.0)) + 2.0
            ego_travel = min(self.v * t_pass + 0.6 * t_pass ** 2, self.v_des * t_pass)
            clear_m = ego_travel + 15.0 + np.maximum(-objs.vs, 0.0) * t_pass
            block = in_lane & (rel > -8.0) & (rel < np.maximum(clear_m, obstacle_end + 20.0))
            return not block.any()
        ahead_gap = rel - objs.length / 2 - (self.LENGTH_M - self.REAR_OVERHANG_M)
        behind_gap = -rel - objs.length / 2 - self.REAR_OVERHANG_M
        block = in_lane & (((rel >= 0) & (ahead_gap < 10.0 + 3.0 * np.maximum(self.v - objs.vs, 0)))
                           | ((rel < 0) & (behind_gap < 10.0 + 3.0 * np.maximum(objs.vs - self.v,
                                                                                  0))))
        return not block.any()

    # ------------------------------------------------------------ intersection
    def _intersection_stop_gap(self, cross_agents):
        """Distance from the front bumper to the stop line if the ego must yield, else None."""
        box = self.world.intersection_box_s()
        if box is None or not cross_agents:
            return None
        stop_s = box[0] - 3.0
        to_stop = stop_s - self.front_s
        if to_stop < -0.5 or to_stop > 120.0:
            return None
        if self.v ** 2 / (2 * 6.0) > to_stop + 1.0:   # cannot stop any more: commit
            return None
        t_in = _time_to_cover(max(box[0] - self.front_s, 0.0), self.v, self.v_des)
        t_out = _time_to_cover(box[1] - self.s + self.REAR_OVERHANG_M + 1.0, self.v, self.v_des)
        zone = self.world.cross_zone_s()
        for a in cross_agents:
            front = a.s + a.direction * a.size[0] / 2
            back = a.s - a.direction * a.size[0] / 2
            z_in, z_out = (zone[0] - 1.0, zone[1] + 1.0) if a.direction > 0 else \
                (zone[1] + 1.0, zone[0] - 1.0)
            dist_in = (z_in - front) * a.direction
            dist_out = (z_out - back) * a.direction
            if dist_out < 0:
                continue                           # already through
            if dist_in <= 0:
                return to_stop                     # inside the crossing right now
            if a.v < 0.3:
                continue                           # waiting for us
            c_in, c_out = dist_in / a.v, dist_out / a.v
            if c_in < t_out + 2.0 and c_out > t_in - 2.0:
                return to_stop
        return None


def _time_to_cover(dist_m, v, v_max, a=1.2):
    """Time to drive dist_m from speed v accelerating at a up to v_max."""
    if dist_m <= 0:
        return 0.0
    v_max = max(v_max, 0.5)
    t_acc = max(v_max - v, 0.0) / a
    d_acc = v * t_acc + 0.5 * a * t_acc ** 2
    if d_acc >= dist_m:
        return float((-v + np.sqrt(v * v + 2 * a * dist_m)) / a)
    return float(t_acc + (dist_m - d_acc) / v_max)


def boxes_overlap(c1, l1, w1, yaw1, c2, l2, w2, yaw2) -> bool:
    """Separating-axis test of two oriented rectangles in the ground plane."""
    from fmdrive.geometry import box_corners_bev
    a = box_corners_bev(c1, (l1, w1), yaw1)
    b = box_corners_bev(c2, (l2, w2), yaw2)
    for yaw in (yaw1, yaw2):
        for axis in (np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])):
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True
