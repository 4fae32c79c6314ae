"""The TensorRT backend against fakes of `tensorrt` (8.x and 10.x APIs) and `pycuda.driver`.

The fakes keep the contracts the real modules have and that the backend relies on: device memory
is only reachable through mem_alloc'd pointers; copies and executions queued on a stream happen at
stream.synchronize(); a plan only deserialises on the TensorRT version that built it; 8.x engines
have bindings and execute_async_v2 only, 10.x engines named tensors and execute_async_v3 only.
The fake engine runs the plan's ONNX model with onnxruntime on the device buffers, so the numbers
that come back are checked, not only the order of the calls.
"""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import onnx
import pytest
import yaml
from test_inference_helpers import (
    autoware_card,
    autoware_encoder_model,
    autoware_head_model,
    centernet_blob_model,
    centernet_card,
    quantize_qdq,
    sha256,
)

from fmdrive.inference.backend import BackendError, make_backend
from fmdrive.inference.card import load_card
from fmdrive.inference.detectors import load_detector
from fmdrive.inference.tensorrt_backend import TensorRTBackend


# ============================================================================ fake pycuda.driver
class FakeStream:
    def __init__(self, cuda):
        self.cuda, self.queue = cuda, []
        self.handle = cuda.register_stream(self)

    def enqueue(self, kind, fn):
        self.cuda.log.append(('enqueue', kind))
        self.queue.append(fn)

    def synchronize(self):
        self.cuda.log.append(('synchronize',))
        for fn in self.queue:
            fn()
        self.queue.clear()


class FakeAllocation:
    def __init__(self, cuda, nbytes):
        self.cuda, self.address = cuda, cuda.next_address
        cuda.next_address += (nbytes + 0xFFF) & ~0xFFF or 0x1000
        cuda.memory[self.address] = bytearray(nbytes)

    def __int__(self):
        return self.address

    def free(self):
        self.cuda.memory.pop(self.address)


def make_fake_cuda(log, gpu_name='Orin (nvgpu)', compute_capability=(8, 7)):
    cuda = types.ModuleType('pycuda.driver')
    cuda.log, cuda.memory, cuda.streams, cuda.pinned = log, {}, {}, set()
    cuda.next_address = 0x7F0000000000
    cuda.gpu = {'name': gpu_name, 'cc': compute_capability}

    def register_stream(stream):
        handle = 0x5000 + len(cuda.streams)
        cuda.streams[handle] = stream
        return handle

    class Context:
        def push(self):
            log.append(('ctx_push',))

        def pop(self):
            log.append(('ctx_pop',))

        def detach(self):
            log.append(('ctx_detach',))

    class Device:
        def __init__(self, i):
            self.i = i

        @staticmethod
        def count():
            return 1

        def name(self):
            return cuda.gpu['name']

        def compute_capability(self):
            return cuda.gpu['cc']

        def retain_primary_context(self):
            return Context()

    def host_view(host):
        assert id(host) in cuda.pinned or (host.base is not None and id(host.base) in cuda.pinned), \
            'async copies need page-locked host memory (pagelocked_empty)'
        return host

    def pagelocked_empty(shape, dtype):
        a = np.empty(shape, dtype)
        cuda.pinned.add(id(a))
        return a

    def memcpy_htod_async(dest, host, stream):
        host_view(host)
        data = host.tobytes()                       # what the host buffer holds when the copy is queued
        addr = int(dest)
        log.append(('htod', addr, host.nbytes))

        def run():
            cuda.memory[addr][:len(data)] = data
        stream.enqueue('htod', run)

    def memcpy_dtoh_async(host, src, stream):
        host_view(host)
        addr = int(src)
        log.append(('dtoh', addr, host.nbytes))

        def run():
            host.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(cuda.memory[addr][:host.nbytes]), np.uint8)
        stream.enqueue('dtoh', run)

    def memcpy_htod(dest, host):
        cuda.memory[int(dest)][:host.nbytes] = host.tobytes()
        log.append(('htod_sync', int(dest), host.nbytes))

    cuda.register_stream = register_stream
    cuda.init = lambda: log.append(('cuda_init',))
    cuda.Device, cuda.Stream = Device, lambda: FakeStream(cuda)
    cuda.mem_alloc = lambda n: FakeAllocation(cuda, int(n))
    cuda.pagelocked_empty = pagelocked_empty
    cuda.memcpy_htod_async, cuda.memcpy_dtoh_async, cuda.memcpy_htod = memcpy_htod_async, memcpy_dtoh_async, memcpy_htod
    return cuda


