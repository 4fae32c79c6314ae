"""`fmdrive import kitti PATH -o RUN_DIR`: KITTI object frames or a KITTI raw drive into a bag.

Two layouts, told apart by what PATH holds (the KITTI devkit readmes describe both):

- object (3D object detection benchmark): PATH = the dataset root (with training/) or a split
  folder holding velodyne/NNNNNN.bin, image_2/NNNNNN.png, calib/NNNNNN.txt [, label_2/NNNNNN.txt].
  The frames are unrelated snapshots without time or pose: they get stamps 0.1 s apart and no
  odometry (ego at the odom origin in every frame). Labels become ground truth.
- raw (a synced+rectified drive): PATH = .../2011_09_26_drive_0001_sync holding
  velodyne_points/, image_02/, oxts/ (data/ + timestamps.txt each), with calib_cam_to_cam.txt,
  calib_velo_to_cam.txt and calib_imu_to_velo.txt in PATH or its parent (the date folder). Stamps
  are the drive's own; oxts give odometry and /tf odom -> base_link. Tracklet labels are not read.

Conventions of the format kept as they are:
- velodyne .bin: float32 rows x, y, z, reflectance (0..1), in the Velodyne frame (x forward,
  y left, z up), frame id `velodyne`.
- calib: P2 projects points of the rectified reference camera (cam 0 after R0_rect) into image 2;
  Tr_velo_to_cam maps Velodyne points into (unrectified) camera 0. The camera frame here,
  `camera_color_left`, is image 2's own rectified optical frame (x right, y down, z forward):
  T_cam2_velo = [I | K^-1 P2[:, 3]] * R0_rect * Tr_velo_to_cam, so camera_info carries
  K = P2[:, :3], D = 0 (the image is rectified), R = I, P = [K | 0].
- label_2: type, truncated, occluded, alpha, bbox (4), h, w, l, x, y, z (bottom centre in the
  rectified camera 0 frame), rotation_y (about camera y, 0 = facing camera x). DontCare is skipped.
- oxts: lat, lon, alt, roll, pitch, yaw, vn, ve, vf, vl, vu, ax, ..., wf, wl, wu, ... (30 values);
  the pose is the devkit's Mercator projection (scale from the first latitude), R = Rz(yaw)
  Ry(pitch) Rx(roll) of the IMU, relative to the first base_link position (odom = east-north-up there).

base_link (x forward, z up, on the ground): KITTI's Velodyne sits 1.73 m and its OXTS IMU 0.93 m
above the road (the setup description), so base_link -> velodyne is a 1.73 m lift (object
layout) and base_link -> imu_link a 0.93 m lift (raw; imu_link -> velodyne from
calib_imu_to_velo). Both heights are options.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from fmdrive import config
from fmdrive.calibration.camera_model import CameraModel
from fmdrive.geometry import inv_T, make_T
from fmdrive.importers.common import DatasetError, SensorFrame, pose_T, read_image, write_run
from fmdrive.objects import Object3D

LIDAR_FRAME = 'velodyne'
CAMERA_FRAME = 'camera_color_left'
IMU_FRAME = 'imu_link'
VELODYNE_HEIGHT_M = 1.73
IMU_HEIGHT_M = 0.93
OBJECT_FRAME_PERIOD_NS = 100_000_000     # object frames have no time: 10 Hz stamps
OBJECT_FIRST_STAMP_NS = 1_000_000_000
EARTH_RADIUS_M = 6378137.0
KITTI_CLASSES = {'Car': 'car', 'Van': 'car', 'Truck': 'truck', 'Pedestrian': 'pedestrian',
                 'Person_sitting': 'pedestrian', 'Cyclist': 'cyclist', 'Tram': 'tram', 'Misc': 'misc'}
OXTS_FIELDS = ('lat', 'lon', 'alt', 'roll', 'pitch', 'yaw', 'vn', 've', 'vf', 'vl', 'vu', 'ax', 'ay', 'az',
               'af', 'al', 'au', 'wx', 'wy', 'wz', 'wf', 'wl', 'wu', 'pos_accuracy', 'vel_accuracy',
               'navstat', 'numsats', 'posmode', 'velmode', 'orimode')


# ------------------------------------------------------------------ files
def read_calib_file(path) -> dict[str, np.ndarray]:
    """KITTI calib text: 'key: v1 v2 ...' per line -> {key: float array}; non-numeric lines
    (calib_time) are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'KITTI calibration file {path} not found')
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(':')
        if not sep:
            continue
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()])
        except ValueError:
            continue
    return out


