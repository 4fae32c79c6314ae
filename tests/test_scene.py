"""Specification of the scene description (fmdrive.fusion.scene) and of the scene FusionCore emits."""
import math
import random

import numpy as np
import pytest

from fmdrive.fusion.core import FusionCore, FusionParams
from fmdrive.fusion.scene import describe_scene, project_to_polyline, relate_objects
from fmdrive.objects import EgoState, Lane, Object3D, Scene

STAMP_NS = 12_300_000_000


def straight_lanes(offsets=(0, 1), width_m=3.5):
    x = np.linspace(-30.0, 100.0, 27)
    return [Lane(o, width_m, np.c_[x, np.full_like(x, o * width_m), np.zeros_like(x)]) for o in offsets]


def obj(x, y, label='car', id=1, velocity=(0.0, 0.0, 0.0)):
    size = {'car': (4.5, 1.9, 1.5), 'pedestrian': (0.6, 0.6, 1.7), 'cone': (0.4, 0.4, 0.7)}[label]
    return Object3D(center=[x, y, 0.8], size=size, label=label, id=id, velocity=velocity, score=0.9)


def busy_street():
    return [obj(18.4, 0.2, 'car', 3, (6.1, 0.0, 0.0)),
            obj(11.3, -4.1, 'pedestrian', 7, (0.0, 1.3, 0.0)),
            obj(25.0, 3.6, 'car', 4, (9.0, 0.0, 0.0)),
            obj(30.0, -2.6, 'cone', 9)]


def test_scene_text_mentions_in_path_car_ahead_with_its_distance():
    scene = describe_scene(STAMP_NS, EgoState(speed_mps=8.2), [obj(18.4, 0.2, 'car', 3, (6.1, 0, 0))],
                           straight_lanes(), speed_limit_mps=13.9)
    assert isinstance(scene, Scene)
    assert 'car #3 ahead in ego lane, 18.4 m' in scene.text
    assert 'closing at 2.1 m/s (time to collision 8.8 s)' in scene.text
    assert scene.text.startswith('t=12.3s. Ego: 8.2 m/s, speed limit 13.9 m/s, in lane 0 of 2')


def test_scene_text_is_deterministic():
    ego, lanes = EgoState(speed_mps=8.2, yaw_rate_rps=0.05), straight_lanes((-1, 0, 1))
    objects = busy_street()
    first = describe_scene(STAMP_NS, ego, objects, lanes, 13.9).text
    shuffled = objects[:]
    random.Random(3).shuffle(shuffled)
    assert describe_scene(STAMP_NS, ego, shuffled, lanes, 13.9).text == first
    assert describe_scene(STAMP_NS, ego, [o.transformed(np.eye(4)) for o in objects], lanes,
                          13.9).text == first
    assert '-0.0' not in describe_scene(STAMP_NS, EgoState(speed_mps=-1e-9), objects, lanes, 13.9).text


def test_objects_are_sorted_with_the_in_path_one_first():
    objects = [obj(6.0, -4.0, 'pedestrian', 7), obj(30.0, 0.3, 'car', 3), obj(10.0, 3.5, 'car', 4),
               obj(-8.0, 0.0, 'car', 5)]
    scene = describe_scene(STAMP_NS, EgoState(speed_mps=5.0), objects, straight_lanes(), 13.9)
    assert [o.id for o in scene.objects] == [3, 7, 5, 4]
    text = scene.text
    assert text.index('car #3') < text.index('pedestrian #7') < text.index('car #5') < text.index('car #4')
    assert 'car #5 behind in ego lane, 8.0 m' in text


def test_crossing_pedestrian_is_described_with_side_and_direction():
    scene = describe_scene(STAMP_NS, EgoState(speed_mps=8.0), busy_street(), straight_lanes(), 13.9)
    assert 'pedestrian #7 front-right 12.0 m, 4.1 m right of ego lane centre, moving left at 1.3 m/s ' \
           '(crossing)' in scene.text
    walking_away = describe_scene(STAMP_NS, EgoState(), [obj(11.3, -4.1, 'pedestrian', 7, (0, -1.3, 0))],
                                  straight_lanes(), 13.9)
    assert '(crossing)' not in walking_away.text


