"""A mistake a user can make on the command line ends in one line on stderr and exit code 2."""
import subprocess
import sys
import time

import pytest

from conftest import LineReader


def fmdrive(*args, timeout=120):
    return subprocess.run([sys.executable, '-m', 'fmdrive.cli', *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize('args, words', [
    (['sim', '--scenario', 'flying_cars', '-o', '{tmp}/run'], 'unknown scenario'),
    (['sim', '--scenario', '/nonexistent/scenario.yaml'], 'does not exist'),
    (['eval', '/nonexistent/run'], 'nonexistent'),
    (['report', '/nonexistent/run'], 'does not exist'),
    (['replay', '/nonexistent/bag'], 'nonexistent'),
    (['calib-check', '--pcd', '/nonexistent.pcd', '--image', 'x.png', '--camera-info', 'c.yaml',
      '--extrinsics', 'e.yaml'], 'nonexistent'),
    (['calib-check'], 'give a BAG'),
    (['run', '--remap', '/velodyne_points'], 'FROM:=TO'),
    (['bench', 'lidar', '--lidar-backend', 'onnxruntime'], 'bench lidar takes no --lidar-backend'),
    (['bench', 'pipeline', '--rate', '0'], '--rate must be > 0'),
    (['train', 'lidar', '--steps', '10'], '--steps is for planner-teacher and planner-student'),
    (['train', 'planner-student', '--steps', '0'], '--steps must be >= 1'),
    (['bench', 'lidar', '--planner-run', '{tmp}'], 'bench lidar takes no --planner-run'),
    (['bench', 'planner', '--planner-run', '/nonexistent/run'], '--planner-run /nonexistent/run'),
    (['eval', 'planner', '--planner-run', '/nonexistent/run'], '--planner-run /nonexistent/run'),
    (['sim', 'dataset', '--scenes', '0', '--out', '{tmp}/data'], '--scenes 0'),
    (['train', 'dataset', '--scenes', '2', '--test-scenes', '-1', '--out', '{tmp}/data'], '--test-scenes -1'),
])
def test_bad_argument_gives_one_line_error_and_exit_2(args, words, tmp_path):
    r = fmdrive(*(a.replace('{tmp}', str(tmp_path)) for a in args))
    assert r.returncode == 2, r.stderr
    assert 'Traceback' not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and 'Warning' not in ln and 'import sre' not in ln]
    assert len(lines) == 1 and words in lines[0], r.stderr


@pytest.mark.parametrize('command', [['sim', 'dataset'], ['train', 'dataset']])
def test_sim_dataset_and_train_dataset_are_one_command(command, monkeypatch, tmp_path, capsys):
    from fmdrive import cli
    from fmdrive.training import dataset
    calls = []
    monkeypatch.setattr(dataset, 'write_dataset', lambda *a, **kw: calls.append((a, kw)) or [])
    assert cli.main([*command, '--out', str(tmp_path), '--scenes', '5', '--val-scenes', '2', '--no-camera',
                     '--no-progress']) == 0
    assert calls == [((str(tmp_path), 5, 2, None), {'camera': False, 'progress': False})]


def test_corrupt_bag_gives_one_line_error(tmp_path):
    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: {version: 8, storage_identifier: mcap}\n')
    (bag / 'bag_0.mcap').write_bytes(b'\x89MCAP0\r\n garbage')
    r = fmdrive('replay', str(bag))
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr


def test_user_scenario_yaml_simulates_into_a_bag(tmp_path):
    from pathlib import Path
    scenario = Path(__file__).resolve().parent.parent / 'scenarios' / 'cut_in_fog.yaml'
    r = fmdrive('sim', '--scenario', str(scenario), '--duration', '1', '-o', str(tmp_path / 'run'),
                '--no-progress')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'run' / 'bag' / 'metadata.yaml').exists()
    assert (tmp_path / 'run' / 'ground_truth.json').exists()


