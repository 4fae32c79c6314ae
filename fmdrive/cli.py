"""The `fmdrive` command.

    fmdrive sim --scenario cut_in --seed 3 -o runs/cut_in     simulate a scenario into a bag + ground truth
    fmdrive run [--use-sim-time]                              start the node graph (fmdrive/graph.py)
    fmdrive replay BAG [--rate R] [--loop] [--restamp]        publish a bag (with /clock)
    fmdrive record TOPIC... -o OUT                            record topics into an MCAP bag
    fmdrive demo [--out runs/demo]                            all of it: sim -> graph -> record -> eval -> report
    fmdrive eval RUN_DIR [--json]                             detection / tracking / planning / latency metrics
    fmdrive report RUN_DIR                                    picture report (camera overlay + bird's-eye view)
    fmdrive calib-check ...                                   LiDAR-camera alignment score + overlay
    fmdrive bench NAME [--quick] [--json]                     benchmarks: sim, transport, pipeline, lidar-classical,
                                                              tracking, planner-classical (one JSON object with --json)
    fmdrive profile MODEL [--json] [--runs N]                 parameters, MACs, memory, latency here, Orin roofline estimate
    fmdrive params                                            print config/params.yaml as generated from config.py

Errors a user can cause end in one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fmdrive import config


class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line."""


# ---------------------------------------------------------------------------------------------- sim
def _load_calibration(camera_info: str | None, extrinsics: str | None):
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    return (CameraModel.from_yaml(camera_info or config.CAMERA_INFO_FILE),
            load_extrinsics(extrinsics or config.EXTRINSICS_FILE))


def _scenario_spec(args):
    from fmdrive.sim import SCENARIO_KINDS, ScenarioSpec, generate_scenario
    if args.scenario.endswith(('.yaml', '.yml')) or Path(args.scenario).is_file():
        if not Path(args.scenario).is_file():
            raise UsageError(f'scenario file {args.scenario} does not exist')
        spec = ScenarioSpec.from_yaml(args.scenario)
        if args.seed is not None:
            spec.seed = args.seed
        if args.duration is not None:
            spec.duration_s = args.duration
    else:
        if args.scenario not in SCENARIO_KINDS:
            raise UsageError(f'unknown scenario {args.scenario!r}; kinds: {", ".join(SCENARIO_KINDS)} '
                             '(or a path to a scenario YAML)')
        spec = generate_scenario(args.scenario, args.seed or 0, 20.0 if args.duration is None else args.duration)
    if not spec.duration_s > 0:
        raise UsageError(f'--duration must be > 0 seconds, got {spec.duration_s:g}')
    if args.beams is not None:
        spec.lidar.beams = args.beams
    return spec


# what `fmdrive demo`/`eval`/`report` derive from a run dir's bag: stale once the bag is re-simulated
DERIVED_RUN_FILES = ('output', 'logs', 'replay.json', 'latency.json', 'metrics.json', 'report.png')


def _clear_derived_outputs(run_dir: Path) -> list[str]:
    """Remove the outputs derived from an earlier bag in run_dir (so eval cannot score them against
    the new ground truth); returns what was removed."""
    import shutil
    removed = []
    for name in DERIVED_RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def cmd_sim(args):
    if args.what == 'dataset':
        from fmdrive.training.cli import dataset_command
        return dataset_command(args)
    if args.what == 'planning-dataset':
        from fmdrive.sim.planning_dataset import write_planning_dataset
        import json
        print(json.dumps(write_planning_dataset(args.out or 'runs/planning_dataset', args.samples, args.seed or 0,
                                                progress=not args.no_progress,
                                                standing_start=args.standing_start)))
        return 0
    from fmdrive.bags.sim_writer import write_scenario
    if args.list:
        from fmdrive.sim import SCENARIO_KINDS
        print('\n'.join(SCENARIO_KINDS))
        return 0
    camera, extrinsics = _load_calibration(args.camera_info, args.extrinsics)
    spec = _scenario_spec(args)
    if args.serve:
        return _sim_serve(args, spec, camera, extrinsics)
    removed = _clear_derived_outputs(Path(args.output))
    if removed:
        print(f'removed the outputs of the previous run in {args.output}: {", ".join(removed)}', file=sys.stderr)
    result = write_scenario(spec, args.output, camera, extrinsics, progress=not args.no_progress)
    print(f"bag: {result['bag']}  ground truth: {Path(result['run_dir']) / 'ground_truth.json'}  "
          f"({result['frames']} frames, {result['realtime_factor']:.2f}x real time)")
    return 0


