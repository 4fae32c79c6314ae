"""The node graph: which nodes run, with which parameters, and how they are kept running. One
description, two starters: launch/*.launch.py (launch_ros, on the vehicle) and `fmdrive run`
(processes, where launch is not installable) both read GRAPH and the restart policy from here.
"""
from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fmdrive import config, interrupts
from fmdrive.rosenv import domain_id_of, profile_file, with_profile_file
from fmdrive.shm_ports import EXIT_TRANSPORT_LOST


class GraphError(RuntimeError):
    """A node of the graph died or did not come up; the text holds the tail of its log."""


@dataclass(frozen=True)
class GraphNode:
    name: str            # node name; key of config.NODE_PARAMS
    executable: str      # console script from setup.py (what launch_ros runs)
    module: str          # python module with main() (fmdrive.nodes.start imports it)
    inputs: tuple = ()   # keys of config.TOPICS it subscribes to (a test checks the node's code)
    outputs: tuple = ()  # keys of config.TOPICS it publishes, besides /diagnostics (checked likewise)
    nice: int = 0        # OS niceness; > 0 for what the car drives without (drawing for a human), so
                         # that on a saturated computer it yields the CPU to the driving path
    lazy_inputs: tuple = ()  # of inputs: taken only while someone watches what they are for (the
                             # overlay), like image_transport's lazy subscribers; never waited for
    uses_tf: bool = False    # keeps a TF buffer (nodes/base.py use_tf: /tf_static and /tf); a replay
                             # waits for its /tf_static reader too before the first sensor message

    @property
    def eager_inputs(self) -> tuple:
        return tuple(k for k in self.inputs if k not in self.lazy_inputs)


GRAPH = (
    # camera_encoder: between the sensors and fusion; at most max_rate_hz, LiDAR-only when its model
    # cannot run (fusion does not read its objects yet)
    GraphNode('camera_encoder', 'camera_encoder', 'fmdrive.nodes.camera_encoder_node', ('camera_info', 'image'),
              ('camera_objects', 'camera_features')),
    GraphNode('lidar_encoder', 'lidar_encoder', 'fmdrive.nodes.lidar_encoder_node', ('points',),
              ('lidar_objects', 'lanes'), uses_tf=True),
    GraphNode('fusion', 'fusion', 'fmdrive.nodes.fusion_node',
              ('odometry', 'lanes', 'camera_info', 'speed_limit', 'lidar_objects'), ('objects', 'scene')),
    GraphNode('planner', 'planner', 'fmdrive.nodes.planner_node', ('instruction', 'scene'),
              ('plan', 'trajectory')),
    GraphNode('visualizer', 'visualizer', 'fmdrive.nodes.visualizer_node',
              ('camera_info', 'odometry', 'points', 'objects', 'plan', 'image', 'camera_objects'),
              ('markers', 'overlay'), nice=10,
              lazy_inputs=('camera_info', 'odometry', 'points', 'image', 'camera_objects'), uses_tf=True),
)


def internal_keys(nodes=GRAPH) -> tuple:
    """Keys of config.TOPICS published by one node of `nodes` and read by another (the wiring
    wait_ready checks)."""
    read = {k for n in nodes for k in n.inputs}
    return tuple(k for n in nodes for k in n.outputs if k in read)


INTERNAL_TOPICS = tuple(config.TOPICS[k] for k in internal_keys())

# Supervision, one policy for both starters: a node that dies is started again after
# RESPAWN_DELAY_S (launch_ros respawn_delay); `fmdrive run` gives up on a node restarted
# MAX_RESTARTS times within RESTART_WINDOW_S (a node that cannot stay up is reported, not hammered).
RESPAWN_DELAY_S = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0

