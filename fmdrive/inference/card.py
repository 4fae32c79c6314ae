"""Model cards: `engines/<model>/card.yaml` says everything needed to load, feed and trust a model.

A card names the model's networks (one ONNX graph, or two for Autoware's CenterPoint), their
input/output tensors (name, shape, dtype, image normalisation), the classes, the ONNX files of
each precision variant with their sha256, how the INT8 variant was calibrated, how the model was
trained and what it scored. `load_card` refuses a card whose files, hashes, tensor names, shapes,
dtypes or opset disagree with its ONNX graphs, with one line naming the card and the field
(CardError), so a mismatched model never reaches a backend. docs/model_cards.md has the schema.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TASKS = ('camera_detector', 'lidar_detector', 'causal_lm')
# io_convention -> (task, networks in the order they run)
IO_CONVENTIONS = {
    'fmdrive_centernet': ('camera_detector', ('model',)),
    'yolox': ('camera_detector', ('model',)),
    'fmdrive_centerpoint': ('lidar_detector', ('model',)),
    'autoware_centerpoint': ('lidar_detector', ('encoder', 'head')),
    'hf_causal_lm_with_past': ('causal_lm', ('model',)),
}
# file variants a card may list; fp16 plans are built from fp32 ONNX, so fp16 files are optional
FILE_VARIANTS = ('fp32', 'fp16', 'int8_trt', 'int8_cpu')
DTYPES = ('float32', 'float16', 'int8', 'uint8', 'int32', 'int64', 'bool')
CALIBRATION_METHODS = ('entropy', 'minmax', 'percentile')
# 'dynamic': onnxruntime dynamic quantization (int8 weights, activation ranges taken per call), no
# calibration data; an int8_cpu variant only (TensorRT needs QDQ)
DYNAMIC_QUANTIZATION = 'dynamic'
CHANNEL_ORDERS = ('rgb', 'bgr')
LETTERBOX_ALIGNS = ('center', 'top_left')
# per-pillar features the fmdrive BEV input can carry (fmdrive/inference/pillars.py computes them)
BEV_FEATURES = ('count', 'log_count', 'z_max', 'z_min', 'z_mean', 'intensity_mean', 'intensity_max',
                'x_offset_mean', 'y_offset_mean')


class CardError(ValueError):
    """A model card that cannot be trusted: missing or unknown field, bad value, or files that
    disagree with it. The message is one line naming the card and the field."""


@dataclass(frozen=True)
class Letterbox:
    """Resize keeping the aspect ratio, pad the rest with pad_value (center: equal borders;
    top_left: image at the origin, as YOLOX does)."""
    pad_value: float = 114.0
    align: str = 'center'


@dataclass(frozen=True)
class Normalisation:
    """How an image becomes this input: channels in channel_order, tensor = (pixel*scale - mean)/std."""
    scale: float = 1.0
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    channel_order: str = 'rgb'
    letterbox: Letterbox | None = None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple            # ints, or str for a dynamic dimension (its name)
    dtype: str
    normalisation: Normalisation | None = None

    @property
    def static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    inputs: tuple           # TensorSpec
    outputs: tuple          # TensorSpec

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


@dataclass(frozen=True)
class FileSpec:
    path: Path              # absolute
    sha256: str


@dataclass(frozen=True)
class BevGrid:
    """The LiDAR grid: points in [x_range, y_range, z_range) go to pillars of voxel_size; heads run
    at output_stride cells per output cell. Row index = y cell, column index = x cell."""
    x_range_m: tuple
    y_range_m: tuple
    z_range_m: tuple
    voxel_size_m: tuple
    output_stride: int = 1
    max_pillars: int = 40000
    max_points_per_pillar: int = 32
    bev_features: tuple = ()    # fmdrive_centerpoint input channels, in order

    @property
    def nx(self) -> int:
        return round((self.x_range_m[1] - self.x_range_m[0]) / self.voxel_size_m[0])

    @property
    def ny(self) -> int:
        return round((self.y_range_m[1] - self.y_range_m[0]) / self.voxel_size_m[1])


@dataclass
class ModelCard:
    path: Path                          # the card.yaml
    name: str
    version: str
    task: str
    io_convention: str
    opset: int
    classes: tuple
    networks: dict                      # network name -> NetworkSpec, in run order
    files: dict                         # variant -> {network name -> FileSpec}
    class_map: dict = field(default_factory=dict)   # model class -> fmdrive label
    bev_grid: BevGrid | None = None
    decoder: dict = field(default_factory=dict)     # convention parameters (thresholds, strides...)
    calibration: dict | None = None     # frames (FileSpec), count, source, method, cache (Path)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def file(self, variant: str, network: str = 'model') -> FileSpec:
        if variant not in self.files:
            raise CardError(f'card {self.path}: files.{variant}: this model has no {variant} variant '
                            f'(it has {", ".join(self.files)})')
        return self.files[variant][network]

    def label(self, class_index: int) -> str:
        """The fmdrive label of a model class (class_map, else the class name if fmdrive knows it)."""
        from fmdrive.config import CLASSES, UNKNOWN
        if not 0 <= class_index < len(self.classes):
            return UNKNOWN
        name = self.classes[class_index]
        if name in self.class_map:
            return self.class_map[name]
        return name if name in CLASSES else UNKNOWN


# ------------------------------------------------------------------------------------------ parsing
class _Reader:
    """Reads one mapping of the card, reporting every problem as `card PATH: FIELD: what`."""

    def __init__(self, card_path: Path, where: str, data):
        self.card_path, self.where = card_path, where
        if not isinstance(data, dict):
            self.fail(f'must be a mapping, got {type(data).__name__}')
        self.data = data

    def fail(self, message: str, key: str | None = None):
        where = f'{self.where}.{key}' if key and self.where else (key or self.where or '(top level)')
        raise CardError(f'card {self.card_path}: {where}: {message}')

    def check_keys(self, known):
        for key in self.data:
            if key not in known:
                self.fail(f'unknown key; known keys: {", ".join(known)}', str(key))

    def child(self, key: str, required: bool = True):
        if key not in self.data:
            if required:
                self.fail('missing', key)
            return None
        return _Reader(self.card_path, f'{self.where}.{key}' if self.where else key, self.data[key])

    def get(self, key, kind, default=..., choices=None):
        if key not in self.data:
            if default is ...:
                self.fail('missing', key)
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(f'must be {getattr(kind, "__name__", kind)}, got {value!r}', key)
        if choices is not None and value not in choices:
            self.fail(f'{value!r} is not one of {", ".join(map(str, choices))}', key)
        return value

    def numbers(self, key, length=None, default=..., positive=False):
        value = self.get(key, (list, tuple), default)
        if value is default:
            return value
        if length is not None and len(value) != length:
            self.fail(f'must have {length} numbers, got {len(value)}', key)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in value):
            self.fail(f'must be numbers, got {value!r}', key)
        if positive and not all(v > 0 for v in value):
            self.fail(f'must be > 0, got {value!r}', key)
        return tuple(float(v) for v in value)


def _normalisation(r: _Reader) -> Normalisation:
    r.check_keys(('scale', 'mean', 'std', 'channel_order', 'letterbox'))
    mean = r.numbers('mean', default=(0.0, 0.0, 0.0))
    std = r.numbers('std', len(mean), default=(1.0,) * len(mean), positive=True)
    letterbox = None
    lb = r.child('letterbox', required=False)
    if lb is not None and lb.data is not False:
        lb.check_keys(('pad_value', 'align'))
        letterbox = Letterbox(lb.get('pad_value', float, 114.0), lb.get('align', str, 'center', LETTERBOX_ALIGNS))
    scale = r.get('scale', float, 1.0)
    if not scale > 0:
        r.fail(f'must be > 0, got {scale}', 'scale')
    return Normalisation(scale, mean, std, r.get('channel_order', str, 'rgb', CHANNEL_ORDERS), letterbox)


def _tensor(r: _Reader) -> TensorSpec:
    r.check_keys(('name', 'shape', 'dtype', 'normalisation'))
    name = r.get('name', str)
    shape = r.get('shape', list)
    for d in shape:
        if not ((isinstance(d, int) and not isinstance(d, bool) and d > 0) or (isinstance(d, str) and d)):
            r.fail(f'dimensions must be positive integers or names of dynamic dimensions, got {shape}', 'shape')
    norm = r.child('normalisation', required=False)
    return TensorSpec(name, tuple(shape), r.get('dtype', str, choices=DTYPES),
                      None if norm is None else _normalisation(norm))


def _network(r: _Reader, name: str) -> NetworkSpec:
    r.check_keys(('inputs', 'outputs'))
    tensors = {}
    for kind in ('inputs', 'outputs'):
        items = r.get(kind, list)
        if not items:
            r.fail('must list at least one tensor', kind)
        tensors[kind] = tuple(_tensor(_Reader(r.card_path, f'{r.where}.{kind}[{i}]', t)) for i, t in enumerate(items))
        names = [t.name for t in tensors[kind]]
        if len(set(names)) != len(names):
            r.fail(f'tensor names repeat: {names}', kind)
    return NetworkSpec(name, tensors['inputs'], tensors['outputs'])


def _file(r: _Reader, directory: Path) -> FileSpec:
    r.check_keys(('path', 'sha256'))
    sha = r.get('sha256', str).lower()
    if len(sha) != 64 or any(c not in '0123456789abcdef' for c in sha):
        r.fail(f'must be 64 hex digits, got {sha!r}', 'sha256')
    path = Path(r.get('path', str))
    return FileSpec(path if path.is_absolute() else directory / path, sha)


def _bev_grid(r: _Reader) -> BevGrid:
    r.check_keys(('x_range_m', 'y_range_m', 'z_range_m', 'voxel_size_m', 'output_stride', 'max_pillars',
                  'max_points_per_pillar', 'bev_features'))
    ranges = {k: r.numbers(k, 2) for k in ('x_range_m', 'y_range_m', 'z_range_m')}
    for k, (lo, hi) in ranges.items():
        if not hi > lo:
            r.fail(f'must be [min, max] with max > min, got {[lo, hi]}', k)
    features = r.get('bev_features', list, [])
    for f in features:
        if f not in BEV_FEATURES:
            r.fail(f'{f!r} is not one of {", ".join(BEV_FEATURES)}', 'bev_features')
    grid = BevGrid(ranges['x_range_m'], ranges['y_range_m'], ranges['z_range_m'],
                   r.numbers('voxel_size_m', 3, positive=True), r.get('output_stride', int, 1),
                   r.get('max_pillars', int, 40000), r.get('max_points_per_pillar', int, 32), tuple(features))
    for axis, n_range in (('x', ranges['x_range_m']), ('y', ranges['y_range_m'])):
        cells = (n_range[1] - n_range[0]) / grid.voxel_size_m['xy'.index(axis)]
        if abs(cells - round(cells)) > 1e-6:
            r.fail(f'{axis}_range_m is not a whole number of voxels ({cells:g})', 'voxel_size_m')
    if grid.output_stride < 1 or grid.nx % grid.output_stride or grid.ny % grid.output_stride:
        r.fail(f'must be >= 1 and divide the grid ({grid.ny} x {grid.nx} cells)', 'output_stride')
    if grid.max_pillars < 1 or grid.max_points_per_pillar < 1:
        r.fail('max_pillars and max_points_per_pillar must be >= 1', 'max_pillars')
    return grid


TOP_KEYS = ('name', 'version', 'task', 'io_convention', 'opset', 'classes', 'class_map', 'networks', 'files',
            'bev_grid', 'decoder', 'calibration', 'training', 'metrics')


def parse_card(data, card_path: Path) -> ModelCard:
    """A ModelCard from the card's YAML mapping; checks the card alone (see load_card for files)."""
    card_path = Path(card_path)
    r = _Reader(card_path, '', data)
    r.check_keys(TOP_KEYS)
    convention = r.get('io_convention', str, choices=tuple(IO_CONVENTIONS))
    task = r.get('task', str, choices=TASKS)
    expected_task, network_names = IO_CONVENTIONS[convention]
    if task != expected_task:
        r.fail(f'io_convention {convention} is a {expected_task}, not a {task}', 'task')
    version = r.get('version', (str, int, float))
    opset = r.get('opset', int)
    if not 7 <= opset <= 30:
        r.fail(f'must be an ONNX opset between 7 and 30, got {opset}', 'opset')
    classes = r.get('classes', list, [])
    if task != 'causal_lm' and (not classes or not all(isinstance(c, str) and c for c in classes)):
        r.fail('must list the class names, in the order of the heatmap/score channels', 'classes')
    class_map = r.get('class_map', dict, {})
    from fmdrive.config import CLASSES, UNKNOWN
    for k, v in class_map.items():
        if k not in classes:
            r.fail(f'{k!r} is not one of classes', 'class_map')
        if v not in CLASSES + (UNKNOWN,):
            r.fail(f'{k}: {v!r} is not an fmdrive label ({", ".join(CLASSES + (UNKNOWN,))})', 'class_map')

    nets_r = r.child('networks')
    nets_r.check_keys(network_names)
    networks = {}
    for name in network_names:
        networks[name] = _network(nets_r.child(name), name)

    files_r = r.child('files')
    files_r.check_keys(FILE_VARIANTS)
    if 'fp32' not in files_r.data:
        files_r.fail('missing (every model needs its fp32 ONNX)', 'fp32')
    files = {}
    for variant in files_r.data:
        vr = files_r.child(variant)
        vr.check_keys(network_names)
        files[variant] = {n: _file(vr.child(n), card_path.parent) for n in network_names}

    grid = None
    if task == 'lidar_detector':
        grid = _bev_grid(r.child('bev_grid'))
        if convention == 'fmdrive_centerpoint' and not grid.bev_features:
            r.fail(f'fmdrive_centerpoint needs the input channels, from {", ".join(BEV_FEATURES)}',
                   'bev_grid.bev_features')
    elif 'bev_grid' in r.data:
        r.fail('only a lidar_detector has a BEV grid', 'bev_grid')

    calibration = None
    cal = r.child('calibration', required=False)
    if cal is not None:
        cal.check_keys(('frames', 'count', 'source', 'method', 'cache', 'float_nodes', 'variant_methods'))
        calibration = {'frames': _file(cal.child('frames'), card_path.parent) if 'frames' in cal.data else None,
                       'count': cal.get('count', int), 'source': cal.get('source', str),
                       'method': cal.get('method', str, choices=CALIBRATION_METHODS + (DYNAMIC_QUANTIZATION,)),
                       'cache': card_path.parent / cal.get('cache', str, 'calibration.cache'),
                       'float_nodes': cal.get('float_nodes', list, []),
                       'variant_methods': cal.get('variant_methods', dict, {})}
        for variant, method in calibration['variant_methods'].items():
            if variant not in ('int8_trt', 'int8_cpu') or method not in CALIBRATION_METHODS:
                cal.fail(f'maps int8_trt / int8_cpu to one of {", ".join(CALIBRATION_METHODS)} (the method that '
                         f'calibrated that file), got {variant}: {method}', 'variant_methods')
        if not all(isinstance(n, str) for n in calibration['float_nodes']):
            cal.fail(f'must be node names (strings), got {calibration["float_nodes"]!r}', 'float_nodes')
        dynamic = calibration['method'] == DYNAMIC_QUANTIZATION
        if calibration['count'] < (0 if dynamic else 1):
            cal.fail('must be >= 1', 'count')
        if dynamic and 'int8_trt' in r.get('files', dict):
            cal.fail('dynamic quantization is for int8_cpu only (TensorRT needs a QDQ int8_trt)', 'method')
    if ('int8_trt' in files or 'int8_cpu' in files) and calibration is None:
        r.fail('an INT8 variant needs calibration: frames, count, source, method', 'calibration')

    training = {}
    tr = r.child('training', required=False)
    if tr is not None:
        tr.check_keys(('command', 'data_seed', 'data', 'notes'))
        training = {'command': tr.get('command', str), 'data_seed': tr.get('data_seed', int)}
        training.update({k: tr.data[k] for k in ('data', 'notes') if k in tr.data})
    metrics = r.get('metrics', dict, {})
    decoder = r.get('decoder', dict, {})
    return ModelCard(card_path, r.get('name', str), str(version), task, convention, opset, tuple(classes),
                     networks, files, dict(class_map), grid, dict(decoder), calibration, training, dict(metrics))


