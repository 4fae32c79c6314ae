"""TensorRT backend with pycuda: a plan that matches this system (tensorrt_build.ensure_plan), pinned
host buffers, one device buffer per tensor, one stream; each frame = async copies in, execute,
async copies out, one synchronize.

TensorRT 8.x runs by binding index (execute_async_v2 with the list of device pointers); 10.x by
tensor name (set_tensor_address once, then execute_async_v3). The CUDA context is the device's
primary context (the one TensorRT's runtime uses), pushed around every call so the backend works
from whichever thread the ROS executor calls it.
"""
from __future__ import annotations

import numpy as np

from fmdrive.inference.backend import BackendError, check_inputs, check_precision
from fmdrive.inference.card import ModelCard
from fmdrive.inference.tensorrt_build import (
    BuildOptions,
    ensure_plan,
    import_tensorrt,
    plan_paths,
    system_info,
    trt_major,
    trt_variant,
)


class TensorRTBackend:
    OPTIONS = ('engines_dir', 'build', 'rebuild', 'device_id', 'workspace_mb', 'dla_core', 'progress')

    def __init__(self, engines_dir=None, build: bool = True, rebuild: bool = False, device_id: int = 0,
                 workspace_mb: int = 1024, dla_core=None, progress=None):
        self.options = BuildOptions(engines_dir, workspace_mb, dla_core, device_id, progress)
        self.build, self.rebuild = build, rebuild
        self.context = None

    def load(self, card: ModelCard, precision: str, network: str = 'model') -> None:
        check_precision(precision)
        trt, cuda = import_tensorrt()
        self.trt, self.cuda = trt, cuda
        self.card, self.network, self.precision = card, network, precision
        self.variant = trt_variant(card, precision)[0]
        self.v3 = trt_major(trt) >= 10
        cuda.init()
        self.cuda_context = cuda.Device(self.options.device_id).retain_primary_context()
        self.system = system_info(cuda, self.options.device_id)
        try:
            self.plan = plan = ensure_plan(card, precision, network, self.options, build=self.build,
                                           rebuild=self.rebuild)
        except BaseException:
            self.cuda_context.detach()
            raise
        self.cuda_context.push()
        try:
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = trt.Runtime(self.logger)
            if self.options.dla_core is not None:
                self.runtime.DLA_core = int(self.options.dla_core)
            self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
            if self.engine is None:
                raise BackendError(f'{plan}: TensorRT cannot deserialize this plan; rebuild it: '
                                   f'fmdrive build-engines --models {card.name} --precision {precision}')
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            io = self._io_tensors_v3() if self.v3 else self._io_tensors_v2()
            self._check_against_card(io)
            self.host, self.device = {}, {}
            for name, (is_input, shape, dtype) in io.items():
                self.host[name] = cuda.pagelocked_empty(tuple(shape), dtype)
                self.device[name] = cuda.mem_alloc(max(self.host[name].nbytes, 1))
            self.input_names = [n for n, v in io.items() if v[0]]
            self.output_names = [n for n, v in io.items() if not v[0]]
            if self.v3:
                for name in io:
                    self.context.set_tensor_address(name, int(self.device[name]))
            else:
                self.bindings = [int(self.device[name]) for name in io]     # io is in binding order
        except BaseException:
            self.context = None
            self.cuda_context.pop()
            self.cuda_context.detach()
            raise
        self.cuda_context.pop()

    def _card_shape(self, name: str):
        net = self.card.networks[self.network]
        for t in net.inputs + net.outputs:
            if t.name == name:
                return t.shape
        raise BackendError(f'{self.plan}: the plan has a tensor {name!r} that card {self.card.path} does not list')

    def _io_tensors_v3(self) -> dict:
        """name -> (is input, shape, numpy dtype), by tensor name (TensorRT 10)."""
        trt, engine, io = self.trt, self.engine, {}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    self.context.set_input_shape(name, tuple(self._card_shape(name)))
        for name in names:
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            io[name] = (is_input, tuple(self.context.get_tensor_shape(name)),
                        np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
        return io

    def _io_tensors_v2(self) -> dict:
        """name -> (is input, shape, numpy dtype), in binding order (TensorRT 8.x)."""
        trt, engine, io = self.trt, self.engine, {}
        for i in range(engine.num_bindings):
            if engine.binding_is_input(i) and any(d < 0 for d in tuple(engine.get_binding_shape(i))):
                self.context.set_binding_shape(i, tuple(self._card_shape(engine.get_binding_name(i))))
        for i in range(engine.num_bindings):
            io[engine.get_binding_name(i)] = (engine.binding_is_input(i), tuple(self.context.get_binding_shape(i)),
                                              np.dtype(trt.nptype(engine.get_binding_dtype(i))))
        return io

    def _check_against_card(self, io: dict):
        net = self.card.networks[self.network]
        for kind, specs in (('inputs', net.inputs), ('outputs', net.outputs)):
            plan_names = sorted(n for n, v in io.items() if v[0] == (kind == 'inputs'))
            if plan_names != sorted(t.name for t in specs):
                raise BackendError(f'{self.plan}: plan {kind} {plan_names} are not the card\'s '
                                   f'{[t.name for t in specs]}; rebuild with fmdrive build-engines')
            for t in specs:
                shape = io[t.name][1]
                if len(shape) != len(t.shape) or any(isinstance(c, int) and c != s for c, s in zip(t.shape, shape)):
                    raise BackendError(f'{self.plan}: {t.name} is {list(shape)} in the plan, the card says '
                                       f'{list(t.shape)}; rebuild with fmdrive build-engines')

    def infer(self, inputs: dict) -> dict:
        if self.context is None:
            raise BackendError('infer() before load()')
        feed = check_inputs(self.card, self.network, inputs)
        cuda, stream = self.cuda, self.stream
        self.cuda_context.push()
        try:
            for name in self.input_names:
                np.copyto(self.host[name], feed[name].astype(self.host[name].dtype, copy=False))
                cuda.memcpy_htod_async(self.device[name], self.host[name], stream)
            if self.v3:
                ok = self.context.execute_async_v3(stream_handle=stream.handle)
            else:
                ok = self.context.execute_async_v2(bindings=self.bindings, stream_handle=stream.handle)
            if not ok:
                raise BackendError(f'{self.card.name}/{self.network}: TensorRT execution failed (see its log)')
            for name in self.output_names:
                cuda.memcpy_dtoh_async(self.host[name], self.device[name], stream)
            stream.synchronize()
        finally:
            self.cuda_context.pop()
        return {name: self.host[name].copy() for name in self.output_names}

    def describe(self) -> dict:
        net = self.card.networks[self.network]
        return {'backend': 'tensorrt', 'model': self.card.name, 'network': self.network,
                'provider': f'TensorRT {self.trt.__version__} on {self.system["gpu_name"]} '
                            f'(sm {self.system["compute_capability"]})',
                'precision': self.precision, 'variant': self.variant, 'plan': str(self.plan),
                'manifest': str(plan_paths(self.card, self.precision, self.network, self.options.engines_dir)[1]),
                'api': 'execute_async_v3' if self.v3 else 'execute_async_v2', 'dla_core': self.options.dla_core,
                'input_shapes': {t.name: list(t.shape) for t in net.inputs}}

    def close(self):
        """Free the device buffers and release the primary context."""
        if self.context is None:
            return
        self.cuda_context.push()
        try:
            for alloc in self.device.values():
                alloc.free()
            self.context = self.engine = None
        finally:
            self.cuda_context.pop()
            self.cuda_context.detach()
