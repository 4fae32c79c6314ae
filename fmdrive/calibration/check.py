"""`fmdrive calib-check`: does a LiDAR-camera extrinsic align depth edges with image edges?

    fmdrive calib-check --pcd 0.pcd --image 0.png --camera-info camera_info.yaml \
        --extrinsics extrinsics.yaml -o overlay.png [--json]
    fmdrive calib-check BAG [--frames 5] [--frame I] [--extrinsics candidate.yaml] [--json]

(also runnable as `python -m fmdrive.calibration.check ...`). The given extrinsic is scored and
compared with 1-2 deg rotations and 10 cm shifts of itself about the camera axes, and swept along
each axis: a correct extrinsic beats every perturbation the frames can resolve, and an axis whose
score curve is flat is reported as not constrained by these frames instead of judged.

With a BAG, the transform LiDAR -> camera comes from the bag's /tf_static and /tf through the TF
buffer (any frame ids, chains composed, a camera frame in body or optical convention), the frame
ids from the messages' headers and the intrinsics from camera_info. Exit code 0 = aligned,
1 = not aligned or undecided, 2 = bad input (one-line error).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fmdrive.calibration.alignment import (AXES, MIN_SHIFT_PX, FrameScorer, render_overlay, sweep_frames)
from fmdrive.calibration.camera_model import CalibrationError, CameraModel
from fmdrive.calibration.extrinsics import load_extrinsics
from fmdrive.calibration.pcd import read_pcd
from fmdrive.config import FRAMES, TOPICS
from fmdrive.geometry import inv_T

MIN_POINTS_IN_IMAGE = 100   # fewer projected points and the extrinsic is grossly wrong
DEFAULT_FRAMES = 5
FRAME_STEP = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bag', nargs='?', default=None,
                        help='a rosbag2 bag with image, camera_info, points and /tf_static (instead of the files)')
    parser.add_argument('--frame', type=int, default=None,
                        help=f'with BAG: the first LiDAR frame (index) to check, then every {FRAME_STEP}th '
                             '(default: frames spread over the whole bag)')
    parser.add_argument('--frames', type=int, default=DEFAULT_FRAMES,
                        help='with BAG: score up to this many frames together (fewer if the bag is shorter); '
                             'one frame constrains some axes poorly')
    parser.add_argument('--pcd', help='LiDAR sweep (PCD v0.7, ascii or binary)')
    parser.add_argument('--image', help='camera image taken with the sweep (PNG/JPEG)')
    parser.add_argument('--camera-info', help='camera_info YAML of that image')
    parser.add_argument('--extrinsics',
                        help='extrinsics YAML holding a chain between both frames (with BAG: its transforms '
                             'replace the bag\'s for the same child frames, to test a candidate calibration)')
    parser.add_argument('--lidar-frame', default=None,
                        help=f'LiDAR frame id (default: the point cloud header\'s; files: {FRAMES["lidar"]})')
    parser.add_argument('--camera-frame', default=None,
                        help=f'camera frame id, optical or body convention (default: the camera_info header\'s; '
                             f'files: {FRAMES["camera"]})')
    parser.add_argument('--base-frame', default=FRAMES['base'],
                        help='z-up frame used to tell a body-convention camera frame from an optical one')
    parser.add_argument('--image-topic', default=TOPICS['image'])
    parser.add_argument('--camera-info-topic', default=TOPICS['camera_info'])
    parser.add_argument('--points-topic', default=TOPICS['points'])
    parser.add_argument('-o', '--overlay', default=None, metavar='PNG',
                        help='write the image with the projected points coloured by depth')
    parser.add_argument('--json', action='store_true', help='print one JSON object instead of text')


# ---------------------------------------------------------------- inputs
def camera_T_lidar(buf, camera_frame: str, lidar_frame: str, base_frame: str, stamp_ns=None) -> np.ndarray:
    """T_<camera optical>_<lidar> through a TransformBuffer, whatever convention the camera frame
    id has: its orientation is judged in base_frame (z up) when that frame is in the tree, else in
    the LiDAR frame (also z up)."""
    ref = base_frame if base_frame in buf.frames() and buf.can_transform(base_frame, lidar_frame, stamp_ns) \
        else lidar_frame
    T_ref_optical = buf.optical_T(ref, camera_frame, stamp_ns)
    return inv_T(T_ref_optical) @ buf.lookup(ref, lidar_frame, stamp_ns)


def _read_image(path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    image_path = Path(path)
    if not image_path.is_file():
        raise CalibrationError(f'image file {image_path} not found')
    try:
        with Image.open(image_path) as im:
            return np.asarray(im.convert('RGB'))
    except (UnidentifiedImageError, OSError) as e:
        raise CalibrationError(f'cannot read image {image_path}: {e}') from None


def load_file_inputs(args) -> dict:
    from fmdrive.tf import TransformBuffer
    missing = [f'--{n.replace("_", "-")}' for n in ('pcd', 'image', 'camera_info', 'extrinsics')
               if not getattr(args, n)]
    if missing:
        raise CalibrationError(f'give a BAG, or all of --pcd --image --camera-info --extrinsics '
                               f'(missing: {" ".join(missing)})')
    points = read_pcd(args.pcd)
    image = _read_image(args.image)
    camera_frame = args.camera_frame or FRAMES['camera']
    lidar_frame = args.lidar_frame or FRAMES['lidar']
    camera = CameraModel.from_yaml(args.camera_info, frame_id=camera_frame)
    buf = TransformBuffer.from_extrinsics(load_extrinsics(args.extrinsics))
    T = camera_T_lidar(buf, camera_frame, lidar_frame, args.base_frame)
    return {'frames': [(points, image)], 'camera': camera, 'T_camera_lidar': T, 'frame_indices': [0],
            'camera_frame': camera_frame, 'lidar_frame': lidar_frame, 'transform_source': str(args.extrinsics)}


def pick_frames(n_clouds: int, n_frames: int, first: int | None, step: int = FRAME_STEP) -> list[int]:
    """Indices of the LiDAR frames to score: from `first` every `step`th, or (first None) up to
    n_frames spread evenly over the bag; never more than the bag has."""
    if n_clouds == 0:
        raise CalibrationError('the bag has no LiDAR frames')
    n_frames = max(1, n_frames)
    if first is None:
        return sorted({int(round(x)) for x in np.linspace(0, n_clouds - 1, min(n_frames, n_clouds))})
    if not 0 <= first < n_clouds:
        raise CalibrationError(f'the bag has {n_clouds} LiDAR frame{"s" * (n_clouds != 1)}; choose '
                               f'--frame between 0 and {n_clouds - 1} (or leave it out)')
    return list(range(first, n_clouds, step))[:n_frames]


def load_bag_inputs(args) -> dict:
    """Frames, camera model and T_camera_lidar of a bag: the chosen LiDAR sweeps with the image
    nearest in time each, the first camera_info, and the transform through the bag's TF buffer."""
    from rclpy.serialization import deserialize_message

    from fmdrive.bags.reader import BagReader
    from fmdrive.bags.tf_from_bag import tf_buffer_from_bag
    from fmdrive.bags.typestore import message_class
    from fmdrive.msgs import camera_info_to_fields, image_to_rgb, pointcloud2_to_xyzi, stamp_to_ns
    with BagReader(args.bag) as reader:
        need = [args.points_topic, args.image_topic, args.camera_info_topic]
        absent = [t for t in need if t not in reader.topics]
        if absent:
            raise CalibrationError(f'{args.bag} has no {", ".join(absent)} (topics: '
                                   f'{", ".join(sorted(reader.topics))}); calib-check needs points, image and '
                                   'camera_info (--points-topic, --image-topic, --camera-info-topic)')
        cloud_at, image_at, info_raw = [], [], None     # bag times (and the raw bytes we keep)
        for topic, _, bag_ns, _data in reader.raw_messages([args.points_topic, args.image_topic]):
            (cloud_at if topic == args.points_topic else image_at).append(bag_ns)
        for _, _, _, data in reader.raw_messages([args.camera_info_topic]):
            info_raw = bytes(data)
            break
        chosen = pick_frames(len(cloud_at), args.frames, args.frame)
        image_at = np.asarray(image_at, dtype=np.int64)
        if len(image_at) == 0:
            raise CalibrationError(f'{args.bag}: {args.image_topic} has no messages')
        want_image = {int(np.argmin(np.abs(image_at - cloud_at[i]))) for i in chosen}
        clouds, images, counts = {}, {}, {args.points_topic: 0, args.image_topic: 0}
        for topic, msgtype, _, data in reader.raw_messages([args.points_topic, args.image_topic]):
            k = counts[topic]
            counts[topic] += 1
            if topic == args.points_topic and k in chosen:
                clouds[k] = deserialize_message(bytes(data), message_class(msgtype))
            elif topic == args.image_topic and k in want_image:
                images[k] = deserialize_message(bytes(data), message_class(msgtype))
        info = deserialize_message(info_raw, message_class(reader.topics[args.camera_info_topic][0]))
        buf = tf_buffer_from_bag(reader)
    fields = camera_info_to_fields(info)
    first_cloud, first_image = clouds[chosen[0]], next(iter(images.values()))
    camera_frame = args.camera_frame or fields['frame_id'] or first_image.header.frame_id
    lidar_frame = args.lidar_frame or first_cloud.header.frame_id
    if not camera_frame or not lidar_frame:
        raise CalibrationError(f'{args.bag}: the messages carry no frame ids; pass --camera-frame and --lidar-frame')
    fields['frame_id'] = camera_frame
    camera = CameraModel.from_camera_info_fields(**fields)
    if args.extrinsics:                 # a candidate calibration replaces the bag's edges it names
        ext = load_extrinsics(args.extrinsics)
        for child, T in ext.items():
            buf.set_transform(ext.frame_id, child, T, static=True, source=str(args.extrinsics))
    frames = []
    stamp0 = stamp_to_ns(first_cloud.header.stamp)
    for i in chosen:
        cloud = clouds[i]
        stamp = stamp_to_ns(cloud.header.stamp)
        image_msg = min(images.values(), key=lambda m: abs(stamp_to_ns(m.header.stamp) - stamp))
        frames.append((pointcloud2_to_xyzi(cloud), np.ascontiguousarray(image_to_rgb(image_msg))))
    T = camera_T_lidar(buf, camera_frame, lidar_frame, args.base_frame, stamp0)
    return {'frames': frames, 'camera': camera, 'T_camera_lidar': T, 'frame_indices': chosen,
            'camera_frame': camera_frame, 'lidar_frame': lidar_frame,
            'transform_source': buf.source_of(camera_frame, lidar_frame), 'lidar_frames_in_bag': len(cloud_at)}


