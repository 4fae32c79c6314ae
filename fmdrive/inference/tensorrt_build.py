"""TensorRT plans built on the target, from the card's ONNX, with a manifest that says for what.

    engines/build/<model>/<precision>.plan             (<precision>.<network>.plan for two-network models)
    engines/build/<model>/<precision>.manifest.json    onnx sha256, TensorRT version, GPU name + compute
                                                       capability, precision, builder flags, plan sha256
    engines/build/<model>/timing.cache                 TensorRT timing cache, shared by the model's builds

A plan only runs on the TensorRT version and GPU it was built for, so `ensure_plan` compares the
manifest with the running system and rebuilds (or, with building off, refuses with the command
to run); a stale plan is never loaded silently. Precisions: fp32; fp16 (fp32 ONNX, FP16 flag);
int8 from the card's int8_trt file (explicit QDQ network: INT8 + FP16 flags, no calibrator) or,
when a model has only fp32, implicit INT8 with an entropy calibrator over the card's calibration
frames and its calibration cache. TensorRT 8.6 and 10.x are both handled; the differences (network
creation flag, workspace limit, progress monitor) are kept in this file.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmdrive.inference.backend import NO_TENSORRT, BackendError, check_precision
from fmdrive.inference.card import ModelCard, check_file, sha256_of

MANIFEST_KEYS = ('model', 'network', 'precision', 'variant', 'onnx_sha256', 'tensorrt_version', 'gpu_name',
                 'compute_capability', 'builder_flags', 'dla_core')


def import_tensorrt():
    """(tensorrt, pycuda.driver), or BackendError saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError(NO_TENSORRT) from None
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise BackendError('pycuda is not installed here (pip install pycuda); use backend onnxruntime') from None
    return trt, cuda


def trt_major(trt) -> int:
    return int(str(trt.__version__).split('.')[0])


@dataclass
class BuildOptions:
    engines_dir: Path | None = None         # default: the directory holding the card's model directory
    workspace_mb: int = 1024
    dla_core: int | None = None             # Jetson DLA core; layers DLA cannot run fall back to the GPU
    device_id: int = 0
    progress: object = None                 # callable(str) for progress lines; default stderr


def _say(options: BuildOptions, message: str):
    (options.progress or (lambda m: print(m, file=sys.stderr, flush=True)))(message)


def build_dir(card: ModelCard, engines_dir=None) -> Path:
    return Path(engines_dir or card.directory.parent) / 'build' / card.name


def plan_paths(card: ModelCard, precision: str, network: str, engines_dir=None) -> tuple[Path, Path]:
    stem = precision if len(card.networks) == 1 else f'{precision}.{network}'
    d = build_dir(card, engines_dir)
    return d / f'{stem}.plan', d / f'{stem}.manifest.json'


def trt_variant(card: ModelCard, precision: str) -> tuple[str, str]:
    """(file variant, build mode) TensorRT uses for a precision."""
    check_precision(precision)
    if precision == 'fp32':
        return 'fp32', 'fp32'
    if precision == 'fp16':
        return 'fp32', 'fp16'
    if 'int8_trt' in card.files:
        return 'int8_trt', 'int8_qdq'
    cal = card.calibration
    if cal is None or (cal.get('frames') is None and not cal['cache'].is_file()):
        raise BackendError(f'{card.name}: int8 needs files.int8_trt (QDQ) or calibration frames/cache in the '
                           'card for TensorRT to calibrate the fp32 model')
    if cal['method'] == 'percentile':
        raise BackendError(f'{card.name}: calibration.method percentile is for offline QDQ export; TensorRT '
                           'calibrates with entropy or minmax')
    return 'fp32', 'int8_calibrated'


def builder_flag_names(mode: str, dla_core) -> list[str]:
    flags = {'fp32': [], 'fp16': ['FP16'], 'int8_qdq': ['INT8', 'FP16'], 'int8_calibrated': ['INT8', 'FP16']}[mode]
    if dla_core is not None:
        flags = flags + ['GPU_FALLBACK']
    return flags