# Hung nodes: a node process that is alive but has not reported on /diagnostics (every
# diagnostics_period_s, from the executor that runs its callbacks, so a callback stuck in a loop or
# a deadlock silences it) for WATCHDOG_S is taken for hung by `fmdrive run` (--watchdog-s): its
# thread stacks go to its log (SIGUSR1, fmdrive/nodes/start.py; native ones too with gdb installed),
# DUMP_WAIT_S later it is killed
# (SIGKILL) and so restarted like a node that died. A node not yet reporting since it was (re)started
# gets STARTUP_GRACE_S (model loading). ros2 launch has no such watchdog (respawn acts on exits only).
WATCHDOG_S = 10.0
STARTUP_GRACE_S = 60.0
DUMP_WAIT_S = 2.0
# ...and, where gdb is installed, its native stacks too (what the Python stacks cannot show: where
# inside rclpy / the RMW / Fast DDS a call is blocked): the kill then waits for gdb, at most this long
NATIVE_DUMP_TIMEOUT_S = 20.0

# A restarted node gets a Fast DDS participant id of its own from this range, above the ids that
# automatic assignment hands out (lowest free first: 0..~10 for a graph, its tools and a replay),
# one not handed out within PARTICIPANT_ID_REUSE_S and whose ports are free: with the automatic id
# it would take the id of the process that just died, so the same shared-memory port, while its
# peers are still regenerating that port (fmdrive/shm_ports.py). Measured here
# (scripts/kill_loop.py, two busy loops): a camera encoder so restarted took a corrupted Image and
# Fast DDS's take looped on the deserialization error for good (gdb: the main thread in
# DataReaderImpl::read_or_take -> TypeSupport::deserialize, "Fast CDR exception deserializing message
# of type sensor_msgs::msg::dds_::Image_", the GIL held, the node silent). The range ends at 32:
# with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, rmw_fastrtps announces a participant to the
# localhost ports of ids 0..31 only (measured: two participants with ids 30 and 31 find each other,
# 32 and 33 do not; a participant above 31 is found by the low automatic ids it announces itself
# to, but never by another one above 31).
RESTART_PARTICIPANT_IDS = range(16, 32)
PARTICIPANT_ID_REUSE_S = 30.0
FASTDDS_PORT_BASE, FASTDDS_DOMAIN_GAIN, FASTDDS_PARTICIPANT_GAIN = 7400, 250, 2   # RTPS port mapping
FASTDDS_META_UNICAST_OFFSET, FASTDDS_USER_UNICAST_OFFSET = 10, 11
# Set on the processes `fmdrive run` starts; a node started by anything else (ros2 launch's
# respawn) that follows an unclean end of its predecessor picks its own id (fmdrive/respawn.py)
SUPERVISOR_ENV = 'FMDRIVE_SUPERVISOR'

# How long `fmdrive run` listens for another graph on its domain before starting: an absence cannot
# be observed, only waited for; discovery between processes on one host takes well under a second.
DISCOVERY_WINDOW_S = 3.0


SUPERVISOR_STATUS = 'fmdrive/supervisor'   # `fmdrive run`'s own status on /diagnostics


def supervisor_summary(states: dict[str, dict]) -> tuple[str, str, dict[str, str]]:
    """(level 'OK' | 'WARN' | 'ERROR', message, key/values) of `fmdrive run`'s status on /diagnostics
    from GraphProcesses.states(): OK while every node runs; WARN while one is hung, dead or being
    restarted, or was restarted within RESTART_WINDOW_S; ERROR once one has been given up."""
    given_up = [n for n, s in states.items() if s['state'] == 'given_up']
    down = [f"{n} {s['state']}" for n, s in states.items() if s['state'] not in ('running', 'given_up')]
    restarted = [f"{n} x{s['restarts']}" for n, s in states.items() if s['restarts'] and s['state'] == 'running']
    if given_up:
        level, message = 'ERROR', 'given up (restarted too often): ' + ', '.join(given_up)
    elif down:
        level, message = 'WARN', ', '.join(down)
    elif restarted:
        level, message = 'WARN', f'restarted within {RESTART_WINDOW_S:.0f} s: ' + ', '.join(restarted)
    else:
        level, message = 'OK', f'{len(states)} nodes running'
    values = {}
    for n, s in states.items():
        values[f'{n}/state'] = s['state']
        values[f'{n}/pid'] = str(s['pid'])
        values[f'{n}/restarts_last_{RESTART_WINDOW_S:.0f}s'] = str(s['restarts'])
        values[f'{n}/last_exit'] = '' if s['last_exit'] is None else str(s['last_exit'])
        values[f'{n}/silent_s'] = '' if s['silent_s'] is None else f"{s['silent_s']:.1f}"
    return level, message, values


