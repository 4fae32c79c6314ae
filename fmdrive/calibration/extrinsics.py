"""Sensor extrinsics: a YAML of rigid transforms from one parent frame to its children.

Format (calibration/extrinsics.yaml)::

    frame_id: base_link                 # the parent frame
    transforms:
      - child_frame_id: lidar           # T_base_lidar: p_base = T @ p_lidar (the lidar's pose in base_link)
        translation: [1.0, 0.0, 1.9]
        rotation_xyzw: [0.0, 0.0, 0.0, 1.0]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from fmdrive.calibration.camera_model import CalibrationError
from fmdrive.config import EXTRINSICS_FILE, FRAMES
from fmdrive.geometry import inv_T, make_T, quat_to_rot, rot_to_quat

QUAT_NORM_TOLERANCE = 1e-2      # |q| may differ from 1 by this much (rounding in hand-written files)
ROTATION_TOLERANCE = 1e-4       # max |R^T R - I| accepted when saving


class MissingFrameError(CalibrationError, KeyError):
    """The extrinsics have no transform for a requested frame (a KeyError too, for dict users)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ''


class Extrinsics(dict):
    """{child_frame_id: T_parent_child (4x4)} of one parent frame (`frame_id`), as read from a file.

    A plain dict of the children (items(), get(), in), plus transform(to, from) between any two
    frames of the file; a missing child raises MissingFrameError naming the file and the children.
    """

    def __init__(self, frame_id: str, transforms: dict | None = None, source: str = ''):
        super().__init__(transforms or {})
        self.frame_id = frame_id
        self.source = source

    @property
    def transforms(self) -> dict:
        return dict(self)

    def __missing__(self, child):
        where = f' in {self.source}' if self.source else ''
        raise MissingFrameError(f'no transform {self.frame_id} -> {child!r}{where}; children are '
                                f'{", ".join(self) or "none"}')

    def T_parent(self, frame: str) -> np.ndarray:
        """T_<parent>_<frame> (identity for the parent itself)."""
        return np.eye(4) if frame == self.frame_id else np.array(self[frame], dtype=np.float64)

    def transform(self, to_frame: str, from_frame: str) -> np.ndarray:
        """T_<to>_<from> between any two frames of the file (parent or children)."""
        return inv_T(self.T_parent(to_frame)) @ self.T_parent(from_frame)


def _rigid_from_yaml(entry: dict, where: str) -> np.ndarray:
    try:
        t = np.asarray(entry['translation'], dtype=np.float64)
        q = np.asarray(entry['rotation_xyzw'], dtype=np.float64)
    except KeyError as e:
        raise CalibrationError(f'{where}: missing {e.args[0]!r} (need translation and rotation_xyzw)') from None
    except (TypeError, ValueError):
        raise CalibrationError(f'{where}: translation and rotation_xyzw must be lists of numbers') from None
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise CalibrationError(f'{where}: translation must be 3 finite numbers, got {entry["translation"]}')
    if q.shape != (4,) or not np.all(np.isfinite(q)):
        raise CalibrationError(f'{where}: rotation_xyzw must be 4 finite numbers (x, y, z, w), got '
                               f'{entry["rotation_xyzw"]}')
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise CalibrationError(f'{where}: rotation_xyzw {q.tolist()} is not a unit quaternion '
                               f'(norm {norm:.4f}); write the rotation as a normalised (x, y, z, w)')
    return make_T(quat_to_rot(q / norm), t)


def load_extrinsics(path=EXTRINSICS_FILE) -> Extrinsics:
    """Load an extrinsics YAML: Extrinsics(frame_id=parent, transforms={child: T_parent_child})."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f'extrinsics file {path} not found; pass a YAML like calibration/extrinsics.yaml')
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CalibrationError(f'extrinsics file {path} is not valid YAML: {str(e).splitlines()[0]}') from None
    if not isinstance(doc, dict) or 'frame_id' not in doc or not isinstance(doc.get('transforms'), list):
        raise CalibrationError(f'extrinsics file {path} must have "frame_id" and a list "transforms"')
    transforms = {}
    for i, entry in enumerate(doc['transforms']):
        if not isinstance(entry, dict) or 'child_frame_id' not in entry:
            raise CalibrationError(f'extrinsics file {path}: transforms[{i}] has no child_frame_id')
        child = str(entry['child_frame_id'])
        if child in transforms:
            raise CalibrationError(f'extrinsics file {path}: child frame {child!r} appears twice')
        transforms[child] = _rigid_from_yaml(entry, f'extrinsics file {path}, child {child!r}')
    return Extrinsics(str(doc['frame_id']), transforms, str(path))


def save_extrinsics(path, parent: str, transforms: dict, header: str = '') -> None:
    """Write {child: T_parent_child} as an extrinsics YAML (rotations must be rigid)."""
    entries = []
    for child, T in transforms.items():
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise CalibrationError(f'T_{parent}_{child} must be a finite 4x4 matrix, got shape {T.shape}')
        R = T[:3, :3]
        if np.abs(R.T @ R - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(R) < 0:
            raise CalibrationError(f'T_{parent}_{child}: rotation block is not a proper rotation')
        entries.append({'child_frame_id': str(child),
                        'translation': [round(float(v), 9) for v in T[:3, 3]],
                        'rotation_xyzw': [round(float(v), 9) for v in rot_to_quat(R)]})
    text = yaml.safe_dump({'frame_id': parent, 'transforms': entries}, sort_keys=False,
                          default_flow_style=None)
    if header:
        text = ''.join(f'# {line}\n' if line else '#\n' for line in header.splitlines()) + text
    Path(path).write_text(text)


def T_base_lidar(path=EXTRINSICS_FILE) -> np.ndarray:
    """T_base_lidar from calibration/extrinsics.yaml (or another file with the same frames)."""
    return load_extrinsics(path).transform(FRAMES['base'], FRAMES['lidar'])


def T_base_camera(path=EXTRINSICS_FILE) -> np.ndarray:
    """T_base_camera (camera_optical) from calibration/extrinsics.yaml."""
    return load_extrinsics(path).transform(FRAMES['base'], FRAMES['camera'])
