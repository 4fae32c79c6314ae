"""Specification of the evaluation metrics (fmdrive/eval/metrics.py), the `fmdrive eval` command
(fmdrive/eval/run_eval.py) and the picture report (fmdrive/eval/report.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmdrive.eval.metrics import (EvalError, GroundTruthFrame, average_precision, bev_iou,
                                  bev_iou_pairs, detection_metrics, id_switches, iou_matrix,
                                  latency_percentiles, planning_metrics)
from fmdrive.objects import EgoState, Object3D, Plan

S = 1_000_000_000
CAR = (4.5, 1.9, 1.6)


def car(x, y, yaw=0.0, score=1.0, id=0, label='car', size=CAR):
    return Object3D([x, y, size[2] / 2], size, yaw, label, score, id)


def frame(k, objects, points=None, ego=None, dt_s=0.1):
    ego = ego or EgoState(0.0, 0.0, 0.0)
    pts = np.full(len(objects), 100) if points is None else np.asarray(points)
    return GroundTruthFrame(int(k * dt_s * S), ego, objects, pts, np.ones(len(objects), bool))


# ------------------------------------------------------------------ BEV IoU
def test_identical_boxes_have_iou_one():
    assert bev_iou([3.0, -2.0, 4.5, 1.9, 0.7], [3.0, -2.0, 4.5, 1.9, 0.7]) == pytest.approx(1.0)


def test_disjoint_boxes_have_iou_zero():
    assert bev_iou([0, 0, 4, 2, 0], [10, 0, 4, 2, 0.3]) == 0.0


def test_square_rotated_90_degrees_has_iou_one():
    assert bev_iou([1, 1, 2, 2, 0], [1, 1, 2, 2, np.pi / 2]) == pytest.approx(1.0)


def test_box_shifted_by_half_its_length_has_iou_one_third():
    # overlap 1 x 2 = 2 of union 4 + 4 - 2 = 6
    assert bev_iou([0, 0, 2, 2, 0], [1, 0, 2, 2, 0]) == pytest.approx(1 / 3)


def test_square_rotated_45_degrees_overlaps_as_an_octagon():
    octagon = 8 * (np.sqrt(2) - 1)                    # regular octagon inside a 2 x 2 square
    expected = octagon / (8 - octagon)
    assert bev_iou([0, 0, 2, 2, 0], [0, 0, 2, 2, np.pi / 4]) == pytest.approx(expected)


def test_iou_accepts_object3d_and_ignores_height():
    a = car(5, 5, 0.2)
    b = Object3D([5, 5, 3.0], [4.5, 1.9, 0.5], 0.2)
    assert bev_iou(a, b) == pytest.approx(1.0)


def test_iou_matrix_equals_pairwise_iou_and_is_symmetric():
    rng = np.random.default_rng(4)
    a = rng.uniform([-3, -3, 1, 0.5, -3], [3, 3, 5, 3, 3], (12, 5))
    b = rng.uniform([-3, -3, 1, 0.5, -3], [3, 3, 5, 3, 3], (9, 5))
    m = iou_matrix(a, b)
    assert m.shape == (12, 9)
    for i in range(12):
        for j in range(9):
            assert m[i, j] == pytest.approx(bev_iou(a[i], b[j]), abs=1e-12)
    np.testing.assert_allclose(iou_matrix(b, a), m.T, atol=1e-12)
    assert np.all((m >= 0) & (m <= 1 + 1e-12))


def test_iou_pairs_agrees_with_monte_carlo_area_estimate():
    rng = np.random.default_rng(0)
    a = np.array([0.3, -0.2, 4.0, 2.0, 0.4])
    b = np.array([1.0, 0.5, 3.0, 2.5, -0.9])
    pts = rng.uniform(-4, 4, (200_000, 2))

    def inside(box):
        c, s = np.cos(box[4]), np.sin(box[4])
        d = pts - box[:2]
        lx, ly = d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c
        return (np.abs(lx) <= box[2] / 2) & (np.abs(ly) <= box[3] / 2)
    ia, ib = inside(a), inside(b)
    assert bev_iou_pairs(a[None], b[None])[0] == pytest.approx((ia & ib).sum() / (ia | ib).sum(),
                                                                abs=0.01)


def test_malformed_boxes_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match='x, y, length, width, yaw_rad'):
        bev_iou([0, 0, 1], [0, 0, 1])


# ------------------------------------------------------------------ detection AP
def _gt_run(n_frames=5):
    return [frame(k, [car(10, 0, id=1), car(20, 3.5, 0.1, id=2)]) for k in range(n_frames)]


def test_perfect_detections_give_ap_one():
    gt = _gt_run()
    dets = [[car(o.center[0], o.center[1], o.yaw_rad, 0.9) for o in f.objects] for f in gt]
    assert average_precision(dets, gt, 'car') == pytest.approx(1.0)


def test_no_detections_give_ap_zero():
    gt = _gt_run()
    assert average_precision([[] for _ in gt], gt, 'car') == 0.0


def test_high_scoring_false_positive_lowers_precision_and_ap():
    gt = [frame(0, [car(10, 0)])]
    dets = [[car(10, 0, score=0.5), car(40, -10, score=0.9)]]   # the FP ranks first
    assert average_precision(dets, gt, 'car') == pytest.approx(0.5)
    low_fp = [[car(10, 0, score=0.9), car(40, -10, score=0.5)]]
    assert average_precision(low_fp, gt, 'car') == pytest.approx(1.0)


def test_duplicate_detection_of_one_object_is_a_false_positive():
    gt = [frame(0, [car(10, 0)]), frame(1, [car(10, 0)])]
    dets = [[car(10, 0, score=0.9), car(10.2, 0, score=0.95)], [car(10, 0, score=0.3)]]
    m = detection_metrics(dets, gt, classes=('car',))
    assert m['recall']['car'] == 1.0
    assert m['ap']['car'] < 1.0


def test_precision_at_the_operating_point_counts_false_positives_and_not_dont_cares():
    gt = [frame(0, [car(10, 0), car(30, 5)], points=[100, 2])]              # the second: don't care
    dets = [[car(10, 0), car(30, 5), car(40, -10), car(10, 0, label='pedestrian')]]
    m = detection_metrics(dets, gt, classes=('car', 'pedestrian', 'cyclist'))
    assert m['precision']['car'] == 0.5, 'one TP, one FP; the don\'t-care match is not scored'
    assert m['precision']['pedestrian'] == 0.0, 'a car called a pedestrian is a pedestrian FP'
    assert np.isnan(m['precision']['cyclist']), 'no cyclist detection: undefined'


def test_box_below_iou_threshold_is_not_a_match():
    gt = [frame(0, [car(10, 0)])]
    assert average_precision([[car(12.5, 0)]], gt, 'car', iou_threshold=0.5) == 0.0
    assert average_precision([[car(12.5, 0)]], gt, 'car', iou_threshold=0.2) == 1.0


def test_dont_care_gt_counts_neither_as_missed_nor_as_false_positive():
    # second car has 2 LiDAR points: "don't care"
    gt = [frame(0, [car(10, 0), car(30, 5)], points=[100, 2])]
    assert average_precision([[car(10, 0)]], gt, 'car') == 1.0              # not missed
    assert average_precision([[car(10, 0, score=0.5), car(30, 5, score=0.9)]], gt,
                             'car') == 1.0                                   # not a FP
    assert detection_metrics([[car(10, 0)]], gt, classes=('car',))['num_gt']['car'] == 1


def test_objects_beyond_the_range_are_dont_care():
    gt = [frame(0, [car(10, 0), car(70, 0)])]
    m = detection_metrics([[car(10, 0), car(70, 0, score=0.99)]], gt, classes=('car',),
                          range_m=50.0)
    assert m['num_gt']['car'] == 1 and m['ap']['car'] == 1.0


def test_detection_with_the_wrong_class_does_not_count():
    gt = [frame(0, [car(10, 0)])]
    dets = [[car(10, 0, label='pedestrian')]]
    m = detection_metrics(dets, gt, classes=('car', 'pedestrian'))
    assert m['ap']['car'] == 0.0
    assert np.isnan(m['ap']['pedestrian'])                    # no pedestrian GT: undefined


def test_recall_is_reported_per_class():
    gt = [frame(0, [car(10, 0), car(20, 0), car(8, -3, label='pedestrian', size=(0.6, 0.6, 1.8))])]
    m = detection_metrics([[car(10, 0)]], gt, classes=('car', 'pedestrian'))
    assert m['recall'] == {'car': 0.5, 'pedestrian': 0.0}


def test_frame_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match='one \\(possibly empty\\) list per frame'):
        average_precision([[]], _gt_run(2), 'car')


# ------------------------------------------------------------------ tracking
def test_stable_track_has_no_id_switch():
    gt = [frame(k, [car(10 + k, 0, id=1)]) for k in range(10)]
    tracks = [[car(10 + k, 0.1, id=7)] for k in range(10)]
    assert id_switches(tracks, gt)['id_switches'] == 0


def test_id_switch_is_counted_once_when_the_track_id_changes():
    gt = [frame(k, [car(10 + k, 0, id=1), car(10 + k, 7, id=2)]) for k in range(10)]
    tracks = [[car(10 + k, 0.1, id=5 if k < 5 else 9), car(10 + k, 7, id=3)] for k in range(10)]
    r = id_switches(tracks, gt)
    assert r['id_switches'] == 1
    assert r['tracks'] == 3


def test_track_lost_and_found_again_under_a_new_id_is_a_switch():
    gt = [frame(k, [car(10, 0, id=1)]) for k in range(9)]
    tracks = [[car(10, 0, id=4)]] * 3 + [[]] * 3 + [[car(10, 0, id=8)]] * 3
    assert id_switches(tracks, gt)['id_switches'] == 1


def test_tracks_far_from_every_gt_object_are_not_matched():
    gt = [frame(k, [car(10, 0, id=1)]) for k in range(4)]
    tracks = [[car(30, 0, id=k + 1)] for k in range(4)]
    r = id_switches(tracks, gt)
    assert r['id_switches'] == 0 and r['matches'] == 0


# ------------------------------------------------------------------ planning
def _expert_drive(n=60, speed=10.0, yaw=0.3, objects=lambda k: []):
    c, s = np.cos(yaw), np.sin(yaw)
    return [frame(k, objects(k), ego=EgoState(speed * 0.1 * k * c, speed * 0.1 * k * s, yaw,
                                              speed)) for k in range(n)]


def _plan_from_expert(gt, k, offset=(0.0, 0.0)):
    t = np.arange(0.5, 3.01, 0.5)
    idx = k + np.rint(t * 10).astype(int)
    poses = np.array([[gt[i].ego.x + offset[0], gt[i].ego.y + offset[1], gt[i].ego.yaw_rad]
                      for i in idx])
    return Plan(gt[k].stamp_ns, poses, t, np.full(len(t), 10.0))


def test_plan_equal_to_the_expert_has_zero_l2():
    gt = _expert_drive()
    m = planning_metrics([_plan_from_expert(gt, k) for k in range(0, 30, 5)], gt)
    assert m['l2_1s'] == pytest.approx(0.0, abs=1e-9)
    assert m['l2_2s'] == pytest.approx(0.0, abs=1e-9)
    assert m['l2_3s'] == pytest.approx(0.0, abs=1e-9)
    assert m['plans'] == 6 and m['collision_rate'] == 0.0


def test_plan_one_metre_off_the_expert_has_l2_one():
    gt = _expert_drive()
    m = planning_metrics([_plan_from_expert(gt, 10, offset=(0.6, 0.8))], gt)
    assert m['l2_1s'] == pytest.approx(1.0) and m['l2_3s'] == pytest.approx(1.0)


def test_expert_position_is_interpolated_between_frames():
    gt = _expert_drive()
    plan = _plan_from_expert(gt, 10)
    plan.stamp_ns += S // 20                        # 50 ms after a GT frame: expert 0.5 m further
    assert planning_metrics([plan], gt)['l2_1s'] == pytest.approx(0.5, abs=1e-6)


def test_plan_past_the_end_of_the_drive_is_left_out_of_l2():
    gt = _expert_drive(n=35)
    m = planning_metrics([_plan_from_expert(gt, 0), Plan(gt[-5].stamp_ns, np.zeros((6, 3)),
                                                         np.arange(0.5, 3.01, 0.5), np.zeros(6))],
                         gt)
    assert m['l2_3s'] == pytest.approx(0.0, abs=1e-9)   # only the first plan reaches 3 s
    assert m['l2_1s'] == pytest.approx(0.0, abs=1e-9)   # the other ends 0.4 s after its stamp


def test_collision_is_detected_when_the_plan_drives_through_a_gt_box():
    # a car stopped 20 m down the road: the expert drive (at 10 m/s) runs into it after ~1.5 s
    yaw = 0.3
    stopped = car(20 * np.cos(yaw), 20 * np.sin(yaw), yaw, id=3)
    gt = _expert_drive(objects=lambda k: [stopped])
    m = planning_metrics([_plan_from_expert(gt, 0)], gt)
    assert m['collision_rate'] == 1.0 and m['min_distance_m'] == 0.0


def test_plan_passing_beside_a_box_does_not_collide_and_reports_the_gap():
    # the same stopped car, 5 m to the side of the drive: gap = 5 - 1.9/2 - 1.9/2 = 3.1 m
    yaw = 0.3
    side = np.array([-np.sin(yaw), np.cos(yaw)]) * 5.0
    beside = car(20 * np.cos(yaw) + side[0], 20 * np.sin(yaw) + side[1], yaw, id=3)
    gt = _expert_drive(objects=lambda k: [beside])
    m = planning_metrics([_plan_from_expert(gt, 0)], gt)
    assert m['collision_rate'] == 0.0
    assert m['min_distance_m'] == pytest.approx(3.1, abs=1e-6)


def test_collision_uses_where_the_object_really_is_at_that_time():
    # a car crossing the road: at t = 1.5 s it is 15 m ahead in the ego lane, when the ego is 15 m
    # along too; a plan that stops at 5 m does not collide, the expert drive does
    def crossing(k):
        return [car(15.0, -15.0 + 10.0 * 0.1 * k, np.pi / 2, id=4)]
    gt = _expert_drive(yaw=0.0, objects=crossing)
    going = _plan_from_expert(gt, 0)
    t = np.arange(0.5, 3.01, 0.5)
    stopping = Plan(gt[0].stamp_ns, np.c_[np.minimum(10 * t, 5.0), np.zeros(6), np.zeros(6)], t,
                    np.zeros(6))
    assert planning_metrics([going], gt)['collision_rate'] == 1.0
    assert planning_metrics([stopping], gt)['collision_rate'] == 0.0


# ------------------------------------------------------------------ latency
def test_latency_percentiles_ignore_nan_samples():
    p = latency_percentiles([10, 20, 30, float('nan'), 40, 50])
    assert p['p50_ms'] == 30 and p['count'] == 5 and p['max_ms'] == 50
    assert np.isnan(latency_percentiles([])['p99_ms'])


# ------------------------------------------------------------------ run dirs (bags on disk)
def _write_run_dir(run_dir: Path, n_frames=30, drop_plan_at=(7,), with_diagnostics=True,
                   latency_json=None, lidar_source='lidar_classical'):
    """A small run: ego at 10 m/s along yaw 0.2, one car ahead at the same speed; outputs are
    perfect LiDAR detections (base_link), one track, expert plans, planner diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    from fmdrive.bags.writer import BagWriter
    from fmdrive.config import TOPICS
    from fmdrive.msgs import (ns_to_stamp, objects_to_msg, plan_to_msg, rgb_to_image,
                              xyzi_to_pointcloud2)

    yaw, speed, t0 = 0.2, 10.0, 5 * S
    c, s = np.cos(yaw), np.sin(yaw)
    frames = []
    for k in range(n_frames + 30):
        d = speed * 0.1 * k
        ego = {'x': d * c, 'y': d * s, 'yaw_rad': yaw, 'speed_mps': speed, 'yaw_rate_rps': 0.0}
        lead = {'id': 11, 'label': 'car', 'score': 1.0, 'center': [(d + 15) * c, (d + 15) * s, 0.8],
                'size': list(CAR), 'yaw_rad': yaw, 'velocity': [speed * c, speed * s, 0.0],
                'num_lidar_points': 120, 'in_camera': True}
        frames.append({'stamp_ns': t0 + k * S // 10, 'ego': ego, 'objects': [lead]})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / 'ground_truth.json').write_text(json.dumps(
        {'scenario': {'kind': 'car_following', 'seed': 1}, 'frame_rate_hz': 10, 'frames': frames}))
    rng = np.random.default_rng(0)
    with BagWriter(run_dir / 'bag') as bag:
        for f in frames[:n_frames]:
            pts = np.c_[rng.uniform(2, 40, (500, 2)) * [1, 0.3], np.full(500, -1.9), np.ones(500)]
            bag.write(TOPICS['points'], xyzi_to_pointcloud2(pts.astype(np.float32), f['stamp_ns'],
                                                            'lidar'), f['stamp_ns'])
            img = np.full((360, 640, 3), 90, np.uint8)
            bag.write(TOPICS['image'], rgb_to_image(img, f['stamp_ns'], 'camera_optical'),
                      f['stamp_ns'])
    with BagWriter(run_dir / 'output') as bag:
        for k, f in enumerate(frames[:n_frames]):
            stamp, recv = f['stamp_ns'], f['stamp_ns'] + 40_000_000
            lead_base = car(15.0, 0.0, 0.0, score=0.9)
            bag.write(TOPICS['lidar_objects'],
                      objects_to_msg([lead_base], stamp, 'base_link', lidar_source), recv)
            track = car(15.0, 0.0, 0.0, score=0.9, id=3 if k < 15 else 4)   # one id switch
            bag.write(TOPICS['objects'], objects_to_msg([track], stamp, 'base_link', 'fusion'),
                      recv)
            if k % 2 == 0:   # the camera encoder at half the image rate, 2D boxes in pixels
                box = Object3D(np.zeros(3), np.zeros(3), 0.0, 'car', 0.8, box2d=np.array([200, 100, 300, 200.0]))
                bag.write(TOPICS['camera_objects'], objects_to_msg([box], stamp, 'camera_optical', 'camera'), recv)
            if k in drop_plan_at:
                continue
            t = np.arange(0.5, 3.01, 0.5)
            idx = k + np.rint(t * 10).astype(int)
            poses = np.array([[frames[i]['ego']['x'], frames[i]['ego']['y'], yaw] for i in idx])
            bag.write(TOPICS['plan'], plan_to_msg(Plan(stamp, poses, t, np.full(6, speed))), recv)
            if with_diagnostics:
                st = DiagnosticStatus(name='fmdrive/planner', values=[
                    KeyValue(key='pipeline_latency_ms', value=f'{40.0 + k:.2f}')])
                arr = DiagnosticArray(status=[st])
                arr.header.stamp = ns_to_stamp(recv)
                bag.write(TOPICS['diagnostics'], arr, recv)
    if latency_json is not None:
        (run_dir / 'latency.json').write_text(json.dumps(latency_json))
    return run_dir


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    return _write_run_dir(tmp_path_factory.mktemp('run') / 'car_following')


