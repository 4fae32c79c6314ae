"""The scene description: tracked objects related to the ego lane, and a compact English text.

`describe_scene()` turns ego state, tracked objects (base_link, velocity and acceleration over ground) and lanes
(base_link centre lines) into a `Scene` whose `text` a language-model planner and a human can
read, e.g.

  t=12.3s. Ego: 8.2 m/s, speed limit 13.9 m/s, in lane 0 of 2 from the right (left lane free,
  no right lane). Objects: car #3 ahead in ego lane, 18.4 m, moving same direction at 6.1 m/s,
  closing at 2.1 m/s (time to collision 8.8 s); car #5 ahead in left lane, 30.2 m, moving same
  direction at 9.0 m/s, braking at 2.5 m/s2; pedestrian #7 front-right 12.0 m, 4.1 m right of
  ego lane centre, moving left at 1.3 m/s (crossing).

Conventions: distances are from base_link (rear axle) to the object centre; "left"/"right" and
"same/opposite direction" are relative to the ego lane at the object; lane offsets are +1 for the
lane left of ego, -1 right. Without lanes the ego lane is the x axis and lanes are 3.5 m wide.
The text is deterministic: same inputs, same bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fmdrive.objects import EgoState, Lane, Object3D, Scene

DEFAULT_LANE_WIDTH_M = 3.5
STATIONARY_MPS = 0.5          # slower than this an object is described as stationary
CROSSING_MPS = 0.5            # lateral speed towards the ego lane that counts as crossing
CLOSING_MPS = 0.1             # below this range rate nothing is said about closing / TTC
LANE_FREE_WINDOW_M = (-15.0, 30.0)  # longitudinal window that must be empty for "lane free"
ACCEL_PHRASE_MPS2 = 0.8       # a moving object braking or speeding up harder than this says so


@dataclass
class ObjectRelation:
    """One object seen from ego: what the text says about it, as numbers."""
    object: Object3D
    distance_m: float             # base_link origin -> object centre, in the ground plane
    bearing: str                  # ahead, front-left, left, rear-left, behind, rear-right, ...
    longitudinal_m: float         # along the ego lane, + ahead of ego
    lateral_m: float              # from the ego lane centre line, + left
    lane_offset: int | None       # lane holding the object (0 ego, +1 left...), None = outside lanes
    in_path: bool                 # in the ego lane and ahead
    crossing: bool                # ahead, outside the ego lane, moving towards it
    speed_mps: float              # over ground
    along_lane_mps: float         # velocity along the lane direction at the object (+ same as ego)
    across_lane_mps: float        # velocity across the lane (+ to the left)
    closing_mps: float            # -(range rate) relative to ego; + means getting closer
    ttc_s: float | None           # time to collision for in-path objects that are closing
    accel_mps2: float = 0.0       # acceleration along the object's own motion (- braking); 0 when stationary


# ---------------------------------------------------------------- lane geometry
def _clean_polyline(centerline) -> np.ndarray | None:
    """(M, 2) centre line without repeated points, or None if it is not a usable line."""
    pts = np.asarray(centerline, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 2 or pts.shape[1] < 2:
        return None
    pts = pts[:, :2]
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) < 2:
        return None
    keep = np.r_[True, np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-6]
    pts = pts[keep]
    return pts if len(pts) >= 2 else None


def project_to_polyline(points_xy: np.ndarray, line_xy: np.ndarray):
    """Arc length s, signed lateral offset d (+ left of the driving direction) and unit tangent
    of each point's nearest place on the polyline; the first and last segments extend to infinity.
    Returns s (N,), d (N,), tangent (N, 2)."""
    points_xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    a, seg = line_xy[:-1], np.diff(line_xy, axis=0)                  # (K, 2)
    seg_len = np.linalg.norm(seg, axis=1)
    rel = points_xy[:, None, :] - a[None]                             # (N, K, 2)
    u = np.einsum('nkj,kj->nk', rel, seg) / seg_len ** 2
    lo = np.zeros(len(seg))
    hi = np.ones(len(seg))
    lo[0], hi[-1] = -np.inf, np.inf
    u = np.clip(u, lo, hi)
    gap = np.linalg.norm(rel - u[..., None] * seg[None], axis=2)
    k = np.argmin(gap, axis=1)
    n = np.arange(len(points_xy))
    tangent = seg[k] / seg_len[k, None]
    r = rel[n, k]
    d = tangent[:, 0] * r[:, 1] - tangent[:, 1] * r[:, 0]
    s = np.r_[0.0, np.cumsum(seg_len)][k] + u[n, k] * seg_len[k]
    return s, d, tangent


def _usable_lanes(lanes) -> list[tuple[Lane, np.ndarray]]:
    out = []
    for lane in lanes or ():
        line = _clean_polyline(getattr(lane, 'centerline', None))
        width = getattr(lane, 'width_m', float('nan'))
        if line is not None and math.isfinite(width) and width > 0:
            out.append((lane, line))
    return out


def ego_lane_index(lanes) -> tuple[int, int] | None:
    """(the ego lane's index counted from the right, 0 = rightmost; the number of lanes) from a
    scene's usable lanes, as its text says it; None without any."""
    offsets = {lane.offset for lane, _ in _usable_lanes(lanes)}
    if not offsets:
        return None
    return sum(1 for o in offsets if o < 0), len(offsets)


def _ego_lane(usable):
    """The lane with offset 0, else the one whose centre line passes closest to ego."""
    for lane, line in usable:
        if lane.offset == 0:
            return lane, line
    return min(usable, key=lambda ll: abs(project_to_polyline(np.zeros((1, 2)), ll[1])[1][0]))


CURVE_AHEAD_M = (5.0, 35.0)   # the road's curve is its heading change between these arc lengths ahead
EGO_OFFSET_PHRASE_M = 0.2     # the ego's place in its lane is said beyond these
EGO_HEADING_PHRASE_DEG = 2.0
CURVE_PHRASE_RADIUS_M = 1000.0


def _heading_at(line: np.ndarray, s: float) -> float:
    """Direction (rad) of the polyline's segment at arc length s (clipped to the line)."""
    seg = np.diff(line, axis=0)
    cum = np.r_[0.0, np.cumsum(np.linalg.norm(seg, axis=1))]
    k = int(np.clip(np.searchsorted(cum, s, side='right') - 1, 0, len(seg) - 1))
    return math.atan2(seg[k, 1], seg[k, 0])


def ego_in_lane(line: np.ndarray) -> tuple[float, float, float | None]:
    """(the ego's offset from the lane's centre line, m, + left; the ego's heading relative to the
    lane, rad, + left; the lane's curvature ahead, 1/m, + left, or None when the line ahead is too
    short to tell) for a base_link centre line."""
    s, d, tangent = project_to_polyline(np.zeros((1, 2)), line)
    heading = -math.atan2(tangent[0, 1], tangent[0, 0])
    length = float(np.sum(np.linalg.norm(np.diff(line, axis=0), axis=1)))
    a, b = s[0] + CURVE_AHEAD_M[0], min(s[0] + CURVE_AHEAD_M[1], length)
    curvature = None
    if b - a >= 10.0:
        turn = math.remainder(_heading_at(line, b) - _heading_at(line, a), math.tau)
        curvature = turn / (b - a)
    return float(d[0]), heading, curvature


# ---------------------------------------------------------------- relations
def _bearing(x: float, y: float) -> str:
    deg = abs(math.degrees(math.atan2(y, x)))
    bounds_deg = (15.0, 75.0, 105.0, 165.0)  # ahead | front-left | left | rear-left | behind
    i = int(np.searchsorted(bounds_deg, deg))
    word = ('ahead', 'front-left', 'left', 'rear-left', 'behind')[i]
    return word if y >= 0 or i in (0, 4) else word.replace('left', 'right')


def relate_objects(ego: EgoState, objects_base: list[Object3D], lanes=()) -> list[ObjectRelation]:
    """Relations of all finite objects to ego, sorted by relevance: in-path first, then by distance
    (ties by id)."""
    objects = [o for o in objects_base
               if np.all(np.isfinite(o.center)) and np.all(np.isfinite(o.velocity))]
    if not objects:
        return []
    xy = np.array([o.center[:2] for o in objects])
    vel = np.array([o.velocity[:2] for o in objects])
    usable = _usable_lanes(lanes)
    if usable:
        ego_lane, ego_line = _ego_lane(usable)
        s, lateral, tangent = project_to_polyline(xy, ego_line)
        s_ego = project_to_polyline(np.zeros((1, 2)), ego_line)[0][0]
        longitudinal = s - s_ego
        offsets = np.array([lane.offset for lane, _ in usable])
        half_width = np.array([lane.width_m / 2 for lane, _ in usable])
        d_all = np.stack([np.abs(project_to_polyline(xy, line)[1]) for _, line in usable], axis=1)
        inside = d_all <= half_width[None]
        best = np.argmin(np.where(inside, d_all, np.inf), axis=1)
        lane_offset = [int(offsets[b]) if inside[i, b] else None for i, b in enumerate(best)]
        ego_half_width = ego_lane.width_m / 2
    else:
        longitudinal, lateral = xy[:, 0], xy[:, 1]
        tangent = np.tile([1.0, 0.0], (len(xy), 1))
        lane_offset = [int(v) for v in np.round(lateral / DEFAULT_LANE_WIDTH_M)]
        ego_half_width = DEFAULT_LANE_WIDTH_M / 2
    normal = np.c_[-tangent[:, 1], tangent[:, 0]]
    along = np.einsum('ij,ij->i', vel, tangent)
    across = np.einsum('ij,ij->i', vel, normal)
    distance = np.linalg.norm(xy, axis=1)
    rel_vel = vel - np.array([ego.speed_mps, 0.0])
    closing = -np.einsum('ij,ij->i', xy, rel_vel) / np.maximum(distance, 1e-6)
    speed = np.linalg.norm(vel, axis=1)
    acc = np.array([o.acceleration[:2] if np.all(np.isfinite(o.acceleration)) else (0.0, 0.0) for o in objects])
    accel = np.where(speed >= STATIONARY_MPS,
                     np.einsum('ij,ij->i', acc, vel) / np.maximum(speed, 1e-6), 0.0)

    relations = []
    for i, obj in enumerate(objects):
        in_ego_lane = lane_offset[i] == 0
        in_path = bool(in_ego_lane and longitudinal[i] > 0)
        towards_lane = across[i] * lateral[i] < 0 and abs(lateral[i]) > ego_half_width
        crossing = bool(not in_ego_lane and longitudinal[i] > 0 and abs(across[i]) >= CROSSING_MPS
                        and towards_lane)
        ttc = float(distance[i] / closing[i]) if in_path and closing[i] > CLOSING_MPS else None
        relations.append(ObjectRelation(
            object=obj, distance_m=float(distance[i]), bearing=_bearing(*xy[i]),
            longitudinal_m=float(longitudinal[i]), lateral_m=float(lateral[i]),
            lane_offset=lane_offset[i], in_path=in_path, crossing=crossing, speed_mps=float(speed[i]),
            along_lane_mps=float(along[i]), across_lane_mps=float(across[i]),
            closing_mps=float(closing[i]), ttc_s=ttc, accel_mps2=float(accel[i])))
    relations.sort(key=lambda r: (not r.in_path, round(r.distance_m, 3), r.object.id))
    return relations


# ---------------------------------------------------------------- text
def _f(x: float, digits: int = 1) -> str:
    """Fixed-point number without a '-0.0'."""
    text = f'{x:.{digits}f}'
    return text[1:] if text.startswith('-') and float(text) == 0 else text


def _lane_phrase(r: ObjectRelation) -> str:
    if r.lane_offset == 0:
        return ''
    if r.lane_offset is None:
        side = 'left' if r.lateral_m > 0 else 'right'
        return f', {_f(abs(r.lateral_m))} m {side} of ego lane centre'
    side = 'left' if r.lane_offset > 0 else 'right'
    n = abs(r.lane_offset)
    return f', in {side} lane' if n == 1 else f', {n} lanes {side}'


def _motion_phrase(r: ObjectRelation) -> str:
    if r.speed_mps < STATIONARY_MPS:
        return ', stationary'
    if abs(r.across_lane_mps) > abs(r.along_lane_mps):
        way = 'left' if r.across_lane_mps > 0 else 'right'
    else:
        way = 'same direction' if r.along_lane_mps > 0 else 'opposite direction'
    text = f', moving {way} at {_f(r.speed_mps)} m/s'
    if r.accel_mps2 <= -ACCEL_PHRASE_MPS2:
        text += f', braking at {_f(-r.accel_mps2)} m/s2'
    elif r.accel_mps2 >= ACCEL_PHRASE_MPS2:
        text += f', speeding up at {_f(r.accel_mps2)} m/s2'
    return text


def describe_object(r: ObjectRelation) -> str:
    o = r.object
    if r.lane_offset == 0:
        where = 'ahead in ego lane' if r.longitudinal_m > 0 else 'behind in ego lane'
        text = f'{o.label} #{o.id} {where}, {_f(r.distance_m)} m'
    else:
        text = f'{o.label} #{o.id} {r.bearing} {_f(r.distance_m)} m{_lane_phrase(r)}'
    text += _motion_phrase(r)
    if r.in_path:
        if r.ttc_s is not None:
            text += f', closing at {_f(r.closing_mps)} m/s (time to collision {_f(r.ttc_s)} s)'
        elif r.closing_mps < -CLOSING_MPS:
            text += f', gap opening at {_f(-r.closing_mps)} m/s'
        else:
            text += ', keeping distance'
    if r.crossing:
        text += ' (crossing)'
    return text


def _lane_status(side_offset: int, offsets: set, relations: list[ObjectRelation]) -> str:
    side = 'left' if side_offset > 0 else 'right'
    if side_offset not in offsets:
        return f'no {side} lane'
    lo, hi = LANE_FREE_WINDOW_M
    busy = any(r.lane_offset == side_offset and lo <= r.longitudinal_m <= hi for r in relations)
    return f'{side} lane {"occupied" if busy else "free"}'


def describe_ego(ego: EgoState, speed_limit_mps: float, lanes, relations) -> str:
    parts = [f'{_f(ego.speed_mps)} m/s']
    if abs(ego.yaw_rate_rps) >= 0.03:
        side = 'left' if ego.yaw_rate_rps > 0 else 'right'
        parts.append(f'turning {side} at {_f(math.degrees(abs(ego.yaw_rate_rps)))} deg/s')
    limit = f'speed limit {_f(speed_limit_mps)} m/s'
    if ego.speed_mps > speed_limit_mps + 0.5:
        limit += ' (over the limit)'
    parts.append(limit)
    where = ego_lane_index(lanes)
    if where is not None:
        index, count = where
        usable = _usable_lanes(lanes)
        offsets = {lane.offset for lane, _ in usable}
        place = f'in lane {index} of {count} from the right'
        offset, heading, curvature = ego_in_lane(_ego_lane(usable)[1])
        if abs(offset) >= EGO_OFFSET_PHRASE_M:
            place += f', {_f(abs(offset))} m {"left" if offset > 0 else "right"} of its centre'
        if abs(math.degrees(heading)) >= EGO_HEADING_PHRASE_DEG:
            place += f', heading {_f(abs(math.degrees(heading)))} deg {"left" if heading > 0 else "right"} of it'
        if curvature is not None and abs(curvature) * CURVE_PHRASE_RADIUS_M > 1.0:
            # to 10 m: a radius is a coarse fact, and each distinct number is a word of the LM's vocabulary
            side = 'left' if curvature > 0 else 'right'
            place += f', road ahead curving {side} (radius {round(abs(1 / curvature), -1):.0f} m)'
        parts.append(f'{place} ({_lane_status(+1, offsets, relations)}, {_lane_status(-1, offsets, relations)})')
    else:
        parts.append(f'no lane map (assuming {_f(DEFAULT_LANE_WIDTH_M)} m lanes)')
    return 'Ego: ' + ', '.join(parts) + '.'


def describe_scene(stamp_ns: int, ego: EgoState, objects_base: list[Object3D], lanes: list[Lane],
                   speed_limit_mps: float, max_objects: int = 8) -> Scene:
    """Scene with all finite objects sorted by relevance and a text listing at most max_objects."""
    lanes = list(lanes or ())
    relations = relate_objects(ego, objects_base, lanes)
    listed = [describe_object(r) for r in relations[:max(int(max_objects), 0)]]
    if listed:
        objects_text = 'Objects: ' + '; '.join(listed)
        hidden = len(relations) - len(listed)
        objects_text += f'; +{hidden} more not listed.' if hidden else '.'
    else:
        objects_text = 'Objects: none.' if not relations else f'Objects: {len(relations)} not listed.'
    text = ' '.join([f't={_f(int(stamp_ns) / 1e9)}s.', describe_ego(ego, speed_limit_mps, lanes, relations),
                     objects_text])
    return Scene(stamp_ns=int(stamp_ns), ego=ego, objects=[r.object for r in relations], lanes=lanes,
                 speed_limit_mps=float(speed_limit_mps), text=text)
