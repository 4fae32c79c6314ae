"""lidar_encoder node: PointCloud2 -> 3D objects (+ lane markings) in the base frame.

The cloud's own frame id is looked up in the node's TF buffer (/tf_static, /tf; the calibration YAML
as fallback), so a user's `velodyne` or `lidar_top` mounted any way works. `backend` chooses the
classical path (fmdrive/perception/lidar_classical.py) or a learned encoder from a model card
(fmdrive/perception/lidar_learned.py over fmdrive/inference); a card that cannot run here falls back
to the classical path, said once and on /diagnostics.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from fmdrive_msgs.msg import LaneArray, ObjectArray
from sensor_msgs.msg import PointCloud2

from fmdrive import config, warmup
from fmdrive.msgs import lanes_to_msg, objects_to_msg, pointcloud2_to_xyzi, stamp_to_ns
from fmdrive.nodes.base import FmdriveNode, run_node
from fmdrive.perception.lidar_classical import ClassicalLidarDetector, ClassicalLidarParams
from fmdrive.tf import TransformError


class LidarEncoderNode(FmdriveNode):
    def __init__(self):
        super().__init__('lidar_encoder')
        self.use_tf()
        self.detector = self.make_detector(self.p)
        self.learned = self.load_learned() if self.p['backend'] != 'classical' else None
        self.pub_objects = self.advertise('lidar_objects', ObjectArray)
        self.pub_lanes = self.advertise('lanes', LaneArray)
        self.subscribe('points', PointCloud2, self.on_points, 'sensor', queued=True, aged='always',
                       max_rate_param='max_rate_hz')

    def warm_up(self) -> None:
        T = self.detector.T_base_lidar          # the mount make_detector looked up
        (self.learned or self.detector).detect(warmup.sweep(T), T)

    def make_detector(self, params: dict) -> ClassicalLidarDetector:
        # the mounting given here is only a default: each sweep passes its own from TF
        base, lidar = params['base_frame'], config.FRAMES['lidar']
        T = self.tf.lookup(base, lidar) if self.tf.can_transform(base, lidar) else np.eye(4)
        return ClassicalLidarDetector(ClassicalLidarParams.from_dict(params), T)

    def load_learned(self):
        """The learned encoder of the card `model`, or None (and the classical path, said on
        /diagnostics) when it cannot run here: a bad card, a missing runtime, a stale plan."""
        from fmdrive.inference.detectors import load_detector
        from fmdrive.perception.lidar_learned import LearnedLidarDetector
        path = Path(self.p['model'])
        path = path if path.is_absolute() else config.package_file(str(path))
        try:
            det = load_detector(path, self.p['precision'], self.p['backend'], threads=int(self.p['inference_threads']))
        except Exception as e:  # noqa: BLE001 - CardError, BackendError or a runtime's own: all mean "not here"
            reason = ' '.join(str(e).split()) or type(e).__name__
            self.warn(f'learned LiDAR encoder unavailable ({reason}); running the classical path', key='learned',
                      period_s=1e9)
            self.set_mode(f'degraded: learned encoder unavailable, classical fallback ({reason[:120]})')
            self.diag_values['backend'] = 'classical (fallback)'
            return None
        self.diag_values['backend'] = f'learned: {det.describe()}'[:300]
        if self.p['unknown_obstacles']:
            self.diag_values['backend'] += ' + classical clusters as unknown obstacles'
        return LearnedLidarDetector(det, bool(self.p['detect_lanes']), float(self.p['lane_width_m']),
                                    refine_small=bool(self.p['refine_small_objects']),
                                    classical=self.detector if self.p['unknown_obstacles'] else None)

    def reconfigure(self, params: dict, changed: dict) -> None:
        self.detector = self.make_detector(params)
        if self.learned is not None and self.learned.classical is not None:
            self.learned.classical = self.detector       # its clusters follow the new parameters too

    def T_base_cloud(self, frame: str, stamp_ns: int):
        base = self.p['base_frame']
        try:
            return self.lookup_waiting(base, frame or config.FRAMES['lidar'], stamp_ns)
        except TransformError as e:
            self.warn(f'{e}; using the fallback calibration\'s {config.FRAMES["lidar"]!r} frame for the cloud',
                      key='cloud_frame', period_s=30.0)
            return self.lookup(base, config.FRAMES['lidar'], stamp_ns)

    def on_points(self, msg: PointCloud2):
        t0 = time.perf_counter()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        points = pointcloud2_to_xyzi(msg)
        T_base_cloud = self.T_base_cloud(msg.header.frame_id, stamp_ns)
        result = (self.learned or self.detector).detect(points, T_base_cloud)
        for w in result.warnings:
            self.warn(w, key=w[:40])
        base = self.p['base_frame']
        self.pub_lanes.publish(lanes_to_msg(result.lanes, stamp_ns, base, 'lidar_markings'))
        source = 'lidar_learned' if self.learned is not None else 'lidar_classical'
        self.pub_objects.publish(objects_to_msg(result.objects, stamp_ns, base, source))
        self.record((time.perf_counter() - t0) * 1e3, stamp_ns)


def main(args=None):
    run_node(LidarEncoderNode, args)


if __name__ == '__main__':
    main()
