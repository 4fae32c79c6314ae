"""Each io_convention end to end on ONNX Runtime: a small model with exactly that signature, and the
decoded boxes where they must land (source pixels, metres)."""
from __future__ import annotations

import numpy as np
import pytest
from test_inference_helpers import (
    AUTOWARE_GRID,
    FMDRIVE_GRID,
    YOLOX_INPUT_HW,
    autoware_card,
    autoware_encoder_model,
    autoware_head_model,
    centernet_blob_model,
    centernet_card,
    centerpoint_card,
    centerpoint_occupancy_model,
    yolox_card,
    yolox_constant_model,
)

from fmdrive.inference.card import BevGrid, load_card
from fmdrive.inference.decoders import circle_nms, heatmap_peaks, nms_xyxy, yolox_grid
from fmdrive.inference.detectors import CameraDetector, LidarDetector, load_detector
from fmdrive.inference.pillars import (
    autoware_pillar_features,
    bev_canvas,
    scatter_to_bev,
)
from fmdrive.inference.preprocess import image_to_input


def grid_of(spec: dict) -> BevGrid:
    return BevGrid(tuple(spec['x_range_m']), tuple(spec['y_range_m']), tuple(spec['z_range_m']),
                   tuple(spec['voxel_size_m']), spec['output_stride'], spec['max_pillars'],
                   spec['max_points_per_pillar'], tuple(spec.get('bev_features', ())))


# -------------------------------------------------------------------------------------------- 2D
def test_max_pool_nms_keeps_one_peak_per_blob_and_the_best_first():
    heat = np.zeros((2, 8, 8), np.float32)
    heat[0, 2:5, 2:5] = [[0.2, 0.3, 0.2], [0.3, 0.9, 0.4], [0.2, 0.3, 0.2]]
    heat[1, 6, 6] = 0.7
    scores, cls, iy, ix = heat_peaks = heatmap_peaks(heat, top_k=10, threshold=0.1)
    assert list(zip(cls, iy, ix)) == [(0, 3, 3), (1, 6, 6)]
    assert np.allclose(scores, [0.9, 0.7]) and len(heat_peaks[0]) == 2
    assert len(heatmap_peaks(heat, top_k=1, threshold=0.1)[0]) == 1


def test_nms_suppresses_overlaps_of_one_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert list(nms_xyxy(boxes, scores, 0.5)) == [0, 3]
    assert list(nms_xyxy(boxes, scores, 0.5, classes=[0, 0, 1, 0])) == [0, 2, 3]
    assert list(circle_nms(np.array([[0, 0], [0.3, 0], [2, 0]]), np.array([0.5, 0.9, 0.4]), 0.5)) == [1, 2]


def test_letterbox_of_a_1920x1200_image_pads_top_and_bottom_equally(tmp_path):
    card = load_card(centernet_card(tmp_path, centernet_blob_model(tmp_path / 'fp32.onnx')))
    spec = card.networks['model'].inputs[0]
    image = np.zeros((1200, 1920, 3), np.uint8)
    tensor, t = image_to_input(image, spec)
    assert tensor.shape == (1, 3, 384, 640) and tensor.dtype == np.float32
    # 1920x1200 -> 614x384 (scale 0.32), 13 px of padding left and right
    assert t.scale_x == pytest.approx(614 / 1920) and t.pad_x == 13 and t.pad_y == 0
    pad = (114 / 255 - 0.485) / 0.229
    assert tensor[0, 0, 100, 5] == pytest.approx(pad, abs=1e-5)          # padding column
    assert tensor[0, 0, 100, 300] == pytest.approx(-0.485 / 0.229, abs=1e-5)   # black image
    assert np.allclose(t.to_source([[13, 0, 627, 384]]), [[0, 0, 1920, 1200]], atol=0.5)


def test_fmdrive_centernet_finds_a_bright_patch_of_a_1920x1200_image_in_source_pixels(tmp_path):
    card_path = centernet_card(tmp_path, centernet_blob_model(tmp_path / 'fp32.onnx', box_size_px=(40.0, 24.0)))
    detector = load_detector(card_path, 'fp32', backend='onnxruntime')
    assert isinstance(detector, CameraDetector)
    image = np.zeros((1200, 1920, 3), np.uint8)
    # input cell (iy 50, ix 100) covers input x 400..404, y 200..204 = source u 1209.4..1221.9, v 625..637.5
    image[622:641, 1206:1226] = 255
    detections = detector.detect(image)
    assert len(detections) == 1
    d = detections[0]
    assert d.label == 'pedestrian' and d.class_index == 1 and d.score > 0.9
    # centre of the cell in source pixels, box = 40 x 24 input pixels / 0.3198
    cu, cv = (402 - 13) / (614 / 1920), 202 / (384 / 1200)
    assert np.allclose(d.box2d, [cu - 62.54, cv - 37.5, cu + 62.54, cv + 37.5], atol=0.6)
    assert abs((d.box2d[0] + d.box2d[2]) / 2 - 1215.5) < 1.0 and abs((d.box2d[1] + d.box2d[3]) / 2 - 631) < 1.0
    assert d.depth_m == pytest.approx(12.0)
    # a raw embedding map: the decoder returns the unit vector of what it reads at the peak
    assert np.allclose(d.embedding, np.arange(8) / np.linalg.norm(np.arange(8)))
    assert detector.detect(np.zeros((1200, 1920, 3), np.uint8)) == []


