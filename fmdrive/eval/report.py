"""A picture report of a run (Pillow only): for 2-3 well-chosen frames, the camera image with
projected LiDAR, 3D boxes and the planned trajectory (left) next to the bird's-eye view of ground
truth vs detections vs tracks vs plan vs expert (right), under a title with the scenario and the
run's metrics (from metrics.json, written by `fmdrive eval`).

`render_report` draws from plain data (testable without bags); `make_report` loads a run dir.
Geometry comes from the input bag itself (RUN_DIR/bag): its /tf_static and /tf through the TF
buffer (any frame ids: `velodyne`, `cam_front`, chains) and its camera_info, with
calibration/extrinsics.yaml only for frames the bag does not publish. Without ground_truth.json (a
real drive, an imported dataset without labels) the report draws the sensors, detections, tracks
and plan, with the ego pose from the bag's odom -> base_link transform.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fmdrive.config import EXTRINSICS_FILE, FRAMES, TOPICS
from fmdrive.eval.metrics import (MIN_LIDAR_POINTS, STAMP_TOLERANCE_NS, EvalError, GroundTruthFrame,
                                  load_ground_truth, nearest_frame_index, read_outputs)
from fmdrive.geometry import inv_T
from fmdrive.objects import EgoState, Plan
from fmdrive.visualization import draw_bev, draw_overlay, font

ROW_HEIGHT_PX = 480
CAMERA_MATCH_NS = 60_000_000   # camera boxes belong to the image drawn (the image is matched within this too)
BEV_EXTENT_M = (-20.0, 60.0, -30.0, 30.0)
BACKGROUND = (18, 19, 22)
TEXT = (235, 235, 235)
MUTED = (160, 165, 175)


@dataclass
class ReportFrame:
    """Everything drawn for one frame. Objects in base_link; plan and GT in odom."""
    stamp_ns: int
    t_s: float                                   # time since the first GT frame
    gt: GroundTruthFrame
    image_rgb: np.ndarray | None = None          # (H, W, 3) uint8
    points_base: np.ndarray | None = None        # (N, 3|4)
    detections_base: list = field(default_factory=list)
    camera_detections: list = field(default_factory=list)  # the camera encoder's 2D boxes (image pixels)
    tracks_base: list = field(default_factory=list)
    plan: Plan | None = None
    expert_xy_odom: np.ndarray | None = None     # (K, 2) expert ego positions over the horizon
    T_camera_base: np.ndarray | None = None      # this frame's camera pose (the bag's TF at its stamp)


# ------------------------------------------------------------------ the bag's geometry
@dataclass
class BagGeometry:
    """A bag's TF buffer and camera model: what the report projects with."""
    buffer: object                               # fmdrive.tf.TransformBuffer
    camera: object | None                        # CameraModel (frame_id = the camera's frame)
    base_frame: str = FRAMES['base']

    def T_camera_base(self, stamp_ns=None) -> np.ndarray | None:
        if self.camera is None or not self.camera.frame_id:
            return None
        return inv_T(self.buffer.optical_T(self.base_frame, self.camera.frame_id, stamp_ns))

    def T_base(self, frame_id: str, stamp_ns=None) -> np.ndarray:
        return self.buffer.lookup(self.base_frame, frame_id, stamp_ns)

    def ego(self, stamp_ns) -> EgoState:
        """base_link in odom at stamp_ns from the bag's /tf (origin if the bag has no poses)."""
        odom = FRAMES['odom']
        if not self.buffer.can_transform(odom, self.base_frame, stamp_ns):
            return EgoState()
        T = self.buffer.lookup(odom, self.base_frame, stamp_ns)
        return EgoState(float(T[0, 3]), float(T[1, 3]), float(np.arctan2(T[1, 0], T[0, 0])))


def bag_geometry(bag_dir, base_frame: str = FRAMES['base']) -> BagGeometry:
    """TF buffer (bag /tf_static + /tf, YAML fallback) and the first camera_info of a bag."""
    from fmdrive.bags.reader import BagReader
    from fmdrive.bags.tf_from_bag import tf_buffer_from_bag
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.msgs import camera_info_to_fields
    with BagReader(bag_dir) as reader:
        fallback = load_extrinsics(EXTRINSICS_FILE) if Path(EXTRINSICS_FILE).is_file() else None
        buf = tf_buffer_from_bag(reader, fallback_extrinsics=fallback)
        camera = None
        if TOPICS['camera_info'] in reader.topics:
            for _, _, msg in reader.messages([TOPICS['camera_info']]):
                fields = camera_info_to_fields(msg)
                if fields['width'] and fields['height'] and any(fields['k']):
                    camera = CameraModel.from_camera_info_fields(**fields)
                break
    return BagGeometry(buf, camera, base_frame)