def load_inputs(args) -> dict:
    return load_bag_inputs(args) if args.bag else load_file_inputs(args)


# ---------------------------------------------------------------- the check
def check_alignment(points_lidar, image_rgb, camera: CameraModel, T_camera_lidar, out_png=None,
                    rings=None, min_shift_px: float = MIN_SHIFT_PX, more_frames=()) -> dict:
    """Score the extrinsic against its perturbations and per-axis sweeps; optionally write the
    overlay PNG (of the first frame).

    Returns a JSON-ready report: score, perturbations [{perturbation, score, shift_px,
    observable}], axes {axis: {meaning, peak_offset, curvature_pct, observable, consistent, ...}},
    beaten/observable counts, margin_pct (how much the given extrinsic beats the best observable
    perturbation), closest, unobservable, unconstrained_axes, points/points_in_image, edge_points,
    aligned, verdict.
    """
    points = np.asarray(points_lidar)
    T = np.asarray(T_camera_lidar, dtype=np.float64)
    scorers = [FrameScorer(points, image_rgb, camera, rings)]
    scorers += [FrameScorer(np.asarray(p), im, camera) for p, im in more_frames]
    rows, axes, n_edge = sweep_frames(scorers, T, min_shift_px=min_shift_px)
    true_score, perturbed = rows[0]['score'], rows[1:]
    observable = [r for r in perturbed if r['observable']]
    unobservable = [r['perturbation'] for r in perturbed if not r['observable']]
    unconstrained = [a for a in AXES if not axes[a]['observable']]
    off_axes = [a for a in AXES if axes[a]['observable'] and not axes[a]['consistent']]
    _, _, in_image = camera.project(points[:, :3] @ T[:3, :3].T + T[:3, 3])
    n_in = int(in_image.sum())
    beaten = sum(true_score > r['score'] for r in observable)
    closest = max(observable, key=lambda r: r['score']) if observable else None
    margin_pct = (100.0 * (true_score / closest['score'] - 1.0)
                  if closest and closest['score'] > 0 else float('nan'))

    if n_in < MIN_POINTS_IN_IMAGE:
        aligned = False
        verdict = (f'NOT aligned: only {n_in} of {len(points)} points project into the image; the '
                   f'extrinsic is grossly wrong or the frames are swapped')
    elif not observable:
        aligned = False
        verdict = 'undecided: these frames constrain no axis (too few depth edges in a textured image)'
    elif beaten == len(observable) and not off_axes:
        aligned = True
        verdict = (f'aligned: the extrinsic beats all {len(observable)} observable perturbations by '
                   f'>= {margin_pct:.1f}% (closest: {closest["perturbation"]})')
    else:
        aligned = False
        better = sorted((r for r in observable if r['score'] >= true_score), key=lambda r: -r['score'])
        off = ', '.join(f'{axes[a]["meaning"]} ({a}) {axes[a]["peak_offset"]:+g} {axes[a]["unit"]}' for a in off_axes)
        verdict = 'NOT aligned: ' + '; '.join(
            ([f'{len(better)} of {len(observable)} perturbations score higher, best {better[0]["perturbation"]} '
              f'by {100 * (better[0]["score"] / true_score - 1):.1f}%'] if better else [])
            + ([f'the edges align best at {off} from the given extrinsic'] if off else []))
    if unconstrained and n_in >= MIN_POINTS_IN_IMAGE:
        verdict += ('; not constrained by these frames (not judged): '
                    + ', '.join(f'{a} ({axes[a]["meaning"]})' for a in unconstrained))

    overlay = None
    if out_png is not None:
        from PIL import Image
        out_png = Path(out_png)
        out_png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_overlay(points, image_rgb, camera, T)).save(out_png)
        overlay = str(out_png)
    return {'score': round(true_score, 5),
            'perturbations': [{**r, 'score': round(r['score'], 5)} for r in perturbed],
            'axes': axes, 'observable': len(observable), 'beaten': beaten,
            'margin_pct': None if np.isnan(margin_pct) else round(margin_pct, 2),
            'closest': closest['perturbation'] if closest else None, 'unobservable': unobservable,
            'unconstrained_axes': unconstrained, 'edge_points': n_edge,
            'points': int(len(points)), 'points_in_image': n_in, 'aligned': aligned,
            'verdict': verdict, 'overlay': overlay}


