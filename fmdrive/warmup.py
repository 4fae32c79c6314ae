"""Made-up inputs a node runs its processing on once before the first real frame (FmdriveNode.warm_up).

A node's first frames are slow: first calls (lazy imports, numpy/open3d/ONNX Runtime allocating
their buffers, the LM's first KV cache, page faults). Measured on the graph (bench pipeline, idle
machine): the first two trajectories of a run took ~135-140 ms where the rest took 50-90 ms, the
LiDAR encoder's first sweep 55 ms against ~30, the planner's first plan 45 ms against ~25; at a 5x
replay those two frames alone set the run's p99. So every heavy node processes one made-up frame
while it starts, publishes nothing from it, and forgets any state it left.

The inputs are plain numpy: a ring LiDAR sweeping flat ground with two lane markings and a car
ahead; a grey image; a straight two-lane road with a car ahead. They go through the same code as a
real frame, so the paths a real frame takes are the ones warmed; what they detect does not matter.
"""
from __future__ import annotations

import numpy as np

from fmdrive.objects import EgoState, Lane, Object3D, Scene

LANE_WIDTH_M = 3.5
CAR_AHEAD = ((12.0, 0.0, 0.8), (4.5, 1.9, 1.6))     # centre, size (base_link, m)


def sweep(T_base_lidar: np.ndarray, beams: int = 32, azimuth_step_deg: float = 0.4,
          max_range_m: float = 80.0) -> np.ndarray:
    """(N, 4) x, y, z, intensity in the LiDAR frame: a spinning LiDAR mounted at T_base_lidar over
    flat ground (z = 0 in base_link) with lane markings at +-LANE_WIDTH_M / 2 and a car ahead.
    Rays that hit nothing within max_range_m return nothing, as on a real sensor."""
    T = np.asarray(T_base_lidar, float)
    el = np.radians(np.linspace(-25.0, 15.0, int(beams)))
    az = np.radians(np.arange(0.0, 360.0, azimuth_step_deg))
    el, az = (a.ravel() for a in np.meshgrid(el, az, indexing='ij'))
    d_lidar = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=1)
    d = d_lidar @ T[:3, :3].T                                   # ray directions in base_link
    o = T[:3, 3]
    t = np.full(len(d), np.inf)
    down = d[:, 2] < -1e-6
    t[down] = -o[2] / d[down, 2]                                # the ground, where the sensor is above it
    t[~(t > 0)] = np.inf                                        # (a mount at or below it sees no ground)
    (cx, cy, cz), (length, width, height) = CAR_AHEAD           # the car: slab test on its box
    lo = np.array([cx - length / 2, cy - width / 2, cz - height / 2])
    hi = np.array([cx + length / 2, cy + width / 2, cz + height / 2])
    with np.errstate(divide='ignore', invalid='ignore'):
        t1, t2 = (lo - o) / d, (hi - o) / d
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    car = (t_near <= t_far) & (t_near > 0) & (t_near < t)
    t[car] = t_near[car]
    hit = t <= max_range_m
    p = o + d[hit] * t[hit, None]
    intensity = np.where(car[hit], 0.5, 0.15)
    marking = ~car[hit] & (np.abs(np.abs(p[:, 1]) - LANE_WIDTH_M / 2) < 0.08)
    intensity[marking] = 0.9
    p_lidar = (p - T[:3, 3]) @ T[:3, :3]                        # back into the LiDAR frame
    return np.column_stack([p_lidar, intensity]).astype(np.float32)


def image(width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: a mid-grey frame with a darker road below the horizon."""
    rgb = np.full((int(height), int(width), 3), 128, np.uint8)
    rgb[int(height) // 2:] = 70
    return rgb


def scene(speed_limit_mps: float = 13.9) -> Scene:
    """A straight two-lane road (ego lane and the one to its left), the car at 10 m/s, a slower car
    ahead in its lane."""
    from fmdrive.fusion.scene import describe_scene
    x = np.linspace(0.0, 80.0, 17)
    lanes = [Lane(offset, LANE_WIDTH_M, np.column_stack([x, np.full_like(x, offset * LANE_WIDTH_M),
                                                         np.zeros_like(x)]))
             for offset in (0, 1)]
    (cx, cy, cz), size = CAR_AHEAD
    lead = Object3D(center=(cx + 18.0, cy, cz), size=size, label='car', score=0.9, id=1, velocity=(7.0, 0, 0))
    return describe_scene(0, EgoState(speed_mps=10.0), [lead], lanes, float(speed_limit_mps))