def system_info(cuda, device_id: int = 0) -> dict:
    cuda.init()
    dev = cuda.Device(device_id)
    major, minor = dev.compute_capability()
    return {'gpu_name': dev.name(), 'compute_capability': f'{major}.{minor}'}


def expected_manifest(card: ModelCard, precision: str, network: str, trt, cuda, options: BuildOptions) -> dict:
    variant, mode = trt_variant(card, precision)
    return {'model': card.name, 'network': network, 'precision': precision, 'variant': variant,
            'onnx_sha256': card.files[variant][network].sha256, 'tensorrt_version': str(trt.__version__),
            **system_info(cuda, options.device_id), 'builder_flags': builder_flag_names(mode, options.dla_core),
            'dla_core': options.dla_core}


def manifest_mismatch(expected: dict, plan: Path, manifest: Path) -> str | None:
    """Why the plan on disk cannot be used here (None when it can)."""
    if not plan.is_file():
        return f'no plan at {plan}'
    if not manifest.is_file():
        return f'{plan.name} has no manifest ({manifest.name})'
    try:
        found = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return f'{manifest.name} is not readable JSON'
    diffs = [f'{k} {found.get(k)!r} (here {expected[k]!r})' for k in MANIFEST_KEYS if found.get(k) != expected[k]]
    if diffs:
        return f'{plan.name} was built for another ' + '; '.join(diffs)
    if found.get('plan_sha256') != sha256_of(plan):
        return f'{plan.name} does not match the sha256 its manifest recorded'
    return None


def ensure_plan(card: ModelCard, precision: str, network: str, options: BuildOptions, build: bool = True,
                rebuild: bool = False) -> Path:
    """The plan for (card, precision, network) that matches this system: the one on disk when its
    manifest matches, else a fresh build; with build off a mismatch is refused (BackendError)."""
    trt, cuda = import_tensorrt()
    plan, manifest = plan_paths(card, precision, network, options.engines_dir)
    expected = expected_manifest(card, precision, network, trt, cuda, options)
    reason = 'rebuild asked for' if rebuild else manifest_mismatch(expected, plan, manifest)
    if reason is None:
        return plan
    if not build:
        raise BackendError(f'{card.name}/{network} {precision}: {reason}; build it on this machine: '
                           f'fmdrive build-engines --models {card.name} --precision {precision}')
    _say(options, f'{card.name}/{network} {precision}: {reason}; building the TensorRT plan (minutes)')
    build_plan(card, precision, network, options)
    return plan


# ------------------------------------------------------------------------------------------- build
def load_calibration_frames(card: ModelCard, network: str) -> dict | None:
    """{input name: (count, *input shape) array} from the card's calibration frames (.npz keyed by
    input name), or None when the card has no frames (then the calibration cache must exist)."""
    spec = card.calibration.get('frames')
    if spec is None:
        return None
    where = f'card {card.path}: calibration.frames'
    if not spec.path.is_file():
        raise BackendError(f'{where}: {spec.path} does not exist')
    if sha256_of(spec.path) != spec.sha256:
        raise BackendError(f'{where}.sha256: {spec.path.name} does not match the card')
    frames = {}
    with np.load(spec.path) as data:
        for t in card.networks[network].inputs:
            if t.name not in data:
                raise BackendError(f'{where}: {spec.path.name} has no array {t.name!r} (it has {list(data)})')
            a = data[t.name]
            if tuple(a.shape[1:]) != tuple(t.shape):
                raise BackendError(f'{where}: {t.name} frames are {list(a.shape)}, expected [count, '
                                   f'{", ".join(map(str, t.shape))}]')
            frames[t.name] = np.ascontiguousarray(a.astype(t.dtype))
    counts = {len(a) for a in frames.values()}
    if len(counts) != 1 or 0 in counts:
        raise BackendError(f'{where}: every input needs the same, non-zero number of frames (got {counts})')
    return frames


