"""One small TF buffer, ROS-free: transforms from /tf_static and /tf (or a calibration YAML as the
fallback) keyed by frame ids, chains composed, whatever the frames are called.

Every consumer of geometry (nodes, visualizer, report, eval, calib-check) asks the same question,
"T_<target>_<source> at this stamp?", through `lookup`. The tree is the one tf2 keeps: each frame has
at most one parent; a transform parent -> child is the child's pose in the parent (p_parent =
T_parent_child @ p_child), exactly what a geometry_msgs/TransformStamped with header.frame_id=parent
and child_frame_id=child carries.

Sources, in order of trust: /tf_static and /tf from the vehicle or the bag, then the YAML fallback
(calibration/extrinsics.yaml). A published transform replaces a YAML one for the same child; when they
disagree beyond a tolerance the buffer remembers it (`disagreements`) so the owner can warn once.

Camera frames: REP-103 says an image's frame is the optical frame (z forward, x right, y down), but
bags in the wild also name a body-convention frame (x forward, z up). `optical_T` tells them apart
from the rotation itself (which way the frame's y and z axes point in the target frame) and returns
the optical pose either way.
"""
from __future__ import annotations

import bisect
import functools
import threading
from dataclasses import dataclass, field

import numpy as np

from fmdrive.calibration.camera_model import CalibrationError
from fmdrive.geometry import inv_T, make_T, quat_to_rot, rot_to_quat

DYNAMIC_BUFFER_NS = 10_000_000_000     # /tf history kept per child (tf2's default cache is 10 s)
DISAGREE_TRANSLATION_M = 0.02          # a YAML fallback this far from the published TF is reported
DISAGREE_ROTATION_DEG = 0.5
# optical <- body: the optical frame's axes (x right, y down, z forward) in a body frame (x fwd, y left, z up)
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class TransformError(CalibrationError, LookupError):
    """No transform between two frames (unknown frame, no chain, or no data at that time)."""


@dataclass
class _Edge:
    parent: str
    source: str                      # 'tf_static', 'tf' or 'yaml' (or a file name)
    static: bool
    T: np.ndarray | None = None      # static transforms
    stamps: list = field(default_factory=list)    # dynamic: sorted stamps (ns) ...
    values: list = field(default_factory=list)    # ... and their 4x4 transforms


def rotation_angle_deg(R) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def interpolate_T(T0, T1, w: float) -> np.ndarray:
    """Pose between T0 (w=0) and T1 (w=1): translation linear, rotation by quaternion slerp."""
    q0, q1 = rot_to_quat(T0[:3, :3]), rot_to_quat(T1[:3, :3])
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + w * (q1 - q0)
    else:
        theta = np.arccos(dot)
        q = (np.sin((1 - w) * theta) * q0 + np.sin(w * theta) * q1) / np.sin(theta)
    return make_T(quat_to_rot(q / np.linalg.norm(q)), (1 - w) * T0[:3, 3] + w * T1[:3, 3])


