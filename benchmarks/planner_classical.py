"""bench planner-classical: open-loop quality of the classical planner on every simulator scenario
kind, against the expert's actual drive, twice side by side:

  perception: the graph's cores (classical LiDAR -> tracker -> scene -> planner, fmdrive.offline)
  perfect:    the same planner on a scene built from ground truth (GT objects moved to base_link,
              GT lanes), so planner errors are told apart from perception errors.
Both plan through the arbiter the planner node runs (fmdrive/planning/arbiter.py: deadline, safety
filter, fallback) with the planner node's default parameters, and both scenes carry the scenario's
speed limit, as a map would give it (scene_limit='configured' puts the configured fallback into
the perception run's scenes instead, as before the limit reached the scene).

Per kind and overall: L2 at 1/2/3 s, collision rate against the GT objects' real motion, min
distance (fmdrive.eval.metrics.planning_metrics), plan_ms p50/p99 (the arbiter's whole call, as
in the node; classical_ms: the classical planner alone), comfort of the plans (max
|accel|, |jerk| over the waypoints), frame-to-frame consistency (how far the new plan's 1 s
waypoint lies from where the previous plan said the car would be then), speed bias at 3 s (plan
speed minus the expert's), how often the plan is an emergency stop, how often the published plan
fails the safety filter, misses the deadline or is a fallback. Also the planning time of
a synthetic scene with 20 objects.
"""
import time

import numpy as np

SEED = 7
DURATION_S = 15.0
QUICK_KINDS = ('car_following', 'cut_in', 'pedestrian_crossing', 'parked_car', 'intersection')
QUICK_DURATION_S = 8.0


def _percentile(x, q):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if len(x) else float('nan')


def _perfect_scene(frame, speed_limit_mps):
    from fmdrive.fusion.scene import describe_scene
    from fmdrive.geometry import inv_T
    T_base_odom = inv_T(frame.ego.T_odom_base())
    objects_base = [o.transformed(T_base_odom) for o in frame.objects]
    return describe_scene(frame.stamp_ns, frame.ego, objects_base, frame.lanes, speed_limit_mps)


def _plan_figures(plans, gt_frames):
    """Comfort, consistency, speed bias and status counts of one run's plans (published Plans)."""
    from fmdrive.eval.metrics import _interp_pose
    gt_t = np.array([f.stamp_ns for f in gt_frames], np.int64)
    gt_v = np.array([f.ego.speed_mps for f in gt_frames])
    by_stamp = {int(f.stamp_ns): f for f in gt_frames}
    accel, jerk, bias, consistency, ms = [], [], [], [], []
    emergency = degraded = unsafe = late = fallback = budget_stop = 0
    prev = None
    for plan in plans:
        ms.append(plan.planning_time_ms)
        emergency += plan.status.startswith('emergency_stop')
        degraded += plan.status.startswith('degraded')
        budget_stop += 'budget_stop: ' in plan.status
        unsafe += '; unsafe: ' in plan.status
        late += not plan.deadline_met
        fallback += plan.source == 'fallback'
        start = by_stamp.get(int(plan.stamp_ns))
        if start is None or len(plan.t_s) < 3:
            prev = None
            continue
        t = np.r_[0.0, plan.t_s]
        v = np.r_[start.ego.speed_mps, plan.speeds_mps]
        a = np.diff(v) / np.diff(t)
        accel.append(float(np.abs(a).max()))
        jerk.append(float(np.abs(np.diff(a) / np.diff(t[1:])).max()))
        t3 = plan.stamp_ns + int(plan.t_s[-1] * 1e9)
        if gt_t[0] <= t3 <= gt_t[-1]:
            bias.append(float(plan.speeds_mps[-1] - np.interp(t3, gt_t, gt_v)))
        if prev is not None:
            dt_s = (plan.stamp_ns - prev.stamp_ns) / 1e9
            if 0 < dt_s <= 0.3:
                here = _interp_pose(1.0, np.r_[0.0, plan.t_s],
                                    np.vstack([[start.ego.x, start.ego.y, start.ego.yaw_rad],
                                               plan.poses]))[0, :2]
                there = _interp_pose(1.0 + dt_s, prev.t_s, prev.poses)[0, :2]
                consistency.append(float(np.linalg.norm(here - there)))
        prev = plan
    n = max(len(plans), 1)
    return {
        'plan_ms_p50': _percentile(ms, 50), 'plan_ms_p99': _percentile(ms, 99),
        'max_abs_accel_mps2_p50': _percentile(accel, 50), 'max_abs_accel_mps2_max':
            float(np.max(accel)) if accel else float('nan'),
        'max_abs_jerk_mps3_p50': _percentile(jerk, 50), 'max_abs_jerk_mps3_p99': _percentile(jerk, 99),
        'consistency_1s_m_mean': float(np.mean(consistency)) if consistency else float('nan'),
        'consistency_1s_m_p99': _percentile(consistency, 99),
        'speed_bias_3s_mps': float(np.mean(bias)) if bias else float('nan'),
        'speed_abs_err_3s_mps': float(np.mean(np.abs(bias))) if bias else float('nan'),
        'emergency_stop_rate': emergency / n, 'degraded_rate': degraded / n,
        'budget_stop_rate': budget_stop / n, 'unsafe_rate': unsafe / n,
        'deadline_missed_rate': late / n, 'fallback_rate': fallback / n,
    }