def params_yaml_text() -> str:
    """config/params.yaml as generated from config.py (a test keeps the file equal to this)."""
    doc = {n.name: {'ros__parameters': config.node_params(n.name)} for n in GRAPH}
    head = ('# Generated from fmdrive/config.py by `fmdrive params > config/params.yaml`; edit config.py,\n'
            '# or copy this file and pass your copy to the launch file (params_file:=...).\n')
    return head + yaml.safe_dump(doc, sort_keys=False)


def node_command(node: GraphNode, params_file: str | os.PathLike | None = None,
                 use_sim_time: bool = False, overrides: dict | None = None,
                 remaps: dict | None = None) -> list[str]:
    """The command line of one node. overrides: {param: value}; remaps: {'/from': '/to'} topic
    remappings (e.g. a bag's /velodyne_points onto /sensors/lidar/points), applied to every node."""
    cmd = [sys.executable, '-m', 'fmdrive.nodes', node.module, '--ros-args', '-r', f'__node:={node.name}']
    for source, target in (remaps or {}).items():
        cmd += ['-r', f'{source}:={target}']
    if params_file:
        cmd += ['--params-file', str(params_file)]
    cmd += ['-p', f'use_sim_time:={"true" if use_sim_time else "false"}']
    for key, value in (overrides or {}).items():
        cmd += ['-p', f'{key}:={value}']
    return cmd


def subscribes(probe, node_name: str, topics) -> bool:
    """Whether `probe` (any rclpy node) sees node_name subscribed to every one of `topics`."""
    try:
        have = {t for t, _ in probe.get_subscriber_names_and_types_by_node(node_name, '/')}
    except Exception:  # noqa: BLE001 - the node is not discovered yet
        return False
    return all(t in have for t in topics)


def graph_nodes_on_domain(names=None, window_s: float = DISCOVERY_WINDOW_S) -> list[str]:
    """Names of our graph's nodes already on this process's ROS domain (ROS_DOMAIN_ID and discovery
    range as set in os.environ): listens for up to window_s, returns as soon as one is seen."""
    from fmdrive.rosenv import close_node, open_node
    names = {n.name for n in GRAPH} if names is None else set(names)
    handles = open_node(f'fmdrive_graph_check_{os.getpid()}')
    probe, executor = handles[1], handles[2]
    try:
        deadline = time.monotonic() + window_s
        while True:
            found = sorted(names & set(probe.get_node_names()))
            if found or time.monotonic() >= deadline:
                return found
            executor.spin_once(timeout_sec=0.1)
    finally:
        close_node(*handles)


