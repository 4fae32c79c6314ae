"""Drawing cores for the visualizer node and the reports: camera overlay, RViz marker data, BEV.

No ROS here: images are numpy uint8 (H, W, 3) RGB, markers are plain dicts the node turns into
visualization_msgs. Drawing is vectorised over points and edges; Pillow draws the few primitives
(lines per box edge, text), so a 640x360 overlay with 30k points takes a few milliseconds.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fmdrive.geometry import box_corners_bev, pose2d_to_T, inv_T, yaw_to_quat

# RGB per class (RViz colours are the same / 255).
CLASS_COLORS = {
    'car': (255, 170, 0),
    'pedestrian': (255, 60, 60),
    'cyclist': (60, 200, 255),
    'cone': (255, 120, 200),
    'unknown': (200, 200, 200),
}
GT_COLOR = (60, 220, 60)
DETECTION_COLOR = (235, 50, 50)
TRACK_COLOR = (70, 130, 255)
PLAN_COLOR = (235, 0, 235)
EXPERT_COLOR = (255, 255, 255)
EGO_COLOR = (255, 220, 0)
EGO_SIZE_LW_M = (4.6, 1.9)
EGO_REAR_AXLE_TO_CENTER_M = 1.3

# 12 edges of a box_corners_3d box: bottom ring, top ring, verticals
BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                      [0, 4], [1, 5], [2, 6], [3, 7]])


def class_color(label: str) -> tuple:
    return CLASS_COLORS.get(label, CLASS_COLORS['unknown'])


@lru_cache(maxsize=8)
def font(size: int = 12):
    """Pillow's built-in scalable font (no font files needed)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):                       # Pillow without FreeType
        return ImageFont.load_default()


@lru_cache(maxsize=1)
def _depth_lut() -> np.ndarray:
    """(256, 3) uint8 colour map near = red -> yellow -> green -> cyan -> blue = far."""
    x = np.linspace(0.0, 1.0, 256)
    knots = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    rgb = np.array([[255, 30, 30], [255, 220, 0], [40, 220, 60], [0, 200, 255], [60, 60, 255]])
    return np.stack([np.interp(x, knots, rgb[:, c]) for c in range(3)], axis=1).astype(np.uint8)


def depth_colors(depth_m: np.ndarray, max_depth_m: float = 60.0) -> np.ndarray:
    """(N, 3) uint8 colour of each depth (m)."""
    idx = np.clip(np.asarray(depth_m) / max_depth_m * 255.0, 0, 255).astype(np.intp)
    return _depth_lut()[idx]


def _to_camera(T_camera_base, pts) -> np.ndarray:
    T = np.asarray(T_camera_base, dtype=np.float64)
    return pts @ T[:3, :3].T + T[:3, 3]


def _project(K, pts_cam) -> np.ndarray:
    """(..., 2) pixel coordinates of camera-frame points with z > 0."""
    K = np.asarray(K, dtype=np.float64)
    z = pts_cam[..., 2]
    return np.stack([K[0, 0] * pts_cam[..., 0] / z + K[0, 2],
                     K[1, 1] * pts_cam[..., 1] / z + K[1, 2]], axis=-1)


def clip_segments_near(a_cam: np.ndarray, b_cam: np.ndarray, near_m: float):
    """Clip 3D segments (N, 3) to z >= near_m. Returns (a, b, keep) with the clipped ends."""
    za, zb = a_cam[:, 2], b_cam[:, 2]
    keep = (za >= near_m) | (zb >= near_m)
    dz = np.where(np.abs(zb - za) > 1e-12, zb - za, 1e-12)
    t = ((near_m - za) / dz)[:, None]
    cut = a_cam + t * (b_cam - a_cam)
    a = np.where((za < near_m)[:, None], cut, a_cam)
    b = np.where((zb < near_m)[:, None], cut, b_cam)
    return a, b, keep