def _sim_serve(args, spec, camera, extrinsics) -> int:
    """fmdrive sim --serve: the simulator live on this domain for a graph started elsewhere (fmdrive run
    --use-sim-time, or ros2 launch with use_sim_time:=true); starts once the graph subscribes."""
    from fmdrive.graph import GRAPH
    from fmdrive.pipeline_run import WAIT_KEYS, expected_subscribers
    from fmdrive.rosenv import apply_to_this_process
    from fmdrive.sim.serve import serve
    if not (args.plan_timeout > 0 and args.serve_wait >= 0):
        raise UsageError(f'--plan-timeout must be > 0 and --serve-wait >= 0 seconds, got {args.plan_timeout:g} '
                         f'and {args.serve_wait:g}')
    apply_to_this_process()
    wanted = expected_subscribers(GRAPH, WAIT_KEYS)
    print(f'serving {spec.kind} (seed {spec.seed}, {spec.duration_s:.0f} s) closed loop on ROS_DOMAIN_ID '
          f'{os.environ.get("ROS_DOMAIN_ID", "0")}: waiting up to {args.serve_wait:g} s for the graph '
          f'(run it with use_sim_time), then lock-step on /clock', file=sys.stderr, flush=True)
    r = serve(spec, camera, extrinsics, plan_timeout_s=args.plan_timeout, progress=not args.no_progress,
              wait_for_subscribers=wanted, subscriber_timeout_s=args.serve_wait)
    print(json.dumps(r))
    return 130 if r['interrupted'] else 0


def add_sim(sub):
    p = sub.add_parser('sim', help='simulate a scenario into a rosbag2 MCAP bag + ground truth; '
                       '`sim dataset`: encoder training frames; `sim planning-dataset`: planner LM samples')
    p.add_argument('what', nargs='?', choices=('dataset', 'planning-dataset'), default=None,
                   help='dataset: camera + LiDAR training frames with ground truth, domain-randomised, '
                   'train/val/test splits, --out DIR --scenes N (the same as `fmdrive train dataset`); '
                   'planning-dataset: scene text [+ intent] -> expert waypoints, --out DIR --samples N')
    p.add_argument('--out', default=None, help='dataset / planning-dataset: directory (resumable; default '
                   'runs/dataset / runs/planning_dataset)')
    p.add_argument('--scenes', type=int, default=72, help='dataset: training scenes (val/test: scenes // 8, >= 4)')
    p.add_argument('--val-scenes', type=int, default=None, help='dataset: validation scenes')
    p.add_argument('--test-scenes', type=int, default=None, help='dataset: test scenes')
    p.add_argument('--no-camera', action='store_true', help='dataset: LiDAR only (faster)')
    p.add_argument('--samples', type=int, default=20000, help='planning-dataset: at least this many samples')
    p.add_argument('--standing-start', type=float, default=0.0,
                   help='planning-dataset: share of scenarios whose expert starts from standstill (default 0)')
    p.add_argument('--scenario', default='car_following', help='scenario kind or a scenario YAML file')
    p.add_argument('--seed', type=int, default=None)
    p.add_argument('--duration', type=float, default=None, help='seconds (default 20)')
    p.add_argument('--beams', type=int, choices=(16, 32, 64, 128), default=None)
    p.add_argument('--camera-info', default=None, help='camera_info YAML (default calibration/camera_front.yaml)')
    p.add_argument('--extrinsics', default=None, help='extrinsics YAML (default calibration/extrinsics.yaml)')
    p.add_argument('-o', '--output', default='runs/sim', help='run directory to write')
    p.add_argument('--list', action='store_true', help='list the scenario kinds and exit')
    p.add_argument('--serve', action='store_true',
                   help='no bag: run the scenario live on DDS, closed loop, for a graph on sim time (sensors, '
                   'odometry, /tf, /clock out; /planning/plan in); prints the result as JSON')
    p.add_argument('--plan-timeout', type=float, default=3.0,
                   help='--serve: wall seconds to wait for the plan of a frame before driving on the previous one')
    p.add_argument('--serve-wait', type=float, default=120.0,
                   help='--serve: wall seconds to wait for the graph to subscribe before starting anyway')
    p.add_argument('--no-progress', action='store_true')
    p.set_defaults(func=cmd_sim)


