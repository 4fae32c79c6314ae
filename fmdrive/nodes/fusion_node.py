"""fusion node: LiDAR objects + odometry (+ lanes) -> tracked objects and the scene description.

Camera objects join here (association with the calibration, shared embedding space) with the learned
camera encoder; until then the node tracks LiDAR objects only and says so on /diagnostics. A bag or
vehicle without odometry is fine: the ego is taken as static, said once.
"""
from __future__ import annotations

import collections
import time

import numpy as np

from fmdrive_msgs.msg import LaneArray, ObjectArray, SceneDescription
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Float32

from fmdrive.calibration.camera_model import CameraInfoCache
from fmdrive.fusion.core import NO_ODOMETRY, FusionCore, FusionParams
from fmdrive.msgs import (MessageError, camera_info_to_fields, msg_to_lanes, msg_to_objects, objects_to_msg,
                          odometry_to_ego, scene_to_msg, stamp_to_ns)
from fmdrive.nodes.base import FmdriveNode, run_node

LANES_MAX_AGE_NS = 300_000_000  # lanes older than this (vs the LiDAR stamp) are not used
MAX_ROAD_LIMIT_MPS = 70.0       # the speed_limit parameters' own range


class FusionNode(FmdriveNode):
    def __init__(self):
        super().__init__('fusion')
        self.core = FusionCore(FusionParams.from_node_params(self.p))
        self.camera = self.load_camera_model()
        self.camera_info = CameraInfoCache()
        self.lanes = collections.deque(maxlen=10)  # (stamp_ns, [Lane])
        self.diag_values['modalities'] = 'lidar'   # camera joins with the learned camera encoder
        self.diag_values['ego_motion'] = 'waiting'
        self.pub_objects = self.advertise('objects', ObjectArray)
        self.pub_scene = self.advertise('scene', SceneDescription)
        self.subscribe('odometry', Odometry, self.on_odometry, 'sensor')
        self.subscribe('lanes', LaneArray, self.on_lanes)
        self.subscribe('camera_info', CameraInfo, self.on_camera_info, 'any', aged=None, gaps=False)
        self.subscribe('speed_limit', Float32, self.on_speed_limit, 'any', aged=None, gaps=False)
        self.diag_values['speed_limit'] = f'{self.p["speed_limit_mps"]:.1f} m/s (configured)'
        self.subscribe('lidar_objects', ObjectArray, self.on_lidar_objects, queued=True, aged='always')

    def reconfigure(self, params: dict, changed: dict) -> None:
        # the tracker keeps its tracks; its gates and the scene's limits follow the new values (a limit
        # from the map stays in force over the configured one)
        new = FusionParams.from_node_params(params)
        if self.diag_values['speed_limit'].endswith('(map)'):
            new.speed_limit_mps = self.core.params.speed_limit_mps
        self.core.params = new
        self.core.tracker.params = new.tracker_params()

    def on_odometry(self, msg: Odometry):
        stamp_ns, ego = odometry_to_ego(msg)
        if not np.isfinite([ego.x, ego.y, ego.yaw_rad, ego.speed_mps, ego.yaw_rate_rps]).all():
            raise MessageError('odometry with NaN/inf pose or twist')
        self.core.add_odometry(stamp_ns, ego)

    def on_speed_limit(self, msg: Float32):
        """The road's limit from the map (or the bag): every scene carries it from now on."""
        if not (np.isfinite(msg.data) and 0.0 < msg.data <= MAX_ROAD_LIMIT_MPS):
            raise MessageError(f'speed limit {msg.data!r} m/s is not a road limit (0, {MAX_ROAD_LIMIT_MPS}]')
        self.core.params.speed_limit_mps = float(msg.data)
        self.diag_values['speed_limit'] = f'{msg.data:.1f} m/s (map)'

    def on_lanes(self, msg: LaneArray):
        lanes = msg_to_lanes(msg)
        if not all(np.isfinite(ln.centerline).all() and np.isfinite(ln.width_m) for ln in lanes):
            raise MessageError('lanes with NaN/inf centre-line points or width')
        self.lanes.append((stamp_to_ns(msg.header.stamp), lanes))

    def on_camera_info(self, msg: CameraInfo):
        # validated now so a bad camera_info is reported at once; used by camera association later
        self.camera = self.camera_info.update(camera_info_to_fields(msg))

    def lanes_at(self, stamp_ns: int) -> list:
        best = min(self.lanes, key=lambda sl: abs(sl[0] - stamp_ns), default=None)
        return best[1] if best is not None and abs(best[0] - stamp_ns) <= LANES_MAX_AGE_NS else []

    def on_lidar_objects(self, msg: ObjectArray):
        t0 = time.perf_counter()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        result = self.core.update(msg_to_objects(msg), stamp_ns, self.lanes_at(stamp_ns), msg.header.frame_id)
        problems = []
        for w in result.warnings:
            if w.startswith(NO_ODOMETRY):   # a bag without odometry: said once, not a fault per frame
                self.warn(w, key=NO_ODOMETRY, period_s=60.0)
            else:
                self.warn(w, key=w[:40])
                problems.append(w)
        self.diag_values['ego_motion'] = 'odometry' if result.ego_from_odometry else 'static (no odometry)'
        self.set_mode('ok' if not problems else 'degraded: ' + problems[0])
        base = self.p['base_frame']
        self.pub_objects.publish(objects_to_msg(result.objects_base, stamp_ns, base, 'fusion'))
        if result.scene is not None:
            self.pub_scene.publish(scene_to_msg(result.scene, base))
        self.record((time.perf_counter() - t0) * 1e3, stamp_ns)


def main(args=None):
    run_node(FusionNode, args)


if __name__ == '__main__':
    main()
