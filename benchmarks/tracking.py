"""bench tracking: multi-object tracking quality (and tracker speed) on simulated drives.

Fixed-seed scenarios of several kinds are simulated and run through the cores as the graph chains
them (fmdrive.offline.run_cores: classical LiDAR detector -> FusionCore with its tracker). The
published tracks (base_link) are moved to odom with the frame's ground-truth ego pose and scored
against the simulator's ground truth, per scenario (track ids restart with each scenario):

- id switches: fmdrive.eval.metrics.id_switches (CLEAR-MOT, 2 m BEV centre gate); the other
  counts use the same GT <-> track matching, reproduced here frame by frame;
- misses: "must detect" GT objects (>= 5 LiDAR points, <= 50 m) without a matched track;
- false tracks: published tracks matched to no GT object (a track on a GT object too hidden to
  "must detect" is neither a miss nor a false track);
- MOTA = 1 - (misses + false tracks + id switches) / must-detect GT objects;
- velocity error: |v_track - v_gt| over ground (odom, m/s) of every matched pair;
- fragmentations: a GT object's matched run that is interrupted and later resumes;
- tracks per GT object: distinct track ids matched to one GT object over the scenario;
- mostly tracked: GT objects matched in >= 80 % of their must-detect frames.

    from benchmarks.tracking import measure, run_scenario, score   # or `fmdrive bench tracking`
"""
import os
import time

# Timing is single-threaded: the nodes share 2 cores with each other. Set before numpy loads.
for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import numpy as np  # noqa: E402

# (kind, seed): followed, cutting-in, crossing, parked and oncoming traffic, cars and pedestrians
SCENARIOS = (('cut_in', 1), ('car_following', 2), ('intersection', 5), ('pedestrian_crossing', 2),
             ('parked_car', 6), ('oncoming', 7))
QUICK_SCENARIOS = SCENARIOS[:3]
DURATION_S, QUICK_DURATION_S = 15.0, 8.0
CAMERA_SCALE = 0.1          # nothing here looks at the image: render a tiny one to save time
MATCH_GATE_M = 2.0          # the gate of fmdrive.eval.metrics.id_switches
MOSTLY_TRACKED = 0.8


def run_scenario(kind: str, seed: int, duration_s: float, fusion_params=None):
    """(tracks per frame in odom, GroundTruthFrames, fusion ms per frame) of one simulated drive."""
    from fmdrive.eval.metrics import GroundTruthFrame
    from fmdrive.offline import run_cores, simulate_frames

    points_per_object = []                  # run_cores drops them; keep them for "must detect"

    def frames():
        for frame in simulate_frames(kind, seed, duration_s, camera_scale=CAMERA_SCALE):
            points_per_object.append(frame.lidar_points_per_object)
            yield frame

    tracks_odom, gt_frames, fusion_ms = [], [], []
    for k, r in enumerate(run_cores(frames(), fusion_params=fusion_params)):
        T_odom_base = r.gt_ego.T_odom_base()
        tracks_odom.append([t.transformed(T_odom_base) for t in r.tracks_base])
        counts = points_per_object[k]
        gt_frames.append(GroundTruthFrame(
            stamp_ns=r.stamp_ns, ego=r.gt_ego, objects=r.gt_objects_odom,
            num_lidar_points=np.array([counts.get(o.id, 0) for o in r.gt_objects_odom], int)))
        fusion_ms.append(r.timings_ms['fusion'])
    return tracks_odom, gt_frames, fusion_ms


def score(tracks_per_frame, gt_frames) -> dict:
    """Counts of one scenario (see the module doc); sum them over scenarios with combine()."""
    from fmdrive.eval.metrics import clear_mot_pairs, id_switches

    trk = id_switches(tracks_per_frame, gt_frames, gate_m=MATCH_GATE_M)
    pairs_per_frame = clear_mot_pairs(tracks_per_frame, gt_frames, gate_m=MATCH_GATE_M)
    must_total = misses = false_tracks = frags = 0
    speed_errors, track_ids_of_gt = [], {}
    visible_frames, matched_visible = {}, {}
    state = {}                      # gt id -> 'matched' | 'lost' (was matched, is not now)
    for tracks, gt, pairs in zip(tracks_per_frame, gt_frames, pairs_per_frame):
        tracks = [t for t in tracks if t.id != 0]
        must = gt.must_detect()
        track_by_id = {int(t.id): t for t in tracks}
        false_tracks += len(tracks) - len(pairs)
        for o, is_must in zip(gt.objects, must):
            gid = int(o.id)
            tid = pairs.get(gid)
            if is_must:
                must_total += 1
                visible_frames[gid] = visible_frames.get(gid, 0) + 1
                if tid is None:
                    misses += 1
            if tid is None:
                if state.get(gid) == 'matched':
                    state[gid] = 'lost'
                continue
            if is_must:
                matched_visible[gid] = matched_visible.get(gid, 0) + 1
            if state.get(gid) == 'lost':
                frags += 1
            state[gid] = 'matched'
            track_ids_of_gt.setdefault(gid, set()).add(tid)
            speed_errors.append(float(np.linalg.norm(track_by_id[tid].velocity[:2] - o.velocity[:2])))
    mostly = sum(matched_visible.get(g, 0) >= MOSTLY_TRACKED * n for g, n in visible_frames.items())
    return {'id_switches': trk['id_switches'], 'tracks': trk['tracks'], 'matches': trk['matches'],
            'gt_must_detect': must_total, 'misses': misses, 'false_tracks': false_tracks,
            'fragmentations': frags, 'gt_objects': len(visible_frames),
            'gt_objects_tracked': len(track_ids_of_gt),
            'track_ids_on_gt': sum(len(s) for s in track_ids_of_gt.values()),
            'mostly_tracked': int(mostly), 'frames': len(gt_frames), 'speed_errors': speed_errors}