def format_report(report: dict) -> str:
    lines = [f'score of the given extrinsic: {report["score"]:.4f} '
             f'({report["points_in_image"]} of {report["points"]} points in the image, '
             f'{sum(report["edge_points"])} depth-edge points scored over {len(report["edge_points"])} frame(s))']
    if report.get('camera_frame'):
        lines.append(f'transform {report["lidar_frame"]} -> {report["camera_frame"]} from '
                     f'{report.get("transform_source")}; LiDAR frames {report.get("frame_indices")}')
    lines.append(f'{"perturbation":<16} {"score":>8} {"vs given":>9} {"shift_px":>9}')
    for r in report['perturbations']:
        rel = 100 * (r['score'] / report['score'] - 1) if report['score'] else float('nan')
        lines.append(f'{r["perturbation"]:<16} {r["score"]:>8.4f} {rel:>+8.1f}% {r["shift_px"]:>9.1f}'
                     + ('' if r['observable'] else '  (not judged)'))
    lines.append(f'{"axis":<8} {"":<8} {"peak at":>9} {"drop/step":>10} {"px/step":>8}  observability')
    for a, s in report['axes'].items():
        step = '1 deg' if s['unit'] == 'deg' else '10 cm'
        lines.append(f'{a:<8} {s["meaning"]:<8} {s["peak_offset"]:>+7.2f}{s["unit"]:<3}'
                     f'{s["curvature_pct"]:>8.1f}% {s["shift_px_per_step"]:>8.1f}  '
                     + (('constrained' + ('' if s['consistent'] else ', NOT at the given value'))
                        if s['observable'] else f'not constrained (flat within {step})'))
    if report['margin_pct'] is not None:
        lines.append(f'margin over the best observable perturbation ({report["closest"]}): '
                     f'{report["margin_pct"]:+.2f}%')
    if report['overlay']:
        lines.append(f'overlay: {report["overlay"]}')
    lines.append(report['verdict'])
    return '\n'.join(lines)


def run(args) -> int:
    """Run calib-check for parsed arguments; 0 aligned, 1 not aligned, 2 bad input."""
    try:
        inputs = load_inputs(args)
        (points, image), more = inputs['frames'][0], inputs['frames'][1:]
        report = check_alignment(points, image, inputs['camera'], inputs['T_camera_lidar'],
                                 out_png=args.overlay, more_frames=more)
        report.update(frames=len(inputs['frames']), frame_indices=inputs['frame_indices'],
                      camera_frame=inputs['camera_frame'], lidar_frame=inputs['lidar_frame'],
                      transform_source=inputs['transform_source'])
    except (CalibrationError, OSError, ValueError, LookupError) as e:   # BagError, MessageError are ValueErrors
        print(f'calib-check: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report['aligned'] else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='fmdrive calib-check', description=__doc__.split('\n')[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
