"""One Backend protocol for every runtime, and the factory the nodes call (DESIGN.md §5).

    backend = make_backend(card, 'int8', backend='auto')   # TensorRT when it can run here, else ONNX Runtime
    outputs = backend.infer({'image': tensor})              # names and shapes as the card says
    backend.describe()                                      # provider, precision, variant, input shapes

Precisions: fp32, fp16, int8. Which ONNX file a precision runs is the backend's choice (table in
docs/model_cards.md): TensorRT builds fp16 from the fp32 file and int8 from int8_trt (explicit QDQ)
or, without it, from fp32 with entropy calibration; ONNX Runtime on the CPU runs int8_cpu.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from fmdrive.inference.card import ModelCard

PRECISIONS = ('fp32', 'fp16', 'int8')
BACKENDS = ('auto', 'tensorrt', 'onnxruntime')
NO_TENSORRT = 'TensorRT is not installed here; use backend onnxruntime'


class BackendError(RuntimeError):
    """A backend that cannot run what was asked (missing runtime, no GPU, stale plan, bad input);
    the message says what to do."""


@runtime_checkable
class Backend(Protocol):
    def load(self, card: ModelCard, precision: str, network: str = 'model') -> None:
        """Prepare one network of the card at a precision (fp32 | fp16 | int8)."""

    def infer(self, inputs: dict) -> dict:
        """Run once: {input name: array} -> {output name: array}, names and shapes as in the card."""

    def describe(self) -> dict:
        """What runs: backend, provider(s), precision, file variant, input shapes."""


def check_precision(precision: str):
    if precision not in PRECISIONS:
        raise BackendError(f'precision {precision!r} is not one of {", ".join(PRECISIONS)}')


_INPUT_SPECS: dict = {}


def _input_specs(card: ModelCard, network: str) -> list:
    """[(name, dtype, rank, ((axis, size) of every fixed dimension))] of a card's network, built once:
    an LM calls infer() a dozen times per plan, and a plan's budget is milliseconds."""
    key = (id(card), network)
    specs = _INPUT_SPECS.get(key)
    if specs is None or specs[0] is not card:
        spec = card.networks[network]
        specs = (card, [(t.name, np.dtype(t.dtype), len(t.shape),
                         tuple((i, d) for i, d in enumerate(t.shape) if isinstance(d, int))) for t in spec.inputs])
        _INPUT_SPECS[key] = specs
    return specs[1]


def check_inputs(card: ModelCard, network: str, inputs: dict) -> dict:
    """The inputs the card's network takes, as contiguous arrays of its dtypes; a missing, extra,
    mis-shaped or wrongly typed input is refused with its name."""
    specs = _input_specs(card, network)
    if len(inputs) == len(specs):
        # the common case, checked cheaply: arrays already of the card's dtypes, ranks and sizes
        fast = {}
        for name, dtype, rank, fixed in specs:
            a = inputs.get(name)
            if type(a) is not np.ndarray or a.dtype != dtype or a.ndim != rank or not a.flags.c_contiguous \
                    or any(a.shape[i] != d for i, d in fixed):
                break
            fast[name] = a
        else:
            return fast
    spec = card.networks[network]
    names = [t.name for t in spec.inputs]
    if set(inputs) != set(names):
        raise BackendError(f'{card.name}/{network}: inputs {sorted(inputs)} given, the card says {names}')
    out = {}
    for t in spec.inputs:
        a = np.asarray(inputs[t.name])
        if len(a.shape) != len(t.shape) or any(isinstance(d, int) and d != s for d, s in zip(t.shape, a.shape)):
            raise BackendError(f'{card.name}/{network}: input {t.name} has shape {list(a.shape)}, '
                               f'the card says {list(t.shape)}')
        if a.dtype != np.dtype(t.dtype):
            if a.dtype.kind != np.dtype(t.dtype).kind:       # float64 -> float32 yes, uint8 image -> float no
                raise BackendError(f'{card.name}/{network}: input {t.name} is {a.dtype}, the card says {t.dtype}')
            a = a.astype(t.dtype)
        out[t.name] = np.ascontiguousarray(a)
    return out


def tensorrt_status() -> tuple[bool, str]:
    """(True, GPU name) when TensorRT and pycuda import and a CUDA device exists, else (False, why)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, NO_TENSORRT
    try:
        import pycuda.driver as cuda
    except ImportError:
        return False, 'pycuda is not installed here (pip install pycuda); use backend onnxruntime'
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            return False, 'no CUDA device here; use backend onnxruntime'
        return True, cuda.Device(0).name()
    except Exception as e:  # noqa: BLE001 - pycuda raises its own LogicError/RuntimeError without a driver
        return False, f'CUDA is not usable here ({e}); use backend onnxruntime'


def make_backend(card: ModelCard, precision: str = 'fp32', backend: str = 'auto', network: str = 'model',
                 **options) -> Backend:
    """A loaded backend for one network of the card. auto = TensorRT when it is importable and a
    GPU is present, else ONNX Runtime. options go to the backend (threads, engines_dir, build...)."""
    check_precision(precision)
    if backend not in BACKENDS:
        raise BackendError(f'backend {backend!r} is not one of {", ".join(BACKENDS)}')
    if network not in card.networks:
        raise BackendError(f'{card.name} has no network {network!r} (it has {", ".join(card.networks)})')
    if backend == 'auto':
        backend = 'tensorrt' if tensorrt_status()[0] else 'onnxruntime'
    if backend == 'tensorrt':
        ok, why = tensorrt_status()
        if not ok:
            raise BackendError(why)
        from fmdrive.inference.tensorrt_backend import TensorRTBackend
        trt_options = {k: v for k, v in options.items() if k in TensorRTBackend.OPTIONS}
        impl = TensorRTBackend(**trt_options)
    else:
        from fmdrive.inference.onnxruntime_backend import OnnxRuntimeBackend
        ort_options = {k: v for k, v in options.items() if k in OnnxRuntimeBackend.OPTIONS}
        impl = OnnxRuntimeBackend(**ort_options)
    impl.load(card, precision, network)
    return impl
