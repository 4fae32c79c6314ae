"""Camera model, extrinsics, PCD reading and the real PJLab sample's calibration files."""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from fmdrive.calibration.camera_model import CalibrationError, CameraModel
from fmdrive.calibration.extrinsics import (Extrinsics, T_base_camera, T_base_lidar, load_extrinsics,
                                            save_extrinsics)
from fmdrive.calibration.pcd import PCDError, read_pcd, read_pcd_fields, write_pcd
from fmdrive.calibration import pjlab
from fmdrive.config import CAMERA_INFO_FILE, EXTRINSICS_FILE
from fmdrive.geometry import inv_T, make_T, quat_to_rot, transform_points

SAMPLE = Path(__file__).parent / 'data' / 'pjlab_lidar2camera'


def simple_camera(**overrides):
    args = dict(width=640, height=480, K=[[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]],
                D=[0.0] * 5)
    args.update(overrides)
    return CameraModel(**args)


# ---------------------------------------------------------------- projection
def test_point_behind_camera_is_not_projected():
    camera = simple_camera()
    points = np.array([[0.0, 0.0, -5.0], [0.0, 0.0, 0.0], [0.1, 0.0, 0.05], [0.0, 0.0, 0.1], [0, 0, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no divide-by-zero / invalid-value warnings either
        uv, depth, in_image = camera.project(points)
    assert in_image.tolist() == [False, False, False, False, True]
    assert np.isnan(uv[:4]).all()
    assert depth.tolist() == [-5.0, 0.0, 0.05, 0.1, 5.0]


def test_point_on_optical_axis_projects_to_principal_point():
    uv, _, in_image = simple_camera().project(np.array([[0.0, 0.0, 7.0]]))
    assert in_image[0]
    np.testing.assert_allclose(uv[0], [319.5, 239.5])


def test_pixel_bounds_follow_the_pixel_centre_convention():
    camera = simple_camera()
    # u = 500 * x / z + 319.5 lands at -0.51, -0.49 (left border -0.5) and 639.49, 639.5 (right)
    x_over_z = np.array([-320.01, -319.99, 319.99, 320.0]) / 500
    points = np.c_[x_over_z * 10, np.zeros(4), np.full(4, 10.0)]
    _, _, in_image = camera.project(points)
    assert in_image.tolist() == [False, True, True, False]


def test_plumb_bob_distortion_matches_the_opencv_formula():
    k1, k2, p1, p2, k3 = -0.108, 0.139, -0.0038, -0.0048, 0.01
    camera = simple_camera(D=[k1, k2, p1, p2, k3])
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-4, 4, (50, 2)), rng.uniform(5, 20, 50)]
    x, y = points[:, 0] / points[:, 2], points[:, 1] / points[:, 2]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    uv, _, _ = camera.project(points)
    np.testing.assert_allclose(uv, np.c_[500 * xd + 319.5, 500 * yd + 239.5], rtol=1e-12)


def test_rational_polynomial_without_denominator_terms_equals_plumb_bob():
    d = [-0.2, 0.05, 0.001, -0.002, 0.003]
    points = np.array([[1.0, -0.5, 4.0], [-2.0, 1.0, 6.0]])
    uv_bob, _, _ = simple_camera(D=d).project(points)
    uv_rat, _, _ = simple_camera(D=d + [0, 0, 0], distortion_model='rational_polynomial').project(points)
    np.testing.assert_allclose(uv_rat, uv_bob)
    uv_rat2, _, _ = simple_camera(D=d + [0.1, 0, 0], distortion_model='rational_polynomial').project(points)
    assert not np.allclose(uv_rat2, uv_bob)


def test_equidistant_model_maps_the_ray_angle_to_the_image_radius():
    k = [0.01, -0.002, 0.0, 0.0]
    camera = simple_camera(D=k, distortion_model='equidistant')
    theta = np.radians(50.0)
    uv, _, _ = camera.project(np.array([[np.tan(theta), 0.0, 1.0]]))
    theta_d = theta * (1 + k[0] * theta ** 2 + k[1] * theta ** 4)
    np.testing.assert_allclose(uv[0], [319.5 + 500 * theta_d, 239.5])


def test_far_off_axis_point_does_not_fold_back_into_the_image():
    # r_d = r (1 - 0.5 r^2) peaks at r = 0.82 and comes back to 0.2 at r = 1.3: near the centre
    camera = simple_camera(D=[-0.5, 0.0, 0.0, 0.0, 0.0])
    uv, _, in_image = camera.project(np.array([[1.3, 0.0, 1.0], [0.3, 0.0, 1.0]]))
    assert in_image.tolist() == [False, True]


def test_scaled_camera_projects_to_the_scaled_pixel():
    camera = simple_camera(D=[-0.1, 0.01, 0.0, 0.0, 0.0])
    half = camera.scaled(320, 240)
    points = np.array([[1.0, 0.5, 5.0], [-2.0, -1.0, 8.0]])
    uv, _, _ = camera.project(points)
    uv_half, _, _ = half.project(points)
    np.testing.assert_allclose(uv_half, (uv + 0.5) * 0.5 - 0.5)
    assert (half.width, half.height) == (320, 240)


# ---------------------------------------------------------------- validation and files
@pytest.mark.parametrize('fx', [0.0, -400.0, float('nan')])
def test_zero_negative_or_nan_focal_length_is_rejected(fx):
    with pytest.raises(CalibrationError, match='focal|NaN'):
        simple_camera(K=[[fx, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])


def test_zero_focal_length_is_rejected():
    with pytest.raises(CalibrationError, match='focal lengths must be positive'):
        simple_camera(K=[[0.0, 0, 319.5], [0, 0.0, 239.5], [0, 0, 1]])


@pytest.mark.parametrize('overrides, message', [
    ({'width': 0}, 'width must be a positive integer'),
    ({'height': -3}, 'height must be a positive integer'),
    ({'K': np.eye(4)}, 'K must be 3x3'),
    ({'distortion_model': 'fisheye62'}, "unknown distortion model 'fisheye62'"),
    ({'D': [0.1, 0.2, 0.3]}, 'plumb_bob takes 0 or 4 or 5 coefficients, got 3'),
    ({'D': [0.1] * 5, 'distortion_model': 'equidistant'}, 'equidistant takes 4 coefficients'),
])
def test_invalid_intrinsics_are_rejected_with_a_specific_message(overrides, message):
    with pytest.raises(CalibrationError, match=message):
        simple_camera(**overrides)


def test_camera_info_yaml_round_trip(tmp_path):
    camera = simple_camera(D=[-0.1, 0.02, 0.001, -0.002, 0.0], name='front', frame_id='cam_front')
    camera.to_yaml(tmp_path / 'cam.yaml', header='test camera')
    loaded = CameraModel.from_yaml(tmp_path / 'cam.yaml', frame_id='cam_front')
    assert (loaded.width, loaded.height, loaded.name, loaded.distortion_model) == (640, 480, 'front', 'plumb_bob')
    np.testing.assert_array_equal(loaded.K, camera.K)
    np.testing.assert_array_equal(loaded.D, camera.D)
    assert loaded.to_camera_info_fields() == camera.to_camera_info_fields()


def test_camera_info_fields_round_trip():
    camera = simple_camera(D=[0.1, -0.01, 0.0, 0.0])
    fields = camera.to_camera_info_fields()
    assert len(fields['k']) == 9 and len(fields['r']) == 9 and len(fields['p']) == 12
    assert fields['p'][:3] == [500.0, 0.0, 319.5] and fields['p'][3] == 0.0
    again = CameraModel.from_camera_info_fields(
        fields['width'], fields['height'], fields['k'], fields['d'], fields['distortion_model'],
        fields['frame_id'], r=fields['r'], p=fields['p'])
    assert again.to_camera_info_fields() == fields


def test_camera_info_with_empty_distortion_model_means_no_distortion():
    camera = CameraModel.from_camera_info_fields(640, 480, [500, 0, 320, 0, 500, 240, 0, 0, 1], [], '',
                                                 'camera_optical', r=[0.0] * 9, p=[0.0] * 12)
    assert camera.distortion_model == 'plumb_bob'
    np.testing.assert_array_equal(camera.rectification, np.eye(3))


def test_repo_camera_front_yaml_loads():
    camera = CameraModel.from_yaml(CAMERA_INFO_FILE)
    assert (camera.width, camera.height) == (640, 360)
    assert camera.K[0, 0] == 400.0 and camera.name == 'camera_front'


def test_missing_camera_info_file_names_the_file(tmp_path):
    with pytest.raises(CalibrationError, match='nope.yaml not found'):
        CameraModel.from_yaml(tmp_path / 'nope.yaml')


@pytest.mark.parametrize('text, message', [
    ('image_width: [640\n', 'not valid YAML'),
    ('just a string', 'YAML mapping'),
    ('image_width: 640\nimage_height: 480\n', "no 'camera_matrix'"),
    ('image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: [1, 2]}\n', 'K must be 3x3'),
])
def test_corrupt_camera_info_yaml_is_reported_with_the_file_name(tmp_path, text, message):
    path = tmp_path / 'broken_camera.yaml'
    path.write_text(text)
    with pytest.raises(CalibrationError, match=message) as info:
        CameraModel.from_yaml(path)
    assert 'broken_camera.yaml' in str(info.value)


# ---------------------------------------------------------------- extrinsics
def test_extrinsics_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    q = rng.normal(size=4)
    T_base_radar = make_T(quat_to_rot(q), [1.0, -2.0, 0.5])
    save_extrinsics(tmp_path / 'ext.yaml', 'base_link', {'radar': T_base_radar, 'lidar': make_T(t=[1, 0, 2])})
    loaded = load_extrinsics(tmp_path / 'ext.yaml')
    assert loaded.frame_id == 'base_link' and set(loaded.transforms) == {'radar', 'lidar'}
    assert dict(loaded.items()).keys() == {'radar', 'lidar'}   # a plain dict of the children too
    np.testing.assert_allclose(loaded['radar'], T_base_radar, atol=1e-8)
    np.testing.assert_allclose(loaded.transform('radar', 'lidar'), inv_T(T_base_radar) @ make_T(t=[1, 0, 2]),
                               atol=1e-8)


def test_repo_extrinsics_give_T_base_lidar_and_T_base_camera():
    np.testing.assert_allclose(T_base_lidar(), make_T(t=[1.0, 0.0, 1.9]))
    T = T_base_camera()
    # camera_optical z (forward) is base x, x (right) is base -y, y (down) is base -z
    np.testing.assert_allclose(T[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1.6, 0.0, 1.4])


def test_sim_camera_optical_axis_points_forward():
    camera = CameraModel.from_yaml(CAMERA_INFO_FILE)
    T_camera_base = inv_T(T_base_camera(EXTRINSICS_FILE))
    points_base = np.array([[10.0, 0.0, 1.4],    # 10 m ahead at camera height: image centre
                            [10.0, 2.0, 1.4],    # to the left: left half
                            [10.0, 0.0, 0.0],    # on the ground: lower half
                            [-10.0, 0.0, 1.4]])  # behind the car: not in the image
    uv, depth, in_image = camera.project(transform_points(T_camera_base, points_base))
    assert in_image.tolist() == [True, True, True, False]
    np.testing.assert_allclose(uv[0], [319.5, 179.5], atol=1.0)
    assert depth[0] == pytest.approx(8.4)
    assert uv[1, 0] < 319.5 - 50 and uv[2, 1] > 179.5 + 30


def test_missing_child_frame_is_reported():
    with pytest.raises(CalibrationError, match="no transform base_link -> 'radar'.*lidar, camera_optical"):
        load_extrinsics(EXTRINSICS_FILE)['radar']
    with pytest.raises(KeyError):                               # dict users can catch KeyError
        load_extrinsics(EXTRINSICS_FILE).transform('radar', 'lidar')


@pytest.mark.parametrize('rotation, message', [
    ('[0.0, 0.0, 0.0, 2.0]', 'not a unit quaternion'),
    ('[0.0, 0.0, 1.0]', '4 finite numbers'),
    ('[0.0, .nan, 0.0, 1.0]', '4 finite numbers'),
])
def test_bad_quaternion_is_rejected(tmp_path, rotation, message):
    path = tmp_path / 'ext.yaml'
    path.write_text('frame_id: base_link\ntransforms:\n  - child_frame_id: lidar\n'
                    f'    translation: [1.0, 0.0, 1.9]\n    rotation_xyzw: {rotation}\n')
    with pytest.raises(CalibrationError, match=message):
        load_extrinsics(path)


def test_missing_extrinsics_file_names_the_file(tmp_path):
    with pytest.raises(CalibrationError, match='missing_ext.yaml not found'):
        load_extrinsics(tmp_path / 'missing_ext.yaml')


def test_saving_a_non_rigid_transform_is_refused(tmp_path):
    with pytest.raises(CalibrationError, match='not a proper rotation'):
        save_extrinsics(tmp_path / 'e.yaml', 'base_link', {'lidar': np.diag([2.0, 1, 1, 1])})


# ---------------------------------------------------------------- PCD
def test_pcd_reader_reads_ascii_and_binary(tmp_path):
    rng = np.random.default_rng(2)
    points = rng.normal(size=(100, 4)).astype(np.float32)
    write_pcd(tmp_path / 'b.pcd', points, binary=True)
    write_pcd(tmp_path / 'a.pcd', points, binary=False)
    np.testing.assert_array_equal(read_pcd(tmp_path / 'b.pcd'), points)
    np.testing.assert_allclose(read_pcd(tmp_path / 'a.pcd'), points, rtol=1e-6)


def test_binary_pcd_with_mixed_field_types_and_a_ring_field(tmp_path):
    dt = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('_', 'u1', (4,)), ('intensity', '<u1'),
                   ('ring', '<u2')])
    table = np.zeros(3, dt)
    table['x'], table['y'], table['z'] = [1, 2, 3], [4, 5, 6], [7, 8, 9]
    table['intensity'], table['ring'] = [10, 20, 30], [0, 1, 63]
    header = ('VERSION 0.7\nFIELDS x y z _ intensity ring\nSIZE 4 4 4 1 1 2\nTYPE F F F U U U\n'
              'COUNT 1 1 1 4 1 1\nWIDTH 3\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA binary\n')
    (tmp_path / 'm.pcd').write_bytes(header.encode() + table.tobytes())
    np.testing.assert_array_equal(read_pcd(tmp_path / 'm.pcd'),
                                  [[1, 4, 7, 10], [2, 5, 8, 20], [3, 6, 9, 30]])
    assert read_pcd_fields(tmp_path / 'm.pcd')['ring'].tolist() == [0, 1, 63]


