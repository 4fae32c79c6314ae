"""The classical LiDAR path as a baseline for a run whose graph ran the learned encoder.

`fmdrive eval` scores what the graph published. When that was the learned LiDAR encoder, the same
frames of the same input bag also go through the classical detector here (default parameters of
`lidar_encoder`, the mounting from the bag's own TF), so the learned path's AP is printed next to
the classical path's on exactly the frames scored. Objects come back in base_link, keyed by the
ground-truth frame index, as eval_run keys the graph's own detections.
"""
from __future__ import annotations

import numpy as np

from fmdrive import config
from fmdrive.eval.metrics import nearest_frame_index

BASELINE = 'lidar_classical'
BASELINE_PARAMS = 'defaults'   # lidar_encoder's default parameters (config.py), mounting from the bag TF


def classical_detections(bag_dir, stamps_ns, gt_stamps_ns, progress: bool = False) -> dict:
    """{gt frame index: list[Object3D] in base_link} of the classical detector on the bag's clouds
    at stamps_ns (LiDAR stamps the run scored)."""
    from tqdm import tqdm

    from fmdrive.bags.reader import BagReader
    from fmdrive.eval.report import _wanted_messages, bag_geometry
    from fmdrive.msgs import pointcloud2_to_xyzi, stamp_to_ns
    from fmdrive.perception.lidar_classical import ClassicalLidarDetector, ClassicalLidarParams

    wanted = np.array(sorted(int(s) for s in stamps_ns), dtype=np.int64)
    gt_stamps = np.asarray(gt_stamps_ns, dtype=np.int64)
    if len(wanted) == 0:
        return {}
    geometry = bag_geometry(bag_dir)
    params = ClassicalLidarParams.from_dict(config.node_params('lidar_encoder'))
    detector = None
    out = {}
    with BagReader(bag_dir) as reader:
        messages = _wanted_messages(reader, [config.TOPICS['points']], wanted)
        for _, msg in tqdm(messages, desc='classical baseline', unit='sweep', total=len(wanted),
                           disable=not progress, leave=False):
            stamp = stamp_to_ns(msg.header.stamp)
            if nearest_frame_index(wanted, stamp) is None:
                continue
            k = nearest_frame_index(gt_stamps, stamp)
            if k is None:
                continue
            T_base_lidar = geometry.T_base(msg.header.frame_id or config.FRAMES['lidar'], stamp)
            detector = detector or ClassicalLidarDetector(params, T_base_lidar)
            out[k] = detector.detect(np.asarray(pointcloud2_to_xyzi(msg)), T_base_lidar).objects
    return out