def test_eval_run_scores_a_run_dir_from_its_bags(run_dir):
    from fmdrive.eval.metrics import eval_run
    m = eval_run(run_dir, progress=False)
    assert m['detection']['car_bev_ap50'] == pytest.approx(1.0)
    assert m['detection']['recall']['car'] == pytest.approx(1.0)
    assert m['detection']['recall']['pedestrian'] is None          # no pedestrians: n/a
    # frame 7 got no plan: it is dropped, and no metric scores it (one stated policy)
    assert m['detection']['frames'] == 29 and m['detection']['source'] == 'lidar'
    assert m['tracking'] == {'id_switches': 1, 'tracks': 2, 'matches': 29, 'frames': 29}
    assert m['planning']['l2_3s'] == pytest.approx(0.0, abs=1e-4)   # float32 waypoints
    assert m['planning']['collision_rate'] == 0.0 and m['planning']['plans'] == 29
    assert m['dropped_sensor_frames'] == 1 and m['sensor_frames'] == 30
    assert m['frames_scored'] == 29 and 'excluded' in m['dropped_frames_policy']
    assert m['latency']['source'] == 'diagnostics'
    assert m['latency']['e2e_p50_ms'] == pytest.approx(np.percentile(
        [40.0 + k for k in range(30) if k != 7], 50))
    json.dumps(m, allow_nan=False)                                  # valid JSON, no NaN


