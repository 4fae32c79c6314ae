"""Checkpoint -> engines/<model>/: fp32.onnx (static shapes, checked against torch), two INT8 QDQ
variants calibrated on dataset frames, and a card.yaml that load_card accepts.

    fmdrive export lidar --checkpoint runs/lidar/best.pt --out engines/lidar_centerpoint
    fmdrive quantize lidar --model-dir engines/lidar_centerpoint --data runs/dataset --frames 256

INT8 (onnxruntime.quantization.quantize_static, QuantFormat.QDQ, per-channel weights):
- int8_trt.onnx: S8 activations and weights, both symmetric (zero point 0: TensorRT's explicit
  quantization), biases left in float (TensorRT quantizes them itself);
- int8_cpu.onnx: U8 activations / S8 weights, int32 biases (what ONNX Runtime's CPU kernels fuse
  into QLinearConv).
Each calibration method (minmax, entropy, percentile) is run on the same train frames and scored by
BEV AP on val frames; the best one is kept and the comparison printed (and written to the card).
The best method is then tried with the small output heads left in float (mixed precision: scores and
box regressions, not the embedding); that is kept only if val mAP gains FLOAT_HEADS_MIN_GAIN, since
it costs about a tenth of the INT8 network's time (card: calibration.float_nodes).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

OPSET = 17
MODEL_NAME = 'lidar_centerpoint'
DECODER = {'score_threshold': 0.3, 'top_k': 100, 'circle_nms_dist_m': 0.0}
CALIBRATION_METHODS = ('minmax', 'entropy', 'percentile')
# float output heads cost about 1.3 of 11 ms on the INT8 network (1 thread here): kept only for at
# least this much val mAP (int8_cpu); measured gains were 0.5 point (two models), not enough
FLOAT_HEADS_MIN_GAIN = 0.01


# ------------------------------------------------------------------------------------------- card
def card_dict(cfg, files: dict | None = None, calibration: dict | None = None, training: dict | None = None,
              metrics: dict | None = None, name: str = MODEL_NAME, decoder: dict | None = None) -> dict:
    """The card of a LiDAR model with this LidarConfig (files: variant -> (path, sha256))."""
    ny, nx = cfg.grid_hw
    H, W = ny // cfg.output_stride, nx // cfg.output_stride
    C = len(cfg.classes)
    outputs = [('heatmap', C), ('offset', 2), ('z', 1), ('size', 3), ('rot', 2), ('embedding', cfg.embed_dim)]
    if getattr(cfg, 'axis_head', False):
        outputs.append(('rot_axis', 2))
    card = {
        'name': name, 'version': '1.0.0', 'task': 'lidar_detector', 'io_convention': 'fmdrive_centerpoint',
        'opset': OPSET, 'classes': list(cfg.classes),
        'networks': {'model': {
            'inputs': [{'name': 'bev', 'shape': [1, len(cfg.bev_features), ny, nx], 'dtype': 'float32'}],
            'outputs': [{'name': n, 'shape': [1, c, H, W], 'dtype': 'float32'} for n, c in outputs]}},
        'files': {v: {'model': {'path': p, 'sha256': s}} for v, (p, s) in (files or {'fp32': ('fp32.onnx', '0' * 64)}).items()},
        'bev_grid': {'x_range_m': list(cfg.x_range_m), 'y_range_m': list(cfg.y_range_m),
                     'z_range_m': list(cfg.z_range_m),
                     'voxel_size_m': [cfg.voxel_m, cfg.voxel_m, cfg.z_range_m[1] - cfg.z_range_m[0]],
                     'output_stride': cfg.output_stride, 'bev_features': list(cfg.bev_features)},
        'decoder': dict(decoder or DECODER),
    }
    if calibration:
        card['calibration'] = calibration
    if training:
        card['training'] = training
    if metrics:
        card['metrics'] = metrics
    return card


def card_for(cfg, path) -> object:
    """An in-memory ModelCard (not checked against files) for decoding during training."""
    from fmdrive.inference.card import parse_card
    return parse_card(card_dict(cfg), Path(path))


def write_card(card: dict, directory) -> Path:
    import yaml
    path = Path(directory) / 'card.yaml'
    text = ('# written by fmdrive/training/export.py (fmdrive export / fmdrive quantize); check it with\n'
            f'# python -m fmdrive.inference.card {directory}\n') + yaml.safe_dump(card, sort_keys=False, width=110)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------- export
def fold_batchnorm(model):
    """Fold every BatchNorm2d into the (transposed) conv before it, in place (eval mode): the ONNX
    graph is then convolutions + ReLU only, which both INT8 quantizers handle per channel (a BN left
    after a ConvTranspose would stay float between its QDQ pairs)."""
    import torch
    import torch.nn as nn
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        for i in range(len(layers) - 1):
            conv, bn = layers[i], layers[i + 1]
            if not (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d)):
                continue
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
            with torch.no_grad():
                conv.weight.mul_(scale.reshape(shape))
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
            seq[i + 1] = nn.Identity()
    return model


def transposed_to_pixel_shuffle(model):
    """Replace every transposed conv whose kernel equals its stride (the neck's Up layers) by the
    same map as a 1x1 conv to C_out * s^2 channels and a pixel shuffle (ONNX DepthToSpace), in place,
    after fold_batchnorm: exact, out[o, h*s+i, w*s+j] = sum_c x[c, h, w] W[c, o, i, j] either way.
    The ReLU that follows moves before the shuffle (it commutes with a permutation), so the 1x1 conv
    + ReLU run as one INT8 conv; ONNX Runtime's CPU provider has no INT8 transposed conv, and the
    float ConvTranspose with its layout transposes was a fifth of the INT8 network's time."""
    import torch
    import torch.nn as nn
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i, layer in enumerate(list(seq)):
            if not (isinstance(layer, nn.ConvTranspose2d) and layer.kernel_size == layer.stride
                    and layer.padding == (0, 0) and layer.output_padding == (0, 0) and layer.groups == 1
                    and layer.dilation == (1, 1)):
                continue
            c_in, c_out, (s, _) = layer.in_channels, layer.out_channels, layer.stride
            conv = nn.Conv2d(c_in, c_out * s * s, 1, bias=True)
            with torch.no_grad():
                w = layer.weight.detach()                                   # (C_in, C_out, s, s)
                conv.weight.copy_(w.permute(1, 2, 3, 0).reshape(c_out * s * s, c_in, 1, 1))
                b = layer.bias.detach() if layer.bias is not None else torch.zeros(c_out)
                conv.bias.copy_(b.repeat_interleave(s * s))
            parts = [conv]
            after = list(seq)[i + 1:]
            j = next((k for k, m in enumerate(after) if not isinstance(m, nn.Identity)), None)
            if j is not None and isinstance(after[j], nn.ReLU):
                parts.append(nn.ReLU())
                seq[i + 1 + j] = nn.Identity()
            seq[i] = nn.Sequential(*parts, nn.PixelShuffle(s))
    return model


def pixel_shuffle_to_transposed(weight: np.ndarray, bias: np.ndarray, stride: int) -> tuple:
    """The inverse of transposed_to_pixel_shuffle on weights (numpy): a 1x1 conv's (C_out * s^2,
    C_in, 1, 1) weight and bias back to the transposed conv's (C_in, C_out, s, s) weight and (C_out,)
    bias (e.g. to run an exported graph's weights in the model as trained)."""
    c_in, c_out = weight.shape[1], weight.shape[0] // (stride * stride)
    return weight.reshape(c_out, stride, stride, c_in).transpose(3, 0, 1, 2), bias[::stride * stride]


def export_onnx(model, path, input_shape, opset: int = OPSET, sample: np.ndarray | None = None, log=print,
                input_name: str = 'bev', output_names=None) -> dict:
    """Static-shape ONNX of the model; returns the max |ORT - torch| per output on `sample`."""
    import onnx
    import onnxruntime as ort
    import torch

    from fmdrive.training.lidar_model import output_names as lidar_outputs
    output_names = tuple(output_names or lidar_outputs(model.cfg))
    model = transposed_to_pixel_shuffle(fold_batchnorm(model.eval()))
    x = torch.from_numpy(sample.astype(np.float32)) if sample is not None else torch.randn(*input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (x,), str(path), input_names=[input_name], output_names=list(output_names),
                      opset_version=opset, dynamo=False, do_constant_folding=True)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])
    got = session.run(None, {input_name: x.numpy()})
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    diff = {n: float(np.abs(a - b).max()) for n, a, b in zip(output_names, got, ref)}
    log('export parity (max |onnxruntime - torch| per output): ' + ', '.join(f'{k} {v:.2e}' for k, v in diff.items()))
    return diff


