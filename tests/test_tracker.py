"""Specification of the fusion tracking core: odometry buffer, multi-object tracker, FusionCore."""
import math

import numpy as np
import pytest

from fmdrive.fusion.core import FusionCore, FusionParams
from fmdrive.fusion.odometry import OdometryBuffer
from fmdrive.fusion.tracker import MultiObjectTracker, TrackerParams
from fmdrive.objects import EgoState, Lane, Object3D

T0_NS = 1_700_000_000_000_000_000   # an epoch-like stamp, as in real bags
DT_NS = 100_000_000                 # 10 Hz LiDAR


def stamp(k: int) -> int:
    return T0_NS + k * DT_NS


def car(x, y, yaw_rad=0.0, label='car', score=0.8, size=(4.5, 1.9, 1.5)):
    return Object3D(center=[x, y, 0.8], size=size, yaw_rad=yaw_rad, label=label, score=score)


def walker(x, y, label='pedestrian'):
    return Object3D(center=[x, y, 0.9], size=[0.6, 0.6, 1.7], label=label, score=0.7)


# ---------------------------------------------------------------- tracker
def test_car_at_constant_velocity_keeps_one_id_and_velocity_within_0_3_mps():
    rng = np.random.default_rng(0)
    tracker = MultiObjectTracker(TrackerParams())
    velocity = np.array([8.0, 1.0])
    ids = set()
    for k in range(21):
        xy = np.array([10.0, 2.0]) + velocity * k * 0.1 + rng.normal(0, 0.1, 2)
        det = car(*xy, yaw_rad=math.atan2(1, 8) + rng.normal(0, 0.05),
                  size=np.array([4.5, 1.9, 1.5]) + rng.normal(0, 0.1, 3))
        out = tracker.update([det], stamp(k))
        ids |= {o.id for o in out}
    assert ids == {1}
    assert len(out) == 1
    assert np.linalg.norm(out[0].velocity[:2] - velocity) < 0.3
    assert out[0].velocity[2] == 0.0


@pytest.mark.parametrize('kind', ['perpendicular', 'head_on'])
def test_two_crossing_objects_keep_their_ids(kind):
    rng = np.random.default_rng(1)
    if kind == 'perpendicular':   # paths cross; B reaches the crossing 0.3 s after A (1.5 m apart)
        start = {'A': np.array([-10.0, 0.0]), 'B': np.array([0.0, -11.5])}
        vel = {'A': np.array([5.0, 0.0]), 'B': np.array([0.0, 5.0])}
        make = car
    else:                         # two pedestrians walking towards each other, 1 m apart sideways
        start = {'A': np.array([0.0, 0.0]), 'B': np.array([9.0, 1.0])}
        vel = {'A': np.array([1.5, 0.0]), 'B': np.array([-1.5, 0.0])}
        make = walker
    tracker = MultiObjectTracker(TrackerParams())
    id_of = {}
    for k in range(40):
        truth = {n: start[n] + vel[n] * k * 0.1 for n in 'AB'}
        dets = [make(*(truth[n] + rng.normal(0, 0.05, 2))) for n in 'AB']
        for o in tracker.update(dets, stamp(k)):
            name = min('AB', key=lambda n: np.linalg.norm(o.center[:2] - truth[n]))
            assert np.linalg.norm(o.center[:2] - truth[name]) < 0.5
            id_of.setdefault(name, o.id)
            assert o.id == id_of[name], f'object {name} changed id at frame {k}'
    assert len(set(id_of.values())) == 2


def test_track_is_hidden_after_max_age_and_forgotten_after_the_reid_window():
    tracker = MultiObjectTracker(TrackerParams(max_age_s=0.5, reid_window_s=2.0))
    for k in range(5):
        out = tracker.update([car(20.0, 0.0)], stamp(k))
    assert [o.id for o in out] == [1]
    for k in range(5, 10):          # last hit at frame 4: still published up to 0.5 s later
        assert [o.id for o in tracker.update([], stamp(k))] == [1]
    assert tracker.update([], stamp(10)) == []
    assert tracker.num_tracks == 0
    for k in range(11, 31):         # 0.5 s + 2.0 s after the last hit the track is gone for good
        assert tracker.update([], stamp(k)) == []
    tracker.update([car(20.0, 0.0)], stamp(31))
    assert [o.id for o in tracker.update([car(20.0, 0.0)], stamp(32))] == [2]