# ================================================================================ fake tensorrt
NP_OF = {'FLOAT': np.float32, 'HALF': np.float16, 'INT8': np.int8, 'INT32': np.int32, 'BOOL': np.bool_,
         'INT64': np.int64}


def make_fake_tensorrt(version, cuda, log, memory_pools=True):
    trt = types.ModuleType('tensorrt')
    trt.__version__ = version
    major = int(version.split('.')[0])
    trt.built = []                       # one record per build_serialized_network call

    class Enum:
        def __init__(self, *names):
            for i, n in enumerate(names):
                setattr(self, n, n if major >= 0 else i)

    trt.BuilderFlag = Enum('FP16', 'INT8', 'GPU_FALLBACK', 'STRICT_TYPES')
    trt.MemoryPoolType = Enum('WORKSPACE', 'DLA_MANAGED_SRAM')
    trt.DeviceType = Enum('GPU', 'DLA')
    trt.TensorIOMode = Enum('INPUT', 'OUTPUT')
    trt.DataType = Enum(*NP_OF)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    trt.nptype = lambda dt: NP_OF[dt]

    class Logger:
        WARNING, INFO, ERROR = 'WARNING', 'INFO', 'ERROR'

        def __init__(self, level=None):
            self.level = level
    trt.Logger = Logger

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass

    class IInt8MinMaxCalibrator(IInt8EntropyCalibrator2):
        pass
    trt.IInt8EntropyCalibrator2, trt.IInt8MinMaxCalibrator = IInt8EntropyCalibrator2, IInt8MinMaxCalibrator
    if major >= 10:
        class IProgressMonitor:
            def __init__(self):
                pass
        trt.IProgressMonitor = IProgressMonitor

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.onnx = flags, [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            try:
                model = onnx.load(path)
            except Exception as e:  # noqa: BLE001 - the real parser reports, never raises
                self.errors.append(f'cannot read {path}: {e}')
                return False
            init = {i.name for i in model.graph.initializer}
            for v in model.graph.input:
                if v.name not in init:
                    dims = tuple(d.dim_value if d.HasField('dim_value') else -1 for d in v.type.tensor_type.shape.dim)
                    self.network.inputs.append(Tensor(v.name, dims, 'FLOAT'))
            self.network.onnx = model.SerializeToString()
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]
    trt.OnnxParser = OnnxParser

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b'+'

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

    class Config:
        def __init__(self):
            self.flags, self.pools, self.profiles = set(), {}, []
            self.int8_calibrator = self.timing_cache = self.calibration_profile = None
            self.default_device_type, self.DLA_core = trt.DeviceType.GPU, -1
            if major >= 10:
                self.progress_monitor = None

        def set_flag(self, flag):
            self.flags.add(flag)

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

    if memory_pools:
        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size
        Config.set_memory_pool_limit = set_memory_pool_limit
    if major < 10:
        Config.max_workspace_size = 0

    class Builder:
        platform_has_fast_fp16 = platform_has_fast_int8 = True
        num_DLA_cores = 2

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            if major < 10:
                assert flags & 1, 'TensorRT 8 parses ONNX only into explicit-batch networks'
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            record = {'flags': sorted(config.flags), 'pools': dict(config.pools),
                      'max_workspace_size': getattr(config, 'max_workspace_size', None),
                      'network_flags': network.flags, 'device': config.default_device_type,
                      'dla_core': config.DLA_core, 'calibration_batches': [], 'cache_read': None}
            monitor = getattr(config, 'progress_monitor', None)
            if monitor is not None:
                monitor.phase_start('Building engine', None, 1)
                assert monitor.step_complete('Building engine', 0)
                monitor.phase_finish('Building engine')
            cal = config.int8_calibrator
            if 'INT8' in config.flags and cal is not None:
                cache = cal.read_calibration_cache()
                record['cache_read'] = cache
                if cache is None:                 # calibrate: pull batches until None, as TensorRT does
                    names = [t.name for t in network.inputs]
                    amax = dict.fromkeys(names, 0.0)
                    while (pointers := cal.get_batch(names)) is not None:
                        assert cal.get_batch_size() == 1 and len(pointers) == len(names)
                        for name, ptr in zip(names, pointers):
                            values = np.frombuffer(bytes(cuda.memory[int(ptr)]), np.float32)
                            record['calibration_batches'].append((name, float(values.sum())))
                            amax[name] = max(amax[name], float(np.abs(values).max()))
                    cal.write_calibration_cache(b'TRT-FAKE-EntropyCalibration2\n' + json.dumps(amax).encode())
            config.timing_cache = TimingCache(config.timing_cache.data + b'T')
            trt.built.append(record)
            header = {'version': version, 'flags': record['flags']}
            return memoryview(b'FAKEPLAN\n' + json.dumps(header).encode() + b'\n' + network.onnx)
    trt.Builder = Builder

    class Runtime:
        def __init__(self, logger):
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data):
            if not data.startswith(b'FAKEPLAN\n'):
                return None
            _, header, model = data.split(b'\n', 2)
            if json.loads(header)['version'] != version:      # plans do not cross TensorRT versions
                return None
            return Engine(model)
    trt.Runtime = Runtime

    class Engine:
        def __init__(self, model_bytes):
            import onnxruntime as ort
            self.session = ort.InferenceSession(model_bytes, providers=['CPUExecutionProvider'])
            self.io = [(i.name, True, tuple(i.shape)) for i in self.session.get_inputs()] + \
                      [(o.name, False, tuple(o.shape)) for o in self.session.get_outputs()]

        def create_execution_context(self):
            return Context(self)

        def run(self, addresses: dict):
            feeds = {}
            for name, is_input, shape in self.io:
                if is_input:
                    feeds[name] = np.frombuffer(bytes(cuda.memory[addresses[name]]), np.float32).reshape(shape).copy()
            for (name, is_input, shape), value in zip([x for x in self.io if not x[1]], self.session.run(None, feeds)):
                cuda.memory[addresses[name]][:value.nbytes] = value.astype(np.float32).tobytes()

    if major >= 10:
        Engine.num_io_tensors = property(lambda self: len(self.io))
        Engine.get_tensor_name = lambda self, i: self.io[i][0]
        Engine.get_tensor_mode = lambda self, n: (trt.TensorIOMode.INPUT if {x[0]: x[1] for x in self.io}[n]
                                                  else trt.TensorIOMode.OUTPUT)
        Engine.get_tensor_shape = lambda self, n: {x[0]: x[2] for x in self.io}[n]
        Engine.get_tensor_dtype = lambda self, n: trt.DataType.FLOAT
    else:
        Engine.num_bindings = property(lambda self: len(self.io))
        Engine.get_binding_name = lambda self, i: self.io[i][0]
        Engine.binding_is_input = lambda self, i: self.io[i][1]
        Engine.get_binding_shape = lambda self, i: self.io[i][2]
        Engine.get_binding_dtype = lambda self, i: trt.DataType.FLOAT

    class Context:
        def __init__(self, engine):
            self.engine, self.addresses = engine, {}

        def _enqueue(self, stream_handle, addresses):
            stream = cuda.streams[stream_handle]
            stream.enqueue('execute', lambda: self.engine.run(addresses))
            return True

    if major >= 10:
        def set_tensor_address(self, name, address):
            log.append(('set_tensor_address', name, address))
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle):
            log.append(('execute_async_v3', stream_handle))
            if set(self.addresses) != {x[0] for x in self.engine.io}:
                return False
            return self._enqueue(stream_handle, dict(self.addresses))
        Context.set_tensor_address, Context.execute_async_v3 = set_tensor_address, execute_async_v3
        Context.get_tensor_shape = lambda self, n: {x[0]: x[2] for x in self.engine.io}[n]
        Context.set_input_shape = lambda self, n, s: True
    else:
        def execute_async_v2(self, bindings, stream_handle):
            log.append(('execute_async_v2', tuple(bindings), stream_handle))
            assert len(bindings) == len(self.engine.io), 'one device pointer per binding'
            return self._enqueue(stream_handle, {x[0]: int(b) for x, b in zip(self.engine.io, bindings)})
        Context.execute_async_v2 = execute_async_v2
        Context.get_binding_shape = lambda self, i: self.engine.io[i][2]
        Context.set_binding_shape = lambda self, i, s: True
    return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    """install(version) puts fake tensorrt + pycuda modules in sys.modules; returns (trt, cuda, log)."""
    def install(version='10.3.0', **kw):
        log = []
        cuda = make_fake_cuda(log)
        trt = make_fake_tensorrt(version, cuda, log, **kw)
        pycuda = types.ModuleType('pycuda')
        pycuda.driver = cuda
        monkeypatch.setitem(sys.modules, 'tensorrt', trt)
        monkeypatch.setitem(sys.modules, 'pycuda', pycuda)
        monkeypatch.setitem(sys.modules, 'pycuda.driver', cuda)
        return trt, cuda, log
    return install


