"""The ROS-free parts of what every node shares: parameter checks, input ageing and stamp gaps, the
QoS a subscription picks to match its publishers, and the watchdog's stopping plan."""
from types import SimpleNamespace

import numpy as np
import pytest

from fmdrive import config
from fmdrive.objects import EgoState, Plan, Scene
from fmdrive.planning.classical import ClassicalPlanner, PlannerParams
from fmdrive.planning.watchdog import ego_along_plan, stopping_plan


@pytest.mark.parametrize('node,name,value,message', [
    ('lidar_encoder', 'queue_size', 0, "'queue_size' = 0 is out of range [1, 100]"),
    ('lidar_encoder', 'range_m', 'far', "'range_m' must be a float, got str 'far'"),
    ('lidar_encoder', 'min_box_points', 2.5, "'min_box_points' must be a int"),
    ('planner', 'deadline_ms', -5.0, "'deadline_ms' = -5.0 is out of range"),
    ('fusion', 'sensor_qos', 'fast', "'sensor_qos' = 'fast' is not one of 'auto', 'sensor', 'reliable'"),
    ('visualizer', 'draw_points', 1, "'draw_points' must be a bool"),
])
def test_an_invalid_parameter_is_refused_with_one_line_naming_it(node, name, value, message):
    problem = config.node_param_specs(node)[name].check(name, value)
    assert problem is not None and message in problem and '\n' not in problem


def test_an_integer_for_a_float_parameter_is_what_the_user_meant():
    assert config.node_param_specs('lidar_encoder')['range_m'].check('range_m', 60) is None


def test_every_default_is_valid_and_described():
    for node in config.NODES:
        for name, spec in config.node_param_specs(node).items():
            assert spec.check(name, spec.default) is None, (node, name)
            assert len(spec.description) > 10, (node, name)
    assert config.node_params('fusion')['speed_limit_mps'] == config.node_params('planner')['speed_limit_mps']


def test_a_silent_input_ages_to_zero_rate_and_gaps_in_its_stamps_are_counted():
    from fmdrive.nodes.base import RATE_WINDOW_S, InputStats
    s = InputStats('always', gaps=True)
    for k in range(20):                       # 10 Hz for 2 s
        s.arrivals.append(100.0 + 0.1 * k)
        s.note_stamp(k * 100_000_000)
    assert s.rate_hz(101.95) == pytest.approx(20 / RATE_WINDOW_S)
    assert s.rate_hz(110.0) == 0.0 and s.silent_s(110.0, 0.0) == pytest.approx(8.1)
    s.note_stamp(19 * 100_000_000 + 400_000_000)   # 3 frames never arrived
    assert s.missing == 3
    assert s.note_stamp(0) == 2_300_000_000 and s.stamps_backwards == 1   # a bag loop: no gap counted
    assert s.missing == 3


def test_frames_lost_before_the_period_is_learnt_are_counted_too():
    """A CI run lost the second scene on a reliable link and the gap counter said 0: it judged
    nothing until 5 periods were known. The first steps are now judged once they are."""
    from fmdrive.nodes.base import InputStats
    s = InputStats('always', gaps=True)
    for k in [0, 2, 3, 4, 5, 6, 7, 8, 9]:       # frame 1 never arrived
        s.note_stamp(k * 100_000_000)
    assert s.missing == 1
    for k in [10, 12, 13]:                        # and frame 11 later
        s.note_stamp(k * 100_000_000)
    assert s.missing == 2
    s.note_stamp(0)                               # a loop: learn again, and again from the start
    for k in [3, 4, 5, 6, 7, 8]:
        s.note_stamp(k * 100_000_000)
    assert s.missing == 4
    late = InputStats('always', gaps=True)        # a loss of the very first frame: no stamp shows it
    for k in range(1, 10):
        late.note_stamp(k * 100_000_000)
    assert late.missing == 0


def _endpoint(reliability, durability):
    from rclpy.qos import QoSProfile
    return SimpleNamespace(qos_profile=QoSProfile(depth=1, reliability=reliability, durability=durability))


def test_auto_qos_matches_every_publisher_a_vehicle_has():
    from rclpy.qos import DurabilityPolicy as D
    from rclpy.qos import ReliabilityPolicy as R

    from fmdrive.nodes.base import compatible_qos, make_qos
    fallback = make_qos('reliable')
    sensor_driver = compatible_qos([_endpoint(R.BEST_EFFORT, D.VOLATILE), _endpoint(R.RELIABLE, D.VOLATILE)], 5,
                                   fallback)
    assert (sensor_driver.reliability, sensor_driver.durability) == (R.BEST_EFFORT, D.VOLATILE)
    latched = compatible_qos([_endpoint(R.RELIABLE, D.TRANSIENT_LOCAL)], 5, fallback)
    assert (latched.reliability, latched.durability) == (R.RELIABLE, D.TRANSIENT_LOCAL)
    mixed = compatible_qos([_endpoint(R.RELIABLE, D.TRANSIENT_LOCAL), _endpoint(R.RELIABLE, D.VOLATILE)], 5,
                           fallback)
    assert (mixed.reliability, mixed.durability) == (R.RELIABLE, D.VOLATILE)
    assert compatible_qos([], 5, fallback) is fallback


