"""The planning contract: a primary planner under a deadline, the one safety filter, the classical
fallback. The planner node, fmdrive.offline and the benchmarks all plan through `Arbiter.plan`.

    primary (the language-model planner later; any `Planner`)   classical planner (fallback)
      runs in a worker thread with budget_ms = deadline_ms        runs meanwhile in the caller,
      and is abandoned (not waited for) at the deadline            under its own budget
                                                                   (fallback_budget_ms; past it
                                                                   it brakes: 'budget_stop')
                   \\                                            /
                    check_trajectory (safety.py, the limits of limits.py)
                                        |
      the primary's plan when it is on time, well formed and safe (source = primary.source,
      'llm'); else the classical plan, source 'fallback', status 'fallback: <why>; <its status>'

Progress (stall_margin_m, a planner parameter): a primary plan that is safe but covers more than
stall_margin_m less path than the classical plan, when that one is safe too, goes out as the
classical plan (status 'fallback: primary stalls: ...'). Measured: the committed student continues
the ego's speed, so after a stop behind a car it creeps on at 0.6 m/s on a clear road (closed-loop
scenario 349); a car stalled in an intersection is a hazard too.
Instructions (instruction_margin_m, a planner parameter): while a lane change instruction stands (on
the way or there), a safe primary plan that ends more than instruction_margin_m farther from the lane asked for than
the classical plan, when that one is safe too, goes out as the classical plan (status 'fallback:
primary ignores the instruction: ...'). Measured: in closed loop the LLM stack followed 0.77 of the
instructions, the classical stack 0.93; most misses were lane changes the student's plan did not make.

Without a primary (today: the classical planner is the only implementation) the classical plan is
published as it is (source 'classical'); when even it fails the safety filter it is still the best
plan there is (e.g. an emergency stop among predicted collisions), so it goes out with
'; unsafe: <reasons>' in its status and `ArbiterResult.safety` says so.

Instructions: with an instruction classifier (fmdrive/planning/lm/intents.py, the pretrained text
encoder), a human's words are mapped once onto a canonical intent: the primary gets the intent
name, the classical planner the phrase it understands for it (CLASSICAL_PHRASES). A refused
instruction (unsafe, injected, gibberish, over-long) reaches neither planner: both plan as without
one, and the published status says "; instruction '<its start>' refused: <reason>"
(ArbiterResult.instruction).
Without a classifier the words go to both planners unchanged.
A lane change is done once: its target lane is fixed when the instruction is first seen (the lane
then, one to the left or right); when the car is in it, both planners are asked to keep their lane
and the status says "; instruction done: ...". An instruction stands until another replaces it, so
before this every frame asked for one lane more (closed loop, "change lane right" on a three-lane
road: the classical stack went two lanes right). `new_instruction()` starts a lane change again for
the same words sent again; `reset()` forgets it with the rest of a drive.

Why in parallel: the fallback plan is ready when the deadline passes (the worst case latency is
max(deadline, fallback budget), not their sum), and the classical planner sees every scene, so its
memory (cruise speed, braking leads, cars seen moving) is current when it is needed. An abandoned
primary keeps its thread until it returns; until then it is not started again ('primary still
busy'), so a hung model cannot pile up threads. The primary must not modify the scene.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from fmdrive.config import FALLBACK_BUDGET_MS  # planner.fallback_budget_ms: a hard bound, not the 10 Hz target
from fmdrive.objects import Plan, Scene
from fmdrive.fusion.scene import ego_lane_index
from fmdrive.geometry import inv_T
from fmdrive.planning.classical import ClassicalPlanner, PlannerParams, parse_instruction
from fmdrive.planning.frenet import Road
from fmdrive.planning.protocol import Planner, PlanResult
from fmdrive.planning.safety import SafetyReport, check_trajectory

# lanes, counted from the right; keep_lane: the lane the car is in when the instruction comes
LANE_CHANGE_STEPS = {'change_lane_left': +1, 'change_lane_right': -1, 'keep_lane': 0}
# instructions that ask the car to go slower than it would (canonical intents, and the classical
# planner's own kinds for words read without the text encoder): a primary plan that runs on is judged
SLOWING_INTENTS = frozenset({'slow_down', 'stop_at_intersection', 'pull_over', 'stop'})

# what the classical planner (classical.parse_instruction) understands for each canonical intent;
# follow_lead is what it does anyway; stop_at_intersection: it has no map of intersections, so it
# stops (target speed 0) - the conservative reading
CLASSICAL_PHRASES = {'none': '', 'keep_lane': 'keep lane', 'change_lane_left': 'change lane left',
                     'change_lane_right': 'change lane right', 'pull_over': 'pull over', 'slow_down': 'slow down',
                     'follow_lead': '', 'overtake': 'overtake', 'stop_at_intersection': 'stop'}


@dataclass
class ArbiterResult:
    plan: Plan                  # what to publish: source, status, deadline_met, planning_time_ms set
    source: str                 # plan.source: primary.source ('llm') | 'classical' | 'fallback'
    status: str                 # why this plan: 'primary', 'classical' or 'fallback: <why>'
    planner_result: PlanResult  # what the planner of the published plan returned
    safety: SafetyReport        # the safety filter's verdict on the published plan
    mode: str                   # one line for /diagnostics: 'ok' or what is wrong
    primary_ms: float | None = None   # time the primary took (None: none ran, or still running)
    planner_ms: float = 0.0     # time the planner of the published plan took (plan.planning_time_ms
                                # is the arbiter's whole call: both planners, the safety filter)
    instruction: object = None  # IntentResult of the instruction (None: none, or no classifier)


class Arbiter:
    def __init__(self, fallback: ClassicalPlanner, primary: Planner | None = None,
                 deadline_ms: float = 100.0, fallback_budget_ms: float = FALLBACK_BUDGET_MS,
                 instructions=None, stall_margin_m: float = 0.0, instruction_margin_m: float = 0.0):
        """deadline_ms: the primary's budget, after which it is abandoned (and what deadline_met
        says of the whole call); fallback_budget_ms: the classical planner's own budget;
        instructions: an IntentClassifier (classify(text) -> IntentResult) or None;
        stall_margin_m: a safe primary plan that covers this much less ground over its horizon than
        the classical plan, itself safe, is replaced by it (status 'fallback: primary stalls ...'):
        a language model that has learned to continue the ego's speed stays stopped after a stop
        with the road clear (0: off)."""
        if primary is not None and not isinstance(primary, Planner):
            raise TypeError(f'primary planner {type(primary).__name__} lacks source / plan(scene, '
                            'instruction, budget_ms)')
        if primary is fallback:
            raise ValueError('the primary planner must not be the fallback instance (both run at '
                             'once); leave primary=None to run the classical planner alone')
        if not (deadline_ms > 0 and fallback_budget_ms > 0):
            raise ValueError(f'deadline_ms ({deadline_ms}) and fallback_budget_ms '
                             f'({fallback_budget_ms}) must be positive')
        if not stall_margin_m >= 0:
            raise ValueError(f'stall_margin_m ({stall_margin_m}) must be >= 0 (0: off)')
        self.stall_margin_m = float(stall_margin_m)
        if not instruction_margin_m >= 0:
            raise ValueError(f'instruction_margin_m ({instruction_margin_m}) must be >= 0 (0: off)')
        self.instruction_margin_m = float(instruction_margin_m)
        self.fallback = fallback
        self.primary = primary
        self.deadline_ms = float(deadline_ms)
        self.fallback_budget_ms = float(fallback_budget_ms)
        self.limits = fallback.params           # the one set of limits the safety filter applies
        if primary is not None and hasattr(primary, 'limits'):
            primary.limits = self.limits        # the LM planner's collision guard: the same footprint and margin
        self.instructions = instructions
        self._busy: threading.Thread | None = None   # an abandoned primary still running
        self._lane_change = None        # [(instruction, intent), target lane from the right, reached]

    @classmethod
    def from_node_params(cls, params: dict, primary: Planner | None = None, instructions=None) -> 'Arbiter':
        """The arbiter the planner node runs, from its parameters (config.node_params('planner')
        or the node's current ones); unknown keys are ignored, bad values raise ValueError."""
        known = PlannerParams.__dataclass_fields__
        planner = ClassicalPlanner(PlannerParams(**{k: v for k, v in params.items() if k in known}))
        return cls(planner, primary, float(params['deadline_ms']),
                   float(params.get('fallback_budget_ms', FALLBACK_BUDGET_MS)), instructions,
                   float(params.get('stall_margin_m', 0.0)), float(params.get('instruction_margin_m', 0.0)))

    @property
    def params(self) -> PlannerParams:
        return self.fallback.params

    def plan(self, scene: Scene, instruction: str = '') -> ArbiterResult:
        """The plan to publish for `scene`; never raises, always returns a plan."""
        t0 = time.perf_counter()
        understood = self.classify(instruction)
        if understood is None:
            to_primary = to_fallback = instruction
            intent = parse_instruction(instruction).kind
        else:
            to_primary, to_fallback = understood.intent, CLASSICAL_PHRASES.get(understood.intent, '')
            intent = 'none' if understood.refused else understood.intent
        try:
            note = self._lane_change_done(instruction, intent, scene)
        except Exception:  # noqa: BLE001 - lanes the road model cannot read: the planners judge them
            note = ''
        if note:                            # the lane it asked for is reached: hold it
            to_primary = 'keep_lane' if understood is not None else CLASSICAL_PHRASES['keep_lane']
            to_fallback = CLASSICAL_PHRASES['keep_lane']
        started, why_not = self._start_primary(scene, to_primary) if self.primary else (None, None)
        classical = self.fallback.plan(scene, to_fallback, budget_ms=self.fallback_budget_ms)
        if self.primary is None:
            return self._finish(t0, classical, scene, 'classical', 'classical', None, understood=understood,
                                note=note)
        primary_ms = None
        if started is not None:
            done, box = started
            done.wait(timeout=max(0.0, self.deadline_ms / 1e3 - (time.perf_counter() - t0)))
            why_not, primary_ms = self._judge_primary(t0, done, box, scene)
        classical_safety = None
        if why_not is None and self.stall_margin_m > 0:
            why_not, classical_safety = self._stalls(box['result'].plan, classical.plan, scene)
        if why_not is None and self.instruction_margin_m > 0:
            why_not, classical_safety = self._ignores_instruction(box['result'].plan, classical.plan, scene, intent)
        if why_not is None:
            return self._finish(t0, box['result'], scene, self.primary.source, 'primary', primary_ms,
                                box['safety'], understood, note=note)
        return self._finish(t0, classical, scene, 'fallback', f'fallback: {why_not}', primary_ms,
                            classical_safety, understood=understood, note=note)

    def new_instruction(self) -> None:
        """An instruction message arrived (the node calls this): a lane change asked again, even in
        the same words, is a new one, counted from the lane the car is in then."""
        self._lane_change = None

    def reset(self) -> None:
        """A new drive: the classical planner's memory, the primary's (when it keeps any) and the
        standing instruction's progress are forgotten."""
        self.fallback.reset()
        if hasattr(self.primary, 'reset'):
            self.primary.reset()
        self._lane_change = None

    def _lane_change_done(self, instruction: str, intent: str, scene: Scene) -> str:
        """'' while a lane change instruction still has its lane to reach (or the scene has no lanes
        to count); once the car is in the lane it asked for, or when there is no lane on that side
        in the car's direction (none, or an oncoming one: a lane change does not go into oncoming
        traffic; passing a blocked lane is the planners' own business), the note saying so.
        The target is fixed when the instruction is first seen: the lane then, one to the left or
        right (counted from the right, as the scene's text counts). An instruction stands until
        another replaces it, so without this each frame would ask for one more lane. Keep lane:
        the lane the car is in when it comes is the one to keep (no note; _ignores_instruction
        judges the plans against it)."""
        step = LANE_CHANGE_STEPS.get(intent)
        if step is None:
            self._lane_change = None
            return ''
        where = ego_lane_index(scene.lanes)
        if where is None:
            return ''
        key = (instruction, intent)
        if step == 0:                   # keep lane: the lane it is in when the instruction comes
            if self._lane_change is None or self._lane_change[0] != key:
                self._lane_change = [key, where[0], True]
            return ''
        side = 'left' if step > 0 else 'right'
        if self._lane_change is None or self._lane_change[0] != key:
            road = Road.around_ego(scene.lanes)
            beside = np.flatnonzero(road.lane_offsets == step)
            if not len(beside) or road.lane_oncoming[beside[0]]:
                # no lane there, or one for the other direction: nothing to change into
                self._lane_change = [key, None, True]
            else:
                self._lane_change = [key, where[0] + step, False]
        if self._lane_change[1] is None:
            return f'instruction not followed: no lane to the {side} in the driving direction (keeping the lane)'
        if where[0] == self._lane_change[1]:
            self._lane_change[2] = True
        if not self._lane_change[2]:
            return ''
        return f'instruction done: in the lane to the {side} it asked for (keeping it)'

    def classify(self, instruction: str):
        """The IntentResult of an instruction (None without a classifier or without words);
        cached by the classifier, so the node calls it when an instruction arrives."""
        if self.instructions is None or not (instruction or '').strip():
            return None
        try:
            return self.instructions.classify(instruction)
        except Exception as err:  # noqa: BLE001 - an encoder failure must not stop planning
            from fmdrive.planning.lm.intents import IntentResult
            return IntentResult('none', f'refused: instruction not understood ({type(err).__name__}: {err})',
                                float('nan'), '', str(instruction)[:80])

    # ------------------------------------------------------------------ helpers
    def _start_primary(self, scene, instruction):
        """((done event, result box), None) with the primary running, or (None, why not)."""
        if self._busy is not None and self._busy.is_alive():
            return None, 'primary still busy with an earlier scene it missed the deadline for'
        self._busy = None
        done, box = threading.Event(), {}
        primary, budget_ms = self.primary, self.deadline_ms

        def run():
            t = time.perf_counter()
            try:
                box['result'] = primary.plan(scene, instruction, budget_ms)
            except Exception as err:  # noqa: BLE001 - a failing primary is a reason to fall back
                box['error'] = f'{type(err).__name__}: {err}'
            box['ms'] = (time.perf_counter() - t) * 1e3
            done.set()

        thread = threading.Thread(target=run, name='primary-planner', daemon=True)
        box['thread'] = thread
        thread.start()
        return (done, box), None

    def _judge_primary(self, t0, done, box, scene):
        """(None, ms) when the primary's plan may be published, else (why not, ms or None)."""
        if not done.is_set():
            self._busy = box['thread']          # abandoned: its late answer is never read
            waited = (time.perf_counter() - t0) * 1e3
            return (f'primary missed deadline {self.deadline_ms:.0f} ms (abandoned after '
                    f'{waited:.0f} ms)'), None
        ms = box['ms']
        if ms > self.deadline_ms:
            return f'primary missed deadline {self.deadline_ms:.0f} ms ({ms:.0f} ms)', ms
        if 'error' in box:
            return f'primary failed: {box["error"]}', ms
        result = box.get('result')
        plan = getattr(result, 'plan', None)
        if not isinstance(plan, Plan):
            return f'primary returned no plan ({type(result).__name__})', ms
        report = self._check(plan, scene)
        if not report.ok:
            return 'primary unsafe: ' + '; '.join(report.reasons), ms
        box['safety'] = report
        return None, ms

    def _stalls(self, primary: Plan, classical: Plan, scene: Scene):
        """(why, the classical plan's SafetyReport) when the primary's safe plan falls short of the
        classical one by more than stall_margin_m of path and the classical plan is safe too;
        (None, None) otherwise."""
        made, could, span = _paths(primary, classical)
        if not could - made > self.stall_margin_m:
            return None, None
        return self._if_classical_safe(f'primary stalls: {made:.1f} m in {span:.1f} s where the classical plan '
                                       f'makes {could:.1f} m (stall_margin_m {self.stall_margin_m:g})',
                                       classical, scene)

    def _ignores_instruction(self, primary: Plan, classical: Plan, scene: Scene, intent: str = 'none'):
        """(why, the classical plan's SafetyReport) when the primary's safe plan does not do what the
        standing instruction asks and the classical plan, safe too, does it better by more than
        instruction_margin_m; (None, None) otherwise. Lane instructions (a lane change on the way
        to the lane it asked for or there and keeping it; keep lane, the lane the car was in when it
        came): the primary's plan ends that much farther (across the road) from the centre of that
        lane than the classical plan does (no lane there, no lanes to measure on: no judgement).
        Slowing ones (slow down, stop, pull over): it goes that much farther along over the horizon
        than the classical plan, which slows or stops as asked."""
        if not len(primary.poses) or not len(classical.poses):
            return None, None
        if intent in SLOWING_INTENTS:
            made, asked, span = _paths(primary, classical)
            if not made - asked > self.instruction_margin_m:
                return None, None
            return self._if_classical_safe(f'primary ignores the instruction ({intent}): {made:.1f} m in {span:.1f} s '
                                           f'where the classical plan, slowing as asked, makes {asked:.1f} m '
                                           f'(instruction_margin_m {self.instruction_margin_m:g})', classical, scene)
        change = self._lane_change
        if change is None or change[1] is None:
            return None, None
        try:
            where = ego_lane_index(scene.lanes)
            road = Road.around_ego(scene.lanes)
            if where is None or road.assumed_lane:
                return None, None
            target = np.flatnonzero(road.lane_offsets == change[1] - where[0])
            if not len(target):
                return None, None
            target_d = float(road.lane_center_d_m[target[0]])
            T_base_odom = inv_T(scene.ego.T_odom_base())
            ends = np.array([primary.poses[-1, :2], classical.poses[-1, :2]], np.float64)
            _, d = road.reference.project(ends @ T_base_odom[:2, :2].T + T_base_odom[:2, 3])
        except Exception:  # noqa: BLE001 - lanes or poses the road model cannot read: no judgement
            return None, None
        off_primary, off_classical = np.abs(d - target_d)
        if not off_primary - off_classical > self.instruction_margin_m:
            return None, None
        return self._if_classical_safe(f'primary ignores the instruction: its plan ends {off_primary:.1f} m from the '
                                       f'lane asked for, the classical plan {off_classical:.1f} m '
                                       f'(instruction_margin_m {self.instruction_margin_m:g})', classical, scene)

    def _if_classical_safe(self, why: str, classical: Plan, scene: Scene):
        """(why, the classical plan's SafetyReport) when the classical plan passes the safety filter,
        (None, None) when it does not: a safe primary plan is never swapped for an unsafe one."""
        report = self._check(classical, scene)
        return (why, report) if report.ok else (None, None)

    def _check(self, plan: Plan, scene: Scene) -> SafetyReport:
        """The safety filter's verdict; a scene it cannot read is a failed check, not a crash."""
        try:
            return check_trajectory(plan.poses, plan.t_s, plan.speeds_mps, scene, self.limits)
        except Exception as err:  # noqa: BLE001 - the node must publish a plan whatever it got
            return SafetyReport(False, [f'safety check failed: {type(err).__name__}: {err}'],
                                float('nan'))

    def _finish(self, t0, result: PlanResult, scene, source, status, primary_ms,
                safety: SafetyReport | None = None, understood=None, note: str = '') -> ArbiterResult:
        plan = result.plan
        if safety is None:
            safety = self._check(plan, scene)
        planner_status = plan.status
        if status.startswith('fallback'):
            plan.status = f'{status}; {planner_status}'
        if not safety.ok:
            plan.status = f'{plan.status}; unsafe: {", ".join(safety.reasons)}'
        if understood is not None and understood.refused and understood.refused not in plan.status:
            # which instruction (its start, escaped: it may be anything) and why
            plan.status = f'{plan.status}; instruction {ascii(understood.text[:24])} {understood.refused}'
        if note:
            plan.status = f'{plan.status}; {note}'
        plan.source = source
        planner_ms = float(plan.planning_time_ms)
        plan.planning_time_ms = (time.perf_counter() - t0) * 1e3
        plan.deadline_met = plan.planning_time_ms <= self.deadline_ms
        head = planner_status.split(';')[0].split(':')[0].split()
        if status.startswith('fallback'):
            mode = status
        elif head and head[0] in ('ok', 'no_lane'):
            mode = 'ok'
        else:
            mode = planner_status
        return ArbiterResult(plan, source, status, result, safety, mode, primary_ms, planner_ms, instruction=understood)


def path_length_m(plan: Plan) -> float:
    """Length of a plan's path from its first waypoint to its last (0 for fewer than two finite poses);
    plans of one arbiter share their times, so their lengths compare."""
    xy = np.asarray(plan.poses, float)[:, :2]
    xy = xy[np.isfinite(xy).all(1)]
    return float(np.hypot(*np.diff(xy, axis=0).T).sum()) if len(xy) > 1 else 0.0


def _paths(primary: Plan, classical: Plan) -> tuple[float, float, float]:
    """(the primary's path length, the classical plan's, the primary's time span): what the stall
    and slowing rules compare."""
    span = float(primary.t_s[-1] - primary.t_s[0]) if len(primary.t_s) > 1 else 0.0
    return path_length_m(primary), path_length_m(classical), span


def load_primary(params: dict, log=None):
    """(the LM planner the planner node's parameters ask for, or None; one line saying what runs).
    primary 'llm' loads `lm_model` (card + ONNX + tokenizer.json); a model that is absent or
    cannot load leaves the classical planner alone, and the line says why."""
    from pathlib import Path

    from fmdrive import config
    if params.get('primary', 'classical') != 'llm':
        return None, 'classical (primary: classical)'
    path = Path(str(params.get('lm_model', '')))
    path = path if path.is_absolute() else config.package_file(str(path))
    if not (path / 'card.yaml').is_file():
        return None, f'classical (no LM planner model at {path})'
    try:
        from fmdrive.planning.lm.lm_planner import LMPlanner
        planner = LMPlanner.load(path, str(params.get('lm_precision', 'int8')), str(params.get('lm_backend', 'auto')),
                                 int(params.get('lm_threads', 1)), draft=bool(params.get('lm_draft', True)),
                                 guard=bool(params.get('lm_guard', True)))
    except Exception as err:  # noqa: BLE001 - CardError, BackendError, a runtime's own: all mean "not here"
        return None, f'classical (LM planner at {path} cannot run: {" ".join(str(err).split())[:200]})'
    d = planner.describe()
    return planner, f'llm {path.name} ({d.get("provider", "?")}, {d.get("variant", d.get("precision_run"))})'


def load_instruction_classifier():
    """(IntentClassifier or None, one line): the text encoder side of instructions."""
    try:
        from fmdrive.planning.lm.intents import IntentClassifier
        return IntentClassifier(), 'text encoder all-MiniLM-L6-v2 (numpy)'
    except Exception as err:  # noqa: BLE001 - package missing or unreadable: instructions go as words
        return None, f'no text encoder ({" ".join(str(err).split())[:160]}); instructions go to the planners as words'