def test_adjacent_lane_is_reported_free_or_occupied():
    lanes = straight_lanes((-1, 0, 1))
    free = describe_scene(STAMP_NS, EgoState(), [obj(60.0, 3.5, 'car', 2)], lanes, 13.9).text
    assert 'in lane 1 of 3 from the right (left lane free, right lane free)' in free
    busy = describe_scene(STAMP_NS, EgoState(), [obj(5.0, -3.4, 'car', 2)], lanes, 13.9).text
    assert '(left lane free, right lane occupied)' in busy
    assert 'car #2 front-right 6.0 m, in right lane, stationary' in busy
    single = describe_scene(STAMP_NS, EgoState(), [], straight_lanes((0,)), 13.9).text
    assert '(no left lane, no right lane)' in single and 'Objects: none.' in single


def test_lane_assignment_follows_curved_lanes():
    # A left bend of radius 50 m: 30 m down the road the ego lane is ~8.7 m left of the x axis.
    radius, angle = 50.0, np.linspace(-0.3, 1.2, 60)
    lanes = [Lane(o, 3.5, np.c_[(radius - 3.5 * o) * np.sin(angle),
                                radius - (radius - 3.5 * o) * np.cos(angle), np.zeros_like(angle)])
             for o in (0, 1)]
    on_bend = [radius * math.sin(0.6), radius * (1 - math.cos(0.6))]
    rel = relate_objects(EgoState(), [obj(*on_bend, 'car', 1)], lanes)[0]
    assert rel.lane_offset == 0 and rel.in_path
    assert rel.longitudinal_m == pytest.approx(radius * 0.6, abs=0.2)
    without_lanes = relate_objects(EgoState(), [obj(*on_bend, 'car', 1)], [])[0]
    assert without_lanes.lane_offset == 2 and not without_lanes.in_path


def test_without_lanes_objects_get_lanes_from_a_3_5_m_lateral_offset():
    objects = [obj(20.0, 1.6, 'car', 1), obj(20.0, 1.9, 'car', 2), obj(20.0, -5.5, 'car', 3)]
    offsets = {r.object.id: r.lane_offset for r in relate_objects(EgoState(), objects, ())}
    assert offsets == {1: 0, 2: 1, 3: -2}
    text = describe_scene(STAMP_NS, EgoState(), objects, [], 13.9).text
    assert 'no lane map (assuming 3.5 m lanes)' in text and 'car #3 front-right 20.7 m, 2 lanes right' in text


def test_at_most_max_objects_are_listed_but_all_are_kept():
    objects = [obj(10.0 + 5 * i, -6.0, 'cone', i + 1) for i in range(12)]
    scene = describe_scene(STAMP_NS, EgoState(), objects, straight_lanes(), 13.9, max_objects=5)
    assert scene.text.count('cone #') == 5 and scene.text.endswith('+7 more not listed.')
    assert len(scene.objects) == 12


def test_objects_with_nan_are_left_out():
    scene = describe_scene(STAMP_NS, EgoState(), [obj(float('nan'), 0.0, 'car', 1), obj(9.0, 0.0, 'car', 2)],
                           straight_lanes(), 13.9)
    assert [o.id for o in scene.objects] == [2] and '#1' not in scene.text


def test_opening_gap_and_ego_over_the_limit_are_said():
    scene = describe_scene(STAMP_NS, EgoState(speed_mps=15.0, yaw_rate_rps=-0.1),
                           [obj(20.0, 0.0, 'car', 1, (18.0, 0, 0))], straight_lanes(), 13.9)
    assert 'Ego: 15.0 m/s, turning right at 5.7 deg/s, speed limit 13.9 m/s (over the limit)' in scene.text
    assert 'gap opening at 3.0 m/s' in scene.text and 'time to collision' not in scene.text


def test_project_to_polyline_gives_arc_length_and_signed_lateral_offset():
    line = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    s, d, tangent = project_to_polyline(np.array([[5.0, 1.0], [11.0, 4.0], [-2.0, -1.0]]), line)
    assert s == pytest.approx([5.0, 14.0, -2.0])
    assert d == pytest.approx([1.0, -1.0, -1.0])
    assert tangent == pytest.approx(np.array([[1, 0], [0, 1], [1, 0]]))
    # Past the end of an inner segment, the next segment is the nearest, not the first one extended.
    s, d, _ = project_to_polyline(np.array([[15.0, 0.0]]), np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 5.0]]))
    assert (s[0], d[0]) == pytest.approx((10.0 + 0.4 * math.sqrt(125.0), -math.sqrt(5.0)))