def moving_plan(speed=10.0):
    t = np.arange(1, 7) * 0.5
    poses = np.c_[speed * t, np.zeros(6), np.zeros(6)]
    return Plan(1_000_000_000, poses, t, np.full(6, speed))


def test_the_car_is_where_the_last_plan_says_it_is_now():
    ego = ego_along_plan(moving_plan(), 1.2)
    assert ego.x == pytest.approx(12.0) and ego.speed_mps == pytest.approx(10.0)
    assert ego_along_plan(moving_plan(), 0.0).x == pytest.approx(0.0)     # before the first waypoint


def test_the_watchdog_stops_the_car_comfortably_from_where_it_is():
    planner = ClassicalPlanner(PlannerParams())
    scene = Scene(1_000_000_000, EgoState(speed_mps=10.0), [], [], 13.9)
    plan = stopping_plan(planner, scene, moving_plan(), now_ns=2_000_000_000, reason='no scene for 1.0 s')
    assert plan.source == 'fallback' and plan.status.startswith('safe_stop: no scene')
    assert plan.stamp_ns == 2_000_000_000
    assert plan.poses[0, 0] > 10.0                            # starts ahead: the car kept moving 1 s
    assert np.all(np.diff(plan.speeds_mps) <= 1e-9) and plan.speeds_mps[-1] == 0.0
    decel = -np.diff(np.r_[10.0, plan.speeds_mps]) / 0.5
    assert decel.max() <= max(PlannerParams().comfort_decel_mps2, 10.0 / PlannerParams().horizon_s) + 1e-6
    # nothing known at all: hold still at the origin
    held = stopping_plan(planner, None, None, now_ns=5, reason='no scene received yet')
    assert np.all(held.speeds_mps == 0.0) and np.allclose(held.poses[:, :2], 0.0)


def test_a_frame_not_yet_on_tf_is_waited_for_once_then_no_more():
    """A foreign bag's /tf_static was matched a moment after its first cloud, which went out with the
    fallback calibration's mounting (a CI failure). The first message needing an unknown frame waits
    for it (up to TF_WAIT_S); a frame nobody publishes costs that wait once."""
    import threading
    import time

    from fmdrive.nodes import base
    from fmdrive.tf import TransformBuffer, TransformError
    node = SimpleNamespace(tf=TransformBuffer(), _tf_first_need={}, _running=True)
    node.lookup = lambda target, source, stamp_ns=None: node.tf.lookup(target, source, stamp_ns)
    T = np.eye(4)
    T[:3, 3] = [1.2, 0.0, 1.8]
    later = threading.Timer(0.2, lambda: node.tf.set_transform('base_link', 'velodyne_top', T))
    later.start()
    t0 = time.monotonic()
    got = base.FmdriveNode.lookup_waiting(node, 'base_link', 'velodyne_top')
    assert np.allclose(got, T) and 0.1 < time.monotonic() - t0 < base.TF_WAIT_S
    t0 = time.monotonic()
    with pytest.raises(TransformError):
        base.FmdriveNode.lookup_waiting(node, 'base_link', 'nobody_publishes_this')
    assert time.monotonic() - t0 >= base.TF_WAIT_S
    t0 = time.monotonic()
    with pytest.raises(TransformError):
        base.FmdriveNode.lookup_waiting(node, 'base_link', 'nobody_publishes_this')
    assert time.monotonic() - t0 < 0.1                # waited once, not for every message


def test_a_node_teardown_that_hangs_inside_a_c_call_holding_the_gil_is_cut_off():
    """Seen under load: a node's destroy_node spun for ever inside Fast DDS (DomainParticipant::
    set_listener) after `fmdrive run` was killed: a node left behind at 100 % CPU. The teardown is
    bounded by faulthandler's C watchdog thread, which fires even while the main thread holds the GIL
    (here: libc pause() called through ctypes.PyDLL, which keeps it): stacks to stderr, exit 1."""
    import subprocess
    import sys
    import time
    code = ('from fmdrive.nodes import base\n'
            'base._bound_teardown(1.0)\n'
            'import ctypes\n'
            'def stuck_in_teardown():\n'
            '    ctypes.PyDLL("libc.so.6").pause()\n'
            'stuck_in_teardown()\n')
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert 'Timeout' in r.stderr and 'stuck_in_teardown' in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30
