"""The learned LiDAR encoder behind the same interface as the classical path: a sweep in its own
frame plus its mounting -> objects (and lane markings) in base_link, as a LidarResult.

The network (any card: ours `fmdrive_centerpoint`, Autoware's two-file `autoware_centerpoint`) runs
through fmdrive/inference on ONNX Runtime or TensorRT; pillarisation and the BEV scatter are numpy.
Lane markings are not the network's job: bright returns near the ground plane of base_link (the
REP-105 base_link sits on the ground) go to the same lane finder the classical path uses.

With `classical` given (the node's `unknown_obstacles`), the classical path runs on the same sweep
beside the network: every cluster of it that no learned box explains joins as label `unknown` (a
bin, a post, debris, a trailer: what the network has no class for, and the planner must still avoid,
as lidar_centerpoint's deployments pair it with a clustering of what is left), and its ground fit
gives the lanes (a slope is then no problem for them).

Small objects (pedestrians, cones) get their BEV centre from their own returns
(refine_small_objects): a head that regresses centres on a 0.4 m grid places a 0.6 m pedestrian
within about +-0.2 m, and a box 0.15 m off diagonally already falls below IoU 0.5. The points
measure where it is to a few centimetres; the network says what it is and how big.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from fmdrive.config import UNKNOWN
from fmdrive.perception.lanes import LaneParams, detect_lanes
from fmdrive.perception.lidar_classical import LidarResult

GROUND_BAND_M = 0.3   # |z| in base_link of the returns handed to the lane finder
SMALL_CLASSES = ('pedestrian', 'cone')
# The returns of a small object lie on the face it turns to the sensor: the mean of them is
# nearer than its centre by about a quarter of its width (a cylinder: 2/pi x its radius; chosen on
# the val split: 0.2-0.3 of the width all within 0.5 AP points)
NEAR_FACE_FRACTION = 0.25
REFINE_MIN_POINTS = 3
REFINE_MAX_SHIFT_M = 0.4   # further, the returns are someone else's (a pole, a wall): keep the network's
REFINE_CELL_M = 1.0        # the grid that picks the candidate returns (each object reads its 3x3 cells)


def refine_small_objects(objects: list, points: np.ndarray, sensor_xy=(0.0, 0.0), labels=SMALL_CLASSES) -> list:
    """objects (Object3D, base_link) with the BEV centre of each one labelled in `labels` moved to
    where its returns say: the mean (x, y) of the points (N, >=3, base_link) within its width of the
    centre, between 0.2 m above its box's bottom and 0.3 m above its top, and nearer to it than to any
    other small object (two pedestrians side by side keep their own returns), moved away from the
    sensor (at sensor_xy, base_link) by NEAR_FACE_FRACTION of its width. Objects with fewer than REFINE_MIN_POINTS such returns,
    or whose returns lie more than REFINE_MAX_SHIFT_M away, keep the network's centre. Size, yaw,
    z, score and embedding are kept. Returns a new list; the input is not changed."""
    small = [j for j, o in enumerate(objects) if o.label in labels]
    pts = np.asarray(points, np.float32)
    if not small or len(pts) == 0:
        return list(objects)
    centres = np.array([objects[j].center[:2] for j in small], np.float64)
    widths = np.array([max(min(float(objects[j].size[0]), float(objects[j].size[1])), 0.3) for j in small])
    # the returns in the 3x3 cells around each object (widths stay below REFINE_CELL_M)
    cells = np.floor(pts[:, :2] / REFINE_CELL_M).astype(np.int64)
    key = cells[:, 0] * 1_000_003 + cells[:, 1]
    own = np.floor(centres / REFINE_CELL_M).astype(np.int64)
    ring = np.arange(-1, 2)
    wanted = ((own[:, 0, None, None] + ring[None, :, None]) * 1_000_003 + (own[:, 1, None, None] + ring[None, None, :]))
    near = pts[np.isin(key, wanted.ravel())].astype(np.float64)
    if len(near) == 0:
        return list(objects)
    nearest = np.linalg.norm(near[:, None, :2] - centres[None], axis=2).argmin(axis=1)
    sensor = np.asarray(sensor_xy, np.float64)[:2]
    out = list(objects)
    for k, j in enumerate(small):
        o = objects[j]
        cz, h, w = float(o.center[2]), float(o.size[2]), widths[k]
        bottom = cz - 0.5 * h
        p = near[nearest == k]
        p = p[(np.hypot(p[:, 0] - centres[k, 0], p[:, 1] - centres[k, 1]) <= min(w, REFINE_CELL_M))
              & (p[:, 2] > bottom + 0.2) & (p[:, 2] < bottom + h + 0.3)]
        if len(p) < REFINE_MIN_POINTS:
            continue
        mean = p[:, :2].mean(axis=0)
        ray = mean - sensor
        ray /= max(float(np.linalg.norm(ray)), 1e-6)
        xy = mean + NEAR_FACE_FRACTION * w * ray
        if np.hypot(*(xy - centres[k])) > REFINE_MAX_SHIFT_M or not np.isfinite(xy).all():
            continue
        out[j] = dataclasses.replace(o, center=(float(xy[0]), float(xy[1]), cz))
    return out


EXPLAINED_MARGIN_M = 0.5   # a cluster whose centre is this close to a learned box is that object


def _inside(offsets_xy: np.ndarray, yaw_rad, half_lw: np.ndarray) -> np.ndarray:
    """(N,) bool: points at offsets_xy (N, 2) from the centres of boxes with yaw_rad (N,) or scalar and
    half length/width half_lw (N, 2) or (2,) lie inside them (BEV)."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    u = offsets_xy[:, 0] * c + offsets_xy[:, 1] * s
    v = -offsets_xy[:, 0] * s + offsets_xy[:, 1] * c
    half_lw = np.asarray(half_lw, np.float64)
    return (np.abs(u) <= half_lw[..., 0]) & (np.abs(v) <= half_lw[..., 1])


