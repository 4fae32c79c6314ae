"""A user's own bag end to end (issue 11): other frame ids with their own /tf_static chain, a LiDAR
mounted rotated, a body-convention camera frame, driver topic names and sensor-data QoS, 0..1
intensity, no odometry. `fmdrive demo --bag` must detect the cars where the ground truth has them:
objects in the wrong frame would score nothing."""
import json
import subprocess
import sys

import pytest

from fmdrive import config

from foreign_bag import make_foreign_run, remaps


@pytest.mark.timeout(420)
def test_a_foreign_bag_runs_end_to_end_with_its_own_tf_and_scores_like_ours(ros_domain, tmp_path):
    sim = tmp_path / 'sim'
    subprocess.run([sys.executable, '-m', 'fmdrive.cli', 'sim', '--scenario', 'cut_in', '--seed', '1',
                    '--duration', '6', '-o', str(sim), '--no-progress'], check=True, capture_output=True)
    bag = make_foreign_run(sim, tmp_path / 'user')
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'fmdrive.cli', 'demo', '--bag', str(bag), '--out', str(out)]
    for src, dst in remaps().items():
        cmd += ['--remap', f'{src}:={dst}']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    latency = json.loads((out / 'latency.json').read_text())
    metrics = json.loads((out / 'metrics.json').read_text())
    print(json.dumps({'latency': {k: latency.get(k) for k in ('e2e_p50_ms', 'e2e_p99_ms', 'sensor_frames',
                                                               'dropped_sensor_frames')},
                      'detection': metrics['detection']}))
    assert latency['sensor_frames'] == 60
    # plans without odometry (how many frames a loaded machine drops is the benchmark's business)
    assert latency['hops'][config.TOPICS['trajectory']]['count'] >= 10, 'no plans without odometry'
    assert metrics['detection']['car_bev_ap50'] >= 0.6, metrics['detection']
    assert (out / 'report.png').stat().st_size > 10_000
    logs = (out / 'logs' / 'lidar_encoder.log').read_text()
    assert 'fallback calibration' not in logs, 'the bag\'s own TF was not used for the cloud frame'