@pytest.fixture
def centernet(tmp_path):
    d = tmp_path / 'engines' / 'camera_centernet'
    d.mkdir(parents=True)
    return load_card(centernet_card(d, centernet_blob_model(d / 'fp32.onnx')))


def reference(card, inputs, network='model'):
    return make_backend(card, 'fp32', 'onnxruntime', network).infer(inputs)


def frame(seed=0):
    return {'image': np.random.default_rng(seed).standard_normal((1, 3, 384, 640)).astype(np.float32)}


def infer_calls(log):
    """The per-frame calls, from the first host->device copy on."""
    start = next(i for i, c in enumerate(log) if c[0] == 'htod')
    return [c[0] if c[0] != 'enqueue' else f'enqueue {c[1]}' for c in log[start:] if c[0] not in ('ctx_push',)]


# ========================================================================================== tests
def test_tensorrt_10_builds_fp16_and_runs_named_tensors_copy_execute_copy_sync(fake_gpu, centernet, tmp_path):
    trt, cuda, log = fake_gpu('10.3.0')
    backend = make_backend(centernet, 'fp16', 'tensorrt', engines_dir=tmp_path / 'engines', workspace_mb=512)
    built = trt.built[0]
    assert built['flags'] == ['FP16'] and built['network_flags'] == 0
    assert built['pools'] == {'WORKSPACE': 512 << 20}
    plan = tmp_path / 'engines' / 'build' / 'camera_centernet' / 'fp16.plan'
    manifest = json.loads((plan.parent / 'fp16.manifest.json').read_text())
    assert manifest['onnx_sha256'] == sha256(centernet.file('fp32').path)
    assert manifest['tensorrt_version'] == '10.3.0' and manifest['gpu_name'] == 'Orin (nvgpu)'
    assert manifest['compute_capability'] == '8.7' and manifest['precision'] == 'fp16'
    assert manifest['builder_flags'] == ['FP16'] and manifest['plan_sha256'] == sha256(plan)
    assert (plan.parent / 'timing.cache').read_bytes() == b'T+'
    # every tensor bound once to its own device buffer
    addresses = {c[1]: c[2] for c in log if c[0] == 'set_tensor_address'}
    assert set(addresses) == {'image', 'heatmap', 'size', 'offset', 'embedding', 'depth'}
    assert all(a in cuda.memory for a in addresses.values()) and len(set(addresses.values())) == 6
    log.clear()
    x = frame(1)
    got = backend.infer(x)
    calls = infer_calls(log)
    assert calls[:4] == ['htod', 'enqueue htod', 'execute_async_v3', 'enqueue execute']
    assert calls[4:-2] == ['dtoh', 'enqueue dtoh'] * 5 and calls[-2:] == ['synchronize', 'ctx_pop']
    assert next(c for c in log if c[0] == 'htod')[1:] == (addresses['image'], x['image'].nbytes)
    want = reference(centernet, x)
    for name in want:
        assert got[name].shape == want[name].shape and np.allclose(got[name], want[name], atol=1e-6)
    d = backend.describe()
    assert d['backend'] == 'tensorrt' and d['api'] == 'execute_async_v3' and d['precision'] == 'fp16'
    assert 'TensorRT 10.3.0 on Orin' in d['provider'] and d['input_shapes'] == {'image': [1, 3, 384, 640]}