# ---------------------------------------------------------------------------------------- checking
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _fail(card: ModelCard, where: str, message: str):
    raise CardError(f'card {card.path}: {where}: {message}')


def check_file(card: ModelCard, variant: str, network: str) -> FileSpec:
    """The file exists and its sha256 is the card's."""
    spec = card.files[variant][network]
    where = f'files.{variant}.{network}'
    if not spec.path.is_file():
        _fail(card, f'{where}.path', f'{spec.path} does not exist')
    actual = sha256_of(spec.path)
    if actual != spec.sha256:
        _fail(card, f'{where}.sha256', f'{spec.path.name} has sha256 {actual[:12]}..., the card says '
              f'{spec.sha256[:12]}... (a different or changed file: re-export it or fix the card)')
    return spec


ORT_TYPES = {'tensor(float)': 'float32', 'tensor(float16)': 'float16', 'tensor(int8)': 'int8',
             'tensor(uint8)': 'uint8', 'tensor(int32)': 'int32', 'tensor(int64)': 'int64', 'tensor(bool)': 'bool'}


def _ort_signature(path: Path) -> tuple[dict, dict, None]:
    """The same from onnxruntime's session metadata, for a vehicle without the onnx package (the
    opset is not in that metadata: None, not checked)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])

    def describe(values):
        return {v.name: (tuple(d if isinstance(d, int) else (d or '?') for d in v.shape),
                         ORT_TYPES.get(v.type, v.type)) for v in values}
    return describe(session.get_inputs()), describe(session.get_outputs()), None


def onnx_signature(path: Path) -> tuple[dict, dict, int | None]:
    """(inputs, outputs, opset) of an ONNX graph: name -> (shape with ints or dim names, dtype)."""
    try:
        import onnx
        from onnx import helper
    except ImportError:
        return _ort_signature(path)
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def describe(values):
        out = {}
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            shape = tuple(d.dim_value if d.HasField('dim_value') else (d.dim_param or '?') for d in t.shape.dim)
            out[v.name] = (shape, str(helper.tensor_dtype_to_np_dtype(t.elem_type)))
        return out

    opset = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), 0)
    return describe(model.graph.input), describe(model.graph.output), opset


def check_quantization(card: ModelCard, variant: str, network: str):
    """An int8 variant is a QDQ graph; int8_trt's is symmetric (every zero point 0), which TensorRT's
    explicit quantization needs. Skipped where the onnx package is absent."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return
    spec = card.files[variant][network]
    graph = onnx.load(str(spec.path), load_external_data=False).graph
    if (card.calibration or {}).get('method') == DYNAMIC_QUANTIZATION:
        if not any(n.op_type in ('DynamicQuantizeLinear', 'MatMulInteger', 'DynamicQuantizeMatMul')
                   for n in graph.node):
            _fail(card, f'files.{variant}.{network}', f'{spec.path.name} has no dynamically quantized '
                  'MatMul: the card says calibration.method dynamic (onnxruntime quantize_dynamic)')
        return
    quantize = [n for n in graph.node if n.op_type == 'QuantizeLinear']
    if not quantize or not any(n.op_type == 'DequantizeLinear' for n in graph.node):
        _fail(card, f'files.{variant}.{network}', f'{spec.path.name} has no QuantizeLinear/DequantizeLinear '
              'nodes: an int8 variant must be a QDQ model (onnxruntime.quantization, QuantFormat.QDQ)')
    if variant == 'int8_trt':
        constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for n in graph.node:
            if n.op_type == 'Constant' and n.attribute:
                constants[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        for n in quantize:
            zero = constants.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if zero is not None and (zero.dtype != 'int8' or zero.any()):
                _fail(card, f'files.{variant}.{network}', f'{spec.path.name}: TensorRT needs symmetric int8 '
                      f'QDQ (zero point 0), {n.name or n.output[0]} has {zero.dtype} zero point {zero.ravel()[:1]} '
                      '(quantize with ActivationSymmetric and WeightSymmetric, QInt8)')


def check_onnx_signature(card: ModelCard, variant: str, network: str):
    """The ONNX graph has exactly the card's tensors, with its shapes and dtypes, and its opset."""
    spec = card.files[variant][network]
    where = f'networks.{network}'
    try:
        inputs, outputs, opset = onnx_signature(spec.path)
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and others for a file that is no ONNX
        _fail(card, f'files.{variant}.{network}.path', f'{spec.path.name} is not a readable ONNX model ({e})')
    if opset is not None and opset != card.opset:
        _fail(card, 'opset', f'{spec.path.name} uses opset {opset}, the card says {card.opset}')
    net = card.networks[network]
    for kind, declared, actual in (('inputs', net.inputs, inputs), ('outputs', net.outputs, outputs)):
        names = [t.name for t in declared]
        if set(names) != set(actual):
            _fail(card, f'{where}.{kind}', f'{spec.path.name} has {kind} {sorted(actual)}, the card says {names}')
        for i, t in enumerate(declared):
            shape, dtype = actual[t.name]
            field_name = f'{where}.{kind}[{i}]'
            if dtype != t.dtype:
                _fail(card, f'{field_name}.dtype', f'{t.name} is {dtype} in {spec.path.name}, the card says {t.dtype}')
            same = len(shape) == len(t.shape) and all(
                not isinstance(a, int) or a == 0 or (isinstance(c, int) and a == c) for a, c in zip(shape, t.shape))
            if not same:
                _fail(card, f'{field_name}.shape', f'{t.name} is {list(shape)} in {spec.path.name}, '
                      f'the card says {list(t.shape)}')


def verify_card(card: ModelCard, variants=None):
    """Hashes and ONNX signatures of the given file variants (all by default), plus the convention's
    own tensor layout; raises CardError on the first disagreement."""
    from fmdrive.inference.conventions import check_convention
    check_convention(card)
    for variant in variants or card.files:
        if variant not in card.files:
            _fail(card, f'files.{variant}', f'this model has no {variant} variant (it has {", ".join(card.files)})')
        for network in card.networks:
            check_file(card, variant, network)
            check_onnx_signature(card, variant, network)
            if variant.startswith('int8'):
                check_quantization(card, variant, network)
    if card.calibration and card.calibration.get('frames') is not None:
        frames = card.calibration['frames']
        if not frames.path.is_file():
            _fail(card, 'calibration.frames.path', f'{frames.path} does not exist')
        if sha256_of(frames.path) != frames.sha256:
            _fail(card, 'calibration.frames.sha256', f'{frames.path.name} does not match the card')


def load_card(path, verify: bool = True, variants=None) -> ModelCard:
    """Read engines/<model>/card.yaml (or the directory holding it) and, with verify, check its files."""
    path = Path(path)
    if path.is_dir():
        path = path / 'card.yaml'
    if not path.is_file():
        raise CardError(f'card {path}: does not exist (each model directory under engines/ needs a card.yaml)')
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CardError(f'card {path}: is not valid YAML ({str(e).splitlines()[0]})') from None
    card = parse_card(data, path)
    if verify:
        verify_card(card, variants)
    return card


def main(argv=None) -> int:
    """`python -m fmdrive.inference.card DIR_OR_CARD...`: check cards (hashes, ONNX signatures) and
    print what each one holds, or the one-line reason it is refused (exit code 2)."""
    import argparse
    import sys
    p = argparse.ArgumentParser(prog='python -m fmdrive.inference.card', description=main.__doc__)
    p.add_argument('cards', nargs='+', help='engines/<model> directories or card.yaml files')
    args = p.parse_args(argv)
    status = 0
    for path in args.cards:
        try:
            card = load_card(path)
        except CardError as e:
            print(f'refused: {e}', file=sys.stderr)
            status = 2
            continue
        print(f'ok: {card.path}: {card.name} {card.version} ({card.io_convention}, {len(card.classes)} classes, '
              f'variants {", ".join(card.files)})')
    return status


if __name__ == '__main__':
    raise SystemExit(main())