def test_a_learned_lidar_run_is_scored_next_to_the_classical_path_on_the_same_frames(run_dir, tmp_path):
    from fmdrive.eval.metrics import eval_run
    assert 'lidar_classical' not in eval_run(run_dir, progress=False)['detection']   # it ran classical
    run = _write_run_dir(tmp_path / 'learned', n_frames=12, lidar_source='lidar_learned')
    det = eval_run(run, progress=False)['detection']
    assert det['lidar_encoder'] == 'lidar_learned' and det['car_bev_ap50'] == pytest.approx(1.0)
    # the bag's clouds are bare ground: the classical detector, run on the same frames, finds no car
    assert det['lidar_classical']['car_bev_ap50'] == pytest.approx(0.0)
    assert det['lidar_classical']['recall']['car'] == pytest.approx(0.0)


def test_latency_json_wins_over_diagnostics(tmp_path):
    run = _write_run_dir(tmp_path / 'r', n_frames=10, latency_json={'e2e_p50_ms': 12.0,
                                                                     'e2e_p99_ms': 34.0})
    from fmdrive.eval.metrics import eval_run
    lat = eval_run(run, progress=False)['latency']
    assert (lat['e2e_p50_ms'], lat['e2e_p99_ms'], lat['source']) == (12.0, 34.0, 'latency.json')