def test_tensorrt_8_uses_explicit_batch_and_bindings_with_execute_async_v2(fake_gpu, centernet, tmp_path):
    trt, _, log = fake_gpu('8.6.1')
    backend = TensorRTBackend(engines_dir=tmp_path / 'engines')
    backend.load(centernet, 'fp32')
    assert trt.built[0]['network_flags'] & 1 and trt.built[0]['flags'] == []
    assert trt.built[0]['pools'] == {'WORKSPACE': 1024 << 20}
    log.clear()
    x = frame(2)
    got = backend.infer(x)
    execute = next(c for c in log if c[0] == 'execute_async_v2')
    assert execute[1] == tuple(int(backend.device[n]) for n in ('image', 'heatmap', 'size', 'offset', 'embedding',
                                                                 'depth'))
    order = [c for c in infer_calls(log) if not c.startswith('enqueue')]
    assert order == ['htod', 'execute_async_v2'] + ['dtoh'] * 5 + ['synchronize', 'ctx_pop']
    want = reference(centernet, x)
    assert all(np.allclose(got[n], want[n], atol=1e-6) for n in want)
    assert backend.describe()['api'] == 'execute_async_v2'
    # two frames in a row: the second result is its own, not the first one's
    y = frame(3)
    assert np.allclose(backend.infer(y)['heatmap'], reference(centernet, y)['heatmap'], atol=1e-6)