def test_calib_check_on_a_simulated_bag_scores_the_true_extrinsic_above_a_yawed_one(tmp_path):
    import json

    import numpy as np

    from fmdrive import config
    from fmdrive.calibration.extrinsics import load_extrinsics, save_extrinsics
    from fmdrive.geometry import make_T, rot_z
    run = tmp_path / 'run'
    assert fmdrive('sim', '--scenario', 'car_following', '--seed', '2', '--duration', '1.5', '-o', str(run),
                   '--no-progress').returncode == 0
    r = fmdrive('calib-check', str(run / 'bag'), '--frame', '2', '--frames', '3', '--json')
    true = json.loads(r.stdout)
    assert r.returncode in (0, 1) and true['frames'] == 3 and true['points_in_image'] > 1000

    ext = load_extrinsics(config.EXTRINSICS_FILE)
    # the camera yawed by 2 degrees in base_link: a calibration error calib-check must catch
    wrong = {child: T for child, T in ext.items()}
    wrong['camera_optical'] = make_T(rot_z(np.radians(2.0))) @ ext['camera_optical']
    save_extrinsics(tmp_path / 'wrong.yaml', ext.frame_id, wrong)
    r = fmdrive('calib-check', str(run / 'bag'), '--frame', '2', '--frames', '3', '--json',
                '--extrinsics', str(tmp_path / 'wrong.yaml'))
    yawed = json.loads(r.stdout)
    assert r.returncode == 1 and not yawed['aligned']
    assert true['score'] > 1.1 * yawed['score']


def test_fmdrive_run_starts_the_graph_and_a_kill_leaves_no_node_behind(ros_domain, tmp_path):
    import os
    import signal
    proc = subprocess.Popen([sys.executable, '-m', 'fmdrive.cli', 'run', '--log-dir', str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = LineReader(proc.stdout).until(lambda ln: ln.startswith('graph up:'))
        from fmdrive.graph import GRAPH
        assert line.startswith('graph up: ' + ', '.join(n.name for n in GRAPH)), line
        children = subprocess.run(['pgrep', '-P', str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == len(GRAPH)
        os.kill(proc.pid, signal.SIGKILL)  # the worst case: no chance to clean up
        proc.wait(10)
        # each node gets SIGINT when its parent dies (PR_SET_PDEATHSIG) and shuts down cleanly; on a
        # loaded machine that takes seconds
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(os.path.exists(f'/proc/{pid}') for pid in children):
            time.sleep(0.2)
        alive = []
        for pid in children:
            try:
                with open(f'/proc/{pid}/stat') as f:
                    if f.read().rsplit(')', 1)[1].split()[0] != 'Z':   # zombies (already exited) do not count
                        alive.append(pid)
            except FileNotFoundError:
                pass
        if alive:   # what each survivor is doing (faulthandler: SIGUSR1), for the failure message
            def dumps():
                return sum(p.read_text(errors='replace').count('Current thread 0x') for p in tmp_path.glob('*.log'))
            before = dumps()
            cmdlines = {}
            for pid in alive:
                try:
                    with open(f'/proc/{pid}/cmdline', 'rb') as f:
                        cmdlines[pid] = f.read().replace(b'\0', b' ').decode()[-120:]
                    os.kill(int(pid), signal.SIGUSR1)
                except (FileNotFoundError, ProcessLookupError):
                    pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and dumps() < before + len(cmdlines):
                time.sleep(0.1)   # faulthandler writes from the signal handler: a file to poll, no event
            for pid in alive:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            logs = {p.name: p.read_text(errors='replace').splitlines()[-40:] for p in tmp_path.glob('*.log')}
            raise AssertionError(f'nodes left behind 30 s after fmdrive run was killed: {cmdlines}\n'
                                 + '\n'.join(f'--- {name}\n' + '\n'.join(lines) for name, lines in logs.items()))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_while_the_cli_still_imports_is_one_line_and_exit_130(monkeypatch, capsys):
    from fmdrive import cli

    def interrupted():
        raise KeyboardInterrupt    # what the handler raises when Ctrl-C lands inside an import
    monkeypatch.setattr(cli, 'build_parser', interrupted)
    assert cli.main(['params']) == 130
    assert capsys.readouterr().err == 'fmdrive: interrupted\n'


@pytest.mark.parametrize('interrupted', [True, False])
def test_a_ctrl_c_disguised_as_rclpys_conversion_error_is_an_interruption_only_after_one(monkeypatch, capsys,
                                                                                          interrupted):
    """A Ctrl-C landing while rclpy takes a message comes out as pybind11's RuntimeError: after an
    interrupt the command ends with 'interrupted' and 130; without one, the error is not hidden."""
    import argparse
    import signal

    from fmdrive import cli, interrupts

    def command(args):
        if interrupted:
            interrupts.note()
        raise RuntimeError("Unable to convert call argument '0' to Python object")

    parser = argparse.ArgumentParser(prog='fmdrive')
    parser.add_subparsers(dest='command').add_parser('serve').set_defaults(func=command)
    monkeypatch.setattr(cli, 'build_parser', lambda: parser)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if interrupted:
            assert cli.main(['serve']) == 130
            assert capsys.readouterr().err.strip() == 'fmdrive serve: interrupted'
        else:
            with pytest.raises(RuntimeError, match='Unable to convert'):
                cli.main(['serve'])
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        interrupts.reset()
