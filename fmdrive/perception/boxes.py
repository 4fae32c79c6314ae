"""Oriented boxes from LiDAR clusters: BEV rectangle fitting, class from size, partial-view completion.

Plain numpy, no ROS, no open3d. Everything is in base_link (x forward, y left, z up).

- `fit_lshape` finds the BEV rectangle of a cluster by the closeness criterion of L-shape fitting
  (Zhang et al., "Efficient L-Shape Fitting for Vehicle Detection Using Laser Scanners", IV 2017),
  vectorised over candidate headings. A LiDAR sees one or two sides of a car; the minimum-area
  rectangle of such an "L" is ambiguous (a right triangle has two equal-area rectangles), the
  closeness criterion is not.
- `min_area_rectangle` is the classic rotating-calipers answer over convex-hull edges, for
  clusters seen all round.
- `classify_by_size` turns a visible (length, width, height) into a class of fmdrive.config.CLASSES.
  Trucks and buses (up to 18 m) are 'car' with their own fitted size: every consumer of objects
  (tracker, planner, prediction) treats them as vehicles, and the box says how big they are.
- `outline_fraction`: share of a cluster's points on its rectangle's outline. A LiDAR sees the
  surfaces of cars; vegetation lets rays in, so its returns fill the footprint.
- `complete_partial_car` grows a car box whose length or width was not seen (shorter than any
  car) to a nominal one; a side that was seen keeps its fitted size. `complete_partial_box` does
  the same for every class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmdrive.config import UNKNOWN
from fmdrive.geometry import wrap_angle


@dataclass(frozen=True)
class ClassSize:
    """Nominal size of a class and the band of visible sizes accepted for it (metres)."""
    nominal_lwh_m: tuple            # full object, as the simulator and the datasets size it
    max_length_m: float             # longest visible BEV side
    max_width_m: float              # shortest visible BEV side
    min_height_m: float
    max_height_m: float
    min_length_m: float = 0.0
    min_full_lw_m: tuple | None = None  # a visible side at least this long was seen whole


# Visible sizes are often smaller than the object (one side seen, top between two beams), so the
# bands are open downwards in length/width and generous in height.
CLASS_SIZES = {
    'cone': ClassSize((0.4, 0.4, 0.7), 0.75, 0.75, 0.3, 1.05),
    'pedestrian': ClassSize((0.6, 0.6, 1.75), 1.2, 1.0, 1.0, 2.2),
    'cyclist': ClassSize((1.8, 0.6, 1.7), 2.3, 1.0, 1.35, 2.2, min_length_m=1.2),
    'car': ClassSize((4.5, 1.9, 1.5), 6.5, 2.6, 0.9, 2.4, min_length_m=1.2,
                     min_full_lw_m=(3.3, 1.55)),
}
# Trucks, buses, vans taller than a car: labelled 'car', sized by what is seen (up to 18 m).
LARGE_VEHICLE = ClassSize((8.0, 2.5, 3.2), 18.5, 3.0, 2.3, 4.5, min_length_m=5.0,
                          min_full_lw_m=(5.0, 2.2))
MAX_SURFACE_SPREAD_M = 0.12       # returns further inside their box (median): foliage
# A thin face 1.2-2.3 m long and 1.35-2.2 m high is either a cyclist seen from the side or a car
# seen from behind/in front. Cars are lower: a visible top above this is taken as a cyclist.
CYCLIST_MIN_TOP_M = 1.62
CAR_MAX_WIDTH_M = 2.5               # a visible side longer than this is a car's length, not width
SINGLE_SIDE_MAX_WIDTH_M = 0.8       # narrower visible depth: only one face of the box is seen
EDGE_ON_MIN_ALIGNMENT = np.cos(np.deg2rad(40.0))   # a face within 40 deg of the ray is edge-on


def _rectangle_from_heading(points_xy: np.ndarray, heading_rad: float):
    """Tightest rectangle with sides along heading_rad: centre (2,), extents (2,) along (e1, e2)."""
    c, s = np.cos(heading_rad), np.sin(heading_rad)
    e1, e2 = np.array([c, s]), np.array([-s, c])
    p1, p2 = points_xy @ e1, points_xy @ e2
    lo1, hi1, lo2, hi2 = p1.min(), p1.max(), p2.min(), p2.max()
    centre = 0.5 * (lo1 + hi1) * e1 + 0.5 * (lo2 + hi2) * e2
    return centre, np.array([hi1 - lo1, hi2 - lo2])


def _as_length_width(centre, extents, heading_rad):
    """(centre, length, width, yaw_rad) with length >= width and yaw along the length, in (-pi/2, pi/2]."""
    if extents[1] > extents[0]:
        extents = extents[::-1]
        heading_rad = heading_rad + np.pi / 2
    yaw = float(wrap_angle(heading_rad))
    if yaw <= -np.pi / 2:              # a box is symmetric: heading and heading + pi are one box
        yaw += np.pi
    elif yaw > np.pi / 2:
        yaw -= np.pi
    return np.asarray(centre, float), float(extents[0]), float(extents[1]), yaw


def fit_lshape(points_xy, angle_step_deg: float = 1.0, min_distance_m: float = 0.01,
               max_points: int = 800):
    """BEV rectangle of a cluster by L-shape fitting (closeness criterion).

    points_xy: (N, 2). Returns (centre_xy (2,), length_m, width_m, yaw_rad) with length >= width and
    yaw_rad in (-pi/2, pi/2]. For every candidate heading in [0, 90) deg the points are projected on
    the two rectangle axes; each point scores 1 / max(distance to its nearest rectangle side, d0).
    The heading with the highest total is the one whose sides hug the points.
    """
    points_xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if len(points_xy) == 0:
        raise ValueError('fit_lshape needs at least one point')
    if len(points_xy) < 3:
        return _as_length_width(*_rectangle_from_heading(points_xy, 0.0), 0.0)
    if len(points_xy) > max_points:     # the criterion is a sum: an even subsample keeps its argmax
        points_xy = points_xy[np.linspace(0, len(points_xy) - 1, max_points).astype(int)]
    origin = points_xy.mean(axis=0)
    local = points_xy - origin
    # coarse to fine: every COARSE_STEP_DEG, then every angle_step_deg around the best of those
    # (the criterion varies smoothly at that scale: 27 headings scored instead of 90)
    coarse_step = max(COARSE_STEP_DEG, angle_step_deg)
    coarse = np.deg2rad(np.arange(0.0, 90.0, coarse_step))
    best = coarse[int(np.argmax(_closeness(local, coarse, min_distance_m)))]
    fine = best + np.deg2rad(np.arange(-coarse_step + angle_step_deg, coarse_step, angle_step_deg))
    best = fine[int(np.argmax(_closeness(local, fine, min_distance_m)))]
    centre, extents = _rectangle_from_heading(local, best)
    return _as_length_width(centre + origin, extents, best)


COARSE_STEP_DEG = 5.0


def _closeness(local_xy, headings, min_distance_m):
    """L-shape closeness score of each heading (A,) for the points (N, 2)."""
    proj1 = local_xy @ np.stack([np.cos(headings), np.sin(headings)])      # (N, A)
    proj2 = local_xy @ np.stack([-np.sin(headings), np.cos(headings)])
    d1 = np.minimum(proj1.max(0) - proj1, proj1 - proj1.min(0))
    d2 = np.minimum(proj2.max(0) - proj2, proj2 - proj2.min(0))
    return (1.0 / np.maximum(np.minimum(d1, d2), min_distance_m)).sum(axis=0)


def min_area_rectangle(points_xy):
    """Minimum-area BEV rectangle by rotating calipers over the convex-hull edges (vectorised).

    Returns (centre_xy (2,), length_m, width_m, yaw_rad) like fit_lshape.
    """
    from scipy.spatial import ConvexHull, QhullError
    points_xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if len(points_xy) == 0:
        raise ValueError('min_area_rectangle needs at least one point')
    try:
        hull = points_xy[ConvexHull(points_xy).vertices]
    except (QhullError, ValueError):   # fewer than 3 points or all on a line: any edge direction
        hull = points_xy
    edges = np.roll(hull, -1, axis=0) - hull
    headings = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    if len(headings) == 0:
        headings = np.zeros(1)
    proj1 = hull @ np.stack([np.cos(headings), np.sin(headings)])
    proj2 = hull @ np.stack([-np.sin(headings), np.cos(headings)])
    area = np.ptp(proj1, axis=0) * np.ptp(proj2, axis=0)
    best = headings[int(np.argmin(area))]
    return _as_length_width(*_rectangle_from_heading(points_xy, best), best)


def surface_spread_m(points_xy, centre_xy, length_m, width_m, yaw_rad) -> float:
    """Median distance (m) of the points to the nearest side of their fitted rectangle.

    Hard surfaces (cars, trucks, walls) return from their faces, which the fitted rectangle hugs
    (a few cm: range noise); foliage returns from anywhere inside its volume (tens of cm)."""
    local = np.asarray(points_xy, dtype=np.float64) - np.asarray(centre_xy, dtype=np.float64)
    if len(local) == 0:
        return 0.0
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    u = np.abs(local @ np.array([c, s]))
    v = np.abs(local @ np.array([-s, c]))
    to_side = np.maximum(np.minimum(0.5 * length_m - u, 0.5 * width_m - v), 0.0)
    return float(np.median(to_side))


def classify_by_size(length_m: float, width_m: float, height_m: float,
                     view_alignment: float | None = None, height_slack_m: float = 0.0,
                     surface_spread_m: float | None = None) -> str:
    """Class of a box from its visible size (length >= width), or UNKNOWN.

    height_slack_m: how far the true top may lie above the visible one (far away, the top can
    fall between two beams: up to a beam gap); lowers each class's minimum height by that much.

    view_alignment: |cos| of the angle between the visible length axis and the ray from the
    sensor (0 = the long side faces the sensor, 1 = it is seen edge-on). A sensor sees the faces
    of a box that face it, which settles two look-alikes:
    - a thin 1.2-2.3 m face is a car's rear/front only when it faces the sensor; seen edge-on
      (along the ray) it is the side of a cyclist;
    - a single thin side longer than a car is wide, seen edge-on without the end face that
      would then be visible, is a fence or wall, not a car.
    surface_spread_m: see surface_spread_m(); vehicle-sized clusters whose returns fill their
    footprint instead of lining its sides are vegetation (bushes, hedges), not vehicles.
    Trucks and buses (LARGE_VEHICLE band: taller than a car, up to 18.5 m long) are 'car'.
    Callers reject clutter (too long / too tall / too flat) before asking.
    """
    for label in ('cone', 'pedestrian'):
        c = CLASS_SIZES[label]
        if length_m <= c.max_length_m and width_m <= c.max_width_m \
                and c.min_height_m - height_slack_m <= height_m <= c.max_height_m:
            return label
    cyc, car = CLASS_SIZES['cyclist'], CLASS_SIZES['car']
    cyclist_like = (cyc.min_length_m <= length_m <= cyc.max_length_m and width_m <= cyc.max_width_m
                    and cyc.min_height_m - height_slack_m <= height_m <= cyc.max_height_m)
    car_like = (car.min_length_m <= length_m <= car.max_length_m and width_m <= car.max_width_m
                and car.min_height_m - height_slack_m <= height_m <= car.max_height_m)
    edge_on = view_alignment is not None and view_alignment > EDGE_ON_MIN_ALIGNMENT
    if car_like and width_m < SINGLE_SIDE_MAX_WIDTH_M and edge_on:
        car_like = False            # an edge-on face: the cyclist's side, or a fence
    if cyclist_like and (height_m >= CYCLIST_MIN_TOP_M or not car_like):
        return 'cyclist'
    big = LARGE_VEHICLE
    large_like = (width_m <= big.max_width_m and length_m <= big.max_length_m
                  and big.min_height_m - height_slack_m <= height_m <= big.max_height_m
                  and (length_m >= big.min_length_m
                       or (length_m >= CAR_MAX_WIDTH_M - 0.5 and not edge_on)))   # its back
    if large_like and width_m < SINGLE_SIDE_MAX_WIDTH_M and edge_on:
        large_like = False          # a wall seen along its face
    if (car_like or large_like) and surface_spread_m is not None \
            and surface_spread_m > MAX_SURFACE_SPREAD_M:
        return UNKNOWN              # returns from inside the footprint: foliage
    if car_like or large_like:
        return 'car'
    return UNKNOWN


def size_match(label: str, length_m: float, width_m: float, height_m: float) -> float:
    """0..1: how close a (completed) box is to the nominal size of its class (1 = exactly).
    Trucks and buses are matched against their own band, whatever their length."""
    if label not in CLASS_SIZES:
        return 0.0
    if label == 'car' and is_large_vehicle(length_m, height_m):
        nominal = np.array([np.clip(length_m, 5.0, 18.0), 2.5, np.clip(height_m, 2.5, 4.0)])
        tolerance = np.array([0.25 * nominal[0], 0.4, 0.6])
        z = (np.array([length_m, width_m, height_m]) - nominal) / tolerance
        return float(np.exp(-0.5 * np.dot(z, z) / 3.0))
    nominal = np.asarray(CLASS_SIZES[label].nominal_lwh_m)
    tolerance = np.maximum(0.25 * nominal, 0.15)
    z = (np.array([length_m, width_m, height_m]) - nominal) / tolerance
    return float(np.exp(-0.5 * np.dot(z, z) / 3.0))


def _wrap_half_turn(yaw_rad: float) -> float:
    yaw_rad = float(wrap_angle(yaw_rad))
    if yaw_rad <= -np.pi / 2:
        yaw_rad += np.pi
    elif yaw_rad > np.pi / 2:
        yaw_rad -= np.pi
    return yaw_rad


def _grow_away(centre_xy, length_m, width_m, yaw_rad, nominal_lw, sensor_xy, min_full_lw=None):
    """Grow each side that was not seen whole to nominal, on the far side from the sensor.

    A side shorter than min_full_lw (default: the nominal size) cannot be the whole side of the
    class: the rest is hidden. A side at least that long was seen and keeps its fitted length."""
    centre_xy = np.asarray(centre_xy, dtype=np.float64).copy()
    min_full_lw = nominal_lw if min_full_lw is None else min_full_lw
    u_length = np.array([np.cos(yaw_rad), np.sin(yaw_rad)])
    u_width = np.array([-u_length[1], u_length[0]])
    away = centre_xy - np.asarray(sensor_xy, dtype=np.float64)[:2]
    out = []
    for axis, visible, nominal, full in ((u_length, length_m, nominal_lw[0], min_full_lw[0]),
                                         (u_width, width_m, nominal_lw[1], min_full_lw[1])):
        if visible < full and visible < nominal:
            sign = 1.0 if np.dot(axis, away) >= 0 else -1.0
            centre_xy += axis * sign * 0.5 * (nominal - visible)
            visible = nominal
        out.append(float(visible))
    return centre_xy, out[0], out[1], yaw_rad


def is_large_vehicle(length_m: float, height_m: float | None) -> bool:
    """A 'car' box that is a truck, bus or van: longer than a car, or taller than one."""
    return length_m > CLASS_SIZES['car'].max_length_m or \
        (height_m is not None and height_m > CLASS_SIZES['car'].max_height_m)


def complete_partial_car(centre_xy, length_m, width_m, yaw_rad, sensor_xy, height_m=None):
    """Grow a car box of which only part is seen to a whole car, away from the sensor.

    This is what L-shape fitting pipelines do: the LiDAR only sees the sides facing it, so the
    visible rectangle is the near part of the car and the hidden part lies behind it, on the far
    side from the sensor. If the longest visible side is no longer than a car is wide (only the
    rear or front is seen), that side is the width and the length runs along the other axis.
    A side seen whole keeps its fitted length; a hidden one gets the nominal size of a car, or of
    a truck/bus when the box is taller than a car (height_m).
    Returns (centre_xy, length_m, width_m, yaw_rad) with length along yaw_rad.
    """
    size = LARGE_VEHICLE if is_large_vehicle(length_m, height_m) else CLASS_SIZES['car']
    face_max = LARGE_VEHICLE.max_width_m if size is LARGE_VEHICLE else CAR_MAX_WIDTH_M
    if length_m <= face_max:            # a face, not a side: swap axes so yaw follows the length
        length_m, width_m = width_m, length_m
        yaw_rad = _wrap_half_turn(yaw_rad + np.pi / 2)
    return _grow_away(centre_xy, length_m, width_m, yaw_rad, size.nominal_lwh_m[:2], sensor_xy,
                      size.min_full_lw_m)


def complete_partial_box(label: str, centre_xy, length_m, width_m, yaw_rad, sensor_xy,
                         height_m=None):
    """A box of class `label` of which only the near sides are seen, grown to the class's nominal
    footprint away from the sensor (cars: see complete_partial_car). Pedestrians, cyclists and
    cones show one face or two: their visible depth is a fraction of their real one.
    Returns (centre_xy, length_m, width_m, yaw_rad); unknown labels are returned as they are."""
    if label == 'car':
        return complete_partial_car(centre_xy, length_m, width_m, yaw_rad, sensor_xy, height_m)
    if label not in CLASS_SIZES:
        return np.asarray(centre_xy, dtype=np.float64), length_m, width_m, yaw_rad
    size = CLASS_SIZES[label]
    return _grow_away(centre_xy, length_m, width_m, yaw_rad, size.nominal_lwh_m[:2], sensor_xy,
                      size.min_full_lw_m)