def test_fusion_core_emits_the_scene_in_base_link():
    core = FusionCore(FusionParams(speed_limit_mps=8.3))
    lanes = straight_lanes()
    for k in range(3):
        stamp_ns = STAMP_NS + k * 100_000_000
        ego = EgoState(x=100.0 + k, y=50.0, yaw_rad=0.0, speed_mps=10.0)
        core.add_odometry(stamp_ns, ego)
        result = core.update([obj(25.0 - 0.5 * k, 0.1, 'car', 0)], stamp_ns, lanes)
    scene = result.scene
    assert scene.lanes == lanes and scene.ego.x == pytest.approx(102.0)
    assert 'speed limit 8.3 m/s (over the limit)' in scene.text
    assert 'car #1 ahead in ego lane' in scene.text and 'closing at' in scene.text
    assert scene.objects[0].center[0] == pytest.approx(24.0, abs=0.2)
    no_scene = FusionCore(FusionParams(describe_scene=False)).update([], STAMP_NS)
    assert no_scene.scene is None


def test_an_object_braking_or_speeding_up_says_so_and_a_steady_or_stationary_one_does_not():
    lead = obj(20.0, 0.0, 'car', 1, (8.0, 0, 0))
    lead.acceleration = np.array([-2.54, 0.3, 0.0])            # braking, a little sideways noise
    left = obj(25.0, 3.5, 'car', 2, (9.0, 0, 0))
    left.acceleration = np.array([1.2, 0.0, 0.0])
    steady = obj(40.0, 0.0, 'car', 3, (8.0, 0, 0))
    steady.acceleration = np.array([-0.5, 0.0, 0.0])           # under ACCEL_PHRASE_MPS2: estimator noise
    parked = obj(30.0, -3.5, 'car', 4)
    parked.acceleration = np.array([2.0, 0.0, 0.0])            # stationary: no motion to brake
    oncoming = obj(60.0, 3.5, 'car', 5, (-10.0, 0, 0))
    oncoming.acceleration = np.array([3.0, 0.0, 0.0])          # against its motion: it brakes
    text = describe_scene(STAMP_NS, EgoState(speed_mps=9.0), [lead, left, steady, parked, oncoming],
                          straight_lanes((0, 1, -1)), 13.9).text
    assert 'car #1 ahead in ego lane, 20.0 m, moving same direction at 8.0 m/s, braking at 2.5 m/s2, closing' in text
    assert 'car #2 ahead 25.2 m, in left lane, moving same direction at 9.0 m/s, speeding up at 1.2 m/s2' in text
    assert 'moving opposite direction at 10.0 m/s, braking at 3.0 m/s2' in text
    assert text.count('m/s2') == 3
    nan = obj(20.0, 0.0, 'car', 1, (8.0, 0, 0))
    nan.acceleration = np.array([np.nan, 0.0, 0.0])            # a broken estimate says nothing
    assert 'm/s2' not in describe_scene(STAMP_NS, EgoState(speed_mps=9.0), [nan], straight_lanes(), 13.9).text


def test_the_ego_place_in_its_lane_and_the_curve_ahead_are_said_when_they_matter():
    # the ego 0.9 m left of its lane's centre, heading 5 deg left of it: the lanes are the base_link
    # lines of a straight road seen from there
    yaw = math.radians(5.0)
    R = np.array([[math.cos(-yaw), -math.sin(-yaw)], [math.sin(-yaw), math.cos(-yaw)]])
    x = np.linspace(-30.0, 100.0, 27)
    lanes = [Lane(o, 3.5, np.c_[(np.c_[x, np.full_like(x, o * 3.5 - 0.9)] @ R.T), np.zeros_like(x)]) for o in (0, 1)]
    text = describe_scene(STAMP_NS, EgoState(speed_mps=9.0), [], lanes, 13.9).text
    assert 'in lane 0 of 2 from the right, 0.9 m left of its centre, heading 5.0 deg left of it (' in text
    assert 'curving' not in text
    # centred and aligned on a left curve of 200 m radius: only the curve is said
    a = np.linspace(-0.15, 0.5, 400)
    lanes = [Lane(o, 3.5, np.c_[(200 - 3.5 * o) * np.sin(a), 200 - (200 - 3.5 * o) * np.cos(a), np.zeros_like(a)])
             for o in (0, 1)]
    text = describe_scene(STAMP_NS, EgoState(speed_mps=9.0), [], lanes, 13.9).text
    assert 'in lane 0 of 2 from the right, road ahead curving left (radius 200 m) (' in text
    # straight and centred: nothing more than before
    text = describe_scene(STAMP_NS, EgoState(speed_mps=9.0), [], straight_lanes(), 13.9).text
    assert 'in lane 0 of 2 from the right (left lane free, no right lane)' in text
