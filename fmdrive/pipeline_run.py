"""Replay a bag through the running graph and record its outputs: what `fmdrive demo`,
`fmdrive bench pipeline|soak` and the integration tests do.

    graph (one process per node)  <-  replay (this process, each message stamped at publish)
    recorder (a process)          <-  every output topic, stored with its receive time

Replay stamps every message with the wall time at which it is published (as a live sensor would)
and saves the (bag stamp, published stamp) pairs in replay.json, so `receive time - header.stamp`
at the recorder is the true latency of each hop at any rate, and eval gives each output its bag
stamp back. The nodes run without sim time, as on the vehicle.

Nothing here waits for a fixed time: the recorder is ready once it has heard every node on
/diagnostics, and the run ends once the graph's outputs have stopped growing and every node has
reported its input counts since (read back from the recorder's status file), so the last frames,
and the counts DDS loss is computed from, are in the output bag.

--remap FROM:=TO and -p node.param:=value (add_graph_arguments / graph_options) are parsed here
once for `fmdrive run`, `demo` and the benchmarks.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fmdrive import config, interrupts
from fmdrive.graph import GRAPH, GraphError, GraphProcesses, die_with_parent, subscribes
from fmdrive.rosenv import close_node, open_node, random_domain_id, ros_env

# hops measured from the sensor stamp (the camera's objects from their image's, the rest from the
# LiDAR sweep's), in pipeline order
HOP_TOPICS = (config.TOPICS['camera_objects'], config.TOPICS['lidar_objects'], config.TOPICS['objects'],
              config.TOPICS['scene'], config.TOPICS['plan'], config.TOPICS['trajectory'])
RECORD_TOPICS = config.OUTPUT_TOPICS
SENSOR_KEYS = ('points', 'odometry', 'image')
# what a replay waits for before its first message: the sensors' readers, and /tf_static's (the
# LiDAR encoder's first cloud otherwise waits for the latched transforms to arrive: base.py
# lookup_waiting, up to TF_WAIT_S, while clouds queue behind it)
WAIT_KEYS = SENSOR_KEYS + ('tf_static',)
# the graph is done with the replay once no sensor-driven output has come for this long (more than
# one frame's work); plan/trajectory/markers are left out: the planner's watchdog keeps publishing
# stop plans when scenes stop
QUIET_S = 1.5
DRAIN_WATCH_TOPICS = tuple(config.TOPICS[k] for k in ('lidar_objects', 'lanes', 'objects', 'scene',
                                                       'overlay'))
DRAIN_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- --remap / -p
def add_graph_arguments(parser) -> None:
    """--remap FROM:=TO and -p node.param:=value, for every command that starts the graph."""
    from fmdrive.bags.replay import parse_remap
    parser.add_argument('--remap', action='append', default=[], metavar='FROM:=TO', type=parse_remap,
                        help='rename a topic (repeatable): a topic of the bag is published under TO; '
                             'any other is remapped in every node (-r FROM:=TO)')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NODE.PARAM:=VALUE',
                        type=parse_param_override, dest='params',
                        help='set a node parameter (repeatable), e.g. -p planner.speed_limit_mps:=8.0')


def parse_param_override(text: str) -> tuple[str, str, str]:
    """'node.param:=value' -> (node, param, value) for a node of the graph and a parameter it
    declares (argparse type: a mistake is one line naming what exists)."""
    target, sep, value = text.partition(':=')
    node, dot, param = target.partition('.')
    if not sep or not dot or not node or not param or value == '':
        raise argparse.ArgumentTypeError(f'parameter {text!r} is not NODE.PARAM:=VALUE '
                                         '(e.g. planner.speed_limit_mps:=8.0)')
    names = [n.name for n in GRAPH]
    if node not in names:
        raise argparse.ArgumentTypeError(f'-p {text}: no node {node!r} in the graph; nodes: '
                                         f'{", ".join(names)}')
    declared = config.node_params(node)
    if param not in declared and param != 'use_sim_time':
        raise argparse.ArgumentTypeError(f'-p {text}: node {node} has no parameter {param!r}; it has '
                                         f'{", ".join(sorted(declared))}')
    return node, param, value


def graph_options(args) -> tuple[dict, dict]:
    """(remaps {from: to}, overrides {node: {param: value}}) of parsed add_graph_arguments."""
    overrides: dict[str, dict[str, str]] = {}
    for node, param, value in getattr(args, 'params', None) or []:
        overrides.setdefault(node, {})[param] = value
    return dict(getattr(args, 'remap', None) or []), overrides


def graph_processes(env, log_dir, remaps: dict | None = None, **kwargs) -> GraphProcesses:
    """GraphProcesses with node remaps when there are any (refused in one line if this graph.py
    cannot apply them)."""
    if remaps:
        import inspect
        if 'remaps' not in inspect.signature(GraphProcesses.__init__).parameters:
            raise GraphError('remapping topics inside the nodes is not supported by this fmdrive '
                             f'version ({", ".join(f"{a}:={b}" for a, b in remaps.items())}); '
                             'remap topics of the bag instead')
        kwargs['remaps'] = remaps
    return GraphProcesses(env, log_dir, **kwargs)


# ---------------------------------------------------------------- the run
def expected_subscribers(nodes, keys, remaps: dict | None = None) -> dict:
    """{topic: the names of the graph nodes that always subscribe to it} for the given config.TOPICS
    keys (named as the nodes see them after remaps); lazy inputs (taken only while watched) are
    not listed, and are waited for only when they are there (replay.missing_subscribers)."""
    remaps = remaps or {}
    return {remaps.get(config.TOPICS[k], config.TOPICS[k]):
            [n.name for n in nodes if (n.uses_tf if k == 'tf_static' else k in n.eager_inputs)] for k in keys}


def _read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _wait(condition, what: str, timeout_s: float, proc: subprocess.Popen | None = None,
          period_s: float = 0.1):
    """Poll condition() (another process's observable state) until true; GraphError on timeout
    or when proc exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        interrupts.check()   # a Ctrl-C swallowed inside a finaliser still stops the run
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise GraphError(f'{what}: the process exited with code {proc.returncode}')
        time.sleep(period_s)  # polling interval, not a synchronisation
    raise GraphError(f'{what}: not within {timeout_s:.0f} s')


def _wait_for_subscriptions(name: str, topics, proc: subprocess.Popen, timeout_s: float = 30.0):
    """Until the process's node `name` has subscribed to all `topics`."""
    probe_handles = open_node('fmdrive_probe_recorder')
    try:
        _wait(lambda: subscribes(probe_handles[1], name, topics), f'{name} subscribing', timeout_s,
              proc, period_s=0.2)
    finally:
        close_node(*probe_handles)


def _start_recorder(env, output: Path, status: Path, log_path: Path,
                    topics=RECORD_TOPICS) -> subprocess.Popen:
    log = open(log_path, 'w')
    return subprocess.Popen(
        [sys.executable, '-m', 'fmdrive.cli', 'record', *topics, '-o', str(output),
         '--no-progress', '--status-file', str(status)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=die_with_parent)


def _stop_recorder(recorder: subprocess.Popen) -> None:
    if recorder.poll() is None:
        os.killpg(recorder.pid, signal.SIGINT)   # it drains, then closes the bag
        try:
            recorder.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(recorder.pid, signal.SIGKILL)
            recorder.wait()


def _wait_until_drained(status: Path, recorder, n_nodes: int, watch=DRAIN_WATCH_TOPICS) -> None:
    """Until the graph's sensor-driven outputs have not grown for QUIET_S and every node has put
    its final input counts on /diagnostics (2 x nodes diagnostics messages since)."""
    diagnostics = config.TOPICS['diagnostics']
    state = {'outputs': None, 'since': time.monotonic(), 'diag_at_quiet': None}

    def drained() -> bool:
        counts = _read_status(status).get('counts', {})
        outputs = tuple(counts.get(t, 0) for t in watch)
        now = time.monotonic()
        if outputs != state['outputs']:
            state.update(outputs=outputs, since=now, diag_at_quiet=None)
            return False
        if now - state['since'] < QUIET_S:
            return False
        if state['diag_at_quiet'] is None:
            state['diag_at_quiet'] = counts.get(diagnostics, 0)
        return counts.get(diagnostics, 0) >= state['diag_at_quiet'] + 2 * n_nodes

    _wait(drained, 'graph outputs settling after the replay', DRAIN_TIMEOUT_S, recorder)


def replay_through_graph(bag: str | os.PathLike, out_dir: str | os.PathLike, rate: float = 1.0,
                         progress: bool = True, overrides: dict | None = None,
                         remaps: dict | None = None, loop_s: float | None = None,
                         on_replay_started=None, record_topics=RECORD_TOPICS) -> dict:
    """Run the graph on `bag`; writes out_dir/output (MCAP of RECORD_TOPICS), out_dir/logs/,
    out_dir/replay.json and out_dir/latency.json. Returns the latency summary.

    remaps {from: to}: a topic of the bag is published under `to`; other names are remapped in
    every node. overrides {node: {param: value}}. loop_s: replay the bag in a loop this long
    (soak). on_replay_started(graph): called once the replay begins (the soak samples RSS).
    record_topics: what the recorder keeps (the soak leaves the overlay images out).
    KeyboardInterrupt when the replay was interrupted (graph and recorder are stopped first).
    """
    from fmdrive.bags.reader import BagReader
    from fmdrive.bags.replay import replay
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / 'output'
    if output.exists():
        import shutil
        shutil.rmtree(output)
    for stale in ('replay.json', 'latency.json'):
        (out_dir / stale).unlink(missing_ok=True)
    with BagReader(bag) as reader:
        bag_topics = set(reader.topics)
    remaps = dict(remaps or {})
    replay_remaps = {a: b for a, b in remaps.items() if a in bag_topics}
    node_remaps = {a: b for a, b in remaps.items() if a not in bag_topics}
    published_names = {replay_remaps.get(t, t) for t in bag_topics}
    wanted = expected_subscribers(GRAPH, WAIT_KEYS, node_remaps)
    lidar_topic = node_remaps.get(config.TOPICS['points'], config.TOPICS['points'])
    if lidar_topic not in published_names:
        raise GraphError(f'the bag has no LiDAR topic {lidar_topic}: it has '
                         f'{", ".join(sorted(bag_topics))}; rename yours with '
                         f'--remap YOUR_TOPIC:={lidar_topic}')
    wait_for = {t: n for t, n in wanted.items() if t in published_names}

    domain = int(os.environ.get('ROS_DOMAIN_ID') or random_domain_id())
    env = ros_env(domain)
    os.environ.update(env)  # the replay below runs in this process
    graph = graph_processes(env, out_dir / 'logs', node_remaps, overrides=overrides).start()
    recorder, stats = None, None
    status = Path(tempfile.mkstemp(prefix='fmdrive_record_', suffix='.json')[1])
    try:
        graph.wait_ready()
        recorder = _start_recorder(env, output, status, out_dir / 'logs' / 'record.log', record_topics)
        _wait_for_subscriptions('fmdrive_record', record_topics, recorder)
        # the recorder's subscriptions have matched the nodes once it hears each of them
        n_nodes = len(graph.nodes)
        _wait(lambda: _read_status(status).get('counts', {}).get(config.TOPICS['diagnostics'], 0)
              >= 2 * n_nodes, 'recorder hearing every node', 30.0, recorder)
        if on_replay_started is not None:
            on_replay_started(graph)
        import threading
        stop, time_up = threading.Event(), threading.Event()
        timer = threading.Timer(loop_s or 0.0, lambda: (time_up.set(), stop.set()))
        if loop_s is not None:
            timer.start()
        try:
            stats = replay(str(bag), rate=rate, restamp=True, progress=progress,
                           remap=replay_remaps, wait_for_subscribers=wait_for,
                           loop=loop_s is not None, stop=stop)
        finally:
            timer.cancel()
        if (stats['interrupted'] or interrupts.interrupted()) and not time_up.is_set():
            raise KeyboardInterrupt  # Ctrl-C / SIGTERM: no drain, no summary
        _wait_until_drained(status, recorder, n_nodes, [t for t in DRAIN_WATCH_TOPICS if t in record_topics])
        dead = graph.dead()
        if dead:
            raise GraphError('graph nodes died during replay: ' + ', '.join(
                f'{n} (code {c}):\n{graph.log_tail(n)}' for n, c in dead.items()))
    finally:
        if recorder is not None:
            _stop_recorder(recorder)
        graph.stop()
        status.unlink(missing_ok=True)
        if stats is not None:
            (out_dir / 'replay.json').write_text(json.dumps(stats, default=str))
    summary = latency_from_output(output, stats, lidar_topic)
    (out_dir / 'latency.json').write_text(json.dumps(summary, indent=1))
    return summary


def closed_loop_through_graph(spec, camera, extrinsics: dict, out_dir: str | os.PathLike,
                              overrides: dict | None = None, remaps: dict | None = None,
                              plan_timeout_s: float = 3.0, progress: bool = True) -> dict:
    """The graph (separate processes, use_sim_time) drives the simulated ego of `spec` over DDS
    (fmdrive/sim/serve.py, lock-step on /clock); writes out_dir/closed_loop.json and out_dir/logs/.
    KeyboardInterrupt when interrupted (the graph is stopped first)."""
    from fmdrive.sim.serve import serve
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'closed_loop.json').unlink(missing_ok=True)
    domain = int(os.environ.get('ROS_DOMAIN_ID') or random_domain_id())
    env = ros_env(domain)
    os.environ.update(env)  # the simulator below runs in this process
    graph = graph_processes(env, out_dir / 'logs', remaps, overrides=overrides, use_sim_time=True).start()
    try:
        wanted = expected_subscribers(GRAPH, WAIT_KEYS, remaps)
        result = serve(spec, camera, extrinsics, plan_timeout_s=plan_timeout_s, progress=progress,
                       wait_for_subscribers=wanted, before_start=graph.wait_ready)
        if result['interrupted'] or interrupts.interrupted():
            raise KeyboardInterrupt
        dead = graph.dead()
        if dead:
            raise GraphError('graph nodes died during the closed loop: ' + ', '.join(
                f'{n} (code {c}):\n{graph.log_tail(n)}' for n, c in dead.items()))
    finally:
        graph.stop()
    (out_dir / 'closed_loop.json').write_text(json.dumps(result, indent=1))
    return result


# ---------------------------------------------------------------- latency and loss
WARMUP_S = 1.0


def _pct(values, q):
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def latency_from_output(output: str | os.PathLike, replay_stats: dict,
                        lidar_topic: str = config.TOPICS['points']) -> dict:
    """Per hop p50/p99 of (receive time at the recorder - LiDAR stamp), end to end = trajectory;
    dropped sensor frames = LiDAR frames published by replay without a trajectory for their stamp.
    Only outputs stamped with a replayed stamp count (the planner's watchdog stop plans carry the
    time they were made).
    Input loss, three kinds side by side: throttled (a node's rate gate skipped the frame at the
    door, 'throttled_inputs'), queue drops (a node's bounded queue dropped the oldest,
    '<topic>/dropped' on /diagnostics) and DDS loss (replay published n on a topic, or the recorder
    heard n on a topic between nodes, and the node's callback received fewer: '<topic>/received' in
    its last /diagnostics)."""
    from fmdrive.bags.reader import BagReader
    from fmdrive.msgs import stamp_to_ns
    arrivals: dict[str, dict[int, int]] = {t: {} for t in HOP_TOPICS}
    stamp_map = (replay_stats or {}).get('stamp_map_ns')
    sensor_stamps = {int(published) for _, published in stamp_map} if stamp_map else None
    last_values: dict[str, dict] = {}
    with BagReader(output) as reader:
        topics = [t for t in list(arrivals) + [config.TOPICS['diagnostics']] if t in reader.topics]
        for topic, recv_ns, msg in reader.messages(topics):
            if topic == config.TOPICS['diagnostics']:
                for st in msg.status:
                    last_values[st.name.split('/')[-1]] = {v.key: v.value for v in st.values}
                continue
            stamp = stamp_to_ns(msg.header.stamp)
            if sensor_stamps is None or stamp in sensor_stamps:  # not e.g. watchdog stop plans
                arrivals[topic].setdefault(stamp, recv_ns)
    published = {t: int(n) for t, n in (replay_stats or {}).get('published', {}).items()}
    lidar_sent = published.get(lidar_topic, 0)
    hops = {}
    for topic in HOP_TOPICS:
        lat = [(recv - stamp) / 1e6 for stamp, recv in arrivals[topic].items()]
        hops[topic] = {'p50_ms': _pct(lat, 50), 'p99_ms': _pct(lat, 99), 'count': len(lat)}
    e2e = [(recv - stamp) / 1e6 for stamp, recv in arrivals[config.TOPICS['trajectory']].items()]
    # the first WARMUP_S of sensor time: every node's first frames (page faults, first calls,
    # discovery still settling) - reported apart so a rate's steady state can be compared
    first = min((int(p) for _, p in stamp_map), default=None) if stamp_map else \
        min(arrivals[config.TOPICS['trajectory']], default=None)
    steady = [(recv - stamp) / 1e6 for stamp, recv in arrivals[config.TOPICS['trajectory']].items()
              if first is not None and stamp >= first + int(WARMUP_S * 1e9)]
    queue_dropped = {node: int(kv['dropped_inputs']) for node, kv in last_values.items()
                     if 'dropped_inputs' in kv}
    throttled = {node: int(kv['throttled_inputs']) for node, kv in last_values.items()
                 if int(kv.get('throttled_inputs', '0'))}
    # what each input was sent: replay's count on the replayed topics; between nodes, what the
    # recorder heard of a hop (a lower bound: the recorder may miss some too; the first message
    # of a link can be lost where a gap detector sees nothing)
    sent_counts = {**{t: len(arrivals[t]) for t in HOP_TOPICS if arrivals[t]}, **published}
    dds_lost: dict[str, dict[str, int]] = {}
    for node, kv in last_values.items():
        for topic, sent in sent_counts.items():
            received = kv.get(f'{topic}/received')
            if kv.get(f'{topic}/qos') == 'paused':   # the node stopped taking it (e.g. /tf, all static)
                continue
            if received is not None and received.isdigit():
                dds_lost.setdefault(node, {})[topic] = max(0, sent - int(received))
    return {
        'e2e_p50_ms': _pct(e2e, 50), 'e2e_p99_ms': _pct(e2e, 99), 'e2e_max_ms': _pct(e2e, 100),
        'e2e_min_ms': _pct(e2e, 0),
        'e2e_p99_ms_after_warmup': _pct(steady, 99), 'warmup_s': WARMUP_S,
        'sensor_frames': lidar_sent,
        'dropped_sensor_frames': max(0, lidar_sent - len(arrivals[config.TOPICS['trajectory']])),
        'queue_dropped_inputs': sum(queue_dropped.values()),
        'dropped_inputs_by_node': queue_dropped,
        'throttled_inputs': sum(throttled.values()),     # skipped by a node's rate gate (max_rate_hz)
        'throttled_inputs_by_node': throttled,
        'dds_lost_inputs': sum(n for per in dds_lost.values() for n in per.values()),
        'dds_lost_inputs_by_node': dds_lost,
        'published_by_replay': published,
        'rate': (replay_stats or {}).get('rate'),
        'hops': hops,
    }
