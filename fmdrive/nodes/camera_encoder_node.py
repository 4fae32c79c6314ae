"""camera_encoder node: camera image -> 2D objects (boxes in image pixels, score, class, embedding) from
the learned camera encoder of a model card (fmdrive/perception/camera_learned.py over fmdrive/inference).

The graph shares its cores: images are encoded at most max_rate_hz (frames in between are skipped and
counted, never queued) on inference_threads threads. A card that does not validate or a model that
cannot load here leaves the node `unavailable: <why>` on /diagnostics; it then publishes nothing and
the graph runs LiDAR-only.
"""
from __future__ import annotations

import array
import time
from pathlib import Path

import numpy as np
from fmdrive_msgs.msg import FeatureMap, ObjectArray
from sensor_msgs.msg import CameraInfo, Image

from fmdrive import config, warmup
from fmdrive.calibration.camera_model import CameraModel
from fmdrive.msgs import (MessageError, camera_info_to_fields, image_to_rgb, ns_to_stamp, objects_to_msg,
                          stamp_to_ns)
from fmdrive.nodes.base import FmdriveNode, make_qos, run_node
from fmdrive.perception.camera_learned import ImageError


class CameraEncoderNode(FmdriveNode):
    def __init__(self):
        super().__init__('camera_encoder')
        self.camera = self.load_camera_model()
        self.core = self.load_core()
        self.unencoded = 0
        self.pub_objects = self.advertise('camera_objects', ObjectArray)
        self.pub_features = self.advertise('camera_features', FeatureMap, make_qos('reliable', 2))
        self.subscribe('camera_info', CameraInfo, self.on_camera_info, 'any', aged=None, gaps=False)
        # at most max_rate_hz, decided at the door: a skipped frame costs no queue, no wake-up of
        # the worker and no decode (counted as throttled on /diagnostics)
        self.subscribe('image', Image, self.on_image, 'sensor', queued=True, aged='always',
                       max_rate_param='max_rate_hz')

    def load_core(self):
        """The encoder of the card `model`, or None (said on /diagnostics) when it cannot run here."""
        from fmdrive.inference.detectors import CameraDetector, load_detector
        from fmdrive.perception.camera_learned import LearnedCameraDetector
        path = Path(self.p['model'])
        path = path if path.is_absolute() else config.package_file(str(path))
        try:
            det = load_detector(path, self.p['precision'], self.p['backend'], threads=int(self.p['inference_threads']))
            if not isinstance(det, CameraDetector):
                raise ValueError(f'{path} is a {det.card.task}, not a camera_detector')
        except Exception as e:  # noqa: BLE001 - CardError, BackendError or a runtime's own: all mean "not here"
            reason = ' '.join(str(e).split()) or type(e).__name__
            self.warn(f'camera encoder unavailable ({reason}); publishing nothing, the graph runs LiDAR-only',
                      key='unavailable', period_s=1e9)
            self.set_mode(f'unavailable: {reason[:200]}')
            self.diag_values['backend'] = 'unavailable'
            return None
        self.diag_values['backend'] = f'{det.describe()}'[:300]
        return LearnedCameraDetector(det)

    def warm_up(self) -> None:
        if self.core is not None:
            self.core.detect(warmup.image(self.camera.width, self.camera.height), self.camera)

    def on_camera_info(self, msg: CameraInfo):
        self.camera = CameraModel.from_camera_info_fields(**camera_info_to_fields(msg))

    def on_image(self, msg: Image):
        t0 = time.perf_counter()
        rgb = image_to_rgb(msg)                            # a view: a bad image is counted
        if self.core is None:
            self.unencoded += 1
            self.diag_values['frames_unavailable'] = str(self.unencoded)
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            result = self.core.detect(rgb, self.camera)
        except ImageError as e:
            raise MessageError(str(e)) from None
        for w in result.warnings:
            self.warn(w, key=w[:40])
        frame = msg.header.frame_id or config.FRAMES['camera']
        self.pub_objects.publish(objects_to_msg(result.objects, stamp_ns, frame, 'camera_learned'))
        if self.p['publish_features'] and result.features is not None:
            self.pub_features.publish(feature_map_msg(result.features, result.feature_stride, stamp_ns, frame))
        self.diag_values['objects'] = str(len(result.objects))
        self.diag_values['infer_ms'] = f'{result.timings_ms.get("infer_ms", float("nan")):.1f}'
        self.record((time.perf_counter() - t0) * 1e3, stamp_ns)


def feature_map_msg(features: np.ndarray, stride: int, stamp_ns: int, frame_id: str) -> FeatureMap:
    """fmdrive_msgs/FeatureMap of a (C, H, W) map, as float16 bytes (row-major)."""
    msg = FeatureMap(channels=features.shape[0], height=features.shape[1], width=features.shape[2],
                     stride=max(int(stride), 1), dtype='float16')
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    msg.data = array.array('B', np.ascontiguousarray(features, np.float16).tobytes())
    return msg


def main(args=None):
    run_node(CameraEncoderNode, args)


if __name__ == '__main__':
    main()