# ------------------------------------------------------------------ choosing frames
def choose_frames(gt_frames, n: int = 3, min_gap_s: float = 2.0,
                  min_lidar_points: int = MIN_LIDAR_POINTS, labels: list | None = None) -> list[int]:
    """Stamps of the n frames with the most visible objects (in camera and seen by LiDAR),
    at least min_gap_s apart (relaxed when the run is short), in time order. labels: one per
    frame (e.g. the plan's source, llm or fallback; None: no label): each label the run has is
    shown at least once (the rarest first, its busiest frame) while there is room."""
    if not gt_frames:
        return []
    stamps = np.array([f.stamp_ns for f in gt_frames], dtype=np.int64)
    score = np.array([int(np.sum(f.in_camera & (f.num_lidar_points >= min_lidar_points)))
                      for f in gt_frames], dtype=float)
    # prefer the middle of ties (the run has settled) by a tiny bias
    score -= 1e-3 * np.abs(np.linspace(-1.0, 1.0, len(gt_frames)))
    duration_s = (stamps[-1] - stamps[0]) / 1e9
    gap_ns = int(min(min_gap_s, duration_s / max(n, 1)) * 1e9)
    order = np.argsort(-score, kind='stable')
    chosen: list[int] = []

    def apart(k) -> bool:
        return all(abs(int(stamps[k]) - int(stamps[c])) >= gap_ns for c in chosen)
    if labels is not None and len(labels) == len(gt_frames):
        counts = {}
        for lab in labels:
            if lab is not None:
                counts[lab] = counts.get(lab, 0) + 1
        for want in sorted(counts, key=lambda lab: (counts[lab], str(lab))):
            k = next((int(k) for k in order if labels[k] == want and apart(k)), None)
            if k is not None and len(chosen) < n:
                chosen.append(k)
    for k in order:
        if len(chosen) >= n:
            break
        if int(k) not in chosen and apart(k):
            chosen.append(int(k))
    return sorted(int(stamps[k]) for k in chosen)


# ------------------------------------------------------------------ drawing
def _plan_in_base(plan: Plan | None, gt: GroundTruthFrame) -> np.ndarray | None:
    if plan is None or len(plan.poses) == 0:
        return None
    T_base_odom = inv_T(gt.ego.T_odom_base())
    xy = np.asarray(plan.poses, dtype=np.float64)[:, :2]
    return xy @ T_base_odom[:2, :2].T + T_base_odom[:2, 3]


def _fit_height(img: np.ndarray, height: int) -> Image.Image:
    pil = Image.fromarray(img)
    width = int(round(pil.width * height / pil.height))
    return pil.resize((width, height), Image.BILINEAR)


def _metrics_lines(metrics: dict | None) -> list[str]:
    if not metrics:
        return ['metrics: none (run `fmdrive eval RUN_DIR` to write metrics.json)']

    def fmt(x, spec='.3f'):
        return 'n/a' if x is None or (isinstance(x, float) and not np.isfinite(x)) \
            else format(x, spec)
    det, trk = metrics.get('detection', {}), metrics.get('tracking', {})
    pl, lat = metrics.get('planning', {}), metrics.get('latency', {}) or {}
    recall = ', '.join(f'{k} {fmt(v, ".2f")}' for k, v in (det.get('recall') or {}).items()
                       if v is not None and not (isinstance(v, float) and np.isnan(v)))
    return [
        f'car BEV AP50 {fmt(det.get("car_bev_ap50"))}   recall: {recall or "n/a"}   '
        f'id switches {trk.get("id_switches", "n/a")} ({trk.get("tracks", "n/a")} tracks)',
        f'L2 1/2/3 s {fmt(pl.get("l2_1s"), ".2f")} / {fmt(pl.get("l2_2s"), ".2f")} / '
        f'{fmt(pl.get("l2_3s"), ".2f")} m   collision rate {fmt(pl.get("collision_rate"))}   '
        f'min distance {fmt(pl.get("min_distance_m"), ".2f")} m   '
        f'e2e latency p50/p99 {fmt(lat.get("e2e_p50_ms"), ".1f")} / '
        f'{fmt(lat.get("e2e_p99_ms"), ".1f")} ms   '
        f'dropped frames {metrics.get("dropped_sensor_frames", "n/a")}',
    ]


