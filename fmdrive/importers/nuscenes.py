"""`fmdrive import nuscenes DATAROOT -o RUN_DIR [--scene NAME] [--version v1.0-mini]`.

Reads the nuScenes v1.0 JSON tables directly (the layout the nuScenes schema documents; the
devkit is not needed): DATAROOT/<version>/{scene, sample, sample_data, ego_pose,
calibrated_sensor, sensor, sample_annotation, instance, category}.json, and the files the
sample_data rows name (samples/LIDAR_TOP/*.pcd.bin, samples/CAM_FRONT/*.jpg).

One scene's key frames (samples) become the bag: per sample the LIDAR_TOP sweep and the camera
image of that sample, each with its own timestamp (microseconds in the tables), odometry and
/tf odom -> base_link from the ego_pose of every written sample_data, and the annotations as
ground truth.

Conventions kept from the format:
- calibrated_sensor: translation + rotation (w, x, y, z) of the sensor in the ego frame (= our
  base_link: rear axle on the ground, x forward, z up); a camera's rotation is that of its optical
  frame (z forward). camera_intrinsic is K; the images are undistorted, so D = 0.
- LIDAR_TOP .pcd.bin: float32 rows x, y, z, intensity (0..255), ring index, in the LiDAR frame
  (x right, y forward, z up: the 90 degree yaw is in calibrated_sensor, so the points stay as
  recorded and TF turns them).
- ego_pose and sample_annotation live in the global frame; our odom is that frame moved so the
  scene's first ego position is its origin (same axes), keeping coordinates small.
- sample_annotation: translation = box centre, size = (w, l, h), rotation (w, x, y, z);
  num_lidar_pts is taken as the box's LiDAR point count.
Frame ids are the channel names in lower case: `lidar_top`, `cam_front`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmdrive import config
from fmdrive.calibration.camera_model import CameraModel
from fmdrive.geometry import inv_T, make_T, quat_to_rot
from fmdrive.importers.common import DatasetError, SensorFrame, read_image, write_run, yaw_of
from fmdrive.objects import Object3D

TABLES = ('scene', 'sample', 'sample_data', 'ego_pose', 'calibrated_sensor', 'sensor', 'sample_annotation',
          'instance', 'category')


def category_label(name: str, attributes=()) -> str:
    """The stack's class of a nuScenes category (the rest keep their last name component)."""
    if name.startswith('human.pedestrian'):
        return 'pedestrian'
    if name in ('vehicle.car', 'vehicle.emergency.police'):
        return 'car'
    if name in ('vehicle.bicycle', 'vehicle.motorcycle'):
        return 'cyclist'
    if name == 'movable_object.trafficcone':
        return 'cone'
    if name.startswith('vehicle.'):
        return name.split('.')[1]            # truck, bus, trailer, construction, emergency
    return name.split('.')[-1]


def quat_wxyz_to_rot(q) -> np.ndarray:
    w, x, y, z = (float(v) for v in q)
    return quat_to_rot((x, y, z, w))


def pose_of(row: dict) -> np.ndarray:
    """4x4 of a row with translation and rotation (w, x, y, z)."""
    return make_T(quat_wxyz_to_rot(row['rotation']), row['translation'])