def test_object_missed_longer_than_max_age_takes_its_id_back_where_predicted():
    tracker = MultiObjectTracker(TrackerParams(max_age_s=0.5, reid_window_s=2.0))
    for k in range(20):             # a car at 5 m/s, then 1.2 s unseen (occluded), then back
        x = 10.0 + 0.5 * k
        out = tracker.update([] if 8 <= k < 20 else [car(x, 0.0)], stamp(k))
        assert [o.id for o in out] == ([] if k == 0 or 13 <= k < 20 else [1]), f'frame {k}'
    out = tracker.update([car(10.0 + 0.5 * 20, 0.0)], stamp(20))
    assert [o.id for o in out] == [1]
    assert out[0].center[0] == pytest.approx(20.0, abs=0.3)
    assert tracker.update([car(10.5, 6.0)], stamp(21))[0].id == 1   # a new object elsewhere
    assert tracker.num_tracks == 2


def test_missed_detection_for_two_frames_does_not_change_the_id():
    tracker = MultiObjectTracker(TrackerParams())
    for k in range(30):
        x = 10.0 + 1.0 * k           # 10 m/s
        dets = [] if k in (15, 16) else [car(x, 0.0)]
        out = tracker.update(dets, stamp(k))
        if k >= 1:
            assert [o.id for o in out] == [1], f'frame {k}'
    assert abs(out[0].center[0] - 39.0) < 0.3


def test_track_is_published_only_after_min_hits():
    tracker = MultiObjectTracker(TrackerParams(min_hits=3))
    assert tracker.update([car(5.0, 0.0)], stamp(0)) == []
    assert tracker.update([car(5.0, 0.0)], stamp(1)) == []
    assert [o.id for o in tracker.update([car(5.0, 0.0)], stamp(2))] == [1]


def test_box_yaw_is_smoothed_modulo_pi_and_flipped_to_the_direction_of_travel():
    tracker = MultiObjectTracker(TrackerParams())
    for k in range(15):             # detector reports the box backwards two frames out of three
        yaw = math.pi if k % 3 != 1 else 0.0
        out = tracker.update([car(5.0 + 0.5 * k, 0.0, yaw_rad=yaw)], stamp(k))
    assert abs(math.remainder(out[0].yaw_rad, 2 * math.pi)) < 0.05


def test_parked_car_keeps_the_detected_yaw_modulo_pi_without_flipping():
    tracker = MultiObjectTracker(TrackerParams())
    for k in range(10):
        out = tracker.update([car(5.0, 3.0, yaw_rad=1.0 if k % 2 else 1.0 - math.pi)], stamp(k))
    assert abs(math.remainder(out[0].yaw_rad - 1.0, math.pi)) < 0.05
    assert np.linalg.norm(out[0].velocity) < 0.3


def test_label_is_the_majority_over_the_track_history():
    tracker = MultiObjectTracker(TrackerParams())
    labels = ['cyclist', 'pedestrian', 'pedestrian', 'unknown', 'pedestrian', 'cyclist', 'pedestrian']
    for k, label in enumerate(labels):
        out = tracker.update([walker(8.0, 1.0, label=label)], stamp(k))
    assert [(o.id, o.label) for o in out] == [(1, 'pedestrian')]


def test_incompatible_classes_are_not_associated():
    tracker = MultiObjectTracker(TrackerParams())
    tracker.update([car(10.0, 0.0)], stamp(0))
    tracker.update([car(10.0, 0.0)], stamp(1))
    # a cone next to the car (inside the gate, outside the car's footprint)
    out = tracker.update([car(10.0, 1.4, label='cone', size=(0.4, 0.4, 0.7))], stamp(2))
    assert [o.label for o in out] == ['car']          # the car coasts, the cone starts a new track
    assert tracker.num_tracks == 2