def test_yolox_decodes_grid_and_stride_objectness_times_class_and_nms_in_source_pixels(tmp_path):
    H, W = YOLOX_INPUT_HW
    n8 = (H // 8) * (W // 8)
    anchor = n8 + 3 * (W // 16) + 5            # stride 16, cell x 5, y 3
    rows = {anchor: [0.25, 0.5, np.log(2.0), np.log(1.5), 0.9, 0.0, 0.8, 0.0, 0.0],
            anchor + 1: [-0.75, 0.5, np.log(2.0), np.log(1.5), 0.9, 0.0, 0.6, 0.0, 0.0],   # same box, worse
            10: [0.5, 0.5, 0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0]}                               # score 0.09
    card_path = yolox_card(tmp_path, yolox_constant_model(tmp_path / 'fp32.onnx', rows))
    grid, strides = yolox_grid((H, W))
    assert tuple(grid[anchor]) == (5, 3) and strides[anchor] == 16
    detector = load_detector(card_path, 'fp32', backend='onnxruntime')
    detections = detector.detect(np.zeros((1200, 1920, 3), np.uint8), image_order='bgr')
    assert len(detections) == 1
    d = detections[0]
    assert d.label == 'pedestrian' and d.score == pytest.approx(0.72)
    # input centre (84, 56), 32 x 24; top-left letterbox, scale 320/1920
    s = 320 / 1920
    assert np.allclose(d.box2d, [(84 - 16) / s, (56 - 12) / s, (84 + 16) / s, (56 + 12) / s], atol=1e-3)


def test_yolox_letterbox_is_top_left_with_bgr_channels(tmp_path):
    card = load_card(yolox_card(tmp_path, yolox_constant_model(tmp_path / 'fp32.onnx', {})))
    image = np.zeros((1200, 1920, 3), np.uint8)
    image[..., 0] = 200                         # red in an RGB image
    tensor, t = image_to_input(image, card.networks['model'].inputs[0], image_order='rgb')
    assert t.pad_x == 0 and t.pad_y == 0
    assert tensor[0, 2, 10, 10] == pytest.approx(200) and tensor[0, 0, 10, 10] == 0     # BGR: red is channel 2
    assert tensor[0, 0, 255, 10] == pytest.approx(114)                                # padding below 200 rows


# -------------------------------------------------------------------------------------------- 3D
def test_bev_canvas_matches_a_per_point_reference():
    grid = grid_of({**FMDRIVE_GRID, 'bev_features': ['count', 'log_count', 'z_max', 'z_min', 'z_mean',
                                                     'intensity_mean', 'intensity_max']})
    rng = np.random.default_rng(3)
    points = np.column_stack([rng.uniform(-25, 50, 3000), rng.uniform(-20, 20, 3000), rng.uniform(-4, 6, 3000),
                              rng.uniform(0, 1, 3000)]).astype(np.float32)
    canvas = bev_canvas(points, grid)[0]
    ref = {}
    for x, y, z, i in points:
        if -20 <= x < 44 and -16 <= y < 16 and -3 <= z < 5:
            ref.setdefault((int((y + 16) // 0.5), int((x + 20) // 0.5)), []).append((z, i))
    assert int(canvas[0].sum()) == sum(len(v) for v in ref.values())
    for (iy, ix), values in list(ref.items())[:200]:
        z, i = np.array(values).T
        assert canvas[:, iy, ix] == pytest.approx([len(z), np.log1p(len(z)), z.max(), z.min(), z.mean(),
                                                   i.mean(), i.max()], rel=1e-5, abs=1e-5)
    empty = canvas[0] == 0
    assert np.all(canvas[:, empty] == 0)


def test_fmdrive_centerpoint_puts_the_box_on_the_cluster_in_metres(tmp_path):
    card_path = centerpoint_card(tmp_path, centerpoint_occupancy_model(tmp_path / 'fp32.onnx'))
    detector = load_detector(card_path, 'fp32', backend='onnxruntime')
    assert isinstance(detector, LidarDetector)
    rng = np.random.default_rng(0)
    cluster = np.column_stack([rng.uniform(10.05, 10.45, 40), rng.uniform(-3.45, -3.05, 40),
                               rng.uniform(0, 1.5, 40), np.ones(40)])
    far = np.array([[80.0, 0.0, 0.0, 1.0]])          # outside the grid: ignored
    objects = detector.detect(np.vstack([cluster, far]))
    assert len(objects) == 1
    o = objects[0]
    # stride 2 x 0.5 m = 1 m output cells: cell (ix 30, iy 12) centre = (-20 + 30.5, -16 + 12.5)
    assert o.center == pytest.approx([10.5, -3.5, 0.8], abs=1e-5)
    assert o.size == pytest.approx([4.5, 1.9, 1.6], rel=1e-5) and o.yaw_rad == pytest.approx(0.3, abs=1e-6)
    assert o.label == 'car' and o.score > 0.99
    assert np.allclose(o.embedding, np.arange(4) / np.linalg.norm(np.arange(4)), atol=1e-6)
    assert o.embedding_space == 'lidar_centerpoint'


def test_autoware_pillar_features_follow_the_lidar_centerpoint_layout():
    grid = grid_of({**AUTOWARE_GRID, 'max_points_per_pillar': 4, 'max_pillars': 3})
    pts = np.array([[10.0, -4.6, 0.5, 0.0], [10.1, -4.7, 0.7, 0.0], [10.2, -4.5, 0.9, 0.0],
                    [10.0, -4.6, 1.0, 0.0], [10.0, -4.6, 1.1, 0.0],        # 5th point of the pillar: dropped
                    [0.1, 0.1, 0.0, 0.0], [-25.0, -25.0, 0.0, 0.0], [20.0, 20.0, 0.0, 0.0],  # 4th pillar: dropped
                    [30.0, 0.0, 0.0, 0.0]], np.float32)                      # outside the range
    p = autoware_pillar_features(pts, grid)
    assert p.features.shape == (3, 4, 9)
    assert p.coords.tolist() == [[1, 1], [65, 111], [80, 80]]     # lowest cells first, (iy, ix)
    assert p.num_points.tolist() == [1, 4, 1]
    f = p.features[1]
    used = pts[:4, :3]
    mean = used.mean(0)
    assert f[:, :4] == pytest.approx(pts[:4, :4])
    assert f[:, 4:7] == pytest.approx(used - mean, abs=1e-6)
    assert f[:, 7] == pytest.approx(used[:, 0] - (-25.6 + 111.5 * 0.32), abs=1e-5)
    assert f[:, 8] == pytest.approx(used[:, 1] - (-25.6 + 65.5 * 0.32), abs=1e-5)
    assert np.all(p.features[0, 1:] == 0)                         # padding
    canvas = scatter_to_bev(np.arange(3 * 2, dtype=np.float32).reshape(3, 1, 2), p.coords, grid)
    assert canvas.shape == (1, 2, 160, 160)
    assert canvas[0, :, 65, 111].tolist() == [2.0, 3.0] and canvas[0, :, 1, 1].tolist() == [0.0, 1.0]
    assert np.count_nonzero(canvas) == 5


def test_autoware_centerpoint_runs_encoder_scatter_head_and_decodes_as_autoware(tmp_path):
    enc = autoware_encoder_model(tmp_path / 'pts_voxel_encoder_centerpoint.onnx')
    head = autoware_head_model(tmp_path / 'pts_backbone_neck_head_centerpoint.onnx', yaw_mmdet=0.4)
    detector = load_detector(autoware_card(tmp_path, enc, head), 'fp32', backend='onnxruntime')
    rng = np.random.default_rng(1)
    cluster = np.column_stack([rng.uniform(9.95, 10.2, 30), rng.uniform(-4.75, -4.5, 30), rng.uniform(0, 1, 30)])
    objects = detector.detect(cluster)
    assert len(objects) == 1
    o = objects[0]
    # pillar (ix 111, iy 65), reg 0.5: the pillar centre
    assert o.center == pytest.approx([-25.6 + 111.5 * 0.32, -25.6 + 65.5 * 0.32, 0.9], abs=1e-4)
    assert o.size == pytest.approx([4.6, 1.9, 1.6], rel=1e-5)             # dim is (w, l, h)
    assert o.yaw_rad == pytest.approx(-0.4 - np.pi / 2, abs=1e-5)         # mmdet3d yaw -> ROS yaw
    assert o.velocity == pytest.approx([3.0, -1.0, 0.0])
    assert o.label == 'car' and o.score == pytest.approx(1 / (1 + np.exp(-10)), abs=1e-5)
    describe = detector.describe()['networks']
    assert set(describe) == {'encoder', 'head'}
    assert describe['encoder']['input_shapes'] == {'input_features': [2000, 32, 9]}