def _need(calib: dict, key: str, n: int, path) -> np.ndarray:
    if key not in calib or calib[key].size != n:
        got = 'missing' if key not in calib else f'{calib[key].size} values'
        raise DatasetError(f'{path}: {key} must have {n} values ({got})')
    return calib[key]


def read_velodyne_bin(path) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance of a KITTI .bin sweep."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'LiDAR sweep {path} not found')
    raw = np.fromfile(path, dtype='<f4')
    if raw.size % 4:
        raise DatasetError(f'{path}: {raw.size} float32 values, not a multiple of 4 (x, y, z, reflectance)')
    return raw.reshape(-1, 4)


def camera_from_P(P, width: int, height: int, frame_id: str = CAMERA_FRAME, name: str = 'image_02'):
    """(CameraModel of the rectified image, t (3,) offset of its optical centre from the rectified
    reference camera) from a KITTI 3x4 projection matrix P = K [I | t]."""
    P = np.asarray(P, float).reshape(3, 4)
    K = P[:, :3]
    t = np.linalg.solve(K, P[:, 3])
    return CameraModel(width, height, K, [], 'plumb_bob', frame_id, name), t


def T_cam_velo_from_calib(P, R0_rect, T_cam0_velo) -> np.ndarray:
    """T_<image camera rectified optical>_<velodyne>."""
    _, t = camera_from_P(P, 1, 1)
    return make_T(t=t) @ make_T(np.asarray(R0_rect, float).reshape(3, 3)) @ T_cam0_velo


def read_label_file(path, T_base_rect) -> tuple[list, list]:
    """(objects in base_link, extras) of a label_2 file; DontCare rows are skipped."""
    objects, extras = [], []
    for k, line in enumerate(Path(path).read_text().splitlines()):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 15:
            raise DatasetError(f'{path} line {k + 1}: {len(parts)} fields, a KITTI label has 15 '
                               '(type truncated occluded alpha bbox(4) h w l x y z rotation_y)')
        kind = parts[0]
        if kind == 'DontCare':
            continue
        try:
            truncated, occluded, _alpha = float(parts[1]), int(float(parts[2])), float(parts[3])
            h, w, l, x, y, z, ry = (float(v) for v in parts[8:15])
        except ValueError:
            raise DatasetError(f'{path} line {k + 1}: non-numeric field in {line!r}') from None
        center_rect = np.array([x, y - h / 2.0, z, 1.0])           # y points down: centre is above
        heading_rect = np.array([np.cos(ry), 0.0, -np.sin(ry)])    # the box's length axis
        center = (T_base_rect @ center_rect)[:3]
        heading = T_base_rect[:3, :3] @ heading_rect
        objects.append(Object3D(center=center, size=(l, w, h), yaw_rad=float(np.arctan2(heading[1], heading[0])),
                                label=KITTI_CLASSES.get(kind, kind.lower()), id=len(objects) + 1))
        extras.append({'source_label': kind, 'truncated': truncated, 'occluded': occluded})
    return objects, extras


# ------------------------------------------------------------------ object layout
def object_split_dir(path, split: str = 'training') -> Path:
    path = Path(path)
    for cand in (path, path / split, path / 'object' / split):
        if (cand / 'velodyne').is_dir() and (cand / 'calib').is_dir():
            return cand
    raise DatasetError(f'{path}: not a KITTI object folder (no velodyne/ and calib/ in it or in {split}/)')


