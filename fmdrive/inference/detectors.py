"""Card -> a detector the encoder nodes call: pre-process, backend(s), decode, chosen by io_convention.

    detector = load_detector('engines/camera_centernet', precision='int8', backend='auto', threads=1)
    detections = detector.detect(image_rgb)          # CameraDetector -> list[Detection2D], source pixels
    objects = lidar_detector.detect(points_xyzi)     # LidarDetector -> list[Object3D], the points' frame
"""
from __future__ import annotations

import time

import numpy as np

from fmdrive.inference.backend import make_backend
from fmdrive.inference.card import CardError, ModelCard, load_card
from fmdrive.inference.decoders import (
    decode_autoware_centerpoint,
    decode_fmdrive_centernet,
    decode_fmdrive_centerpoint,
    decode_yolox,
)
from fmdrive.inference.pillars import (
    autoware_pillar_features,
    bev_canvas,
    scatter_to_bev,
)
from fmdrive.inference.preprocess import image_to_input


class CameraDetector:
    def __init__(self, card: ModelCard, precision: str = 'fp32', backend: str = 'auto', **options):
        if card.task != 'camera_detector':
            raise CardError(f'card {card.path}: task: {card.task} is not a camera_detector')
        self.card = card
        self.backend = make_backend(card, precision, backend, 'model', **options)
        self.input = card.networks['model'].inputs[0]
        self.decode = {'fmdrive_centernet': decode_fmdrive_centernet, 'yolox': decode_yolox}[card.io_convention]
        self.last_timing_ms = {}

    def detect(self, image: np.ndarray, image_order: str = 'rgb') -> list:
        """(H, W, 3) uint8 image of any size -> Detection2D list with boxes in its pixels."""
        t0 = time.perf_counter()
        tensor, transform = image_to_input(image, self.input, image_order)
        t1 = time.perf_counter()
        outputs = self.backend.infer({self.input.name: tensor})
        t2 = time.perf_counter()
        detections = self.decode(outputs, self.card, transform)
        self.last_outputs = outputs
        self.last_timing_ms = {'preprocess_ms': (t1 - t0) * 1e3, 'infer_ms': (t2 - t1) * 1e3,
                               'decode_ms': (time.perf_counter() - t2) * 1e3}
        return detections

    def describe(self) -> dict:
        return {'io_convention': self.card.io_convention, **self.backend.describe()}


class LidarDetector:
    def __init__(self, card: ModelCard, precision: str = 'fp32', backend: str = 'auto', **options):
        if card.task != 'lidar_detector':
            raise CardError(f'card {card.path}: task: {card.task} is not a lidar_detector')
        self.card, self.grid = card, card.bev_grid
        self.backends = {name: make_backend(card, precision, backend, name, **options) for name in card.networks}
        self.last_timing_ms = {}

    def detect(self, points: np.ndarray) -> list:
        """Points (N, 3 or 4) in the model's frame (base_link for our models) -> Object3D list."""
        t0 = time.perf_counter()
        if self.card.io_convention == 'fmdrive_centerpoint':
            outputs = self.backends['model'].infer({'bev': bev_canvas(points, self.grid)})
            t1 = time.perf_counter()
            objects = decode_fmdrive_centerpoint(outputs, self.card)
        else:
            # Autoware's 4th point feature is the sweep's time lag, 0 for the current sweep
            xyzt = np.zeros((len(points), 4), np.float32)
            xyzt[:, :3] = np.asarray(points, np.float32)[:, :3]
            pillars = autoware_pillar_features(xyzt, self.grid)
            encoded = self.backends['encoder'].infer({'input_features': pillars.features})
            canvas = scatter_to_bev(encoded['pillar_features'], pillars.coords, self.grid)
            outputs = self.backends['head'].infer({'spatial_features': canvas})
            t1 = time.perf_counter()
            objects = decode_autoware_centerpoint(outputs, self.card)
        self.last_outputs = outputs
        self.last_timing_ms = {'infer_ms': (t1 - t0) * 1e3, 'decode_ms': (time.perf_counter() - t1) * 1e3}
        return objects

    def describe(self) -> dict:
        return {'io_convention': self.card.io_convention,
                'networks': {name: b.describe() for name, b in self.backends.items()}}


def load_detector(card, precision: str = 'fp32', backend: str = 'auto', **options):
    """A CameraDetector or LidarDetector for a card (a ModelCard, or a card.yaml / model directory)."""
    if not isinstance(card, ModelCard):
        card = load_card(card)          # every variant's hash and signature, before any backend starts
    if card.task == 'camera_detector':
        return CameraDetector(card, precision, backend, **options)
    if card.task == 'lidar_detector':
        return LidarDetector(card, precision, backend, **options)
    raise CardError(f'card {card.path}: task: {card.task} models are not detectors (the planner loads them)')
