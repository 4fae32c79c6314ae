"""Image -> network input as the card says: letterbox (or plain resize), channel order, scale,
mean/std, NCHW float32. The returned ImageTransform maps input pixels back to source pixels, so
decoded boxes land on the camera image whatever its resolution."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from fmdrive.inference.card import TensorSpec


@dataclass(frozen=True)
class ImageTransform:
    """input_px = source_px * scale + pad (per axis); source_size = (width, height)."""
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    source_size: tuple

    def to_source(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) u_min, v_min, u_max, v_max in network input pixels -> source pixels, clipped."""
        b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] - self.pad_x) / self.scale_x
        b[:, [1, 3]] = (b[:, [1, 3]] - self.pad_y) / self.scale_y
        w, h = self.source_size
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0.0, w)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0.0, h)
        return b


def image_transform(source_size: tuple, input_hw: tuple, letterbox) -> ImageTransform:
    """The resize (and padding) that fits a source image of (width, height) into input (H, W)."""
    w, h = source_size
    H, W = input_hw
    if letterbox is None:
        return ImageTransform(W / w, H / h, 0.0, 0.0, (w, h))
    s = min(W / w, H / h)
    new_w, new_h = round(w * s), round(h * s)
    if letterbox.align == 'top_left':
        pad_x = pad_y = 0.0
    else:
        pad_x, pad_y = float((W - new_w) // 2), float((H - new_h) // 2)
    return ImageTransform(new_w / w, new_h / h, pad_x, pad_y, (w, h))


def image_to_input(image: np.ndarray, spec: TensorSpec, image_order: str = 'rgb') -> tuple[np.ndarray, ImageTransform]:
    """(H, W, 3) uint8 image in image_order ('rgb' or 'bgr') -> ([1, 3, H, W] float32, transform)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be (height, width, 3), got {image.shape}')
    norm = spec.normalisation
    H, W = spec.shape[2], spec.shape[3]
    src_h, src_w = image.shape[:2]
    t = image_transform((src_w, src_h), (H, W), norm.letterbox)
    new_w, new_h = round(src_w * t.scale_x), round(src_h * t.scale_y)
    resized = image if (new_w, new_h) == (src_w, src_h) else np.asarray(
        Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.BILINEAR))
    if norm.channel_order != image_order:
        resized = resized[:, :, ::-1]
    pad = norm.letterbox.pad_value if norm.letterbox else 0.0
    canvas = np.full((H, W, 3), pad, dtype=np.float32)
    x0, y0 = int(t.pad_x), int(t.pad_y)
    canvas[y0:y0 + new_h, x0:x0 + new_w] = resized
    canvas *= np.float32(norm.scale)
    canvas -= np.asarray(norm.mean, np.float32)
    canvas /= np.asarray(norm.std, np.float32)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), t
