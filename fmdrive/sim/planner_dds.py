"""The batch closed loop (fmdrive/sim/closed_loop.py) with the planner node over DDS instead of the
arbiter in-process, to show the two agree (`fmdrive eval closed-loop-agreement`).

    with PlannerOverDds(timeout_s=10) as planner:        # the planner node runs in its own process
        dds = run_scenario(19, 0, planner)
    same = run_scenario(19, 0, in_process_arbiter)

PlannerOverDds stands where run_scenario takes an arbiter: each 10 Hz scene of the scenario (the
ground-truth Scene the batch closed loop builds) goes out on /scene/description as the fusion node
would publish it (fmdrive_msgs/SceneDescription), the scenario's instruction on
/planning/instruction as a person would type it, and the plan the node publishes for that scene's
stamp on /planning/plan is what the car follows. The node runs with its own parameters file,
deadline and instruction classifier (the pretrained text encoder), so what differs from the
in-process run is exactly DDS, message conversion and the node's process; the in-process twin it
is compared with is given the same classifier and parameters (`in_process_arbiter`).

Lock-step: the next physics step waits for the plan of the scene just sent (the car would keep the
old one while waiting; here no scene is sent before the answer, so a slow machine is slower, never
different). A plan that does not come within timeout_s is an error: the comparison is meaningless
without it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from fmdrive import config


class PlannerOverDdsError(RuntimeError):
    pass


@dataclass
class _Answer:
    plan: object
    source: str


def instruction_text(intent: str) -> str:
    """How a person would type the scenario's intent ('change_lane_left' -> 'change lane left')."""
    return intent.replace('_', ' ')


def in_process_arbiter(overrides: dict | None = None):
    """The arbiter the planner node builds from its parameters (+ overrides {param: value}), with the
    node's instruction classifier: the in-process twin of PlannerOverDds."""
    from fmdrive.planning.arbiter import Arbiter, load_instruction_classifier, load_primary
    params = {**config.node_params('planner'), **(overrides or {})}
    primary, _ = load_primary(params)
    classifier, _ = load_instruction_classifier()
    return Arbiter.from_node_params(params, primary, classifier)