def render_frame(frame: ReportFrame, camera_K, T_camera_base, image_size=(640, 360),
                 row_height_px: int = ROW_HEIGHT_PX) -> Image.Image:
    """One report row: camera overlay (left) and BEV (right), with a caption above."""
    if frame.image_rgb is not None:
        image = frame.image_rgb
    else:                                        # no camera frame: draw on a neutral canvas
        image = np.full((image_size[1], image_size[0], 3), 40, np.uint8)
    objects = frame.tracks_base or frame.detections_base
    T_cam = frame.T_camera_base if frame.T_camera_base is not None else T_camera_base
    if T_cam is None or camera_K is None:        # no camera in the bag: an empty canvas, no projection
        overlay = image
    else:
        overlay = draw_overlay(image, camera_K, T_cam, frame.points_base, objects,
                               _plan_in_base(frame.plan, frame.gt), boxes2d=frame.camera_detections)
    left = _fit_height(overlay, row_height_px)
    bev_px_per_m = row_height_px / (BEV_EXTENT_M[1] - BEV_EXTENT_M[0])
    T_odom_base = frame.gt.ego.T_odom_base()
    bev = draw_bev(frame.gt.objects,
                   [o.transformed(T_odom_base) for o in frame.detections_base],
                   [o.transformed(T_odom_base) for o in frame.tracks_base],
                   None if frame.plan is None else np.asarray(frame.plan.poses)[:, :2],
                   frame.expert_xy_odom, frame.gt.ego, BEV_EXTENT_M, bev_px_per_m)
    right = Image.fromarray(bev)
    caption_h = 22
    row = Image.new('RGB', (left.width + 8 + right.width, row_height_px + caption_h), BACKGROUND)
    row.paste(left, (0, caption_h))
    row.paste(right, (left.width + 8, caption_h))
    n_cam = int(np.sum(frame.gt.in_camera))
    plan_txt = 'no plan' if frame.plan is None else \
        f'plan: {frame.plan.source}, {frame.plan.status}'
    if frame.image_rgb is None:
        plan_txt += '   (no camera image at this stamp)'
    gt_txt = f'GT objects {len(frame.gt.objects)} ({n_cam} in camera)' if frame.gt.objects else 'no GT'
    caption = (f't = {frame.t_s:.1f} s (stamp {frame.stamp_ns})   {gt_txt}   detections {len(frame.detections_base)}   '
               f'camera boxes {len(frame.camera_detections)}   tracks {len(frame.tracks_base)}   '
               f'ego {frame.gt.ego.speed_mps:.1f} m/s   {plan_txt}')
    ImageDraw.Draw(row).text((4, 4), caption, fill=TEXT, font=font(13))
    return row


def render_report(frames, camera_K, T_camera_base, title: str, metrics: dict | None = None,
                  image_size=(640, 360)) -> Image.Image:
    """The whole picture: title band (title + metrics) above one row per frame."""
    if not frames:
        raise EvalError('nothing to draw: the run has no frames (no ground truth and no LiDAR frames in its bag)')
    rows = [render_frame(f, camera_K, T_camera_base, image_size) for f in frames]
    lines = _metrics_lines(metrics)
    head_h = 34 + 18 * len(lines)
    width = max(r.width for r in rows) + 16
    height = head_h + sum(r.height + 10 for r in rows) + 6
    page = Image.new('RGB', (width, height), BACKGROUND)
    d = ImageDraw.Draw(page)
    d.text((8, 6), title, fill=TEXT, font=font(18))
    for i, line in enumerate(lines):
        d.text((8, 32 + 18 * i), line, fill=MUTED, font=font(13))
    y = head_h
    for r in rows:
        page.paste(r, (8, y))
        y += r.height + 10
    return page