# ---------------------------------------------------------------------------------------------- run
def cmd_run(args):
    import os
    import threading
    import time

    from fmdrive import interrupts
    from fmdrive.graph import GraphProcesses, graph_nodes_on_domain
    from fmdrive.rosenv import apply_to_this_process, ros_env
    from fmdrive.pipeline_run import graph_options
    remaps, overrides = graph_options(args)
    if args.watchdog_s < 0 or args.watchdog_s != args.watchdog_s:
        raise UsageError(f'--watchdog-s {args.watchdog_s}: give the seconds of silence on /diagnostics after which '
                         f'a node is taken for hung (> 0), or 0 to turn the watchdog off')
    apply_to_this_process()  # the check below looks on the domain the nodes will join
    domain = os.environ.get('ROS_DOMAIN_ID') or '0'
    running = graph_nodes_on_domain()
    if running:
        raise UsageError(f'an fmdrive graph is already running on ROS domain {domain} (nodes {", ".join(running)}); '
                         f'stop it, or start this one on another domain: ROS_DOMAIN_ID=<id> fmdrive run')
    graph = GraphProcesses(ros_env(), args.log_dir, params_file=args.params_file, use_sim_time=args.use_sim_time,
                           remaps=remaps, overrides=overrides, watchdog_s=args.watchdog_s or None)
    graph.start()

    def report(text):
        print(text, file=sys.stderr, flush=True)
    if graph.stale_removed_at_start[0]:
        count, freed = graph.stale_removed_at_start
        report(f'fmdrive run: removed {count} shared-memory segment(s) of dead Fast DDS participants '
               f'({freed / 1e6:.0f} MB) before starting')
    handles = None
    try:
        graph.wait_ready(report=report)
        print(f'graph up: {", ".join(graph.procs)} (logs in {args.log_dir}); Ctrl-C stops it', flush=True)
        # the watchdog's evidence: every node's reports on /diagnostics; and the supervisor's own
        # status there (fmdrive/supervisor: each node running, hung, restarting or given up)
        from diagnostic_msgs.msg import DiagnosticArray

        from fmdrive.nodes.base import TRANSPORT_CHECK_PERIOD_S, TRANSPORT_LOST_CHECKS, make_qos
        from fmdrive.rosenv import close_node, open_node
        from fmdrive.shm_ports import PortWatch

        def open_supervisor():
            h = open_node(f'fmdrive_run_supervisor_{os.getpid()}')
            h[1].create_subscription(DiagnosticArray, graph.topic('diagnostics'), graph.heard_from_diagnostics,
                                     make_qos('reliable', 50))
            return h, h[1].create_publisher(DiagnosticArray, graph.topic('diagnostics'), make_qos('reliable', 10))
        handles, status_pub = open_supervisor()
        # the supervisor's participant can be cut off from its shared-memory port as a node's can
        # (fmdrive/shm_ports.py): it would then stop hearing restarted nodes and take them for hung
        port_watch, next_port_check = PortWatch(), 0.0
        next_status = 0.0
        while graph.alive():  # a node that dies (or hangs) is reported and restarted; one that keeps dying is given up
            interrupts.check()
            graph.supervise(report)
            now = time.monotonic()
            if now >= next_status:
                status_pub.publish(_supervisor_diagnostics(handles[1], graph))
                next_status = now + SUPERVISOR_STATUS_PERIOD_S
            if now >= next_port_check:
                next_port_check = now + TRANSPORT_CHECK_PERIOD_S
                problems = port_watch.check()
                if port_watch.consecutive >= TRANSPORT_LOST_CHECKS:
                    report(f'fmdrive run: its own ROS participant can no longer receive over Fast DDS shared '
                           f'memory ({"; ".join(problems)}); creating it again')
                    # closing can spin in Fast DDS's teardown (eProsima/Fast-DDS#6513): bounded, the old
                    # participant is left behind rather than the graph left unsupervised
                    closer = threading.Thread(target=close_node, args=handles, daemon=True)
                    closer.start()
                    closer.join(CLOSE_TIMEOUT_S)
                    if closer.is_alive():
                        report(f'fmdrive run: its old participant did not close within {CLOSE_TIMEOUT_S:g} s; '
                               'left behind')
                    handles, status_pub = open_supervisor()
                    port_watch = PortWatch()
            handles[2].spin_once(timeout_sec=0.2)
        report('every node of the graph has been given up; stopping')
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if handles is not None:
            close_node(*handles)
        graph.stop()