def clip_segments_rect(p0: np.ndarray, p1: np.ndarray, width: int, height: int):
    """Liang-Barsky clip of 2D segments (N, 2) to the image rectangle. Returns (p0, p1, keep)."""
    d = p1 - p0
    lo, hi = np.zeros(len(p0)), np.ones(len(p0))
    keep = np.ones(len(p0), bool)
    for p, q in ((-d[:, 0], p0[:, 0]), (d[:, 0], width - 1 - p0[:, 0]),
                 (-d[:, 1], p0[:, 1]), (d[:, 1], height - 1 - p0[:, 1])):
        parallel = np.abs(p) < 1e-12
        keep &= ~(parallel & (q < 0))
        r = np.where(parallel, 0.0, q / np.where(parallel, 1.0, p))
        lo = np.where(~parallel & (p < 0), np.maximum(lo, r), lo)
        hi = np.where(~parallel & (p > 0), np.minimum(hi, r), hi)
    keep &= lo <= hi
    return p0 + lo[:, None] * d, p0 + hi[:, None] * d, keep


def _object_corners_3d(objects) -> np.ndarray:
    """(B, 8, 3) corners of Object3D boxes (bottom four then top four, as box_corners_3d)."""
    if not objects:
        return np.zeros((0, 8, 3))
    c = np.array([o.center for o in objects])
    s = np.array([o.size for o in objects])
    yaw = np.array([o.yaw_rad for o in objects])
    lx = np.array([1, -1, -1, 1]) * 0.5
    ly = np.array([1, 1, -1, -1]) * 0.5
    x = s[:, :1] * lx
    y = s[:, 1:2] * ly
    cy, sy = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    bx, by = c[:, :1] + cy * x - sy * y, c[:, 1:2] + sy * x + cy * y
    z0 = (c[:, 2] - s[:, 2] / 2)[:, None].repeat(4, 1)
    z1 = (c[:, 2] + s[:, 2] / 2)[:, None].repeat(4, 1)
    bottom = np.stack([bx, by, z0], -1)
    top = np.stack([bx, by, z1], -1)
    return np.concatenate([bottom, top], axis=1)


