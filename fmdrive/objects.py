"""The object type every ROS-free core passes around (detections, tracks, ground truth)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmdrive.config import UNKNOWN


@dataclass
class Object3D:
    """An oriented 3D box with a class. Frame is the caller's (base_link, odom, ...)."""
    center: np.ndarray                      # (3,) m
    size: np.ndarray                        # (3,) length, width, height m
    yaw_rad: float = 0.0
    label: str = UNKNOWN
    score: float = 1.0
    id: int = 0                             # track / ground-truth id; 0 = none
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) m/s
    box2d: np.ndarray | None = None         # (4,) u_min, v_min, u_max, v_max pixels
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    embedding_space: str = ''
    # (3,) m/s^2 over ground: the tracker's mean over its last second (fusion/tracker.py), zeros
    # where nobody estimated it (a single detection, ground truth without history)
    acceleration: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self):
        self.center = np.asarray(self.center, dtype=np.float64).reshape(3)
        self.size = np.asarray(self.size, dtype=np.float64).reshape(3)
        self.velocity = np.asarray(self.velocity, dtype=np.float64).reshape(3)
        self.acceleration = np.asarray(self.acceleration, dtype=np.float64).reshape(3)
        self.yaw_rad = float(self.yaw_rad)

    def transformed(self, T) -> 'Object3D':
        """The same object expressed in another frame (T = T_new_old, yaw about z only)."""
        from fmdrive.geometry import wrap_angle
        c = T[:3, :3] @ self.center + T[:3, 3]
        v = T[:3, :3] @ self.velocity
        dyaw = np.arctan2(T[1, 0], T[0, 0])
        return Object3D(c, self.size.copy(), float(wrap_angle(self.yaw_rad + dyaw)), self.label,
                        self.score, self.id, v, None if self.box2d is None else self.box2d.copy(),
                        self.embedding, self.embedding_space, T[:3, :3] @ self.acceleration)

    def to_dict(self) -> dict:
        d = {'id': int(self.id), 'label': self.label, 'score': round(float(self.score), 4),
             'center': [round(float(x), 4) for x in self.center],
             'size': [round(float(x), 4) for x in self.size],
             'yaw_rad': round(self.yaw_rad, 5),
             'velocity': [round(float(x), 4) for x in self.velocity]}
        if self.box2d is not None:
            d['box2d'] = [round(float(x), 2) for x in self.box2d]
        if np.any(self.acceleration):
            d['acceleration'] = [round(float(x), 4) for x in self.acceleration]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'Object3D':
        return cls(center=d['center'], size=d['size'], yaw_rad=d.get('yaw_rad', 0.0),
                   label=d.get('label', UNKNOWN), score=d.get('score', 1.0), id=d.get('id', 0),
                   velocity=d.get('velocity', (0, 0, 0)),
                   box2d=None if d.get('box2d') is None else np.asarray(d['box2d'], float),
                   acceleration=d.get('acceleration', (0, 0, 0)))


@dataclass
class Lane:
    """A lane centre line, in the frame of the scene that holds it (base_link)."""
    offset: int                              # 0 ego lane, +1 left of it, -1 right of it
    width_m: float
    centerline: np.ndarray                   # (M, 3) points, ordered along the driving direction


@dataclass
class EgoState:
    """Ego pose in odom and motion, from odometry at a sensor stamp."""
    x: float = 0.0
    y: float = 0.0
    yaw_rad: float = 0.0
    speed_mps: float = 0.0
    yaw_rate_rps: float = 0.0

    def T_odom_base(self) -> np.ndarray:
        from fmdrive.geometry import pose2d_to_T
        return pose2d_to_T(self.x, self.y, self.yaw_rad)


@dataclass
class Scene:
    """What the planner gets: ego state, tracked objects and lanes in base_link, and text."""
    stamp_ns: int
    ego: EgoState
    objects: list                            # list[Object3D], base_link, velocity over ground
    lanes: list                              # list[Lane], base_link
    speed_limit_mps: float
    text: str = ''


@dataclass
class Plan:
    """A trajectory in odom. stamp_ns = stamp of the sensor data it was planned from."""
    stamp_ns: int
    poses: np.ndarray                        # (K, 3) x, y, yaw_rad in odom
    t_s: np.ndarray                          # (K,) time from stamp
    speeds_mps: np.ndarray                   # (K,)
    source: str = 'classical'                # classical | llm | fallback
    status: str = 'ok'
    deadline_met: bool = True
    cost: float = 0.0
    planning_time_ms: float = 0.0