class NuScenesTables:
    """The JSON tables of one nuScenes version, indexed by token."""

    def __init__(self, dataroot, version: str = 'v1.0-mini'):
        self.root = Path(dataroot)
        folder = self.root / version
        if not folder.is_dir():
            found = sorted(p.name for p in self.root.glob('v1.0-*') if p.is_dir()) if self.root.is_dir() else []
            raise DatasetError(f'{folder}: no such folder (nuScenes tables live in DATAROOT/<version>; '
                               f'found: {", ".join(found) or "none"}); pass --version')
        self.tables = {}
        for name in TABLES:
            path = folder / f'{name}.json'
            if not path.is_file():
                if name in ('sample_annotation', 'instance', 'category'):
                    self.tables[name] = []           # the test split has no annotations
                    continue
                raise DatasetError(f'{path} not found; a nuScenes version folder holds {", ".join(TABLES)}.json')
            try:
                self.tables[name] = json.loads(path.read_text())
            except ValueError as e:
                raise DatasetError(f'{path}: not valid JSON ({e})') from None
        self.by_token = {name: {r['token']: r for r in rows} for name, rows in self.tables.items()}
        self.annotations_of = {}
        for a in self.tables['sample_annotation']:
            self.annotations_of.setdefault(a['sample_token'], []).append(a)
        # a small positive integer per instance: the track id in the ground truth
        self.instance_id = {r['token']: k + 1 for k, r in enumerate(self.tables['instance'])}
        self.data_of = {}
        for sd in self.tables['sample_data']:
            if sd.get('is_key_frame', True):
                self.data_of.setdefault(sd['sample_token'], []).append(sd)

    def get(self, table: str, token: str) -> dict:
        try:
            return self.by_token[table][token]
        except KeyError:
            raise DatasetError(f'{self.root}: {table} token {token} is referenced but not in {table}.json') from None

    def scene(self, name: str | None) -> dict:
        scenes = self.tables['scene']
        if not scenes:
            raise DatasetError(f'{self.root}: scene.json is empty')
        if name is None:
            return scenes[0]
        for s in scenes:
            if s['name'] == name or s['token'] == name:
                return s
        raise DatasetError(f'no scene {name!r}; scenes: {", ".join(s["name"] for s in scenes)}')

    def samples(self, scene: dict) -> list[dict]:
        out, token = [], scene['first_sample_token']
        while token:
            sample = self.get('sample', token)
            out.append(sample)
            token = sample.get('next') or ''
        return out

    def channel_data(self, sample: dict, channel: str) -> dict | None:
        for sd in self.data_of.get(sample['token'], []):
            cs = self.get('calibrated_sensor', sd['calibrated_sensor_token'])
            if self.get('sensor', cs['sensor_token'])['channel'] == channel:
                return sd
        return None

    def sensor_pose(self, sd: dict) -> np.ndarray:
        """T_ego_sensor of a sample_data row."""
        return pose_of(self.get('calibrated_sensor', sd['calibrated_sensor_token']))

    def ego_pose(self, sd: dict) -> np.ndarray:
        return pose_of(self.get('ego_pose', sd['ego_pose_token']))


