"""Ground-truth sampling for the LiDAR encoder ("GT-paste", SECOND / PointPillars / CenterPoint's
database sampler): objects of the rare classes, with their LiDAR returns, are cut out of training
frames and pasted into other training frames, so a cyclist seen in 8 of 72 scenes is seen in many.

How a paste is made (numpy only; no torch):
- The database holds every object of the chosen classes with >= min_points returns: the points in
  its box (footprint grown by `margin`, from 0.1 m above the box bottom, i.e. without the ground it
  stands on), its box, class and the beams of its frame.
- An object is pasted where it was, turned about the sensor (z axis) by a small random angle, so
  its range, and with it the density and the beam pattern of its returns, stays true. It is
  pasted only into a frame of a similar sensor (beams within a factor of 2), only where no other
  box (real or pasted) comes within 0.3 m, and only where the frame has few returns above the
  ground (a pasted cyclist inside a hedge or a car that is not labelled teaches nothing). Points
  of the target inside the pasted footprint above the ground are removed; the ground stays.
- A pair of consecutive frames (what a batch holds, for the embedding loss) gets the same track
  in both: the source object's next frame goes into the second frame, with the same angle and one
  instance id, so the embedding loss still sees one object in two views.
The BEV canvas of a pasted frame is computed again by the vehicle's bev_canvas (train_lidar.py).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from fmdrive import config
from fmdrive.geometry import rot_z, wrap_angle

PASTED_ID_BASE = 50_000             # track ids of pasted objects: above the simulator's, below the
                                    # scene band of train_lidar's instance keys (x 100000)
CLEARANCE_M = 0.3                   # free space kept between a pasted box and every other box
MAX_CLUTTER_POINTS = 8              # returns above the ground a pasted footprint may displace


@dataclass
class DbObject:
    points: np.ndarray      # (n, 4) float32, base_link of the source frame
    center: np.ndarray      # (3,)
    size: np.ndarray        # (3,) length, width, height
    yaw: float
    label: int
    beams: int
    key: tuple              # (scene, track id, position in the split)


def box_mask(points: np.ndarray, center, size, yaw: float, margin: float = 0.0, above_bottom: float = 0.1) -> np.ndarray:
    """Points inside a box's footprint (grown by margin) and from above_bottom over its bottom to
    its top (+ margin)."""
    d = points[:, :2] - np.asarray(center[:2], np.float32)
    c, s = math.cos(yaw), math.sin(yaw)
    u = d[:, 0] * c + d[:, 1] * s
    v = -d[:, 0] * s + d[:, 1] * c
    bottom = float(center[2]) - float(size[2]) / 2
    z = points[:, 2]
    return ((np.abs(u) <= size[0] / 2 + margin) & (np.abs(v) <= size[1] / 2 + margin)
            & (z >= bottom + above_bottom) & (z <= bottom + float(size[2]) + margin))


def rotate_z(xyz: np.ndarray, angle: float) -> np.ndarray:
    """(3,) or (N, 3) points turned about z, as float32."""
    return (np.asarray(xyz, np.float32) @ rot_z(angle).T.astype(np.float32)).astype(np.float32)


class GtDatabase:
    """The rare-class objects of a list of dataset.Frame (one split, frames in scene order)."""

    def __init__(self, frames, classes=('cyclist', 'pedestrian'), min_points: int = 5, margin: float = 0.15):
        self.objects: list[DbObject] = []
        self.by_class: dict[int, list[int]] = {config.CLASSES.index(c): [] for c in classes}
        where: dict[tuple, int] = {}
        for i, f in enumerate(frames):
            for j in np.flatnonzero(np.isin(f.labels, list(self.by_class)) & (f.lidar_points >= min_points)):
                m = box_mask(f.points, f.centers[j], f.sizes[j], float(f.yaws[j]), margin)
                if m.sum() < min_points:
                    continue
                key = (f.scene, int(f.ids[j]), i)
                where[key] = len(self.objects)
                self.by_class[int(f.labels[j])].append(len(self.objects))
                self.objects.append(DbObject(f.points[m].astype(np.float32), np.asarray(f.centers[j], np.float32),
                                             np.asarray(f.sizes[j], np.float32), float(f.yaws[j]), int(f.labels[j]),
                                             int(f.beams), key))
        # the same track in the next frame of its scene, for pairs
        self.next_of = {k: where[(s, t, i + 1)] for (s, t, i), k in where.items() if (s, t, i + 1) in where}
        self.beams = np.array([o.beams for o in self.objects], np.int64)

    def counts(self) -> dict:
        return {config.CLASSES[c]: len(v) for c, v in self.by_class.items()}

    def draw(self, rng: np.random.Generator, label: int, beams: int) -> int | None:
        """An object of `label` from a frame of a similar sensor (beams within a factor of 2), or None."""
        pool = np.asarray(self.by_class.get(label, []), np.int64)
        if beams and len(pool):
            pool = pool[(self.beams[pool] * 2 >= beams) & (self.beams[pool] <= beams * 2)]
        return int(rng.choice(pool)) if len(pool) else None


def _free(center, size, boxes) -> bool:
    r = 0.5 * math.hypot(float(size[0]), float(size[1]))
    for c, s in boxes:
        if math.hypot(float(center[0] - c[0]), float(center[1] - c[1])) < r + 0.5 * math.hypot(float(s[0]), float(s[1])) \
                + CLEARANCE_M:
            return False
    return True


def plan_pastes(frame, db: GtDatabase, rng: np.random.Generator, per_class: dict, max_angle: float = math.pi / 8) -> list:
    """[(object index, angle)] that fit into frame (its boxes and its clutter), up to per_class
    (class name -> count) objects per class."""
    boxes = list(zip(frame.centers, frame.sizes))
    chosen = []
    for name, count in per_class.items():
        label = config.CLASSES.index(name)
        for _ in range(int(count)):
            k = db.draw(rng, label, int(frame.beams))
            if k is None:
                break
            o = db.objects[k]
            angle = float(rng.uniform(-max_angle, max_angle))
            centre = rotate_z(o.center, angle)
            if not _free(centre, o.size, boxes):
                continue
            clutter = box_mask(frame.points, centre, o.size, o.yaw + angle).sum()
            if clutter > MAX_CLUTTER_POINTS:
                continue
            boxes.append((centre, o.size))
            chosen.append((k, angle))
    return chosen


def apply_pastes(frame, db: GtDatabase, pastes: list, first_id: int = PASTED_ID_BASE):
    """A new Frame: frame with the planned objects pasted (points replaced inside their footprints,
    boxes appended with ids first_id, first_id + 1, ...). pastes: [(object index, angle)]."""
    if not pastes:
        return frame
    points = frame.points
    add = {'centers': [], 'sizes': [], 'yaws': [], 'labels': [], 'ids': [], 'lidar_points': []}
    pasted = []
    for n, (k, angle) in enumerate(pastes):
        o = db.objects[k]
        centre, yaw = rotate_z(o.center, angle), o.yaw + angle
        points = points[~box_mask(points, centre, o.size, yaw)]
        pts = o.points.copy()
        pts[:, :3] = rotate_z(pts[:, :3], angle)
        pasted.append(pts)
        add['centers'].append(centre)
        add['sizes'].append(o.size)
        add['yaws'].append(float(wrap_angle(yaw)))
        add['labels'].append(o.label)
        add['ids'].append(first_id + n)
        add['lidar_points'].append(len(pts))
    points = np.concatenate([points.astype(np.float32)] + pasted).astype(np.float32)
    m = len(pastes)
    return dataclasses.replace(
        frame, points=points,
        centers=np.concatenate([frame.centers, np.asarray(add['centers'], frame.centers.dtype)]),
        sizes=np.concatenate([frame.sizes, np.asarray(add['sizes'], frame.sizes.dtype)]),
        yaws=np.concatenate([frame.yaws, np.asarray(add['yaws'], frame.yaws.dtype)]),
        labels=np.concatenate([frame.labels, np.asarray(add['labels'], frame.labels.dtype)]),
        ids=np.concatenate([frame.ids, np.asarray(add['ids'], frame.ids.dtype)]),
        lidar_points=np.concatenate([frame.lidar_points, np.asarray(add['lidar_points'], frame.lidar_points.dtype)]),
        boxes2d=np.concatenate([frame.boxes2d, np.full((m, 4), np.nan, frame.boxes2d.dtype)]),
        camera_pixels=np.concatenate([frame.camera_pixels, np.zeros(m, frame.camera_pixels.dtype)]))


def paste_pair(first, second, db: GtDatabase, rng: np.random.Generator, per_class: dict, first_id: int = PASTED_ID_BASE):
    """Two consecutive frames with the same pasted tracks: each object's next frame (when the
    database has it; else the object again) goes into `second`, same angle, same id."""
    plan = plan_pastes(first, db, rng, per_class)
    if not plan:
        return first, second
    second_plan = [(db.next_of.get(k, k), angle) for k, angle in plan]
    # the next frame's object can collide in the second frame: keep only what fits in both
    boxes = list(zip(second.centers, second.sizes))
    pairs = [(p, (k, angle)) for p, (k, angle) in zip(plan, second_plan)
             if _free(rotate_z(db.objects[k].center, angle), db.objects[k].size, boxes)]
    return (apply_pastes(first, db, [p for p, _ in pairs], first_id),
            apply_pastes(second, db, [q for _, q in pairs], first_id))


def rotate_frame(frame, angle: float):
    """The frame turned about the sensor's z axis by angle (points, box centres, yaws): global
    rotation, as PointPillars / CenterPoint train (+-pi/4), so the yaw head sees every heading
    and not mostly the road's (crossing traffic at an intersection was the largest source of
    missed cars: right centre and size, yaw off by 90 degrees, BEV IoU 0.25)."""
    if angle == 0.0:
        return frame
    points = frame.points.astype(np.float32, copy=True)
    points[:, :3] = rotate_z(points[:, :3], angle)
    yaws = wrap_angle(frame.yaws + angle).astype(frame.yaws.dtype)
    return dataclasses.replace(frame, points=points, centers=rotate_z(frame.centers, angle).astype(frame.centers.dtype),
                               yaws=yaws)


def turn_canvas(canvas: np.ndarray, turn: int, grid) -> np.ndarray:
    """A (F, ny, nx) BEV canvas as bev_canvas makes it for the points turned by turn * 90 degrees
    about the grid's centre, base_link (turn = +1 or -1): exact on a square grid centred there, whose cells
    map onto cells; channels that depend on direction (the points' offsets in their cells) turn too.
    +90 degrees takes (x, y) to (-y, x): cell (iy, ix) goes to (ix, n - 1 - iy)."""
    (x0, x1), (y0, y1) = grid.x_range_m, grid.y_range_m
    if not (np.isclose(x0, -x1) and np.isclose(y0, -y1) and np.isclose(x0, y0) and grid.nx == grid.ny
            and np.isclose(grid.voxel_size_m[0], grid.voxel_size_m[1])):
        raise ValueError('a quarter turn of the canvas needs a square grid centred on base_link')
    out = np.rot90(canvas, -turn, axes=(1, 2))
    names = list(getattr(grid, 'bev_features', ()) or ())
    if 'x_offset_mean' in names or 'y_offset_mean' in names:
        # a point's offset o in its cell turns with it: R(+90) o = (-o_y, o_x), R(-90) o = (o_y, -o_x)
        if not ('x_offset_mean' in names and 'y_offset_mean' in names):
            raise ValueError('a quarter turn of a canvas needs both x_offset_mean and y_offset_mean, or neither')
        ix, iy = names.index('x_offset_mean'), names.index('y_offset_mean')
        out = out.copy()
        ox, oy = out[ix].copy(), out[iy].copy()
        out[ix], out[iy] = (-oy, ox) if turn > 0 else (oy, -ox)
    return out
