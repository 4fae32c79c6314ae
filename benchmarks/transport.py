"""`fmdrive bench transport`: large sensor messages between two processes, with and without the
Fast DDS large-message profile (config/fastdds_large_messages.xml).

A publisher process sends 1280x720 rgb8 Images at 30 Hz and 120k-point PointCloud2s at 10 Hz
(both streams at once, like the sensors), a subscriber process receives them; reliable QoS
(fmdrive.config.QOS['reliable']). Latency = receive wall time - header.stamp (stamped right
before publish). Each profile runs on its own random ROS_DOMAIN_ID with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; "default profile" = FASTDDS_DEFAULT_PROFILES_FILE unset.

    python -m benchmarks.transport [--quick] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np

IMAGE_TOPIC, CLOUD_TOPIC = 'bench_transport/image', 'bench_transport/points'
IMAGE_HZ, CLOUD_HZ = 30.0, 10.0
IMAGE_HW = (720, 1280)
CLOUD_POINTS = 120_000


def _qos():
    from fmdrive.bags.replay import qos_profile
    from fmdrive.config import QOS
    return qos_profile(QOS['reliable'])


def _schedule(n_images: int, n_clouds: int) -> list[tuple[float, str]]:
    """(time_s from start, kind) of every message, both streams merged in time order."""
    events = [(i / IMAGE_HZ, 'image') for i in range(n_images)]
    events += [(i / CLOUD_HZ + 0.5 / IMAGE_HZ, 'cloud') for i in range(n_clouds)]
    return sorted(events)


def run_publisher(n_images: int, n_clouds: int) -> None:
    import rclpy
    from rclpy.duration import Duration
    from sensor_msgs.msg import Image, PointCloud2

    from fmdrive.msgs import ns_to_stamp, rgb_to_image, xyzi_to_pointcloud2
    rng = np.random.default_rng(0)
    messages = {
        'image': rgb_to_image(rng.integers(0, 256, IMAGE_HW + (3,), dtype=np.uint8), 0, 'camera'),
        'cloud': xyzi_to_pointcloud2(rng.normal(size=(CLOUD_POINTS, 4)).astype(np.float32), 0,
                                     'lidar')}
    rclpy.init()
    node = rclpy.create_node('bench_transport_pub')
    pubs = {'image': node.create_publisher(Image, IMAGE_TOPIC, _qos()),
            'cloud': node.create_publisher(PointCloud2, CLOUD_TOPIC, _qos())}
    deadline = time.monotonic() + 30
    while any(p.get_subscription_count() == 0 for p in pubs.values()):
        if time.monotonic() > deadline:
            sys.exit('publisher: no subscriber matched within 30 s')
        time.sleep(0.05)
    time.sleep(0.5)  # let the reader side finish matching
    sent = {'image': 0, 'cloud': 0}
    t0 = time.monotonic()
    for t_s, kind in _schedule(n_images, n_clouds):
        delay = t0 + t_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg = messages[kind]
        msg.header.stamp = ns_to_stamp(time.time_ns())
        pubs[kind].publish(msg)
        sent[kind] += 1
    for pub in pubs.values():
        pub.wait_for_all_acked(Duration(seconds=10))
    print(json.dumps({'sent': sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_subscriber(n_images: int, n_clouds: int, timeout_s: float) -> None:
    import rclpy
    from sensor_msgs.msg import Image, PointCloud2

    from fmdrive.msgs import stamp_to_ns
    latency_ms = {'image': [], 'cloud': []}

    def callback(kind):
        def on_message(msg):
            latency_ms[kind].append((time.time_ns() - stamp_to_ns(msg.header.stamp)) / 1e6)
        return on_message

    rclpy.init()
    node = rclpy.create_node('bench_transport_sub')
    node.create_subscription(Image, IMAGE_TOPIC, callback('image'), _qos())
    node.create_subscription(PointCloud2, CLOUD_TOPIC, callback('cloud'), _qos())
    print('READY', flush=True)
    deadline = time.monotonic() + max(n_images / IMAGE_HZ, n_clouds / CLOUD_HZ) + timeout_s
    while (len(latency_ms['image']) < n_images or len(latency_ms['cloud']) < n_clouds) \
            and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps({'latency_ms': latency_ms}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def _run_pair(n_images: int, n_clouds: int, profile: bool, timeout_s: float = 30.0) -> dict:
    """One publisher + one subscriber process; {'image': (sent, latencies), 'cloud': ...}."""
    from fmdrive.config import FASTDDS_PROFILE
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(10, 101)),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    if profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(FASTDDS_PROFILE)
    else:
        env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    cmd = [sys.executable, '-m', 'benchmarks.transport', '--images', str(n_images),
           '--clouds', str(n_clouds), '--timeout', str(timeout_s)]
    cwd = str(_repo_root())
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [cwd, env.get('PYTHONPATH')]))
    sub = subprocess.Popen(cmd + ['--role', 'sub'], env=env, cwd=cwd, stdout=subprocess.PIPE,
                           text=True)
    pub = None
    try:
        if sub.stdout.readline().strip() != 'READY':
            raise RuntimeError('bench transport: the subscriber process failed to start')
        pub = subprocess.Popen(cmd + ['--role', 'pub'], env=env, cwd=cwd,
                               stdout=subprocess.PIPE, text=True)
        sub_out, _ = sub.communicate(timeout=n_images / IMAGE_HZ + timeout_s + 60)
        pub_out, _ = pub.communicate(timeout=60)
    finally:
        for proc in (sub, pub):  # only the processes this function started
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    sent = _last_json(pub_out).get('sent', {'image': n_images, 'cloud': n_clouds})
    latency = _last_json(sub_out).get('latency_ms', {'image': [], 'cloud': []})
    return {kind: (sent[kind], latency[kind]) for kind in ('image', 'cloud')}


def _last_json(text: str) -> dict:
    lines = [ln for ln in (text or '').splitlines() if ln.startswith('{')]
    return json.loads(lines[-1]) if lines else {}


def _repo_root():
    from fmdrive.config import PACKAGE_ROOT
    return PACKAGE_ROOT


def _figures(result: dict, suffix: str) -> dict:
    out = {}
    for kind, (sent, latencies) in result.items():
        lat = np.asarray(latencies, float)
        loss_pct = 100.0 * (1 - min(len(lat), sent) / sent) if sent else 0.0
        out[f'{kind}_loss_pct{suffix}'] = round(loss_pct, 2)
        out[f'{kind}_latency_ms{suffix}'] = round(float(lat.mean()), 2) if lat.size else None
        out[f'{kind}_latency_p50_ms{suffix}'] = \
            round(float(np.percentile(lat, 50)), 2) if lat.size else None
        out[f'{kind}_latency_p99_ms{suffix}'] = \
            round(float(np.percentile(lat, 99)), 2) if lat.size else None
    return out


def measure(quick: bool = False) -> dict:
    """Transport figures with the large-message profile and with Fast DDS defaults (DESIGN §8).

    image_/cloud_ loss_pct, latency_ms (mean), latency_p50_ms, latency_p99_ms, each also with
    suffix _default_profile. quick: 60 images + 30 clouds per profile (< 1 min in all).
    """
    n_images, n_clouds = (60, 30) if quick else (300, 100)
    t0 = time.monotonic()
    figures = {'images': n_images, 'clouds': n_clouds, 'image_mb': round(
        IMAGE_HW[0] * IMAGE_HW[1] * 3 / 1e6, 2), 'cloud_points': CLOUD_POINTS}
    figures.update(_figures(_run_pair(n_images, n_clouds, profile=True), ''))
    figures.update(_figures(_run_pair(n_images, n_clouds, profile=False), '_default_profile'))
    figures['wall_s'] = round(time.monotonic() - t0, 1)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--role', choices=['pub', 'sub'], help=argparse.SUPPRESS)
    parser.add_argument('--images', type=int, default=60, help=argparse.SUPPRESS)
    parser.add_argument('--clouds', type=int, default=30, help=argparse.SUPPRESS)
    parser.add_argument('--timeout', type=float, default=30.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == 'pub':
        run_publisher(args.images, args.clouds)
        return 0
    if args.role == 'sub':
        run_subscriber(args.images, args.clouds, args.timeout)
        return 0
    from fmdrive.cli import main as fmdrive_main   # prints like every other `fmdrive bench`
    return fmdrive_main(['bench', 'transport'] + ['--quick'] * args.quick + ['--json'] * args.json)


if __name__ == '__main__':
    sys.exit(main())