def test_dropped_frames_count_the_same_way_for_detection_and_planning(tmp_path):
    from fmdrive.eval.metrics import eval_run
    run = _write_run_dir(tmp_path / 'r', n_frames=20, drop_plan_at=(3, 4, 5, 6, 7))
    m = eval_run(run, progress=False)
    assert m['dropped_sensor_frames'] == 5 and m['frames_scored'] == 15
    assert m['detection']['frames'] == m['tracking']['frames'] == m['planning']['plans'] == 15
    # the detections of unplanned frames were perfect; excluding them leaves AP 1, and recall
    # counts only the GT of the scored frames
    assert m['detection']['car_bev_ap50'] == pytest.approx(1.0)
    assert m['detection']['num_gt']['car'] == 15


def test_latency_json_with_nulls_gives_null_latency_not_a_crash(tmp_path, capsys):
    run = _write_run_dir(tmp_path / 'r', n_frames=10, latency_json={
        'e2e_p50_ms': None, 'e2e_p99_ms': None, 'dds_lost_inputs': 0})
    from fmdrive.eval.run_eval import main
    assert main([str(run), '--json', '--no-progress', '--no-save']) == 0
    lat = json.loads(capsys.readouterr().out)['latency']
    assert (lat['e2e_p50_ms'], lat['e2e_p99_ms'], lat['dds_lost_inputs']) == (None, None, 0)
    (run / 'latency.json').write_text(json.dumps({'e2e_p50_ms': 'fast', 'e2e_p99_ms': 1}))
    assert main([str(run), '--json', '--no-progress', '--no-save']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'e2e_p50_ms must be a number' in err[0]


def test_run_without_latency_sources_reports_null_latency(tmp_path):
    run = _write_run_dir(tmp_path / 'r', n_frames=10, with_diagnostics=False)
    from fmdrive.eval.metrics import eval_run
    assert eval_run(run, progress=False)['latency']['e2e_p99_ms'] is None


def test_eval_command_prints_exactly_one_json_object(run_dir, capsys, tmp_path):
    from fmdrive.eval.run_eval import main
    out_file = tmp_path / 'metrics.json'
    assert main([str(run_dir), '--json', '--no-progress', '-o', str(out_file)]) == 0
    printed = capsys.readouterr().out
    obj = json.loads(printed)
    assert obj['detection']['car_bev_ap50'] == pytest.approx(1.0)
    assert json.loads(out_file.read_text()) == obj
    assert (run_dir / 'metrics.json').is_file()


def test_eval_command_prints_a_table_without_json(run_dir, capsys):
    from fmdrive.eval.run_eval import main
    assert main([str(run_dir), '--no-progress', '--no-save']) == 0
    table = capsys.readouterr().out
    assert 'detection.car_bev_ap50' in table and 'planning.l2_3s' in table


def test_eval_command_aggregates_several_runs(run_dir, tmp_path, capsys):
    other = _write_run_dir(tmp_path / 'other', n_frames=20, drop_plan_at=(3, 4))
    from fmdrive.eval.run_eval import main
    assert main([str(run_dir), str(other), '--json', '--no-progress', '--no-save']) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj['run_count'] == 2 and len(obj['runs']) == 2
    assert obj['dropped_sensor_frames'] == 3                       # counts are summed
    assert obj['detection']['car_bev_ap50'] == pytest.approx(1.0)  # rates are averaged
    assert obj['planning']['plans'] == 29 + 18


def test_missing_run_dir_is_a_one_line_error_with_exit_code_2(tmp_path, capsys):
    from fmdrive.eval.run_eval import main
    assert main([str(tmp_path / 'nope'), '--json']) == 2
    err = capsys.readouterr().err.strip()
    assert 'run dir not found' in err and len(err.splitlines()) == 1


def test_run_dir_without_output_bag_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'ground_truth.json').write_text('{"frames": []}')
    (tmp_path / 'run' / 'bag').mkdir()
    from fmdrive.eval.run_eval import main
    assert main([str(tmp_path / 'run')]) == 2
    assert 'missing output' in capsys.readouterr().err