def test_ascii_pcd_without_intensity_gets_zero_intensity_and_drops_nan_rows(tmp_path):
    (tmp_path / 'x.pcd').write_text('VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n'
                                    'WIDTH 3\nHEIGHT 1\nPOINTS 3\nDATA ascii\n1 2 3\nnan nan nan\n4 5 6\n')
    np.testing.assert_array_equal(read_pcd(tmp_path / 'x.pcd'), [[1, 2, 3, 0], [4, 5, 6, 0]])


@pytest.mark.parametrize('body, message', [
    (b'DATA binary_compressed\n\x00\x01', 'binary_compressed is not supported'),
    (b'DATA binary\n' + b'\x00' * 20, 'truncated binary PCD'),
    (b'DATA ascii\n1 2 3 4\n5 6 7\n', 'the file is corrupt'),
    (b'DATA ascii\n1 2 3 4\n5 6 7 x\n', 'non-numeric'),
])
def test_broken_or_unsupported_pcd_is_reported(tmp_path, body, message):
    header = (b'VERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n'
              b'WIDTH 2\nHEIGHT 1\nPOINTS 2\n')
    (tmp_path / 'bad.pcd').write_bytes(header + body)
    with pytest.raises(PCDError, match=message):
        read_pcd(tmp_path / 'bad.pcd')