def make_calibrator(trt, cuda, frames: dict | None, cache_path: Path, method: str = 'entropy'):
    """An IInt8EntropyCalibrator2 (or MinMax) that feeds one frame per batch from pinned host memory
    through one device buffer per input, and reads/writes TensorRT's calibration cache."""
    base = trt.IInt8MinMaxCalibrator if method == 'minmax' else trt.IInt8EntropyCalibrator2

    class Calibrator(base):
        def __init__(self):
            base.__init__(self)
            self.frames, self.index = frames or {}, 0
            self.count = len(next(iter(self.frames.values()))) if self.frames else 0
            self.device = {n: cuda.mem_alloc(a[0].nbytes) for n, a in self.frames.items()}
            self.host = {n: cuda.pagelocked_empty(a[0].shape, a.dtype) for n, a in self.frames.items()}

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            if self.index >= self.count:
                return None
            for name in names:
                np.copyto(self.host[name], self.frames[name][self.index])
                cuda.memcpy_htod(self.device[name], self.host[name])
            self.index += 1
            return [int(self.device[name]) for name in names]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(bytes(cache))

    return Calibrator()


def _progress_monitor(trt, options: BuildOptions):
    """TensorRT 10's IProgressMonitor, printing each top-level build phase."""
    if not hasattr(trt, 'IProgressMonitor'):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                _say(options, f'  {phase_name} ({num_steps} steps)')

        def step_complete(self, phase_name, step):
            return True         # keep building

        def phase_finish(self, phase_name):
            pass

    return Monitor()