# ------------------------------------------------------------------------------------ quantization
class CanvasReader:
    """onnxruntime CalibrationDataReader over input tensors (BEV canvases, images), one per call."""

    def __init__(self, canvases, input_name: str = 'bev'):
        self.canvases, self.input_name = canvases, input_name
        self.start, self.end, self.i = 0, len(canvases), 0

    def get_next(self):
        if self.i >= self.end:
            return None
        self.i += 1
        return {self.input_name: np.asarray(self.canvases[self.i - 1:self.i], np.float32)}

    def __len__(self):
        return len(self.canvases)

    def set_range(self, start_index: int, end_index: int):
        """Read only canvases[start_index:end_index] (onnxruntime calibrates chunk by chunk)."""
        self.start, self.end = max(0, start_index), min(len(self.canvases), end_index)
        self.i = self.start

    def rewind(self):
        self.i = self.start


# frames per calibration pass: the histogram calibrators keep every activation of every frame of a
# pass (256 BEV frames: > 20 GB); chunks merge their histograms
CALIBRATION_CHUNK = 32


def calibration_chunk(n: int, most: int = CALIBRATION_CHUNK) -> int:
    """The largest chunk <= most that divides n (onnxruntime requires it)."""
    return next(k for k in range(min(most, n), 0, -1) if n % k == 0)


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod
    return {'minmax': CalibrationMethod.MinMax, 'entropy': CalibrationMethod.Entropy,
            'percentile': CalibrationMethod.Percentile}[name]