def test_a_png_is_not_read_as_a_pcd():
    with pytest.raises(PCDError, match='unexpected PCD header line'):
        read_pcd(SAMPLE / '0.png')


# ---------------------------------------------------------------- the real PJLab sample
@pytest.fixture(scope='module')
def sample_points():
    return read_pcd(SAMPLE / '0.pcd')


def test_real_sample_pcd_has_78238_finite_points(sample_points):
    assert sample_points.shape == (78238, 4) and sample_points.dtype == np.float32
    range_m = np.linalg.norm(sample_points[:, :3], axis=1)
    assert 2.4 < range_m.min() < 2.5 and 129 < range_m.max() < 131
    assert sample_points[:, 3].min() >= 0 and sample_points[:, 3].max() <= 255


def test_committed_sample_yaml_files_are_what_the_documented_command_writes(tmp_path):
    for name in (pjlab.INTRINSIC_JSON, pjlab.EXTRINSIC_JSON, pjlab.IMAGE):
        shutil.copy(SAMPLE / name, tmp_path / name)
    assert pjlab.main([str(tmp_path)]) == 0
    for name in ('camera_info.yaml', 'extrinsics.yaml'):
        regenerated = (tmp_path / name).read_text().replace(str(tmp_path), 'tests/data/pjlab_lidar2camera')
        assert regenerated == (SAMPLE / name).read_text(), name