def _ribbon_quads(traj_xy: np.ndarray, width_m: float, step_m: float = 0.5) -> np.ndarray:
    """(Q, 4, 3) ground quads (z=0) of a ribbon along a polyline resampled every step_m."""
    seg = np.linalg.norm(np.diff(traj_xy, axis=0), axis=1)
    s = np.r_[0.0, np.cumsum(seg)]
    if s[-1] < 1e-6:
        return np.zeros((0, 4, 3))
    s_new = np.r_[np.arange(0.0, s[-1], step_m), s[-1]]
    xy = np.c_[np.interp(s_new, s, traj_xy[:, 0]), np.interp(s_new, s, traj_xy[:, 1])]
    tangent = np.gradient(xy, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
    normal = np.c_[-tangent[:, 1], tangent[:, 0]] * (width_m / 2)
    left, right = xy + normal, xy - normal
    quads = np.stack([left[:-1], left[1:], right[1:], right[:-1]], axis=1)
    return np.concatenate([quads, np.zeros(quads.shape[:2] + (1,))], axis=-1)


def draw_overlay(image_rgb, camera_K, T_camera_base, points_base=None, objects_base=(),
                 trajectory_base=None, *, boxes2d=(), max_depth_m: float = 60.0, near_m: float = 0.5,
                 point_size_px: int = 2, ribbon_width_m: float = 1.8,
                 labels: bool = True) -> np.ndarray:
    """Camera image with LiDAR points (coloured by depth), 3D boxes, the camera encoder's 2D boxes
    and the planned trajectory.

    image_rgb (H, W, 3) uint8; camera_K (3, 3) or a CameraModel (then points are projected with its
    lens distortion); T_camera_base (4, 4) maps base_link into the
    camera optical frame; points_base (N, 3|4) or None; objects_base list[Object3D] in base_link;
    trajectory_base (K, 2|3) x, y[, ...] in base_link or None (drawn on the ground, z = 0);
    boxes2d: camera detections (objects with .box2d u_min, v_min, u_max, v_max in this image's
    pixels, .label, .score), drawn as dashed rectangles so they read apart from the 3D wireframes.
    Anything behind the camera (z < near_m) is clipped, never wrapped into the image.
    """
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'image_rgb must be (H, W, 3) RGB, got shape {img.shape}')
    img = img.astype(np.uint8, copy=True)
    H, W = img.shape[:2]
    camera_model = camera_K if hasattr(camera_K, 'project') else None
    K = np.asarray(camera_model.K if camera_model is not None else camera_K, dtype=np.float64).reshape(3, 3)

    # ---- LiDAR points: far first so near points stay on top
    if points_base is not None and len(points_base):
        pts = np.asarray(points_base, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f'points_base must be (N, 3) or (N, 4), got shape {pts.shape}')
        pc = _to_camera(T_camera_base, pts[:, :3])
        front = pc[:, 2] > near_m
        pc = pc[front]
        # points through the lens model when one is given (raw, distorted images), so the overlay
        # shows the calibration as it is; boxes and the trajectory are drawn with the pinhole K
        uv = camera_model.project(pc)[0] if camera_model is not None else _project(K, pc)
        finite = np.isfinite(uv).all(axis=1)
        pc, uv = pc[finite], uv[finite]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
        pc, uv = pc[inside], uv[inside].astype(np.intp)
        order = np.argsort(-pc[:, 2], kind='stable')
        u, v, col = uv[order, 0], uv[order, 1], depth_colors(pc[order, 2], max_depth_m)
        for du in range(point_size_px):
            for dv in range(point_size_px):
                img[np.minimum(v + dv, H - 1), np.minimum(u + du, W - 1)] = col

    pil = Image.fromarray(img)

    # ---- trajectory ribbon on the ground (semi-transparent)
    if trajectory_base is not None and len(trajectory_base) >= 1:
        traj = np.asarray(trajectory_base, dtype=np.float64)[:, :2]
        if np.linalg.norm(traj[0]) > 0.1:
            traj = np.vstack([[0.0, 0.0], traj])                 # the ribbon starts at the ego
        quads = _ribbon_quads(traj, ribbon_width_m)
        if len(quads):
            qc = _to_camera(T_camera_base, quads.reshape(-1, 3)).reshape(-1, 4, 3)
            ok = np.all(qc[:, :, 2] > near_m, axis=1)              # quads are short: drop, not cut
            quv = _project(K, qc[ok])
            on_screen = ((quv[..., 0].max(1) >= 0) & (quv[..., 0].min(1) < W)
                         & (quv[..., 1].max(1) >= 0) & (quv[..., 1].min(1) < H))
            layer = Image.new('RGBA', (W, H), (0, 0, 0, 0))
            d = ImageDraw.Draw(layer)
            for q in quv[on_screen]:
                d.polygon([tuple(p) for p in np.clip(q, -4 * W, 4 * W)],
                          fill=PLAN_COLOR + (90,))
            pil = Image.alpha_composite(pil.convert('RGBA'), layer).convert('RGB')

    # ---- 3D boxes as wireframes
    draw = ImageDraw.Draw(pil)
    objects_base = list(objects_base or ())
    if objects_base:
        corners = _object_corners_3d(objects_base)                # (B, 8, 3)
        cc = _to_camera(T_camera_base, corners.reshape(-1, 3)).reshape(-1, 8, 3)
        a = cc[:, BOX_EDGES[:, 0]].reshape(-1, 3)
        b = cc[:, BOX_EDGES[:, 1]].reshape(-1, 3)
        owner = np.repeat(np.arange(len(objects_base)), len(BOX_EDGES))
        a, b, keep = clip_segments_near(a, b, near_m)
        a, b, owner = a[keep], b[keep], owner[keep]
        p0, p1, keep = clip_segments_rect(_project(K, a), _project(K, b), W, H)
        for s0, s1, k in zip(p0[keep], p1[keep], owner[keep]):
            draw.line([tuple(s0), tuple(s1)], fill=class_color(objects_base[k].label), width=2)
        if labels:
            top_center = cc[:, 4:, :].mean(axis=1)
            vis = top_center[:, 2] > near_m
            tuv = np.full((len(cc), 2), -1.0)
            tuv[vis] = _project(K, top_center[vis])
            f = font(11)
            for k, o in enumerate(objects_base):
                u, v = tuv[k]
                if not vis[k] or not (0 <= u < W and 0 <= v < H):
                    continue
                text = f'{o.label} #{o.id}' if o.id else o.label
                x0, y0 = int(u) - 3 * len(text), max(int(v) - 14, 0)
                bbox = draw.textbbox((x0, y0), text, font=f)
                draw.rectangle(bbox, fill=(0, 0, 0))
                draw.text((x0, y0), text, fill=class_color(o.label), font=f)
    _draw_boxes2d(draw, boxes2d, W, H, labels)
    return np.asarray(pil, dtype=np.uint8)