def test_score_is_smoothed_and_decays_without_hits():
    tracker = MultiObjectTracker(TrackerParams())
    for k, score in enumerate([0.9, 0.1, 0.9, 0.1]):
        out = tracker.update([car(10.0, 0.0, score=score)], stamp(k))
    assert 0.3 < out[0].score < 0.8
    coasting = tracker.update([], stamp(4))
    assert coasting[0].score < out[0].score


def test_detection_with_nan_is_dropped():
    tracker = MultiObjectTracker(TrackerParams(min_hits=1))
    out = tracker.update([car(float('nan'), 0.0), car(5.0, 1.0, yaw_rad=float('inf')), car(7.0, 0.0)],
                         stamp(0))
    assert tracker.last_dropped == 2
    unlabelled = car(7.0, 0.0)
    unlabelled.label = None
    tracker.update([unlabelled, 'not a detection'], stamp(1))
    assert tracker.last_dropped == 2
    assert len(out) == 1 and np.all(np.isfinite(out[0].center))


def test_empty_detections_do_not_raise():
    tracker = MultiObjectTracker(TrackerParams())
    assert tracker.update([], stamp(0)) == []
    assert tracker.update([], stamp(1)) == []


def test_repeated_stamp_is_skipped_with_a_warning():
    tracker = MultiObjectTracker(TrackerParams())
    tracker.update([car(10.0, 0.0)], stamp(0))
    before = tracker.update([car(10.0, 0.0)], stamp(1))
    again = tracker.update([car(30.0, 0.0)], stamp(1))
    assert tracker.last_warning and 'repeated' in tracker.last_warning
    assert [o.center[0] for o in again] == [o.center[0] for o in before]
    assert tracker.num_tracks == 1


def test_stamps_going_backwards_reset_the_tracker_without_raising():
    tracker = MultiObjectTracker(TrackerParams())
    for k in range(5):
        tracker.update([car(10.0 + k, 0.0)], stamp(k))
    out = tracker.update([car(10.0, 0.0)], stamp(0))       # the bag looped
    assert tracker.last_warning and 'reset' in tracker.last_warning
    assert out == [] and tracker.num_tracks == 1
    assert [o.id for o in tracker.update([car(10.0, 0.0)], stamp(1))] == [1]


def test_invalid_tracker_params_say_what_is_wrong():
    with pytest.raises(ValueError, match='min_hits'):
        TrackerParams(min_hits=0)
    with pytest.raises(ValueError, match='yaw_alpha'):
        TrackerParams(yaw_alpha=2.0)


def test_box_whose_centre_jumps_1_5_m_along_the_car_keeps_its_id():
    tracker = MultiObjectTracker(TrackerParams())
    ids = set()
    for k in range(20):             # parked car; the detector completes the partial view
        x = 20.0 + (1.5 if k % 4 in (2, 3) else 0.0)   # alternately to the front and the back
        ids |= {o.id for o in tracker.update([car(x, 4.0)], stamp(k))}
    assert ids == {1}
    assert tracker.num_tracks == 1


def test_two_overlapping_boxes_of_one_car_make_one_track_between_them():
    tracker = MultiObjectTracker(TrackerParams())
    for k in range(10):             # a split cluster, each half completed to a full car box
        out = tracker.update([car(37.4, -9.8, score=0.4), car(38.1, -10.0, score=0.4)], stamp(k))
    assert [o.id for o in out] == [1]
    assert out[0].center[0] == pytest.approx(37.75, abs=0.05)
    assert tracker.num_tracks == 1


def test_fragment_inside_a_tracked_car_starts_no_track_but_an_object_beside_it_does():
    tracker = MultiObjectTracker(TrackerParams())
    for k in range(3):
        tracker.update([car(10.0, 0.0)], stamp(k))
    # a cone-sized fragment at the car's front corner, and a pedestrian 1 m beside the car
    for k in range(3, 8):
        out = tracker.update([car(10.0, 0.0), car(11.8, -0.6, label='cone', size=(0.5, 0.4, 0.7)),
                              walker(10.0, 2.0)], stamp(k))
    assert sorted(o.label for o in out) == ['car', 'pedestrian']


