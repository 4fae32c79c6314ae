"""Classical sampling planner in the Frenet frame of the ego lane (the fallback of the LM planner).

plan(scene) in one screen:
  1. road: the ego lane centre line is the reference line (s along, d to the left); other lanes
     and the road edges become offsets in that frame. No lanes: the ego lane is assumed centred on
     the current pose along the current heading, 3.5 m wide (status 'no_lane').
  2. longitudinal profiles s(t): quartics from the current speed to sampled target speeds over
     sampled durations, constant braking (comfort / emergency) and stops before every object that
     is (or will be) in the ego corridor.
  3. lateral profiles d(s): quintics from the current (d, dd/ds) to sampled offsets (lane centres,
     adjacent lanes, nudges) over the distance driven in 2-4 s. d is a function of s, so a stopped
     car never slides sideways.
  4. every lateral x longitudinal pair is one candidate: arrays [n_candidates, n_steps] at 0.1 s.
  5. reject: collision (oriented ego footprint within `collision_margin_m` of a constant-velocity
     predicted object box; a follower straight behind does not count while the ego keeps its
     lane), no room left to stop behind what is ahead at the end of the horizon even at
     max_decel, leaving the road, speed above the limit, accelerations above the limits, faster
     past a standing vehicle beside the path (people about) than one can stop from for someone
     stepping out past it (occlusion.py).
  6. cost: comfort (accel, jerk, hard braking), progress (error to the speed the candidate's lane
     allows - target speed, or what the nearest object ahead in it leaves room for - plus a cost
     for lanes that allow less, and for ending where something standing blocks the way within the
     reference's braking reach), lane keeping (offset from a lane centre, lane changes, ending in
     or astride an oncoming lane), clearance (soft), time headway and comfortable stopping room to
     objects ahead, instruction. A car seen driving and standing in its lane is queued traffic
     (followed, never passed); one standing pulled aside has parked (passable).
     Collisions are computed for candidates within the limits first, the rest only if needed.
  7. nothing collision-free: emergency braking along the lane (status 'emergency_stop');
     collision-free but no candidate within every limit: the least violating one ('degraded').
The plan is returned in odom (6 waypoints at 0.5 s), the dense trajectory at 0.1 s beside it.
In the code: `_frame` (1, objects, traffic and target speed), `_candidates` (2-4), `_limit_checks`,
`_costs` and `_object_checks` (5-6), `_select` (7). Limits shared with the safety filter live in
fmdrive/planning/limits.py (PlannerParams extends them). With a time budget (`plan(...,
budget_ms=)`), a step that would start after it is not started: the car brakes ('budget_stop'),
as every fail-safe stop does: along the last plan's path when that is fresh (0.5 s; it was checked
against the objects, so a stop mid-swerve keeps going round a parked car), else in its lane
(following the lane's centre line at its offset from it), else straight ahead.

Instructions understood (case-insensitive, anywhere in the text; a negation like "don't" makes
the instruction not understood):
  "stop", "halt", "brake"                       -> target speed 0
  "pull over", "pull in", "pull to the side"    -> towards the kerb (the road's right edge + half the car +
                                                   pull_over_kerb_margin_m) and stopped where the instruction
                                                   first came max(pull_over_min_m, v^2 / (2 pull_over_decel)
                                                   + 5 m) ahead (the expert's rule), held in odom
  "slow down", "slower", "reduce speed"         -> target speed = slow_down_factor * desired speed
                                                   (not the current speed: an instruction stays in force
                                                   frame after frame, and a factor of the current speed
                                                   compounds towards a stop)
  "change lane(s) (to the) left", "lane change left", "move left", "overtake" -> prefer the lane left
  "change lane(s) (to the) right", "lane change right", "move right"          -> prefer the lane right
  "keep lane", "stay in (your/the) lane", "keep your lane"                   -> penalise lane changes
Anything else is ignored, and the status says so: 'ok; instruction ignored (not understood): ...'.
Instructions only bias costs: they never override a collision or a limit.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from fmdrive.geometry import inv_T, wrap_angle
from fmdrive.objects import Object3D, Plan, Scene
from fmdrive.planning.footprint import LANE_KEEP_TOLERANCE_M, footprint_gaps, margin_violations
from fmdrive.planning.frenet import (ReferenceLine, Road, box_extent_sd, polyval, quartic_coefficients,
                                    quintic_coefficients)
from fmdrive.planning.limits import LimitsError, VehicleLimits, effective_speed_limit, require_numbers
from fmdrive.planning.occlusion import OCCLUSION_TOLERANCE_MPS, dart_out_excess, occluders, people_about
from fmdrive.planning.prediction import MAX_OBJECT_SPEED_MPS, follow_lane, predict_constant_velocity
from fmdrive.planning.protocol import PlanResult


class PlannerParamsError(LimitsError):
    """Planner parameters that cannot work together (e.g. a horizon not a multiple of dt_s)."""


@dataclass
class PlannerParams(VehicleLimits):
    """The vehicle and comfort limits (fmdrive/planning/limits.py, shared with the safety filter)
    plus how this planner samples and weighs its candidates."""
    # output
    horizon_s: float = 3.0
    dt_s: float = 0.5                        # waypoint spacing of the published plan
    dense_dt_s: float = 0.1                  # internal trajectory step
    # sampling
    lateral_offsets_m: tuple = (-3.5, -1.75, -0.8, 0.0, 0.8, 1.75, 3.5)  # from the ego lane centre
    lateral_durations_s: tuple = (2.0, 3.5)  # time to reach the lateral offset at planned speed
    min_lateral_length_m: float = 10.0       # shortest distance over which the offset is reached
    target_speed_fractions: tuple = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0)  # of the speed limit
    longitudinal_durations_s: tuple = (2.0, 4.0, 7.0)
    max_stop_profiles: int = 3               # stop-before-object profiles (nearest objects)
    # margins of this planner (the safety filter's safety_margin_m is in the limits)
    collision_margin_m: float = 0.5          # planner rejects candidates closer than this
    clearance_soft_m: float = 1.5            # below this, clearance costs
    stop_margin_m: float = 3.0               # stop this far before an object
    min_gap_m: float = 2.5                   # following distance at standstill
    time_headway_s: float = 1.5              # following distance grows with speed
    # desired speed: the limit, lower in curves, and the driver's set speed (cruise control): the
    # highest speed held over the last cruise_memory_s (0 = off) once at least
    # cruise_min_history_s of history is known
    comfort_lat_accel_mps2: float = 2.5
    cruise_memory_s: float = 20.0
    cruise_min_history_s: float = 1.0
    # car following reference: IDM (Treiber et al. 2000) on the nearest object that is, or within
    # corridor_prediction_s will be, in the lane's corridor (crossing pedestrians, cut-ins)
    idm_accel_mps2: float = 1.5
    idm_decel_mps2: float = 2.0
    idm_headway_s: float = 1.2
    idm_gap_m: float = 2.5
    idm_gap_static_m: float = 8.0            # behind a standing car / cone: room to steer around it
    corridor_margin_m: float = 0.3
    corridor_prediction_s: float = 3.0
    # passing: only an object slower than both of these invites a lane change
    pass_speed_fraction: float = 0.75        # of the desired speed
    pass_max_speed_mps: float = 8.0
    pass_clear_time_s: float = 2.0           # extra time an oncoming lane must stay clear
    pulled_aside_m: float = 1.0              # a car seen driving that stands this far off a lane centre
                                             # has parked (passable), not queued
    # instructions
    slow_down_factor: float = 0.6            # of the desired speed, as the expert that defines compliance
    slow_down_min_mps: float = 2.0           # (planning_dataset.IntentExpert: max(2, 0.6 x desired))
    pull_over_decel_mps2: float = 1.2        # pull over: stop this gently (the expert's), no nearer than
    pull_over_min_m: float = 25.0            # this, beside the kerb:
    pull_over_kerb_margin_m: float = 0.35    # footprint this far inside the road's right edge
    # cost weights
    w_speed: float = 1.0
    w_lane_speed: float = 0.5                # a lane whose traffic allows less than the target
    w_accel: float = 0.2
    w_lat_accel: float = 0.3
    w_jerk: float = 0.02
    w_lat_jerk: float = 0.02
    w_hard_brake: float = 5.0
    w_lane_offset: float = 1.0
    w_lane_change: float = 5.0
    w_clearance: float = 5.0
    w_headway: float = 20.0
    w_instruction: float = 300.0            # above any progress cost: instructions win over
                                             # progress and comfort, never over hard limits
    w_keep_right: float = 6.0                # per same-direction lane to the right (keep right,
                                             # above w_lane_change: return after passing)
    w_oncoming_lane: float = 6.0             # ending in a lane of oncoming traffic (ditto)
    w_leave_traffic: float = 50.0            # changing lane away from a lead one follows (moving
                                             # or queuing traffic, a pedestrian): above headway and
                                             # braking costs, so only evasion does it
    w_blocked: float = 25.0                  # ending where something standing blocks the way ahead
                                             # (_ends_blocked): above a change into the oncoming
                                             # lane and back (w_lane_change + w_oncoming_lane)
    w_consistency: float = 0.3               # per m^2 of departure from the previous plan

    def __post_init__(self):
        try:
            super().__post_init__()
        except LimitsError as err:
            raise PlannerParamsError(str(err)) from None
        require_numbers(self, ('pull_over_decel_mps2', 'pull_over_min_m', 'horizon_s', 'dt_s', 'dense_dt_s',
                               'min_lateral_length_m'), positive=True, error=PlannerParamsError)
        require_numbers(self, ('pulled_aside_m', 'pull_over_kerb_margin_m', 'w_blocked'), positive=False,
                        error=PlannerParamsError)
        ratio = self.dt_s / self.dense_dt_s
        if abs(ratio - round(ratio)) > 1e-6:
            raise PlannerParamsError(f'dt_s={self.dt_s} must be a multiple of dense_dt_s='
                                     f'{self.dense_dt_s}')
        steps = self.horizon_s / self.dt_s
        if abs(steps - round(steps)) > 1e-6:
            raise PlannerParamsError(f'horizon_s={self.horizon_s} must be a multiple of dt_s='
                                     f'{self.dt_s} (e.g. 3.0 and 0.5)')
        if not self.lateral_durations_s or not self.longitudinal_durations_s \
                or any(d <= 0 for d in (*self.lateral_durations_s, *self.longitudinal_durations_s)):
            raise PlannerParamsError('lateral_durations_s and longitudinal_durations_s need '
                                     'positive values')


@dataclass
class Instruction:
    """What the planner understood of a human instruction."""
    kind: str = 'none'      # none | stop | slow_down | change_lane_left | change_lane_right | keep_lane
    text: str = ''
    understood: bool = True


_PATTERNS = (
    ('keep_lane', r'\b(keep (your |the )?lane|stay in (your |the )?lane)\b'),
    ('change_lane_left', r'\b(change lanes? (to the )?left|lane change (to the )?left|move '
                         r'(over )?(to the )?left|overtake)\b'),
    ('change_lane_right', r'\b(change lanes? (to the )?right|lane change (to the )?right|move '
                          r'(over )?(to the )?right)\b'),
    ('slow_down', r'\b(slow down|slower|reduce (your )?speed)\b'),
    ('pull_over', r'\b(pull (over|in)|pull (up )?to the (side|kerb|curb))\b'),
    ('stop', r'\b(stop|halt|brake)\b'),
)
_NEGATION = re.compile(r"\b(don'?t|do not|never|no)\b")


# a fail-safe stop follows the ego's lane (ClassicalPlanner._stop_path) unless the car heads further
# off it than this; its heading eases into the lane's over this length
STOP_MAX_HEADING_OFF_RAD = np.radians(20.0)
STOP_HEADING_EASE_M = 4.0
# ...or the last plan's path (ClassicalPlanner._previous_path), when it is at most this old and the car
# at most this far off it
STOP_PREVIOUS_MAX_AGE_S = 0.5
STOP_PREVIOUS_MAX_OFF_M = 1.0


def parse_instruction(text: str) -> Instruction:
    """Map free text to one of the understood instructions (see the module docstring)."""
    clean = ' '.join(re.sub(r"[^a-z' ]", ' ', (text or '').lower()).split())
    if not clean:
        return Instruction('none', '', True)
    if _NEGATION.search(clean):
        return Instruction('none', text, False)
    for kind, pattern in _PATTERNS:
        if re.search(pattern, clean):
            return Instruction(kind, text, True)
    return Instruction('none', text, False)


def _distance_at(T: float, t, s_lon, v_lon):
    """s of every longitudinal profile at time T, extrapolated with the final speed past t[-1]."""
    if T >= t[-1]:
        return s_lon[:, -1] + v_lon[:, -1] * (T - t[-1])
    i = int(np.searchsorted(t, T, side='right') - 1)
    w = (T - t[i]) / (t[i + 1] - t[i])
    return (1 - w) * s_lon[:, i] + w * s_lon[:, i + 1]


def _idm_rollout(t, v0, v_des, gap0, v_lead, static, in_corridor, p, a_lead=None):
    """IDM speeds (L, T) of the ego along each of L lanes at times t (T,).

    gap0 (N,): bumper gap from the ego's front to each object's rear at t=0 (along s); v_lead (N,)
    their speed along s, a_lead (N,) their braking (<= 0, until they stand; None = constant
    speed); static (N,) standing objects one must steer around;
    in_corridor (L, N, T): the object is, or within corridor_prediction_s will be, in the lane's
    corridor at that time. The leader at each step is the nearest such object still ahead."""
    n_l, n_t = in_corridor.shape[0], len(t)
    v = np.full(n_l, float(v0))
    s_ego = np.zeros(n_l)
    out = np.empty((n_l, n_t))
    out[:, 0] = v
    root_ab = 2.0 * np.sqrt(p.idm_accel_mps2 * p.idm_decel_mps2)
    s0_gap = np.where(static, p.idm_gap_static_m, p.idm_gap_m)                         # (N,)
    v_des = max(float(v_des), 0.1)
    for k in range(n_t - 1):
        dt = t[k + 1] - t[k]
        if a_lead is None:
            v_l, moved = v_lead, v_lead * t[k]
        else:   # braking until standing (speed along s keeps its sign)
            t_stop = np.where(a_lead < 0, np.abs(v_lead) / np.maximum(-a_lead, 1e-6), np.inf)
            tt = np.minimum(t[k], t_stop)
            v_l = np.sign(v_lead) * np.maximum(np.abs(v_lead) + a_lead * t[k], 0.0)
            moved = v_lead * tt + 0.5 * np.sign(v_lead) * a_lead * tt * tt
        gap = gap0 + moved - s_ego[:, None]                                            # (L, N)
        lead = in_corridor[:, :, k] & (gap > -2.0)
        gap = np.where(lead, gap, np.inf)
        i = np.argmin(gap, axis=1) if gap.shape[1] else np.zeros(n_l, int)
        g = gap[np.arange(n_l), i] if gap.shape[1] else np.full(n_l, np.inf)
        free = 1.0 - (v / v_des) ** 4
        acc = p.idm_accel_mps2 * free
        has = np.isfinite(g)
        if has.any():
            dv = v - v_l[i]
            s_star = s0_gap[i] + np.maximum(0.0, v * p.idm_headway_s + v * dv / root_ab)
            acc = np.where(has, p.idm_accel_mps2 * (free - (s_star / np.maximum(g, 0.1)) ** 2),
                           acc)
            acc = np.where(has & (g < 1.0) & (dv > 0), -p.max_decel_mps2, acc)
        acc = np.clip(acc, -p.max_decel_mps2, p.max_accel_mps2)
        v_new = np.maximum(v + acc * dt, 0.0)
        s_ego += 0.5 * (v + v_new) * dt
        v = v_new
        out[:, k + 1] = v
    return out


def _usable_speed(v) -> bool:
    """A speed a car can have (finite, at most MAX_OBJECT_SPEED_MPS either way)."""
    return bool(np.isfinite(v) and abs(v) <= MAX_OBJECT_SPEED_MPS)


def _corridor_half_width(f, p) -> np.ndarray:
    """(N,) how far off a line's centre an object stands inside the corridor the car-following
    reference (IDM) stops in: half the car + the object's half extent across + corridor_margin_m.
    One rule for the IDM's leaders (_traffic), a lane's speed (_costs) and a blocked end (_ends_blocked)."""
    return f.half_w + f.ext_d[:, 0] + p.corridor_margin_m


class _BudgetExceeded(Exception):
    """The time budget ran out before a step (the step is the message)."""


def _check_budget(deadline: float | None, step: str):
    if deadline is not None and time.perf_counter() > deadline:
        raise _BudgetExceeded(step)


@dataclass
class _Frame:
    """The scene in the ego lane's Frenet frame (s along the reference line, d to its left), and
    what the planner made of it before any candidate exists. Arrays over objects are (N,) or
    (N, T) at the dense times t; over lanes (lanes,)."""
    scene: Scene
    ego: object
    stamp_ns: int
    v0: float                                # ego speed (>= 0)
    limit: float                             # speed limit of this plan (effective_speed_limit)
    v_des: float                             # desired speed: set speed, lower in curves
    instruction: Instruction
    notes: list
    status: str                              # 'ok' | 'no_lane'
    road: Road
    ref: object                              # ReferenceLine of the ego lane
    s0: float                                # ego position in the frame
    d0: float
    d_s0: float                              # dd/ds now (heading relative to the lane)
    t: np.ndarray                            # (T,) dense times from 0
    length: float                            # ego footprint
    half_w: float
    front_m: float                           # rear axle -> front bumper
    v_target: float = 0.0                    # v_des after the instruction
    # objects
    pred: object = None                      # PredictedObjects
    n_obj: int = 0
    s_obj: np.ndarray = None                 # (N, T) centre along / across the line
    d_obj: np.ndarray = None
    ext_s: np.ndarray = None                 # (N, T) half extent along / across the line
    ext_d: np.ndarray = None
    v_obj_s: np.ndarray = None               # (N,) speed along the line at the horizon end
    v_obj_s0: np.ndarray = None              # (N,) speed along / across the line now
    v_obj_d: np.ndarray = None
    labels: np.ndarray = None
    pull_over_s: float | None = None         # pull over: where to stop (s of the ego) and at which d
    pull_over_d: float | None = None
    # lanes and traffic
    lane_c: np.ndarray = None                # (lanes,) lane centre offsets d
    n_lanes: int = 0
    ego_lane: int = 0
    oncoming: np.ndarray = None              # (lanes,) carries oncoming traffic
    static: np.ndarray = None                # (N,) standing still and not a pedestrian (IDM keeps idm_gap_static_m)
    in_traffic: np.ndarray = None            # (N,) cars seen driving and not since parked aside (a queue)
    v_ref: np.ndarray = None                 # (lanes, T) IDM car-following speed per lane
    lead_now: np.ndarray = None              # objects leading in the ego lane now
    passable: bool = False                   # the ego lane's leader invites passing it
    t_pass: float = 0.0                      # how long a pass would take (s)


@dataclass
class _Candidates:
    """C candidate trajectories at the dense times, in base_link at the scene stamp, (C, T)."""
    kinds: list                              # name of each longitudinal profile
    stop_s: np.ndarray                       # stop positions the stop profiles aim at
    n: int                                   # C
    d: np.ndarray                            # Frenet d, s
    s: np.ndarray
    d_end: np.ndarray                        # (C,) lateral target
    lon_index: np.ndarray                    # (C,) index of the longitudinal profile
    emergency: int                           # index of: hold the offset, brake at max_decel
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    th: np.ndarray                           # reference line heading at s
    one_minus_kd: np.ndarray
    speed: np.ndarray
    a_lon: np.ndarray
    a_lat: np.ndarray
    j_lon: np.ndarray
    j_lat: np.ndarray
    lane_pos: np.ndarray                     # (C,) lane the candidate ends in
    v_cap: float = 0.0                       # speed the 'speed' limit allows
    outside: np.ndarray = None               # how far the footprint is off the road
    occlusion_excess: np.ndarray = None      # (C,) m/s above the hidden-pedestrian speed (occlusion.py)
    lanes_entered: np.ndarray = None         # (C, lanes) lanes its end footprint reaches into (_lanes_entered)


class ClassicalPlanner:
    """Stateful only in two small ways, both reset when the stamp goes backwards: the ego's recent
    speeds (its cruise set speed) and the previous plan (a consistency cost, so successive plans
    do not flicker between near-equal candidates), plus which cars were recently seen driving
    faster than pass_max_speed_mps (a car braking or queuing in traffic is followed, not passed)."""

    source = 'classical'

    def __init__(self, params: PlannerParams | None = None):
        self.params = params or PlannerParams()
        self.reset()

    def reset(self):
        """Forget the history (new drive, replay restarted)."""
        self._speeds = []                   # [(stamp_ns, speed_mps)]
        self._previous = None               # (stamp_ns, t_s (T,), poses_odom (T, 3)) incl. t=0
        self._seen_moving = {}              # car id -> last stamp_ns it drove in traffic
        self._motion = {}                   # object id -> (stamp_ns, speed_mps, accel_mps2)
        self._last_stamp_ns = None
        self._pull_over = None              # odom (x, y) where a held "pull over" stops

    def _remember(self, stamp_ns: int, v0: float, objects):
        p = self.params
        if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
            self.reset()
        self._last_stamp_ns = stamp_ns
        self._speeds.append((stamp_ns, v0))
        horizon_ns = int(p.cruise_memory_s * 1e9)
        self._speeds = [(s, v) for s, v in self._speeds if stamp_ns - s <= horizon_ns]
        for o in objects:
            vel = np.asarray(o.velocity, float)[:2]
            speed = float(np.hypot(*vel)) if np.all(np.isfinite(vel)) else 0.0
            if o.id:   # speed change between frames: a braking lead is predicted to brake on
                last = self._motion.get(int(o.id))
                accel = 0.0
                if last is not None and 0 < stamp_ns - last[0] <= 0.5e9:
                    raw = (speed - last[1]) / ((stamp_ns - last[0]) / 1e9)
                    accel = float(np.clip(0.5 * last[2] + 0.5 * raw, -p.max_decel_mps2, 3.0))
                self._motion[int(o.id)] = (stamp_ns, speed, accel)
            if o.id and o.label == 'car' and speed > p.pass_max_speed_mps:
                self._seen_moving[int(o.id)] = stamp_ns
        old = [i for i, s in self._seen_moving.items() if stamp_ns - s > 30e9]
        for i in old:
            del self._seen_moving[i]
        for i in [i for i, m in self._motion.items() if stamp_ns - m[0] > 1e9]:
            del self._motion[i]

    def _cruise_speed(self, stamp_ns: int, limit: float) -> float:
        """The driver's set speed: the highest speed held recently, else the limit."""
        p = self.params
        if p.cruise_memory_s <= 0 or len(self._speeds) < 2:
            return limit
        if (stamp_ns - self._speeds[0][0]) / 1e9 < p.cruise_min_history_s:
            return limit
        v_set = max(v for _, v in self._speeds)
        return limit if v_set < 0.5 * limit else min(limit, v_set)

    # ------------------------------------------------------------------ public
    def plan(self, scene: Scene, instruction: str = '', budget_ms: float | None = None) -> PlanResult:
        """Plan from `scene`; never raises (bad input gives status 'invalid_input').

        budget_ms: time this call may take. It is checked before each step (frame, candidates,
        collision check); a step that would start past it is not started and the car brakes
        instead (status 'budget_stop'), so a call overruns its budget by at most one step."""
        start = time.perf_counter()
        deadline = None if budget_ms is None else start + float(budget_ms) / 1e3
        try:
            result = self._plan(scene, instruction, deadline)
        except _BudgetExceeded as over:
            elapsed = (time.perf_counter() - start) * 1e3
            result = self._budget_stop(scene, f'budget_stop: {elapsed:.0f} ms spent of the '
                                       f'{budget_ms:.0f} ms budget before {over}; braking')
        except Exception as err:  # noqa: BLE001 - the car must get a plan, even from a bug
            result = self._failsafe_stop(scene, f'error: {type(err).__name__}: {err}')
        elapsed_ms = (time.perf_counter() - start) * 1e3
        result.plan.planning_time_ms = elapsed_ms
        if result.dense_plan is not None:
            result.dense_plan.planning_time_ms = elapsed_ms
        return result

    # ------------------------------------------------------------------ helpers
    def _times(self):
        p = self.params
        n = int(round(p.horizon_s / p.dense_dt_s))
        t = np.arange(n + 1) * p.dense_dt_s
        stride = int(round(p.dt_s / p.dense_dt_s))
        return t, stride

    def _make_plans(self, scene, poses_base, speeds, status, cost=0.0):
        """(plan, dense_plan) in odom from base_link poses at the dense times (incl. t=0)."""
        t, stride = self._times()
        ego = scene.ego
        c, s = np.cos(ego.yaw_rad), np.sin(ego.yaw_rad)
        poses = np.c_[ego.x + c * poses_base[:, 0] - s * poses_base[:, 1],
                      ego.y + s * poses_base[:, 0] + c * poses_base[:, 1],
                      wrap_angle(poses_base[:, 2] + ego.yaw_rad)]
        dense = Plan(scene.stamp_ns, poses[1:], t[1:].copy(), np.asarray(speeds[1:], float),
                     source=self.source, status=status, cost=float(cost))
        sel = np.arange(stride, len(t), stride)
        plan = Plan(scene.stamp_ns, poses[sel], t[sel].copy(), np.asarray(speeds, float)[sel],
                    source=self.source, status=status, cost=float(cost))
        return plan, dense

    def stop(self, scene, status: str, decel_mps2: float | None = None) -> PlanResult:
        """Brake to a standstill in the ego lane (_stop_path), comfortably unless told otherwise."""
        return self._failsafe_stop(scene, status, decel_mps2 or self.params.comfort_decel_mps2)

    def _budget_stop(self, scene, status: str) -> PlanResult:
        """Out of time: brake comfortably, harder only as needed to stand within the horizon."""
        p = self.params
        v0 = getattr(getattr(scene, 'ego', None), 'speed_mps', 0.0)
        v0 = float(v0) if _usable_speed(v0) else 0.0
        decel = min(p.max_decel_mps2, max(p.comfort_decel_mps2, v0 / p.horizon_s))
        return self._failsafe_stop(scene, status, decel)

    def _stop_path(self, scene, dist) -> np.ndarray:
        """base_link poses (T, 3) of a stop that has driven `dist` (T,) metres at each time: along
        the ego's lane at its present offset from the lane's centre line, its heading easing from the
        car's into the lane's over the first few metres (STOP_HEADING_EASE_M), so a stop on a curve
        stays in its lane (straight ahead it left a 50 m radius curve by 2.8 m in 16.7 m of braking);
        straight ahead when there are no lanes, the car heads more than STOP_MAX_HEADING_OFF_RAD off
        its lane, or the lanes cannot be read (a fail-safe must not fail)."""
        dist = np.asarray(dist, dtype=np.float64)
        straight = np.c_[dist, np.zeros_like(dist), np.zeros_like(dist)]
        try:
            road = Road.around_ego(getattr(scene, 'lanes', None), self.params.default_lane_width_m)
            if road.assumed_lane:
                return straight
            s0, d0 = (float(a) for a in road.reference.project(np.zeros(2)))
            off = float(wrap_angle(0.0 - road.reference.frame_at(s0)[2]))     # car heading - lane heading
            if not (np.isfinite(s0) and np.isfinite(d0)) or abs(off) > STOP_MAX_HEADING_OFF_RAD:
                return straight
            ease = STOP_HEADING_EASE_M
            decay = np.exp(-dist / ease)
            d = d0 + np.tan(off) * ease * (1.0 - decay)
            x, y, yaw = road.reference.to_cartesian(s0 + dist, d, np.tan(off) * decay)
            poses = np.c_[x, y, yaw]
            poses[0] = 0.0                                 # t = 0 is the car itself
            return poses if np.all(np.isfinite(poses)) else straight
        except Exception:  # noqa: BLE001 - lanes that break the road model: brake straight ahead
            return straight

    def _previous_path(self, scene, dist) -> np.ndarray | None:
        """base_link poses (T, 3) `dist` (T,) metres along the last plan's path from the car's
        closest point on it (the path was checked against the objects then: a stop mid-swerve keeps
        swerving round the parked car), straight on along its last heading past its end; None
        without a last plan of this drive (older than STOP_PREVIOUS_MAX_AGE_S, or from the future),
        with the car more than STOP_PREVIOUS_MAX_OFF_M off it, or on numbers it cannot use."""
        if self._previous is None:
            return None
        try:
            stamp, _, poses_prev = self._previous
            age_s = (int(scene.stamp_ns) - int(stamp)) / 1e9
            if not 0.0 < age_s <= STOP_PREVIOUS_MAX_AGE_S:
                return None
            T_base_odom = np.linalg.inv(scene.ego.T_odom_base())
            # the path as a reference line (it goes on straight past its end), the car projected on it
            path = ReferenceLine(poses_prev[:, :2] @ T_base_odom[:2, :2].T + T_base_odom[:2, 3])
            s0, off = (float(a) for a in path.project(np.zeros(2)))
            if not abs(off) <= STOP_PREVIOUS_MAX_OFF_M:
                return None
            poses = np.column_stack(path.to_cartesian(s0 + np.asarray(dist, np.float64), 0.0))
            poses[0] = 0.0                              # t = 0 is the car itself
            return poses if np.all(np.isfinite(poses)) else None
        except Exception:  # noqa: BLE001 - a fail-safe must not fail: the lane's path then
            return None

    def _failsafe_stop(self, scene, status: str, decel_mps2: float | None = None) -> PlanResult:
        """Brake at decel_mps2 (default max_decel) along the last plan's path when it is fresh
        (_previous_path), else in the ego's lane (_stop_path); an empty plan without a usable pose."""
        p = self.params
        decel = decel_mps2 or p.max_decel_mps2
        previous, self._previous = self._previous, None
        ego = getattr(scene, 'ego', None)
        pose_ok = ego is not None and all(np.isfinite(v) for v in (ego.x, ego.y, ego.yaw_rad))
        stamp = int(getattr(scene, 'stamp_ns', 0) or 0)
        if not pose_ok:
            empty = Plan(stamp, np.zeros((0, 3)), np.zeros(0), np.zeros(0), source=self.source,
                         status=status)
            return PlanResult(empty, 0, {}, status, empty, [status])
        t, _ = self._times()
        v0 = float(ego.speed_mps) if _usable_speed(ego.speed_mps) else 0.0
        v0 = max(v0, 0.0)
        v = np.maximum(v0 - decel * t, 0.0)
        x = np.r_[0.0, np.cumsum(0.5 * (v[1:] + v[:-1]) * np.diff(t))]
        self._previous = previous
        path = self._previous_path(scene, x)
        self._previous = None
        plan, dense = self._make_plans(scene, path if path is not None else self._stop_path(scene, x), v, status)
        return PlanResult(plan, 1, {}, status, dense, [status])

    # ------------------------------------------------------------------ the planner
    def _plan(self, scene: Scene, instruction_text: str, deadline: float | None) -> PlanResult:
        """The steps of the module docstring: frame (road, objects, traffic) -> candidates ->
        limits and costs -> collisions -> selection."""
        _check_budget(deadline, 'reading the scene')
        f = self._frame(scene, instruction_text)
        if isinstance(f, PlanResult):
            return f
        _check_budget(deadline, 'building the candidates')
        c = self._candidates(f)
        limits = self._limit_checks(f, c)
        costs = self._costs(f, c)
        limits['oncoming traffic'] = self._oncoming_ok(f, c)
        _check_budget(deadline, 'the collision check')
        limits_ok = np.logical_and.reduce(list(limits.values()))
        objects = self._object_checks(f, c, limits_ok, costs)
        return self._select(f, c, limits, limits_ok, costs, objects)

    # ---- step 1: the frame - ego, road, objects and traffic in the ego lane's Frenet frame
    def _frame(self, scene: Scene, instruction_text: str):
        """A _Frame, or a PlanResult when the scene cannot be planned from."""
        p = self.params
        notes = []
        ego = scene.ego
        if not all(np.isfinite(v) for v in (ego.x, ego.y, ego.yaw_rad)):
            return self._failsafe_stop(scene, 'invalid_input: non-finite ego pose, no plan')
        if not np.isfinite(ego.speed_mps):
            return self._failsafe_stop(scene, 'invalid_input: non-finite ego speed, braking')
        if not _usable_speed(ego.speed_mps):
            return self._failsafe_stop(scene, f'invalid_input: ego speed {ego.speed_mps:.3g} m/s is '
                                       'impossible, braking')
        v0 = float(ego.speed_mps)
        if v0 < 0:
            notes.append(f'ego speed {v0:.2f} m/s < 0 treated as 0 (this planner drives forward)')
            v0 = 0.0
        limit = effective_speed_limit(p, scene)
        instruction = parse_instruction(instruction_text)
        if not instruction.understood:
            notes.append(f'instruction ignored (not understood): {instruction.text!r}')
        stamp_ns = int(scene.stamp_ns)
        objects = [o for o in (scene.objects or []) if isinstance(o, Object3D)]
        self._remember(stamp_ns, v0, objects)
        v_des = self._cruise_speed(stamp_ns, limit)

        road = Road.around_ego(scene.lanes, p.default_lane_width_m)
        notes.extend(road.notes)
        s0, d0 = (float(a) for a in road.reference.project(np.zeros(2)))
        heading_err = float(wrap_angle(0.0 - road.reference.frame_at(s0)[2]))
        t, _ = self._times()
        f = _Frame(scene=scene, ego=ego, stamp_ns=stamp_ns, v0=v0, limit=limit, v_des=v_des,
                   instruction=instruction, notes=notes,
                   status='no_lane' if road.assumed_lane else 'ok', road=road, ref=road.reference,
                   s0=s0, d0=d0, d_s0=float(np.tan(np.clip(heading_err, -1.2, 1.2))), t=t,
                   length=p.vehicle_length_m, half_w=p.vehicle_width_m / 2,
                   front_m=p.base_to_center_m + p.vehicle_length_m / 2)
        self._objects_in_frenet(f, objects)
        self._pull_over_target(f)
        self._target_speed(f)
        self._traffic(f)
        return f

    def _objects_in_frenet(self, f: _Frame, objects):
        """Objects predicted with constant velocity (along their lane when there are lanes), and
        their extent and speed along / across the reference line."""
        p = self.params
        pred = predict_constant_velocity(objects, f.t, p.uncertainty_growth_mps, 0.0)
        f.notes.extend(pred.notes)
        if not f.road.assumed_lane:
            pred = follow_lane(pred, f.ref)
        n_obj = len(pred)
        s_obj, d_obj = f.ref.project(pred.center_xy)                                # (N, T)
        _, _, th_obj, _ = f.ref.frame_at(s_obj)
        phi = pred.yaw_rad - th_obj
        f.pred, f.n_obj, f.s_obj, f.d_obj = pred, n_obj, s_obj, d_obj
        f.ext_s, f.ext_d = box_extent_sd(pred.half_length_m, pred.half_width_m, phi)
        dt = p.dense_dt_s
        f.v_obj_s = (s_obj[:, -1] - s_obj[:, -2]) / dt if n_obj else np.zeros(0)
        f.v_obj_s0 = (s_obj[:, 1] - s_obj[:, 0]) / dt if n_obj else np.zeros(0)
        f.v_obj_d = (d_obj[:, 1] - d_obj[:, 0]) / dt if n_obj else np.zeros(0)
        f.labels = np.array(pred.labels, dtype=object)

    def _pull_over_target(self, f: _Frame):
        """Pull over: where to stop, fixed in odom when the instruction first comes (so held frame
        after frame: each frame's own 'stop 25 m ahead' would never arrive) and the offset towards
        the kerb. Any other instruction forgets it."""
        p = self.params
        if f.instruction.kind != 'pull_over':
            self._pull_over = None
            return
        T_odom_base = f.ego.T_odom_base()
        if self._pull_over is None:
            s_stop = f.s0 + max(p.pull_over_min_m, f.v0 ** 2 / (2 * p.pull_over_decel_mps2) + 5.0)
            xr, yr, _, _ = f.ref.frame_at(np.array([s_stop]))
            self._pull_over = T_odom_base[:2, :2] @ np.array([xr[0], yr[0]]) + T_odom_base[:2, 3]
        T_base_odom = inv_T(T_odom_base)
        xy = T_base_odom[:2, :2] @ self._pull_over + T_base_odom[:2, 3]
        f.pull_over_s = float(f.ref.project(xy[None])[0][0])
        f.pull_over_d = float(f.road.right_edge_d_m + f.half_w + p.pull_over_kerb_margin_m)

    def _target_speed(self, f: _Frame):
        """Desired speed (the set speed, lower in curves) and the target after the instruction."""
        p = self.params
        look_m = max(f.v0, f.v_des) * (p.horizon_s + 1.0) + 10.0
        kappa_ahead = np.abs(f.ref.frame_at(np.linspace(f.s0, f.s0 + look_m, 40))[3]).max()
        if kappa_ahead > 1e-4:
            v_curve = float(np.sqrt(p.comfort_lat_accel_mps2 / kappa_ahead))
            if v_curve < f.v_des:
                f.v_des = v_curve
                f.notes.append(f'curve ahead: desired speed {v_curve:.1f} m/s')
        if f.instruction.kind == 'stop':
            f.v_target = 0.0
        elif f.instruction.kind == 'slow_down':
            f.v_target = min(f.v_des, max(p.slow_down_min_mps, p.slow_down_factor * f.v_des))
        else:
            f.v_target = f.v_des

    def _traffic(self, f: _Frame):
        """Per lane: oncoming or not, and the car-following reference (IDM) on what is, or soon
        will be, in its corridor; whether the ego lane's leader invites passing it and how long a
        pass would take (for the oncoming-lane check)."""
        p = self.params
        t, n_obj = f.t, f.n_obj
        s_obj, d_obj, ext_s, ext_d = f.s_obj, f.d_obj, f.ext_s, f.ext_d
        road = f.road
        lane_c = road.lane_center_d_m
        n_lanes = len(lane_c)
        ego_lane = int(np.argmin(np.abs(lane_c)))
        speed_obj = np.hypot(f.v_obj_s0, f.v_obj_d)
        static = (speed_obj < 0.5) & (f.labels != 'pedestrian') if n_obj else np.zeros(0, bool)
        # cars seen driving in traffic (queueing now, not to be passed), unless one stands pulled
        # aside, its centre more than pulled_aside_m off the nearest lane centre: parked (closed-loop
        # scenario 419: a car drove ahead of the ego, parked at the kerb half in the lane, and
        # the ego waited behind it for ever as behind a queue)
        seen = np.isin(f.pred.ids, list(self._seen_moving)) if n_obj else np.zeros(0, bool)
        aside = (np.abs(d_obj[:, :1] - lane_c[None]).min(axis=1) > p.pulled_aside_m) if n_obj else np.zeros(0, bool)
        f.in_traffic = seen & ~(static & aside)
        # lanes with a car driving against the reference carry oncoming traffic
        oncoming = road.lane_oncoming.copy()
        if n_obj:
            against = (f.v_obj_s0 < -1.5)
            lane_of_obj = np.argmin(np.abs(d_obj[:, :1] - lane_c[None]), axis=1)
            inside_lane = np.abs(d_obj[:, 0] - lane_c[lane_of_obj]) < road.lane_width_m[lane_of_obj] / 2
            oncoming[np.unique(lane_of_obj[against & inside_lane])] = True
            oncoming[ego_lane] = road.lane_oncoming[ego_lane]
        if n_obj:
            horizon = p.corridor_prediction_s
            d_a = d_obj[:, 0][None, :] + f.v_obj_d[None, :] * t[:, None]                # (T, N)
            d_b = d_a + f.v_obj_d[None, :] * horizon
            lo, hi = np.minimum(d_a, d_b), np.maximum(d_a, d_b)
            thr = _corridor_half_width(f, p)                                            # (N,)
            centres = lane_c[:, None]                                                  # (L, 1)
            in_corr = (lo[None] < centres[:, :, None] + thr[None, None]) & \
                (hi[None] > centres[:, :, None] - thr[None, None])                    # (L, T, N)
            # the ego lane's corridor also covers where the ego is now
            in_corr[ego_lane] |= (lo < f.d0 + thr) & (hi > f.d0 - thr)
            in_corr = np.moveaxis(in_corr, 1, 2)                                       # (L, N, T)
            gap0 = s_obj[:, 0] - ext_s[:, 0] - (f.s0 + f.front_m)
            in_corr &= (s_obj[:, 0] + ext_s[:, 0] > f.s0 + f.front_m)[None, :, None]
        else:
            in_corr = np.zeros((n_lanes, 0, len(t)), bool)
            gap0 = np.zeros(0)
        a_obj = np.array([min(self._motion.get(int(i), (0, 0, 0.0))[2], 0.0) for i in f.pred.ids])
        a_obj = np.where(a_obj < -1.0, a_obj, 0.0)         # only clear braking is extrapolated
        v_ref = _idm_rollout(t, f.v0, f.v_target, gap0, f.v_obj_s0, static, in_corr, p, a_obj)
        if f.instruction.kind == 'stop':
            v_ref = np.minimum(v_ref, np.maximum(f.v0 - p.comfort_decel_mps2 * t, 0.0)[None])
        if f.pull_over_s is not None:       # the pull-over point as a standing leader (as the expert does)
            room = max(f.pull_over_s - f.s0, 0.0)
            v_ref = np.minimum(v_ref, _idm_rollout(t, f.v0, f.v_target, np.array([room + p.idm_gap_m]),
                                                   np.zeros(1), np.zeros(1, bool), np.ones((1, 1, len(t)), bool), p))
        # the ego lane's leader now: only a slow one (not a car standing in traffic) invites
        # passing it; and how long a pass would take (for the oncoming-lane check)
        lead_now = np.flatnonzero(in_corr[ego_lane, :, 0]) if n_obj else np.zeros(0, int)
        passable, t_pass = False, 2.0 * p.horizon_s
        if len(lead_now):
            i = lead_now[np.argmin(gap0[lead_now])]
            v_lead = max(float(f.v_obj_s0[i]), 0.0)
            stopped_in_traffic = bool(f.in_traffic[i])
            passable = (v_lead < min(p.pass_speed_fraction * f.v_target, p.pass_max_speed_mps)
                        and f.labels[i] != 'pedestrian' and not stopped_in_traffic)
            pass_m = gap0[i] + 2 * ext_s[i, 0] + f.length + 10.0
            t_pass = pass_m / max(f.v_target - v_lead, 1.0) + p.pass_clear_time_s
        f.lane_c, f.n_lanes, f.ego_lane, f.oncoming, f.static = lane_c, n_lanes, ego_lane, oncoming, static
        f.v_ref, f.lead_now, f.passable, f.t_pass = v_ref, lead_now, passable, t_pass

    # ---- step 2: candidates - every lateral x longitudinal profile, in Cartesian, with kinematics
    def _longitudinal_profiles(self, f: _Frame):
        """Speeds v_lon (P, T), distances s_lon (P, T), a name per profile, the index of the
        emergency stop and the stop positions used. Braking first (index 1 = emergency), then
        quartics to target speeds, then the per-lane IDM references."""
        p = self.params
        t, dt, v0, s0, n_obj = f.t, p.dense_dt_s, f.v0, f.s0, f.n_obj
        corridor = (np.minimum(np.abs(f.d_obj - f.d0), np.abs(f.d_obj))
                    < f.ext_d + f.half_w + 0.5) & (f.s_obj > s0)
        stop_s = np.where(corridor, f.s_obj - f.ext_s - f.front_m - p.stop_margin_m, np.inf).min(
            axis=1, initial=np.inf) if n_obj else np.zeros(0)
        stop_s = np.unique(stop_s[np.isfinite(stop_s)])[:p.max_stop_profiles]
        if f.pull_over_s is not None:
            stop_s = np.unique(np.r_[stop_s, f.pull_over_s])
        decels = [p.comfort_decel_mps2, p.max_decel_mps2]
        kinds = ['comfort stop', 'emergency stop']
        for s_stop in stop_s:
            room = s_stop - s0
            a_req = v0 * v0 / (2 * room) if room > 0.05 else np.inf
            if 0.3 < a_req < p.max_decel_mps2:
                decels.append(a_req)
                kinds.append(f'stop at s={s_stop:.1f}')
        profiles = [np.maximum(v0 - np.asarray(decels)[:, None] * t[None, :], 0.0)]
        targets = np.unique(np.r_[np.asarray(p.target_speed_fractions) * f.limit,
                                  [min(v0, f.limit), f.v_target]])
        for T_lon in p.longitudinal_durations_s:
            coef = quartic_coefficients(0.0, v0, 0.0, targets, 0.0, T_lon)          # (n, 5)
            v = polyval(coef[:, None, :], np.minimum(t, T_lon)[None, :], derivative=1)
            v[:, t >= T_lon] = targets[:, None]
            v = np.maximum(v, 0.0)
            # profiles far beyond the acceleration limits cannot become feasible: skip them early
            a = np.gradient(v, dt, axis=1)
            ok = (a.max(axis=1) <= p.max_accel_mps2 + 0.3) & (a.min(axis=1) >= -p.max_decel_mps2)
            profiles.append(v[ok])
            kinds += [f'speed {vt:.1f} in {T_lon:g}s' for vt in targets[ok]]
        profiles.append(f.v_ref)
        kinds += [f'idm lane {k - f.ego_lane:+d}' for k in range(f.n_lanes)]
        v_lon = np.vstack(profiles)
        _, first = np.unique(np.round(v_lon, 3), axis=0, return_index=True)  # drop duplicates
        keep = np.union1d(first, [1])
        v_lon = v_lon[keep]
        kinds = [kinds[i] for i in keep]
        emergency_lon = int(np.flatnonzero(keep == 1)[0])
        s_lon = s0 + np.c_[np.zeros(len(v_lon)),
                           np.cumsum(0.5 * (v_lon[:, 1:] + v_lon[:, :-1]) * dt, axis=1)]
        return v_lon, s_lon, kinds, emergency_lon, stop_s

    def _lateral_targets(self, f: _Frame) -> np.ndarray:
        """(D,) the candidates' lateral end offsets: index 0 the current one, then the offsets
        from the ego lane centre, the lane centres and the pull-over offset, on the road."""
        p, road, half_w = self.params, f.road, f.half_w
        d_targets = np.r_[np.asarray(p.lateral_offsets_m, float), road.lane_center_d_m,
                          [] if f.pull_over_d is None else [f.pull_over_d]]
        inside = (d_targets - half_w >= road.right_edge_d_m - 0.05) & \
                 (d_targets + half_w <= road.left_edge_d_m + 0.05)
        d_targets = np.unique(np.round(d_targets[inside], 2))
        d_targets = d_targets[np.abs(d_targets - f.d0) > 0.05]
        return np.r_[f.d0, d_targets]

    def _candidates(self, f: _Frame) -> _Candidates:
        """Lateral targets d_end (D,) reached over durations (L,) as quintics d(s), combined with
        every longitudinal profile: C = D * L * P candidates at the dense times, in base_link."""
        p = self.params
        t, dt, s0, d0, half_w, road = f.t, p.dense_dt_s, f.s0, f.d0, f.half_w, f.road
        v_lon, s_lon, kinds, emergency_lon, stop_s = self._longitudinal_profiles(f)
        n_lon, n_t = len(v_lon), len(t)
        d_targets = self._lateral_targets(f)
        lat_T = np.asarray(p.lateral_durations_s, float)
        # distance driven by lat_T (extrapolated with the final speed beyond the horizon)
        s_at = np.stack([_distance_at(T, t, s_lon, v_lon) for T in lat_T])       # (L, P)
        L = np.maximum(s_at - s0, p.min_lateral_length_m)                           # (L, P)
        coef = quintic_coefficients(d0, f.d_s0 * L[None], 0.0, d_targets[:, None, None], 0.0, 0.0,
                                    1.0)                                             # (D, L, P, 6)
        u = np.clip((s_lon[None, :, :] - s0) / L[:, :, None], 0.0, 1.0)              # (L, P, T)
        d = polyval(coef[..., None, :], u[None])                                     # (D, L, P, T)
        d_s = polyval(coef[..., None, :], u[None], derivative=1) / L[None, :, :, None]
        n_d, n_l = len(d_targets), len(lat_T)
        n_c = n_d * n_l * n_lon
        d = d.reshape(n_c, n_t)
        d_s = d_s.reshape(n_c, n_t)
        s = np.broadcast_to(s_lon[None, None], (n_d, n_l, n_lon, n_t)).reshape(n_c, n_t)
        s_dot = np.broadcast_to(v_lon[None, None], (n_d, n_l, n_lon, n_t)).reshape(n_c, n_t)
        d_end = np.repeat(d_targets, n_l * n_lon)

        # Cartesian trajectories and kinematics [C, T]
        xr, yr, th, kappa = f.ref.frame_at(s)
        one_minus_kd = 1.0 - kappa * d
        x = xr - d * np.sin(th)
        y = yr + d * np.cos(th)
        yaw = th + np.arctan2(d_s, np.maximum(one_minus_kd, 1e-3))
        speed = s_dot * np.sqrt(one_minus_kd ** 2 + d_s ** 2)
        a_lon = np.gradient(speed, dt, axis=1)
        yaw_rate = np.gradient(np.unwrap(yaw, axis=1), dt, axis=1)
        a_lat = speed * yaw_rate
        return _Candidates(
            kinds=kinds, stop_s=stop_s, n=n_c, d=d, s=s, d_end=d_end,
            lon_index=np.tile(np.arange(n_lon), n_d * n_l),
            emergency=int(np.ravel_multi_index((0, 0, emergency_lon), (n_d, n_l, n_lon))),
            x=x, y=y, yaw=yaw, th=th, one_minus_kd=one_minus_kd, speed=speed, a_lon=a_lon,
            a_lat=a_lat, j_lon=np.gradient(a_lon, dt, axis=1), j_lat=np.gradient(a_lat, dt, axis=1),
            lane_pos=np.argmin(np.abs(d_end[:, None] - f.lane_c[None]), axis=1))

    # ---- step 3: limits and costs that do not need the objects
    def _limit_checks(self, f: _Frame, c: _Candidates) -> dict:
        """{limit name: (C,) bool, True where the candidate keeps it}; also sets c.v_cap and
        c.outside (how far the footprint is off the road at each step)."""
        p = self.params
        eps = 0.05
        c.v_cap = max(f.limit, f.v0)
        psi = c.yaw - c.th
        sp, cp = np.sin(psi), np.cos(psi)
        outside = np.zeros_like(c.d)
        for lx in (p.base_to_center_m - f.length / 2, f.front_m):
            for ly in (-f.half_w, f.half_w):
                d_corner = c.d + lx * sp + ly * cp
                outside = np.maximum(outside, np.maximum(d_corner - f.road.left_edge_d_m,
                                                         f.road.right_edge_d_m - d_corner))
        c.outside = outside
        c.occlusion_excess = self._occlusion_excess(f, c)
        c.lanes_entered = self._lanes_entered(f, c)
        return {
            'speed': c.speed.max(axis=1) <= c.v_cap + eps,
            'accel': (c.a_lon.max(axis=1) <= p.max_accel_mps2 + eps)
            & (c.a_lon.min(axis=1) >= -p.max_decel_mps2 - eps),
            'lateral accel': np.abs(c.a_lat).max(axis=1) <= p.max_lat_accel_mps2 + eps,
            'road': (outside[:, 1:] <= outside[:, :1] + p.road_tolerance_m).all(axis=1),
            'geometry': c.one_minus_kd.min(axis=1) > 0.05,
            'hidden pedestrians': c.occlusion_excess <= OCCLUSION_TOLERANCE_MPS,
        }

    def _occlusion_excess(self, f: _Frame, c: _Candidates) -> np.ndarray:
        """(C,) m/s above the speed from which the candidate could stop for a pedestrian stepping
        out past a standing vehicle beside it (fmdrive/planning/occlusion.py), after t = 0."""
        if not f.n_obj:
            return np.zeros(c.n)
        occ = occluders(f.labels, np.hypot(f.v_obj_s0, f.v_obj_d), f.d_obj[:, 0], f.ext_d[:, 0])
        if not occ.any() or not people_about(f.labels, f.pred.center_xy[:, 0, :], self.params):
            return np.zeros(c.n)
        return dart_out_excess(c.s[:, 1:] + f.front_m, c.d[:, 1:], c.speed[:, 1:],
                               (f.s_obj[:, 0] + f.ext_s[:, 0])[occ], f.d_obj[occ, 0], f.ext_d[occ, 0],
                               f.half_w, self.params,
                               reachable=np.maximum(f.v0 - self.params.comfort_decel_mps2 * f.t[1:], 0.0))

    def _costs(self, f: _Frame, c: _Candidates) -> dict:
        """Cost terms (C,) without objects: progress, comfort, lane, instruction, consistency."""
        p = self.params
        road, n_obj, lane_c, v_target = f.road, f.n_obj, f.lane_c, f.v_target
        costs = {}
        # progress: each lane allows the speed from which the ego can still stop comfortably,
        # keeping min_gap_m + time_headway_s, behind the nearest object ahead in it (now);
        # the speed error is taken to that, and a lane allowing less than the target costs
        # Only a lane whose leader is passable (slow, not a pedestrian, not a car standing in
        # traffic) counts as slower: behind moving traffic one follows (the IDM reference).
        v_lane = np.full(f.n_lanes, v_target)
        if n_obj:
            b, tau = p.comfort_decel_mps2, p.time_headway_s
            # in the lane: within the corridor its car-following reference stops in (_traffic)
            in_lane = (np.abs(f.d_obj[None, :, 0] - lane_c[:, None])
                       < _corridor_half_width(f, p)[None])                             # (lanes, N)
            in_lane &= (f.s_obj[None, :, 0] > f.s0)
            # the gap the IDM reference keeps (idm_gap_static_m behind what stands): a lane
            # blocked by a cone or a parked car allows 0 m/s where the car would stop behind it,
            # so passing wins there instead of waiting behind it for ever (scenario 109: stopped
            # 9.5 m behind a taper of cones, the lane still "allowing" 3 m/s)
            keep = np.where(f.static, p.idm_gap_static_m, p.min_gap_m)
            room = f.s_obj[:, 0] - f.ext_s[:, 0] - (f.s0 + f.front_m) - keep \
                + np.maximum(f.v_obj_s, 0.0) ** 2 / (2 * b)                            # (N,)
            v_allow = b * (-tau + np.sqrt(tau * tau + 2 * np.maximum(room, 0.0) / b))
            slow = (np.maximum(f.v_obj_s0, 0.0) < min(p.pass_speed_fraction * v_target,
                                                      p.pass_max_speed_mps)) \
                & (f.labels != 'pedestrian') \
                & ~f.in_traffic
            dist = np.where(in_lane, f.s_obj[None, :, 0], np.inf)
            first = np.argmin(dist, axis=1)
            has_lead = np.isfinite(dist[np.arange(f.n_lanes), first])
            lane_slow = has_lead & slow[first]
            v_lane = np.where(lane_slow, np.minimum(v_target, v_allow[first]), v_target)
        v_target_c = v_lane[c.lane_pos]
        costs['progress'] = (p.w_speed * np.mean((c.speed - f.v_ref[c.lane_pos]) ** 2, axis=1)
                             + p.w_lane_speed * (v_target - v_target_c) ** 2
                             + p.w_blocked * self._ends_blocked(f, c))
        costs['comfort'] = (p.w_accel * np.mean(c.a_lon ** 2, axis=1)
                            + p.w_lat_accel * np.mean(c.a_lat ** 2, axis=1)
                            + p.w_jerk * np.mean(c.j_lon ** 2, axis=1)
                            + p.w_lat_jerk * np.mean(c.j_lat ** 2, axis=1)
                            + p.w_hard_brake * np.mean(
                                np.maximum(-c.a_lon - p.comfort_decel_mps2, 0.0) ** 2, axis=1))
        lane_now = int(road.lane_index_of(f.d0))
        lane_end = road.lane_index_of(c.d_end)
        same_dir = ~f.oncoming
        lanes_right = (np.cumsum(same_dir) - same_dir) * same_dir       # same-direction lanes right
        costs['lane'] = (p.w_lane_offset * (c.d_end - road.nearest_lane_center_d(c.d_end)) ** 2
                         + p.w_lane_change * np.abs(lane_end - lane_now)
                         + p.w_keep_right * lanes_right[c.lane_pos]
                         + p.w_oncoming_lane * (c.lanes_entered & f.oncoming[None]).any(axis=1)
                         + p.w_leave_traffic * (len(f.lead_now) > 0 and not f.passable)
                         * (lane_end != lane_now))
        costs['instruction'] = p.w_instruction * self._instruction_mismatch(f, lane_now, lane_end, c.d_end)
        costs['consistency'] = self._consistency(f, c)
        return costs

    def _ends_blocked(self, f: _Frame, c: _Candidates) -> np.ndarray:
        """(C,) the candidate ends where something standing (a cone, a parked car; not a
        pedestrian, not a car seen moving, so not a queue) blocks the way ahead, within the
        distance the car-following reference brakes for it from the target speed.

        The per-lane speed in the progress cost compares lanes by what they allow now, and a
        lane closed 40 m ahead still allows most of the target speed there: the planner kept the
        lane, braked, and waited behind a taper of cones on a one-lane road for ever while the
        oncoming lane was free (closed-loop scenario 109, progress 0.40 of the expert's). Blocked
        is judged per candidate (its end offset against the object's extent across the road), so
        a nudge within the lane past a car parked half in it is not blocked."""
        p = self.params
        blocked = np.zeros(c.n, bool)
        if not f.n_obj:
            return blocked
        standing = f.static & ~f.in_traffic
        gap = f.s_obj[:, 0] - f.ext_s[:, 0] - (f.s0 + f.front_m)
        v = max(f.v_target, f.v0)
        reach = p.idm_gap_static_m + p.time_headway_s * v + v * v / (2 * p.comfort_decel_mps2)
        ahead = np.flatnonzero(standing & (f.s_obj[:, 0] > f.s0) & (gap < reach))
        if len(ahead):
            # within the corridor the car-following reference stops in (_traffic)
            across = (np.abs(c.d_end[:, None] - f.d_obj[None, ahead, 0])
                      < _corridor_half_width(f, p)[None, ahead])
            blocked = across.any(axis=1)
        return blocked

    def _oncoming_ok(self, f: _Frame, c: _Candidates):
        """(C,) entering an oncoming lane: only to pass something passable (or when asked to
        change lanes), and only if it stays clear of oncoming traffic for the whole pass."""
        oncoming_ok = np.ones(c.n, bool)
        lane_now_pos = int(np.argmin(np.abs(f.d0 - f.lane_c)))
        asked = f.instruction.kind in ('change_lane_left', 'change_lane_right')
        if f.oncoming.any() and not f.oncoming[lane_now_pos]:
            clear = np.ones(f.n_lanes, bool)
            if f.n_obj:
                meet_s = (f.s_obj[:, 0] - f.ext_s[:, 0] - f.s0 - f.front_m) \
                    / np.maximum(f.v_target + np.maximum(-f.v_obj_s0, 0.0), 0.5)      # (N,)
                near = np.abs(f.d_obj[None, :, 0] - f.lane_c[:, None]) \
                    < f.road.lane_width_m[:, None] / 2 + f.ext_d[None, :, 0]
                near &= (f.s_obj[None, :, 0] + f.ext_s[None, :, 0] > f.s0 - f.length)
                blocking = near & (meet_s[None] < f.t_pass)
                clear = ~blocking.any(axis=1)
            allowed = clear & (f.passable | asked)
            oncoming_ok = ~(c.lanes_entered & (f.oncoming & ~allowed)[None]).any(axis=1)
        return oncoming_ok

    def _lanes_entered(self, f: _Frame, c: _Candidates) -> np.ndarray:
        """(C, lanes) the lanes the footprint at a candidate's end reaches into by more than
        LANE_KEEP_TOLERANCE_M, the one it ends in included: a candidate ending astride the line
        (1.75 m over on a 3.5 m lane) is in the oncoming lane for its cost and its check too."""
        overlap = f.half_w + f.road.lane_width_m[None] / 2 - np.abs(c.d_end[:, None] - f.lane_c[None])
        entered = overlap > LANE_KEEP_TOLERANCE_M
        entered[np.arange(c.n), c.lane_pos] = True
        return entered

    def _instruction_mismatch(self, f: _Frame, lane_now, lane_end, d_end):
        """(C,) 1 where the candidate does not do what the instruction asked (lane instructions;
        speed instructions act through the target speed); pull over: the distance of its end from
        the kerb offset in lane widths (at most 1)."""
        kind = f.instruction.kind
        mismatch = np.zeros(len(lane_end))
        if kind in ('change_lane_left', 'change_lane_right'):
            want = lane_now + (1 if kind == 'change_lane_left' else -1)
            if np.any(f.road.lane_index_of(f.road.lane_center_d_m) == want):
                mismatch = (lane_end != want).astype(float)
            else:
                side = 'left' if kind == 'change_lane_left' else 'right'
                f.notes.append(f'no lane to the {side}; instruction {f.instruction.text!r} not '
                               'followed')
        elif kind == 'keep_lane':
            mismatch = (lane_end != lane_now).astype(float)
        elif kind == 'pull_over' and f.pull_over_d is not None:
            off = np.abs(np.asarray(d_end, float) - f.pull_over_d)
            mismatch = np.where(off < 0.15, 0.0, np.minimum(off / float(np.mean(f.road.lane_width_m)), 1.0))
        return mismatch

    def _consistency(self, f: _Frame, c: _Candidates):
        """(C,) departure from the previous plan over the times both cover."""
        p = self.params
        cost = np.zeros(c.n)
        if self._previous is not None and p.w_consistency > 0:
            prev_stamp, prev_t, prev_poses = self._previous
            lag = (f.stamp_ns - prev_stamp) / 1e9
            if 0 < lag <= 1.0:
                T_base_odom = np.linalg.inv(f.ego.T_odom_base())
                prev_xy = prev_poses[:, :2] @ T_base_odom[:2, :2].T + T_base_odom[:2, 3]
                overlap = f.t + lag <= prev_t[-1] + 1e-6
                px = np.interp(f.t[overlap] + lag, prev_t, prev_xy[:, 0])
                py = np.interp(f.t[overlap] + lag, prev_t, prev_xy[:, 1])
                cost = p.w_consistency * np.mean(
                    (c.x[:, overlap] - px) ** 2 + (c.y[:, overlap] - py) ** 2, axis=1)
        return cost

    # ---- step 4: objects - collisions, clearance and headway
    def _object_checks(self, f: _Frame, c: _Candidates, limits_ok, costs: dict) -> dict:
        """Candidates within the limits first; the others only when none of those is
        collision-free (degraded / emergency choice). Adds the 'clearance' and 'headway' costs;
        returns {'collision_free', 'evaluated', 'min_clearance'} (C,) arrays."""
        p = self.params
        n_obj, half_w, s0, d = f.n_obj, f.half_w, f.s0, c.d
        s_obj, d_obj, ext_s, ext_d = f.s_obj, f.d_obj, f.ext_s, f.ext_d
        cx = c.x + p.base_to_center_m * np.cos(c.yaw)
        cy = c.y + p.base_to_center_m * np.sin(c.yaw)
        collision_free = np.ones(c.n, bool)
        evaluated = np.zeros(c.n, bool)
        costs['clearance'] = np.zeros(c.n)
        costs['headway'] = np.zeros(c.n)
        min_clearance = np.full(c.n, np.inf)

        # objects that can ever be ahead of some candidate (for headway and stopping distance)
        rel = np.flatnonzero(((s_obj > s0)
                              & (d_obj + ext_d + half_w + 0.3 > d.min())
                              & (d_obj - ext_d - half_w - 0.3 < d.max())).any(axis=1)) \
            if n_obj else np.zeros(0, int)

        def evaluate(idx):
            evaluated[idx] = True
            if not n_obj or len(idx) == 0:
                return
            gap, behind = footprint_gaps(np.stack([cx[idx], cy[idx]], -1), c.yaw[idx], f.length / 2,
                                         half_w, f.pred, exact_within_m=p.clearance_soft_m + 0.5)
            keeps_lane = np.abs(d[idx] - f.d0) < LANE_KEEP_TOLERANCE_M
            counted = ~(behind & keeps_lane[..., None])                            # (c, T, N)
            gap_c = np.where(counted, gap, np.inf)
            too_close = gap_c < p.collision_margin_m
            # a standing car counts only where a candidate also comes closer to it than now
            # (footprint.not_closer_than_now): one stopped too close can still drive away
            too_close = margin_violations(too_close, np.stack([cx[idx], cy[idx]], -1), c.yaw[idx], f.length / 2,
                                          half_w, f.pred, exact_within_m=p.clearance_soft_m + 0.5)
            collision_free[idx] = ~too_close[:, 1:].any(axis=(1, 2))
            min_clearance[idx] = gap_c.min(axis=(1, 2))
            soft = np.maximum(p.clearance_soft_m - gap_c, 0.0)
            costs['clearance'][idx] = p.w_clearance * np.mean(np.sum(soft ** 2, axis=2), axis=1)
            # time headway to objects ahead in the candidate's corridor (Frenet, (c, N, T))
            if not len(rel):
                return
            so, do, es, ed = s_obj[rel], d_obj[rel], ext_s[rel], ext_d[rel]
            desired = p.min_gap_m + p.time_headway_s * c.speed[idx]
            s_i, d_i = c.s[idx][:, None, :], d[idx][:, None, :]
            ahead = (so[None] > s_i) & (np.abs(do[None] - d_i) < ed[None] + half_w + 0.3)
            gap_s = so[None] - es[None] - (s_i + f.front_m)
            short = np.where(ahead, np.maximum(desired[:, None, :] - gap_s, 0.0), 0.0) \
                / desired[:, None, :]
            # the horizon ends somewhere: from there the ego must still be able to stop behind
            # what is ahead (both braking equally hard): comfortably (cost) or at all (reject)
            v_end = c.speed[idx, -1][:, None]                                      # (c, 1)
            v_obj = np.maximum(f.v_obj_s[rel], 0.0)[None, :]                          # (1, N)
            gap_end = np.where(ahead[:, :, -1], gap_s[:, :, -1], np.inf)          # (c, N)
            need_comfort = (v_end ** 2 - v_obj ** 2) / (2 * p.comfort_decel_mps2) + p.min_gap_m
            need_max = (v_end ** 2 - v_obj ** 2) / (2 * p.max_decel_mps2) + p.collision_margin_m
            short_end = np.maximum(need_comfort - gap_end, 0.0) / (p.min_gap_m + v_end ** 2 / (
                2 * p.comfort_decel_mps2))
            costs['headway'][idx] = p.w_headway * (np.mean(np.sum(short ** 2, axis=1), axis=1)
                                                   + np.sum(short_end ** 2, axis=1))
            collision_free[idx] &= ~(need_max > gap_end).any(axis=1)

        evaluate(np.union1d(np.flatnonzero(limits_ok), [c.emergency]))
        if not (collision_free & limits_ok & evaluated).any():
            evaluate(np.flatnonzero(~evaluated))
        return {'collision_free': collision_free, 'evaluated': evaluated,
                'min_clearance': min_clearance}

    # ---- step 5: selection
    def _select(self, f: _Frame, c: _Candidates, limits: dict, limits_ok, costs: dict,
                objects: dict) -> PlanResult:
        """The cheapest candidate within every limit and collision-free; else the least violating
        collision-free one ('degraded'); else braking at max_decel along the lane
        ('emergency_stop')."""
        p = self.params
        collision_free, evaluated = objects['collision_free'], objects['evaluated']
        total = sum(costs.values())
        feasible = collision_free & limits_ok & evaluated
        status, notes = f.status, f.notes
        if feasible.any():
            best = int(np.argmin(np.where(feasible, total, np.inf)))
        elif collision_free.any():
            # the least violation (relative excess over each limit) wins, then the cost
            violation = (np.maximum(c.speed.max(axis=1) / c.v_cap - 1, 0)
                         + np.maximum(c.a_lon.max(axis=1) / p.max_accel_mps2 - 1, 0)
                         + np.maximum(-c.a_lon.min(axis=1) / p.max_decel_mps2 - 1, 0)
                         + np.maximum(np.abs(c.a_lat).max(axis=1) / p.max_lat_accel_mps2 - 1, 0)
                         + np.maximum(c.outside[:, 1:].max(axis=1) - c.outside[:, 0], 0)
                         + (~limits['geometry']) + (~limits['oncoming traffic'])
                         + c.occlusion_excess / max(f.v0, 1.0))
            best = int(np.argmin(np.where(collision_free, 1e3 * violation + total, np.inf)))
            broken = [name for name, ok in limits.items() if not ok[best]]
            status = 'degraded'
            notes.append('no candidate met every limit; violates: ' + ', '.join(broken))
        else:
            # hold the current lateral offset, brake at max_decel
            best = c.emergency
            status = 'emergency_stop'
            notes.append('every candidate collides; braking at max_decel along the lane')

        best_costs = {k: float(v[best]) for k, v in costs.items()}
        best_costs['total'] = float(total[best])
        best_costs['min_clearance_m'] = float(objects['min_clearance'][best])
        full_status = status if not notes else status + '; ' + '; '.join(notes)
        poses_base = np.c_[c.x[best], c.y[best], c.yaw[best]]
        plan, dense = self._make_plans(f.scene, poses_base, c.speed[best], full_status,
                                       best_costs['total'])
        ego = f.ego
        self._previous = (f.stamp_ns, f.t.copy(),
                          np.vstack([[ego.x, ego.y, ego.yaw_rad], dense.poses]))
        debug = {'n_feasible': int(feasible.sum()), 'n_collision_checked': int(evaluated.sum()),
                 'n_collision_free': int((collision_free & evaluated).sum()),
                 'instruction': f.instruction.kind, 'longitudinal': c.kinds[c.lon_index[best]],
                 'lateral_target_m': float(c.d_end[best]), 'speed_target_mps': f.v_target,
                 'speed_limit_mps': f.limit, 'desired_speed_mps': f.v_des,
                 'passable_lead': bool(f.passable), 'oncoming_lanes': f.oncoming.tolist(),
                 'stop_s_m': c.stop_s.tolist(), 's0_m': f.s0, 'd0_m': f.d0}
        return PlanResult(plan, c.n, best_costs, full_status, dense, notes, debug)
