"""The node graph: which nodes run, with which parameters. One description, two starters:
launch/*.launch.py (launch_ros, on the vehicle) and `fmdrive run` (processes, where launch is not
installable) both read GRAPH from here.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fmdrive import config


class GraphError(RuntimeError):
    """A node of the graph died or did not come up; the text holds the tail of its log."""


@dataclass(frozen=True)
class GraphNode:
    name: str            # node name; key of config.NODE_PARAMS
    executable: str      # console script from setup.py (what launch_ros runs)
    module: str          # python module with main() (what `fmdrive run` runs)
    inputs: tuple = ()   # keys of config.TOPICS it subscribes to (a test checks the node's code)


GRAPH = (
    # camera_encoder belongs here, between the sensors and fusion; it arrives with the learned
    # camera model (next issue) - no node runs in its place until then.
    GraphNode('lidar_encoder', 'lidar_encoder', 'fmdrive.nodes.lidar_encoder_node', ('points',)),
    GraphNode('fusion', 'fusion', 'fmdrive.nodes.fusion_node',
              ('odometry', 'lanes', 'camera_info', 'lidar_objects')),
    GraphNode('planner', 'planner', 'fmdrive.nodes.planner_node', ('instruction', 'scene')),
    GraphNode('visualizer', 'visualizer', 'fmdrive.nodes.visualizer_node',
              ('camera_info', 'odometry', 'points', 'objects', 'plan', 'image')),
)


# topics published and subscribed inside the graph (the wiring wait_ready checks)
INTERNAL_TOPICS = tuple(config.TOPICS[k] for k in ('lidar_objects', 'lanes', 'objects', 'scene', 'plan'))


def params_yaml_text() -> str:
    """config/params.yaml as generated from config.py (a test keeps the file equal to this)."""
    doc = {n.name: {'ros__parameters': config.node_params(n.name)} for n in GRAPH}
    head = ('# Generated from fmdrive/config.py by `fmdrive params > config/params.yaml`; edit config.py,\n'
            '# or copy this file and pass your copy to the launch file (params_file:=...).\n')
    return head + yaml.safe_dump(doc, sort_keys=False)


def node_command(node: GraphNode, params_file: str | os.PathLike | None = None,
                 use_sim_time: bool = False, overrides: dict | None = None) -> list[str]:
    cmd = [sys.executable, '-m', node.module, '--ros-args', '-r', f'__node:={node.name}']
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


def die_with_parent():
    """In the child before exec (Linux): SIGINT when the starting process dies, however it dies,
    so a killed `fmdrive run` never leaves nodes behind."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class GraphProcesses:
    """The graph as one OS process per node (like `ros2 launch`), logs in log_dir/<node>.log."""

    def __init__(self, env: dict, log_dir: str | os.PathLike, params_file=None, use_sim_time=False,
                 nodes=GRAPH, overrides: dict | None = None):
        self.env, self.log_dir = env, Path(log_dir)
        self.params_file = params_file or config.PARAMS_FILE
        self.use_sim_time, self.nodes, self.overrides = use_sim_time, nodes, overrides or {}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(self.env)
        # one thread per node process unless the user says otherwise: the graph already runs one
        # process per node, and OpenMP/BLAS thread pools fighting over a few cores cost latency
        for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
            env.setdefault(var, '1')
        for node in self.nodes:
            log = open(self.log_dir / f'{node.name}.log', 'w')
            cmd = node_command(node, self.params_file, self.use_sim_time, self.overrides.get(node.name))
            self.procs[node.name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                     start_new_session=True, preexec_fn=die_with_parent)
        return self

    def dead(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f'{name}.log'
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:]) if path.exists() else ''

    def wait_ready(self, timeout_s: float = 30.0):
        """Until every node has subscribed to all its inputs and every topic between nodes has its
        publisher (a node is visible on the graph before it has finished starting, and frames sent
        before its subscriptions match are lost); raises with the node's log if one died."""
        from fmdrive.rosenv import close_node, open_node
        probe_handles = open_node('fmdrive_graph_probe')
        probe = probe_handles[1]
        try:
            deadline = time.monotonic() + timeout_s
            want = {n.name for n in self.nodes}
            while time.monotonic() < deadline:
                for name, code in self.dead().items():
                    raise GraphError(f'node {name} exited with code {code}:\n{self.log_tail(name)}')
                if want <= set(probe.get_node_names()) and all(
                        subscribes(probe, n.name, [config.TOPICS[k] for k in n.inputs]) for n in self.nodes) and all(
                        probe.count_publishers(t) for t in INTERNAL_TOPICS):
                    time.sleep(0.5)  # the nodes' own endpoint matching completes after the probe sees it
                    return
                time.sleep(0.2)
            missing = want - set(probe.get_node_names())
            raise GraphError(f'nodes not up after {timeout_s:.0f} s: {", ".join(sorted(missing))}')
        finally:
            close_node(*probe_handles)

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