def _draw_boxes2d(draw, boxes2d, W: int, H: int, labels: bool, dash_px: int = 5) -> None:
    """Dashed rectangles of camera detections (a box off the image or not finite is skipped)."""
    f = font(10)
    for o in boxes2d or ():
        if o.box2d is None:
            continue
        u0, v0, u1, v1 = np.asarray(o.box2d, np.float64).reshape(4)
        if not np.isfinite([u0, v0, u1, v1]).all() or u1 <= u0 or v1 <= v0 or u1 < 0 or v1 < 0 \
                or u0 >= W or v0 >= H:
            continue
        u0, u1 = np.clip([u0, u1], 0, W - 1)
        v0, v1 = np.clip([v0, v1], 0, H - 1)
        color = class_color(o.label)
        _dashed(draw, np.array([(u0, v0), (u1, v0), (u1, v1), (u0, v1), (u0, v0)]), color, dash_px=dash_px, width=1)
        if labels:
            text = f'{o.label} {o.score:.2f}'
            y0 = v1 + 1 if v1 + 12 < H else max(v0 - 12, 0)
            bbox = draw.textbbox((u0, y0), text, font=f)
            draw.rectangle(bbox, fill=(0, 0, 0))
            draw.text((u0, y0), text, fill=color, font=f)


# ================================================================ RViz markers
def _marker(ns, mid, mtype, frame_id, position=(0, 0, 0), yaw_rad=0.0, scale=(1, 1, 1),
            color=(1, 1, 1, 1), points=None, text='', lifetime_s=0.0) -> dict:
    return {'ns': ns, 'id': int(mid), 'type': mtype, 'action': 'add', 'frame_id': frame_id,
            'pose': {'position': [float(x) for x in position],
                     'orientation': [float(x) for x in yaw_to_quat(yaw_rad)]},
            'scale': [float(x) for x in scale], 'color': [float(x) for x in color],
            'points': [] if points is None else [[float(x) for x in p] for p in points],
            'text': text, 'lifetime_s': float(lifetime_s)}


def markers_data(objects_base, plan_poses_odom=None, *, base_frame: str = 'base_link',
                 odom_frame: str = 'odom', lifetime_s: float = 0.5, clear: bool = True,
                 box_alpha: float = 0.45) -> list[dict]:
    """Plain dicts describing RViz markers of the objects and the plan.

    Each dict: ns, id, type ('cube' | 'line_strip' | 'text' | 'delete_all'), action ('add' or
    'deleteall'), frame_id, pose {position [x,y,z], orientation [x,y,z,w]}, scale [x,y,z],
    color [r,g,b,a] in 0..1, points [[x,y,z], ...] (line_strip), text, lifetime_s.
    Namespaces: 'objects' (cubes) and 'labels' (texts) keyed by track id (untracked objects get
    ids from 1_000_000), 'plan' (one line strip, z = 0.1 m, in odom_frame).
    clear=True puts a 'deleteall' marker first so objects that left disappear at once.
    """
    out = []
    if clear:
        out.append({**_marker('', 0, 'delete_all', base_frame), 'action': 'deleteall'})
    untracked = 1_000_000
    for o in objects_base or ():
        if o.id:
            mid = int(o.id)
        else:
            mid, untracked = untracked, untracked + 1
        r, g, b = (c / 255.0 for c in class_color(o.label))
        out.append(_marker('objects', mid, 'cube', base_frame, o.center, o.yaw_rad, o.size,
                           (r, g, b, box_alpha), lifetime_s=lifetime_s))
        speed = float(np.linalg.norm(o.velocity[:2]))
        text = f'{o.label} #{o.id} {o.score:.2f}' if o.id else f'{o.label} {o.score:.2f}'
        if speed > 0.3:
            text += f' {speed:.1f} m/s'
        out.append(_marker('labels', mid, 'text', base_frame,
                           o.center + np.array([0.0, 0.0, o.size[2] / 2 + 0.6]),
                           scale=(0.0, 0.0, 0.6), color=(1, 1, 1, 1), text=text,
                           lifetime_s=lifetime_s))
    if plan_poses_odom is not None and len(plan_poses_odom) >= 2:
        p = np.asarray(plan_poses_odom, dtype=np.float64)
        pts = np.c_[p[:, :2], np.full(len(p), 0.1)]
        r, g, b = (c / 255.0 for c in PLAN_COLOR)
        out.append(_marker('plan', 0, 'line_strip', odom_frame, scale=(0.3, 0.0, 0.0),
                           color=(r, g, b, 1.0), points=pts, lifetime_s=lifetime_s))
    return out