def combine(per_scenario: list[dict]) -> dict:
    """Totals and rates over scenarios."""
    keys = [k for k in per_scenario[0] if k != 'speed_errors']
    tot = {k: sum(s[k] for s in per_scenario) for k in keys}
    err = np.array([e for s in per_scenario for e in s['speed_errors']])
    must = max(tot['gt_must_detect'], 1)
    return {
        'id_switches': tot['id_switches'],
        'mota': round(1.0 - (tot['misses'] + tot['false_tracks'] + tot['id_switches']) / must, 4),
        'misses': tot['misses'], 'false_tracks': tot['false_tracks'],
        'gt_must_detect': tot['gt_must_detect'],
        'miss_rate': round(tot['misses'] / must, 4),
        'false_tracks_per_frame': round(tot['false_tracks'] / max(tot['frames'], 1), 3),
        'fragmentations': tot['fragmentations'],
        'tracks': tot['tracks'], 'gt_objects': tot['gt_objects'],
        'tracks_per_gt_object': round(tot['track_ids_on_gt'] / max(tot['gt_objects_tracked'], 1), 3),
        'mostly_tracked': round(tot['mostly_tracked'] / max(tot['gt_objects'], 1), 3),
        'velocity_error_mps_mean': round(float(err.mean()), 3) if err.size else None,
        'velocity_error_mps_p50': round(float(np.percentile(err, 50)), 3) if err.size else None,
        'velocity_error_mps_p90': round(float(np.percentile(err, 90)), 3) if err.size else None,
        'matches': tot['matches'], 'frames': tot['frames'],
    }


def tracker_update_ms(num_objects: int = 40, frames: int = 50, seed: int = 0) -> dict:
    """p50/p99 of MultiObjectTracker.update() with num_objects noisy moving cars per frame."""
    from fmdrive.fusion.tracker import MultiObjectTracker
    from fmdrive.objects import Object3D

    rng = np.random.default_rng(seed)
    xy0 = np.c_[rng.uniform(-60, 60, num_objects), rng.uniform(-60, 60, num_objects)]
    vel = rng.uniform(-10, 10, (num_objects, 2))
    tracker, ms = MultiObjectTracker(), []
    for k in range(frames):
        xy = xy0 + vel * 0.1 * k + rng.normal(0, 0.2, xy0.shape)
        dets = [Object3D([x, y, 0.8], [4.5, 1.9, 1.5], float(rng.uniform(-np.pi, np.pi)), 'car', 0.8)
                for x, y in xy]
        t0 = time.perf_counter()
        tracker.update(dets, 1_000_000_000 + k * 100_000_000)
        ms.append((time.perf_counter() - t0) * 1e3)
    ms = np.asarray(ms[2:])
    return {'p50': round(float(np.percentile(ms, 50)), 3), 'p99': round(float(np.percentile(ms, 99)), 3)}


def measure(quick: bool = False, scenarios=None, duration_s: float | None = None,
            fusion_params=None) -> dict:
    scenarios = scenarios or (QUICK_SCENARIOS if quick else SCENARIOS)
    duration_s = duration_s or (QUICK_DURATION_S if quick else DURATION_S)
    per_scenario, fusion_ms, by_scenario = [], [], {}
    for kind, seed in scenarios:
        tracks, gt_frames, ms = run_scenario(kind, seed, duration_s, fusion_params)
        s = score(tracks, gt_frames)
        per_scenario.append(s)
        fusion_ms += ms
        by_scenario[f'{kind} seed {seed}'] = {k: s[k] for k in (
            'id_switches', 'tracks', 'gt_objects', 'misses', 'false_tracks', 'fragmentations')}
    out = combine(per_scenario)
    ms = np.asarray(fusion_ms)
    t40 = tracker_update_ms()
    out.update({
        'fusion_ms_p50': round(float(np.percentile(ms, 50)), 3),
        'fusion_ms_p99': round(float(np.percentile(ms, 99)), 3),
        'tracker_update_ms_40_objects_p50': t40['p50'],
        'tracker_update_ms_40_objects_p99': t40['p99'],
        'by_scenario': by_scenario,
        'setup': f'{duration_s:.0f} s each, classical LiDAR detector (32 beams, 10 Hz) -> FusionCore, '
                 f'GT ego pose, {MATCH_GATE_M:.0f} m BEV centre gate, single thread',
    })
    return out


if __name__ == '__main__':
    import json
    import sys
    print(json.dumps(measure(quick='--quick' in sys.argv), indent=1))
