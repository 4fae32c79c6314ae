"""Importers: tiny datasets written here from the formats' public specifications (KITTI object and
raw devkit readmes, nuScenes v1.0 schema), imported, read back through the bag reader and the TF
buffer, and scored by eval; plus the real PJLab sample through `import pcd-image`."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmdrive.bags.reader import BagReader
from fmdrive.bags.tf_from_bag import tf_buffer_from_bag
from fmdrive.calibration.camera_model import CameraModel
from fmdrive.config import TOPICS
from fmdrive.eval.metrics import load_ground_truth
from fmdrive.geometry import inv_T, make_T, rot_to_quat, rot_z
from fmdrive.importers.common import DatasetError, points_in_boxes
from fmdrive.msgs import camera_info_to_fields, pointcloud2_to_xyzi, stamp_to_ns
from fmdrive.tf import R_BODY_OPTICAL

SAMPLE = Path(__file__).parent / 'data' / 'pjlab_lidar2camera'

# KITTI calibration in the object benchmark's layout (values of the kind the benchmark ships)
P2 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791],
               [0.0, 0.0, 1.0, 0.002745884]])
R0_RECT = np.array([[0.9999239, 0.00983776, -0.007445048], [-0.009869795, 0.9999421, -0.004278459],
                    [0.007402527, 0.004351614, 0.9999631]])
TR_VELO_TO_CAM = np.array([[7.533745e-03, -9.999714e-01, -6.166020e-04, -4.069766e-03],
                           [1.480249e-02, 7.280733e-04, -9.998902e-01, -7.631618e-02],
                           [9.998621e-01, 7.523790e-03, 1.480755e-02, -2.717806e-01]])
KITTI_W, KITTI_H = 1242, 375


def fmt(values):
    return ' '.join(f'{v:.12e}' for v in np.asarray(values).reshape(-1))


def rect_to_velo(p_rect):
    """KITTI spec: x_rect = R0_rect Tr_velo_to_cam x_velo, inverted."""
    T = make_T(R0_RECT) @ np.vstack([TR_VELO_TO_CAM, [0, 0, 0, 1]])
    return (inv_T(T) @ np.r_[p_rect, 1.0])[:3]


def box_points_velo(bottom_rect, h, n=30, seed=0):
    """n points inside a small cube at the box centre (rect coords), in velodyne coordinates."""
    rng = np.random.default_rng(seed)
    centre = np.asarray(bottom_rect, float) - [0.0, h / 2, 0.0]
    pts = np.array([rect_to_velo(centre + rng.uniform(-0.3, 0.3, 3)) for _ in range(n)])
    return np.c_[pts, np.full(n, 0.4)].astype('<f4')


def write_kitti_object(root: Path, car=(1.0, 1.65, 15.0), n_inside=30):
    split = root / 'training'
    for d in ('velodyne', 'image_2', 'calib', 'label_2'):
        (split / d).mkdir(parents=True)
    (split / 'calib' / '000000.txt').write_text(
        f'P0: {fmt(P2)}\nP1: {fmt(P2)}\nP2: {fmt(P2)}\nP3: {fmt(P2)}\nR0_rect: {fmt(R0_RECT)}\n'
        f'Tr_velo_to_cam: {fmt(TR_VELO_TO_CAM)}\nTr_imu_to_velo: {fmt(np.eye(4)[:3])}\n')
    (split / 'label_2' / '000000.txt').write_text(
        f'Car 0.00 0 -1.58 580.0 170.0 640.0 210.0 1.50 1.60 3.90 {car[0]:.2f} {car[1]:.2f} {car[2]:.2f} 0.30\n'
        'Pedestrian 0.00 1 0.20 300.0 150.0 320.0 200.0 1.75 0.60 0.80 -4.00 1.65 12.00 1.00\n'
        'DontCare -1 -1 -10 500.0 160.0 520.0 170.0 -1 -1 -1 -1000 -1000 -1000 -10\n')
    rng = np.random.default_rng(1)
    background = np.c_[rng.uniform(5, 40, (200, 1)), rng.uniform(-10, 10, (200, 1)), np.full((200, 1), -1.73),
                       rng.uniform(0, 1, (200, 1))].astype('<f4')
    np.vstack([box_points_velo(car, 1.5, n_inside), background]).tofile(split / 'velodyne' / '000000.bin')
    Image.fromarray(np.full((KITTI_H, KITTI_W, 3), 90, np.uint8)).save(split / 'image_2' / '000000.png')
    return split


# ---------------------------------------------------------------- KITTI object
def test_kitti_object_import_writes_a_bag_whose_tf_projects_the_label_onto_its_pixels(tmp_path):
    from fmdrive.importers.kitti import import_kitti
    write_kitti_object(tmp_path / 'kitti')
    summary = import_kitti(tmp_path / 'kitti', tmp_path / 'run', progress=False)
    assert summary['frames'] == 1 and summary['objects'] == 2          # DontCare is not a box
    with BagReader(tmp_path / 'run' / 'bag') as bag:
        assert {TOPICS['points'], TOPICS['image'], TOPICS['camera_info'], TOPICS['tf_static']} <= set(bag.topics)
        msgs = {t: m for t, _, m in bag.messages([TOPICS['points'], TOPICS['camera_info']])}
        buf = tf_buffer_from_bag(bag)
    info = camera_info_to_fields(msgs[TOPICS['camera_info']])
    assert info['frame_id'] == 'camera_color_left' and msgs[TOPICS['points']].header.frame_id == 'velodyne'
    np.testing.assert_allclose(np.reshape(info['k'], (3, 3)), P2[:, :3])
    assert not any(info['d'])                                          # rectified image
    np.testing.assert_allclose(buf.lookup('base_link', 'velodyne'), make_T(t=(0, 0, 1.73)))
    cloud = pointcloud2_to_xyzi(msgs[TOPICS['points']])
    assert cloud.shape == (230, 4) and 0 <= cloud[:, 3].min() and cloud[:, 3].max() <= 1

    _, frames = load_ground_truth(tmp_path / 'run' / 'ground_truth.json')
    car, ped = frames[0].objects
    assert (car.label, ped.label) == ('car', 'pedestrian')
    np.testing.assert_allclose(car.size, (3.9, 1.6, 1.5))
    # the bottom of a box labelled at y = 1.65 m (camera height) lies on the road, in base_link
    # (within the camera's 0.85 deg pitch over 15 m)
    assert abs(car.center[2] - car.size[2] / 2) < 0.25
    assert car.center[0] == pytest.approx(15.3, abs=0.2) and car.center[1] == pytest.approx(-1.0, abs=0.2)
    assert car.yaw_rad == pytest.approx(-0.3 - np.pi / 2, abs=0.02)     # rotation_y about camera y (down)
    assert frames[0].num_lidar_points[0] == 30 and frames[0].in_camera.all()
    # projected through the bag's TF and camera_info, the bottom centre lands where P2 puts it
    camera = CameraModel.from_camera_info_fields(**info)
    T_cam_base = inv_T(buf.optical_T('base_link', info['frame_id']))
    bottom = car.center - [0, 0, car.size[2] / 2]
    uv, _, _ = camera.project((T_cam_base @ np.r_[bottom, 1.0])[None, :3])
    expected = P2 @ np.r_[1.0, 1.65, 15.0, 1.0]
    np.testing.assert_allclose(uv[0], expected[:2] / expected[2], atol=0.5)


def test_kitti_object_frames_with_different_calibrations_publish_the_camera_on_tf(tmp_path):
    from fmdrive.importers.kitti import import_kitti
    split = write_kitti_object(tmp_path / 'kitti')
    for d, ext in (('velodyne', 'bin'), ('image_2', 'png'), ('label_2', 'txt')):
        (split / d / f'000001.{ext}').write_bytes((split / d / f'000000.{ext}').read_bytes())
    other = TR_VELO_TO_CAM.copy()
    other[0, 3] += 0.2
    text = (split / 'calib' / '000000.txt').read_text().replace(f'Tr_velo_to_cam: {fmt(TR_VELO_TO_CAM)}',
                                                                f'Tr_velo_to_cam: {fmt(other)}')
    (split / 'calib' / '000001.txt').write_text(text)
    import_kitti(tmp_path / 'kitti', tmp_path / 'run', progress=False)
    with BagReader(tmp_path / 'run' / 'bag') as bag:
        stamps = [stamp_to_ns(m.header.stamp) for _, _, m in bag.messages([TOPICS['points']])]
        buf = tf_buffer_from_bag(bag)
    T0, T1 = (buf.lookup('camera_color_left', 'velodyne', s) for s in stamps)
    np.testing.assert_allclose(T1[:3, 3] - T0[:3, 3], R0_RECT @ [0.2, 0.0, 0.0], atol=1e-6)   # rectified too


def test_kitti_label_with_too_few_fields_is_one_clear_error(tmp_path):
    from fmdrive.importers.kitti import import_kitti
    split = write_kitti_object(tmp_path / 'kitti')
    (split / 'label_2' / '000000.txt').write_text('Car 0 0 0 1 2 3\n')
    with pytest.raises(DatasetError, match='line 1: 7 fields, a KITTI label has 15'):
        import_kitti(tmp_path / 'kitti', tmp_path / 'run', progress=False)


# ---------------------------------------------------------------- KITTI raw
def write_kitti_raw(root: Path, n=3, lat0=49.0, yaw=np.pi / 2, speed=10.0):
    date = root / '2011_09_26'
    drive = date / '2011_09_26_drive_0001_sync'
    (date).mkdir(parents=True)
    c2c = (f'calib_time: 09-Jan-2012 13:57:47\nS_rect_02: 1.242000e+03 3.750000e+02\n'
           f'R_rect_00: {fmt(R0_RECT)}\nP_rect_02: {fmt(P2)}\n')
    (date / 'calib_cam_to_cam.txt').write_text(c2c)
    (date / 'calib_velo_to_cam.txt').write_text(
        f'calib_time: 15-Mar-2012 11:37:16\nR: {fmt(TR_VELO_TO_CAM[:, :3])}\nT: {fmt(TR_VELO_TO_CAM[:, 3])}\n'
        'delta_f: 0 0\ndelta_c: 0 0\n')
    T_velo_imu = make_T(t=(-0.81, 0.32, -0.80))
    (date / 'calib_imu_to_velo.txt').write_text(
        f'calib_time: 25-May-2012 16:47:16\nR: {fmt(T_velo_imu[:3, :3])}\nT: {fmt(T_velo_imu[:3, 3])}\n')
    for d in ('velodyne_points', 'image_02', 'oxts'):
        (drive / d / 'data').mkdir(parents=True)
    er = 6378137.0
    stamps = {'velodyne_points': [], 'image_02': [], 'oxts': []}
    for k in range(n):
        np.array([[5.0 + k, 0.0, -1.7, 0.5]], '<f4').tofile(drive / 'velodyne_points' / 'data' / f'{k:010d}.bin')
        Image.fromarray(np.full((KITTI_H, KITTI_W, 3), 60, np.uint8)).save(drive / 'image_02' / 'data' / f'{k:010d}.png')
        lat = lat0 + np.degrees(k * speed * 0.1 / er)                  # 1 m north per frame
        packet = [lat, 8.4, 110.0, 0.0, 0.0, yaw, 0.0, speed, speed, 0.0, 0.0] + [0.0] * 12 + [0.1, 0.1, 4, 10, 5, 5, 5]
        (drive / 'oxts' / 'data' / f'{k:010d}.txt').write_text(' '.join(f'{v:.12g}' for v in packet) + '\n')
        stamps['velodyne_points'].append(f'2011-09-26 13:02:25.{100_000_000 * k + 5_000_000:09d}')
        stamps['image_02'].append(f'2011-09-26 13:02:25.{100_000_000 * k + 9_000_000:09d}')
        stamps['oxts'].append(f'2011-09-26 13:02:25.{100_000_000 * k + 1_000_000:09d}')
    for d, lines in stamps.items():
        (drive / d / 'timestamps.txt').write_text('\n'.join(lines) + '\n')
    return drive, T_velo_imu


def test_kitti_raw_drive_gives_stamped_odometry_from_oxts_and_a_tf_chain_to_the_camera(tmp_path):
    from fmdrive.importers.kitti import import_kitti
    drive, T_velo_imu = write_kitti_raw(tmp_path)
    summary = import_kitti(drive, tmp_path / 'run', progress=False)
    assert summary['dataset'] == 'kitti-raw' and summary['frames'] == 3 and summary['ground_truth'] is None
    with BagReader(tmp_path / 'run' / 'bag') as bag:
        cloud_stamps = [stamp_to_ns(m.header.stamp) for _, _, m in bag.messages([TOPICS['points']])]
        image_stamps = [stamp_to_ns(m.header.stamp) for _, _, m in bag.messages([TOPICS['image']])]
        odom = [m for _, _, m in bag.messages([TOPICS['odometry']])]
        buf = tf_buffer_from_bag(bag)
    assert cloud_stamps[0] == 1317042145_005_000_000          # 2011-09-26 13:02:25.005 UTC
    assert image_stamps[1] == 1317042145_109_000_000          # the camera's own stamps
    at_lidar = [m for m in odom if stamp_to_ns(m.header.stamp) in cloud_stamps]
    assert len(at_lidar) == 3 and at_lidar[2].twist.twist.linear.x == pytest.approx(10.0)
    T2 = buf.lookup('odom', 'base_link', cloud_stamps[2])
    np.testing.assert_allclose(T2[:3, 3], (0.0, 2.0, 0.0), atol=0.01)      # 2 m north of the start
    assert np.arctan2(T2[1, 0], T2[0, 0]) == pytest.approx(np.pi / 2)       # heading north (yaw from east)
    T_base_velo = buf.lookup('base_link', 'velodyne')
    np.testing.assert_allclose(T_base_velo, make_T(t=(0, 0, 0.93)) @ inv_T(T_velo_imu), atol=1e-9)
    assert buf.source_of('base_link', 'camera_color_left') == 'tf_static'


# ---------------------------------------------------------------- nuScenes
def q_wxyz(R):
    x, y, z, w = rot_to_quat(R)
    return [float(w), float(x), float(y), float(z)]


def write_nuscenes(root: Path, ego_yaw=np.radians(30), box_base=(12.0, -2.0, 0.9), box_yaw=0.2):
    version = root / 'v1.0-mini'
    for d in (version, root / 'samples' / 'LIDAR_TOP', root / 'samples' / 'CAM_FRONT'):
        d.mkdir(parents=True)
    K = [[633.0, 0.0, 408.0], [0.0, 633.0, 246.0], [0.0, 0.0, 1.0]]
    T_ego_lidar = make_T(rot_z(-np.pi / 2), (0.94, 0.0, 1.84))           # LiDAR x right, y forward
    T_ego_cam = make_T(R_BODY_OPTICAL, (1.70, 0.016, 1.51))
    tables = {k: [] for k in ('scene', 'sample', 'sample_data', 'ego_pose', 'calibrated_sensor', 'sensor',
                              'sample_annotation', 'instance', 'category', 'log')}
    tables['sensor'] = [{'token': 's_lidar', 'channel': 'LIDAR_TOP', 'modality': 'lidar'},
                        {'token': 's_cam', 'channel': 'CAM_FRONT', 'modality': 'camera'}]
    tables['calibrated_sensor'] = [
        {'token': 'cs_lidar', 'sensor_token': 's_lidar', 'translation': list(T_ego_lidar[:3, 3]),
         'rotation': q_wxyz(T_ego_lidar[:3, :3]), 'camera_intrinsic': []},
        {'token': 'cs_cam', 'sensor_token': 's_cam', 'translation': list(T_ego_cam[:3, 3]),
         'rotation': q_wxyz(T_ego_cam[:3, :3]), 'camera_intrinsic': K}]
    tables['category'] = [{'token': 'c_car', 'name': 'vehicle.car', 'description': ''}]
    tables['instance'] = [{'token': 'i_1', 'category_token': 'c_car', 'nbr_annotations': 2,
                           'first_annotation_token': 'a_0', 'last_annotation_token': 'a_1'}]
    tables['scene'] = [{'token': 'sc', 'name': 'scene-0061', 'log_token': 'l', 'nbr_samples': 2,
                        'first_sample_token': 'smp_0', 'last_sample_token': 'smp_1', 'description': ''}]
    ego_poses = []
    for k in range(2):
        t_us = 1532402927647951 + 500000 * k
        T_global_ego = make_T(rot_z(ego_yaw), (600.0 + 5.0 * k * np.cos(ego_yaw), 1600.0 + 5.0 * k * np.sin(ego_yaw), 0.0))
        ego_poses.append(T_global_ego)
        tables['sample'].append({'token': f'smp_{k}', 'timestamp': t_us, 'scene_token': 'sc',
                                 'prev': f'smp_{k - 1}' if k else '', 'next': '' if k else 'smp_1'})
        for ch, cs, dt_us, fname in (('lidar', 'cs_lidar', 0, f'samples/LIDAR_TOP/n_{k}.pcd.bin'),
                                     ('cam', 'cs_cam', 12000, f'samples/CAM_FRONT/n_{k}.jpg')):
            tables['ego_pose'].append({'token': f'ep_{ch}_{k}', 'timestamp': t_us + dt_us,
                                       'translation': list(T_global_ego[:3, 3]), 'rotation': q_wxyz(T_global_ego[:3, :3])})
            tables['sample_data'].append({'token': f'sd_{ch}_{k}', 'sample_token': f'smp_{k}',
                                          'ego_pose_token': f'ep_{ch}_{k}', 'calibrated_sensor_token': cs,
                                          'timestamp': t_us + dt_us, 'fileformat': 'pcd' if ch == 'lidar' else 'jpg',
                                          'is_key_frame': True, 'height': 0 if ch == 'lidar' else 492,
                                          'width': 0 if ch == 'lidar' else 816, 'filename': fname,
                                          'prev': f'sd_{ch}_{k - 1}' if k else '', 'next': '' if k else f'sd_{ch}_1'})
        box_global = T_global_ego @ make_T(rot_z(box_yaw), box_base)
        tables['sample_annotation'].append({
            'token': f'a_{k}', 'sample_token': f'smp_{k}', 'instance_token': 'i_1', 'attribute_tokens': [],
            'visibility_token': '4', 'translation': list(box_global[:3, 3]), 'size': [1.9, 4.5, 1.6],
            'rotation': q_wxyz(box_global[:3, :3]), 'num_lidar_pts': 42, 'num_radar_pts': 0,
            'prev': 'a_0' if k else '', 'next': '' if k else 'a_1'})
        rng = np.random.default_rng(k)
        inside_base = np.asarray(box_base) + rng.uniform(-0.5, 0.5, (20, 3))
        inside_lidar = (inv_T(T_ego_lidar) @ np.c_[inside_base, np.ones(20)].T).T[:, :3]
        np.c_[inside_lidar, np.full(20, 37.0), np.arange(20) % 32].astype('<f4').tofile(
            root / f'samples/LIDAR_TOP/n_{k}.pcd.bin')
        Image.fromarray(np.full((492, 816, 3), 100, np.uint8)).save(root / f'samples/CAM_FRONT/n_{k}.jpg')
    for name, rows in tables.items():
        (version / f'{name}.json').write_text(json.dumps(rows))
    return T_ego_lidar, T_ego_cam, np.array(K), ego_poses


def test_nuscenes_import_puts_the_annotation_at_its_base_link_pose_and_eval_scores_it(tmp_path):
    from fmdrive.bags.writer import BagWriter
    from fmdrive.eval.metrics import eval_run
    from fmdrive.importers.nuscenes import import_nuscenes
    from fmdrive.msgs import objects_to_msg, plan_to_msg
    from fmdrive.objects import Plan
    T_ego_lidar, T_ego_cam, K, _ = write_nuscenes(tmp_path / 'nusc')
    summary = import_nuscenes(tmp_path / 'nusc', tmp_path / 'run', progress=False)
    assert (summary['frames'], summary['objects'], summary['scene']) == (2, 2, 'scene-0061')
    with BagReader(tmp_path / 'run' / 'bag') as bag:
        clouds = [m for _, _, m in bag.messages([TOPICS['points']])]
        info = camera_info_to_fields(next(m for _, _, m in bag.messages([TOPICS['camera_info']])))
        n_odom = bag.topics[TOPICS['odometry']][1]
        buf = tf_buffer_from_bag(bag)
    assert clouds[0].header.frame_id == 'lidar_top' and info['frame_id'] == 'cam_front'
    assert stamp_to_ns(clouds[1].header.stamp) == 1532402928147951000 and n_odom == 4
    np.testing.assert_allclose(buf.lookup('base_link', 'lidar_top'), T_ego_lidar, atol=1e-9)
    scenario, frames = load_ground_truth(tmp_path / 'run' / 'ground_truth.json')
    assert scenario['kind'] == 'nuscenes'
    for frame in frames:
        (car,) = frame.objects
        base = car.transformed(inv_T(frame.ego.T_odom_base()))              # eval's own contract
        np.testing.assert_allclose(base.center, (12.0, -2.0, 0.9), atol=1e-3)   # the file keeps 0.1 mm
        assert base.yaw_rad == pytest.approx(0.2, abs=1e-4) and car.label == 'car' and car.id == 1
        np.testing.assert_allclose(car.size, (4.5, 1.9, 1.6))
        assert frame.num_lidar_points[0] == 42 and frame.in_camera[0]
    # 5 m in 0.5 s along the ego heading (30 deg in global = odom axes)
    np.testing.assert_allclose(frames[0].objects[0].velocity[:2], 10.0 * np.array([np.cos(np.radians(30)),
                                                                                   np.sin(np.radians(30))]), atol=1e-3)
    # the LiDAR points, moved to base_link by the bag's TF, fall inside the box
    points = pointcloud2_to_xyzi(clouds[0])
    assert points_in_boxes(points[:, :3] @ T_ego_lidar[:3, :3].T + T_ego_lidar[:3, 3], [base])[0] == 20
    # the box centre projects where calibrated_sensor + camera_intrinsic put it
    camera = CameraModel.from_camera_info_fields(**info)
    uv, _, _ = camera.project((inv_T(buf.optical_T('base_link', 'cam_front')) @ [12.0, -2.0, 0.9, 1.0])[None, :3])
    p_cam = T_ego_cam[:3, :3].T @ (np.array([12.0, -2.0, 0.9]) - T_ego_cam[:3, 3])
    np.testing.assert_allclose(uv[0], (K @ p_cam)[:2] / p_cam[2], atol=1e-6)

    # eval reads the labels: a graph that reports the box exactly (and plans) scores AP 1
    with BagWriter(tmp_path / 'run' / 'output') as out:
        for frame in frames:
            det = frame.objects[0].transformed(inv_T(frame.ego.T_odom_base()))
            out.write(TOPICS['lidar_objects'], objects_to_msg([det], frame.stamp_ns, 'base_link', 'lidar'),
                      frame.stamp_ns)
            e = frame.ego
            plan = Plan(frame.stamp_ns, np.array([[e.x, e.y, e.yaw_rad]]), np.array([0.5]), np.array([10.0]))
            out.write(TOPICS['plan'], plan_to_msg(plan), frame.stamp_ns)
    metrics = eval_run(tmp_path / 'run', progress=False)
    assert metrics['detection']['car_bev_ap50'] == pytest.approx(1.0)
    assert metrics['detection']['num_gt']['car'] == 2


def test_nuscenes_unknown_scene_names_the_scenes_there_are(tmp_path):
    from fmdrive.importers.nuscenes import import_nuscenes
    write_nuscenes(tmp_path / 'nusc')
    with pytest.raises(DatasetError, match="no scene 'scene-9999'; scenes: scene-0061"):
        import_nuscenes(tmp_path / 'nusc', tmp_path / 'run', scene='scene-9999', progress=False)


# ---------------------------------------------------------------- pcd + image (the real sample)
def test_pcd_image_import_of_the_pjlab_jsons_keeps_their_calibration_and_calib_check_passes(tmp_path, capsys):
    from fmdrive.calibration import check
    from fmdrive.calibration.pjlab import T_camera_lidar_from_pjlab_json
    from fmdrive.cli import main
    code = main(['import', 'pcd-image', '--pcd', str(SAMPLE / '0.pcd'), '--image', str(SAMPLE / '0.png'),
                 '--intrinsics', str(SAMPLE / 'center_camera-intrinsic.json'),
                 '--extrinsics', str(SAMPLE / 'top_center_lidar-to-center_camera-extrinsic.json'),
                 '--base-to-lidar', '0 0 1.9', '-o', str(tmp_path / 'run')])
    assert code == 0 and 'no labels' in capsys.readouterr().out
    with BagReader(tmp_path / 'run' / 'bag') as bag:
        cloud = next(m for _, _, m in bag.messages([TOPICS['points']]))
        info = camera_info_to_fields(next(m for _, _, m in bag.messages([TOPICS['camera_info']])))
        buf = tf_buffer_from_bag(bag)
    assert pointcloud2_to_xyzi(cloud).shape == (78238, 4) and (info['width'], info['height']) == (1920, 1200)
    assert info['k'][0] == pytest.approx(2109.75) and info['d'][0] == pytest.approx(-0.108145, abs=1e-6)
    np.testing.assert_allclose(buf.lookup('base_link', 'lidar'), make_T(t=(0, 0, 1.9)))
    np.testing.assert_allclose(buf.lookup('camera_optical', 'lidar'),
                               T_camera_lidar_from_pjlab_json(SAMPLE / 'top_center_lidar-to-center_camera-extrinsic.json'),
                               atol=1e-5)
    assert check.main([str(tmp_path / 'run' / 'bag'), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['aligned'] is True


def test_import_of_a_missing_folder_is_one_line_and_exit_2(tmp_path, capsys):
    from fmdrive.cli import main
    assert main(['import', 'kitti', str(tmp_path / 'nothing'), '-o', str(tmp_path / 'run')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'no such folder' in err and 'Traceback' not in err


# ---------------------------------------------------------------- report on an imported bag
def test_report_draws_an_imported_drive_without_ground_truth_with_the_bags_own_calibration(tmp_path):
    from fmdrive.bags.writer import BagWriter
    from fmdrive.eval.report import bag_geometry, make_report
    from fmdrive.importers.nuscenes import import_nuscenes
    from fmdrive.msgs import objects_to_msg, plan_to_msg
    from fmdrive.objects import Object3D, Plan
    _, T_ego_cam, K, _ = write_nuscenes(tmp_path / 'nusc')
    import_nuscenes(tmp_path / 'nusc', tmp_path / 'run', progress=False)
    (tmp_path / 'run' / 'ground_truth.json').unlink()                    # a drive nobody labelled
    geometry = bag_geometry(tmp_path / 'run' / 'bag')
    np.testing.assert_allclose(geometry.T_camera_base(), inv_T(T_ego_cam), atol=1e-9)   # not the YAML's camera
    np.testing.assert_allclose(geometry.camera.K, K)
    with BagReader(tmp_path / 'run' / 'bag') as bag:
        stamps = [stamp_to_ns(m.header.stamp) for _, _, m in bag.messages([TOPICS['points']])]
    ego = geometry.ego(stamps[1])
    assert np.hypot(ego.x, ego.y) == pytest.approx(5.0, abs=1e-6)            # from the bag's odom -> base_link
    with BagWriter(tmp_path / 'run' / 'output') as out:
        for s in stamps:
            out.write(TOPICS['lidar_objects'], objects_to_msg([Object3D((12.0, -2.0, 0.9), (4.5, 1.9, 1.6), 0.2, 'car')],
                                                              s, 'base_link', 'lidar'), s)
            out.write(TOPICS['plan'], plan_to_msg(Plan(s, np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]),
                                                       np.array([0.0, 1.0]), np.array([10.0, 10.0]))), s)
    png = make_report(tmp_path / 'run', n_frames=2)
    page = np.asarray(Image.open(png).convert('RGB'))
    assert page.shape[0] > 2 * 480 and len(np.unique(page.reshape(-1, 3), axis=0)) > 20
