"""bench pipeline [--beams N] [--rate R] [--lidar-backend onnxruntime]: a simulated cut-in (N-beam
LiDAR @ 10 Hz, 640x360 camera
@ 10 Hz; 20 s, 8 s with --quick) replayed through the graph, one process per node over real DDS.
End-to-end = LiDAR stamp -> trajectory received, every message stamped at its publish time (as a
live sensor would stamp it), so latency is true at any rate.

At a rate other than 1 the same bag is also replayed at 1x in the same run, and the figures of
both are printed side by side: at 5x the bounded queues must drop frames rather than build latency
(p99 at R no more than twice p99 at 1x: `p99_ratio_vs_1x`). The same percentile without the first
second of sensor time (every node's first frames: first calls, discovery settling, all processes
waking together) is printed beside it (`e2e_p99_ms_after_warmup`, `p99_ratio_vs_1x_after_warmup`):
at 5x that second is five times as many frames as at 1x, and alone it can set the whole p99. Faster than 1x the bag is looped for
the 1x run's wall time, so both percentiles rest on as many trajectories. Frames a node's rate gate
skips (lidar_encoder max_rate_hz) are `throttled_inputs`, and count as dropped sensor frames.

Everything the graph publishes is recorded except the overlay image: nobody watches it here (as on
a car without a screen), so the visualizer does not draw it; its markers are recorded. The camera
encoder runs (at most its max_rate_hz); --lidar-backend onnxruntime runs the learned LiDAR encoder
(engines/lidar_centerpoint) instead of the classical default, so both learned encoders are timed.
Hops include the camera encoder's (image stamp -> /perception/camera/objects)."""
import tempfile
from pathlib import Path


def _figures(summary: dict) -> dict:
    return {k: summary[k] for k in ('e2e_p50_ms', 'e2e_p99_ms', 'e2e_max_ms', 'e2e_p99_ms_after_warmup', 'sensor_frames',
                                    'dropped_sensor_frames', 'throttled_inputs', 'queue_dropped_inputs',
                                    'dds_lost_inputs')}


def measure(quick: bool = False, beams: int = 32, rate: float = 1.0,
            lidar_backend: str | None = None) -> dict:
    from fmdrive import config
    from fmdrive.bags.sim_writer import write_scenario
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.pipeline_run import replay_through_graph
    from fmdrive.sim import generate_scenario

    camera = CameraModel.from_yaml(config.CAMERA_INFO_FILE)
    extrinsics = load_extrinsics(config.EXTRINSICS_FILE)
    spec = generate_scenario('cut_in', seed=1, duration_s=8.0 if quick else 20.0)
    spec.lidar.beams = int(beams)
    record = tuple(t for t in config.OUTPUT_TOPICS if t != config.TOPICS['overlay'])
    with tempfile.TemporaryDirectory() as tmp:
        write_scenario(spec, tmp, camera, extrinsics, progress=False)
        bag = Path(tmp) / 'bag'
        # faster than 1x the bag is looped for as long (wall time) as the 1x run, so both
        # percentiles rest on as many trajectories
        overrides = {'lidar_encoder': {'backend': lidar_backend}} if lidar_backend else None
        summary = replay_through_graph(bag, Path(tmp) / 'at_rate', rate=rate, progress=False,
                                       record_topics=record, overrides=overrides,
                                       loop_s=spec.duration_s if rate > 1.0 else None)
        baseline = None
        if rate != 1.0:
            baseline = replay_through_graph(bag, Path(tmp) / 'at_1x', rate=1.0, progress=False,
                                            record_topics=record, overrides=overrides)
    out = {
        **_figures(summary),
        'hops': summary['hops'], 'dropped_inputs_by_node': summary['dropped_inputs_by_node'],
        'dds_lost_inputs_by_node': summary['dds_lost_inputs_by_node'],
        'rate': rate, 'beams': spec.lidar.beams,
        'lidar_backend': lidar_backend or 'graph default',
        'scenario': f'{spec.kind} seed {spec.seed}, {spec.duration_s:.0f} s, {camera.width}x{camera.height} '
                    f'camera, {spec.lidar.beams}-beam LiDAR, rate {rate:g}x, overlay not drawn (no subscriber)',
    }
    if baseline is not None:
        out['at_1x'] = _figures(baseline)
        if summary['e2e_p99_ms'] is not None and baseline['e2e_p99_ms']:
            out['p99_ratio_vs_1x'] = round(summary['e2e_p99_ms'] / baseline['e2e_p99_ms'], 2)
        if summary['e2e_p99_ms_after_warmup'] is not None and baseline['e2e_p99_ms_after_warmup']:
            out['p99_ratio_vs_1x_after_warmup'] = round(summary['e2e_p99_ms_after_warmup'] /
                                                        baseline['e2e_p99_ms_after_warmup'], 2)
    return out