def test_pedestrian_track_does_not_take_a_car_sized_unknown_box():
    tracker = MultiObjectTracker(TrackerParams())
    for k in range(3):
        tracker.update([walker(5.0, 0.0)], stamp(k))
    big = car(6.5, 0.5, label='unknown', score=0.3)      # within the gate, 24 times the footprint
    out = tracker.update([big], stamp(3))
    assert [(o.id, o.label) for o in out] == [(1, 'pedestrian')]
    assert out[0].center[0] == pytest.approx(5.0, abs=0.1)


def test_new_pedestrian_track_is_not_matched_to_a_detection_beyond_walking_speed():
    tracker = MultiObjectTracker(TrackerParams(gate_m=1.0))
    tracker.update([walker(5.0, 0.0)], stamp(0))
    tracker.update([walker(7.0, 0.0)], stamp(1))      # 20 m/s: another object, not the same one
    assert tracker.num_tracks == 2
    cars = MultiObjectTracker(TrackerParams(gate_m=1.0))
    cars.update([car(5.0, 0.0)], stamp(0))
    assert [o.id for o in cars.update([car(7.0, 0.0)], stamp(1))] == [1]   # 20 m/s is a car's


def test_cone_and_pedestrian_labels_swapping_on_a_small_object_keep_its_id():
    tracker = MultiObjectTracker(TrackerParams())
    for k in range(12):
        det = walker(30.0, 5.0, label='cone' if k < 6 else 'pedestrian')
        out = tracker.update([det], stamp(k))
        if k >= 1:
            assert [o.id for o in out] == [1], f'frame {k}'


