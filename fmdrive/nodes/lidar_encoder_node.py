"""lidar_encoder node: PointCloud2 -> 3D objects (+ lane markings) in the base frame.

The cloud's own frame id is looked up in the node's TF buffer (/tf_static, /tf; the calibration YAML
as fallback), so a user's `velodyne` or `lidar_top` mounted any way works. For now the classical
open3d path (fmdrive/perception/lidar_classical.py); the learned PointPillars encoder plugs in here
through fmdrive/inference with the `backend` parameter.
"""
from __future__ import annotations

import time

import numpy as np
from fmdrive_msgs.msg import LaneArray, ObjectArray
from sensor_msgs.msg import PointCloud2

from fmdrive import config
from fmdrive.msgs import lanes_to_msg, objects_to_msg, pointcloud2_to_xyzi, stamp_to_ns
from fmdrive.nodes.base import FmdriveNode, run_node
from fmdrive.perception.lidar_classical import ClassicalLidarDetector, ClassicalLidarParams
from fmdrive.tf import TransformError


class LidarEncoderNode(FmdriveNode):
    def __init__(self):
        super().__init__('lidar_encoder')
        self.use_tf()
        self.detector = self.make_detector(self.p)
        self.pub_objects = self.advertise('lidar_objects', ObjectArray)
        self.pub_lanes = self.advertise('lanes', LaneArray)
        self.subscribe('points', PointCloud2, self.on_points, 'sensor', queued=True, aged='always')

    def make_detector(self, params: dict) -> ClassicalLidarDetector:
        # the mounting given here is only a default: each sweep passes its own from TF
        base, lidar = params['base_frame'], config.FRAMES['lidar']
        T = self.tf.lookup(base, lidar) if self.tf.can_transform(base, lidar) else np.eye(4)
        return ClassicalLidarDetector(ClassicalLidarParams.from_dict(params), T)

    def reconfigure(self, params: dict, changed: dict) -> None:
        self.detector = self.make_detector(params)

    def T_base_cloud(self, frame: str, stamp_ns: int):
        base = self.p['base_frame']
        try:
            return self.lookup(base, frame or config.FRAMES['lidar'], stamp_ns)
        except TransformError as e:
            self.warn(f'{e}; using the fallback calibration\'s {config.FRAMES["lidar"]!r} frame for the cloud',
                      key='cloud_frame', period_s=30.0)
            return self.lookup(base, config.FRAMES['lidar'], stamp_ns)

    def on_points(self, msg: PointCloud2):
        t0 = time.perf_counter()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        points = pointcloud2_to_xyzi(msg)
        T_base_cloud = self.T_base_cloud(msg.header.frame_id, stamp_ns)
        result = self.detector.detect(points, T_base_cloud)
        for w in result.warnings:
            self.warn(w, key=w[:40])
        base = self.p['base_frame']
        self.pub_lanes.publish(lanes_to_msg(result.lanes, stamp_ns, base, 'lidar_markings'))
        self.pub_objects.publish(objects_to_msg(result.objects, stamp_ns, base, 'lidar_classical'))
        self.record((time.perf_counter() - t0) * 1e3, stamp_ns)


def main(args=None):
    run_node(LidarEncoderNode, args)


if __name__ == '__main__':
    main()
