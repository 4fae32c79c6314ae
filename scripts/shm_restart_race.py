#!/usr/bin/env python3
"""How often a participant restarted after kill -9 comes back deaf over Fast DDS shared memory, and
whether fmdrive/shm_ports.py sees it (the cause of issue 12's rare supervision-test failure).

N plain rclpy processes publish their name on one topic every 0.1 s and print what they hear. Each
round kills one at random (SIGKILL), starts it again 1 s later (fmdrive run's respawn delay) and,
after --settle seconds, asks: whom did the new process hear in the last --settle/2 seconds (all
peers: whole; some: partial, e.g. a peer stranded in an earlier round; none: deaf), did Fast DDS log
"Failed init_port", and does stranded_ports() on its /proc say it is cut off. Prints one line per
round and a summary line (JSON): rounds per hearing and how many of each shm_ports flagged.

  python scripts/shm_restart_race.py --peers 5 --rounds 20        # ~4 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEER = r'''
import sys, time, rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node('race_' + sys.argv[1])
pub = node.create_publisher(String, '/shm_race', 10)
node.create_subscription(String, '/shm_race', lambda m: print(f'{time.time():.2f} {m.data}', flush=True), 10)
while rclpy.ok():
    pub.publish(String(data=sys.argv[1]))
    rclpy.spin_once(node, timeout_sec=0.1)
'''


def heard_since(log_path: str, since: float, me: str) -> set:
    peers = set()
    with open(log_path, errors='replace') as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1] != me:
                try:
                    if float(parts[0]) >= since:
                        peers.add(parts[1])
                except ValueError:
                    pass
    return peers


def main(argv=None) -> int:
    from fmdrive.rosenv import random_domain_id, ros_env
    from fmdrive.shm_ports import stranded_ports
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--peers', type=int, default=5)
    ap.add_argument('--rounds', type=int, default=20)
    ap.add_argument('--settle', type=float, default=8.0, help='seconds after the restart before judging')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    env = ros_env(random_domain_id())
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix='shm_race_')
    procs, logs = {}, {}

    def start(name: str, tag: str):
        logs[name] = os.path.join(work, f'{name}_{tag}.log')
        with open(logs[name], 'w') as log:
            procs[name] = subprocess.Popen([sys.executable, '-c', PEER, name], env=env, stdout=log,
                                           stderr=subprocess.STDOUT)
    names = [f'n{i}' for i in range(args.peers)]
    counts = {'rounds': 0, 'fastdds_errors': 0}
    for kind in ('whole', 'partial', 'deaf'):
        counts[kind] = counts[f'{kind}_flagged'] = 0
    try:
        for name in names:
            start(name, 'start')
            time.sleep(0.5)
        time.sleep(3.0)
        for r in range(1, args.rounds + 1):
            name = rng.choice(names)
            procs[name].kill()
            procs[name].wait()
            time.sleep(1.0)
            start(name, f'r{r}')
            time.sleep(args.settle)
            pid = procs[name].pid
            problems = stranded_ports(f'/proc/{pid}/fd', f'/proc/{pid}/maps')
            heard = heard_since(logs[name], time.time() - args.settle / 2, name)
            with open(logs[name], errors='replace') as f:
                errors = sum('Failed init_port' in line for line in f)
            kind = 'whole' if len(heard) == args.peers - 1 else ('partial' if heard else 'deaf')
            counts['rounds'] += 1
            counts[kind] += 1
            counts[f'{kind}_flagged'] += bool(problems)
            counts['fastdds_errors'] += errors > 0
            print(f'round {r:2d}: restarted {name}: {kind}, heard {len(heard)}/{args.peers - 1} peers, '
                  f'Fast DDS init_port errors {errors}, shm_ports: {"; ".join(problems) or "ok"}', flush=True)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    print(json.dumps(counts))
    return 0


if __name__ == '__main__':
    sys.exit(main())
