"""bench sim: simulated seconds per wall second for camera + LiDAR, bag writing included
(what `fmdrive sim` does), at the shipped camera (640x360) and a 32-beam LiDAR at 10 Hz."""
import tempfile
import time


def measure(quick: bool = False) -> dict:
    from fmdrive import config
    from fmdrive.bags.sim_writer import write_scenario
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.sim import generate_scenario

    camera = CameraModel.from_yaml(config.CAMERA_INFO_FILE)
    extrinsics = load_extrinsics(config.EXTRINSICS_FILE)
    duration_s = 10.0 if quick else 20.0
    results = {}
    for kind in ('car_following', 'intersection'):
        spec = generate_scenario(kind, seed=0, duration_s=duration_s)
        spec.lidar.beams = 32
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            r = write_scenario(spec, tmp, camera, extrinsics, progress=False)
            results[kind] = (r['sim_s'], time.perf_counter() - t0)
    sim_s = sum(s for s, _ in results.values())
    wall_s = sum(w for _, w in results.values())
    return {
        'realtime_factor': round(sim_s / wall_s, 3),
        'simulated_s': sim_s, 'wall_s': round(wall_s, 2),
        'per_scenario_realtime_factor': {k: round(s / w, 3) for k, (s, w) in results.items()},
        'camera': f'{camera.width}x{camera.height} @ 10 Hz', 'lidar': '32 beams, 0.2 deg, 360 deg @ 10 Hz',
    }
