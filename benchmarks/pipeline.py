"""bench pipeline: a 20 s scenario (32-beam LiDAR @ 10 Hz, 640x360 camera @ 10 Hz) replayed at 1x
through the graph, one process per node over real DDS. End-to-end = LiDAR stamp -> trajectory
received (stamps restamped to wall time at replay, as a live sensor would stamp them)."""
import tempfile
from pathlib import Path


def measure(quick: bool = False) -> dict:
    from fmdrive import config
    from fmdrive.bags.sim_writer import write_scenario
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.pipeline_run import replay_through_graph
    from fmdrive.sim import generate_scenario

    camera = CameraModel.from_yaml(config.CAMERA_INFO_FILE)
    extrinsics = load_extrinsics(config.EXTRINSICS_FILE)
    spec = generate_scenario('cut_in', seed=1, duration_s=20.0)
    spec.lidar.beams = 32
    with tempfile.TemporaryDirectory() as tmp:
        write_scenario(spec, tmp, camera, extrinsics, progress=False)
        summary = replay_through_graph(Path(tmp) / 'bag', tmp, rate=1.0, progress=False)
    return {
        'e2e_p50_ms': summary['e2e_p50_ms'], 'e2e_p99_ms': summary['e2e_p99_ms'],
        'e2e_max_ms': summary['e2e_max_ms'],
        'sensor_frames': summary['sensor_frames'], 'dropped_sensor_frames': summary['dropped_sensor_frames'],
        'hops': summary['hops'], 'dropped_inputs_by_node': summary['dropped_inputs_by_node'],
        'scenario': f'{spec.kind} seed {spec.seed}, {spec.duration_s:.0f} s, {camera.width}x{camera.height} camera, '
                    f'{spec.lidar.beams}-beam LiDAR, rate 1x',
    }
