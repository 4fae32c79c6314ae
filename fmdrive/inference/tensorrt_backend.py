"""TensorRT backend with pycuda: a plan that matches this system (tensorrt_build.ensure_plan), pinned
host buffers, one device buffer per tensor, one stream; each frame = async copies in, execute,
async copies out, one synchronize.

TensorRT 8.x runs by binding index (execute_async_v2 with the list of device pointers); 10.x by
tensor name (set_tensor_address once, then execute_async_v3). The CUDA context is the device's
primary context (the one TensorRT's runtime uses), pushed around every call so the backend works
from whichever thread the ROS executor calls it.

Dynamic shapes (a causal LM: sequence and past lengths change every call): the plan's optimisation
profile spans the card's dynamic_dims (tensorrt_build.profile_shapes); buffers are allocated once
for the largest shapes, and each call sets the input shapes it has, reads the output shapes back
from the execution context and copies only that many bytes.
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
    profile_shapes,
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
            self.dynamic = []                     # inputs whose shape each call sets
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

    def _shape_to_set(self, name: str) -> tuple:
        """The shape a dynamic input is set to at load: the card's when fixed, else the profile's
        largest (so the outputs read back are the largest too, and buffers are allocated for them)."""
        shape = self._card_shape(name)
        if all(isinstance(d, int) for d in shape):
            return tuple(shape)
        self.dynamic.append(name)
        return profile_shapes(self.card, self.card.networks[self.network], name)[2]

    def _max_output_shape(self, name: str) -> tuple:
        """The largest shape an output takes in the profile (the card's shape, named dimensions at
        their dynamic_dims maximum): what its buffers are allocated for. The maxima of the inputs
        are not one consistent call (past + sequence > total), so TensorRT is not asked."""
        from fmdrive.inference.tensorrt_build import dynamic_dims
        dims, shape = dynamic_dims(self.card), self._card_shape(name)
        missing = [d for d in shape if isinstance(d, str) and d not in dims]
        if missing:
            raise BackendError(f'card {self.card.path}: output {name} has dynamic dimension(s) {missing} without a '
                               'range in decoder.dynamic_dims')
        return tuple(d if isinstance(d, int) else dims[d][2] for d in shape)

    def _io_tensors_v3(self) -> dict:
        """name -> (is input, shape, numpy dtype), by tensor name (TensorRT 10)."""
        trt, engine, io = self.trt, self.engine, {}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    self.context.set_input_shape(name, self._shape_to_set(name))
        for name in names:
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = (self._max_output_shape(name) if self.dynamic and not is_input
                     else tuple(self.context.get_tensor_shape(name)))
            io[name] = (is_input, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
        return io

    def _io_tensors_v2(self) -> dict:
        """name -> (is input, shape, numpy dtype), in binding order (TensorRT 8.x)."""
        trt, engine, io = self.trt, self.engine, {}
        self.binding_index = {engine.get_binding_name(i): i for i in range(engine.num_bindings)}
        for i in range(engine.num_bindings):
            if engine.binding_is_input(i) and any(d < 0 for d in tuple(engine.get_binding_shape(i))):
                self.context.set_binding_shape(i, self._shape_to_set(engine.get_binding_name(i)))
        for i in range(engine.num_bindings):
            name, is_input = engine.get_binding_name(i), engine.binding_is_input(i)
            shape = (self._max_output_shape(name) if self.dynamic and not is_input
                     else tuple(self.context.get_binding_shape(i)))
            io[name] = (is_input, shape, np.dtype(trt.nptype(engine.get_binding_dtype(i))))
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
            out_shapes = self._set_shapes(feed) if self.dynamic else {}
            host = {}
            for name in self.input_names:
                host[name] = self._host_view(name, feed[name].shape) if self.dynamic else self.host[name]
                np.copyto(host[name], feed[name].astype(host[name].dtype, copy=False))
                if host[name].nbytes:
                    cuda.memcpy_htod_async(self.device[name], host[name], stream)
            if self.v3:
                ok = self.context.execute_async_v3(stream_handle=stream.handle)
            else:
                ok = self.context.execute_async_v2(bindings=self.bindings, stream_handle=stream.handle)
            if not ok:
                raise BackendError(f'{self.card.name}/{self.network}: TensorRT execution failed (see its log)')
            for name in self.output_names:
                host[name] = self._host_view(name, out_shapes[name]) if self.dynamic else self.host[name]
                if host[name].nbytes:
                    cuda.memcpy_dtoh_async(host[name], self.device[name], stream)
            stream.synchronize()
        finally:
            self.cuda_context.pop()
        return {name: host[name].copy() for name in self.output_names}

    def _set_shapes(self, feed: dict) -> dict:
        """Set this call's input shapes; the output shapes they give (refused beyond the buffers)."""
        for name in self.dynamic:
            shape = tuple(int(d) for d in feed[name].shape)
            if int(np.prod(shape)) > self.host[name].size:
                raise BackendError(f'{self.card.name}/{self.network}: input {name} {list(shape)} is larger than the '
                                   f'plan\'s profile allows ({list(self.host[name].shape)}); rebuild with larger '
                                   'decoder.dynamic_dims')
            ok = (self.context.set_input_shape(name, shape) if self.v3
                  else self.context.set_binding_shape(self.binding_index[name], shape))
            if ok is False:
                raise BackendError(f'{self.card.name}/{self.network}: TensorRT refused shape {list(shape)} for {name} '
                                   '(outside the plan\'s optimisation profile)')
        shapes = {}
        for name in self.output_names:
            shape = (self.context.get_tensor_shape(name) if self.v3
                     else self.context.get_binding_shape(self.binding_index[name]))
            shapes[name] = tuple(int(d) for d in shape)
            if int(np.prod(shapes[name])) > self.host[name].size:
                raise BackendError(f'{self.card.name}/{self.network}: output {name} {list(shapes[name])} exceeds its '
                                   f'buffer {list(self.host[name].shape)}')
        return shapes

    def _host_view(self, name: str, shape) -> np.ndarray:
        """The first prod(shape) elements of the pinned buffer, as an array of `shape`."""
        return self.host[name].reshape(-1)[:int(np.prod(shape))].reshape(shape)

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
