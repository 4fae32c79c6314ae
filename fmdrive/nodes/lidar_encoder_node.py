"""lidar_encoder node: PointCloud2 -> 3D objects (+ lane markings) in base_link.

For now the classical open3d path (fmdrive/perception/lidar_classical.py); the learned PointPillars
encoder plugs in here through fmdrive/inference with the `backend` parameter.
"""
from __future__ import annotations

import time

from fmdrive_msgs.msg import LaneArray, ObjectArray
from sensor_msgs.msg import PointCloud2

from fmdrive import config
from fmdrive.geometry import transform_points
from fmdrive.msgs import lanes_to_msg, objects_to_msg, pointcloud2_to_xyzi, stamp_to_ns
from fmdrive.nodes.base import FmdriveNode, make_qos, run_node
from fmdrive.perception.lidar_classical import ClassicalLidarDetector, ClassicalLidarParams
import numpy as np


class LidarEncoderNode(FmdriveNode):
    def __init__(self):
        super().__init__('lidar_encoder')
        if self.p['backend'] != 'classical':
            raise SystemExit(f"lidar_encoder: backend {self.p['backend']!r} is not available yet; use 'classical'")
        self.T_base_lidar = self.load_extrinsics()[config.FRAMES['lidar']]
        self.detector = ClassicalLidarDetector(ClassicalLidarParams.from_dict(self.p), self.T_base_lidar)
        self.pub_objects = self.create_publisher(ObjectArray, config.TOPICS['lidar_objects'], make_qos('reliable'))
        self.pub_lanes = self.create_publisher(LaneArray, config.TOPICS['lanes'], make_qos('reliable'))
        self.subscribe('points', PointCloud2, self.on_points, self.sensor_qos(), queued=True)

    def on_points(self, msg: PointCloud2):
        t0 = time.perf_counter()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        points = pointcloud2_to_xyzi(msg)
        frame = msg.header.frame_id
        if frame == config.FRAMES['base']:
            # already in base_link: express in the lidar frame the detector expects
            points = transform_points(np.linalg.inv(self.T_base_lidar), points)
        elif frame != config.FRAMES['lidar']:
            self.warn(f'cloud in unknown frame {frame!r}; treating it as {config.FRAMES["lidar"]!r}',
                      key='frame')
        result = self.detector.detect(points)
        for w in result.warnings:
            self.warn(w, key=w[:40])
        base = config.FRAMES['base']
        self.pub_lanes.publish(lanes_to_msg(result.lanes, stamp_ns, base, 'lidar_markings'))
        self.pub_objects.publish(objects_to_msg(result.objects, stamp_ns, base, 'lidar_classical'))
        self.record((time.perf_counter() - t0) * 1e3, stamp_ns)


def main(args=None):
    run_node(LidarEncoderNode, args)


if __name__ == '__main__':
    main()
