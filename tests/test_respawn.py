"""A node started again by ros2 launch (or anything but `fmdrive run`) after its last process was
killed picks a Fast DDS participant id of its own (fmdrive/respawn.py)."""
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import wait_for_listening_ports

from fmdrive import respawn
from fmdrive.graph import RESTART_PARTICIPANT_IDS, SUPERVISOR_ENV, participant_ports
from fmdrive.rosenv import PROFILE_ENV_VARS, launch_profile_env, ros_env

NS = {'f': 'http://www.eprosima.com'}
HOLD = ('import sys\nfrom fmdrive import respawn\n'
        'i = respawn.claim(int(sys.argv[1]), sys.argv[2], sys.argv[3])\nprint("held", flush=True)\n'
        'sys.stdin.read()\n')                     # holds the claim until killed (or its stdin closes)


def _holder(tmp_path, domain, name):
    """A process that claims `name` and waits (to be killed)."""
    proc = subprocess.Popen([sys.executable, '-c', HOLD, str(domain), name, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'held'
    return proc


def test_a_claim_after_a_clean_end_is_a_first_start_and_after_a_kill_a_restart(tmp_path):
    first = respawn.claim(7, 'planner', tmp_path)
    assert first is not None and not first.restarted
    first.clean_end()
    again = respawn.claim(7, 'planner', tmp_path)
    assert not again.restarted and again.previous == 'clean'
    again.clean_end()
    proc = _holder(tmp_path, 7, 'planner')
    assert respawn.claim(7, 'planner', tmp_path) is None            # held by a live process: not ours
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    after = respawn.claim(7, 'planner', tmp_path)
    assert after.restarted and after.previous.split()[:2] == ['running', str(proc.pid)]
    other = respawn.claim(8, 'planner', tmp_path)                    # another domain: its own record
    assert other is not None and not other.restarted


def test_ids_are_handed_out_in_turn_across_processes_and_not_again_within_the_reuse_window(tmp_path):
    free = lambda port: False
    first = respawn.hand_out_id(5, tmp_path, now=1000.0, in_use=free)
    assert first == RESTART_PARTICIPANT_IDS[0]
    second = respawn.hand_out_id(5, tmp_path, now=1001.0, in_use=free)        # the record is on disk
    assert second == first + 1
    busy = set(participant_ports(5, second + 1))
    assert respawn.hand_out_id(5, tmp_path, now=1002.0, in_use=busy.__contains__) == second + 2
    assert respawn.hand_out_id(6, tmp_path, now=1003.0, in_use=free) == first   # per domain
    (tmp_path / '9').mkdir()
    (tmp_path / '9' / 'participant_ids.json').write_text('not json')      # a damaged record is started over
    assert respawn.hand_out_id(9, tmp_path, now=1.0, in_use=free) == first
    assert respawn.hand_out_id(5, tmp_path, now=1003.0, in_use=lambda port: True) is None


def test_prepare_points_fast_dds_at_a_profile_with_the_id_only_after_an_unclean_end(tmp_path):
    base = ros_env(33, base={'PATH': os.environ['PATH'], respawn.INSTANCE_DIR_ENV: str(tmp_path)})
    env = dict(base)
    instance, line = respawn.prepare('fusion', env)
    assert instance is not None and line is None and env == base      # a first start: automatic id
    os.close(instance.fd)                                              # as if killed: no clean end
    instance.fd = -1
    env = dict(base)
    instance, line = respawn.prepare('fusion', env)
    assert instance.restarted and 'ended without a clean shutdown' in line
    given = int(line.split('participant id ')[1].split()[0])
    assert given in RESTART_PARTICIPANT_IDS
    assert env['FASTDDS_DEFAULT_PROFILES_FILE'] != base['FASTDDS_DEFAULT_PROFILES_FILE']
    root = ET.parse(env['FASTDDS_DEFAULT_PROFILES_FILE']).getroot()
    participant = root.find('f:profiles/f:participant', NS)
    assert participant.find('f:rtps/f:participantID', NS).text == str(given)
    assert participant.find('f:rtps/f:userTransports/f:transport_id', NS).text == 'shm_large'  # ours kept
    instance.clean_end()
    for env in ({**base, SUPERVISOR_ENV: 'fmdrive run'}, {**base, 'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}):
        assert respawn.prepare('fusion', dict(env)) == (None, None)     # fmdrive run's job; not Fast DDS


def test_the_profile_goes_through_the_variable_the_distributions_fast_dds_reads_and_a_users_wins():
    new, old = 'FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE'      # Fast DDS 3, 2
    env = ros_env(3, base={})                                     # the Kilted wheels: no ROS_DISTRO
    assert env[new].endswith('fastdds_large_messages.xml') and old not in env   # Kilted warns on the old one
    humble = ros_env(3, base={'ROS_DISTRO': 'humble'})
    assert humble[old] == env[new] and new not in humble
    theirs = ros_env(3, base={'ROS_DISTRO': 'jazzy', old: '/opt/my.xml'})
    assert theirs[old] == '/opt/my.xml'
    assert ros_env(3, base={new: '/opt/my.xml', old: '/opt/other.xml'}) == {**ros_env(3, base={}), new: '/opt/my.xml'}
    assert not any(v in ros_env(3, large_messages=False, base=env) for v in PROFILE_ENV_VARS)
    assert launch_profile_env('/share/x.xml', env={}) == {new: '/share/x.xml'}
    assert launch_profile_env('/share/x.xml', env={'ROS_DISTRO': 'jazzy'}) == {old: '/share/x.xml'}
    assert launch_profile_env('/share/x.xml', env={old: '/opt/my.xml'}) == {}


def test_only_an_exit_with_0_or_2_is_a_clean_end(tmp_path):
    """A node that exits asking for a restart (75: its transport lost) or crashes is followed by
    one with a fresh id, as after a kill; a Ctrl-C or a refused parameter is a clean end."""
    (tmp_path / 'ex_nodes').mkdir()
    (tmp_path / 'ex_nodes' / '__init__.py').write_text('')
    (tmp_path / 'ex_nodes' / 'ends.py').write_text(
        'import os, sys\n\ndef main(args=None):\n    code = int(os.environ["END_WITH"])\n'
        '    if code == 99:\n        raise RuntimeError("crash")\n    sys.exit(code)\n')
    env = ros_env(44, base=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')]),
                                **{respawn.INSTANCE_DIR_ENV: str(tmp_path / 'claims')}))
    env.pop(SUPERVISOR_ENV, None)
    seen = []
    for end in (0, 75, 2, 99, 0):
        out = subprocess.run([sys.executable, '-m', 'fmdrive.nodes', 'ex_nodes.ends'], env={**env, 'END_WITH': str(end)},
                             capture_output=True, text=True, timeout=60)
        seen.append('Fast DDS participant id' in out.stderr)
    # what each start found: first start; after 0; after 75 (fresh id); after 2; after the crash (fresh id)
    assert seen == [False, False, True, False, True]


@pytest.mark.timeout(120)
def test_a_node_killed_and_started_again_by_another_supervisor_listens_on_a_fresh_id(ros_domain, tmp_path):
    """Through the real Fast DDS, a node started as ros2 launch starts it (the same command again)."""
    (tmp_path / 'rs_nodes').mkdir()
    (tmp_path / 'rs_nodes' / '__init__.py').write_text('')
    (tmp_path / 'rs_nodes' / 'idle.py').write_text(
        'from rclpy.node import Node\nfrom fmdrive.nodes.base import run_node\n\n'
        'def main(args=None):\n    run_node(lambda: Node("idle"), args)\n')
    env = ros_env(ros_domain, base=dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), os.environ.get('PYTHONPATH', '')]), **{respawn.INSTANCE_DIR_ENV: str(tmp_path / 'claims')}))
    env.pop(SUPERVISOR_ENV, None)
    cmd = [sys.executable, '-m', 'fmdrive.nodes', 'rs_nodes.idle']

    def start(i):
        log = open(tmp_path / f'idle{i}.log', 'w')
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    procs = []
    try:
        procs.append(start(0))
        first_ports = wait_for_listening_ports(procs[0].pid)
        assert first_ports, 'the node opened no Fast DDS shared-memory port'
        procs[0].send_signal(signal.SIGINT)                 # a clean end: the next start is a first start
        assert procs[0].wait(timeout=30) == 0, (tmp_path / 'idle0.log').read_text()
        procs.append(start(1))
        assert wait_for_listening_ports(procs[1].pid)
        assert 'participant id' not in (tmp_path / 'idle1.log').read_text()
        os.kill(procs[1].pid, signal.SIGKILL)               # killed: the next start picks an id
        procs[1].wait(timeout=10)
        procs.append(start(2))
        held = wait_for_listening_ports(procs[2].pid)
        log = (tmp_path / 'idle2.log').read_text()
        assert 'ended without a clean shutdown: Fast DDS participant id' in log, log
        given = int(log.split('participant id ')[1].split()[0])
        assert f'fastdds_port{participant_ports(ros_domain, given)[1]}' in held, (given, held)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