class PlannerOverDds:
    """run_scenario's planner, answered by a planner node process over DDS (see module docstring)."""

    fallback = None            # run_scenario resets an in-process fallback; the node keeps its own

    def __init__(self, log_dir: str | os.PathLike, overrides: dict | None = None, timeout_s: float = 10.0,
                 phrase=instruction_text):
        self.log_dir, self.overrides, self.timeout_s, self.phrase = Path(log_dir), overrides or {}, timeout_s, phrase
        self.graph = self._handles = None
        self._plans: dict[int, object] = {}
        self._instruction = ''
        self._diag_instruction: str | None = None

    # ------------------------------------------------------------ lifecycle
    def __enter__(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from fmdrive_msgs.msg import Plan as PlanMsg
        from fmdrive_msgs.msg import SceneDescription
        from std_msgs.msg import String

        from fmdrive.graph import GRAPH, GraphProcesses
        from fmdrive.msgs import msg_to_plan
        from fmdrive.nodes.base import make_qos
        from fmdrive.rosenv import open_node, random_domain_id, ros_env
        env = ros_env(int(os.environ.get('ROS_DOMAIN_ID') or random_domain_id()))
        os.environ.update(env)                     # this process's node joins the same domain
        planner = next(n for n in GRAPH if n.name == 'planner')
        # lock-step pauses the scenario while it waits (for the instruction's round trip through
        # /diagnostics, for a plan): to the node's scene watchdog that is silence, and its safe stop
        # resets the classical planner's previous plan, which the in-process twin never sees
        node_overrides = {'stale_after_s': min(max(2.0 * self.timeout_s, 5.0), 60.0), **self.overrides}
        self.graph = GraphProcesses(env, self.log_dir, nodes=(planner,),
                                    overrides={'planner': node_overrides}).start()
        try:
            self.graph.wait_ready()
            self._handles = open_node(f'fmdrive_planner_client_{os.getpid()}')
            _, node, _ = self._handles
            self._pub_scene = node.create_publisher(SceneDescription, config.TOPICS['scene'],
                                                    make_qos('reliable', 10))
            self._pub_instruction = node.create_publisher(String, config.TOPICS['instruction'],
                                                          make_qos('reliable', 10))

            def on_plan(msg):
                try:
                    plan = msg_to_plan(msg)
                except Exception:  # noqa: BLE001 - a broken plan is no plan (the wait times out)
                    return
                if not str(plan.status).startswith('safe_stop'):   # not the watchdog's stop
                    self._plans[plan.stamp_ns] = plan

            def on_diagnostics(msg):
                for status in msg.status:
                    if status.name.split('/')[-1] == 'planner':
                        for kv in status.values:
                            if kv.key == 'instruction':
                                self._diag_instruction = kv.value

            node.create_subscription(PlanMsg, config.TOPICS['plan'], on_plan, make_qos('reliable', 10))
            node.create_subscription(DiagnosticArray, config.TOPICS['diagnostics'], on_diagnostics,
                                     make_qos('reliable', 10))
            self._until(lambda: self._pub_scene.get_subscription_count() >= 1
                        and self._pub_instruction.get_subscription_count() >= 1,
                        'the planner node subscribing to /scene/description and /planning/instruction')
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        from fmdrive.rosenv import close_node
        if self._handles is not None:
            close_node(*self._handles)
            self._handles = None
        if self.graph is not None:
            self.graph.stop()
            self.graph = None

    def _until(self, condition, what: str) -> None:
        _, _, executor = self._handles
        end = time.monotonic() + self.timeout_s
        while not condition():
            dead = self.graph.dead()
            if dead:
                raise PlannerOverDdsError(f'the planner node died (code {dead["planner"]}):\n'
                                          f'{self.graph.log_tail("planner")}')
            if time.monotonic() > end:
                raise PlannerOverDdsError(f'{what}: not within {self.timeout_s:g} s')
            executor.spin_once(timeout_sec=0.01)

    # ------------------------------------------------------------ what run_scenario calls
    def plan(self, scene, instruction: str = '') -> _Answer:
        from std_msgs.msg import String

        from fmdrive.msgs import scene_to_msg
        if instruction != self._instruction:
            self._instruction = instruction
            self._diag_instruction = None
            self._pub_instruction.publish(String(data=self.phrase(instruction) if instruction else ''))
            # the scene must not overtake the instruction (two topics, no order between them):
            # wait until the node's /diagnostics says what it understood
            self._until(lambda: self._diag_instruction is not None and (
                self._diag_instruction != 'none' or not instruction),
                f'the planner node reporting the instruction {instruction!r} on /diagnostics')
        self._pub_scene.publish(scene_to_msg(scene, config.FRAMES['base']))
        stamp = int(scene.stamp_ns)
        self._until(lambda: stamp in self._plans, f'a plan for the scene stamped {stamp}')
        plan = self._plans.pop(stamp)
        for old in [s for s in self._plans if s < stamp]:
            self._plans.pop(old)
        return _Answer(plan, plan.source)


def agreement(in_process, over_dds) -> dict:
    """Per scenario and in all: do the two ClosedLoopResults say the same (success, collision,
    off road, instruction compliance), and how far apart are progress and max jerk."""
    rows = []
    for a, b in zip(in_process, over_dds):
        rows.append({'index': a.index, 'kind': a.kind, 'intent': a.intent,
                     'same_outcome': (a.success, a.collided, a.off_road, a.complied) ==
                                     (b.success, b.collided, b.off_road, b.complied),
                     'success': [a.success, b.success], 'collided': [a.collided, b.collided],
                     'progress_m': [a.progress_m, b.progress_m],
                     'progress_diff_m': round(abs(a.progress_m - b.progress_m), 3),
                     'sources': [a.sources, b.sources],
                     'budget_stops': [a.budget_stops, b.budget_stops]})
    return {'scenarios': len(rows), 'same_outcome': sum(r['same_outcome'] for r in rows),
            'max_progress_diff_m': max((r['progress_diff_m'] for r in rows), default=None),
            'per_scenario': rows}


def closed_loop_agreement(indices, seed: int = 0, overrides: dict | None = None, log_dir=None,
                          timeout_s: float = 10.0, progress: bool = True) -> dict:
    """Scenarios `indices` (the batch closed loop's numbers; test split: 9, 19, 29, ...) driven twice
    by the same planner: in-process (the batch evaluation's way) and by the planner node over DDS."""
    import sys
    import tempfile

    from tqdm import tqdm

    from fmdrive.sim.closed_loop import expert_run, run_scenario
    indices = [int(i) for i in indices]
    experts = {i: expert_run(i, seed) for i in indices}
    arbiter = in_process_arbiter(overrides)
    t0 = time.monotonic()
    ours = [run_scenario(i, seed, arbiter, experts[i]) for i in
            tqdm(indices, desc='in-process', unit='scenario', disable=not progress, file=sys.stderr)]
    t1 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, \
            PlannerOverDds(log_dir or Path(tmp) / 'logs', overrides, timeout_s) as planner:
        t2 = time.monotonic()
        theirs = [run_scenario(i, seed, planner, experts[i]) for i in
                  tqdm(indices, desc='planner node over DDS', unit='scenario', disable=not progress,
                       file=sys.stderr)]
    out = agreement(ours, theirs)
    out.update({'seed': seed, 'planner_overrides': overrides or {},
                'in_process_s': round(t1 - t0, 1), 'over_dds_s': round(time.monotonic() - t2, 1)})
    return out