def object_frames(split_dir: Path, first: int = 0, max_frames: int | None = None,
                  velodyne_height_m: float = VELODYNE_HEIGHT_M):
    """(ids, static transforms, iterator of SensorFrame, calib_varies) of a KITTI object split."""
    ids = sorted(p.stem for p in (split_dir / 'velodyne').glob('*.bin'))[first:]
    if max_frames is not None:
        ids = ids[:max_frames]
    if not ids:
        raise DatasetError(f'{split_dir / "velodyne"}: no .bin sweeps (from index {first})')
    T_base_velo = make_T(t=(0.0, 0.0, velodyne_height_m))

    def calib_of(i):
        path = split_dir / 'calib' / f'{i}.txt'
        c = read_calib_file(path)
        P2 = _need(c, 'P2', 12, path).reshape(3, 4)
        R0 = _need(c, 'R0_rect', 9, path).reshape(3, 3)
        T_cam0_velo = np.vstack([_need(c, 'Tr_velo_to_cam', 12, path).reshape(3, 4), [0, 0, 0, 1]])
        return P2, R0, T_cam0_velo

    calibs = {i: calib_of(i) for i in ids}           # small text files: read all to know if they vary
    first_T = T_cam_velo_from_calib(*calibs[ids[0]])
    varies = any(not np.allclose(T_cam_velo_from_calib(*c), first_T, atol=1e-9) for c in calibs.values())
    static = [(config.FRAMES['base'], LIDAR_FRAME, T_base_velo)]
    if not varies:
        static.append((LIDAR_FRAME, CAMERA_FRAME, inv_T(first_T)))

    def frames():
        for k, i in enumerate(ids):
            P2, R0, T_cam0_velo = calibs[i]
            image_path = split_dir / 'image_2' / f'{i}.png'
            image = read_image(image_path) if image_path.is_file() else None
            camera = None
            if image is not None:
                camera, _ = camera_from_P(P2, image.shape[1], image.shape[0])
            T_cam_velo = T_cam_velo_from_calib(P2, R0, T_cam0_velo)
            label_path = split_dir / 'label_2' / f'{i}.txt'
            objects = extras = None
            if label_path.is_file():
                T_base_rect = T_base_velo @ inv_T(make_T(R0) @ T_cam0_velo)
                objects, extras = read_label_file(label_path, T_base_rect)
            yield SensorFrame(stamp_ns=OBJECT_FIRST_STAMP_NS + k * OBJECT_FRAME_PERIOD_NS,
                              points_lidar=read_velodyne_bin(split_dir / 'velodyne' / f'{i}.bin'),
                              lidar_frame=LIDAR_FRAME, image_rgb=image, camera=camera,
                              objects_base=objects, object_extras=extras,
                              transforms=[(LIDAR_FRAME, CAMERA_FRAME, inv_T(T_cam_velo))] if varies else [])
    return ids, static, frames(), (split_dir / 'label_2').is_dir()


