"""Camera intrinsics (ROS camera_info) and the projection of 3D points into the raw image.

The model is the one of sensor_msgs/CameraInfo: a pinhole K plus a lens distortion applied to the
normalised coordinates (x/z, y/z). Supported distortion models (the names ROS uses):

- ``plumb_bob``: OpenCV radial-tangential, D = [k1, k2, p1, p2(, k3)] (4 or 5 values; empty = none)
- ``rational_polynomial``: OpenCV rational, D = [k1, k2, p1, p2, k3, k4, k5, k6] (up to 8 values)
- ``equidistant``: OpenCV fisheye, D = [k1, k2, k3, k4]

Pixel convention is the ROS/OpenCV one: integer pixel coordinates are pixel centres, so a pixel
(u, v) is inside a W x H image when -0.5 <= u < W - 0.5 and -0.5 <= v < H - 0.5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

MIN_DEPTH_M = 0.1  # points closer than this along the optical axis are never projected

# name -> (allowed number of coefficients, number the projection uses after zero-padding)
DISTORTION_MODELS = {
    'plumb_bob': ((0, 4, 5), 5),
    'rational_polynomial': ((0, 4, 5, 6, 7, 8), 8),
    'equidistant': ((4,), 4),
}


class CalibrationError(ValueError):
    """A calibration input (file, matrix, coefficient) is missing or wrong; the message says which."""


@dataclass
class CameraModel:
    """Intrinsics of one camera. K is the 3x3 pinhole matrix in pixels, D the distortion."""
    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    distortion_model: str = 'plumb_bob'
    frame_id: str = 'camera_optical'
    name: str = 'camera'
    R: np.ndarray | None = None      # rectification (3, 3); None = identity (unrectified camera)
    P: np.ndarray | None = None      # projection (3, 4); None = [K | 0]

    def __post_init__(self):
        try:
            self.K = np.asarray(self.K, dtype=np.float64)
            self.D = np.asarray(self.D, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise CalibrationError(f'camera {self.name!r}: K and D must be numeric arrays ({e})') from None
        if self.K.shape == (9,):
            self.K = self.K.reshape(3, 3)
        if self.K.shape != (3, 3):
            raise CalibrationError(f'camera {self.name!r}: K must be 3x3 (or 9 values), got shape '
                                   f'{self.K.shape}')
        if not np.all(np.isfinite(self.K)):
            raise CalibrationError(f'camera {self.name!r}: K contains NaN or inf: {self.K.tolist()}')
        fx, fy = self.K[0, 0], self.K[1, 1]
        if not (fx > 0 and fy > 0):
            raise CalibrationError(f'camera {self.name!r}: focal lengths must be positive, got fx={fx}, '
                                   f'fy={fy}; check camera_matrix (K[0,0] and K[1,1])')
        for key in ('width', 'height'):
            value = getattr(self, key)
            if isinstance(value, bool) or not float(value).is_integer() or value <= 0:
                raise CalibrationError(f'camera {self.name!r}: image {key} must be a positive integer, '
                                       f'got {value!r}')
            setattr(self, key, int(value))
        if self.distortion_model not in DISTORTION_MODELS:
            raise CalibrationError(f'camera {self.name!r}: unknown distortion model '
                                   f'{self.distortion_model!r}; supported: {", ".join(DISTORTION_MODELS)}')
        allowed, _ = DISTORTION_MODELS[self.distortion_model]
        if len(self.D) not in allowed:
            raise CalibrationError(f'camera {self.name!r}: {self.distortion_model} takes '
                                   f'{" or ".join(map(str, allowed))} coefficients, got {len(self.D)}')
        if not np.all(np.isfinite(self.D)):
            raise CalibrationError(f'camera {self.name!r}: distortion coefficients contain NaN or inf')
        if self.R is not None:
            self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        if self.P is not None:
            self.P = np.asarray(self.P, dtype=np.float64).reshape(3, 4)
        self._max_radius = _max_monotonic_radius(self.distortion_model, self._coefficients())

    # ------------------------------------------------------------------ construction / export
    @classmethod
    def from_camera_info_fields(cls, width, height, k, d, distortion_model='plumb_bob',
                                frame_id='camera_optical', r=None, p=None, name='camera') -> 'CameraModel':
        """From the fields of a sensor_msgs/CameraInfo (k: 9 values row-major, d: list)."""
        dm = distortion_model or 'plumb_bob'  # an unset CameraInfo has an empty model name
        if r is not None and np.allclose(np.asarray(r, float).reshape(-1), 0):
            r = None  # an all-zero R in a CameraInfo means "not set"
        if p is not None and np.allclose(np.asarray(p, float).reshape(-1), 0):
            p = None
        return cls(width=width, height=height, K=np.asarray(k, dtype=np.float64).reshape(-1),
                   D=list(d), distortion_model=dm, frame_id=frame_id, name=name, R=r, P=p)

    def to_camera_info_fields(self) -> dict:
        """The fields of a sensor_msgs/CameraInfo (plain Python lists and numbers)."""
        return {'width': self.width, 'height': self.height, 'k': self.K.reshape(-1).tolist(),
                'd': self.D.tolist(), 'r': self.rectification.reshape(-1).tolist(),
                'p': self.projection.reshape(-1).tolist(), 'distortion_model': self.distortion_model,
                'frame_id': self.frame_id}

    @classmethod
    def from_yaml(cls, path, frame_id='camera_optical') -> 'CameraModel':
        """Load a ROS camera_info YAML (camera_calibration_parsers format)."""
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f'camera_info file {path} not found; pass a camera_info YAML '
                                   f'such as calibration/camera_front.yaml')
        try:
            doc = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise CalibrationError(f'camera_info file {path} is not valid YAML: '
                                   f'{str(e).splitlines()[0]}') from None
        if not isinstance(doc, dict):
            raise CalibrationError(f'camera_info file {path} does not hold a YAML mapping')

        def matrix(key, required=True):
            m = doc.get(key)
            if m is None:
                if required:
                    raise CalibrationError(f'camera_info file {path} has no {key!r}')
                return None
            data = m.get('data') if isinstance(m, dict) else m
            if data is None:
                raise CalibrationError(f'camera_info file {path}: {key!r} has no data')
            return data

        for key in ('image_width', 'image_height'):
            if key not in doc:
                raise CalibrationError(f'camera_info file {path} has no {key!r}')
        try:
            return cls(width=doc['image_width'], height=doc['image_height'], K=matrix('camera_matrix'),
                       D=matrix('distortion_coefficients', required=False) or [],
                       distortion_model=doc.get('distortion_model') or 'plumb_bob', frame_id=frame_id,
                       name=str(doc.get('camera_name') or path.stem),
                       R=matrix('rectification_matrix', required=False),
                       P=matrix('projection_matrix', required=False))
        except CalibrationError as e:
            raise CalibrationError(f'camera_info file {path}: {e}') from None
        except (TypeError, ValueError) as e:
            raise CalibrationError(f'camera_info file {path} is malformed: {e}') from None

    def to_yaml(self, path, header: str = '') -> None:
        """Write a ROS camera_info YAML (camera_calibration_parsers format)."""
        def mat(rows, cols, values):
            return {'rows': rows, 'cols': cols, 'data': [float(v) for v in np.asarray(values).reshape(-1)]}
        doc = {'image_width': self.width, 'image_height': self.height, 'camera_name': self.name,
               'camera_matrix': mat(3, 3, self.K), 'distortion_model': self.distortion_model,
               'distortion_coefficients': mat(1, len(self.D), self.D),
               'rectification_matrix': mat(3, 3, self.rectification),
               'projection_matrix': mat(3, 4, self.projection)}
        text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)
        if header:
            text = ''.join(f'# {line}\n' if line else '#\n' for line in header.splitlines()) + text
        Path(path).write_text(text)

    # ------------------------------------------------------------------ derived
    @property
    def rectification(self) -> np.ndarray:
        return np.eye(3) if self.R is None else self.R

    @property
    def projection(self) -> np.ndarray:
        return np.hstack([self.K, np.zeros((3, 1))]) if self.P is None else self.P

    def scaled(self, width: int, height: int) -> 'CameraModel':
        """The same camera for the image resized to width x height (pixel centres kept aligned)."""
        if width <= 0 or height <= 0:
            raise CalibrationError(f'cannot scale camera {self.name!r} to {width}x{height}')
        sx, sy = width / self.width, height / self.height
        S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        return CameraModel(width, height, S @ self.K, self.D.copy(), self.distortion_model,
                           self.frame_id, self.name, None if self.R is None else self.R.copy(),
                           None if self.P is None else S @ self.P)

    def _coefficients(self) -> np.ndarray:
        _, n = DISTORTION_MODELS[self.distortion_model]
        return np.pad(self.D, (0, n - len(self.D)))

    # ------------------------------------------------------------------ projection
    def distort(self, x, y):
        """Apply the lens distortion to normalised coordinates; returns (xd, yd, valid)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        c = self._coefficients()
        r2 = x * x + y * y
        valid = r2 <= self._max_radius ** 2
        if self.distortion_model == 'equidistant':
            r = np.sqrt(r2)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
            scale = np.divide(theta_d, r, out=np.ones_like(r), where=r > 1e-12)
            return x * scale, y * scale, valid
        k1, k2, p1, p2, k3 = c[:5]
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        if self.distortion_model == 'rational_polynomial':
            k4, k5, k6 = c[5:8]
            radial = radial / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xy = x * y
        xd = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy
        return xd, yd, valid

    def project(self, points_cam):
        """Project (N, 3+) points in the camera optical frame into the (raw, distorted) image.

        Returns uv (N, 2) float pixels (NaN where not projectable), depth (N,) = z in metres and
        in_image (N,) bool. Points with z <= 0.1 m, or so far off-axis that the distortion
        polynomial would fold them back, are never in the image.
        """
        points_cam = np.asarray(points_cam, dtype=np.float64)
        if points_cam.ndim != 2 or points_cam.shape[1] < 3:
            raise ValueError(f'points_cam must be (N, 3+), got shape {points_cam.shape}')
        z = points_cam[:, 2]
        front = z > MIN_DEPTH_M
        safe_z = np.where(front, z, 1.0)
        xd, yd, valid = self.distort(points_cam[:, 0] / safe_z, points_cam[:, 1] / safe_z)
        ok = front & valid & np.isfinite(xd) & np.isfinite(yd)
        K = self.K
        u = K[0, 0] * xd + K[0, 1] * yd + K[0, 2]
        v = K[1, 1] * yd + K[1, 2]
        uv = np.where(ok[:, None], np.stack([u, v], axis=1), np.nan)
        with np.errstate(invalid='ignore'):
            in_image = (ok & (uv[:, 0] >= -0.5) & (uv[:, 0] < self.width - 0.5)
                        & (uv[:, 1] >= -0.5) & (uv[:, 1] < self.height - 0.5))
        return uv, z.copy(), in_image


