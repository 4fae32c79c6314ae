"""Replay a bag through the running graph and record its outputs: what `fmdrive demo`,
`fmdrive bench pipeline` and the integration tests do.

    graph (one process per node)  <-  replay (this process, restamped to wall time)
    recorder (a process)          <-  every output topic, stored with its receive time

Stamps are shifted to wall time at replay (one constant offset, saved in replay.json), exactly as
live sensors would stamp them, so `receive time - header.stamp` at the recorder is the true
end-to-end latency of each hop, and the nodes run without sim time, as on the vehicle.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fmdrive import config
from fmdrive.graph import GraphError, GraphProcesses, die_with_parent, subscribes
from fmdrive.rosenv import close_node, open_node, random_domain_id, ros_env

# hops measured from the LiDAR stamp, in pipeline order
HOP_TOPICS = (config.TOPICS['lidar_objects'], config.TOPICS['objects'], config.TOPICS['scene'],
              config.TOPICS['plan'], config.TOPICS['trajectory'])
RECORD_TOPICS = config.OUTPUT_TOPICS


def expected_subscribers(nodes, keys) -> dict:
    """{topic: how many graph nodes subscribe to it} for the given config.TOPICS keys."""
    return {config.TOPICS[k]: sum(k in n.inputs for n in nodes) for k in keys}


def _wait_for_subscriptions(name: str, topics, proc: subprocess.Popen, timeout_s: float = 30.0):
    """Until the process's node `name` has subscribed to all `topics`."""
    probe_handles = open_node('fmdrive_probe_recorder')
    probe = probe_handles[1]
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise GraphError(f'{name} exited with code {proc.returncode}')
            if subscribes(probe, name, topics):
                return
            time.sleep(0.2)
        raise GraphError(f'{name} did not come up within {timeout_s:.0f} s')
    finally:
        close_node(*probe_handles)


def replay_through_graph(bag: str | os.PathLike, out_dir: str | os.PathLike, rate: float = 1.0,
                         progress: bool = True, settle_s: float = 2.0, overrides: dict | None = None) -> dict:
    """Run the graph on `bag`; writes out_dir/output (MCAP of RECORD_TOPICS), out_dir/logs/,
    out_dir/replay.json and out_dir/latency.json. Returns the latency summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / 'output'
    if output.exists():
        import shutil
        shutil.rmtree(output)
    domain = int(os.environ.get('ROS_DOMAIN_ID') or random_domain_id())
    env = ros_env(domain)
    os.environ.update(env)  # the replay below runs in this process
    graph = GraphProcesses(env, out_dir / 'logs', overrides=overrides).start()
    recorder = None
    try:
        graph.wait_ready()
        rec_log = open(out_dir / 'logs' / 'record.log', 'w')
        recorder = subprocess.Popen(
            [sys.executable, '-m', 'fmdrive.cli', 'record', *RECORD_TOPICS, '-o', str(output), '--no-progress'],
            env=env, stdout=rec_log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        _wait_for_subscriptions('fmdrive_record', RECORD_TOPICS, recorder)
        time.sleep(1.0)  # let the recorder's subscriptions match the graph's publishers
        from fmdrive.bags.replay import replay
        stats = replay(str(bag), rate=rate, restamp=True, progress=progress,
                       wait_for_subscribers=expected_subscribers(graph.nodes, ('points', 'odometry', 'image')))
        time.sleep(settle_s)  # the last frames travel through the graph
        dead = graph.dead()
        if dead:
            raise GraphError('graph nodes died during replay: ' + ', '.join(
                f'{n} (code {c}):\n{graph.log_tail(n)}' for n, c in dead.items()))
    finally:
        if recorder is not None and recorder.poll() is None:
            os.killpg(recorder.pid, signal.SIGINT)
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(recorder.pid, signal.SIGKILL)
        graph.stop()
    (out_dir / 'replay.json').write_text(json.dumps(stats, indent=1, default=str))
    summary = latency_from_output(output, stats)
    (out_dir / 'latency.json').write_text(json.dumps(summary, indent=1))
    return summary


def _pct(values, q):
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def latency_from_output(output: str | os.PathLike, replay_stats: dict) -> dict:
    """Per hop p50/p99 of (receive time at the recorder - LiDAR stamp), end to end = trajectory;
    dropped sensor frames = LiDAR frames published by replay without a trajectory for their stamp."""
    from fmdrive.bags.reader import BagReader
    from fmdrive.msgs import stamp_to_ns
    arrivals: dict[str, dict[int, int]] = {t: {} for t in HOP_TOPICS}
    diag_dropped = {}
    reader = BagReader(output)
    for topic, recv_ns, msg in reader.messages(list(arrivals) + [config.TOPICS['diagnostics']]):
        if topic == config.TOPICS['diagnostics']:
            for st in msg.status:
                kv = {v.key: v.value for v in st.values}
                if 'dropped_inputs' in kv:
                    diag_dropped[st.name] = int(kv['dropped_inputs'])
            continue
        arrivals[topic].setdefault(stamp_to_ns(msg.header.stamp), recv_ns)
    lidar_sent = int(replay_stats.get('published', {}).get(config.TOPICS['points'], 0))
    hops = {}
    for topic in HOP_TOPICS:
        lat = [(recv - stamp) / 1e6 for stamp, recv in arrivals[topic].items()]
        hops[topic] = {'p50_ms': _pct(lat, 50), 'p99_ms': _pct(lat, 99), 'count': len(lat)}
    e2e = [(recv - stamp) / 1e6 for stamp, recv in arrivals[config.TOPICS['trajectory']].items()]
    return {
        'e2e_p50_ms': _pct(e2e, 50), 'e2e_p99_ms': _pct(e2e, 99), 'e2e_max_ms': _pct(e2e, 100),
        'sensor_frames': lidar_sent,
        'dropped_sensor_frames': max(0, lidar_sent - len(arrivals[config.TOPICS['trajectory']])),
        'dropped_inputs_by_node': diag_dropped,
        'hops': hops,
    }