def die_with_parent():
    """In the child before exec (Linux): SIGINT when the starting process dies, however it dies,
    so a killed `fmdrive run` never leaves nodes behind."""
    # a child of a process started in the background of a non-interactive shell inherits SIGINT
    # ignored: then neither this death signal nor a graph's stop (SIGINT) would reach it
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    except ValueError:      # not the main thread (cannot happen in a forked child; be safe)
        pass
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def node_pids(parent_pid: int) -> dict[str, int]:
    """{node name: pid} of the live node processes started by the process parent_pid (`fmdrive run`):
    its children whose command line carries `__node:=NAME`, zombies (a killed node not yet reaped)
    left out. For tests and tools that kill or probe one node of a running graph."""
    pids = {}
    children = subprocess.run(['pgrep', '-P', str(parent_pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        try:
            with open(f'/proc/{pid}/stat') as f:
                if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    continue
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                args = f.read().split(b'\0')
        except (FileNotFoundError, ProcessLookupError):
            continue
        for arg in args:
            if arg.startswith(b'__node:='):
                pids[arg[len(b'__node:='):].decode()] = int(pid)
    return pids


def uses_fast_dds(env: dict) -> bool:
    """Whether processes started with env run Fast DDS (rmw_fastrtps*, the default RMW)."""
    return 'fastrtps' in env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')


def participant_ports(domain_id: int, participant_id: int) -> tuple[int, int]:
    """(metatraffic, user) unicast ports of a Fast DDS participant (the RTPS well-known ports)."""
    base = FASTDDS_PORT_BASE + FASTDDS_DOMAIN_GAIN * domain_id + FASTDDS_PARTICIPANT_GAIN * participant_id
    return base + FASTDDS_META_UNICAST_OFFSET, base + FASTDDS_USER_UNICAST_OFFSET


def port_in_use(port: int) -> bool:
    """Whether a UDP port is bound on this host (a live Fast DDS participant binds its unicast ports)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(('0.0.0.0', port))
        except OSError:
            return True
    return False


def fresh_participant_id(domain_id: int, after: int | None = None, recent=(), in_use=port_in_use) -> int | None:
    """A participant id of RESTART_PARTICIPANT_IDS whose ports are free, the first after `after` in
    turn that is not in `recent` (ids handed out lately), else the first free one at all; None when
    none is free (or the domain's ports leave none below 65536): the id then stays automatic."""
    ids = [i for i in RESTART_PARTICIPANT_IDS if participant_ports(domain_id, i)[1] <= 65535]
    if not ids:
        return None
    start = 0 if after is None or after not in ids else ids.index(after) + 1
    order = ids[start:] + ids[:start]
    free = [i for i in order if not any(in_use(port) for port in participant_ports(domain_id, i))]
    return next((i for i in free if i not in recent), free[0] if free else None)


def next_participant_id(domain_id: int, given: dict, now: float, in_use=port_in_use) -> int | None:
    """fresh_participant_id with `given` ({id: time it was handed out}, times on now's clock) as
    the history: in turn after the last one handed out, none handed out within
    PARTICIPANT_ID_REUSE_S of now while another is free."""
    recent = {i for i, t in given.items() if now - t < PARTICIPANT_ID_REUSE_S}
    last = max(given, key=given.get, default=None)
    return fresh_participant_id(domain_id, last, recent, in_use)


def restart_profile_text(env, participant_id: int) -> str | None:
    """The Fast DDS profile env names (or a minimal one) with the default participant's id set to
    participant_id; None when that file is not one this can edit; OSError when it cannot be read."""
    base_file = profile_file(env)
    return profile_with_participant_id(Path(base_file).read_text() if base_file else None, participant_id)


_DEFAULT_PARTICIPANT = re.compile(r'(<participant\b[^>]*\bis_default_profile\s*=\s*"true"[^>]*>.*?<rtps>)', re.S)


def profile_with_participant_id(base_xml: str | None, participant_id: int) -> str | None:
    """The Fast DDS XML profile `base_xml` (None: none) with the default participant profile's
    participantID set; None when base_xml is not a profile this can edit (the id stays automatic)."""
    element = f'<participantID>{int(participant_id)}</participantID>'
    if base_xml is None:
        return ('<?xml version="1.0" encoding="UTF-8" ?>\n<dds xmlns="http://www.eprosima.com"><profiles>'
                f'<participant profile_name="fmdrive_restarted" is_default_profile="true"><rtps>{element}'
                '</rtps></participant></profiles></dds>\n')
    m = _DEFAULT_PARTICIPANT.search(base_xml)
    if m:
        head, rest = base_xml[:m.end()], base_xml[m.end():]
        end = rest.find('</rtps>')
        existing = re.search(r'<participantID>\s*-?\d+\s*</participantID>', rest[:end]) if end >= 0 else None
        if existing:
            return head + rest[:existing.start()] + element + rest[existing.end():]
        return f'{head}\n        {element}{rest}'
    if '</profiles>' in base_xml and 'is_default_profile' not in base_xml:
        extra = (f'<participant profile_name="fmdrive_restarted" is_default_profile="true"><rtps>{element}</rtps>'
                 '</participant>\n  </profiles>')
        return base_xml.replace('</profiles>', extra, 1)
    return None


def native_stacks(pid: int, timeout_s: float = NATIVE_DUMP_TIMEOUT_S) -> str | None:
    """Every thread's native backtrace of process pid (gdb attaches, prints, detaches), or None
    when gdb is not installed; a gdb that cannot attach (ptrace not permitted) or does not finish
    in time is said in the text returned."""
    import shutil
    gdb = shutil.which('gdb')
    if gdb is None:
        return None
    try:
        r = subprocess.run([gdb, '--nx', '--batch', '-p', str(pid), '-ex', 'set pagination off',
                            '-ex', 'thread apply all bt 40'], capture_output=True, text=True, timeout=timeout_s,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f'(gdb did not finish within {timeout_s:g} s)'
    except OSError as e:
        return f'(gdb could not run: {e})'
    lines = [ln for ln in (r.stdout + r.stderr).splitlines()
             if ln.startswith(('Thread ', '#')) or 'ptrace' in ln or 'Could not attach' in ln]
    return '\n'.join(lines) or '(gdb printed no stack)'


def _dump_native_stacks(pid: int, log_path: Path) -> None:
    """native_stacks(pid) appended to the node's log (a thread of the supervisor: gdb takes seconds)."""
    time.sleep(0.5)                  # faulthandler's Python stacks (SIGUSR1) first, not interleaved
    text = native_stacks(pid)
    if text is None:
        return
    try:
        with open(log_path, 'a') as f:
            f.write(f'--- fmdrive: native stacks of pid {pid} (gdb) ---\n{text}\n--- end of native stacks ---\n')
    except OSError:
        pass


def _signal_group(proc: subprocess.Popen, sig) -> None:
    """sig to the node's process group (its own session: the node and anything it started)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class GraphProcesses:
    """The graph as one OS process per node (like `ros2 launch`), logs in log_dir/<node>.log.
    overrides: {node: {param: value}}; remaps: {'/from': '/to'} for every node. supervise() restarts
    nodes that die (what `fmdrive run` calls in its loop, like respawn=True in the launch files)."""

    def __init__(self, env: dict, log_dir: str | os.PathLike, params_file=None, use_sim_time=False,
                 nodes=GRAPH, overrides: dict | None = None, remaps: dict | None = None,
                 watchdog_s: float | None = None):
        """watchdog_s: kill (and so restart) a node that has not reported on /diagnostics for this
        long (WATCHDOG_S says how); None = off. The caller feeds the reports: heard(name)."""
        self.env, self.log_dir = env, Path(log_dir)
        self.watchdog_s = watchdog_s
        self._heard: dict[str, float] = {}        # node -> monotonic time of its last report
        self._spawned: dict[str, float] = {}      # node -> monotonic time it was (re)started
        self._kill_at: dict[str, float] = {}      # hung node -> when its SIGKILL is due
        self._dumping: dict = {}                  # hung node -> the thread writing its native stacks
        self.params_file = params_file or config.PARAMS_FILE
        self.use_sim_time, self.nodes, self.overrides = use_sim_time, nodes, overrides or {}
        self.remaps = dict(remaps or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, collections.deque] = {n.name: collections.deque() for n in nodes}
        self.given_up: set[str] = set()
        self._restart_at: dict[str, float] = {}   # node -> monotonic time its restart is due
        self._last_exit: dict[str, int] = {}      # node -> exit code of its last death
        self._participant_id_given: dict[int, float] = {}   # id -> monotonic time it was handed out
        self.stale_removed_at_start = (0, 0)
        self.participant_ids: dict[str, int] = {}  # restarted node -> the Fast DDS participant id it was given

    def topic(self, key: str) -> str:
        """The name config.TOPICS[key] has on the graph, after our remappings."""
        name = config.TOPICS[key]
        return self.remaps.get(name, name)

    def _child_env(self) -> dict:
        env = dict(self.env)
        # one thread per node process unless the user says otherwise: the graph already runs one
        # process per node, and OpenMP/BLAS thread pools fighting over a few cores cost latency
        for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
            env.setdefault(var, '1')
        env[SUPERVISOR_ENV] = 'fmdrive run'   # its restarts get their participant id here, not in respawn.py
        return env

    def _restart_env(self, node: GraphNode, env: dict) -> dict:
        """env for a restart: Fast DDS told to give the node a participant id (so ports) no process
        has used lately (RESTART_PARTICIPANT_IDS), through a profile written beside its log. Left
        as it is with another RMW, or where the id or the profile cannot be had."""
        self.participant_ids.pop(node.name, None)
        domain = domain_id_of(env)
        if not uses_fast_dds(env) or domain is None:
            return env
        now = time.monotonic()
        pid = next_participant_id(domain, self._participant_id_given, now)
        try:
            text = restart_profile_text(env, pid) if pid is not None else None
        except OSError:
            return env
        if text is None:
            return env
        path = self.log_dir / 'fastdds' / f'{node.name}.xml'
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self._participant_id_given[pid] = now
        self.participant_ids[node.name] = pid
        return with_profile_file(env, path)

    def _spawn(self, node: GraphNode, mode: str = 'w'):
        log = open(self.log_dir / f'{node.name}.log', mode)
        cmd = node_command(node, self.params_file, self.use_sim_time, self.overrides.get(node.name), self.remaps)
        def child_setup(nice=node.nice):
            die_with_parent()
            if nice:
                os.nice(nice)
        env = self._child_env()
        if mode == 'a':                       # a restart (the first start keeps the automatic id)
            env = self._restart_env(node, env)
        self.procs[node.name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True, preexec_fn=child_setup)
        log.close()  # the child holds its own descriptor
        self._spawned[node.name] = time.monotonic()
        self._heard.pop(node.name, None)
        self._kill_at.pop(node.name, None)

    def heard(self, name: str, now: float | None = None) -> None:
        """Node `name` reported on /diagnostics (the watchdog's evidence that it is not hung)."""
        if name in self.procs:
            self._heard[name] = time.monotonic() if now is None else now

    def heard_from_diagnostics(self, msg) -> None:
        """heard() for every fmdrive/<node> status of a DiagnosticArray."""
        for st in msg.status:
            if st.name.startswith('fmdrive/'):
                self.heard(st.name[len('fmdrive/'):])

    def silent(self, now: float | None = None) -> dict[str, float]:
        """{node: seconds without a report} for running nodes the watchdog takes for hung: silent
        for watchdog_s since their last report, or STARTUP_GRACE_S since they were started without
        one. Empty with the watchdog off, and while no node at all has been heard within
        watchdog_s (then it is the supervisor that does not hear: starved, or its DDS down)."""
        if not self.watchdog_s:
            return {}
        now = time.monotonic() if now is None else now
        if not any(now - t <= self.watchdog_s for t in self._heard.values()):
            # nobody heard at all: the supervisor is deaf, not every node hung at once
            return {}
        out = {}
        for name, proc in self.procs.items():
            if name in self.given_up or name in self._restart_at or proc.poll() is not None:
                continue
            if name in self._heard:
                quiet = now - self._heard[name]
                if quiet > self.watchdog_s:
                    out[name] = quiet
            elif now - self._spawned.get(name, now) > max(STARTUP_GRACE_S, self.watchdog_s):
                out[name] = now - self._spawned[name]
        return out

    def _watchdog(self, now: float, report) -> None:
        """Hung nodes: stacks to the log, then SIGKILL (the exit path restarts them)."""
        for name, due in list(self._kill_at.items()):
            proc = self.procs[name]
            dump = self._dumping.get(name)
            if dump is not None and dump.is_alive() and now < due + NATIVE_DUMP_TIMEOUT_S:
                continue                  # gdb still reading its stacks
            if now >= due and proc.poll() is None:
                del self._kill_at[name]
                self._dumping.pop(name, None)
                _signal_group(proc, signal.SIGKILL)
        for name, quiet in self.silent(now).items():
            if name in self._kill_at:
                continue
            proc = self.procs[name]
            report(f'node {name} is running but has not reported on /diagnostics for {quiet:.0f} s '
                   f'(watchdog {self.watchdog_s:g} s): taken for hung, its thread stacks go to its log '
                   f'({self.log_dir / (name + ".log")}) and it is killed and restarted')
            _signal_group(proc, signal.SIGUSR1)   # faulthandler writes from its C signal handler
            _signal_group(proc, signal.SIGCONT)   # (a stopped process takes it when continued)
            import threading
            self._dumping[name] = threading.Thread(target=_dump_native_stacks, daemon=True,
                                                   args=(proc.pid, self.log_dir / f'{name}.log'))
            self._dumping[name].start()
            self._kill_at[name] = now + DUMP_WAIT_S

    def start(self):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stale_removed_at_start = self.remove_stale_shm()
        for node in self.nodes:
            self._spawn(node)
        return self

    def remove_stale_shm(self) -> tuple[int, int]:
        """Fast DDS segments of dead processes out of /dev/shm (shm_ports.remove_stale_segments):
        before the graph starts, and when a dead node is started again (a node killed with -9
        leaves its 32 MB segment behind, the RAM its writes touched with it). (count, bytes)."""
        if not uses_fast_dds(self.env):
            return 0, 0
        from fmdrive.shm_ports import remove_stale_segments
        return remove_stale_segments()

    def dead(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f'{name}.log'
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:]) if path.exists() else ''

    def supervise(self, report=print) -> None:
        """One supervision step (call it every few hundred ms): a node that died is reported, in one
        line naming it and its exit code followed by the tail of its log, and started again after
        RESPAWN_DELAY_S, appending to its log; after MAX_RESTARTS restarts within RESTART_WINDOW_S it
        is given up (one line), and the rest of the graph keeps running. With the watchdog on, a node
        running but silent on /diagnostics is killed first (WATCHDOG_S), so restarted the same way."""
        now = time.monotonic()
        by_name = {n.name: n for n in self.nodes}
        self._watchdog(now, report)
        for name, proc in self.procs.items():
            if name in self.given_up:
                continue
            if name in self._restart_at:
                if now >= self._restart_at[name]:
                    del self._restart_at[name]
                    with open(self.log_dir / f'{name}.log', 'a') as log:
                        log.write(f'--- fmdrive: restarting {name} ---\n')
                    count, freed = self.remove_stale_shm()
                    if count:
                        report(f'fmdrive run: removed {count} shared-memory segment(s) of dead Fast DDS '
                               f'participants ({freed / 1e6:.0f} MB)')
                    self._spawn(by_name[name], mode='a')
                    pid = self.participant_ids.get(name)
                    report(f'node {name} restarted (restart {len(self.restarts[name])} of at most '
                           f'{MAX_RESTARTS} per {RESTART_WINDOW_S:.0f} s'
                           + (f'; Fast DDS participant id {pid}' if pid is not None else '') + ')')
                continue
            code = proc.poll()
            if code is None:
                continue
            recent = self._recent_restarts(name, now)
            self._last_exit[name] = code
            tail = '\n'.join(f'    | {line}' for line in self.log_tail(name, 8).splitlines())
            log_path = self.log_dir / f'{name}.log'
            why = (' (cut off from Fast DDS shared memory: a new process opens its port anew)'
                   if code == EXIT_TRANSPORT_LOST else '')
            if len(recent) >= MAX_RESTARTS:
                self.given_up.add(name)
                report(f'node {name} exited with code {code} after {len(recent)} restarts within '
                       f'{RESTART_WINDOW_S:.0f} s: giving up on it, the other nodes keep running (log {log_path})'
                       + (f'\n{tail}' if tail else ''))
                continue
            recent.append(now)
            self._restart_at[name] = now + RESPAWN_DELAY_S
            report(f'node {name} exited with code {code}{why}; restarting it in {RESPAWN_DELAY_S:g} s '
                   f'(log {log_path})'
                   + (f'\n{tail}' if tail else ''))

    def _recent_restarts(self, name: str, now: float) -> collections.deque:
        """The times node `name` died within RESTART_WINDOW_S of now (older ones dropped)."""
        recent = self.restarts[name]
        while recent and now - recent[0] > RESTART_WINDOW_S:
            recent.popleft()
        return recent

    def states(self, now: float | None = None) -> dict[str, dict]:
        """{node: {'state', 'pid', 'restarts', 'last_exit', 'silent_s'}}: what the supervisor knows of
        each node. state: running | hung (taken for hung, being killed) | restarting (dead, restart
        due) | given_up | exited (dead, not yet seen by supervise); restarts: within RESTART_WINDOW_S;
        silent_s: seconds since its last report on /diagnostics (None: none heard since its start)."""
        now = time.monotonic() if now is None else now
        out = {}
        for name, proc in self.procs.items():
            if name in self.given_up:
                state = 'given_up'
            elif name in self._restart_at:
                state = 'restarting'
            elif proc.poll() is not None:
                state = 'exited'
            elif name in self._kill_at:
                state = 'hung'
            else:
                state = 'running'
            heard = self._heard.get(name)
            out[name] = {'state': state, 'pid': proc.pid, 'restarts': len(self._recent_restarts(name, now)),
                         'last_exit': self._last_exit.get(name),
                         'silent_s': None if heard is None else round(now - heard, 1)}
        return out

    def alive(self) -> list[str]:
        """Nodes running or about to be restarted (not given up)."""
        return [name for name in self.procs if name not in self.given_up]

    def wait_ready(self, timeout_s: float = 30.0, report=print):
        """Until every node has subscribed to all its inputs and, for every topic between nodes, the
        publishing node reports on /diagnostics (matched_subscribers/<topic>) that it has matched as
        many subscriptions as the graph declares: a node is visible before it has subscribed, and a
        subscription seen by a third party is not yet matched by the publisher, so frames sent in
        between are lost. Raises with the node's log if one died."""
        from diagnostic_msgs.msg import DiagnosticArray

        from fmdrive.nodes.base import make_qos
        from fmdrive.rosenv import close_node, open_node
        handles = open_node(f'fmdrive_graph_probe_{os.getpid()}')
        probe, executor = handles[1], handles[2]
        reports: dict[str, dict] = {}

        def on_diagnostics(msg):
            self.heard_from_diagnostics(msg)
            for st in msg.status:
                reports[st.name] = {v.key: v.value for v in st.values}
        probe.create_subscription(DiagnosticArray, self.topic('diagnostics'), on_diagnostics,
                                  make_qos('reliable', 50))
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                interrupts.check()
                for name, code in self.dead().items():
                    if code != EXIT_TRANSPORT_LOST or name in self.given_up:
                        raise GraphError(f'node {name} exited with code {code}:\n{self.log_tail(name)}')
                self.supervise(report)
                if not self.dead() and not self.not_ready(probe, reports):
                    return
                executor.spin_once(timeout_sec=0.1)
            raise GraphError(f'graph not ready after {timeout_s:.0f} s: {"; ".join(self.not_ready(probe, reports))}')
        finally:
            close_node(*handles)

    def not_ready(self, probe, reports: dict) -> list[str]:
        """What keeps the graph from being ready, as seen by `probe` and the nodes' /diagnostics
        `reports` ({status name: {key: value}}); empty when ready."""
        waiting = []
        names = set(probe.get_node_names())
        for node in self.nodes:
            if node.name not in names:
                waiting.append(f'{node.name} not on the graph')
            elif not subscribes(probe, node.name, [self.topic(k) for k in node.eager_inputs]):
                waiting.append(f'{node.name} not subscribed to all its inputs')
            elif f'fmdrive/{node.name}' not in reports:
                waiting.append(f'{node.name} has not reported on /diagnostics')
        if waiting:
            return waiting
        readers = collections.Counter(k for n in self.nodes for k in n.eager_inputs)
        for node in self.nodes:
            kv = reports[f'fmdrive/{node.name}']
            for key in node.outputs:
                if not readers[key]:
                    continue
                topic = self.topic(key)
                # base.py reports it under the configured name (config.TOPICS), before remapping
                matched = kv.get(f'matched_subscribers/{config.TOPICS[key]}', kv.get(f'matched_subscribers/{topic}'))
                if matched is None:
                    waiting.append(f'{node.name} does not report matched_subscribers/{config.TOPICS[key]} '
                                   f'(publish it with FmdriveNode.advertise)')
                elif int(matched) < readers[key]:
                    waiting.append(f'{node.name}: {matched} of {readers[key]} subscribers matched on {topic}')
        return waiting

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return {name: p.returncode for name, p in self.procs.items()}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