def _max_monotonic_radius(model: str, c: np.ndarray, r_limit: float = 20.0) -> float:
    """Largest normalised radius up to which the distorted radius grows with the true radius.

    Beyond it a polynomial distortion folds far off-axis points back into the image, so such
    points are treated as not projectable.
    """
    r = np.linspace(0.0, r_limit, 20001)
    r2 = r * r
    if model == 'equidistant':
        theta = np.arctan(r)
        t2 = theta * theta
        rd = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
    else:
        radial = 1 + r2 * (c[0] + r2 * (c[1] + r2 * c[4]))
        if model == 'rational_polynomial':
            radial = radial / (1 + r2 * (c[5] + r2 * (c[6] + r2 * c[7])))
        rd = r * radial
    with np.errstate(invalid='ignore'):
        bad = ~(np.diff(rd) > 0)
    if not bad.any():
        return math.inf
    return float(r[np.argmax(bad)])


class CameraInfoCache:
    """The CameraModel of the latest camera_info, rebuilt only when its content changes: a camera
    driver sends the same camera_info with every image, and building a model (validation, the
    lens's monotonic radius) at 10-30 Hz in every consumer is wasted CPU on a shared computer.
    A camera_info that fails validation is never cached, so each bad one is reported."""

    def __init__(self):
        self.model: CameraModel | None = None
        self._key = None

    def update(self, fields: dict) -> CameraModel:
        """fields: fmdrive.msgs.camera_info_to_fields(msg). Raises what from_camera_info_fields
        raises for an invalid one."""
        key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(fields.items()))
        if key != self._key or self.model is None:
            self.model = CameraModel.from_camera_info_fields(**fields)
            self._key = key
        return self.model