SUPERVISOR_STATUS_PERIOD_S = 1.0
CLOSE_TIMEOUT_S = 5.0            # the supervisor's cut-off participant: how long its close may take


def _supervisor_diagnostics(node, graph):
    """`fmdrive run`'s status as a DiagnosticArray (fmdrive.graph.supervisor_summary says what it holds)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    from fmdrive.graph import SUPERVISOR_STATUS, supervisor_summary
    level, message, values = supervisor_summary(graph.states())
    st = DiagnosticStatus(name=SUPERVISOR_STATUS, hardware_id='fmdrive', message=message,
                          level=getattr(DiagnosticStatus, level))
    st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    arr = DiagnosticArray(status=[st])
    arr.header.stamp = node.get_clock().now().to_msg()
    return arr


def add_run(sub):
    p = sub.add_parser('run', help='start the node graph, one process per node (like ros2 launch), '
                                   'restarting a node that dies')
    p.add_argument('--use-sim-time', action='store_true', help='follow /clock (when replaying with --clock)')
    p.add_argument('--params-file', default=None, help='ROS params YAML (default config/params.yaml)')
    p.add_argument('--log-dir', default='runs/logs')
    from fmdrive.graph import WATCHDOG_S
    p.add_argument('--watchdog-s', type=float, default=WATCHDOG_S,
                   help=f'a node running but silent on /diagnostics this long is taken for hung: its stacks go to '
                        f'its log, it is killed and restarted (default {WATCHDOG_S:g}; 0 = off)')
    from fmdrive.pipeline_run import add_graph_arguments
    add_graph_arguments(p)   # --remap FROM:=TO (every node), -p node.param:=value
    p.set_defaults(func=cmd_run)


# ---------------------------------------------------------------------------------------------- demo
def _link_user_bag(bag: Path, out: Path) -> None:
    """out/bag -> the user's bag (a link, nothing copied), so eval and report find it where a run dir
    keeps its input; ground_truth.json beside the bag is copied in when out has none."""
    import shutil
    out.mkdir(parents=True, exist_ok=True)
    link = out / 'bag'
    bag_dir = bag if bag.is_dir() else bag.parent
    if link.resolve() != bag_dir.resolve():
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            raise UsageError(f'{link} exists and is not the bag {bag}; choose another --out')
        if bag.is_dir():
            link.symlink_to(bag.resolve(), target_is_directory=True)
        else:  # a bare .mcap: a directory holding a link to it reads as a bag
            link.mkdir()
            (link / bag.name).symlink_to(bag.resolve())
    gt = bag_dir.parent / 'ground_truth.json'
    if not (out / 'ground_truth.json').exists() and gt.is_file():
        shutil.copyfile(gt, out / 'ground_truth.json')


def cmd_demo(args):
    import time

    from fmdrive.pipeline_run import graph_options, replay_through_graph
    out = Path(args.out)
    t0 = time.perf_counter()
    remaps, overrides = graph_options(args)
    if not args.rate > 0:
        raise UsageError(f'--rate must be > 0, got {args.rate:g}')
    if args.closed_loop:
        return _demo_closed_loop(args, out, remaps, overrides, t0)
    if args.bag:
        bag = Path(args.bag)
        from fmdrive.bags.reader import BagReader
        with BagReader(bag) as reader:  # BagError (one line) for a missing or broken bag
            print(f'[1/4] your bag: {reader}', flush=True)
        derived = [(out / name).resolve() for name in DERIVED_RUN_FILES]
        if any(bag.resolve() == d or d in bag.resolve().parents for d in derived):
            raise UsageError(f'{bag} lies where the demo writes its outputs in {out}; choose another --out')
        _clear_derived_outputs(out)
        _link_user_bag(bag, out)
    else:
        if not args.duration > 0:
            raise UsageError(f'--duration must be > 0 seconds, got {args.duration:g}')
        from fmdrive.bags.sim_writer import write_scenario
        from fmdrive.sim import generate_scenario
        camera, extrinsics = _load_calibration(None, None)
        spec = generate_scenario(args.scenario, args.seed, args.duration)
        print(f'[1/4] simulating {spec.kind} (seed {spec.seed}, {spec.duration_s:.0f} s) -> {out}/bag', flush=True)
        _clear_derived_outputs(out)
        write_scenario(spec, out, camera, extrinsics)
    print(f'[2/4] replaying the bag through the graph at {args.rate:g}x (separate processes over DDS), '
          'recording outputs', flush=True)
    latency = replay_through_graph(out / 'bag', out, rate=args.rate, remaps=remaps, overrides=overrides)
    from fmdrive import interrupts
    interrupts.check()
    metrics = None
    if (out / 'ground_truth.json').is_file():
        print('[3/4] evaluating against ground truth', flush=True)
        from fmdrive.eval.run_eval import eval_run
        metrics = eval_run(out)
        (out / 'metrics.json').write_text(json.dumps(metrics, indent=1))
    else:
        print(f'[3/4] eval skipped: no ground_truth.json beside the bag or in {out}', flush=True)
    print('[4/4] drawing the report', flush=True)
    from fmdrive.eval.metrics import EvalError
    from fmdrive.eval.report import make_report
    try:
        report = make_report(out, out / 'report.png')
    except EvalError as e:
        report = f'not drawn ({e})'
    line = (f"\ne2e latency p50/p99 {latency['e2e_p50_ms']}/{latency['e2e_p99_ms']} ms  dropped sensor frames "
            f"{latency['dropped_sensor_frames']}/{latency['sensor_frames']}  inputs lost in DDS "
            f"{latency['dds_lost_inputs']}, dropped by queues {latency['queue_dropped_inputs']}, throttled "
            f"{latency['throttled_inputs']}")
    if metrics is not None:
        det, plan = metrics.get('detection', {}), metrics.get('planning', {})
        baseline = det.get('lidar_classical')    # the learned LiDAR ran: the classical path beside it
        versus = (f" ({det.get('lidar_encoder')}; classical path on the same frames "
                  f"{baseline.get('car_bev_ap50')})" if baseline else '')
        line = (f"\ncar BEV AP@0.5 {det.get('car_bev_ap50')}{versus}  L2@3s {plan.get('l2_3s')} m  collision rate "
                f"{plan.get('collision_rate')}  ({metrics.get('frames_scored')} frames scored)" + line)
    print(line)
    print(f'input bag:     {out / "bag"}\noutput bag:    {out / "output"}\nground truth:  '
          f'{out / "ground_truth.json" if metrics is not None else "none"}\nmetrics:       '
          f'{out / "metrics.json" if metrics is not None else "none (no ground truth)"}\nreport:        {report}\n'
          f'node logs:     {out / "logs"}\n(done in {time.perf_counter() - t0:.0f} s)')
    return 0


def _demo_closed_loop(args, out, remaps, overrides, t0) -> int:
    import time

    from fmdrive.pipeline_run import closed_loop_through_graph
    from fmdrive.sim import generate_scenario
    from fmdrive.sim.live import agreement, drive_in_process
    if args.bag:
        raise UsageError('--closed-loop drives the simulator; it cannot take a recorded --bag')
    if args.rate != 1.0:
        raise UsageError('--closed-loop runs lock-step on sim time; --rate does not apply')
    if not args.duration > 0:
        raise UsageError(f'--duration must be > 0 seconds, got {args.duration:g}')
    camera, extrinsics = _load_calibration(None, None)
    spec = generate_scenario(args.scenario, args.seed, args.duration)
    print(f'[1/3] closed loop: the graph drives the simulated car through {spec.kind} (seed {spec.seed}, '
          f'{spec.duration_s:.0f} s) over DDS, lock-step on /clock', flush=True)
    r = closed_loop_through_graph(spec, camera, extrinsics, out, overrides=overrides, remaps=remaps)
    hit = r['first_collision']
    what = f"COLLISION at {hit['t_s']} s with agent {hit['agent_id']}" if hit else 'no collision'
    print(f"      {what}; progress {r['progress_m']} m in {r['sim_s']} s; plans followed {r['plans_followed']}; "
          f"frames without a plan {r['frames_without_plan']}/{r['frames'] - 1}", flush=True)
    print("[2/3] the same scenario in-process (the graph's cores in one process, no DDS)", flush=True)
    try:
        twin = drive_in_process(generate_scenario(args.scenario, args.seed, args.duration), camera, extrinsics,
                                overrides=overrides)
    except ValueError as e:
        twin = None
        print(f'      not run: {e}', flush=True)
    if twin is not None:
        r['in_process'] = {k: v for k, v in twin.items() if k != 'ego_track'}
        r['agreement_with_in_process'] = agreement(r, twin)
        (out / 'closed_loop.json').write_text(json.dumps(r, indent=1))
        a = r['agreement_with_in_process']
        print(f"[3/3] DDS vs in-process: same collision outcome {a['same_collision_outcome']}, progress differs by "
              f"{a['progress_diff_m']} m, the two cars at most {a['max_position_diff_m']} m apart "
              f"(mean {a['mean_position_diff_m']} m over {a['frames_compared']} frames)", flush=True)
    print(f"result:        {out / 'closed_loop.json'}\n"
          f"node logs:     {out / 'logs'}\n(done in {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


def add_demo(sub):
    from fmdrive.pipeline_run import add_graph_arguments
    p = sub.add_parser('demo', help='simulate (or take your --bag), run the graph on the bag, record, evaluate, '
                                    'draw the report')
    p.add_argument('--out', default='runs/demo')
    p.add_argument('--scenario', default='cut_in')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--duration', type=float, default=20.0)
    p.add_argument('--bag', default=None, help='replay this bag instead of simulating one (eval runs when '
                                               'ground_truth.json lies beside it or in --out)')
    p.add_argument('--rate', type=float, default=1.0, help='replay speed factor')
    p.add_argument('--closed-loop', action='store_true',
                   help='no bag: the simulator runs live and the graph drives its car over DDS (lock-step on '
                   '/clock, the graph on sim time); prints collisions, progress and plan sources')
    add_graph_arguments(p)
    p.set_defaults(func=cmd_demo)


# ---------------------------------------------------------------------------------------------- eval/report
def cmd_eval(args):
    if args.run_dirs == ['planner'] and not Path('planner').is_dir():
        return cmd_eval_planner(args)
    if args.run_dirs == ['closed-loop'] and not Path('closed-loop').is_dir():
        return cmd_eval_closed_loop(args)
    from fmdrive.eval.run_eval import run
    return run(args)


def _print_result(result: dict, args) -> int:
    """Print an eval's JSON (one line with --json) and write it to --output when given."""
    text = json.dumps(result, indent=None if args.json else 1)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + '\n')
    print(text)
    return 0