def read_pcd_bin(path) -> np.ndarray:
    """(N, 5) float32 x, y, z, intensity, ring of a nuScenes LiDAR .pcd.bin."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'LiDAR sweep {path} not found')
    raw = np.fromfile(path, dtype='<f4')
    if raw.size % 5:
        raise DatasetError(f'{path}: {raw.size} float32 values, not a multiple of 5 (x, y, z, intensity, ring)')
    return raw.reshape(-1, 5)


def _velocity(db: NuScenesTables, ann: dict) -> np.ndarray:
    """Global velocity of an annotated box from its previous and next annotation (0 if alone)."""
    prev = db.by_token['sample_annotation'].get(ann.get('prev') or '')
    nxt = db.by_token['sample_annotation'].get(ann.get('next') or '')
    a, b = prev or ann, nxt or ann
    if a is b:
        return np.zeros(3)
    dt = (db.get('sample', b['sample_token'])['timestamp'] - db.get('sample', a['sample_token'])['timestamp']) / 1e6
    return (np.asarray(b['translation'], float) - np.asarray(a['translation'], float)) / dt if dt > 0 else np.zeros(3)


def scene_frames(db: NuScenesTables, scene: dict, lidar_channel: str = 'LIDAR_TOP',
                 camera_channel: str = 'CAM_FRONT', max_frames: int | None = None):
    """(n, static transforms, iterator of SensorFrame, changing) of one scene's key frames."""
    samples = db.samples(scene)[:max_frames] if max_frames else db.samples(scene)
    pairs = [(s, db.channel_data(s, lidar_channel), db.channel_data(s, camera_channel)) for s in samples]
    pairs = [p for p in pairs if p[1] is not None]
    if not pairs:
        raise DatasetError(f'scene {scene["name"]}: no {lidar_channel} key frames')
    lidar_frame, camera_frame = lidar_channel.lower(), camera_channel.lower()
    base = config.FRAMES['base']
    _, sd0, cam0 = pairs[0]
    T_odom_global = make_T(t=-db.ego_pose(sd0)[:3, 3])
    static = [(base, lidar_frame, db.sensor_pose(sd0))]
    if cam0 is not None:
        static.append((base, camera_frame, db.sensor_pose(cam0)))
    n_categories = {c['token']: c['name'] for c in db.tables['category']}

    def frames():
        for sample, sd, cam in pairs:
            stamp = int(sd['timestamp']) * 1000
            T_global_base = db.ego_pose(sd)
            T_odom_base = T_odom_global @ T_global_base
            T_base_global = inv_T(T_global_base)
            image = camera = None
            odometry = []
            if cam is not None:
                image = read_image(db.root / cam['filename'])
                cs = db.get('calibrated_sensor', cam['calibrated_sensor_token'])
                K = np.asarray(cs.get('camera_intrinsic') or [], float)
                if K.shape != (3, 3):
                    raise DatasetError(f'calibrated_sensor {cs["token"]}: camera_intrinsic must be 3x3')
                camera = CameraModel(image.shape[1], image.shape[0], K, [], 'plumb_bob', camera_frame,
                                     camera_channel)
                odometry.append((int(cam['timestamp']) * 1000, T_odom_global @ db.ego_pose(cam), 0.0, 0.0))
            objects, extras = [], []
            for k, ann in enumerate(db.annotations_of.get(sample['token'], [])):
                inst = db.get('instance', ann['instance_token'])
                name = n_categories.get(inst['category_token'], 'unknown')
                T_global_box = pose_of(ann)
                T_base_box = T_base_global @ T_global_box
                w, l, h = (float(v) for v in ann['size'])
                velocity = T_base_global[:3, :3] @ _velocity(db, ann)
                objects.append(Object3D(center=T_base_box[:3, 3], size=(l, w, h), yaw_rad=yaw_of(T_base_box),
                                        label=category_label(name), id=db.instance_id.get(ann['instance_token'], 0),
                                        velocity=velocity))
                extras.append({'source_label': name, 'num_lidar_points': int(ann.get('num_lidar_pts', 0)),
                               'instance_token': ann['instance_token']})
            changing = []
            T_base_lidar = db.sensor_pose(sd)
            if not np.allclose(T_base_lidar, static[0][2]):
                changing.append((base, lidar_frame, T_base_lidar))
            yield SensorFrame(stamp_ns=stamp, points_lidar=read_pcd_bin(db.root / sd['filename']),
                              lidar_frame=lidar_frame, image_rgb=image,
                              image_stamp_ns=None if cam is None else int(cam['timestamp']) * 1000,
                              camera=camera, objects_base=objects, object_extras=extras,
                              T_odom_base=T_odom_base, speed_mps=_speed(db, sd, T_global_base),
                              odometry=odometry, transforms=changing)
    return len(pairs), static, frames()


def _speed(db: NuScenesTables, sd: dict, T_global_base) -> float:
    """Forward speed from this LiDAR sample_data's ego pose and the next one's (0 at the end)."""
    nxt = db.by_token['sample_data'].get(sd.get('next') or '')
    if nxt is None:
        return 0.0
    dt = (nxt['timestamp'] - sd['timestamp']) / 1e6
    if dt <= 0:
        return 0.0
    d = db.ego_pose(nxt)[:3, 3] - T_global_base[:3, 3]
    return float(T_global_base[:3, 0] @ d / dt)


def import_nuscenes(dataroot, out_dir, *, version: str = 'v1.0-mini', scene: str | None = None,
                    max_frames: int | None = None, camera_channel: str = 'CAM_FRONT',
                    progress: bool = True, overwrite: bool = False) -> dict:
    db = NuScenesTables(dataroot, version)
    sc = db.scene(scene)
    n, static, frames = scene_frames(db, sc, camera_channel=camera_channel, max_frames=max_frames)
    return write_run(out_dir, frames, static, source=Path(dataroot) / version, dataset='nuscenes', total=n,
                     progress=progress, overwrite=overwrite, labelled=bool(db.tables['sample_annotation']),
                     extra_summary={'scene': sc['name']})