# ================================================================ bird's-eye view
class BevCanvas:
    """Pixel mapping of an ego-centred BEV: x forward is up, y left is left."""

    def __init__(self, extent_m=(-20.0, 60.0, -30.0, 30.0), px_per_m: float = 8.0):
        self.x_min, self.x_max, self.y_min, self.y_max = (float(e) for e in extent_m)
        if self.x_max <= self.x_min or self.y_max <= self.y_min or px_per_m <= 0:
            raise ValueError(f'extent_m must be (x_min, x_max, y_min, y_max) with min < max and '
                             f'px_per_m > 0; got {extent_m}, {px_per_m}')
        self.px = float(px_per_m)
        self.width = int(round((self.y_max - self.y_min) * self.px))
        self.height = int(round((self.x_max - self.x_min) * self.px))

    def to_px(self, xy) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.c_[(self.y_max - xy[:, 1]) * self.px, (self.x_max - xy[:, 0]) * self.px]


def _box_polys_base(objects, T_base_world) -> np.ndarray:
    if not objects:
        return np.zeros((0, 4, 2))
    polys = np.stack([box_corners_bev(o.center[:2], o.size[:2], o.yaw_rad) for o in objects])
    h = polys.reshape(-1, 2) @ T_base_world[:2, :2].T + T_base_world[:2, 3]
    return h.reshape(-1, 4, 2)


def _dashed(draw, pts_px, color, dash_px=8.0, width=2):
    """Dashed polyline: split into dash_px pieces by arc length (vectorised), draw every other."""
    if len(pts_px) < 2:
        return
    seg = np.linalg.norm(np.diff(pts_px, axis=0), axis=1)
    s = np.r_[0.0, np.cumsum(seg)]
    if s[-1] < 1:
        return
    s_new = np.arange(0.0, s[-1] + dash_px, dash_px)
    s_new[-1] = min(s_new[-1], s[-1])
    p = np.c_[np.interp(s_new, s, pts_px[:, 0]), np.interp(s_new, s, pts_px[:, 1])]
    for k in range(0, len(p) - 1, 2):
        draw.line([tuple(p[k]), tuple(p[k + 1])], fill=color, width=width)