def _score(plans, gt_frames):
    from fmdrive.eval.metrics import planning_metrics
    out = planning_metrics(plans, gt_frames)
    out.update(_plan_figures(plans, gt_frames))
    return out


def _overall(per_kind, runs):
    """Plan-weighted means of per-kind figures (max for maxima, sums for counts)."""
    keys = next(iter(per_kind.values())).keys()
    weights = {k: max(v['plans'], 1) for k, v in per_kind.items()}
    out = {}
    for key in keys:
        vals = np.array([per_kind[k][key] for k in per_kind], float)
        w = np.array([weights[k] for k in per_kind], float)
        ok = np.isfinite(vals)
        if key in ('collisions', 'plans'):
            out[key] = int(vals[ok].sum())
        elif key.endswith('_max') or key == 'min_distance_m':
            out[key] = float(vals[ok].max() if key.endswith('_max') else vals[ok].min()) \
                if ok.any() else float('nan')
        elif key.startswith('plan_ms'):
            continue
        else:
            out[key] = float(np.average(vals[ok], weights=w[ok])) if ok.any() else float('nan')
    ms = np.concatenate([r for r in runs]) if runs else np.zeros(0)
    out['plan_ms_p50'] = _percentile(ms, 50)
    out['plan_ms_p99'] = _percentile(ms, 99)
    return out


def _arbiter():
    """The arbiter the planner node runs, with its default parameters."""
    from fmdrive import config
    from fmdrive.planning.arbiter import Arbiter
    return Arbiter.from_node_params(config.node_params('planner'))


def _twenty_objects_ms(repeats: int) -> dict:
    """Planning time of a two-lane road with 20 objects around the ego (the brief's budget)."""
    from fmdrive.objects import EgoState, Lane, Object3D, Scene
    rng = np.random.default_rng(0)
    x = np.linspace(-10, 120, 60)
    lanes = [Lane(o, 3.5, np.c_[x, np.full_like(x, 3.5 * o), np.zeros_like(x)]) for o in (-1, 0, 1)]
    objects = []
    for i in range(20):
        label = ('car', 'pedestrian', 'cyclist', 'cone')[i % 4]
        size = {'car': (4.5, 1.9, 1.5), 'pedestrian': (0.6, 0.6, 1.7), 'cyclist': (1.8, 0.7, 1.6),
                'cone': (0.4, 0.4, 0.7)}[label]
        objects.append(Object3D([rng.uniform(8, 70), rng.uniform(-8, 8), 0.8], size,
                                rng.uniform(-0.3, 0.3), label, id=i + 1,
                                velocity=[rng.uniform(-3, 10), rng.uniform(-1, 1), 0]))
    arbiter = _arbiter()
    times, classical = [], []
    for k in range(repeats):
        scene = Scene(k, EgoState(0.0, 0.0, 0.0, 10.0), objects, lanes, 13.9)
        out = arbiter.plan(scene)
        times.append(out.plan.planning_time_ms)
        classical.append(out.planner_ms)
    return {'plan_ms_20_objects_p50': _percentile(times, 50),
            'plan_ms_20_objects_p99': _percentile(times, 99),
            'classical_ms_20_objects_p50': _percentile(classical, 50),
            'classical_ms_20_objects_p99': _percentile(classical, 99)}