def _synchronized(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._mutex:
            return method(self, *args, **kwargs)
    return wrapper


class TransformBuffer:
    """Static and time-stamped transforms between named frames; `lookup` composes any chain.
    Thread-safe: every public method holds the buffer's own lock."""

    def __init__(self, dynamic_buffer_ns: int = DYNAMIC_BUFFER_NS):
        # one lock: /tf arrives on the executor thread while a node's worker looks transforms up
        self._mutex = threading.RLock()
        self._edges: dict[str, _Edge] = {}   # child -> edge to its parent
        self.dynamic_buffer_ns = dynamic_buffer_ns
        self.disagreements: list[str] = []   # YAML vs published, one line each (read and cleared by owners)
        self.replaced: list[str] = []        # edges dropped because a newer transform contradicted them

    # ------------------------------------------------------------------ filling
    @classmethod
    def from_extrinsics(cls, extrinsics, source: str | None = None) -> 'TransformBuffer':
        """A buffer holding a calibration file's transforms (fmdrive.calibration.extrinsics.Extrinsics)."""
        buf = cls()
        buf.add_extrinsics(extrinsics, source)
        return buf

    @_synchronized
    def add_extrinsics(self, extrinsics, source: str | None = None) -> None:
        """The fallback calibration: added only where nothing published the child already. `source`
        defaults to the file it came from."""
        source = source or getattr(extrinsics, 'source', '') or 'yaml'
        for child, T in extrinsics.items():
            if child not in self._edges:
                self._edges[child] = _Edge(extrinsics.frame_id, source, True, np.array(T, dtype=np.float64))

    @_synchronized
    def set_transform(self, parent: str, child: str, T_parent_child, stamp_ns: int = 0, static: bool = True,
                      source: str | None = None) -> None:
        """Add one transform (as a TransformStamped carries it). Invalid ones raise TransformError."""
        parent, child = str(parent).lstrip('/'), str(child).lstrip('/')
        T = np.asarray(T_parent_child, dtype=np.float64)
        if not parent or not child or parent == child:
            raise TransformError(f'transform with frame ids {parent!r} -> {child!r}: both must be set and differ')
        if T.shape != (4, 4) or not np.isfinite(T).all():
            raise TransformError(f'transform {parent} -> {child} is not a finite 4x4 matrix')
        R = T[:3, :3]
        if np.abs(R.T @ R - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0:
            raise TransformError(f'transform {parent} -> {child} has no proper rotation (quaternion not unit?)')
        source = source or ('tf_static' if static else 'tf')
        old = self._edges.get(child)
        if old is not None and old.source not in ('tf_static', 'tf') and source in ('tf_static', 'tf'):
            self._note_disagreement(parent, child, old, T, source)
            old = None                                   # a published transform replaces the fallback
        if self._creates_cycle(parent, child):
            # The newest word on the tree wins: the edge that put `parent` under `child` is dropped
            # (else one stray transform could lock the true calibration out for ever).
            frame = parent
            while self._edges[frame].parent != child:
                frame = self._edges[frame].parent
            self.replaced.append(f'{child} -> {frame} dropped: {parent} -> {child} arrived after it')
            del self._edges[frame]
        if static:
            self._edges[child] = _Edge(parent, source, True, T)
            return
        if old is None or old.static or old.parent != parent:
            old = self._edges[child] = _Edge(parent, source, False)
        i = bisect.bisect(old.stamps, stamp_ns)
        if i and old.stamps[i - 1] == stamp_ns:
            old.values[i - 1] = T
        else:
            old.stamps.insert(i, stamp_ns)
            old.values.insert(i, T)
        cut = bisect.bisect_left(old.stamps, old.stamps[-1] - self.dynamic_buffer_ns)
        if cut:
            del old.stamps[:cut], old.values[:cut]

    @_synchronized
    def add_transforms(self, transforms, stamp_ns: int = 0, static: bool = True) -> int:
        """[(parent, child, T), ...] as fmdrive.msgs.tf_to_transforms gives them; invalid entries are
        skipped. Returns how many were rejected."""
        rejected = 0
        for item in transforms:
            parent, child, T = item[:3]
            stamp = item[3] if len(item) > 3 else stamp_ns
            try:
                self.set_transform(parent, child, T, stamp, static)
            except TransformError:
                rejected += 1
        return rejected

    def _creates_cycle(self, parent: str, child: str) -> bool:
        frame, seen = parent, 0
        while frame in self._edges and seen < 1000:
            frame = self._edges[frame].parent
            if frame == child:
                return True
            seen += 1
        return parent == child

    def _note_disagreement(self, parent, child, old: _Edge, T, source):
        if old.parent != parent or old.T is None:
            return
        dt = float(np.linalg.norm(old.T[:3, 3] - T[:3, 3]))
        dr = rotation_angle_deg(old.T[:3, :3].T @ T[:3, :3])
        if dt > DISAGREE_TRANSLATION_M or dr > DISAGREE_ROTATION_DEG:
            self.disagreements.append(
                f'{old.source} says {parent} -> {child} differently from {source} '
                f'({dt:.3f} m, {dr:.2f} deg apart); using {source}')

    # ------------------------------------------------------------------ queries
    @_synchronized
    def frames(self) -> set:
        return set(self._edges) | {e.parent for e in self._edges.values()}

    @_synchronized
    def sources(self) -> dict:
        """{child: source} of every edge: what /diagnostics reports as the calibration source."""
        return {child: e.source for child, e in self._edges.items()}

    @_synchronized
    def source_of(self, target: str, source: str) -> str:
        """'tf', 'tf_static', 'yaml' or a mix ('tf_static+yaml') along the chain target <- source."""
        names = sorted({self._edges[f].source for f in self._chain_frames(target, source)})
        return '+'.join(names) if names else 'identity'

    def _path_to_root(self, frame: str) -> list[str]:
        path = [frame]
        while path[-1] in self._edges and len(path) < 1000:
            path.append(self._edges[path[-1]].parent)
        return path

    def _chain_frames(self, target: str, source: str) -> list[str]:
        """The child frames whose edges the chain target <- source uses."""
        up_s, up_t = self._path_to_root(source), self._path_to_root(target)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise TransformError(self._no_chain(target, source))
        return up_s[:up_s.index(common)] + up_t[:up_t.index(common)]

    def _no_chain(self, target, source) -> str:
        known = ', '.join(sorted(self.frames())) or 'none'
        missing = [f for f in (target, source) if f not in self.frames()]
        why = f'unknown frame {missing[0]!r}' if missing else 'they are in different trees'
        return f'no transform {target} <- {source}: {why}; known frames: {known}'

    def _edge_T(self, child: str, stamp_ns: int | None) -> np.ndarray:
        e = self._edges[child]
        if e.static:
            return e.T
        if stamp_ns is None or len(e.stamps) == 1:
            return e.values[-1]
        i = bisect.bisect_left(e.stamps, stamp_ns)
        if i == 0:
            if e.stamps[0] - stamp_ns > self.dynamic_buffer_ns:
                raise TransformError(f'no transform {e.parent} -> {child} at {stamp_ns}: the oldest is '
                                     f'{(e.stamps[0] - stamp_ns) / 1e9:.2f} s later')
            return e.values[0]
        if i == len(e.stamps):
            return e.values[-1]     # newest known (tf2 would wait; a static car is a fair reading)
        s0, s1 = e.stamps[i - 1], e.stamps[i]
        return interpolate_T(e.values[i - 1], e.values[i], (stamp_ns - s0) / (s1 - s0))

    @_synchronized
    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray:
        """T_<target>_<source> (p_target = T @ p_source) at stamp_ns (None: latest)."""
        target, source = str(target).lstrip('/'), str(source).lstrip('/')
        if target == source:
            return np.eye(4)
        up_s, up_t = self._path_to_root(source), self._path_to_root(target)
        set_t = set(up_t)
        common = next((f for f in up_s if f in set_t), None)
        if common is None:
            raise TransformError(self._no_chain(target, source))
        T_common_source = np.eye(4)
        for child in reversed(up_s[:up_s.index(common)]):     # common ... -> source
            T_common_source = T_common_source @ self._edge_T(child, stamp_ns)
        T_common_target = np.eye(4)
        for child in reversed(up_t[:up_t.index(common)]):
            T_common_target = T_common_target @ self._edge_T(child, stamp_ns)
        return inv_T(T_common_target) @ T_common_source

    @_synchronized
    def can_transform(self, target: str, source: str, stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TransformError:
            return False

    @_synchronized
    def optical_T(self, target: str, camera_frame: str, stamp_ns: int | None = None) -> np.ndarray:
        """T_<target>_<optical> for the camera whose images carry `camera_frame`.

        If the frame is optical (its y axis points down in `target`), that is the lookup itself; if it
        is a body-convention frame (its z axis points up), the optical rotation is appended."""
        T = self.lookup(target, camera_frame, stamp_ns)
        return T @ make_T(R_BODY_OPTICAL) if is_body_convention(T) else T


def is_body_convention(T_base_camera) -> bool:
    """Whether a camera frame, given its pose in a z-up frame, is x-forward/z-up (body) rather than
    z-forward/y-down (optical)."""
    R = np.asarray(T_base_camera)[:3, :3]
    return bool(R[2, 2] > 0.5 and R[2, 1] > -0.5)   # the frame's z axis points up, its y axis not down


def stamped_transforms(msg) -> list:
    """[(parent, child, T_parent_child, stamp_ns), ...] of a tf2_msgs/TFMessage (duck-typed, no ROS
    import), each with its own header stamp; quaternions are normalised, zero ones give NaN (rejected
    by set_transform)."""
    out = []
    for tf in msg.transforms:
        t, q = tf.transform.translation, tf.transform.rotation
        quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
        norm = np.linalg.norm(quat)
        R = quat_to_rot(quat) if norm > 1e-9 and np.isfinite(norm) else np.full((3, 3), np.nan)
        stamp_ns = int(tf.header.stamp.sec) * 1_000_000_000 + int(tf.header.stamp.nanosec)
        out.append((tf.header.frame_id, tf.child_frame_id, make_T(R, (t.x, t.y, t.z)), stamp_ns))
    return out
