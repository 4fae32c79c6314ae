"""ONNX Runtime backend: TensorRT EP -> CUDA EP -> CPU, whichever this onnxruntime build has.

Threads are a parameter (default 1 intra-op, 1 inter-op, no spinning) because the two encoders and
the rest of the graph share two cores: an ORT pool that spins by default would take them all.
With CUDA or TensorRT EP the inputs and outputs stay in preallocated device OrtValues bound once
(IO binding), so a frame costs one copy in and one copy out.
"""
from __future__ import annotations

import numpy as np

from fmdrive.inference.backend import BackendError, check_inputs, check_precision
from fmdrive.inference.card import ModelCard, check_file

PROVIDER_ORDER = ('TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider')


def ort_variant(card: ModelCard, precision: str, gpu: bool, tensorrt_ep: bool = False) -> str:
    """Which ONNX file ONNX Runtime runs for a precision: int8 prefers int8_trt (symmetric QDQ) on
    a GPU provider and int8_cpu (U8S8 QDQ) on the CPU; fp16 is the fp16 file, or the fp32 file that
    the TensorRT EP builds at fp16 (never fp32 passed off as fp16)."""
    if precision == 'fp32':
        return 'fp32'
    if precision == 'fp16':
        if 'fp16' in card.files:
            return 'fp16'
        if tensorrt_ep:
            return 'fp32'
        raise BackendError(f'{card.name}: fp16 without the TensorRT execution provider needs an fp16 file in '
                           'the card (files.fp16); use precision fp32 or int8')
    order = ('int8_trt', 'int8_cpu') if gpu else ('int8_cpu', 'int8_trt')
    for variant in order:
        if variant in card.files:
            return variant
    raise BackendError(f'{card.name}: precision int8 needs files.int8_cpu or files.int8_trt in the card')


def session_options(threads: int, inter_op_threads: int = 1):
    """The SessionOptions every ONNX Runtime session of ours uses (the nodes' backend, `fmdrive
    profile`): sequential, full graph optimisation, and idle workers that sleep instead of spinning,
    since the cores are shared with the rest of the graph."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry('session.intra_op.allow_spinning', '0')
    so.add_session_config_entry('session.inter_op.allow_spinning', '0')
    return so


class OnnxRuntimeBackend:
    OPTIONS = ('threads', 'inter_op_threads', 'providers', 'io_binding', 'device_id', 'engines_dir')

    def __init__(self, threads: int = 1, inter_op_threads: int = 1, providers=None, io_binding='auto',
                 device_id: int = 0, engines_dir=None):
        if threads < 1 or inter_op_threads < 1:
            raise BackendError(f'threads must be >= 1, got {threads} intra-op, {inter_op_threads} inter-op')
        self.threads, self.inter_op_threads = int(threads), int(inter_op_threads)
        self.requested_providers = providers
        self.io_binding = io_binding
        self.device_id = device_id
        self.engines_dir = engines_dir
        self.session = None

    def _providers(self, card: ModelCard, precision: str):
        import onnxruntime as ort
        available = ort.get_available_providers()
        wanted = self.requested_providers or PROVIDER_ORDER
        missing = [p for p in (self.requested_providers or ()) if p not in available]
        if missing:
            raise BackendError(f'onnxruntime here has no {", ".join(missing)} (it has {", ".join(available)})')
        chosen = []
        for name in wanted:
            if name not in available:
                continue
            if name == 'TensorrtExecutionProvider':
                from pathlib import Path
                cache = Path(self.engines_dir or card.directory.parent) / 'build' / card.name / 'ort_trt'
                chosen.append((name, {'device_id': self.device_id, 'trt_fp16_enable': precision != 'fp32',
                                      'trt_int8_enable': precision == 'int8',
                                      'trt_engine_cache_enable': True, 'trt_engine_cache_path': str(cache),
                                      'trt_timing_cache_enable': True}))
            elif name == 'CUDAExecutionProvider':
                chosen.append((name, {'device_id': self.device_id}))
            else:
                chosen.append(name)
        if not chosen:
            raise BackendError(f'none of the providers {list(wanted)} exists in this onnxruntime')
        return chosen

    def load(self, card: ModelCard, precision: str, network: str = 'model') -> None:
        import onnxruntime as ort
        check_precision(precision)
        available = ort.get_available_providers()
        wanted = self.requested_providers or PROVIDER_ORDER
        gpu = any(p in available and p != 'CPUExecutionProvider' for p in wanted)
        variant = ort_variant(card, precision, gpu, 'TensorrtExecutionProvider' in available and
                              'TensorrtExecutionProvider' in wanted)
        spec = check_file(card, variant, network)
        so = session_options(self.threads, self.inter_op_threads)
        providers = self._providers(card, precision)
        try:
            self.session = ort.InferenceSession(str(spec.path), so, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(f'{card.name}/{network}: onnxruntime cannot load {spec.path.name}: '
                               f'{str(e).splitlines()[0]}') from None
        self.card, self.network, self.precision, self.variant = card, network, precision, variant
        self.output_names = [t.name for t in card.networks[network].outputs]
        active = self.session.get_providers()
        on_gpu = active[0] in ('CUDAExecutionProvider', 'TensorrtExecutionProvider')
        use_binding = on_gpu if self.io_binding == 'auto' else bool(self.io_binding)
        self._binding = self._bind('cuda' if on_gpu else 'cpu') if use_binding else None

    def _bind(self, device: str):
        """Preallocated input and output OrtValues, bound once (static shapes only)."""
        import onnxruntime as ort
        net = self.card.networks[self.network]
        if not all(t.static for t in net.inputs + net.outputs):
            return None
        binding = self.session.io_binding()
        values = {}
        for t in net.inputs + net.outputs:
            values[t.name] = ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), np.dtype(t.dtype).type,
                                                                       device, self.device_id)
        for t in net.inputs:
            binding.bind_ortvalue_input(t.name, values[t.name])
        for t in net.outputs:
            binding.bind_ortvalue_output(t.name, values[t.name])
        return binding, values

    def infer(self, inputs: dict) -> dict:
        if self.session is None:
            raise BackendError('infer() before load()')
        feed = check_inputs(self.card, self.network, inputs)
        if self._binding is None:
            return dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        binding, values = self._binding
        for name, array in feed.items():
            values[name].update_inplace(array)
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return {name: np.array(values[name].numpy(), copy=True) for name in self.output_names}

    def describe(self) -> dict:
        net = self.card.networks[self.network]
        return {'backend': 'onnxruntime', 'model': self.card.name, 'network': self.network,
                'provider': self.session.get_providers()[0], 'providers': self.session.get_providers(),
                'precision': self.precision, 'variant': self.variant,
                'file': str(self.card.files[self.variant][self.network].path),
                'threads': self.threads, 'inter_op_threads': self.inter_op_threads,
                'io_binding': self._binding is not None,
                'input_shapes': {t.name: list(t.shape) for t in net.inputs}}
