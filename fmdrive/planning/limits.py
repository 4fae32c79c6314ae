"""Vehicle and comfort limits: ONE declaration, shared by every planner and the safety filter.

The classical planner samples within these limits and the safety filter judges any trajectory (the
language-model planner's, the classical one's, a hand-written one) against the very same numbers,
so a plan the planner thinks is fine cannot fail the check because of a second copy of a limit.

Speed limit: the road's limit travels in the scene (`Scene.speed_limit_mps`, from the map or the
scenario); `speed_limit_mps` here is only the fallback for a scene that carries none (0, negative
or not finite), and `max_speed_mps` caps both (what this stack may drive at all, whatever the road
allows). `effective_speed_limit` is the one place that decides.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmdrive.config import MAX_SPEED_MPS, SPEED_LIMIT_MPS
from fmdrive.planning.prediction import DEFAULT_GROWTH_MPS


class LimitsError(ValueError):
    """Limits that cannot work together (e.g. comfort braking harder than emergency braking)."""


def require_numbers(obj, names, positive: bool, error=None) -> None:
    """Raise `error` (LimitsError by default) naming the first of `names` on `obj` that is not a
    finite number > 0 (positive) or >= 0 (not positive)."""
    error = error or LimitsError
    for name in names:
        value = getattr(obj, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
        if not (ok and (value > 0 if positive else value >= 0)):
            raise error(f'{name} must be a positive number, got {value!r}' if positive else
                        f'{name} must be a number >= 0 (0 turns it off or to nothing), got {value!r}')


@dataclass
class VehicleLimits:
    # speed
    speed_limit_mps: float = SPEED_LIMIT_MPS  # the road's limit when the scene carries none
    max_speed_mps: float = MAX_SPEED_MPS     # never planned above (130 km/h), whatever the road says
    # longitudinal and lateral acceleration
    max_accel_mps2: float = 2.0
    max_decel_mps2: float = 6.0              # emergency braking
    comfort_decel_mps2: float = 3.0
    max_lat_accel_mps2: float = 3.0
    max_jerk_mps3: float = 12.0              # change of longitudinal acceleration between 0.5 s steps:
                                             # cruise -> emergency braking -> standstill is 12 (allowed),
                                             # accelerating and braking hard in turns is not
    max_curvature_1pm: float = 0.2           # 1 / the tightest turning radius (5 m)
    kinematic_tolerance: float = 0.1         # relative slack of the safety check on the limits
    # vehicle footprint (base_link = rear axle on the ground)
    vehicle_length_m: float = 4.5
    vehicle_width_m: float = 1.9
    base_to_center_m: float = 1.4            # rear axle -> footprint centre
    # what the safety filter demands
    safety_margin_m: float = 0.2             # footprint closer than this to a predicted object
    road_tolerance_m: float = 0.3            # footprint may cross the road edge by this much
    default_lane_width_m: float = 3.5        # the ego lane assumed when the scene has no lanes
    # pedestrians hidden behind standing vehicles (fmdrive/planning/occlusion.py); 0 lateral = off
    occlusion_lateral_m: float = 2.5         # an occluder this close to the car's side counts
    occlusion_decel_mps2: float = 5.0        # braking for someone stepping out past its far end
    occlusion_reaction_s: float = 0.3        # ... after this long (a planning cycle, the controller)
    occlusion_min_speed_mps: float = 8.0     # never asked to pass slower than this (chosen on train/val scenarios)
    occlusion_context_m: float = 60.0        # only with a pedestrian or cyclist this near (0 = always)
    uncertainty_growth_mps: dict = field(default_factory=lambda: dict(DEFAULT_GROWTH_MPS))

    def __post_init__(self):
        require_numbers(self, ('speed_limit_mps', 'max_speed_mps', 'max_accel_mps2', 'max_decel_mps2',
                               'comfort_decel_mps2', 'max_lat_accel_mps2', 'max_jerk_mps3', 'max_curvature_1pm',
                               'vehicle_length_m', 'vehicle_width_m', 'occlusion_decel_mps2'), positive=True)
        require_numbers(self, ('occlusion_lateral_m', 'occlusion_reaction_s', 'occlusion_min_speed_mps',
                               'occlusion_context_m'), positive=False)
        if self.comfort_decel_mps2 > self.max_decel_mps2:
            raise LimitsError('comfort_decel_mps2 must not exceed max_decel_mps2')


def effective_speed_limit(limits: VehicleLimits, scene) -> float:
    """The speed limit a plan for `scene` must keep: the scene's (the road's) when it carries a
    usable one, else the configured fallback; never above max_speed_mps."""
    road = getattr(scene, 'speed_limit_mps', None)
    try:
        road = float(road)
    except (TypeError, ValueError):
        road = float('nan')
    limit = road if np.isfinite(road) and road > 0 else float(limits.speed_limit_mps)
    return min(limit, float(limits.max_speed_mps))