def cmd_eval_planner(args):
    """`fmdrive eval planner [--quick] [--json]`: benchmarks/planner.py evaluate() (open loop L2 and
    collisions per planner on held-out sim scenes, adversarial instructions)."""
    module = _benchmark_module('planner')
    if args.planner_run is not None:
        _check_planner_run(args.planner_run)
    result = module.evaluate(quick=args.quick, planner_run=args.planner_run or module.RUN_DIR)
    return _print_result(result, args)


def _check_planner_run(path: str) -> None:
    """--planner-run of bench planner and eval planner: a training run directory that exists."""
    if not Path(path).is_dir():
        raise UsageError(f'--planner-run {path}: no such directory')


def cmd_eval_closed_loop(args):
    """`fmdrive eval closed-loop [--quick] [--json]`: held-out scenarios of the batch closed loop
    driven by the planner in-process and by the planner node over DDS; do they agree?"""
    from fmdrive.sim.planner_dds import closed_loop_agreement
    indices = [9, 19, 29] if args.quick else [9, 19, 29, 39, 49, 59, 69, 79, 89, 99]
    result = closed_loop_agreement(indices)
    return _print_result(result, args)


def add_eval(sub):
    from fmdrive.eval.run_eval import add_arguments
    p = sub.add_parser('eval', help='metrics of a run directory against its ground truth; '
                                    '`eval planner [--quick]`: the planners on held-out sim scenes; '
                                    '`eval closed-loop [--quick]`: the batch closed loop in-process vs the '
                                    'planner node over DDS')
    add_arguments(p)
    p.add_argument('--quick', action='store_true', help='eval planner: finish in under two minutes; '
                   'eval closed-loop: 3 scenarios instead of 10')
    p.add_argument('--planner-run', default=None, metavar='DIR',
                   help='eval planner: the training run whose teacher/ and student_nokd/ are compared '
                        '(default runs/planner_lm)')
    p.set_defaults(func=cmd_eval)


