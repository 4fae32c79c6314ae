"""The fusion step the fusion node runs once per LiDAR frame, without ROS.

    core = FusionCore(FusionParams.from_node_params(node_params('fusion')), T_base_lidar)
    core.add_odometry(stamp_ns, ego)                 # every odometry message (~50 Hz)
    result = core.update(lidar_objects_base, stamp_ns, lanes)   # every LiDAR frame (~10 Hz)

Per frame: look up the ego pose at the LiDAR stamp (OdometryBuffer), move the detections into
odom, track them there (MultiObjectTracker: ego motion cancels out, velocities are over ground),
bring the tracks back to base_link and describe the scene. Without odometry the ego is taken as
static at its last known pose (or at the odom origin if none was ever seen) and a warning says so.
update() never raises: whatever goes wrong becomes a warning in the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from fmdrive.config import FRAMES
from fmdrive.fusion.odometry import NS_PER_S, OdometryBuffer
from fmdrive.fusion.scene import describe_scene
from fmdrive.fusion.tracker import MultiObjectTracker, TrackerParams, is_valid_detection
from fmdrive.geometry import inv_T
from fmdrive.objects import EgoState, Scene


NO_ODOMETRY = 'no odometry for the frame'   # how every missing-odometry warning starts (one key)


@dataclass
class FusionParams:
    max_age_s: float = 0.5              # a track not seen for this long is dropped
    gate_m: float = 3.0                 # association gate (centre distance)
    min_hits: int = 2                   # a track is published after this many hits
    odom_buffer_s: float = 5.0          # odometry history kept for stamp look-ups
    odom_max_extrapolation_s: float = 0.2  # how far past the odometry the ego pose is extrapolated
    speed_limit_mps: float = 13.9       # written into the scene (no map speed limits yet)
    max_scene_objects: int = 8          # objects listed in the scene text
    describe_scene: bool = True

    @classmethod
    def from_node_params(cls, params: dict) -> 'FusionParams':
        """From a node parameter dict (e.g. config.node_params('fusion')); other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def tracker_params(self) -> TrackerParams:
        return TrackerParams(max_age_s=self.max_age_s, gate_m=self.gate_m, min_hits=self.min_hits)


@dataclass
class FusionResult:
    objects_base: list                  # list[Object3D]: tracks in base_link, velocity over ground
    objects_odom: list                  # list[Object3D]: the same tracks in odom
    scene: Scene | None
    warnings: list = field(default_factory=list)   # list[str], for the log and /diagnostics
    ego: EgoState | None = None         # ego used for this frame (None: the frame was not processed)
    ego_from_odometry: bool = False     # False: no odometry at the stamp, ego assumed static


