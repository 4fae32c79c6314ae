"""Small ONNX models with exactly the signature of each io_convention, and cards for them.

No tests here: the test_inference_* modules import these builders. Each model is built with
onnx.helper and computes something checkable (a peak where the input is bright, a peak where the
points are, constants that place a box at a known cell), so decoded results can be compared with
positions worked out by hand.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import helper, numpy_helper

OPSET = 17
CLASSES = ['car', 'pedestrian', 'cyclist', 'cone']


def save_model(path: Path, inputs, outputs, nodes, initializers=None, opset=OPSET) -> Path:
    """inputs/outputs: [(name, shape, numpy dtype)]; initializers: {name: array}."""
    def value(name, shape, dtype):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape))
    graph = helper.make_graph(nodes, path.stem, [value(*i) for i in inputs], [value(*o) for o in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def constant_outputs_model(path: Path, input_name: str, input_shape, outputs: dict) -> Path:
    """Outputs = given constants + 0 * mean(input): the values are known, the input is still read."""
    nodes = [helper.make_node('ReduceMean', [input_name], ['mean_in'], keepdims=0),
             helper.make_node('Mul', ['mean_in', 'zero'], ['zero_in'])]
    inits = {'zero': np.float32(0.0)}
    for name, value in outputs.items():
        inits[f'{name}_const'] = value.astype(np.float32)
        nodes.append(helper.make_node('Add', [f'{name}_const', 'zero_in'], [name]))
    return save_model(path, [(input_name, input_shape, np.float32)],
                      [(n, v.shape, np.float32) for n, v in outputs.items()], nodes, inits)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tensor(name, shape, dtype='float32', **extra):
    return {'name': name, 'shape': list(shape), 'dtype': dtype, **extra}


def write_card(directory: Path, card: dict, files: dict) -> Path:
    """files: {variant: {network: path}} -> card['files'] with sha256; writes card.yaml."""
    card = dict(card)
    card['files'] = {v: {n: {'path': Path(p).name, 'sha256': sha256(p)} for n, p in nets.items()}
                     for v, nets in files.items()}
    path = directory / 'card.yaml'
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def base_card(name, task, convention, networks, **extra) -> dict:
    return {'name': name, 'version': '0.1.0', 'task': task, 'io_convention': convention, 'opset': OPSET,
            'classes': list(CLASSES), 'networks': networks,
            'training': {'command': 'made by tests/test_inference_helpers.py', 'data_seed': 0},
            'metrics': {}, **extra}


# -------------------------------------------------------------------------------- fmdrive_centernet
CENTERNET_INPUT_HW = (384, 640)
CENTERNET_STRIDE = 4
NORMALISATION = {'scale': 1 / 255, 'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225],
                 'channel_order': 'rgb', 'letterbox': {'pad_value': 114, 'align': 'center'}}


def centernet_blob_model(path: Path, box_size_px=(40.0, 24.0), embedding_dim=8, with_depth=True) -> Path:
    """A CenterNet whose class-1 heatmap is bright where the image is bright: mean over channels,
    4x4 average pool (stride 4), sigmoid(60 * (x - 1)); class 0/2/3 stay ~0. size = box_size_px
    everywhere, offset = 0.5 (cell centre), depth = 12 m, embedding channel k = k."""
    H, W = CENTERNET_INPUT_HW
    h, w = H // CENTERNET_STRIDE, W // CENTERNET_STRIDE
    C = len(CLASSES)
    nodes = [
        helper.make_node('ReduceMean', ['image'], ['gray'], axes=[1], keepdims=1),
        helper.make_node('AveragePool', ['gray'], ['pooled'], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node('Conv', ['pooled', 'w_heat', 'b_heat'], ['logits']),
        helper.make_node('Sigmoid', ['logits'], ['heatmap']),
        helper.make_node('Mul', ['pooled', 'zero'], ['zero_map']),
    ]
    w_heat = np.zeros((C, 1, 1, 1), np.float32)
    w_heat[1, 0, 0, 0] = 60.0
    b_heat = np.full(C, -60.0, np.float32)    # class 1: sigmoid(60 * (x - 1)); others: sigmoid(-60)
    inits = {'w_heat': w_heat, 'b_heat': b_heat, 'zero': np.float32(0)}
    consts = {'size': np.array(box_size_px, np.float32).reshape(1, 2, 1, 1) * np.ones((1, 2, h, w), np.float32),
              'offset': np.full((1, 2, h, w), 0.5, np.float32),
              'embedding': np.arange(embedding_dim, dtype=np.float32).reshape(1, -1, 1, 1) * np.ones(
                  (1, embedding_dim, h, w), np.float32)}
    if with_depth:
        consts['depth'] = np.full((1, 1, h, w), 12.0, np.float32)
    outputs = [('heatmap', (1, C, h, w), np.float32)]
    for name, value in consts.items():
        inits[f'{name}_const'] = value
        nodes.append(helper.make_node('Add', [f'{name}_const', 'zero_map'], [name]))
        outputs.append((name, value.shape, np.float32))
    return save_model(path, [('image', (1, 3, H, W), np.float32)], outputs, nodes, inits)


def centernet_card(directory: Path, model_path: Path, extra_files=None, **decoder) -> Path:
    import onnxruntime  # noqa: F401  (the card's shapes come from the model itself)
    H, W = CENTERNET_INPUT_HW
    m = onnx.load(str(model_path))
    outs = [tensor(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in m.graph.output]
    networks = {'model': {'inputs': [tensor('image', (1, 3, H, W), normalisation=NORMALISATION)], 'outputs': outs}}
    card = base_card('camera_centernet', 'camera_detector', 'fmdrive_centernet', networks,
                     decoder={'score_threshold': 0.3, 'top_k': 20, **decoder})
    return write_card(directory, card, {'fp32': {'model': model_path}, **(extra_files or {})})


# ---------------------------------------------------------------------------------------- yolox
YOLOX_INPUT_HW = (256, 320)


def yolox_anchor_count(hw=YOLOX_INPUT_HW, strides=(8, 16, 32)):
    return sum((hw[0] // s) * (hw[1] // s) for s in strides)


def yolox_constant_model(path: Path, rows: dict) -> Path:
    """output [1, N, 5 + C] all zeros except the given rows {anchor index: vector of 5 + C}."""
    out = np.zeros((1, yolox_anchor_count(), 5 + len(CLASSES)), np.float32)
    for i, v in rows.items():
        out[0, i] = v
    return constant_outputs_model(path, 'images', (1, 3, *YOLOX_INPUT_HW), {'output': out})


def yolox_card(directory: Path, model_path: Path, **decoder) -> Path:
    H, W = YOLOX_INPUT_HW
    norm = {'scale': 1.0, 'mean': [0, 0, 0], 'std': [1, 1, 1], 'channel_order': 'bgr',
            'letterbox': {'pad_value': 114, 'align': 'top_left'}}
    networks = {'model': {'inputs': [tensor('images', (1, 3, H, W), normalisation=norm)],
                          'outputs': [tensor('output', (1, yolox_anchor_count(), 5 + len(CLASSES)))]}}
    card = base_card('yolox_s', 'camera_detector', 'yolox', networks,
                     decoder={'score_threshold': 0.3, 'nms_iou': 0.45, **decoder})
    return write_card(directory, card, {'fp32': {'model': model_path}})


# ------------------------------------------------------------------------------- fmdrive_centerpoint
FMDRIVE_GRID = {'x_range_m': [-20.0, 44.0], 'y_range_m': [-16.0, 16.0], 'z_range_m': [-3.0, 5.0],
                'voxel_size_m': [0.5, 0.5, 8.0], 'output_stride': 2, 'max_pillars': 4000,
                'max_points_per_pillar': 16, 'bev_features': ['log_count', 'z_max']}


def centerpoint_occupancy_model(path: Path, size_lwh=(4.5, 1.9, 1.6), yaw_rad=0.3, z_m=0.8, embedding_dim=4):
    """heatmap class 0 = sigmoid(40 * maxpool2x2(log_count) - 20): bright where points are (stride 2);
    offset = 0.5, z, log size, (sin, cos) of yaw and embedding are constants."""
    nx, ny = 128, 64
    h, w = ny // 2, nx // 2
    C = len(CLASSES)
    w_heat = np.zeros((C, 2, 1, 1), np.float32)
    w_heat[0, 0, 0, 0] = 40.0
    b_heat = np.array([-20.0] + [-30.0] * (C - 1), np.float32)
    nodes = [helper.make_node('MaxPool', ['bev'], ['pooled'], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node('Conv', ['pooled', 'w_heat', 'b_heat'], ['logits']),
             helper.make_node('Sigmoid', ['logits'], ['heatmap']),
             helper.make_node('ReduceMean', ['pooled'], ['one_map_raw'], axes=[1], keepdims=1),
             helper.make_node('Mul', ['one_map_raw', 'zero'], ['zero_map'])]
    inits = {'w_heat': w_heat, 'b_heat': b_heat, 'zero': np.float32(0)}
    consts = {'offset': np.full((1, 2, h, w), 0.5), 'z': np.full((1, 1, h, w), z_m),
              'size': np.log(np.array(size_lwh)).reshape(1, 3, 1, 1) * np.ones((1, 3, h, w)),
              'rot': np.array([np.sin(yaw_rad), np.cos(yaw_rad)]).reshape(1, 2, 1, 1) * np.ones((1, 2, h, w)),
              'embedding': np.arange(embedding_dim).reshape(1, -1, 1, 1) * np.ones((1, embedding_dim, h, w))}
    outputs = [('heatmap', (1, C, h, w), np.float32)]
    for name, value in consts.items():
        inits[f'{name}_const'] = value.astype(np.float32)
        nodes.append(helper.make_node('Add', [f'{name}_const', 'zero_map'], [name]))
        outputs.append((name, value.shape, np.float32))
    return save_model(path, [('bev', (1, 2, ny, nx), np.float32)], outputs, nodes, inits)


def centerpoint_card(directory: Path, model_path: Path, **decoder) -> Path:
    m = onnx.load(str(model_path))
    outs = [tensor(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in m.graph.output]
    networks = {'model': {'inputs': [tensor('bev', (1, 2, 64, 128))], 'outputs': outs}}
    card = base_card('lidar_centerpoint', 'lidar_detector', 'fmdrive_centerpoint', networks, bev_grid=FMDRIVE_GRID,
                     decoder={'score_threshold': 0.3, 'top_k': 50, **decoder})
    return write_card(directory, card, {'fp32': {'model': model_path}})


# ------------------------------------------------------------------------------ autoware_centerpoint
AUTOWARE_CLASSES = ['CAR', 'TRUCK', 'BUS', 'BICYCLE', 'PEDESTRIAN']
AUTOWARE_GRID = {'x_range_m': [-25.6, 25.6], 'y_range_m': [-25.6, 25.6], 'z_range_m': [-3.0, 5.0],
                 'voxel_size_m': [0.32, 0.32, 8.0], 'output_stride': 1, 'max_pillars': 2000,
                 'max_points_per_pillar': 32}


def autoware_encoder_model(path: Path, max_pillars=2000, max_points=32, channels=32) -> Path:
    """pillar_features[p, 0, 0] = max over the pillar's points of |x| + |y| (0 for padding), other
    channels 0: a pillar with points has a positive channel 0."""
    w = np.zeros((9, channels), np.float32)
    w[0, 0] = w[1, 0] = 1.0
    nodes = [helper.make_node('Abs', ['input_features'], ['abs']),
             helper.make_node('MatMul', ['abs', 'w'], ['per_point']),
             helper.make_node('ReduceMax', ['per_point'], ['pillar_features'], axes=[1], keepdims=1)]
    return save_model(path, [('input_features', (max_pillars, max_points, 9), np.float32)],
                      [('pillar_features', (max_pillars, 1, channels), np.float32)], nodes,
                      {'w': w})


def autoware_head_model(path: Path, ny=160, nx=160, channels=32, yaw_mmdet=0.4, dim_wlh=(1.9, 4.6, 1.6),
                        z_m=0.9, vel=(3.0, -1.0)) -> Path:
    """heatmap logits: class 0 = 20 * sign(channel 0) - 10, other classes -10; reg 0.5, height,
    log dim (w, l, h), rot (sin, cos) of the mmdet3d yaw, vel: constants."""
    C = len(AUTOWARE_CLASSES)
    w_heat = np.zeros((C, channels, 1, 1), np.float32)
    w_heat[0, 0, 0, 0] = 20.0
    nodes = [helper.make_node('Sign', ['spatial_features'], ['occupied']),
             helper.make_node('Conv', ['occupied', 'w_heat', 'b_heat'], ['heatmap']),
             helper.make_node('ReduceMean', ['occupied'], ['mean_c'], axes=[1], keepdims=1),
             helper.make_node('Mul', ['mean_c', 'zero'], ['zero_map'])]
    inits = {'w_heat': w_heat, 'b_heat': np.full(C, -10.0, np.float32), 'zero': np.float32(0)}
    ones = np.ones((1, 1, ny, nx))
    consts = {'reg': np.full((1, 2, ny, nx), 0.5), 'height': z_m * ones,
              'dim': np.log(np.array(dim_wlh)).reshape(1, 3, 1, 1) * ones,
              'rot': np.array([np.sin(yaw_mmdet), np.cos(yaw_mmdet)]).reshape(1, 2, 1, 1) * ones,
              'vel': np.array(vel).reshape(1, 2, 1, 1) * ones}
    outputs = [('heatmap', (1, C, ny, nx), np.float32)]
    for name, value in consts.items():
        inits[f'{name}_const'] = value.astype(np.float32)
        nodes.append(helper.make_node('Add', [f'{name}_const', 'zero_map'], [name]))
        outputs.append((name, value.shape, np.float32))
    return save_model(path, [('spatial_features', (1, channels, ny, nx), np.float32)], outputs, nodes, inits)


def autoware_card(directory: Path, encoder: Path, head: Path, **decoder) -> Path:
    head_outs = [tensor(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim])
                 for o in onnx.load(str(head)).graph.output]
    networks = {'encoder': {'inputs': [tensor('input_features', (2000, 32, 9))],
                            'outputs': [tensor('pillar_features', (2000, 1, 32))]},
                'head': {'inputs': [tensor('spatial_features', (1, 32, 160, 160))], 'outputs': head_outs}}
    card = base_card('autoware_centerpoint_tiny', 'lidar_detector', 'autoware_centerpoint', networks,
                     bev_grid=AUTOWARE_GRID,
                     decoder={'score_threshold': 0.35, 'circle_nms_dist_m': 0.5, 'has_twist': True, **decoder})
    card['classes'] = list(AUTOWARE_CLASSES)
    card['class_map'] = {'CAR': 'car', 'TRUCK': 'car', 'BUS': 'car', 'BICYCLE': 'cyclist',
                         'PEDESTRIAN': 'pedestrian'}
    return write_card(directory, card, {'fp32': {'encoder': encoder, 'head': head}})


def quantize_qdq(fp32: Path, out: Path, frames: list, symmetric: bool) -> Path:
    """A real QDQ model from onnxruntime's static quantization: symmetric S8S8 (what TensorRT needs,
    the int8_trt variant) or U8S8 (ONNX Runtime on the CPU, int8_cpu). frames: [{input: array}]."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.it = iter(frames)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Frames(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={'ActivationSymmetric': symmetric, 'WeightSymmetric': True})
    return out