def build_plan(card: ModelCard, precision: str, network: str, options: BuildOptions) -> Path:
    """Build and write the plan + manifest for one network of the card; returns the plan path."""
    trt, cuda = import_tensorrt()
    variant, mode = trt_variant(card, precision)
    onnx_file = check_file(card, variant, network)
    net_spec = card.networks[network]
    plan, manifest = plan_paths(card, precision, network, options.engines_dir)
    plan.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cuda.init()
    ctx = cuda.Device(options.device_id).retain_primary_context()
    ctx.push()
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        if mode in ('fp16', 'int8_qdq', 'int8_calibrated') and not builder.platform_has_fast_fp16:
            _say(options, f'  note: this GPU has no fast FP16; {precision} layers may run slower')
        if mode == 'int8_calibrated' and not builder.platform_has_fast_int8:
            raise BackendError(f'{card.name}: this GPU has no INT8 support; use precision fp16')
        # TensorRT 10 networks are always explicit-batch (the flag is deprecated there)
        flags = 0 if trt_major(trt) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network_def = builder.create_network(flags)
        parser = trt.OnnxParser(network_def, logger)
        if not parser.parse_from_file(str(onnx_file.path)):
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f'{card.name}/{network}: TensorRT cannot parse {onnx_file.path.name}: {errors}')
        config = builder.create_builder_config()
        workspace = int(options.workspace_mb) << 20
        if hasattr(config, 'set_memory_pool_limit'):          # TensorRT >= 8.4, the only way on 10.x
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        else:                                                 # TensorRT 8.0-8.2
            config.max_workspace_size = workspace
        for name in builder_flag_names(mode, options.dla_core):
            config.set_flag(getattr(trt.BuilderFlag, name))
        if options.dla_core is not None:
            if mode == 'fp32':
                raise BackendError(f'{card.name}: DLA runs fp16 or int8 only; use precision fp16 or int8')
            if options.dla_core >= builder.num_DLA_cores:
                raise BackendError(f'dla_core {options.dla_core}: this device has {builder.num_DLA_cores} DLA cores')
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(options.dla_core)
        profile = _fixed_profile(trt, builder, network_def, net_spec, card)
        if profile is not None:
            config.add_optimization_profile(profile)
        timing_path = plan.parent / 'timing.cache'
        timing_cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b'')
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
        monitor = _progress_monitor(trt, options)
        if monitor is not None:
            config.progress_monitor = monitor
        calibrator = None
        if mode == 'int8_calibrated':
            frames = load_calibration_frames(card, network)
            cache = card.calibration['cache']
            cache = cache.with_name(f'{cache.stem}.{network}{cache.suffix}') if len(card.networks) > 1 else cache
            calibrator = make_calibrator(trt, cuda, frames, cache, card.calibration['method'])
            config.int8_calibrator = calibrator
            if profile is not None:
                config.set_calibration_profile(profile)
            _say(options, f'  calibrating on {calibrator.count} frames (cache {cache})' if frames
                 else f'  calibration from the cache {cache}')
        serialized = builder.build_serialized_network(network_def, config)
        if serialized is None:
            raise BackendError(f'{card.name}/{network} {precision}: TensorRT could not build a plan '
                               '(see the TensorRT log above; a bigger --workspace-mb may help)')
        plan.write_bytes(bytes(serialized))
        timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    finally:
        ctx.pop()
    record = expected_manifest(card, precision, network, trt, cuda, options)
    record.update({'onnx': onnx_file.path.name, 'plan_sha256': hashlib.sha256(plan.read_bytes()).hexdigest(),
                   'workspace_mb': int(options.workspace_mb), 'build_seconds': round(time.monotonic() - started, 1),
                   'built_at': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')})
    manifest.write_text(json.dumps(record, indent=2) + '\n')
    _say(options, f'{card.name}/{network} {precision}: {plan} ({plan.stat().st_size / 1e6:.1f} MB, '
                  f'{record["build_seconds"]:.0f} s)')
    return plan


def dynamic_dims(card: ModelCard) -> dict:
    """(min, opt, max) of each named (dynamic) dimension the card's shapes use: the card's
    decoder.dynamic_dims, and for a causal LM (hf_causal_lm_with_past) defaults from
    decoder.max_positions (batch 1; a new chunk of 1..max tokens after 0..max-1 past ones)."""
    dims = {}
    if card.io_convention == 'hf_causal_lm_with_past':
        n = int(card.decoder.get('max_positions', 512))
        dims = {'batch': (1, 1, 1), 'sequence': (1, min(64, n), n), 'past_sequence': (0, n // 2, n - 1),
                'total_sequence': (1, n // 2 + 1, n)}
    for name, value in dict(card.decoder.get('dynamic_dims', {})).items():
        if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, int) for v in value)
                and 0 <= value[0] <= value[1] <= value[2]):
            raise BackendError(f'card {card.path}: decoder.dynamic_dims.{name}: must be [min, opt, max] integers, '
                               f'min <= opt <= max, got {value!r}')
        dims[name] = tuple(value)
    return dims


def profile_shapes(card: ModelCard, net_spec, name: str) -> tuple[tuple, tuple, tuple]:
    """(min, opt, max) shapes of one input: its fixed sizes, and dynamic_dims for its named ones."""
    shape, dims = net_spec.input(name).shape, dynamic_dims(card)
    missing = [d for d in shape if isinstance(d, str) and d not in dims]
    if missing:
        raise BackendError(f'card {card.path}: networks.{net_spec.name}.inputs.{name}.shape: TensorRT plans need a '
                           f'size range for the dynamic dimension(s) {missing}: give decoder.dynamic_dims '
                           f'{{name: [min, opt, max]}}, or fixed sizes')
    return tuple(tuple(d if isinstance(d, int) else dims[d][k] for d in shape) for k in range(3))


def _fixed_profile(trt, builder, network_def, net_spec, card):
    """An optimisation profile for the dynamic ONNX inputs (None if static): the card's fixed shape,
    or the (min, opt, max) range of each named dimension (dynamic_dims) - the LM's sequence lengths."""
    dynamic = []
    for i in range(network_def.num_inputs):
        tensor = network_def.get_input(i)
        if any(int(d) < 0 for d in tensor.shape):
            dynamic.append(tensor.name)
    if not dynamic:
        return None
    profile = builder.create_optimization_profile()
    for name in dynamic:
        profile.set_shape(name, *profile_shapes(card, net_spec, name))
    return profile
