"""The learned camera encoder's ROS-free core: an image of any resolution (and the camera_info it was
taken with) -> 2D objects in that image's pixels, each with a score, a class, the model's embedding
and, when the card has a depth head and the camera is known, a rough centre in the camera frame.

The network (any camera card: ours `fmdrive_centernet`, or `yolox`) runs through fmdrive/inference:
letterbox to the card's input, ONNX Runtime or TensorRT, the convention's decoder, boxes back to
source pixels. The dense embedding map of a `fmdrive_centernet` card is handed out as the feature map.

    core = LearnedCameraDetector(load_detector('engines/camera_centernet', 'int8', threads=1))
    result = core.detect(image_rgb, camera_model)       # CameraResult: objects, features, warnings
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fmdrive.objects import Object3D

MAX_IMAGE_PIXELS = 7680 * 4320     # 8K; anything larger is a broken header, not a camera


class ImageError(ValueError):
    """An image the encoder cannot take (wrong shape or type, empty, absurdly large)."""


@dataclass
class CameraResult:
    objects: list = field(default_factory=list)     # Object3D: box2d in source pixels, size 0 (no 3D box)
    features: np.ndarray | None = None              # (C, h, w) float32 dense embedding map, or None
    feature_stride: int = 0                         # network input pixels per feature cell
    warnings: list = field(default_factory=list)
    timings_ms: dict = field(default_factory=dict)


def check_image(image) -> np.ndarray:
    """(H, W, 3) uint8, non-empty and at most MAX_IMAGE_PIXELS, or ImageError saying what is wrong."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f'image must be (height, width, 3), got shape {image.shape}')
    if image.dtype != np.uint8:
        raise ImageError(f'image must be uint8 (rgb8/bgr8), got {image.dtype}')
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ImageError(f'image has zero size ({w}x{h})')
    if h * w > MAX_IMAGE_PIXELS:
        raise ImageError(f'image {w}x{h} is larger than {MAX_IMAGE_PIXELS} pixels (8K); refusing it')
    return image


def centres_in_camera(boxes: np.ndarray, distances_m: np.ndarray, camera) -> np.ndarray:
    """(N, 3) points in the camera optical frame at distance_m along the pinhole ray through each box
    centre (distortion ignored: a rough position for association, not a measurement)."""
    u = (boxes[:, 0] + boxes[:, 2]) / 2
    v = (boxes[:, 1] + boxes[:, 3]) / 2
    K = camera.K
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    rays = np.stack([x, y, np.ones_like(x)], axis=1)
    return rays / np.linalg.norm(rays, axis=1, keepdims=True) * distances_m[:, None]


class LearnedCameraDetector:
    def __init__(self, detector):
        self.detector = detector                      # fmdrive.inference.detectors.CameraDetector
        self.name = detector.card.name

    def detect(self, image, camera=None, image_order: str = 'rgb') -> CameraResult:
        """image: (H, W, 3) uint8 in image_order; camera: the CameraModel it was taken with (a
        camera_info for another resolution is scaled to this image, said in the warnings)."""
        t0 = time.perf_counter()
        image = check_image(image)
        result = CameraResult()
        h, w = image.shape[:2]
        if camera is not None and (camera.width, camera.height) != (w, h):
            result.warnings.append(f'camera_info is {camera.width}x{camera.height} but the image is {w}x{h}; '
                                   'its intrinsics are scaled to the image')
            camera = camera.scaled(w, h)
        try:
            detections = self.detector.detect(image, image_order)
        except Exception as e:  # noqa: BLE001 - a perception node must survive any frame
            result.warnings.append(f'learned camera encoder failed ({type(e).__name__}: {e}); no objects')
            return result
        result.timings_ms.update(self.detector.last_timing_ms or {})
        finite = [d for d in detections if np.isfinite(d.score) and np.isfinite(d.box2d).all()
                  and np.isfinite(d.embedding).all()]
        if len(finite) < len(detections):
            result.warnings.append(f'{len(detections) - len(finite)} detection(s) with NaN/inf dropped')
        boxes = np.array([d.box2d for d in finite], np.float64).reshape(-1, 4)
        centres = np.zeros((len(finite), 3))
        depth = np.array([np.nan if d.depth_m is None else d.depth_m for d in finite], np.float64)
        has_depth = np.isfinite(depth) & (depth > 0)
        if camera is not None and has_depth.any():
            centres[has_depth] = centres_in_camera(boxes[has_depth], depth[has_depth], camera)
        result.objects = [Object3D(centres[j], (0.0, 0.0, 0.0), 0.0, d.label, float(d.score), box2d=boxes[j],
                                   embedding=d.embedding, embedding_space=self.name if len(d.embedding) else '')
                          for j, d in enumerate(finite)]
        emb = getattr(self.detector, 'last_outputs', {}).get('embedding')
        if emb is not None and self.detector.card.io_convention == 'fmdrive_centernet':
            result.features = emb[0]
            result.feature_stride = int(round(self.detector.input.shape[2] / emb.shape[2]))
        result.timings_ms['total'] = (time.perf_counter() - t0) * 1e3
        return result
