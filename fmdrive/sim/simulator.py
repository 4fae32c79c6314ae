"""The simulator loop: agents + expert ego at odom rate, camera and LiDAR at the sensor rate.

    sim = Simulator(spec, K, width, height, T_base_camera, T_base_lidar)
    for frame in sim.frames():      # one SimFrame per sensor tick (10 Hz), deterministic per seed
        ...
    gt = sim.ground_truth()         # JSON-serialisable, keyed by stamp
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fmdrive.geometry import inv_T
from fmdrive.objects import EgoState
from fmdrive.sim.agents import agent_boxes, make_agents, road_objects
from fmdrive.sim.camera import CameraRenderer
from fmdrive.sim.expert import ExpertDriver, boxes_overlap
from fmdrive.sim.lidar import LidarScanner
from fmdrive.sim.scenario import ScenarioError, ScenarioSpec
from fmdrive.sim.world import BoxSet, World

START_STAMP_NS = 1_700_000_000 * 10**9
EVALUABLE = ('car', 'pedestrian', 'cyclist', 'cone', 'truck', 'bus')   # trucks/buses: label 'car'


@dataclass
class SimFrame:
    stamp_ns: int
    image_rgb: np.ndarray                  # (H, W, 3) uint8
    points_lidar: np.ndarray               # (N, 5) float32 x, y, z, intensity, ring (LiDAR frame)
    ego: EgoState                          # odom, at stamp_ns
    odometry: list                         # [(stamp_ns, EgoState)] since the previous frame, incl. this
    objects: list                          # list[Object3D], odom, ids stable, velocity over ground
    lanes: list                            # list[Lane], base_link
    lidar_points_per_object: dict = field(default_factory=dict)   # id -> points
    camera_pixels_per_object: dict = field(default_factory=dict)  # id -> visible pixels
    object_types: dict = field(default_factory=dict)              # id -> agent type ('truck', ...)


class Simulator:
    """Deterministic for spec.seed: same spec -> identical frames."""

    def __init__(self, spec: ScenarioSpec, K, width, height, T_base_camera, T_base_lidar):
        if not isinstance(spec, ScenarioSpec):
            raise ScenarioError(f'Simulator needs a ScenarioSpec, got {type(spec).__name__}')
        spec.validate()
        K = np.asarray(K, float)
        if K.shape != (3, 3):
            raise ValueError(f'K must be a 3x3 camera matrix, got shape {K.shape}')
        for name, T in (('T_base_camera', T_base_camera), ('T_base_lidar', T_base_lidar)):
            if np.asarray(T).shape != (4, 4):
                raise ValueError(f'{name} must be a 4x4 transform, got shape {np.asarray(T).shape}')
        self.spec = spec
        ss = np.random.SeedSequence([int(spec.seed), 20240611])
        rng_world, rng_agents, rng_camera, rng_lidar = (np.random.default_rng(s)
                                                        for s in ss.spawn(4))
        travel = spec.duration_s * max(spec.ego.speed_mps, spec.road.speed_limit_mps)
        self.world = World(spec.road, rng_world, (-80.0, spec.ego.s_m + travel + 200.0))
        self.agents = make_agents(spec, self.world, rng_agents)
        self.expert = ExpertDriver(self.world, spec)
        self.camera = CameraRenderer(K, width, height, T_base_camera, spec.camera, rng_camera)
        self.lidar = LidarScanner(spec.lidar, T_base_lidar, rng_lidar)
        self.frame_rate_hz = float(spec.camera_rate_hz)
        self.steps_per_frame = int(round(spec.odom_rate_hz / spec.camera_rate_hz))
        self.dt = 1.0 / spec.odom_rate_hz
        self.num_frames = max(1, int(round(spec.duration_s * self.frame_rate_hz)))
        self.collisions = []               # (stamp_ns, agent id) where the ego touched an agent
        self.timings_ms = {'agents': [], 'camera': [], 'lidar': []}
        self._gt_frames = []
        self._step = 0
        self._complete = False

    # ------------------------------------------------------------ main loop
    def frames(self):
        """Iterator of SimFrame, one per sensor tick starting at START_STAMP_NS."""
        self._gt_frames, self.collisions, self._step, self._complete = [], [], 0, False
        odometry = [(self._stamp_ns(), self.expert.state())]
        for k in range(self.num_frames):
            if k > 0:
                t0 = time.perf_counter()
                odometry = []
                for _ in range(self.steps_per_frame):
                    self._physics_step()
                    odometry.append((self._stamp_ns(), self.expert.state()))
                self.timings_ms['agents'].append((time.perf_counter() - t0) * 1e3)
            yield self._render_frame(odometry)
        self._complete = True

    def drive(self) -> list:
        """Run the whole scenario without sensors (agents + expert only, fast); returns the
        odometry [(stamp_ns, EgoState)] at odom rate. Collisions land in self.collisions."""
        self._gt_frames, self.collisions, self._step, self._complete = [], [], 0, False
        odometry = [(self._stamp_ns(), self.expert.state())]
        for _ in range((self.num_frames - 1) * self.steps_per_frame):
            self._physics_step()
            odometry.append((self._stamp_ns(), self.expert.state()))
        return odometry

    def _stamp_ns(self):
        return START_STAMP_NS + int(round(self._step * self.dt * 1e9))

    def _physics_step(self):
        t = self._step * self.dt
        w = self.world
        main_agents = [a for a in self.agents if a.road == 'main']
        cross_agents = [a for a in self.agents if a.road == 'cross']
        objs_main = road_objects(main_agents, w, w.main, ego=self.expert)
        for a in main_agents:
            a.step(self.dt, t, w, objs_main, self.expert)
        if cross_agents:
            objs_cross = road_objects(cross_agents, w, w.cross, ego=self.expert)
            for a in cross_agents:
                a.step(self.dt, t, w, objs_cross, self.expert)
        objs_ego = road_objects(self.agents, w, w.main)   # after the agents moved
        self.expert.step(self.dt, t, objs_ego, cross_agents)
        self._step += 1
        self._check_collisions()

    def _check_collisions(self):
        ex, ey, eyaw, _, _ = self.expert.body_pose()
        for a in self.agents:
            x, y, yaw, _, _ = a.pose(self.world)
            if abs(x - ex) + abs(y - ey) > 12.0:
                continue
            if boxes_overlap((ex, ey), self.expert.LENGTH_M, self.expert.WIDTH_M, eyaw,
                             (x, y), a.size[0], a.size[1], yaw):
                self.collisions.append((self._stamp_ns(), a.id))

    def _render_frame(self, odometry):
        stamp_ns = self._stamp_ns()
        ego = self.expert.state()
        T_odom_base = ego.T_odom_base()
        boxes = BoxSet.concat([self.world.scenery, agent_boxes(self.agents, self.world)])
        t0 = time.perf_counter()
        image, owner_px, _ = self.camera.render(T_odom_base, self.world, boxes)
        t1 = time.perf_counter()
        points, owner_pts = self.lidar.scan(T_odom_base, self.world, boxes)
        t2 = time.perf_counter()
        self.timings_ms['camera'].append((t1 - t0) * 1e3)
        self.timings_ms['lidar'].append((t2 - t1) * 1e3)

        objects = [a.object3d(self.world) for a in self.agents if a.type in EVALUABLE]
        ids = np.array([o.id for o in objects], int)
        pts_count = np.bincount(owner_pts, minlength=len(self.agents) + 1)
        px_count = np.bincount(owner_px.ravel(), minlength=len(self.agents) + 1)
        if objects:
            rects = self.camera.project_boxes(T_odom_base, np.array([o.center for o in objects]),
                                              np.array([o.size for o in objects]),
                                              np.array([o.yaw_rad for o in objects]))
            for o, r in zip(objects, rects):
                o.box2d = None if np.isnan(r[0]) else r
        lanes = self.world.lanes_in_base(inv_T(T_odom_base), self.expert.s,
                                         self.expert.home_lane if self.expert.target_lane ==
                                         self.expert.home_lane else self.expert.target_lane)
        frame = SimFrame(stamp_ns=stamp_ns, image_rgb=image, points_lidar=points, ego=ego,
                         odometry=list(odometry), objects=objects, lanes=lanes,
                         lidar_points_per_object={int(i): int(pts_count[i]) for i in ids},
                         camera_pixels_per_object={int(i): int(px_count[i]) for i in ids},
                         object_types={a.id: a.type for a in self.agents if a.type in EVALUABLE})
        self._gt_frames.append(self._gt_entry(frame))
        return frame

    def _gt_entry(self, frame):
        objs = []
        for o in frame.objects:
            d = o.to_dict()
            d['num_lidar_points'] = frame.lidar_points_per_object[o.id]
            d['num_camera_pixels'] = frame.camera_pixels_per_object[o.id]
            d['in_camera'] = bool(o.box2d is not None and d['num_camera_pixels'] > 0)
            d['type'] = frame.object_types.get(o.id, o.label)      # truck / bus under label car
            objs.append(d)
        e = frame.ego
        return {'stamp_ns': int(frame.stamp_ns),
                'ego': {'x': round(float(e.x), 4), 'y': round(float(e.y), 4),
                        'yaw_rad': round(float(e.yaw_rad), 5), 'speed_mps': round(float(e.speed_mps), 4),
                        'yaw_rate_rps': round(float(e.yaw_rate_rps), 5)},
                'objects': objs}

    # ------------------------------------------------------------ results
    def ground_truth(self) -> dict:
        """Ground truth of the frames produced so far (all of them once frames() is exhausted)."""
        rate = self.frame_rate_hz
        return {'scenario': self.spec.to_dict(), 'frame_rate_hz': int(rate) if rate == int(rate) else rate,
                'complete': self._complete,
                'collisions': [{'stamp_ns': int(s), 'id': int(i)} for s, i in self.collisions],
                'frames': list(self._gt_frames)}