# ------------------------------------------------------------------ loading a run dir
def _wanted_messages(reader, topics, wanted_ns: np.ndarray, tolerance_ns: int = 60_000_000):
    """(topic, msg) of the present topics whose bag time is near a wanted stamp (bag time is the
    receive time, >= the header stamp; camera_info always), decoding only those."""
    from rclpy.serialization import deserialize_message
    from fmdrive.bags.typestore import message_class
    have = [t for t in topics if t in reader.topics]
    if not have:
        return
    classes = {t: message_class(reader.topics[t][0]) for t in have}
    seen_info = False
    for topic, _, bag_ns, data in reader.raw_messages(have):
        if topic == TOPICS['camera_info']:
            if seen_info:
                continue
            seen_info = True
        else:
            i = int(np.searchsorted(wanted_ns, bag_ns - 2_000_000_000))  # outputs arrive late
            if i >= len(wanted_ns) or wanted_ns[i] > bag_ns + tolerance_ns:
                continue                              # far from every wanted stamp: skip decoding
        yield topic, deserialize_message(bytes(data), classes[topic])


def _read_sensor_frames(bag_dir, stamps_ns, geometry: BagGeometry):
    """{stamp: image_rgb} and {stamp: points_base} nearest to each wanted stamp; points are moved
    to base_link through the bag's TF at their own stamp, whatever their frame id."""
    from fmdrive.bags.reader import BagReader
    from fmdrive.msgs import image_to_rgb, pointcloud2_to_xyzi, stamp_to_ns

    wanted = np.array(sorted(stamps_ns), dtype=np.int64)
    best_img: dict[int, tuple[int, object]] = {}
    clouds: dict[int, object] = {}
    topics = [TOPICS['image'], TOPICS['points']]
    with BagReader(bag_dir) as reader:
        messages = list(_wanted_messages(reader, topics, wanted))
    for topic, msg in messages:
        stamp = stamp_to_ns(msg.header.stamp)
        k = nearest_frame_index(wanted, stamp, tolerance_ns=60_000_000)
        if k is None:
            continue
        target = int(wanted[k])
        if topic == TOPICS['points']:
            if target == stamp or target not in clouds:
                clouds[target] = msg
        elif target not in best_img or abs(stamp - target) < best_img[target][0]:
            best_img[target] = (abs(stamp - target), msg)
    images = {s: image_to_rgb(m) for s, (_, m) in best_img.items()}
    points_base = {}
    for s, msg in clouds.items():
        xyzi = np.asarray(pointcloud2_to_xyzi(msg), dtype=np.float64)
        T_base_lidar = geometry.T_base(msg.header.frame_id or FRAMES['lidar'], stamp_to_ns(msg.header.stamp))
        points_base[s] = np.c_[xyzi[:, :3] @ T_base_lidar[:3, :3].T + T_base_lidar[:3, 3], xyzi[:, 3:]]
    return images, points_base


def _lidar_stamps(bag_dir) -> list[int]:
    from fmdrive.bags.reader import BagReader
    from fmdrive.eval.metrics import present_messages
    from fmdrive.msgs import stamp_to_ns
    with BagReader(bag_dir) as reader:
        return sorted(stamp_to_ns(m.header.stamp) for _, m in present_messages(reader, [TOPICS['points']]))


def _at(stamped: dict, stamp_ns: int, default=None, tolerance_ns: int = STAMP_TOLERANCE_NS):
    """The value whose stamp is nearest to stamp_ns (within tolerance_ns), else default."""
    if not stamped:
        return default
    keys = np.array(sorted(stamped), dtype=np.int64)
    k = nearest_frame_index(keys, stamp_ns, tolerance_ns)
    return default if k is None else stamped[int(keys[k])]


def _expert_xy(gt_frames, stamp_ns: int, horizon_s: float = 3.0) -> np.ndarray:
    stamps = np.array([f.stamp_ns for f in gt_frames], dtype=np.int64)
    sel = (stamps >= stamp_ns) & (stamps <= stamp_ns + int(horizon_s * 1e9))
    return np.array([[f.ego.x, f.ego.y] for f, s in zip(gt_frames, sel) if s]).reshape(-1, 2)


def _spread(stamps, n: int) -> list[int]:
    stamps = sorted(stamps)
    if len(stamps) <= n:
        return stamps
    return [stamps[int(round(i))] for i in np.linspace(0, len(stamps) - 1, n)]