def draw_bev(gt_objects=(), detections=(), tracks=(), trajectory=None, expert_trajectory=None,
             ego=None, extent_m=(-20.0, 60.0, -30.0, 30.0), px_per_m: float = 8.0,
             grid_m: float = 10.0, legend: bool = True) -> np.ndarray:
    """Bird's-eye view centred on the ego: GT (green outlines), detections (red), tracks (blue,
    with ids), planned trajectory (magenta), expert trajectory (white dashed), ego box, grid and
    legend. All inputs are in one world frame (odom) and `ego` (EgoState, or anything with x, y,
    yaw_rad) is the ego pose in it; with ego=None the inputs are taken to be in base_link.
    Trajectories are (K, 2|3) x, y[, ...]. extent_m = (x_min, x_max, y_min, y_max) around the ego.
    """
    cv = BevCanvas(extent_m, px_per_m)
    T_base_world = np.eye(4) if ego is None else inv_T(pose2d_to_T(ego.x, ego.y, ego.yaw_rad))
    img = Image.new('RGB', (cv.width, cv.height), (28, 30, 34))
    d = ImageDraw.Draw(img)
    f = font(11)

    # grid, with the metres written on the left edge
    for x in np.arange(np.ceil(cv.x_min / grid_m) * grid_m, cv.x_max + 1e-9, grid_m):
        (u0, v), (u1, _) = cv.to_px([[x, cv.y_max], [x, cv.y_min]])
        d.line([(u0, v), (u1, v)], fill=(70, 74, 80) if abs(x) > 1e-9 else (110, 110, 120))
        d.text((u0 + 2, v - 12), f'{x:.0f} m', fill=(120, 124, 130), font=f)
    for y in np.arange(np.ceil(cv.y_min / grid_m) * grid_m, cv.y_max + 1e-9, grid_m):
        (u, v0), (_, v1) = cv.to_px([[cv.x_max, y], [cv.x_min, y]])
        d.line([(u, v0), (u, v1)], fill=(70, 74, 80) if abs(y) > 1e-9 else (110, 110, 120))

    def to_base(xy):
        xy = np.asarray(xy, dtype=np.float64)[:, :2]
        return xy @ T_base_world[:2, :2].T + T_base_world[:2, 3]

    def boxes(objects, color, width, fill=None, ids=False):
        objects = list(objects or ())
        polys = _box_polys_base(objects, T_base_world)
        for o, poly in zip(objects, polys):
            px = cv.to_px(poly)
            d.polygon([tuple(p) for p in px], outline=color, fill=fill, width=width)
            front = cv.to_px(poly[[0, 3]])                         # heading edge, thicker
            d.line([tuple(front[0]), tuple(front[1])], fill=color, width=width + 1)
            if ids and o.id:
                d.text((px[:, 0].max() + 2, px[:, 1].min()), f'#{o.id}', fill=color, font=f)

    boxes(gt_objects, GT_COLOR, 2)
    boxes(detections, DETECTION_COLOR, 1)
    boxes(tracks, TRACK_COLOR, 1, ids=True)

    if expert_trajectory is not None and len(expert_trajectory) >= 2:
        _dashed(d, cv.to_px(to_base(expert_trajectory)), EXPERT_COLOR)
    if trajectory is not None and len(trajectory) >= 1:
        px = cv.to_px(to_base(trajectory))
        if len(px) >= 2:
            d.line([tuple(p) for p in px], fill=PLAN_COLOR, width=3)
        for u, v in px:
            d.ellipse([u - 3, v - 3, u + 3, v + 3], fill=PLAN_COLOR)

    # ego: base_link at the origin (rear axle), box ahead of it
    ego_poly = box_corners_bev([EGO_REAR_AXLE_TO_CENTER_M, 0.0], EGO_SIZE_LW_M, 0.0)
    d.polygon([tuple(p) for p in cv.to_px(ego_poly)], outline=EGO_COLOR, fill=(90, 80, 20),
              width=2)

    if legend:
        items = [('ground truth', GT_COLOR), ('detection', DETECTION_COLOR),
                 ('track #id', TRACK_COLOR), ('plan', PLAN_COLOR), ('expert', EXPERT_COLOR),
                 ('ego', EGO_COLOR)]
        x0, y0, row = 6, 6, 14
        d.rectangle([x0 - 3, y0 - 3, x0 + 92, y0 + row * len(items) + 1], fill=(0, 0, 0))
        for i, (name, color) in enumerate(items):
            y = y0 + i * row
            d.line([(x0, y + 6), (x0 + 16, y + 6)], fill=color, width=3)
            d.text((x0 + 22, y), name, fill=(230, 230, 230), font=f)
    return np.asarray(img, dtype=np.uint8)