def test_old_tensorrt_8_without_memory_pools_sets_max_workspace_size(fake_gpu, centernet, tmp_path):
    trt, _, _ = fake_gpu('8.2.5', memory_pools=False)
    TensorRTBackend(engines_dir=tmp_path / 'engines', workspace_mb=256).load(centernet, 'fp32')
    assert trt.built[0]['max_workspace_size'] == 256 << 20 and trt.built[0]['pools'] == {}


def test_a_plan_built_for_another_gpu_is_refused_when_building_is_off_and_rebuilt_when_on(fake_gpu, centernet,
                                                                                         tmp_path):
    trt, cuda, _ = fake_gpu('10.3.0')
    engines = tmp_path / 'engines'
    TensorRTBackend(engines_dir=engines).load(centernet, 'fp16')
    assert len(trt.built) == 1
    TensorRTBackend(engines_dir=engines, build=False).load(centernet, 'fp16')      # matching: loaded as is
    assert len(trt.built) == 1
    cuda.gpu.update(name='NVIDIA GeForce RTX 4090', cc=(8, 9))
    with pytest.raises(BackendError) as info:
        TensorRTBackend(engines_dir=engines, build=False).load(centernet, 'fp16')
    message = str(info.value)
    assert "compute_capability '8.7' (here '8.9')" in message and 'gpu_name' in message
    assert 'fmdrive build-engines --models camera_centernet --precision fp16' in message and '\n' not in message
    TensorRTBackend(engines_dir=engines).load(centernet, 'fp16')
    assert len(trt.built) == 2
    manifest = json.loads((engines / 'build' / 'camera_centernet' / 'fp16.manifest.json').read_text())
    assert manifest['compute_capability'] == '8.9'


def test_a_plan_from_another_tensorrt_or_a_changed_onnx_or_plan_file_is_not_loaded(fake_gpu, centernet, tmp_path):
    engines = tmp_path / 'engines'
    fake_gpu('8.6.1')
    TensorRTBackend(engines_dir=engines).load(centernet, 'fp32')
    fake_gpu('10.3.0')
    with pytest.raises(BackendError, match=r"tensorrt_version '8\.6\.1' \(here '10\.3\.0'\)"):
        TensorRTBackend(engines_dir=engines, build=False).load(centernet, 'fp32')
    TensorRTBackend(engines_dir=engines).load(centernet, 'fp32')
    plan = engines / 'build' / 'camera_centernet' / 'fp32.plan'
    plan.write_bytes(plan.read_bytes() + b'x')
    with pytest.raises(BackendError, match='does not match the sha256 its manifest recorded'):
        TensorRTBackend(engines_dir=engines, build=False).load(centernet, 'fp32')
    manifest = plan.with_name('fp32.manifest.json')
    record = json.loads(manifest.read_text())
    record['onnx_sha256'] = '0' * 64
    manifest.write_text(json.dumps(record))
    with pytest.raises(BackendError, match='onnx_sha256'):
        TensorRTBackend(engines_dir=engines, build=False).load(centernet, 'fp32')