# ------------------------------------------------------------------ raw layout
def parse_timestamps(path) -> list[int]:
    """ns since the epoch of each line 'YYYY-MM-DD HH:MM:SS.fffffffff' (UTC) of a timestamps.txt."""
    out = []
    for k, line in enumerate(Path(path).read_text().splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            day, _, clock = line.partition(' ')
            whole, _, frac = clock.partition('.')
            t = _dt.datetime.strptime(f'{day} {whole}', '%Y-%m-%d %H:%M:%S').replace(tzinfo=_dt.timezone.utc)
            out.append(int(t.timestamp()) * 1_000_000_000 + int((frac + '000000000')[:9]))
        except ValueError:
            raise DatasetError(f'{path} line {k + 1}: {line!r} is not a KITTI timestamp') from None
    return out


def read_oxts(path) -> dict[str, float]:
    values = Path(path).read_text().split()
    if len(values) < 23:
        raise DatasetError(f'{path}: {len(values)} values, an OXTS packet has 30')
    return {k: float(v) for k, v in zip(OXTS_FIELDS, values)}


def oxts_pose(packet: dict, scale: float) -> np.ndarray:
    """T_world_imu of an OXTS packet (devkit convention: Mercator x east, y north, z altitude)."""
    lat, lon = packet['lat'], packet['lon']
    tx = scale * lon * np.pi * EARTH_RADIUS_M / 180.0
    ty = scale * EARTH_RADIUS_M * np.log(np.tan((90.0 + lat) * np.pi / 360.0))
    cr, sr = np.cos(packet['roll']), np.sin(packet['roll'])
    cp, sp = np.cos(packet['pitch']), np.sin(packet['pitch'])
    cy, sy = np.cos(packet['yaw']), np.sin(packet['yaw'])
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return pose_T(Rz @ Ry @ Rx, (tx, ty, packet['alt']))


def _rigid(calib: dict, path) -> np.ndarray:
    return pose_T(_need(calib, 'R', 9, path).reshape(3, 3), _need(calib, 'T', 3, path))


def raw_calib_dir(drive: Path) -> Path:
    for cand in (drive, drive.parent):
        if (cand / 'calib_velo_to_cam.txt').is_file():
            return cand
    raise DatasetError(f'{drive}: calib_velo_to_cam.txt not found there or in {drive.parent} '
                       '(a KITTI raw drive keeps its calib_*.txt in the date folder)')


def raw_frames(drive: Path, first: int = 0, max_frames: int | None = None, imu_height_m: float = IMU_HEIGHT_M):
    """(n, static transforms, iterator of SensorFrame) of a KITTI raw drive."""
    cdir = raw_calib_dir(drive)
    c2c_path = cdir / 'calib_cam_to_cam.txt'
    c2c = read_calib_file(c2c_path)
    P2 = _need(c2c, 'P_rect_02', 12, c2c_path).reshape(3, 4)
    R0 = _need(c2c, 'R_rect_00', 9, c2c_path).reshape(3, 3)
    T_cam0_velo = _rigid(read_calib_file(cdir / 'calib_velo_to_cam.txt'), cdir / 'calib_velo_to_cam.txt')
    T_velo_imu = _rigid(read_calib_file(cdir / 'calib_imu_to_velo.txt'), cdir / 'calib_imu_to_velo.txt')
    T_cam_velo = T_cam_velo_from_calib(P2, R0, T_cam0_velo)
    T_base_imu = make_T(t=(0.0, 0.0, imu_height_m))
    base = config.FRAMES['base']
    static = [(base, IMU_FRAME, T_base_imu), (IMU_FRAME, LIDAR_FRAME, inv_T(T_velo_imu)),
              (LIDAR_FRAME, CAMERA_FRAME, inv_T(T_cam_velo))]

    velo_dir = drive / 'velodyne_points'
    sweeps = sorted((velo_dir / 'data').glob('*.bin'))
    if not sweeps:
        raise DatasetError(f'{velo_dir / "data"}: no .bin sweeps')
    velo_stamps = parse_timestamps(velo_dir / 'timestamps.txt')
    if len(velo_stamps) < len(sweeps):
        raise DatasetError(f'{velo_dir / "timestamps.txt"}: {len(velo_stamps)} stamps for {len(sweeps)} sweeps')
    images = sorted((drive / 'image_02' / 'data').glob('*.png'))
    image_stamps = parse_timestamps(drive / 'image_02' / 'timestamps.txt') if images else []
    oxts = sorted((drive / 'oxts' / 'data').glob('*.txt'))
    oxts_stamps = parse_timestamps(drive / 'oxts' / 'timestamps.txt') if oxts else []
    index = list(range(len(sweeps)))[first:]
    if max_frames is not None:
        index = index[:max_frames]
    if not index:
        raise DatasetError(f'{drive}: no sweeps from index {first} ({len(sweeps)} in the drive)')
    packets = [read_oxts(p) for p in oxts]
    scale = np.cos(np.radians(packets[0]['lat'])) if packets else 1.0
    T_world_imu0 = oxts_pose(packets[0], scale) if packets else None
    # odom: east-north-up with its origin at the first base_link pose (on the road)
    T_odom_world = make_T(t=-(T_world_imu0 @ inv_T(T_base_imu))[:3, 3]) if packets else None

    def base_pose(k):
        return T_odom_world @ oxts_pose(packets[k], scale) @ inv_T(T_base_imu)

    def frames():
        for k in index:
            image = camera = None
            if k < len(images):
                image = read_image(images[k])
                camera, _ = camera_from_P(P2, image.shape[1], image.shape[0])
            odometry, T_odom_base, v, w = [], None, 0.0, 0.0
            if k < len(packets):
                T_odom_base, v, w = base_pose(k), packets[k]['vf'], packets[k]['wu']
                if k < len(oxts_stamps) and oxts_stamps[k] != velo_stamps[k]:
                    odometry = [(oxts_stamps[k], T_odom_base, v, w)]   # the packet at its own time too
            yield SensorFrame(stamp_ns=velo_stamps[k], points_lidar=read_velodyne_bin(sweeps[k]),
                              lidar_frame=LIDAR_FRAME, image_rgb=image,
                              image_stamp_ns=image_stamps[k] if k < len(image_stamps) else None,
                              camera=camera, T_odom_base=T_odom_base, speed_mps=v, yaw_rate_rps=w,
                              odometry=odometry)
    return len(index), static, frames()


# ------------------------------------------------------------------ entry
def is_raw_drive(path: Path) -> bool:
    return (path / 'velodyne_points').is_dir() and (path / 'oxts').is_dir()


def import_kitti(path, out_dir, *, split: str = 'training', first: int = 0, max_frames: int | None = None,
                 progress: bool = True, overwrite: bool = False, velodyne_height_m: float = VELODYNE_HEIGHT_M,
                 imu_height_m: float = IMU_HEIGHT_M) -> dict:
    """Import a KITTI object split or raw drive into out_dir (see the module doc); returns the summary."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f'{path}: no such folder')
    if is_raw_drive(path):
        n, static, frames = raw_frames(path, first, max_frames, imu_height_m)
        return write_run(out_dir, frames, static, source=path, dataset='kitti-raw', total=n,
                         progress=progress, overwrite=overwrite, labelled=False,
                         extra_summary={'labels': 'none (raw tracklets are not read)'})
    split_dir = object_split_dir(path, split)
    ids, static, frames, labelled = object_frames(split_dir, first, max_frames, velodyne_height_m)
    return write_run(out_dir, frames, static, source=split_dir, dataset='kitti-object', total=len(ids),
                     progress=progress, overwrite=overwrite, labelled=labelled,
                     extra_summary={'frame_ids': ids})