def measure(quick: bool = False, scene_limit: str = 'scenario') -> dict:
    from fmdrive import config
    from fmdrive.eval.metrics import GroundTruthFrame, json_safe
    from fmdrive.offline import run_cores, simulate_frames
    from fmdrive.sim import SCENARIO_KINDS, generate_scenario

    if scene_limit not in ('scenario', 'configured'):
        raise ValueError(f"scene_limit must be 'scenario' or 'configured', got {scene_limit!r}")
    kinds = QUICK_KINDS if quick else SCENARIO_KINDS
    duration_s = QUICK_DURATION_S if quick else DURATION_S
    t_start = time.perf_counter()
    per_kind = {'perception': {}, 'perfect': {}}
    plan_ms = {'perception': [], 'perfect': []}
    classical_ms = []
    for kind in kinds:
        spec = generate_scenario(kind, seed=SEED, duration_s=duration_s)
        limit = spec.road.speed_limit_mps
        frames = list(simulate_frames(spec, camera_scale=0.1))
        results = list(run_cores(frames, speed_limit_mps=limit if scene_limit == 'scenario' else None))
        gt_frames = [GroundTruthFrame(r.stamp_ns, r.gt_ego, r.gt_objects_odom) for r in results]
        plans = [r.plan for r in results if r.plan is not None]
        per_kind['perception'][kind] = _score(plans, gt_frames)
        per_kind['perception'][kind]['speed_limit_mps'] = results[-1].scene.speed_limit_mps \
            if results and results[-1].scene is not None else None
        plan_ms['perception'].append([p.planning_time_ms for p in plans])
        classical_ms += [r.planning.planner_ms for r in results if r.planning is not None]

        arbiter = _arbiter()
        perfect = [arbiter.plan(_perfect_scene(f, limit)).plan for f in frames]
        per_kind['perfect'][kind] = _score(perfect, gt_frames)
        per_kind['perfect'][kind]['speed_limit_mps'] = limit
        plan_ms['perfect'].append([p.planning_time_ms for p in perfect])
        del frames, results

    out = {}
    for run in ('perception', 'perfect'):
        overall = _overall({k: {kk: vv for kk, vv in v.items() if kk != 'speed_limit_mps'}
                            for k, v in per_kind[run].items()},
                           [np.asarray(m, float) for m in plan_ms[run]])
        out.update({f'{run}_{k}': v for k, v in overall.items()})
    out['plan_ms_p50'] = out['perception_plan_ms_p50']
    out['plan_ms_p99'] = out['perception_plan_ms_p99']
    out['classical_ms_p50'] = _percentile(classical_ms, 50)
    out['classical_ms_p99'] = _percentile(classical_ms, 99)
    out['deadline_ms'] = config.node_params('planner')['deadline_ms']
    out['fallback_budget_ms'] = _arbiter().fallback_budget_ms
    out.update(_twenty_objects_ms(30 if quick else 100))
    out['per_kind'] = per_kind
    out['kinds'] = list(kinds)
    out['seed'] = SEED
    out['duration_s'] = duration_s
    out['speed_limit_in_perception_scene'] = scene_limit
    out['wall_s'] = round(time.perf_counter() - t_start, 1)
    return json_safe(out)


if __name__ == '__main__':
    import json
    import sys
    print(json.dumps(measure(quick='--quick' in sys.argv), indent=1))