def with_calibration(card_dir, frames, extra_files=None):
    np.savez(card_dir / 'calibration_frames.npz', image=frames)
    path = card_dir / 'card.yaml'
    data = yaml.safe_load(path.read_text())
    data['calibration'] = {'frames': {'path': 'calibration_frames.npz', 'sha256': sha256(card_dir /
                                                                                        'calibration_frames.npz')},
                           'count': len(frames), 'source': 'random frames, seed 5 (test)', 'method': 'entropy',
                           'cache': 'calibration.cache'}
    for variant, file in (extra_files or {}).items():
        data['files'][variant] = {'model': {'path': file.name, 'sha256': sha256(file)}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_card(path)


def test_int8_of_an_fp32_model_calibrates_with_the_entropy_calibrator_and_reuses_its_cache(fake_gpu, centernet,
                                                                                          tmp_path):
    trt, _, _ = fake_gpu('10.3.0')
    frames = np.random.default_rng(5).standard_normal((3, 1, 3, 384, 640)).astype(np.float32)
    card = with_calibration(centernet.directory, frames)
    engines = tmp_path / 'engines'
    backend = make_backend(card, 'int8', 'tensorrt', engines_dir=engines)
    built = trt.built[0]
    assert built['flags'] == ['FP16', 'INT8'] and built['cache_read'] is None
    # three batches, each the calibration frame itself, copied to the device through pinned memory
    assert [b[0] for b in built['calibration_batches']] == ['image'] * 3
    assert np.allclose([b[1] for b in built['calibration_batches']], frames.reshape(3, -1).sum(1), rtol=1e-4)
    cache = centernet.directory / 'calibration.cache'
    assert cache.read_bytes().startswith(b'TRT-FAKE-EntropyCalibration2')
    assert json.loads(cache.read_bytes().split(b'\n', 1)[1])['image'] == pytest.approx(np.abs(frames).max())
    assert backend.describe()['variant'] == 'fp32'
    assert json.loads((engines / 'build' / 'camera_centernet' / 'int8.manifest.json').read_text())[
        'builder_flags'] == ['INT8', 'FP16']
    TensorRTBackend(engines_dir=engines, rebuild=True).load(card, 'int8')
    assert trt.built[1]['cache_read'] == cache.read_bytes() and trt.built[1]['calibration_batches'] == []


def test_int8_of_a_qdq_model_sets_int8_and_fp16_without_a_calibrator(fake_gpu, centernet, tmp_path):
    trt, _, _ = fake_gpu('8.6.1')
    frames = np.random.default_rng(6).standard_normal((2, 1, 3, 384, 640)).astype(np.float32)
    qdq = quantize_qdq(centernet.file('fp32').path, centernet.directory / 'int8_trt.onnx',
                       [{'image': f} for f in frames], symmetric=True)
    card = with_calibration(centernet.directory, frames, {'int8_trt': qdq})
    backend = TensorRTBackend(engines_dir=tmp_path / 'engines')
    backend.load(card, 'int8')
    assert trt.built[0]['flags'] == ['FP16', 'INT8'] and trt.built[0]['calibration_batches'] == []
    assert trt.built[0]['cache_read'] is None and backend.describe()['variant'] == 'int8_trt'
    assert not (centernet.directory / 'calibration.cache').exists()


def test_dla_core_builds_for_the_dla_with_gpu_fallback(fake_gpu, centernet, tmp_path):
    trt, _, _ = fake_gpu('8.6.1')
    TensorRTBackend(engines_dir=tmp_path / 'engines', dla_core=1).load(centernet, 'fp16')
    built = trt.built[0]
    assert built['device'] == 'DLA' and built['dla_core'] == 1 and built['flags'] == ['FP16', 'GPU_FALLBACK']
    with pytest.raises(BackendError, match='DLA runs fp16 or int8 only'):
        TensorRTBackend(engines_dir=tmp_path / 'engines', dla_core=0).load(centernet, 'fp32')


def test_auto_picks_tensorrt_when_it_and_a_gpu_are_here(fake_gpu, centernet, tmp_path):
    fake_gpu('10.3.0')
    backend = make_backend(centernet, 'fp16', 'auto', engines_dir=tmp_path / 'engines')
    assert backend.describe()['backend'] == 'tensorrt'


def test_autoware_two_networks_get_two_plans_and_detect_as_on_onnxruntime(fake_gpu, tmp_path):
    d = tmp_path / 'engines' / 'autoware_centerpoint_tiny'
    d.mkdir(parents=True)
    card = autoware_card(d, autoware_encoder_model(d / 'pts_voxel_encoder_centerpoint.onnx'),
                         autoware_head_model(d / 'pts_backbone_neck_head_centerpoint.onnx'))
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.uniform(9.95, 10.2, 30), rng.uniform(-4.75, -4.5, 30), rng.uniform(0, 1, 30)])
    on_cpu = load_detector(card, 'fp32', 'onnxruntime').detect(points)
    fake_gpu('10.3.0')
    detector = load_detector(card, 'fp16', 'tensorrt', engines_dir=tmp_path / 'engines')
    assert {n: b['api'] for n, b in detector.describe()['networks'].items()} == {
        'encoder': 'execute_async_v3', 'head': 'execute_async_v3'}
    build = tmp_path / 'engines' / 'build' / 'autoware_centerpoint_tiny'
    assert sorted(p.name for p in build.glob('*.plan')) == ['fp16.encoder.plan', 'fp16.head.plan']
    on_gpu = detector.detect(points)
    assert len(on_gpu) == len(on_cpu) == 1
    assert on_gpu[0].center == pytest.approx(on_cpu[0].center) and on_gpu[0].label == on_cpu[0].label