def cmd_report(args):
    from fmdrive.eval.report import make_report
    if not Path(args.run_dir).is_dir():
        raise UsageError(f'run directory {args.run_dir} does not exist')
    print(make_report(Path(args.run_dir), args.output))
    return 0


def add_report(sub):
    p = sub.add_parser('report', help='picture report of a run (camera overlay + bird\'s-eye view)')
    p.add_argument('run_dir')
    p.add_argument('-o', '--output', default=None, help='PNG path (default RUN_DIR/report.png)')
    p.set_defaults(func=cmd_report)


# ---------------------------------------------------------------------------------------------- bags
def add_replay(sub):
    from fmdrive.bags.replay import add_replay_arguments, run_replay
    p = sub.add_parser('replay', help='publish a rosbag2 bag with rclpy (and /clock)')
    add_replay_arguments(p)
    p.set_defaults(func=run_replay)


def add_record(sub):
    from fmdrive.bags.record import add_record_arguments, run_record
    p = sub.add_parser('record', help='record topics into a rosbag2 MCAP bag')
    add_record_arguments(p)
    p.set_defaults(func=run_record)


def cmd_bag_recover(args):
    from fmdrive.bags.writer import recover_bag
    result = recover_bag(args.bag, args.output)
    print(f"recovered {result['messages']} messages into {result['output']}: "
          + ', '.join(f'{t} {n}' for t, n in result['topics'].items())
          + ('' if result['complete'] else ' (the damaged tail of the file was left out)'))
    return 0


