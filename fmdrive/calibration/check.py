"""`fmdrive calib-check`: does a LiDAR-camera extrinsic align depth edges with image edges?

    fmdrive calib-check --pcd 0.pcd --image 0.png --camera-info camera_info.yaml \
        --extrinsics extrinsics.yaml -o overlay.png [--json]

(also runnable as `python -m fmdrive.calibration.check ...`). The given extrinsic is scored and
compared with 1-2 deg rotations and 10 cm shifts of itself about the camera axes: a correct
extrinsic beats every perturbation the frame can resolve. Exit code 0 = aligned, 1 = not
aligned, 2 = bad input (one-line error).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fmdrive.calibration.alignment import (MIN_SHIFT_PX, perturbation_sweep, render_overlay)
from fmdrive.calibration.camera_model import CalibrationError, CameraModel
from fmdrive.calibration.extrinsics import load_extrinsics
from fmdrive.calibration.pcd import read_pcd
from fmdrive.config import FRAMES

MIN_POINTS_IN_IMAGE = 100   # fewer projected points and the extrinsic is grossly wrong


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bag', nargs='?', default=None,
                        help='a rosbag2 bag with image, camera_info, points and /tf_static (instead of the files)')
    parser.add_argument('--frame', type=int, default=10, help='with BAG: the first LiDAR frame (index) to check')
    parser.add_argument('--frames', type=int, default=5,
                        help='with BAG: score this many frames (every 5th from --frame) together; one frame '
                             'constrains some rotations poorly')
    parser.add_argument('--pcd', help='LiDAR sweep (PCD v0.7, ascii or binary)')
    parser.add_argument('--image', help='camera image taken with the sweep (PNG/JPEG)')
    parser.add_argument('--camera-info', help='camera_info YAML of that image')
    parser.add_argument('--extrinsics', help='extrinsics YAML holding both frames (with BAG: overrides /tf_static)')
    parser.add_argument('--lidar-frame', default=FRAMES['lidar'], help='LiDAR frame id in the extrinsics')
    parser.add_argument('--camera-frame', default=FRAMES['camera'], help='camera optical frame id')
    parser.add_argument('-o', '--overlay', default=None, metavar='PNG',
                        help='write the image with the projected points coloured by depth')
    parser.add_argument('--json', action='store_true', help='print one JSON object instead of text')


def load_inputs(args) -> tuple:
    """(points_lidar (N, 4), image_rgb (H, W, 3) uint8, camera, T_camera_lidar, more [(points, image)])
    from the arguments; `more` holds further frames of a bag, scored together with the first."""
    from PIL import Image, UnidentifiedImageError
    if args.bag:
        frames, camera, T = load_bag_inputs(args.bag, args.frame, args.extrinsics, args.lidar_frame,
                                            args.camera_frame, args.frames)
        return frames[0][0], frames[0][1], camera, T, frames[1:]
    missing = [f'--{n.replace("_", "-")}' for n in ('pcd', 'image', 'camera_info', 'extrinsics')
               if not getattr(args, n)]
    if missing:
        raise CalibrationError(f'give a BAG, or all of --pcd --image --camera-info --extrinsics '
                               f'(missing: {" ".join(missing)})')
    points = read_pcd(args.pcd)
    image_path = Path(args.image)
    if not image_path.is_file():
        raise CalibrationError(f'image file {image_path} not found')
    try:
        with Image.open(image_path) as im:
            image = np.asarray(im.convert('RGB'))
    except (UnidentifiedImageError, OSError) as e:
        raise CalibrationError(f'cannot read image {image_path}: {e}') from None
    camera = CameraModel.from_yaml(args.camera_info, frame_id=args.camera_frame)
    extrinsics = load_extrinsics(args.extrinsics)
    T_camera_lidar = extrinsics.transform(args.camera_frame, args.lidar_frame)
    return points, image, camera, T_camera_lidar, []


def load_bag_inputs(bag, frame_index: int, extrinsics_path, lidar_frame: str, camera_frame: str,
                    n_frames: int = 1, frame_step: int = 5):
    """([(points, image)], camera, T_camera_lidar) from a bag: LiDAR sweeps frame_index, +frame_step,
    ... (n_frames of them) with the image of the nearest stamp each, the camera_info, and
    T_camera_lidar from /tf_static (or an extrinsics file)."""
    from fmdrive.bags.reader import BagReader
    from fmdrive.config import TOPICS
    from fmdrive.geometry import inv_T
    from fmdrive.msgs import (camera_info_to_fields, image_to_rgb, pointcloud2_to_xyzi, stamp_to_ns,
                              tf_to_transforms)
    reader = BagReader(bag)
    need = [TOPICS['points'], TOPICS['image'], TOPICS['camera_info']]
    absent = [t for t in need if t not in reader.topics]
    if absent:
        raise CalibrationError(f'{bag} has no {", ".join(absent)}; calib-check needs points, image and camera_info')
    frames = {}  # parent/child -> T from /tf_static
    clouds, images, camera = [], [], None
    last = frame_index + frame_step * (max(1, n_frames) - 1)
    topics = need + ([TOPICS['tf_static']] if TOPICS['tf_static'] in reader.topics else [])
    for topic, _, msg in reader.messages(topics):
        if topic == TOPICS['points']:
            clouds.append(msg)
            if len(clouds) > last and len(images) >= len(clouds) and camera is not None and frames:
                break
        elif topic == TOPICS['image']:
            images.append(msg)
        elif topic == TOPICS['camera_info'] and camera is None:
            camera = CameraModel.from_camera_info_fields(**camera_info_to_fields(msg))
        elif topic == TOPICS['tf_static']:
            frames.update({child: (parent, T) for parent, child, T in tf_to_transforms(msg)})
    if len(clouds) <= frame_index:
        raise CalibrationError(f'{bag} has only {len(clouds)} LiDAR frames; choose --frame < {len(clouds)}')
    picked = []
    for cloud in clouds[frame_index:last + 1:frame_step]:
        stamp = stamp_to_ns(cloud.header.stamp)
        image_msg = min(images, key=lambda m: abs(stamp_to_ns(m.header.stamp) - stamp))
        picked.append((pointcloud2_to_xyzi(cloud), np.ascontiguousarray(image_to_rgb(image_msg))))
    if extrinsics_path:
        T_camera_lidar = load_extrinsics(extrinsics_path).transform(camera_frame, lidar_frame)
    else:
        if lidar_frame not in frames or camera_frame not in frames or frames[lidar_frame][0] != frames[camera_frame][0]:
            raise CalibrationError(f'{bag}: /tf_static does not hold {lidar_frame} and {camera_frame} under one '
                                   'parent; pass --extrinsics')
        T_camera_lidar = inv_T(frames[camera_frame][1]) @ frames[lidar_frame][1]
    return picked, camera, T_camera_lidar


def check_alignment(points_lidar, image_rgb, camera: CameraModel, T_camera_lidar, out_png=None,
                    rings=None, min_shift_px: float = MIN_SHIFT_PX, more_frames=()) -> dict:
    """Score the extrinsic against its perturbations; optionally write the overlay PNG.

    Returns a JSON-ready report: score, perturbations [{perturbation, score, shift_px,
    observable}], beaten/observable counts, margin_pct (how much the given extrinsic beats the
    best observable perturbation), closest, unobservable, points/points_in_image, aligned, verdict.
    """
    points = np.asarray(points_lidar)
    T = np.asarray(T_camera_lidar, dtype=np.float64)
    rows = perturbation_sweep(points, image_rgb, camera, T, rings=rings, min_shift_px=min_shift_px)
    if more_frames:  # average score and shift per perturbation over all frames (same order each time)
        sweeps = [rows] + [perturbation_sweep(np.asarray(p), im, camera, T, min_shift_px=min_shift_px)
                           for p, im in more_frames]
        for k, r in enumerate(rows):
            r['score'] = float(np.mean([sw[k]['score'] for sw in sweeps]))
            r['shift_px'] = float(np.mean([sw[k]['shift_px'] for sw in sweeps]))
            if 'observable' in r:
                r['observable'] = r['shift_px'] >= min_shift_px
    true_score, perturbed = rows[0]['score'], rows[1:]
    observable = [r for r in perturbed if r['observable']]
    unobservable = [r['perturbation'] for r in perturbed if not r['observable']]
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
        verdict = 'undecided: no perturbation moves the edge points enough to be judged in this frame'
    elif beaten == len(observable):
        aligned = True
        verdict = (f'aligned: the extrinsic beats all {len(observable)} observable perturbations by '
                   f'>= {margin_pct:.1f}% (closest: {closest["perturbation"]})')
    else:
        aligned = False
        better = sorted((r for r in observable if r['score'] >= true_score), key=lambda r: -r['score'])
        verdict = (f'NOT aligned: {len(better)} of {len(observable)} perturbations score higher, best '
                   f'{better[0]["perturbation"]} by {100 * (better[0]["score"] / true_score - 1):.1f}%')
    if unobservable and n_in >= MIN_POINTS_IN_IMAGE:
        verdict += (f'; not judged (move edge points < {min_shift_px:g} px): {", ".join(unobservable)}')

    overlay = None
    if out_png is not None:
        from PIL import Image
        out_png = Path(out_png)
        out_png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_overlay(points, image_rgb, camera, T)).save(out_png)
        overlay = str(out_png)
    return {'score': round(true_score, 5),
            'perturbations': [{**r, 'score': round(r['score'], 5)} for r in perturbed],
            'observable': len(observable), 'beaten': beaten,
            'margin_pct': None if np.isnan(margin_pct) else round(margin_pct, 2),
            'closest': closest['perturbation'] if closest else None, 'unobservable': unobservable,
            'points': int(len(points)), 'points_in_image': n_in, 'aligned': aligned,
            'verdict': verdict, 'overlay': overlay}


def format_report(report: dict) -> str:
    lines = [f'score of the given extrinsic: {report["score"]:.4f} '
             f'({report["points_in_image"]} of {report["points"]} points in the image)',
             f'{"perturbation":<16} {"score":>8} {"vs given":>9} {"shift_px":>9}']
    for r in report['perturbations']:
        rel = 100 * (r['score'] / report['score'] - 1) if report['score'] else float('nan')
        lines.append(f'{r["perturbation"]:<16} {r["score"]:>8.4f} {rel:>+8.1f}% {r["shift_px"]:>9.1f}'
                     + ('' if r['observable'] else '  (not judged)'))
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
        points, image, camera, T_camera_lidar, more = load_inputs(args)
        report = check_alignment(points, image, camera, T_camera_lidar, out_png=args.overlay, more_frames=more)
        report['frames'] = 1 + len(more)
    except (CalibrationError, OSError, ValueError) as e:
        print(f'calib-check: error: {e}', file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report['aligned'] else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='fmdrive calib-check', description=__doc__.split('\n')[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
