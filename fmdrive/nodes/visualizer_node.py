"""visualizer node: what RViz shows. MarkerArray of tracked objects and the plan, and an overlay image
(camera + projected LiDAR + 3D boxes + planned trajectory). Drawing lives in fmdrive/visualization.py."""
from __future__ import annotations

import time

import numpy as np
from fmdrive_msgs.msg import ObjectArray
from fmdrive_msgs.msg import Plan as PlanMsg
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from fmdrive import config
from fmdrive.calibration.camera_model import CameraInfoCache
from fmdrive.fusion.odometry import OdometryBuffer
from fmdrive.graph import GRAPH
from fmdrive.geometry import inv_T, transform_points
from fmdrive.msgs import (MessageError, camera_info_to_fields, image_to_rgb, markers_to_msg, msg_to_objects, msg_to_plan,
                          odometry_to_ego, pointcloud2_to_xyzi, rgb_to_image, stamp_to_ns)
from fmdrive.nodes.base import FmdriveNode, make_qos, run_node
from fmdrive.tf import TransformError
from fmdrive.visualization import draw_overlay, markers_data

MATCH_NS = 300_000_000  # objects/points/plan within this of the image stamp are drawn on it
WATCH_PERIOD_S = 0.5    # how often the overlay's subscribers are counted
UNWATCHED_PAUSE_S = 2.0  # the overlay unwatched this long (from the start too) before its inputs are given up:
                         # counted right after start, before discovery, it reads 0, and unsubscribing within
                         # milliseconds of subscribing, then subscribing again when the watcher shows up, is
                         # churn the DDS graph of a just-restarted process can do without; a watcher that
                         # comes back is served at once