def make_report(run_dir, out_png=None, frame_stamps=None, n_frames: int = 3,
                base_frame: str = FRAMES['base']) -> Path:
    """Write the picture report of a run dir; returns the PNG path (default RUN_DIR/report.png).

    The run dir needs bag/ (the input); output/ (the graph's recorded outputs) and
    ground_truth.json are drawn when present. frame_stamps: the stamps (ns) to show; by default
    the n_frames with the most visible GT objects, or without GT n_frames spread over the frames
    the graph answered (all LiDAR frames if it answered none).
    """
    from fmdrive.eval.metrics import RunOutputs
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalError(f'{run_dir}: run dir not found')
    if not (run_dir / 'bag').exists():
        raise EvalError(f'{run_dir}: missing bag (the input rosbag2 the report draws from)')
    gt_path = run_dir / 'ground_truth.json'
    scenario, gt_frames = load_ground_truth(gt_path) if gt_path.is_file() else ({}, [])
    outputs = read_outputs(run_dir / 'output') if (run_dir / 'output').exists() else RunOutputs()
    dets, tracks, camera_dets = outputs.lidar_objects, outputs.tracks, outputs.camera_objects
    plans = {p.stamp_ns: p for p in outputs.plans}
    geometry = bag_geometry(run_dir / 'bag', base_frame)

    if gt_frames:
        stamps_all = np.array([f.stamp_ns for f in gt_frames], dtype=np.int64)
        where = gt_path
    else:
        stamps_all = np.array(_lidar_stamps(run_dir / 'bag'), dtype=np.int64)
        where = run_dir / 'bag'
    if len(stamps_all) == 0:
        raise EvalError(f'{where}: no frames to draw')
    if frame_stamps is None:
        if gt_frames:   # choose among the frames the graph answered (plan or detections), if any
            answered = [f for f in gt_frames
                        if _at(plans, f.stamp_ns) is not None or _at(dets, f.stamp_ns) is not None]
            # the camera encoder runs on some images only (max_rate_hz): show frames it answered
            answered = [f for f in answered if _at(camera_dets, f.stamp_ns, tolerance_ns=CAMERA_MATCH_NS)
                        is not None] or answered
            candidates = answered or gt_frames
            # the plan's source of each (llm / fallback / classical): a run that fell back shows it
            sources = [getattr(_at(plans, f.stamp_ns), 'source', None) for f in candidates]
            frame_stamps = choose_frames(candidates, n_frames, labels=sources)
        else:
            answered = [int(s) for s in stamps_all
                        if _at(plans, int(s)) is not None or _at(dets, int(s)) is not None]
            frame_stamps = _spread(answered or [int(s) for s in stamps_all], n_frames)
    indices = []
    for s in frame_stamps:
        k = nearest_frame_index(stamps_all, int(s), tolerance_ns=60_000_000)
        if k is None:
            raise EvalError(f'frame stamp {s} is not in {where} '
                            f'(stamps run {stamps_all[0]}..{stamps_all[-1]} ns)')
        indices.append(k)
    stamps = [int(stamps_all[k]) for k in indices]

    images, points = _read_sensor_frames(run_dir / 'bag', stamps, geometry)
    frames = []
    for s, k in zip(stamps, indices):
        gt = gt_frames[k] if gt_frames else GroundTruthFrame(stamp_ns=s, ego=geometry.ego(s), objects=[])
        frames.append(ReportFrame(stamp_ns=s, t_s=(s - int(stamps_all[0])) / 1e9, gt=gt,
                                  image_rgb=images.get(s), points_base=points.get(s),
                                  detections_base=_at(dets, s, []),
                                  camera_detections=_at(camera_dets, s, [], CAMERA_MATCH_NS),
                                  tracks_base=_at(tracks, s, []),
                                  plan=_at(plans, s),
                                  expert_xy_odom=_expert_xy(gt_frames, s) if gt_frames else None,
                                  T_camera_base=geometry.T_camera_base(s)))

    metrics = None
    if (run_dir / 'metrics.json').is_file():
        try:
            metrics = json.loads((run_dir / 'metrics.json').read_text())
        except ValueError:
            metrics = None
    kind = scenario.get('kind', scenario.get('name', '?')) if isinstance(scenario, dict) else '?'
    title = (f'fmdrive run report: {run_dir.name}   '
             + (f'scenario: {kind}' if gt_frames else 'no ground truth: detections, tracks and plan only'))
    camera = geometry.camera
    image_size = (camera.width, camera.height) if camera is not None else (640, 360)
    page = render_report(frames, camera, None, title, metrics, image_size)   # lens model: points as distorted
    out_png = Path(out_png) if out_png else run_dir / 'report.png'
    out_png.parent.mkdir(parents=True, exist_ok=True)
    page.save(out_png)
    return out_png