# ---------------------------------------------------------------- odometry buffer
def test_odometry_yaw_interpolates_across_plus_minus_pi():
    odom = OdometryBuffer()
    odom.add(stamp(0), EgoState(yaw_rad=math.pi - 0.1))
    odom.add(stamp(1), EgoState(yaw_rad=-math.pi + 0.1))
    mid = odom.at(stamp(0) + DT_NS // 2)
    assert abs(abs(mid.yaw_rad) - math.pi) < 1e-9
    quarter = odom.at(stamp(0) + DT_NS // 4)
    assert quarter.yaw_rad == pytest.approx(math.pi - 0.05)


def test_odometry_interpolates_position_and_speed_linearly():
    odom = OdometryBuffer()
    odom.add(stamp(0), EgoState(x=0.0, y=1.0, speed_mps=10.0))
    odom.add(stamp(1), EgoState(x=1.0, y=3.0, speed_mps=12.0))
    ego = odom.at(stamp(0) + 30_000_000)
    assert (ego.x, ego.y, ego.speed_mps) == pytest.approx((0.3, 1.6, 10.6))


def test_odometry_extrapolates_up_to_0_2_s_with_speed_and_yaw_rate_then_gives_none():
    odom = OdometryBuffer(max_extrapolation_s=0.2)
    odom.add(stamp(0), EgoState(x=0.0, y=0.0, yaw_rad=0.0, speed_mps=10.0, yaw_rate_rps=0.0))
    odom.add(stamp(1), EgoState(x=1.0, y=0.0, yaw_rad=0.0, speed_mps=10.0, yaw_rate_rps=0.5))
    ahead = odom.at(stamp(1) + 200_000_000)
    radius = 10.0 / 0.5
    assert ahead.yaw_rad == pytest.approx(0.1)
    assert ahead.x == pytest.approx(1.0 + radius * math.sin(0.1))
    assert ahead.y == pytest.approx(radius * (1 - math.cos(0.1)))
    behind = odom.at(stamp(0) - 100_000_000)
    assert behind.x == pytest.approx(-1.0)
    assert odom.at(stamp(1) + 250_000_000) is None
    assert odom.at(stamp(0) - 250_000_000) is None
    assert OdometryBuffer().at(stamp(0)) is None


def test_odometry_gap_longer_than_max_gap_is_not_interpolated():
    odom = OdometryBuffer(max_gap_s=1.0)
    odom.add(stamp(0), EgoState(x=0.0))
    odom.add(stamp(30), EgoState(x=30.0))             # 3 s without odometry
    assert odom.at(stamp(15)) is None
    assert odom.at(stamp(29)).x == pytest.approx(30.0)   # 0.1 s before the next sample, speed 0


def test_odometry_out_of_order_sample_is_inserted_and_duplicates_ignored():
    odom = OdometryBuffer()
    odom.add(stamp(0), EgoState(x=0.0))
    odom.add(stamp(2), EgoState(x=2.0))
    assert odom.add(stamp(1), EgoState(x=5.0)) is False      # late, but inside the buffer
    assert odom.at(stamp(1)).x == 5.0
    odom.add(stamp(1), EgoState(x=-100.0))                    # duplicate stamp
    assert odom.at(stamp(1)).x == 5.0 and odom.n_duplicates == 1
    assert len(odom) == 3 and odom.latest().x == 2.0 and odom.latest_stamp_ns == stamp(2)


def test_odometry_stamp_going_back_more_than_1_s_resets_the_buffer_and_flags_it():
    odom = OdometryBuffer()
    for k in range(30):
        assert odom.add(stamp(k), EgoState(x=float(k))) is False
    assert odom.add(stamp(0), EgoState(x=-1.0)) is True
    assert len(odom) == 1 and odom.latest().x == -1.0


def test_odometry_forgets_samples_older_than_max_age():
    odom = OdometryBuffer(max_age_s=1.0)
    for k in range(50):
        odom.add(stamp(k), EgoState(x=float(k)))
    assert len(odom) == 11
    assert odom.at(stamp(10)) is None


def test_odometry_with_nan_is_ignored():
    odom = OdometryBuffer()
    odom.add(stamp(0), EgoState(x=float('nan')))
    assert len(odom) == 0 and odom.n_invalid == 1


# ---------------------------------------------------------------- FusionCore (tracking part)
def drive(core, n_frames, ego_speed_mps, object_odom_xy, object_vel_odom, ego_yaw_rad=0.0,
          odometry=True, start=0, ego_start_xy=(0.0, 0.0)):
    """Ego drives along its heading; one car moves in odom. Returns the FusionResults."""
    results = []
    heading = np.array([math.cos(ego_yaw_rad), math.sin(ego_yaw_rad)])
    for k in range(start, start + n_frames):
        t_s = k * 0.1
        ego_xy = np.asarray(ego_start_xy) + heading * ego_speed_mps * t_s
        ego = EgoState(ego_xy[0], ego_xy[1], ego_yaw_rad, ego_speed_mps, 0.0)
        if odometry:
            for j in range(5):      # 50 Hz odometry around the LiDAR frame
                dt = (j - 2) * 0.02
                xy = ego_xy + heading * ego_speed_mps * dt
                core.add_odometry(stamp(k) + int(dt * 1e9),
                                  EgoState(xy[0], xy[1], ego_yaw_rad, ego_speed_mps, 0.0))
        obj_odom = np.asarray(object_odom_xy) + np.asarray(object_vel_odom) * t_s
        obj_base = Object3D([*obj_odom, 0.8], [4.5, 1.9, 1.5], label='car', score=0.9).transformed(
            np.linalg.inv(ego.T_odom_base()))
        results.append(core.update([obj_base], stamp(k)))
    return results


def test_core_static_car_seen_from_a_driving_ego_has_zero_velocity_over_ground():
    core = FusionCore(FusionParams())
    results = drive(core, 20, ego_speed_mps=10.0, object_odom_xy=(40.0, 0.0), object_vel_odom=(0, 0))
    last = results[-1]
    assert not last.warnings
    assert [o.id for o in last.objects_base] == [1]
    assert last.objects_base[0].center[0] == pytest.approx(40.0 - 10.0 * 1.9, abs=0.05)
    assert np.linalg.norm(last.objects_base[0].velocity) < 0.1
    assert last.objects_odom[0].center[0] == pytest.approx(40.0, abs=0.05)
    assert last.scene is not None and 'car #1 ahead in ego lane' in last.scene.text


def test_core_velocity_over_ground_is_expressed_in_base_link_axes():
    core = FusionCore(FusionParams())
    # Ego heads +y in odom at 5 m/s; the car ahead also moves +y, at 8 m/s.
    results = drive(core, 25, ego_speed_mps=5.0, object_odom_xy=(0.0, 20.0),
                    object_vel_odom=(0.0, 8.0), ego_yaw_rad=math.pi / 2)
    obj = results[-1].objects_base[0]
    assert obj.velocity[:2] == pytest.approx([8.0, 0.0], abs=0.3)
    assert results[-1].objects_odom[0].velocity[:2] == pytest.approx([0.0, 8.0], abs=0.3)


def test_core_without_odometry_warns_and_tracks_as_if_ego_static():
    core = FusionCore(FusionParams())
    results = drive(core, 5, ego_speed_mps=0.0, object_odom_xy=(15.0, 2.0), object_vel_odom=(3.0, 0),
                    odometry=False)
    last = results[-1]
    assert any('no odometry' in w for w in last.warnings)
    assert last.ego_from_odometry is False
    assert [o.id for o in last.objects_base] == [1]
    assert last.objects_base[0].center[:2] == pytest.approx(last.objects_odom[0].center[:2])


def test_core_keeps_track_ids_when_odometry_starts_late_or_drops_out():
    core = FusionCore(FusionParams())
    # The odom origin is far from ego (as on a real drive): tracks must be re-anchored, not reset.
    yaw, start = 0.7, np.array([120.0, -45.0])
    car_xy = start + 40.0 * np.array([math.cos(yaw), math.sin(yaw)])
    scenario = dict(ego_speed_mps=10.0, object_odom_xy=car_xy, object_vel_odom=(0, 0),
                    ego_yaw_rad=yaw, ego_start_xy=start)
    results = drive(core, 3, odometry=False, **scenario)                # no odometry yet
    results += drive(core, 10, start=3, **scenario)                    # odometry arrives
    results += drive(core, 3, odometry=False, start=13, **scenario)    # odometry drops out
    assert {o.id for r in results for o in r.objects_base} == {1}
    assert results[5].ego_from_odometry and not results[5].warnings
    assert results[-1].warnings and not results[-1].ego_from_odometry


def test_core_never_raises_on_garbage_input():
    core = FusionCore(FusionParams())
    nan_car = car(float('nan'), 0.0)
    bad_lane = Lane(offset=0, width_m=float('nan'), centerline=np.zeros((1, 3)))
    inputs = [(None, stamp(0), ()), ([nan_car, 'not an object', None], stamp(1), [bad_lane]),
              ([car(5, 0)], 'yesterday', ()), ([car(5, 0)], stamp(2), [object()]),
              ([car(5, 0)], stamp(2), ()), ([car(5, 0)], stamp(1), ()), ([], -5, None)]
    for detections, stamp_ns, lanes in inputs:
        result = core.update(detections, stamp_ns, lanes)
        assert isinstance(result.warnings, list)
    assert core.add_odometry(stamp(3), EgoState(x=float('inf'))) is False
    assert core.add_odometry('soon', EgoState()) is False
    assert any('dropped 2 detection' in w for w in core.update([nan_car, None], stamp(9)).warnings)


def test_core_objects_in_lidar_frame_are_moved_to_base_link_with_T_base_lidar():
    T_base_lidar = np.eye(4)
    T_base_lidar[:3, 3] = [1.0, 0.0, 1.9]
    core = FusionCore(FusionParams(min_hits=1), T_base_lidar=T_base_lidar)
    core.add_odometry(stamp(0), EgoState())
    result = core.update([car(10.0, 0.0)], stamp(0), frame_id='lidar')
    assert result.objects_base[0].center == pytest.approx([11.0, 0.0, 2.7])
    assert 'T_base_lidar' in FusionCore().update([car(1, 0)], stamp(0), frame_id='lidar').warnings[-1]


def test_fusion_params_come_from_the_node_parameters():
    from fmdrive.config import node_params
    params = FusionParams.from_node_params(node_params('fusion'))
    assert (params.max_age_s, params.gate_m, params.min_hits) == (0.5, 3.0, 2)
    with pytest.raises(ValueError, match='T_base_lidar'):
        FusionCore(params, T_base_lidar=np.eye(3))


def test_core_bag_loop_restarts_odometry_and_tracks_without_raising():
    core = FusionCore(FusionParams())
    scenario = dict(ego_speed_mps=10.0, object_odom_xy=(40.0, 0.0), object_vel_odom=(0, 0))
    drive(core, 20, **scenario)
    looped = drive(core, 5, **scenario)          # the bag starts again: stamps and poses jump back
    warnings = ' '.join(looped[0].warnings)
    assert 'odometry buffer cleared' in warnings and 'tracker reset' in warnings
    assert looped[0].ego_from_odometry
    assert [o.id for o in looped[-1].objects_base] == [1]
    assert looped[-1].objects_base[0].center[0] == pytest.approx(40.0 - 10.0 * 0.4, abs=0.05)


@pytest.mark.parametrize('brake_mps2', [0.0, 3.0])
def test_a_braking_car_reports_its_deceleration_and_a_steady_one_about_none(brake_mps2):
    rng = np.random.default_rng(1)
    tracker = MultiObjectTracker(TrackerParams())
    x, v = 10.0, 12.0
    for k in range(40):
        if k >= 20:
            v = max(0.0, v - brake_mps2 * 0.1)         # brakes from 2 s on
        x += v * 0.1
        out = tracker.update([car(x + rng.normal(0, 0.1), 2.0 + rng.normal(0, 0.1))], stamp(k))
        if k == 1:
            assert not out[0].acceleration.any()       # two hits: no slope to take yet
    # after 2 s of braking at 3 m/s^2 (the last second's slope of the filtered velocity)
    assert out[0].acceleration[0] == pytest.approx(-brake_mps2, abs=0.5)
    assert abs(out[0].acceleration[1]) < 0.5


def test_acceleration_turns_with_the_tracking_frame():
    tracker = MultiObjectTracker(TrackerParams())
    x, v = 10.0, 12.0
    for k in range(20):
        v -= 0.2                                       # 2 m/s^2
        x += v * 0.1
        out = tracker.update([car(x, 0.0)], stamp(k))
    assert out[0].acceleration[:2] == pytest.approx([-2.0, 0.0], abs=0.4)
    tracker.transform(np.array([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))   # +90 deg
    out = tracker.update([car(0.0, x + v * 0.1)], stamp(20))
    assert out[0].acceleration[:2] == pytest.approx([0.0, -2.0], abs=0.4)


def test_core_describes_a_braking_lead_seen_from_a_driving_ego():
    core = FusionCore(FusionParams())
    ego_v, lead_x, lead_v = 8.0, 30.0, 8.0
    for k in range(40):
        t_s = k * 0.1
        ego = EgoState(ego_v * t_s, 0.0, 0.0, ego_v, 0.0)
        for j in range(5):
            dt = (j - 2) * 0.02
            core.add_odometry(stamp(k) + int(dt * 1e9), EgoState(ego_v * (t_s + dt), 0.0, 0.0, ego_v, 0.0))
        if k >= 20:
            lead_v = max(0.0, lead_v - 0.25)           # 2.5 m/s^2 from 2 s on
        lead_x += lead_v * 0.1
        base = Object3D([lead_x, 0.0, 0.8], [4.5, 1.9, 1.5], label='car', score=0.9).transformed(
            np.linalg.inv(ego.T_odom_base()))
        result = core.update([base], stamp(k))
        if k == 15:
            assert 'braking' not in result.scene.text
    assert 'braking at 2.' in result.scene.text, result.scene.text
