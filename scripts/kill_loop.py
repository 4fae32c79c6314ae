#!/usr/bin/env python3
"""Kill -9 the nodes of a running graph over and over, beside busy loops, and count what goes wrong:
the reproduction of issue 12's rare silent node (a process restarted after a peer's or its own
kill -9 that then sits in a Fast DDS take, main thread, GIL held).

`fmdrive run --watchdog-s W` runs the graph on a looping replay of a simulated bag (restamped, as
live sensors); every --period seconds one node picked at random gets SIGKILL. fmdrive run restarts
it; a node that goes silent on /diagnostics for W seconds is taken for hung, its Python and (with
gdb installed) native stacks go to its log, and it is killed and restarted. At the end: one line
per round in OUT/events.txt, fmdrive run's own lines in OUT/run.txt, the node logs in OUT/logs/, and
a summary (JSON) of the exits fmdrive run saw: -9 (ours), 75 (a node cut off from shared memory,
fmdrive/shm_ports.py), 1 (a node's own executor watchdog) and hung nodes.

  python scripts/kill_loop.py OUT --rounds 200          # ~40 min on 2 cores with two busy loops

Measured here (2026-12-05, two busy loops, 12 s period): one silent restarted node in ~300 kills.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_bag(out: Path) -> Path:
    from fmdrive import config
    from fmdrive.bags.sim_writer import write_scenario
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.sim import generate_scenario
    if not (out / 'sim' / 'bag').exists():
        write_scenario(generate_scenario('car_following', seed=3, duration_s=3.0), out / 'sim',
                       CameraModel.from_yaml(config.CAMERA_INFO_FILE), load_extrinsics(config.EXTRINSICS_FILE),
                       progress=False)
    return out / 'sim' / 'bag'


def summarise(run_lines: list[str]) -> dict:
    exits: dict[str, int] = {}
    hung = 0
    for line in run_lines:
        m = re.match(r'node (\S+) exited with code (-?\d+)', line)
        if m:
            exits[m.group(2)] = exits.get(m.group(2), 0) + 1
        hung += line.startswith('node ') and 'is running but has not reported' in line
    return {'exits_by_code': exits, 'hung_reports': hung}


def main(argv=None) -> int:
    from fmdrive.graph import node_pids
    from fmdrive.rosenv import random_domain_id, ros_env
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('out', type=Path)
    ap.add_argument('--rounds', type=int, default=200)
    ap.add_argument('--period', type=float, default=12.0, help='seconds between kills')
    ap.add_argument('--hogs', type=int, default=os.cpu_count() or 2, help='busy loops beside the graph')
    ap.add_argument('--watchdog-s', type=float, default=6.0)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    env = dict(os.environ, **ros_env(random_domain_id()))
    bag = make_bag(args.out)
    hogs = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(args.hogs)]
    run_log = open(args.out / 'run.txt', 'w')
    run = subprocess.Popen([sys.executable, '-m', 'fmdrive.cli', 'run', '--log-dir', str(args.out / 'logs'),
                            '--watchdog-s', str(args.watchdog_s)], stdout=run_log, stderr=subprocess.STDOUT, env=env)
    replay = None
    events = open(args.out / 'events.txt', 'w')
    try:
        deadline = time.monotonic() + 180
        while 'graph up:' not in (args.out / 'run.txt').read_text() and time.monotonic() < deadline:
            if run.poll() is not None:
                raise SystemExit(f'fmdrive run exited with code {run.returncode}: see {args.out / "run.txt"}')
            time.sleep(0.5)    # polling another process's output for its readiness line
        replay = subprocess.Popen([sys.executable, '-m', 'fmdrive.cli', 'replay', str(bag), '--loop', '--restamp',
                                   '--no-progress'], stdout=open(args.out / 'replay.txt', 'w'),
                                  stderr=subprocess.STDOUT, env=env)
        for i in range(args.rounds):
            time.sleep(args.period)
            pids = node_pids(run.pid)
            if not pids:
                continue
            name = rng.choice(sorted(pids))
            print(f'{time.strftime("%H:%M:%S")} round {i} kill {name} {pids[name]}', file=events, flush=True)
            os.kill(pids[name], signal.SIGKILL)
            print(f'\rround {i + 1}/{args.rounds}', end='', file=sys.stderr, flush=True)
        time.sleep(args.period)          # the last kill's restart is seen too
    except KeyboardInterrupt:
        pass
    finally:
        for p in ([replay] if replay else []) + [run]:
            p.send_signal(signal.SIGINT)
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
        if replay is not None:
            replay.kill()
        for h in hogs:
            h.kill()
    summary = summarise((args.out / 'run.txt').read_text(errors='replace').splitlines())
    print('\n' + json.dumps(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