def add_bag(sub):
    p = sub.add_parser('bag', help='bag tools: recover')
    bag_sub = p.add_subparsers(dest='bag_command', required=True, metavar='BAG_COMMAND')
    r = bag_sub.add_parser('recover', help='make a readable bag (summary + metadata.yaml) of an MCAP '
                                           'whose recorder was killed')
    r.add_argument('bag', help='bag directory or .mcap file')
    r.add_argument('-o', '--output', default=None, help='write the recovered bag here (default: in place)')
    r.set_defaults(func=cmd_bag_recover)


# ---------------------------------------------------------------------------------------------- calib
def add_calib_check(sub):
    from fmdrive.calibration.check import add_arguments, run
    p = sub.add_parser('calib-check', help='LiDAR-camera alignment score (true vs perturbed) + overlay')
    add_arguments(p)
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------- import
def add_import(sub):
    from fmdrive.importers.cli import add_arguments, run
    p = sub.add_parser('import', help='a KITTI / nuScenes / .pcd+image dataset into a bag (+ ground truth)')
    add_arguments(p)
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------- bench
BENCHMARKS = ('sim', 'transport', 'pipeline', 'lidar-classical', 'tracking', 'planner-classical', 'soak', 'lidar',
              'camera')
BENCH_OPTIONS = ('beams', 'rate', 'minutes', 'lidar_backend', 'planner_run')   # passed to measure() when it takes them
BENCHMARKS += ('planner',)


def _benchmark_module(name: str):
    import importlib.util
    path = config.package_file(f'benchmarks/{name.replace("-", "_")}.py')
    spec = importlib.util.spec_from_file_location(f'fmdrive_bench_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cmd_bench(args):
    import importlib.util
    import inspect
    path = config.package_file(f'benchmarks/{args.name.replace("-", "_")}.py')
    spec = importlib.util.spec_from_file_location(f'fmdrive_bench_{args.name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    takes = inspect.signature(module.measure).parameters
    options = {k: getattr(args, k) for k in BENCH_OPTIONS if getattr(args, k) is not None}
    refused = [k for k in options if k not in takes]
    if refused:
        raise UsageError(f'bench {args.name} takes no ' + ', '.join(f'--{k.replace("_", "-")}' for k in refused))
    for key, value in options.items():
        if key == 'planner_run':
            _check_planner_run(value)
        if isinstance(value, (int, float)) and not value > 0:
            raise UsageError(f'--{key} must be > 0, got {value:g}')
    result = module.measure(quick=args.quick, **options)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f'{key:32s} {value}')
    return 0


def add_bench(sub):
    p = sub.add_parser('bench', help='benchmarks: ' + ', '.join(BENCHMARKS))
    p.add_argument('name', choices=BENCHMARKS)
    p.add_argument('--quick', action='store_true', help='finish in under two minutes')
    p.add_argument('--json', action='store_true', help='print exactly one JSON object')
    p.add_argument('--beams', type=int, choices=(16, 32, 64, 128), default=None,
                   help='LiDAR beams of the simulated bag (pipeline, lidar-classical)')
    p.add_argument('--rate', type=float, default=None, help='replay speed factor (pipeline)')
    p.add_argument('--lidar-backend', default=None, choices=('classical', 'onnxruntime'),
                   help='pipeline: the lidar_encoder backend (default: the graph default, classical)')
    p.add_argument('--minutes', type=float, default=None, help='how long to run (soak)')
    p.add_argument('--planner-run', default=None, metavar='DIR',
                   help='planner: the training run whose teacher/ is timed (default runs/planner_lm)')
    p.set_defaults(func=cmd_bench)


# ---------------------------------------------------------------------------------------------- models
def add_train(sub):
    from fmdrive.training.cli import add_train_arguments, cmd_train
    p = sub.add_parser('train', help='training frames from the simulator (dataset) or a model (lidar); torch')
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)