class FusionCore:
    def __init__(self, params: FusionParams | None = None, T_base_lidar: np.ndarray | None = None):
        self.params = params or FusionParams()
        if T_base_lidar is not None:
            T_base_lidar = np.asarray(T_base_lidar, dtype=np.float64)
            if T_base_lidar.shape != (4, 4) or not np.all(np.isfinite(T_base_lidar)):
                raise ValueError(f'T_base_lidar must be a finite 4x4 transform, got shape '
                                 f'{T_base_lidar.shape}; load it from {FRAMES["base"]}->'
                                 f'{FRAMES["lidar"]} in calibration/extrinsics.yaml')
        self.T_base_lidar = T_base_lidar
        self.odometry = OdometryBuffer(self.params.odom_buffer_s, self.params.odom_max_extrapolation_s)
        self.tracker = MultiObjectTracker(self.params.tracker_params())
        self._held_ego: EgoState | None = None   # last pose from odometry, held while it is missing
        self._tracking_in_odom = False           # False: tracks live in the frame of a static ego
        self._last_stamp_ns: int | None = None
        self._pending_warnings: list[str] = []

    def add_odometry(self, stamp_ns: int, ego: EgoState) -> bool:
        """Buffer one odometry sample. True if time went backwards and the buffer was reset."""
        try:
            reset = self.odometry.add(int(stamp_ns), ego)
        except Exception as exc:  # noqa: BLE001 - bad input must not stop the node
            self._warn_later(f'odometry sample ignored ({type(exc).__name__}: {exc})')
            return False
        if reset:
            self._held_ego = None
            self._warn_later('odometry stamps went back by more than 1 s (bag loop?): '
                             'odometry buffer cleared')
        return reset

    def _warn_later(self, message: str, max_pending: int = 20) -> None:
        """Queue a warning for the next update() result (bounded if update() is not called)."""
        if len(self._pending_warnings) < max_pending:
            self._pending_warnings.append(message)

    def update(self, lidar_objects_base, stamp_ns: int, lanes=(), frame_id: str = FRAMES['base']
               ) -> FusionResult:
        """Track one LiDAR frame of detections (base_link, or `lidar` with T_base_lidar) and
        describe the scene. Never raises."""
        warnings, self._pending_warnings = self._pending_warnings, []
        try:
            return self._update(lidar_objects_base, stamp_ns, lanes, frame_id, warnings)
        except Exception as exc:  # noqa: BLE001 - the node must keep running on any input
            warnings.append(f'fusion step failed ({type(exc).__name__}: {exc}); frame dropped')
            return FusionResult([], [], None, warnings)

    # ----------------------------------------------------------------
    def _update(self, detections, stamp_ns, lanes, frame_id, warnings: list[str]) -> FusionResult:
        try:
            stamp_ns = int(stamp_ns)
        except (TypeError, ValueError, OverflowError):
            warnings.append(f'invalid stamp {stamp_ns!r}: frame dropped')
            return FusionResult([], [], None, warnings)
        detections = list(detections or [])
        if frame_id == FRAMES['lidar']:
            if self.T_base_lidar is None:
                warnings.append(f'objects in frame {frame_id!r} but FusionCore has no T_base_lidar: '
                                'frame dropped; pass T_base_lidar or publish objects in base_link')
                return FusionResult([], [], None, warnings)
            detections = [d.transformed(self.T_base_lidar) if is_valid_detection(d) else d
                          for d in detections]
        elif frame_id != FRAMES['base']:
            warnings.append(f'objects in unsupported frame {frame_id!r} (expected {FRAMES["base"]!r} '
                            f'or {FRAMES["lidar"]!r}): frame dropped')
            return FusionResult([], [], None, warnings)
        valid = [d for d in detections if is_valid_detection(d)]
        if len(valid) < len(detections):
            warnings.append(f'dropped {len(detections) - len(valid)} detection(s) with NaN/inf or '
                            'non-positive size')

        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            self._held_ego = None           # time restarted: the old pose means nothing now
            self._tracking_in_odom = False
        self._last_stamp_ns = stamp_ns
        ego, from_odometry = self._ego_at(stamp_ns, warnings)
        T_odom_base = ego.T_odom_base()

        detections_odom = [d.transformed(T_odom_base) for d in valid]
        # Camera association goes here (later issue): camera objects (2D boxes + embeddings in the
        # shared space) are matched to these LiDAR detections by projecting the 3D boxes into the
        # image with camera_info and T_camera_base, then fused (label, score, embedding) before
        # tracking. Until then tracks carry the LiDAR detection's embedding only.
        tracks_odom = self.tracker.update(detections_odom, stamp_ns)
        if self.tracker.last_warning:
            warnings.append(self.tracker.last_warning)
        T_base_odom = inv_T(T_odom_base)
        objects_base = [t.transformed(T_base_odom) for t in tracks_odom]

        scene = None
        if self.params.describe_scene:
            try:
                scene = describe_scene(stamp_ns, ego, objects_base, list(lanes or ()),
                                       self.params.speed_limit_mps, self.params.max_scene_objects)
            except Exception as exc:  # noqa: BLE001 - a bad lane must not cost the tracks
                warnings.append(f'scene description failed ({type(exc).__name__}: {exc})')
        return FusionResult(objects_base, tracks_odom, scene, warnings, ego, from_odometry)

    def _ego_at(self, stamp_ns: int, warnings: list[str]) -> tuple[EgoState, bool]:
        """Ego pose in odom for this frame; keeps the tracker's frame consistent when odometry
        comes and goes."""
        ego = self.odometry.at(stamp_ns)
        if ego is not None:
            if not self._tracking_in_odom:
                # Tracks so far lived in base_link of a static ego: re-anchor them at today's pose.
                self.tracker.transform(ego.T_odom_base())
                self._tracking_in_odom = True
            self._held_ego = ego
            return ego, True
        newest = self.odometry.latest_stamp_ns
        age = 'no odometry received' if newest is None else \
            f'newest odometry {(stamp_ns - newest) / NS_PER_S:+.3f} s from the frame'
        if self._held_ego is not None:
            held = self._held_ego
            warnings.append(f'{NO_ODOMETRY}: ego assumed static at its last known pose ({age})')
            return EgoState(held.x, held.y, held.yaw_rad, 0.0, 0.0), False
        if self._tracking_in_odom:
            # Odometry was reset (not the LiDAR clock) and nothing is known of the pose since.
            self.tracker.reset()
            self._tracking_in_odom = False
            warnings.append('odometry pose lost after an odometry reset: tracks restarted')
        warnings.append(f'{NO_ODOMETRY}: tracking in base_link as if the ego were static ({age})')
        return EgoState(), False