def test_corrupt_ground_truth_is_reported_not_a_traceback(tmp_path):
    from fmdrive.eval.metrics import load_ground_truth
    (tmp_path / 'ground_truth.json').write_text('{"frames": [{"ego": {}}]}')
    with pytest.raises(EvalError, match='not a valid ground truth file'):
        load_ground_truth(tmp_path / 'ground_truth.json')


# ------------------------------------------------------------------ picture report
def test_choose_frames_picks_the_busiest_frames_apart_in_time():
    from fmdrive.eval.report import choose_frames
    gt = [frame(k, [car(10, 0)] * (5 if k in (12, 13, 40) else 1)) for k in range(60)]
    stamps = choose_frames(gt, n=2, min_gap_s=2.0)
    assert stamps == [gt[12].stamp_ns, gt[40].stamp_ns] or stamps == [gt[13].stamp_ns,
                                                                       gt[40].stamp_ns]


def test_choose_frames_shows_each_plan_source_the_run_had():
    """A run that fell back in a quiet stretch: the fallback frame is drawn (its busiest one), the
    other frames are the busiest LLM ones."""
    from fmdrive.eval.report import choose_frames
    gt = [frame(k, [car(10, 0)] * (5 if k in (12, 13, 40) else 1)) for k in range(60)]
    labels = ['fallback' if 25 <= k <= 27 else 'llm' for k in range(60)]
    labels[26] = None                                   # no plan for that frame
    stamps = choose_frames(gt, n=3, min_gap_s=1.0, labels=labels)
    assert len(stamps) == 3 and gt[40].stamp_ns in stamps
    assert len({gt[25].stamp_ns, gt[27].stamp_ns} & set(stamps)) == 1
    assert len({gt[12].stamp_ns, gt[13].stamp_ns} & set(stamps)) == 1
    # only one source: as without labels
    assert choose_frames(gt, n=2, min_gap_s=2.0, labels=['llm'] * 60) == choose_frames(gt, n=2, min_gap_s=2.0)