def test_sample_extrinsics_yaml_is_the_inverse_of_the_json_T_camera_lidar():
    doc = json.loads((SAMPLE / pjlab.EXTRINSIC_JSON).read_text())
    T_json = np.array(doc['top_center_lidar-to-center_camera-extrinsic']['param']['sensor_calib']['data'])
    extrinsics = load_extrinsics(SAMPLE / 'extrinsics.yaml')
    assert isinstance(extrinsics, Extrinsics) and extrinsics.frame_id == 'lidar'
    np.testing.assert_allclose(extrinsics.transform('camera_optical', 'lidar'), T_json, atol=2e-6)
    # the camera sits 0.58 m ahead of and 0.35 m below the LiDAR
    np.testing.assert_allclose(extrinsics['camera_optical'][:3, 3], [0.579, -0.022, -0.345], atol=1e-3)


def test_sample_camera_info_uses_the_real_image_size_not_the_stale_json_height():
    camera = CameraModel.from_yaml(SAMPLE / 'camera_info.yaml')
    assert (camera.width, camera.height) == (1920, 1200)
    np.testing.assert_allclose(camera.D, [-0.108145, 0.138668, -0.00379757, -0.00484127, 0.0], atol=1e-8)


def test_real_sample_projects_about_12_percent_of_points_into_image(sample_points):
    camera = CameraModel.from_yaml(SAMPLE / 'camera_info.yaml')
    T_camera_lidar = load_extrinsics(SAMPLE / 'extrinsics.yaml').transform('camera_optical', 'lidar')
    uv, depth, in_image = camera.project(transform_points(T_camera_lidar, sample_points))
    # the data README counts 9,962 with 0 <= u < W; pixel-centre bounds move a couple of points
    assert abs(int(in_image.sum()) - 9962) <= 10
    assert in_image.mean() == pytest.approx(0.127, abs=0.001)
    assert (depth[in_image] > 2.0).all()
