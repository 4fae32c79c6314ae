"""The learned LiDAR encoder behind the same interface as the classical path: a sweep in its own
frame plus its mounting -> objects (and lane markings) in base_link, as a LidarResult.

The network (any card: ours `fmdrive_centerpoint`, Autoware's two-file `autoware_centerpoint`) runs
through fmdrive/inference on ONNX Runtime or TensorRT; pillarisation and the BEV scatter are numpy.
Lane markings are not the network's job: bright returns near the ground plane of base_link (the
REP-105 base_link sits on the ground) go to the same lane finder the classical path uses.
"""
from __future__ import annotations

import time

import numpy as np

from fmdrive.perception.lanes import LaneParams, detect_lanes
from fmdrive.perception.lidar_classical import LidarResult

GROUND_BAND_M = 0.3   # |z| in base_link of the returns handed to the lane finder


class LearnedLidarDetector:
    def __init__(self, detector, detect_lanes: bool = True, lane_width_m: float = 3.5):
        self.detector = detector                      # fmdrive.inference.detectors.LidarDetector
        self.detect_lanes, self.lane_width_m = detect_lanes, lane_width_m
        self._lane_params = LaneParams()

    def detect(self, points, T_base_lidar) -> LidarResult:
        result = LidarResult()
        t0 = time.perf_counter()
        pts = np.asarray(points, np.float32)
        pts = pts[np.isfinite(pts[:, :3]).all(axis=1)] if len(pts) else pts.reshape(0, 4)
        T = np.asarray(T_base_lidar, np.float32)
        base = np.empty((len(pts), 4), np.float32)
        base[:, :3] = pts[:, :3] @ T[:3, :3].T + T[:3, 3]
        base[:, 3] = pts[:, 3] if pts.shape[1] > 3 else 0.0
        try:
            result.objects = self.detector.detect(base)
        except Exception as e:  # noqa: BLE001 - a perception node must survive any sweep
            result.warnings.append(f'learned LiDAR encoder failed ({type(e).__name__}: {e}); no objects')
        result.timings_ms.update(self.detector.last_timing_ms or {})
        if self.detect_lanes:
            ground = base[np.abs(base[:, 2]) < GROUND_BAND_M]
            result.lanes = detect_lanes(ground, self.lane_width_m, self._lane_params)
        result.timings_ms['total'] = (time.perf_counter() - t0) * 1e3
        return result