def test_make_report_writes_a_png_with_one_row_per_frame(run_dir, tmp_path):
    from PIL import Image

    from fmdrive.eval.report import make_report
    png = make_report(run_dir, tmp_path / 'report.png', n_frames=2)
    img = Image.open(png)
    assert img.width > 1000 and img.height > 2 * 480
    arr = np.asarray(img.convert('RGB'))
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50          # not a blank page


def test_the_report_draws_the_camera_encoders_2d_boxes_on_the_overlay(run_dir):
    from fmdrive.eval.metrics import read_outputs
    from fmdrive.eval.report import ROW_HEIGHT_PX, ReportFrame, render_frame
    outputs = read_outputs(run_dir / 'output')
    assert len(outputs.camera_objects) == 15
    stamp, boxes = sorted(outputs.camera_objects.items())[0]
    assert boxes[0].box2d.tolist() == [200, 100, 300, 200]
    gt = GroundTruthFrame(stamp_ns=stamp, ego=EgoState(), objects=[])
    image = np.full((360, 640, 3), 90, np.uint8)
    K = np.array([[400.0, 0, 319.5], [0, 400.0, 179.5], [0, 0, 1]])
    T = np.eye(4)
    plain = np.asarray(render_frame(ReportFrame(stamp, 0.0, gt, image_rgb=image), K, T))
    drawn = np.asarray(render_frame(ReportFrame(stamp, 0.0, gt, image_rgb=image, camera_detections=boxes), K, T))
    rows, cols = np.nonzero(np.any(plain[22:] != drawn[22:], axis=2))     # below the caption
    scale = ROW_HEIGHT_PX / 360
    assert len(rows)
    assert 200 * scale - 2 <= cols.min() and cols.max() <= 300 * scale + 90     # + its label
    assert 100 * scale - 2 <= rows.min() and rows.max() <= 200 * scale + 20