class VisualizerNode(FmdriveNode):
    def __init__(self):
        super().__init__('visualizer')
        self.use_tf()
        self.camera = self.load_camera_model()
        self.camera_info = CameraInfoCache()
        self.odometry = OdometryBuffer()
        self.points_msg = None
        self.objects = (0, [])
        self.camera_objects = (0, [])
        self.plan = None
        self.last_overlay = 0.0
        self.pub_markers = self.advertise('markers', MarkerArray, make_qos('reliable', 5))
        self.pub_overlay = self.advertise('overlay', Image, make_qos('reliable', 2))
        self.subscribe('camera_info', CameraInfo, self.on_camera_info, 'any', aged=None, gaps=False)
        self.subscribe('odometry', Odometry, self.on_odometry, 'sensor')
        # only the newest cloud is kept (decoded when an overlay is drawn): a DDS depth of 2 lets
        # an overloaded node skip clouds in DDS instead of taking each (at 5x replay, 50 a second)
        self.subscribe('points', PointCloud2, self.on_points, 'sensor', locked=False, depth=2)
        self.subscribe('objects', ObjectArray, self.on_objects)
        self.subscribe('plan', PlanMsg, self.on_plan, gaps=False)
        self.subscribe('image', Image, self.on_image, 'sensor', queued=True)
        # the camera encoder's 2D boxes (at its own max_rate_hz, so not every image has them)
        self.subscribe('camera_objects', ObjectArray, self.on_camera_objects, gaps=False)
        # what only the overlay needs is taken only while someone watches it (RViz, a recorder)
        self.lazy = next(n.lazy_inputs for n in GRAPH if n.name == 'visualizer')
        self.watched = None      # None: no watcher seen yet; every input taken until unwatched for a while
        self.unwatched_since = time.monotonic()     # (nobody seen yet)
        self.diag_values['overlay'] = 'not drawn yet (looking for watchers)'
        self.create_timer(WATCH_PERIOD_S, self.check_watched)
        self.check_watched()

    def check_watched(self, now: float | None = None):
        now = time.monotonic() if now is None else now
        if self.pub_overlay.get_subscription_count() > 0:
            self.unwatched_since = None
            if self.watched is not True:
                self.watched = True
                for key in self.lazy:
                    self.resume_input(key, 'the overlay is watched')
                self.diag_values['overlay'] = 'drawn (watched)'
            return
        if self.unwatched_since is None:
            self.unwatched_since = now
        if self.watched is not False and now - self.unwatched_since >= UNWATCHED_PAUSE_S:
            self.watched = False
            for key in self.lazy:
                self.pause_input(key, f'nobody has watched the overlay for {UNWATCHED_PAUSE_S:g} s')
            self.diag_values['overlay'] = 'not drawn (nobody watches it)'

    def tf_wanted(self) -> bool:
        return self.watched is not False

    def on_camera_info(self, msg):
        self.camera = self.camera_info.update(camera_info_to_fields(msg))

    def on_odometry(self, msg):
        self.odometry.add(*odometry_to_ego(msg))

    def on_points(self, msg):
        self.points_msg = msg  # decoded only when an overlay is drawn

    def on_objects(self, msg):
        objects = msg_to_objects(msg)
        if not all(np.isfinite(o.center).all() and np.isfinite(o.size).all() and np.isfinite(o.yaw_rad)
                   for o in objects):
            raise MessageError('objects with NaN/inf centre, size or yaw: not drawn')
        self.objects = (stamp_to_ns(msg.header.stamp), objects)
        self.publish_markers()

    def on_camera_objects(self, msg):
        objects = msg_to_objects(msg)
        if not all(o.box2d is not None and np.isfinite(o.box2d).all() for o in objects):
            raise MessageError('camera objects without a finite 2D box: not drawn')
        self.camera_objects = (stamp_to_ns(msg.header.stamp), objects)

    def on_plan(self, msg):
        plan = msg_to_plan(msg)
        if not np.isfinite(plan.poses).all():
            raise MessageError('plan with NaN/inf poses: not drawn')
        self.plan = plan
        self.publish_markers()

    def publish_markers(self):
        poses = self.plan.poses if self.plan is not None else None
        data = markers_data(self.objects[1], poses, base_frame=self.p['base_frame'],
                            odom_frame=config.FRAMES['odom'])
        self.pub_markers.publish(markers_to_msg(data, self.objects[0]))

    def camera_pose(self, frame: str, stamp_ns: int):
        """T_base_optical of the camera that took the image (its frame id through TF; the fallback
        calibration's camera when nothing publishes that frame)."""
        base = self.p['base_frame']
        try:
            T = self.tf.optical_T(base, frame or config.FRAMES['camera'], stamp_ns)
            self.diag_values['calibration_source/camera'] = self._tf_used(base, frame or config.FRAMES['camera'])
            return T
        except TransformError as e:
            self._tf_needs.add((base, frame or config.FRAMES['camera']))  # keep taking /tf for it
            self.warn(f'{e}; drawing with the fallback calibration\'s {config.FRAMES["camera"]!r}',
                      key='camera_frame', period_s=30.0)
            return self.tf.optical_T(base, config.FRAMES['camera'], stamp_ns)

    def on_image(self, msg):
        now = time.monotonic()
        if now - self.last_overlay < 1.0 / float(self.p['overlay_max_rate_hz']):
            return
        t0 = time.perf_counter()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        rgb = image_to_rgb(msg)             # a view: checks the image (a bad one is reported) cheaply
        if self.pub_overlay.get_subscription_count() == 0:
            return      # drawn only for someone (RViz, a recorder): a car without a screen saves the CPU
        camera = self.camera
        if (camera.width, camera.height) != (rgb.shape[1], rgb.shape[0]):
            camera = camera.scaled(rgb.shape[1], rgb.shape[0])
        base = self.p['base_frame']
        T_camera_base = inv_T(self.camera_pose(msg.header.frame_id, stamp_ns))
        points = None
        cloud = self.points_msg
        if self.p['draw_points'] and cloud is not None \
                and abs(stamp_to_ns(cloud.header.stamp) - stamp_ns) <= MATCH_NS:
            T_base_cloud = self.lookup(base, cloud.header.frame_id or config.FRAMES['lidar'], stamp_ns)
            points = transform_points(T_base_cloud, pointcloud2_to_xyzi(cloud)[::2])
        objects = self.objects[1] if abs(self.objects[0] - stamp_ns) <= MATCH_NS else []
        trajectory = None
        ego = self.odometry.at(stamp_ns)
        if self.plan is not None and ego is not None and abs(self.plan.stamp_ns - stamp_ns) <= MATCH_NS:
            xy = np.c_[self.plan.poses[:, :2], np.zeros(len(self.plan.poses))]
            trajectory = transform_points(inv_T(ego.T_odom_base()), xy)
        # the newest camera boxes within MATCH_NS: those of this very image arrive after it (the
        # encoder runs on it meanwhile, at most max_rate_hz), as the 3D objects do
        boxes2d = self.camera_objects[1] if abs(self.camera_objects[0] - stamp_ns) <= MATCH_NS else []
        overlay = draw_overlay(rgb, camera, T_camera_base, points, objects, trajectory, boxes2d=boxes2d)
        self.pub_overlay.publish(rgb_to_image(overlay, stamp_ns, msg.header.frame_id or config.FRAMES['camera']))
        self.last_overlay = now
        self.record((time.perf_counter() - t0) * 1e3, stamp_ns)


def main(args=None):
    run_node(VisualizerNode, args)


if __name__ == '__main__':
    main()