def test_build_engines_builds_checks_against_onnxruntime_and_exits(fake_gpu, centernet, tmp_path, capsys):
    from fmdrive.cli import main
    trt, _, _ = fake_gpu('10.3.0')
    engines = str(tmp_path / 'engines')
    assert main(['build-engines', '--engines-dir', engines, '--precision', 'fp16', 'fp32']) == 0
    out, err = capsys.readouterr()
    assert 'camera_centernet/model fp16:' in out and 'fp32.plan' in out
    assert '[1/2] camera_centernet/model fp16' in err and "'heatmap': 0.0" in err
    assert len(trt.built) == 2
    assert main(['build-engines', '--engines-dir', engines, '--precision', 'fp16', '--build-only']) == 0
    assert len(trt.built) == 2                                    # plan matches: nothing rebuilt
    capsys.readouterr()
    assert main(['build-engines', '--engines-dir', engines, '--models', 'nope']) == 2
    err = capsys.readouterr().err
    assert 'nope' in err and 'camera_centernet' in err and len(err.strip().splitlines()) == 1


def test_build_engines_without_tensorrt_says_so_in_one_line(centernet, tmp_path, monkeypatch, capsys):
    from fmdrive.cli import main
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    assert main(['build-engines', '--engines-dir', str(tmp_path / 'engines')]) == 2
    assert capsys.readouterr().err.strip() == ('fmdrive build-engines: error: TensorRT is not installed here; '
                                               'use backend onnxruntime')


def test_a_refused_plan_releases_the_cuda_context(fake_gpu, centernet, tmp_path):
    _, _, log = fake_gpu('10.3.0')
    with pytest.raises(BackendError, match='no plan at'):
        TensorRTBackend(engines_dir=tmp_path / 'engines', build=False).load(centernet, 'fp32')
    assert log.count(('ctx_detach',)) == 1
    plan = tmp_path / 'engines' / 'build' / 'camera_centernet' / 'fp32.plan'
    TensorRTBackend(engines_dir=tmp_path / 'engines').load(centernet, 'fp32')
    plan.write_bytes(b'garbage')                      # a plan TensorRT cannot read, with a matching manifest
    record = json.loads(plan.with_name('fp32.manifest.json').read_text())
    record['plan_sha256'] = sha256(plan)
    plan.with_name('fp32.manifest.json').write_text(json.dumps(record))
    log.clear()
    with pytest.raises(BackendError, match='cannot deserialize'):
        TensorRTBackend(engines_dir=tmp_path / 'engines', build=False).load(centernet, 'fp32')
    assert log.count(('ctx_push',)) == log.count(('ctx_pop',)) and log.count(('ctx_detach',)) == 1