_HEAD_TAIL_OPS = ('Sigmoid', 'Relu', 'Mul', 'Div', 'Add', 'Exp')


def output_head_nodes(fp32_path, skip=('embedding',)) -> list[str]:
    """Names of the nodes that make the graph's outputs (each output's last Conv and the
    element-wise ops after it: a Sigmoid, a Relu and scale), but not those of `skip`: the small 1x1
    output layers, which mixed-precision deployments keep in float (their outputs are scores and
    box regressions read at a few peaks)."""
    import onnx
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    names = []
    for out in graph.output:
        node = producer.get(out.name)
        if out.name in skip:
            continue
        while node is not None and node.op_type in _HEAD_TAIL_OPS:
            names.append(node.name)
            node = producer.get(node.input[0])
        if node is not None and node.op_type == 'Conv':
            names.append(node.name)
    return names


def quantize_variant(fp32_path, out_path, variant: str, method: str, canvases, cache_path=None,
                     input_name: str = 'bev', float_nodes=()):
    """One QDQ variant (int8_trt or int8_cpu) calibrated with `method` on canvases; float_nodes are
    left unquantised. The ranges are cached in cache_path (JSON), shared by the two variants of one
    method."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    if variant == 'int8_trt':
        kwargs = dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                      extra_options={'ActivationSymmetric': True, 'WeightSymmetric': True, 'QuantizeBias': False})
    elif variant == 'int8_cpu':
        kwargs = dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                      extra_options={'ActivationSymmetric': False, 'WeightSymmetric': True})
    else:
        raise ValueError(f'unknown INT8 variant {variant!r}')
    if method == 'percentile':
        kwargs['extra_options'].update({'CalibPercentile': 99.99})
    # onnxruntime's option is named for min-max but makes every calibrator collect chunk by chunk
    kwargs['extra_options']['CalibStridedMinMax'] = calibration_chunk(len(canvases))
    quantize_static(str(_preprocessed(fp32_path)), str(out_path), CanvasReader(canvases, input_name), quant_format=QuantFormat.QDQ,
                    per_channel=True, calibrate_method=_method(method), nodes_to_exclude=list(float_nodes),
                    calibration_cache_path=None if cache_path is None else str(cache_path), **kwargs)


def onnx_transposed_to_pixel_shuffle(model) -> int:
    """transposed_to_pixel_shuffle on an ONNX graph, in place: every ConvTranspose whose kernel equals
    its stride (no padding, groups or dilation) becomes a 1x1 Conv to C_out * s^2 channels and a
    DepthToSpace (mode CRD, PyTorch's PixelShuffle); a Relu that is the transposed conv's only reader
    moves before the shuffle, so conv + ReLU quantize as one INT8 conv. For graphs exported without
    the torch pass (a user's model, or one exported before it): ONNX Runtime's CPU provider has no INT8
    ConvTranspose, and the float one with its layout changes was 13 % of the camera's INT8 time.
    Returns the number of transposed convs rewritten."""
    import onnx
    from onnx import helper, numpy_helper
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != 'ConvTranspose' or node.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = numpy_helper.to_array(inits[node.input[1]])             # (C_in, C_out, s, s)
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            continue
        s = int(w.shape[2])
        if (list(attrs.get('kernel_shape', [s, s])) != [s, s] or list(attrs.get('strides', [1, 1])) != [s, s]
                or any(attrs.get('pads', [0, 0, 0, 0])) or any(attrs.get('output_padding', [0, 0]))
                or attrs.get('group', 1) != 1 or any(d != 1 for d in attrs.get('dilations', [1, 1]))
                or 'output_shape' in attrs or attrs.get('auto_pad', b'NOTSET') not in (b'NOTSET', 'NOTSET')):
            continue
        c_in, c_out = w.shape[0], w.shape[1]
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in inits:
                continue
            b = numpy_helper.to_array(inits[node.input[2]])
        else:
            b = np.zeros(c_out, w.dtype)
        prefix = node.name or node.output[0]
        w_name, b_name = f'{prefix}/pixel_shuffle_weight', f'{prefix}/pixel_shuffle_bias'
        graph.initializer.extend([
            numpy_helper.from_array(w.transpose(1, 2, 3, 0).reshape(c_out * s * s, c_in, 1, 1).copy(), w_name),
            numpy_helper.from_array(np.repeat(b, s * s).astype(w.dtype), b_name)])
        conv_out = f'{prefix}/pixel_shuffle_conv'
        conv = helper.make_node('Conv', [node.input[0], w_name, b_name], [conv_out], name=f'{prefix}/pixel_shuffle_conv',
                                kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0])
        after = readers.get(node.output[0], [])
        new = [conv]
        shuffle_in = conv_out
        if len(after) == 1 and after[0].op_type == 'Relu' and node.output[0] not in graph_outputs:
            relu = after[0]
            new.append(helper.make_node('Relu', [conv_out], [f'{prefix}/pixel_shuffle_relu'],
                                        name=f'{prefix}/pixel_shuffle_relu'))
            shuffle_in, final = f'{prefix}/pixel_shuffle_relu', relu.output[0]
            graph.node.remove(relu)
        else:
            final = node.output[0]
        new.append(helper.make_node('DepthToSpace', [shuffle_in], [final], name=f'{prefix}/pixel_shuffle',
                                    blocksize=s, mode='CRD'))
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for k, n in enumerate(new):
            graph.node.insert(at + k, n)
        rewritten += 1
    if rewritten:
        used = {name for n in graph.node for name in n.input}
        for t in [t for t in graph.initializer if t.name not in used]:
            graph.initializer.remove(t)
        onnx.checker.check_model(model)
    return rewritten


PREPROCESS_VERSION = 2     # 2: transposed convs as 1x1 conv + DepthToSpace (onnx_transposed_to_pixel_shuffle)


def _preprocessed(fp32_path) -> Path:
    """The graph that is quantized: onnxruntime's recommended pre-processing (shape inference, graph
    clean-up) of the fp32 graph, and its transposed convs as 1x1 conv + pixel shuffle
    (onnx_transposed_to_pixel_shuffle: exact), into the temp directory (keyed by the graph's sha256
    and PREPROCESS_VERSION; not a card file). Calibration range caches are keyed by its name."""
    import tempfile

    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process
    out = Path(tempfile.gettempdir()) / f'fmdrive_quant_pre{PREPROCESS_VERSION}_{sha256(fp32_path)[:16]}.onnx'
    if not out.is_file():
        model = onnx.load(str(fp32_path))
        if onnx_transposed_to_pixel_shuffle(model):
            tmp = out.with_suffix('.in.onnx')
            onnx.save(model, str(tmp))
            quant_pre_process(str(tmp), str(out), skip_symbolic_shape=True)
            tmp.unlink()
        else:       # nothing to rewrite: the file itself, as before (the same quantized bytes)
            quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
    return out


def ranges_cache_name(method: str, fp32_path, n: int) -> str:
    """The calibration range cache of one method for one quantized graph (_preprocessed) and frame count."""
    return f'ranges_{method}_{_preprocessed(fp32_path).stem[len("fmdrive_quant_"):]}_{n}.json'


def ort_session(path, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])


def ort_outputs(session, canvases) -> list[dict]:
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    return [dict(zip(names, session.run(None, {input_name: np.asarray(canvases[i:i + 1], np.float32)})))
            for i in range(len(canvases))]


def ap_of_outputs(outputs: list[dict], frames, card) -> dict:
    from fmdrive.inference.decoders import decode_fmdrive_centerpoint
    from fmdrive.training.lidar_data import score_detections
    return score_detections([decode_fmdrive_centerpoint(o, card) for o in outputs], frames)


def output_cosine(a: list[dict], b: list[dict],
                  names=('heatmap', 'offset', 'z', 'size', 'rot', 'rot_axis', 'embedding')) -> float:
    """Cosine similarity of all outputs both frames have (concatenated, per frame), averaged over frames."""
    cos = []
    for x, y in zip(a, b):
        present = [n for n in names if n in x and n in y]
        u = np.concatenate([x[n].ravel() for n in present]).astype(np.float64)
        v = np.concatenate([y[n].ravel() for n in present]).astype(np.float64)
        cos.append(float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12)))
    return float(np.mean(cos))


def sha256(path) -> str:
    from fmdrive.inference.card import sha256_of
    return sha256_of(Path(path))


# ------------------------------------------------------------------------------------ the pipeline
def export_lidar(checkpoint, out_dir, data_dir, log=print) -> dict:
    """fp32.onnx + a card with only the fp32 variant (quantize_lidar adds the INT8 ones)."""
    import torch

    from fmdrive.training.lidar_data import split_canvases
    from fmdrive.training.train_lidar import load_model
    ck = torch.load(checkpoint, weights_only=False, map_location='cpu')
    model = load_model(checkpoint)
    model.heads.normalize_embedding = False      # the decoder normalises at the peaks (lidar_model.py)
    cfg = model.cfg
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, canvases = split_canvases(data_dir, 'val', cfg.bev_grid(), progress=False)
    sample = np.asarray(canvases[:1], np.float32)
    diff = export_onnx(model, out_dir / 'fp32.onnx', sample.shape, OPSET, sample, log)
    tc = ck.get('train_config', {})
    decoder, tuning = tune_decoder(out_dir / 'fp32.onnx', cfg, frames[::2], canvases[::2], log)
    card = card_dict(cfg, {'fp32': ('fp32.onnx', sha256(out_dir / 'fp32.onnx'))}, decoder=decoder,
                     training=_training_section(tc), metrics={'export_max_abs_diff': max(diff.values()),
                                                              'val_decoder_tuning': tuning})
    write_card(card, out_dir)
    return {'max_abs_diff': diff, 'card': str(out_dir / 'card.yaml')}


def tune_decoder(onnx_path, cfg, frames, canvases, log=print) -> tuple[dict, dict]:
    """The decoder parameters (score threshold, circle NMS distance) with the best val mAP; the
    threshold stays >= 0.2 so the tracker is not fed a cloud of low-score boxes."""
    from fmdrive.inference.card import parse_card
    outputs = ort_outputs(ort_session(onnx_path), canvases)
    results, best = {}, None
    for threshold in (0.2, 0.3):
        for nms in (0.0, 1.0):
            decoder = {**DECODER, 'score_threshold': threshold, 'circle_nms_dist_m': nms}
            card = parse_card(card_dict(cfg, decoder=decoder), Path(onnx_path).parent / 'card.yaml')
            m = _map(ap_of_outputs(outputs, frames, card))
            results[f'threshold {threshold} circle_nms {nms}'] = m
            if best is None or m > best[0]:
                best = (m, decoder)
    log('decoder tuning on val (mAP): ' + ', '.join(f'{k}: {v}' for k, v in results.items()))
    return best[1], results


def dataset_command(data_dir) -> str:
    """The `fmdrive train dataset` command that wrote data_dir (from its dataset.json)."""
    meta_path = Path(data_dir) / 'dataset.json'
    if not meta_path.is_file():
        return f'fmdrive train dataset --out {data_dir} (no dataset.json found: sizes unknown)'
    meta = json.loads(meta_path.read_text())
    splits = meta.get('splits', {})
    return (f"fmdrive train dataset --out {data_dir} --scenes {splits.get('train')} "
            f"--val-scenes {splits.get('val')} --test-scenes {splits.get('test')}"
            + ('' if meta.get('camera', True) else ' --no-camera'))


def training_command(tc: dict) -> str:
    """The `fmdrive train lidar` command of a run's train_config (a second stage: both, joined by &&)."""
    data, out = tc.get('data', 'runs/dataset'), tc.get('out', 'runs/lidar')
    cmd = (f"fmdrive train lidar --data {data} --out {out} "
           f"--epochs {tc.get('epochs')} --seed {tc.get('seed')} --patience {tc.get('patience')} "
           f"--max-minutes {tc.get('max_minutes')} --gt-paste {tc.get('gt_paste', 0.0)} "
           f"--rotate-deg {tc.get('rotate_deg', 0.0)} --quarter-turns {tc.get('quarter_turns', 0.0)} "
           f"--rot-loss {tc.get('rot_loss', 'l1')} --crossing-weight {tc.get('crossing_weight', 1.0)} "
           f"--lr {tc.get('lr')} --crop-rows {tc.get('crop_rows')} --axis-head {int(bool(tc.get('axis_head', False)))}"
           f" --axis-crossing-weight {tc.get('axis_crossing_weight', 1.0)}")
    if tc.get('bev_features'):
        cmd += f" --bev-features {','.join(tc['bev_features'])}"
    if tc.get('qat'):
        cmd += f" --qat --qat-calib-frames {tc.get('qat_calib_frames')}"
    if tc.get('init'):
        cmd = f"{tc.get('init_command') or '(first stage unknown)'} && {cmd} --init {tc.get('init')}"
    return cmd


def _training_section(tc: dict) -> dict:
    from fmdrive.training.dataset import SPLIT_SEEDS
    data, out = tc.get('data', 'runs/dataset'), tc.get('out', 'runs/lidar')
    cmd = training_command(tc)
    return {'command': cmd, 'data_seed': SPLIT_SEEDS['train'],
            'data': dataset_command(data) + f" (train split seeds {SPLIT_SEEDS['train']}, val {SPLIT_SEEDS['val']}, "
                    f"test {SPLIT_SEEDS['test']}; domain-randomised, see fmdrive/training/dataset.py)",
            'notes': f'export: fmdrive export lidar --checkpoint {out}/best.pt --data {data} --out '
                     f'engines/lidar_centerpoint; INT8: fmdrive quantize lidar --model-dir engines/lidar_centerpoint '
                     f'--data {data}'}


def quantize_lidar(model_dir, data_dir, calib_frames: int = 256, methods=CALIBRATION_METHODS, val_every: int = 2,
                   log=print) -> dict:
    """Both INT8 variants for each calibration method; the best method by val AP (int8_cpu, the
    variant this machine runs) is kept; the card gets files, calibration and metrics."""
    import shutil

    import yaml

    from fmdrive.inference.card import parse_card
    from fmdrive.training.lidar_data import split_canvases
    from fmdrive.training.lidar_model import LidarConfig
    model_dir = Path(model_dir)
    card_path = model_dir / 'card.yaml'
    card_yaml = yaml.safe_load(card_path.read_text())
    card = parse_card(card_yaml, card_path)
    g = card.bev_grid
    cfg = LidarConfig(x_range_m=g.x_range_m, y_range_m=g.y_range_m, z_range_m=g.z_range_m, voxel_m=g.voxel_size_m[0],
                      output_stride=g.output_stride, bev_features=g.bev_features, classes=card.classes)
    train_frames, train_canvases = split_canvases(data_dir, 'train', cfg.bev_grid(), progress=False)
    # calibration: evenly spaced train frames (every scene, every part of a drive), never random tensors
    pick = np.linspace(0, len(train_canvases) - 1, min(calib_frames, len(train_canvases))).round().astype(int)
    calib = np.asarray(train_canvases[pick], np.float32)
    val_frames, val_canvases = split_canvases(data_dir, 'val', cfg.bev_grid(), progress=False)
    val_frames, val_canvases = val_frames[::val_every], val_canvases[::val_every]
    fp32 = ort_outputs(ort_session(model_dir / 'fp32.onnx'), val_canvases)
    ap_fp32 = ap_of_outputs(fp32, val_frames, card)
    work = Path(data_dir) / 'cache' / 'quantize'
    work.mkdir(parents=True, exist_ok=True)
    comparison = {}
    heads = output_head_nodes(model_dir / 'fp32.onnx')

    def run(method: str, float_nodes=(), tag: str = '') -> dict:
        t0 = time.perf_counter()
        cache = work / ranges_cache_name(method, model_dir / 'fp32.onnx', len(calib))
        row = {}
        for variant in ('int8_cpu', 'int8_trt'):
            path = work / f'{variant}_{method}{tag}.onnx'
            quantize_variant(model_dir / 'fp32.onnx', path, variant, method, calib, cache, float_nodes=float_nodes)
            outs = ort_outputs(ort_session(path), val_canvases)
            ap = ap_of_outputs(outs, val_frames, card)
            row[variant] = {'car_ap50': ap['car_bev_ap50'], 'map': _map(ap), 'cosine': round(output_cosine(outs, fp32), 5)}
        row['seconds'] = round(time.perf_counter() - t0, 1)
        log(f'calibration {method + tag:18s}: ' + '  '.join(
            f'{v} car AP {row[v]["car_ap50"]} mAP {row[v]["map"]} cosine {row[v]["cosine"]}'
            for v in ('int8_cpu', 'int8_trt')) + f'  ({row["seconds"]} s)')
        return row

    for method in methods:
        comparison[method] = run(method)
    best = max(comparison, key=lambda m: (comparison[m]['int8_cpu']['map'], comparison[m]['int8_trt']['map']))
    # each variant keeps the method its own val mAP prefers: the symmetric S8 activations of int8_trt
    # (TensorRT's) and the U8 ones of int8_cpu lose precision in different places
    kept = {'int8_cpu': best, 'int8_trt': max(methods, key=lambda m: comparison[m]['int8_trt']['map'])}
    # then the best method with the output heads in float (mixed precision), kept if val says it pays
    float_nodes, tag = [], ''
    if heads:
        key = f'{best}+float_heads'
        comparison[key] = {**run(best, heads, '_float_heads'), 'float_nodes': heads}
        if comparison[key]['int8_cpu']['map'] >= comparison[best]['int8_cpu']['map'] + FLOAT_HEADS_MIN_GAIN:
            float_nodes, tag = heads, '_float_heads'
            kept = {v: best for v in kept}          # the float-head files exist for this method only
    log(f'val fp32: car AP {ap_fp32["car_bev_ap50"]} mAP {_map(ap_fp32)}; kept calibration method: '
        + ', '.join(f'{v} {m}' for v, m in kept.items())
        + (f' with {len(float_nodes)} output-head nodes in float' if float_nodes else ''))
    for variant in ('int8_cpu', 'int8_trt'):
        shutil.copyfile(work / f'{variant}_{kept[variant]}{tag}.onnx', model_dir / f'{variant}.onnx')
    card_yaml['files'] = {v: {'model': {'path': f'{v}.onnx', 'sha256': sha256(model_dir / f'{v}.onnx')}}
                          for v in ('fp32', 'int8_trt', 'int8_cpu')}
    card_yaml['calibration'] = {
        'source': f'{len(calib)} evenly spaced frames of the train split of {Path(data_dir).name} '
                  f'(fmdrive train dataset, train seed 101; BEV canvases from pillars.bev_canvas)',
        'count': int(len(calib)), 'method': best, 'variant_methods': dict(kept)}
    if float_nodes:
        card_yaml['calibration']['float_nodes'] = list(float_nodes)
    metrics = dict(card_yaml.get('metrics', {}))
    metrics.update({'val_ap_fp32': ap_fp32['ap'], 'val_map_fp32': _map(ap_fp32), 'calibration_comparison': comparison})
    card_yaml['metrics'] = metrics
    write_card(card_yaml, model_dir)
    return {'best_method': best, 'variant_methods': kept, 'float_nodes': list(float_nodes), 'comparison': comparison,
            'val_fp32': ap_fp32}


def _map(ap: dict) -> float:
    vals = [v for v in ap['ap'].values() if v is not None]
    return round(float(np.mean(vals)), 4) if vals else 0.0


def record_test_metrics(model_dir, metrics: dict):
    """Write measured test figures (from `fmdrive bench lidar`) into the card and refresh nothing else."""
    import yaml
    path = Path(model_dir) / 'card.yaml'
    card_yaml = yaml.safe_load(path.read_text())
    card_yaml['metrics'] = {**card_yaml.get('metrics', {}), **metrics}
    write_card(card_yaml, model_dir)


def dump(obj) -> str:
    return json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, 'tolist') else str(o))