def unexplained_obstacles(clusters: list, learned: list, margin_m: float = EXPLAINED_MARGIN_M) -> list:
    """The clusters (Object3D from the classical path, base_link) that no learned box explains, as
    label `unknown`: neither is the cluster's BEV centre within a learned box grown by margin_m, nor
    a learned box's centre within the cluster's box (a cluster of a car and the wall behind it).
    The classical class of a cluster is not kept: where the network saw nothing of its four classes,
    it is an obstacle of no class."""
    out = []
    lc = np.array([o.center[:2] for o in learned], np.float64).reshape(-1, 2)
    half = np.array([o.size[:2] for o in learned], np.float64).reshape(-1, 2) / 2
    yaws = np.array([o.yaw_rad for o in learned], np.float64)
    for c in clusters:
        d = np.asarray(c.center[:2], np.float64) - lc                 # the cluster from each learned centre
        if (_inside(d, yaws, half + margin_m) | _inside(-d, c.yaw_rad, np.asarray(c.size[:2]) / 2)).any():
            continue
        out.append(c if c.label == UNKNOWN else dataclasses.replace(c, label=UNKNOWN))
    return out


class LearnedLidarDetector:
    def __init__(self, detector, detect_lanes: bool = True, lane_width_m: float = 3.5,
                 refine_small: bool = True, classical=None):
        self.detector = detector                      # fmdrive.inference.detectors.LidarDetector
        self.detect_lanes, self.lane_width_m = detect_lanes, lane_width_m
        self.refine_small = refine_small
        self.classical = classical                    # ClassicalLidarDetector for obstacles of no class, or None
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
        learned_ok = True
        try:
            result.objects = self.detector.detect(base)
        except Exception as e:  # noqa: BLE001 - a perception node must survive any sweep
            learned_ok = False
            result.warnings.append(f'learned LiDAR encoder failed ({type(e).__name__}: {e}); '
                                   + ('the classical path\'s objects' if self.classical is not None else 'no objects'))
        if self.refine_small and result.objects:
            t1 = time.perf_counter()
            try:
                result.objects = refine_small_objects(result.objects, base, T[:2, 3])
            except Exception as e:  # noqa: BLE001 - the network's boxes are still good boxes
                result.warnings.append(f'refining small objects failed ({type(e).__name__}: {e}); '
                                       f'the network\'s centres kept')
            result.timings_ms['refine_ms'] = (time.perf_counter() - t1) * 1e3
        result.timings_ms.update(self.detector.last_timing_ms or {})
        if self.classical is not None:
            t1 = time.perf_counter()
            clusters = self.classical.detect(points, T_base_lidar)    # never raises: says what failed
            result.warnings.extend(clusters.warnings)
            result.objects = (list(result.objects) + unexplained_obstacles(clusters.objects, result.objects)
                              if learned_ok else clusters.objects)      # the fallback, classes and all
            result.lanes, result.ground_plane = clusters.lanes, clusters.ground_plane
            result.ground_points, result.nonground_points = clusters.ground_points, clusters.nonground_points
            result.timings_ms['classical_ms'] = (time.perf_counter() - t1) * 1e3
        elif self.detect_lanes:
            ground = base[np.abs(base[:, 2]) < GROUND_BAND_M]
            result.lanes = detect_lanes(ground, self.lane_width_m, self._lane_params)
        result.timings_ms['total'] = (time.perf_counter() - t0) * 1e3
        return result