def test_make_report_rejects_a_stamp_that_is_not_in_the_run(run_dir, tmp_path):
    from fmdrive.eval.report import make_report
    with pytest.raises(EvalError, match='not in'):
        make_report(run_dir, tmp_path / 'r.png', frame_stamps=[1])


def test_paired_ap_difference_resamples_whole_scenes_for_both_detectors():
    from fmdrive.eval.metrics import GroundTruthFrame, paired_ap_difference
    from fmdrive.objects import EgoState, Object3D
    frames, good, worse, scenes = [], [], [], []
    for s in range(6):
        for k in range(4):
            car = Object3D(np.array([10.0 + s, 2.0 * k, 0.8]), np.array([4.5, 1.9, 1.6]), 0.0, 'car')
            frames.append(GroundTruthFrame(0, EgoState(0, 0.0, 0.0, 0.0, 0.0), [car], num_lidar_points=[100]))
            hit = Object3D(car.center.copy(), car.size.copy(), 0.0, 'car', score=0.9)
            good.append([hit])
            worse.append([] if s == 0 else [hit])          # scene 0's cars lost
            scenes.append(f'scene_{s}')
    same = paired_ap_difference(good, good, frames, scenes, 'car', resamples=200)
    assert same['difference'] == 0.0 and same['ci95'] == [0.0, 0.0] and same['groups'] == 6
    gap = paired_ap_difference(good, worse, frames, scenes, 'car', resamples=500)
    assert gap['difference'] == pytest.approx(-1 / 6)
    lo, hi = gap['ci95']
    assert lo < -1 / 6 < hi <= 0.0 and lo >= -0.7
    assert paired_ap_difference(good, good, frames, scenes, 'pedestrian')['difference'] is None
