"""`fmdrive profile MODEL [--json]`: what a model costs, before anyone buys a Jetson for it.

For the model of a card (`engines/<model>` or any directory holding a card.yaml, docs/model_cards.md):
parameters, MACs per layer and in total, weight and activation memory at fp32 / fp16 / int8, latency
measured here with ONNX Runtime on the CPU for every precision file the card has, and a roofline
ESTIMATE for Jetson Orin from assumed peak figures (ORIN_DEVICES). Counting works on the fp32 ONNX
graph with the shapes ONNX shape inference gives for the card's input shapes, so a user's own model
is profiled the same way as ours: it only needs a card that load_card accepts.

Rules (also in the output, so a number is never read without them):
- parameters: elements of every floating-point initializer, plus floating-point Constant-node tensors
  fed straight into a Conv, ConvTranspose, Gemm or MatMul (some exporters store weights that way).
  Integer tensors (shapes, axes, indices) and other Constant nodes are not weights.
- MACs: Conv = output elements x (input channels / groups) x kernel elements; ConvTranspose = input
  elements x (output channels / groups) x kernel elements; Gemm and MatMul (batched, broadcast) =
  output elements x the reduced dimension K. Every other op counts 0 MACs. 1 MAC = 2 FLOP.
- int8 weight bytes: 1 byte per weight of a Conv / ConvTranspose / Gemm / MatMul, every other weight
  (biases, norms, embeddings) 4 bytes, as TensorRT's explicit (QDQ) quantization keeps them.
- activations: every tensor a node writes (Constant nodes excepted); float tensors at 4 / 2 / 1 bytes
  per precision, other tensors at their own element size. Peak-live walks the nodes in graph
  (topological) order: a tensor lives from its producer (graph inputs: from the start) to its last
  consumer (graph outputs: to the end).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from fmdrive.inference.card import CardError, ModelCard, load_card, verify_card

MAC_OPS = ('Conv', 'ConvTranspose', 'Gemm', 'MatMul')
# the inputs of a MAC op whose weights INT8 builds store as int8 (Conv bias, Gemm C stay fp32)
QUANTIZED_INPUTS = {'Conv': (1,), 'ConvTranspose': (1,), 'Gemm': (0, 1), 'MatMul': (0, 1)}
PRECISION_BYTES = {'fp32': 4, 'fp16': 2, 'int8': 1}
LATENCY_VARIANTS = ('fp32', 'int8_cpu', 'int8_trt')   # what ONNX Runtime on this CPU can run
LM_PROMPT_TOKENS = 128
TOP_LAYERS = 12

# Assumed Jetson Orin figures: GPU only (no DLA), peak numbers from NVIDIA's material, not measured.
# Jetson AGX Orin Series Technical Brief: AGX Orin 64GB GPU = 16 SMs (2048 CUDA cores, 64 third-gen
# tensor cores) at 1.3 GHz: 5.3 FP32 TFLOPS on the CUDA cores, 170 sparse INT8 TOPS -> 85 dense;
# dense FP16 tensor = half of dense INT8 = 42.5 TFLOPS; 256-bit LPDDR5 at 6400 MT/s = 204.8 GB/s.
# Jetson Orin Nano Super Developer Kit datasheet (JetPack 6.1+, MAXN SUPER): 8 SMs (1024 CUDA cores,
# 32 tensor cores) at 1.02 GHz: 67 sparse INT8 TOPS -> 33.4 dense, FP16 dense 16.7 TFLOPS,
# FP32 1024 x 2 x 1.02 GHz = 2.09 TFLOPS, 128-bit LPDDR5 102 GB/s (the original Orin Nano 8GB at
# 625 MHz: 40 sparse TOPS, 68 GB/s). Dense figures are used: 2:4 structured sparsity needs pruned weights.
ORIN_DEVICES = {
    'Jetson AGX Orin 64GB': {'fp32_tflops': 5.3, 'fp16_tflops': 42.5, 'int8_tops': 85.0,
                             'int8_sparse_tops': 170.0, 'dram_gb_s': 204.8},
    'Jetson Orin Nano 8GB (Super)': {'fp32_tflops': 2.09, 'fp16_tflops': 16.7, 'int8_tops': 33.4,
                                     'int8_sparse_tops': 67.0, 'dram_gb_s': 102.0},
}
PEAK_KEY = {'fp32': 'fp32_tflops', 'fp16': 'fp16_tflops', 'int8': 'int8_tops'}

RULES = {
    'parameters': 'elements of floating-point initializers, plus floating-point Constant tensors fed '
                  'straight into Conv/ConvTranspose/Gemm/MatMul; integer tensors (shapes, axes, indices) '
                  'and other constants are not weights',
    'macs': 'Conv: output elements x in channels/groups x kernel; ConvTranspose: input elements x out '
            'channels/groups x kernel; Gemm, MatMul (batched): output elements x K; other ops count 0 '
            'MACs',
    'int8_weights': '1 byte per Conv/ConvTranspose/Gemm/MatMul weight, every other weight (biases, norms, '
                    'embeddings) 4 bytes, as TensorRT explicit (QDQ) quantization keeps them',
    'activations': 'every tensor a node writes (Constant nodes excepted); float tensors at 4/2/1 bytes '
                   'for fp32/fp16/int8 (int8: as if every float activation were int8), others at their '
                   'own size; peak = most bytes live at once in graph order (producer to last consumer, '
                   'inputs from the start, outputs to the end)',
}
ROOFLINE_NOTE = ('ESTIMATE, not a measurement: assumed peak GPU figures (dense tensor cores for fp16/int8, '
                 'CUDA cores for fp32; TensorRT may use TF32 for fp32), 2 FLOP per MAC. Bytes moved: '
                 'weights once + model inputs read once + outputs written once + every intermediate '
                 'activation written once and read once (no layer fusion). attainable = min(peak, '
                 'intensity x bandwidth), latency = 2 x MACs / attainable; ideal_ms assumes perfect fusion '
                 '(intermediates never reach DRAM), a lower bound. Kernel launches, DRAM efficiency and '
                 'layers TensorRT keeps at higher precision make real latency higher.')


class ProfileError(ValueError):
    """A profile that cannot start (unknown model, bad option); the message is one line."""


# ------------------------------------------------------------------------------------------ model
def engines_dir() -> Path:
    from fmdrive import config
    return config.package_file('engines')


MODEL_ALIASES = {'planner': 'planner_student', 'camera': 'camera_centernet', 'lidar': 'lidar_centerpoint'}


def resolve_model(model: str, engines=None) -> Path:
    """MODEL is a directory (or card.yaml) path, else a model name under engines/ (or one of
    MODEL_ALIASES: planner, camera, lidar)."""
    path = Path(model)
    if path.is_dir() or len(path.parts) > 1 or path.suffix in ('.yaml', '.yml'):
        return path     # a path: load_card says what is wrong with it
    engines = Path(engines) if engines else engines_dir()
    if not (engines / model).is_dir() and (engines / MODEL_ALIASES.get(model, model)).is_dir():
        model = MODEL_ALIASES[model]
    if (engines / model).is_dir():
        return engines / model
    available = sorted(d.name for d in engines.iterdir() if (d / 'card.yaml').is_file()) \
        if engines.is_dir() else []
    raise ProfileError(f'unknown model {model!r}: not a directory holding a card.yaml, and {engines} has no '
                       f'such model (models there: {", ".join(available) or "none"})')


def load_profiled_card(path) -> tuple[ModelCard, dict]:
    """The card with its fp32 files checked (hash, ONNX signature, convention); other variants are
    checked when their file exists and skipped, with the reason, when it does not."""
    card = load_card(path, verify=False)
    verify_card(card, ['fp32'])
    skipped = {}
    for variant in card.files:
        if variant == 'fp32':
            continue
        missing = [s.path.name for s in card.files[variant].values() if not s.path.is_file()]
        if missing:
            skipped[variant] = f'{", ".join(missing)} does not exist'
        else:
            verify_card(card, [variant])
    return card, skipped


def dynamic_dims(card: ModelCard, prompt_tokens: int) -> dict:
    """Sizes for named (dynamic) dimensions: a causal LM runs one forward pass over a prompt of
    prompt_tokens with an empty past; any other named dimension is 1."""
    if card.task == 'causal_lm':
        return {'batch': 1, 'sequence': prompt_tokens, 'past_sequence': 0, 'total_sequence': prompt_tokens}
    return {}


def input_shapes(card: ModelCard, network: str, dims: dict) -> dict:
    return {t.name: tuple(d if isinstance(d, int) else dims.get(d, 1) for d in t.shape)
            for t in card.networks[network].inputs}


def make_inputs(card: ModelCard, network: str, dims: dict, seed: int = 0) -> dict:
    """Seeded inputs of the card's shapes and dtypes: standard normal floats, integer zeros; for a
    causal LM an all-ones attention_mask and position_ids counting on from the past."""
    rng = np.random.default_rng(seed)
    feed = {}
    for t in card.networks[network].inputs:
        shape = input_shapes(card, network, dims)[t.name]
        if np.dtype(t.dtype).kind == 'f':
            feed[t.name] = rng.standard_normal(shape).astype(t.dtype)
        elif card.task == 'causal_lm' and t.name == 'attention_mask':
            feed[t.name] = np.ones(shape, t.dtype)
        elif card.task == 'causal_lm' and t.name == 'position_ids':
            start = dims.get('past_sequence', 0)
            feed[t.name] = np.broadcast_to(np.arange(start, start + shape[-1]), shape).astype(t.dtype)
        else:
            feed[t.name] = np.zeros(shape, t.dtype)
    return feed


# ------------------------------------------------------------------------------------------ shapes
def _float_types() -> set:
    from onnx import TensorProto
    return {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


def _itemsize(elem_type: int) -> int:
    from onnx import helper
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 0


def tensor_shapes(model, feed: dict) -> tuple[dict, str]:
    """{tensor name: (shape, elem type)} of every tensor, from ONNX shape inference on the graph with
    the inputs fixed to feed's shapes; tensors whose shapes depend on values (e.g. a Range over the
    sequence length) are filled in from one ONNX Runtime run of the graph with them as outputs."""
    import onnx
    from onnx import helper, shape_inference
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for v in fixed.graph.input:
        if v.name in feed:
            dims = v.type.tensor_type.shape.dim
            del dims[:]
            for size in feed[v.name].shape:
                dims.add().dim_value = int(size)
    inferred = shape_inference.infer_shapes(fixed, data_prop=True)
    shapes = {}
    for v in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        t = v.type.tensor_type
        static = t.HasField('shape') and all(d.HasField('dim_value') for d in t.shape.dim)
        shapes[v.name] = (tuple(int(d.dim_value) for d in t.shape.dim) if static else None, t.elem_type)
    for i in model.graph.initializer:
        shapes[i.name] = (tuple(int(d) for d in i.dims), i.data_type)
    for n in model.graph.node:
        if n.op_type == 'Constant' and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR:
            shapes[n.output[0]] = (tuple(int(d) for d in n.attribute[0].t.dims), n.attribute[0].t.data_type)
    unknown = [o for n in model.graph.node for o in n.output if o and shapes.get(o, (None,))[0] is None]
    if not unknown:
        return shapes, 'onnx shape inference'
    import onnxruntime as ort
    probe = onnx.ModelProto()
    probe.CopyFrom(fixed)
    outputs = {o.name for o in probe.graph.output}
    for name in unknown:
        if name not in outputs:
            elem = shapes.get(name, (None, 0))[1]
            probe.graph.output.append(helper.make_tensor_value_info(name, elem, None) if elem
                                      else helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(probe.SerializeToString(), so, providers=['CPUExecutionProvider'])
        names = [o.name for o in session.get_outputs()]
        for name, value in zip(names, session.run(names, feed)):
            if name in unknown:
                shapes[name] = (tuple(int(s) for s in value.shape),
                                helper.np_dtype_to_tensor_dtype(value.dtype))
    except Exception as e:  # noqa: BLE001 - a graph ORT cannot run: its unknown tensors count 0 bytes, 0 MACs
        return shapes, (f'onnx shape inference; {len(unknown)} tensors of unknown shape count 0 '
                        f'(ONNX Runtime could not run the graph: {str(e).splitlines()[0][:120]})')
    return shapes, (f'onnx shape inference; {len(unknown)} tensors whose shapes depend on values from one '
                    'ONNX Runtime run')


# ------------------------------------------------------------------------------------------ counting
def weight_tensors(graph) -> tuple[dict, set]:
    """({weight name: elements}, names stored as int8 by INT8 builds), by the parameter rule above."""
    from onnx import AttributeProto
    floats = _float_types()
    weights = {i.name: int(np.prod(i.dims)) for i in graph.initializer if i.data_type in floats}
    constants = {n.output[0]: n.attribute[0].t for n in graph.node
                 if n.op_type == 'Constant' and n.attribute and n.attribute[0].type == AttributeProto.TENSOR
                 and n.attribute[0].t.data_type in floats}
    quantized = set()
    for n in graph.node:
        if n.op_type not in MAC_OPS:
            continue
        for i, name in enumerate(n.input):
            if name in constants:
                weights.setdefault(name, int(np.prod(constants[name].dims)))
            if name in weights and i in QUANTIZED_INPUTS[n.op_type]:
                quantized.add(name)
    return weights, quantized


def node_macs(node, shapes: dict) -> int:
    """Multiply-accumulates of one node (the rule above); 0 for other ops or unknown shapes."""
    def shape(i, outputs=False):
        names = node.output if outputs else node.input
        return shapes.get(names[i], (None,))[0] if i < len(names) and names[i] else None

    out, a, w = shape(0, True), shape(0), shape(1)
    if node.op_type not in MAC_OPS or out is None or w is None:
        return 0
    if node.op_type == 'Conv':
        return int(np.prod(out)) * int(np.prod(w[1:]))
    if node.op_type == 'ConvTranspose':
        return 0 if a is None else int(np.prod(a)) * int(np.prod(w[1:]))
    if a is None:
        return 0
    if node.op_type == 'Gemm':
        trans_a = next((att.i for att in node.attribute if att.name == 'transA'), 0)
        return int(np.prod(out)) * int(a[0] if trans_a else a[1])
    return int(np.prod(out)) * int(a[-1])     # MatMul: output elements x K (1-D a: K = a[0])


def _node_name(node) -> str:
    return node.name or f'{node.op_type}:{node.output[0]}'


def activation_memory(graph, shapes: dict, weights: dict) -> dict:
    """Bytes of activations per precision: inputs, outputs, intermediates, all written, peak live."""
    floats = _float_types()
    constants = set(weights) | {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == 'Constant' for o in n.output}
    graph_inputs = [v.name for v in graph.input if v.name not in constants]
    graph_outputs = {v.name for v in graph.output}
    start, last_use = {name: 0 for name in graph_inputs}, {}
    for step, n in enumerate(graph.node):
        for name in n.input:
            if name:
                last_use[name] = step
        if n.op_type != 'Constant':
            for name in n.output:
                if name and name not in constants:
                    start.setdefault(name, step)
    steps = max(len(graph.node), 1)
    result = {}
    for precision, size in PRECISION_BYTES.items():
        def nbytes(name):
            shape, elem = shapes.get(name, (None, 0))
            if shape is None:
                return 0
            return int(np.prod(shape)) * (size if elem in floats else _itemsize(elem))
        delta = np.zeros(steps + 1, np.int64)
        for name, first in start.items():
            end = steps - 1 if name in graph_outputs else max(last_use.get(name, first), first)
            delta[first] += nbytes(name)
            delta[end + 1] -= nbytes(name)
        written = [name for name in start if name not in graph_inputs]
        result[precision] = {
            'inputs': sum(nbytes(n) for n in graph_inputs),
            'outputs': sum(nbytes(n) for n in written if n in graph_outputs),
            'intermediates': sum(nbytes(n) for n in written if n not in graph_outputs),
            'all_written': sum(nbytes(n) for n in written),
            'peak_live': int(np.cumsum(delta).max()),
        }
    return result


def profile_graph(path: Path, feed: dict) -> dict:
    """Parameters, MACs per node, weight and activation bytes of one ONNX graph."""
    import onnx
    model = onnx.load(str(path))
    graph = model.graph
    shapes, shapes_from = tensor_shapes(model, feed)
    weights, quantized = weight_tensors(graph)
    layers, other = [], {}
    for n in graph.node:
        if n.op_type == 'Constant':
            continue
        macs = node_macs(n, shapes)
        out = shapes.get(n.output[0], (None,))[0] if n.output else None
        layers.append({'name': _node_name(n), 'op': n.op_type,
                       'output_shape': None if out is None else list(out), 'macs': macs,
                       'params': sum(weights.get(i, 0) for i in dict.fromkeys(n.input))})
        if n.op_type not in MAC_OPS:
            other[n.op_type] = other.get(n.op_type, 0) + 1
    params = sum(weights.values())
    in_int8 = sum(weights[w] for w in quantized)
    return {'file': str(path), 'shapes_from': shapes_from,
            'inputs': {k: list(v.shape) for k, v in feed.items()},
            'parameters': params, 'macs': sum(layer['macs'] for layer in layers),
            'weight_bytes': {'fp32': 4 * params, 'fp16': 2 * params,
                             'int8': in_int8 + 4 * (params - in_int8)},
            'int8_weights': in_int8,
            'activation_bytes': activation_memory(graph, shapes, weights),
            'other_ops_0_macs': dict(sorted(other.items(), key=lambda kv: -kv[1])),
            'layers': layers}


# ------------------------------------------------------------------------------------------ latency
class _SessionBackend:
    """One ONNX Runtime session of a chosen file behind the Backend's infer() (the runtime's
    CausalLM picks no file itself, so every variant of the card can be timed on this CPU)."""

    def __init__(self, session):
        self.session = session
        self.names = [o.name for o in session.get_outputs()]

    def infer(self, feeds: dict) -> dict:
        return dict(zip(self.names, self.session.run(None, feeds)))

    def describe(self) -> dict:
        return {'backend': 'onnxruntime', 'providers': self.session.get_providers()}


def ort_session(path: Path, threads: int):
    """An ONNX Runtime CPU session with the options the nodes' backend uses, so the times are the
    ones the nodes would see."""
    import onnxruntime as ort

    from fmdrive.inference.onnxruntime_backend import session_options
    return ort.InferenceSession(str(path), session_options(threads), providers=['CPUExecutionProvider'])


def measure_latency(card: ModelCard, variant: str, feeds: dict, runs: int, warmup: int, threads: int,
                    progress: bool) -> dict:
    """p50/p99 of one inference (every network of the card, one after another) over runs after
    warmup; a file ONNX Runtime cannot load or run here is reported, not raised."""
    from tqdm import tqdm
    times = {net: [] for net in card.networks}
    try:
        sessions = {net: ort_session(card.files[variant][net].path, threads) for net in card.networks}
        for _ in range(warmup):
            for net, session in sessions.items():
                session.run(None, feeds[net])
        for _ in tqdm(range(runs), desc=f'{card.name} {variant}', unit='run', disable=not progress,
                      file=sys.stderr):
            for net, session in sessions.items():
                t0 = time.perf_counter()
                session.run(None, feeds[net])
                times[net].append(time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
        return {'error': f'onnxruntime cannot run it here: {str(e).splitlines()[0]}'}
    total = np.sum([np.array(t) for t in times.values()], axis=0) * 1e3
    result = {'files': [card.files[variant][net].path.name for net in sessions],
              'p50_ms': round(float(np.percentile(total, 50)), 3),
              'p99_ms': round(float(np.percentile(total, 99)), 3), 'mean_ms': round(float(total.mean()), 3)}
    if len(sessions) > 1:
        result['p50_ms_per_network'] = {net: round(float(np.percentile(np.array(t) * 1e3, 50)), 3)
                                        for net, t in times.items()}
    return result


INT8_DOT_FLAGS = ('avx512_vnni', 'avx_vnni', 'amx_int8', 'asimddp', 'i8mm')   # x86 and Arm int8 dot products


def host_cpu(cpuinfo: str | None = None) -> str:
    """'<model name>, <n> CPUs, int8 dot product: <flags or none>': INT8 speed-ups on the CPU depend on
    these instructions (with AVX2 alone ONNX Runtime's U8S8 kernels gain far less over fp32), so every
    INT8 timing is printed with them."""
    if cpuinfo is None:
        try:
            cpuinfo = Path('/proc/cpuinfo').read_text()
        except OSError:
            cpuinfo = ''
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(':')
        key = key.strip().lower()
        if key in ('model name', 'cpu model') and value.strip():
            model = value.strip()
        elif key in ('flags', 'features'):
            flags |= set(value.split())
    dot = [f for f in INT8_DOT_FLAGS if f in flags]
    return f'{model}, {os.cpu_count()} CPUs, int8 dot product: {", ".join(dot) if dot else "none (no VNNI/AMX/dotprod)"}'


def latency_note(card: ModelCard, runs: int, warmup: int, threads: int) -> str:
    import onnxruntime as ort
    lm = ', attention_mask ones, position_ids 0..n-1' if card.task == 'causal_lm' else ''
    return (f'measured here: ONNX Runtime {ort.__version__} CPUExecutionProvider, {threads} intra-op '
            f'thread(s), {runs} runs after {warmup} warm-up, seeded inputs (standard normal floats, integer '
            f'zeros{lm}), on {platform.machine()}: {host_cpu()}')


# ------------------------------------------------------------------------------------------ roofline
def roofline(macs: int, weight_bytes: dict, activations: dict) -> dict:
    """Per assumed device and precision: arithmetic intensity, attainable throughput, bound, latency."""
    flops = 2 * macs
    rows = []
    for device, figures in ORIN_DEVICES.items():
        bandwidth = figures['dram_gb_s'] * 1e9
        for precision in PRECISION_BYTES:
            peak = figures[PEAK_KEY[precision]] * 1e12
            act = activations[precision]
            moved = weight_bytes[precision] + act['inputs'] + act['outputs'] + 2 * act['intermediates']
            ideal_moved = weight_bytes[precision] + act['inputs'] + act['outputs']
            intensity = flops / moved if moved else 0.0
            attainable = min(peak, intensity * bandwidth) if moved else peak
            rows.append({'device': device, 'precision': precision, 'peak_tops': peak / 1e12,
                         'bytes_moved': moved, 'intensity_flop_per_byte': round(intensity, 2),
                         'ridge_flop_per_byte': round(peak / bandwidth, 1),
                         'attainable_tops': round(attainable / 1e12, 3),
                         'bound': 'compute' if not moved or intensity * bandwidth >= peak else 'memory',
                         'latency_ms': round(max(flops / peak, moved / bandwidth) * 1e3, 4),
                         'ideal_ms': round(max(flops / peak, ideal_moved / bandwidth) * 1e3, 4)})
    return {'note': ROOFLINE_NOTE, 'devices': ORIN_DEVICES, 'estimates': rows}


# ------------------------------------------------------------------------------------------ profile
def profile_model(model_dir, runs: int = 50, warmup: int = 5, progress: bool = False, threads: int = 1,
                  prompt_tokens: int = LM_PROMPT_TOKENS) -> dict:
    """The whole profile of the model of a card (directory or card.yaml), as one JSON-able dict."""
    if runs < 1 or warmup < 0 or threads < 1 or prompt_tokens < 1:
        raise ProfileError(f'runs and threads must be >= 1, warmup >= 0, prompt tokens >= 1 (got runs '
                           f'{runs}, warmup {warmup}, threads {threads}, prompt tokens {prompt_tokens})')
    card, skipped = load_profiled_card(model_dir)
    dims = dynamic_dims(card, prompt_tokens)
    feeds = {net: make_inputs(card, net, dims) for net in card.networks}
    networks = {net: profile_graph(card.files['fp32'][net].path, feeds[net]) for net in card.networks}

    def total(key):
        return {p: sum(n[key][p] for n in networks.values()) for p in PRECISION_BYTES}
    activations = {p: {k: sum(n['activation_bytes'][p][k] for n in networks.values())
                       for k in ('inputs', 'outputs', 'intermediates', 'all_written')}
                   for p in PRECISION_BYTES}
    for p in PRECISION_BYTES:   # networks run one after another: the biggest peak, not the sum
        activations[p]['peak_live'] = max(n['activation_bytes'][p]['peak_live'] for n in networks.values())
    weights = total('weight_bytes')
    macs = sum(n['macs'] for n in networks.values())

    latency = {}
    for variant in LATENCY_VARIANTS:
        if variant in skipped:
            latency[variant] = {'skipped': skipped[variant]}
        elif variant in card.files:
            latency[variant] = measure_latency(card, variant, feeds, runs, warmup, threads, progress)
    latency['fp16'] = {'skipped': 'not measured here (no GPU)'}
    lm = lm_profile(card, macs, prompt_tokens, runs, warmup, threads, skipped, progress) \
        if card.task == 'causal_lm' else None
    if card.task == 'causal_lm':
        setup = (f'one forward pass over a {prompt_tokens}-token prompt with an empty past (batch 1, '
                 f'past_sequence 0, total_sequence {prompt_tokens}); a decode step with a long past costs '
                 'differently')
    elif any(not t.static for n in card.networks.values() for t in n.inputs):
        setup = 'the card\'s input shapes, its named (dynamic) dimensions set to 1'
    else:
        setup = 'the card\'s static input shapes'
    return {
        'model': card.name, 'version': card.version, 'card': str(card.path), 'task': card.task,
        'io_convention': card.io_convention, 'setup': setup, 'dynamic_dims': dims,
        'parameters': sum(n['parameters'] for n in networks.values()), 'macs': macs, 'flops': 2 * macs,
        'memory': {'weight_bytes': weights, 'activation_bytes': activations},
        'latency_here': {'note': latency_note(card, runs, warmup, threads), 'variants': latency},
        'roofline': roofline(macs, weights, activations),
        'rules': RULES,
        'networks': networks,
        **({'causal_lm': lm} if lm is not None else {}),
    }


def lm_profile(card: ModelCard, prompt_macs: int, prompt_tokens: int, runs: int, warmup: int, threads: int,
               skipped: dict, progress: bool = False) -> dict:
    """What one plan of a causal LM costs: FLOPs per token (the profiled prompt pass / its tokens),
    KV-cache bytes per token and per plan at fp32/fp16/int8, and measured ms per plan per variant:
    the runtime's ConstrainedDecoder (planning/lm/runtime.py) over a prompt of prompt_tokens, the
    first half a cached prefix (as the planner's fixed header), then PLAN_TOKENS tokens greedily
    with the KV cache; token ids drawn at random (the model's vocabulary, no tokenizer needed)."""
    from fmdrive.planning.lm.format import PLAN_TOKENS
    from fmdrive.planning.lm.runtime import CausalLM, ConstrainedDecoder, lm_shape
    shape = lm_shape(card)
    plan_len = prompt_tokens + PLAN_TOKENS
    kv = {p: shape.kv_bytes_per_token(b) for p, b in PRECISION_BYTES.items()}
    out = {'layers': shape.num_layers, 'kv_heads': shape.num_heads, 'head_dim': shape.head_dim,
           'prompt_tokens': prompt_tokens, 'plan_tokens': PLAN_TOKENS,
           'flops_per_token': int(round(2 * prompt_macs / prompt_tokens)),
           'kv_cache_bytes_per_token': kv,
           'kv_cache_bytes_per_plan': {p: b * plan_len for p, b in kv.items()},
           'ms_per_plan': {}}
    vocab = card.networks['model'].output('logits').shape[-1]
    vocab = vocab if isinstance(vocab, int) else 64
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, vocab, prompt_tokens).tolist() for _ in range(max(1, min(runs, 20)))]
    header_len = prompt_tokens // 2
    header = prompts[0][:header_len]
    everything = np.arange(vocab, dtype=np.int64)
    for variant in LATENCY_VARIANTS:
        if variant not in card.files:
            continue
        if variant in skipped:
            out['ms_per_plan'][variant] = {'skipped': skipped[variant]}
            continue
        lm = CausalLM(card, _SessionBackend(ort_session(card.files[variant]['model'].path, threads)))
        dec = ConstrainedDecoder(lm, frame_reuse=False)      # the header's cache only, as noted below
        times = []
        for k in range(warmup + len(prompts)):
            suffix = prompts[k % len(prompts)][header_len:]
            gen = dec.generate(header, suffix, lambda step: everything, PLAN_TOKENS)
            if k >= warmup:
                times.append(gen.total_ms)
        out['ms_per_plan'][variant] = {'p50': round(float(np.median(times)), 3),
                                       'p90': round(float(np.percentile(times, 90)), 3), 'plans': len(times)}
    out['ms_per_plan']['fp16'] = {'skipped': 'not measured here (no GPU)'}
    out['note'] = (f'ms per plan: {len(prompts)} random prompts of {prompt_tokens} tokens, the first '
                   f'{header_len} a cached prefix, {PLAN_TOKENS} tokens decoded with the KV cache, '
                   f'{threads} thread(s), ONNX Runtime CPU; FLOPs per token at this prompt length (attention '
                   'grows with it)')
    return out


# ------------------------------------------------------------------------------------------ text
def _si(value: float, unit: str = '') -> str:
    for factor, prefix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if abs(value) >= factor:
            return f'{value / factor:.2f} {prefix}{unit}'
    return f'{value:g} {unit}'.rstrip()


def _bytes(n: int) -> str:
    return _si(n, 'B') if n >= 1000 else f'{n} B'


def render_text(result: dict, top: int = TOP_LAYERS) -> str:
    """The profile for a terminal: the layer table cut to the top layers by MACs."""
    lines = [f"{result['model']} {result['version']} ({result['task']}, {result['io_convention']}): "
             f"{result['card']}", _wrap(f"setup: {result['setup']}")[2:]]
    for net, n in result['networks'].items():
        shapes = ', '.join(f'{k} {v}' for k, v in n['inputs'].items())
        lines.append(_wrap(f"{net}: {Path(n['file']).name}: {shapes}"))
    lines += ['', f"parameters  {result['parameters']:,} ({_si(result['parameters'])})",
              f"MACs        {result['macs']:,} ({_si(result['macs'], 'MAC')}, "
              f"{_si(result['flops'], 'FLOP')})"]
    for net, n in result['networks'].items():
        ranked = sorted((layer for layer in n['layers'] if layer['macs'] or layer['params']),
                        key=lambda layer: (-layer['macs'], -layer['params']))
        title = f'{net}: ' if len(result['networks']) > 1 else ''
        lines += ['', _wrap(f'{title}layers by MACs (top {min(top, len(ranked))} of {len(ranked)} with MACs '
                            f"or params; shapes: {n['shapes_from']})")[2:],
                  f"  {'name':40s} {'op':14s} {'output shape':22s} {'MACs':>14s} {'params':>10s}"]
        for layer in ranked[:top]:
            lines.append(f"  {layer['name'][-40:]:40s} {layer['op']:14s} {str(layer['output_shape']):22s} "
                         f"{layer['macs']:>14,} {layer['params']:>10,}")
        if len(ranked) > top:
            lines.append(f'  … and {len(ranked) - top} more (--json lists every layer)')
        other = ', '.join(f'{op} x{k}' for op, k in n['other_ops_0_macs'].items())
        lines.append(_wrap(f'other ops count 0 MACs: {other or "none"}'))
    lm = result.get('causal_lm')
    if lm:
        per_token = ', '.join(f'{p} {_bytes(b)}' for p, b in lm['kv_cache_bytes_per_token'].items())
        per_plan = ', '.join(f'{p} {_bytes(b)}' for p, b in lm['kv_cache_bytes_per_plan'].items())
        lines += ['', f"causal LM: {lm['layers']} layers x {lm['kv_heads']} KV heads x {lm['head_dim']}; "
                      f"{_si(lm['flops_per_token'], 'FLOP')} per token; plan = {lm['prompt_tokens']} "
                      f"prompt + {lm['plan_tokens']} plan tokens",
                  '  KV cache per token ' + per_token,
                  '  KV cache per plan  ' + per_plan,
                  '  ms per plan        ' + ', '.join(
                      f"{v} p50 {m['p50']} p90 {m['p90']}" if 'p50' in m else f"{v} skipped ({m['skipped']})"
                      for v, m in lm['ms_per_plan'].items()),
                  _wrap(lm['note'])]
    mem = result['memory']
    lines += ['', f"memory{'':22s}{'fp32':>12s}{'fp16':>12s}{'int8':>12s}"]
    rows = [('weights', mem['weight_bytes'])]
    for key, label in (('inputs', 'inputs'), ('outputs', 'outputs'), ('all_written', 'activations, all'),
                       ('peak_live', 'activations, peak live')):
        rows.append((label, {p: mem['activation_bytes'][p][key] for p in PRECISION_BYTES}))
    for label, values in rows:
        lines.append(f'  {label:26s}' + ''.join(f'{_bytes(values[p]):>12s}' for p in PRECISION_BYTES))
    lines.append('  (int8: Conv/Gemm/MatMul weights 1 byte, other weights 4, float activations 1: see rules)')
    lat = result['latency_here']
    lines += ['', _wrap(f"latency {lat['note']}")[2:],
              f"  {'variant':10s} {'p50 ms':>10s} {'p99 ms':>10s}  file"]
    for variant, v in lat['variants'].items():
        if 'p50_ms' in v:
            lines.append(f"  {variant:10s} {v['p50_ms']:>10.2f} {v['p99_ms']:>10.2f}  "
                         f"{', '.join(v['files'])}")
        else:
            lines.append(f"  {variant:10s} {v.get('skipped') or v.get('error')}")
    roof = result['roofline']
    lines += ['', 'roofline for Jetson Orin: an ESTIMATE from assumed peak figures, not a measurement']
    for device, f in roof['devices'].items():
        lines.append(_wrap(f"assumed {device}: fp32 {f['fp32_tflops']} TFLOPS (CUDA cores), fp16 "
                           f"{f['fp16_tflops']} TFLOPS dense, int8 {f['int8_tops']} TOPS dense "
                           f"({f['int8_sparse_tops']} sparse), DRAM {f['dram_gb_s']} GB/s"))
    lines.append(f"  {'device':30s} {'prec':5s} {'FLOP/B':>8s} {'ridge':>7s} {'attain. TOPS':>13s} "
                 f"{'bound':>8s} {'est. ms':>9s} {'ideal ms':>9s}")
    for r in roof['estimates']:
        lines.append(f"  {r['device']:30s} {r['precision']:5s} {r['intensity_flop_per_byte']:>8.1f} "
                     f"{r['ridge_flop_per_byte']:>7.1f} {r['attainable_tops']:>13.3f} {r['bound']:>8s} "
                     f"{r['latency_ms']:>9.4f} {r['ideal_ms']:>9.4f}")
    lines.append(_wrap(roof['note']))
    lines += ['', 'rules:'] + [_wrap(f'{k}: {v}') for k, v in result['rules'].items()]
    return '\n'.join(lines)


def _wrap(text: str) -> str:
    return textwrap.fill(text, 110, initial_indent='  ', subsequent_indent='    ', break_on_hyphens=False)


# ------------------------------------------------------------------------------------------ command
def add_arguments(p):
    p.add_argument('model', help='a model name under engines/ (camera_centernet, ...) or a directory holding '
                                 'a card.yaml')
    p.add_argument('--json', action='store_true', help='print exactly one JSON object (every layer)')
    p.add_argument('--runs', type=int, default=50, help='timed runs per precision file (default 50)')
    p.add_argument('--warmup', type=int, default=5, help='untimed runs first (default 5)')
    p.add_argument('--threads', type=int, default=1,
                   help='ONNX Runtime intra-op threads (default 1, as the nodes)')
    p.add_argument('--prompt-tokens', type=int, default=LM_PROMPT_TOKENS,
                   help=f'causal LM: prompt length of the profiled forward pass (default {LM_PROMPT_TOKENS})')
    p.add_argument('--engines-dir', default=None,
                   help='where model names are looked up (default: the repo engines/)')


def run(args) -> int:
    """The command; an unknown model, a refused card or a missing file is one line and exit code 2."""
    try:
        result = profile_model(resolve_model(args.model, args.engines_dir), runs=args.runs,
                               warmup=args.warmup, progress=not args.json, threads=args.threads,
                               prompt_tokens=args.prompt_tokens)
    except (CardError, ProfileError) as e:
        print(f'fmdrive profile: error: {e}', file=sys.stderr)
        return 2
    try:
        print(json.dumps(result) if args.json else render_text(result), flush=True)
    except BrokenPipeError:     # `... --json | head -c 600`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
    return 0
