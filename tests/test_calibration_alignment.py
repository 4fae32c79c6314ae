"""LiDAR-camera edge alignment and `calib-check`, on synthetic cases and on the real PJLab sample."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmdrive.calibration import check
from fmdrive.calibration.alignment import (alignment_score, depth_discontinuities, image_edge_map,
                                           perturbation_sweep, perturbations, render_overlay, scan_rings)
from fmdrive.calibration.camera_model import CalibrationError, CameraModel
from fmdrive.calibration.extrinsics import load_extrinsics
from fmdrive.calibration.pcd import read_pcd

SAMPLE = Path(__file__).parent / 'data' / 'pjlab_lidar2camera'
SAMPLE_ARGS = ['--pcd', str(SAMPLE / '0.pcd'), '--image', str(SAMPLE / '0.png'),
               '--camera-info', str(SAMPLE / 'camera_info.yaml'), '--extrinsics', str(SAMPLE / 'extrinsics.yaml')]


@pytest.fixture(scope='module')
def sample():
    points = read_pcd(SAMPLE / '0.pcd')
    image = np.asarray(Image.open(SAMPLE / '0.png').convert('RGB'))
    camera = CameraModel.from_yaml(SAMPLE / 'camera_info.yaml')
    T_camera_lidar = load_extrinsics(SAMPLE / 'extrinsics.yaml').transform('camera_optical', 'lidar')
    return points, image, camera, T_camera_lidar


@pytest.fixture(scope='module')
def sample_sweep(sample):
    return perturbation_sweep(*sample)


def ring_points(azimuth_deg, range_m, elevation_deg=0.0):
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    r = np.asarray(range_m, float)
    return np.c_[r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el) * np.ones_like(az)]


# ---------------------------------------------------------------- building blocks
def test_depth_discontinuity_marks_the_near_side_of_a_jump():
    az = np.arange(-50, 50) * 0.2
    range_m = np.where(az < 0, 10.0, 20.0)      # a near wall on the right, far wall on the left
    points = ring_points(az, range_m)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(points))      # unorganised cloud: order must not matter
    index, jump_m = depth_discontinuities(points[shuffled])
    assert len(index) == 1
    np.testing.assert_allclose(az[shuffled[index[0]]], -0.2, atol=1e-9)  # last point of the near wall
    assert jump_m[0] == pytest.approx(10.0)


def test_points_across_a_gap_without_returns_are_not_a_discontinuity():
    az = np.r_[np.arange(-10, 0, 0.2), np.arange(5, 10, 0.2)]   # 5 deg of sky between the walls
    index, _ = depth_discontinuities(ring_points(az, np.where(az < 0, 10.0, 20.0)))
    assert len(index) == 0


def test_rings_are_found_from_elevation_angles_or_taken_from_the_ring_field():
    az = np.arange(0, 10, 0.2)
    points = np.vstack([ring_points(az, 10.0, el) for el in (-2.0, -1.0, 0.5)])
    assert np.unique(scan_rings(points)).size == 3
    # with one ring per point given explicitly, nothing is adjacent and nothing is an edge
    range_m = np.tile(np.where(az < 5, 10.0, 20.0), 3)
    points = np.vstack([ring_points(az, range_m[:50], el) for el in (-2.0, -1.0, 0.5)])
    assert len(depth_discontinuities(points)[0]) == 3
    assert len(depth_discontinuities(points, rings=np.arange(len(points)))[0]) == 0


def test_edge_map_peaks_on_a_step_edge_and_decays_away_from_it():
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 30:] = 200
    edges = image_edge_map(image)
    row = edges[20]
    assert row.argmax() in (29, 30)
    assert row[25] < row[27] < row[29] and row[35] < row[33] < row[31]
    assert row[5] < 0.01 * row.max()            # 25 px away: gamma^25 of the edge


def test_perturbations_cover_plus_and_minus_about_each_axis():
    names = [name for name, _ in perturbations(rot_deg=(1, 2), trans_m=(0.1,))]
    assert len(names) == 18 and len(set(names)) == 18
    for axis in 'xyz':
        for label in ('+1deg', '-1deg', '+2deg', '-2deg'):
            assert f'rot_{axis}{label}' in names
        assert f'trans_{axis}+10cm' in names and f'trans_{axis}-10cm' in names
    delta = dict(perturbations())['rot_z+1deg']
    assert np.degrees(np.arctan2(delta[1, 0], delta[0, 0])) == pytest.approx(1.0)


def test_image_of_another_size_than_the_camera_info_is_rejected(sample):
    points, image, camera, T = sample
    with pytest.raises(CalibrationError, match='1920x1200 but the camera_info says 960x600'):
        alignment_score(points, image, camera.scaled(960, 600), T)


def test_render_overlay_draws_near_points_on_top():
    camera = CameraModel(64, 48, [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    image = np.full((48, 64, 3), 128, np.uint8)
    points = np.array([[0.0, 0.0, 50.0, 0], [0.0, 0.0, 3.0, 0], [0.0, 0.0, 20.0, 0]])  # same pixel
    overlay = render_overlay(points, image, camera, np.eye(4))
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert overlay[24, 32].tolist() == [255, 0, 0]       # the 3 m point, red
    assert overlay[0, 0].tolist() == [128, 128, 128]     # untouched elsewhere
    assert image[24, 32].tolist() == [128, 128, 128]     # input not modified


# ---------------------------------------------------------------- the real sample
def test_sample_has_64_scan_rings(sample):
    assert np.unique(scan_rings(sample[0])).size == 64


def test_true_extrinsic_scores_well_above_random_placement(sample, sample_sweep):
    assert sample_sweep[0]['perturbation'] == 'none'
    assert sample_sweep[0]['score'] > 1.8           # 1.0 = edge points placed at random
    assert alignment_score(*sample) == pytest.approx(sample_sweep[0]['score'])


def test_true_extrinsic_scores_higher_than_every_1_to_2_degree_or_10cm_perturbation(sample_sweep):
    """Every rotation and every lateral/vertical shift is beaten. A 10 cm shift along the optical
    axis moves the sample's depth edges by < 2 px, which one frame cannot resolve: the sweep
    must flag exactly those two as not observable rather than claim a verdict on them."""
    true_score = sample_sweep[0]['score']
    perturbed = sample_sweep[1:]
    assert len(perturbed) == 18
    unobservable = sorted(r['perturbation'] for r in perturbed if not r['observable'])
    assert unobservable == ['trans_z+10cm', 'trans_z-10cm']
    assert all(r['shift_px'] < 3 for r in perturbed if not r['observable'])
    for r in perturbed:
        if r['observable']:
            assert true_score > r['score'], r
    rotations = [r['score'] for r in perturbed if r['perturbation'].startswith('rot_')]
    assert true_score > 1.02 * max(rotations)


@pytest.mark.parametrize('misalignment', ['rot_y+2deg', 'rot_z+1deg', 'trans_x+10cm'])
def test_misaligned_extrinsic_is_reported_not_aligned(sample, misalignment):
    points, image, camera, T = sample
    T_wrong = dict(perturbations())[misalignment] @ T
    report = check.check_alignment(points, image, camera, T_wrong)
    assert report['aligned'] is False
    assert report['verdict'].startswith('NOT aligned')


def test_check_alignment_reports_aligned_and_writes_the_overlay(sample, tmp_path):
    points, image, camera, T = sample
    report = check.check_alignment(points, image, camera, T, out_png=tmp_path / 'overlay.png')
    assert report['aligned'] is True
    assert report['beaten'] == report['observable'] == 16
    assert report['margin_pct'] > 0 and report['points_in_image'] == 9964
    assert report['verdict'].startswith('aligned: the extrinsic beats all 16 observable perturbations')
    overlay = np.asarray(Image.open(tmp_path / 'overlay.png'))
    assert overlay.shape == image.shape
    assert (overlay != image).any(axis=2).mean() > 0.05   # the dots cover part of the image
    json.dumps(report)


# ---------------------------------------------------------------- the command
def test_calib_check_prints_one_json_object_and_exits_0(capsys, tmp_path):
    code = check.main(SAMPLE_ARGS + ['-o', str(tmp_path / 'o.png'), '--json'])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert out.count('\n') == 1 and report['aligned'] is True and (tmp_path / 'o.png').is_file()


def test_calib_check_text_output_names_the_verdict(capsys):
    assert check.main(SAMPLE_ARGS) == 0
    out = capsys.readouterr().out
    assert 'rot_x+1deg' in out and 'trans_z-10cm' in out and 'aligned: ' in out


def test_calib_check_with_a_wrong_extrinsic_exits_1(capsys, tmp_path):
    wrong = tmp_path / 'wrong.yaml'
    wrong.write_text('frame_id: lidar\ntransforms:\n  - child_frame_id: camera_optical\n'
                     '    translation: [0.579, -0.022, -0.345]\n'
                     '    rotation_xyzw: [-0.5, 0.5, -0.5, 0.5]\n')   # ~1 deg off in two axes
    args = SAMPLE_ARGS[:-1] + [str(wrong), '--json']
    assert check.main(args) == 1
    assert json.loads(capsys.readouterr().out)['aligned'] is False


@pytest.mark.parametrize('replace, message', [
    (('--pcd', 'missing.pcd'), 'PCD file missing.pcd not found'),
    (('--image', 'missing.png'), 'image file missing.png not found'),
    (('--camera-info', 'missing.yaml'), 'camera_info file missing.yaml not found'),
    (('--image', str(SAMPLE / '0.pcd')), 'cannot read image'),
    (('--camera-info', str(SAMPLE / '0.png')), 'camera_info file'),
])
def test_calib_check_bad_input_gives_one_line_error_and_exit_2(capsys, replace, message):
    args = list(SAMPLE_ARGS)
    args[args.index(replace[0]) + 1] = replace[1]
    assert check.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == '' and message in captured.err
    assert captured.err.count('\n') == 1 and 'Traceback' not in captured.err


def test_calib_check_unknown_frame_exits_2(capsys):
    assert check.main(SAMPLE_ARGS + ['--lidar-frame', 'velodyne']) == 2
    assert "no transform lidar -> 'velodyne'" in capsys.readouterr().err
