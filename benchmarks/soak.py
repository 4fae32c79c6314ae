"""bench soak [--minutes M]: the graph runs on a simulated cut-in bag replayed in a loop at 1x for M
minutes (default 5; --quick: 1), one process per node over real DDS. Leaks and latency
build-up show as:

    rss_growth_pct                 worst node: RSS at the end vs RSS after the first window (warm-up
                                   allocations, imports and caches, excluded), in percent
    e2e_p99_ms_first_minute        LiDAR stamp -> trajectory p99 over the first window
    e2e_p99_ms_last_minute         ... over the last window

The window is one minute, or a third of the run when it is shorter (--quick); `window_s` says
which. RSS is sampled every 2 s from each node process (psutil)."""
import tempfile
import threading
import time
from pathlib import Path

RSS_PERIOD_S = 2.0


class RssSampler:
    """RSS of every node process of a running graph, sampled on a thread: {node: [(t_s, bytes)]}."""

    def __init__(self):
        self.samples: dict[str, list] = {}
        self._stop = threading.Event()
        self._thread = None

    def start(self, graph) -> None:
        import psutil
        procs = {name: psutil.Process(p.pid) for name, p in graph.procs.items()}
        t0 = time.monotonic()

        def run():
            while not self._stop.is_set():
                for name, proc in procs.items():
                    try:
                        self.samples.setdefault(name, []).append(
                            (time.monotonic() - t0, proc.memory_info().rss))
                    except psutil.Error:
                        pass
                self._stop.wait(RSS_PERIOD_S)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def growth_pct(self, warmup_s: float, end_s: float) -> dict:
        """Per node, RSS change from warmup_s to end_s (samples outside, e.g. while the graph is
        stopped after the run, are left out)."""
        out = {}
        for name, samples in self.samples.items():
            after = [rss for t, rss in samples if warmup_s <= t <= end_s and rss > 0]
            if len(after) >= 2:
                out[name] = round(100.0 * (after[-1] - after[0]) / after[0], 2)
        return out


def e2e_by_receive_time(output, stamp_map) -> list:
    """[(receive time s from the first, latency ms)] of every trajectory of a replayed frame."""
    from fmdrive import config
    from fmdrive.bags.reader import BagReader
    from fmdrive.msgs import stamp_to_ns
    replayed = {int(published) for _, published in stamp_map}
    seen, out = set(), []
    with BagReader(output) as reader:
        for _, recv_ns, msg in reader.messages([config.TOPICS['trajectory']]):
            stamp = stamp_to_ns(msg.header.stamp)
            if stamp in replayed and stamp not in seen:
                seen.add(stamp)
                out.append((recv_ns, (recv_ns - stamp) / 1e6))
    if not out:
        return []
    t0 = out[0][0]
    return [((recv - t0) / 1e9, lat) for recv, lat in out]


def measure(quick: bool = False, minutes: float | None = None) -> dict:
    import json

    import numpy as np

    from fmdrive import config
    from fmdrive.bags.sim_writer import write_scenario
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.pipeline_run import HOP_TOPICS, replay_through_graph
    from fmdrive.sim import generate_scenario

    minutes = minutes or (1.0 if quick else 5.0)
    run_s = minutes * 60.0
    window_s = min(60.0, run_s / 3.0)
    camera = CameraModel.from_yaml(config.CAMERA_INFO_FILE)
    spec = generate_scenario('cut_in', seed=1, duration_s=6.0 if quick else 20.0)
    spec.lidar.beams = 32
    rss = RssSampler()
    with tempfile.TemporaryDirectory() as tmp:
        write_scenario(spec, tmp, camera, load_extrinsics(config.EXTRINSICS_FILE), progress=False)
        topics = (*HOP_TOPICS, config.TOPICS['lanes'], config.TOPICS['diagnostics'])
        try:
            summary = replay_through_graph(Path(tmp) / 'bag', Path(tmp) / 'soak', progress=False,
                                           loop_s=run_s, on_replay_started=rss.start,
                                           record_topics=topics)
        finally:
            rss.stop()
        stats = json.loads((Path(tmp) / 'soak' / 'replay.json').read_text())
        samples = e2e_by_receive_time(Path(tmp) / 'soak' / 'output', stats.get('stamp_map_ns', []))
    growth = rss.growth_pct(warmup_s=window_s, end_s=run_s)
    end = samples[-1][0] if samples else 0.0

    def p99(lo, hi):
        lat = [ms for t, ms in samples if lo <= t < hi]
        return round(float(np.percentile(lat, 99)), 2) if lat else None
    return {
        'rss_growth_pct': max(growth.values()) if growth else None,
        'e2e_p99_ms_first_minute': p99(0.0, window_s),
        'e2e_p99_ms_last_minute': p99(end - window_s, end + 1e-9),
        'rss_growth_pct_by_node': growth,
        'rss_mb_by_node_end': {name: round(max(r for t, r in s if t <= run_s) / 2**20, 1)
                               for name, s in rss.samples.items() if any(t <= run_s for t, _ in s)},
        'window_s': round(window_s, 1), 'minutes': minutes, 'loops': stats.get('loops'),
        'sensor_frames': summary['sensor_frames'], 'dropped_sensor_frames': summary['dropped_sensor_frames'],
        'queue_dropped_inputs': summary['queue_dropped_inputs'], 'dds_lost_inputs': summary['dds_lost_inputs'],
        'e2e_p50_ms': summary['e2e_p50_ms'], 'e2e_p99_ms': summary['e2e_p99_ms'],
        'scenario': f'{spec.kind} seed {spec.seed}, {spec.duration_s:.0f} s bag looped for {minutes:g} min at 1x, '
                    f'{spec.lidar.beams}-beam LiDAR',
    }