def add_export(sub):
    from fmdrive.training.cli import add_export_arguments, cmd_export
    p = sub.add_parser('export', help='a trained checkpoint -> fp32 ONNX (static shapes, checked against torch) + card')
    add_export_arguments(p)
    p.set_defaults(func=cmd_export)


def add_quantize(sub):
    from fmdrive.training.cli import add_quantize_arguments, cmd_quantize
    p = sub.add_parser('quantize', help='INT8 QDQ variants (TensorRT symmetric, CPU U8S8) calibrated on dataset '
                                        'frames; compares calibration methods by AP')
    add_quantize_arguments(p)
    p.set_defaults(func=cmd_quantize)


def add_build_engines(sub):
    from fmdrive.inference.build import add_arguments, run
    p = sub.add_parser('build-engines', help='build the TensorRT plans of engines/*/card.yaml on this machine '
                       '(the Jetson) and exit')
    add_arguments(p)
    p.set_defaults(func=run)


def add_profile(sub):
    from fmdrive.profile import add_arguments, run
    p = sub.add_parser('profile', help='a model\'s parameters, MACs per layer, memory per precision, latency measured '
                                       'here (ONNX Runtime CPU) and a roofline estimate for Jetson Orin')
    add_arguments(p)
    p.set_defaults(func=run)


def cmd_params(args):
    from fmdrive.graph import params_yaml_text
    print(params_yaml_text(), end='')
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (`fmdrive run: error: ...`, exit 2), not usage + error;
    `fmdrive CMD --help` still shows the usage."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog='fmdrive', description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for add in (add_sim, add_run, add_replay, add_record, add_bag, add_demo, add_eval, add_report,
                add_calib_check, add_import, add_bench, add_build_engines, add_train, add_export, add_quantize,
                add_profile):
        add(sub)
    sub.add_parser('params', help='print the default node parameters as ROS params YAML').set_defaults(
        func=cmd_params)
    return parser


def main(argv=None) -> int:
    from fmdrive import interrupts
    # Ctrl-C and `kill` stop every command cleanly (exit 130), also when SIGINT was inherited
    # ignored (started in the background of a non-interactive shell: CI, nohup, cron)
    interrupts.install()
    try:
        parser = build_parser()     # imports numpy and friends: slow on a loaded machine
    except KeyboardInterrupt:
        print('fmdrive: interrupted', file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    user_errors = _user_error_types()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f'fmdrive {args.command}: interrupted', file=sys.stderr)
        return 130
    except RuntimeError as e:
        if not interrupts.disguised(e):
            raise
        print(f'fmdrive {args.command}: interrupted', file=sys.stderr)
        return 130
    except user_errors as e:
        print(f'fmdrive {args.command}: error: {e}', file=sys.stderr)
        return 2


def _user_error_types() -> tuple:
    """Exceptions that mean 'the input was wrong' (bad file, bad bag, bad scenario...)."""
    types = [UsageError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError]
    for module, name in (('fmdrive.msgs', 'MessageError'), ('fmdrive.bags.reader', 'BagError'),
                         ('fmdrive.calibration.camera_model', 'CalibrationError'),
                         ('fmdrive.sim.scenario', 'ScenarioError'), ('fmdrive.eval.metrics', 'EvalError'),
                         ('fmdrive.graph', 'GraphError'), ('fmdrive.sim.planning_dataset', 'DatasetError')):
        try:
            types.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


if __name__ == '__main__':
    # `python -m fmdrive.cli`: run the imported module's main, not this __main__ copy's, so that an error
    # class raised from elsewhere (`from fmdrive.cli import UsageError`) is the one caught here
    from fmdrive.cli import main as _main
    sys.exit(_main())
