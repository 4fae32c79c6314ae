"""`fmdrive build-engines`: build the TensorRT plans of engines/*/card.yaml on the target and exit,
like Autoware's build_only, so the first drive does not wait for TensorRT.

Each plan is checked afterwards (unless --build-only): loaded with building off, run once on a
calibration frame (or a fixed random input) and compared with ONNX Runtime fp32 on the same input.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from fmdrive.inference.backend import PRECISIONS, BackendError
from fmdrive.inference.card import CardError, ModelCard, load_card


def add_arguments(p):
    p.add_argument('--models', nargs='+', default=None, metavar='MODEL',
                   help='model directories under --engines-dir (default: every one with a card.yaml)')
    p.add_argument('--precision', nargs='+', choices=PRECISIONS, default=None,
                   help='default: int8 where the card has an INT8 variant or calibration, else fp16')
    p.add_argument('--build-only', action='store_true',
                   help='build the plans and exit, without the check run against ONNX Runtime')
    p.add_argument('--rebuild', action='store_true', help='build even when a matching plan exists')
    p.add_argument('--engines-dir', default='engines')
    p.add_argument('--workspace-mb', type=int, default=1024, help='TensorRT builder workspace limit')
    p.add_argument('--dla-core', type=int, default=None, help='build for this DLA core (GPU fallback on)')


def find_cards(engines_dir: Path, models) -> list[ModelCard]:
    engines_dir = Path(engines_dir)
    available = sorted(d.name for d in engines_dir.iterdir() if (d / 'card.yaml').is_file()) \
        if engines_dir.is_dir() else []
    if models is None:
        if not available:
            raise CardError(f'card {engines_dir}/*/card.yaml: no model cards under {engines_dir}')
        models = available
    cards = []
    for name in models:
        if name not in available:
            raise CardError(f'card {engines_dir / name / "card.yaml"}: does not exist (models here: '
                            f'{", ".join(available) or "none"})')
        cards.append(load_card(engines_dir / name))
    return cards


def default_precisions(card: ModelCard) -> list[str]:
    return ['int8'] if ('int8_trt' in card.files or card.calibration) else ['fp16']


def check_input(card: ModelCard, network: str) -> dict:
    """One input for the check run: the first calibration frame when the card has frames, else a
    fixed random input (seed 0)."""
    frames = card.calibration.get('frames') if card.calibration else None
    if frames is not None and frames.path.is_file():
        with np.load(frames.path) as data:
            if all(t.name in data for t in card.networks[network].inputs):
                return {t.name: data[t.name][0].astype(t.dtype) for t in card.networks[network].inputs}
    rng = np.random.default_rng(0)
    return {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in card.networks[network].inputs}


def build_engines(engines_dir='engines', models=None, precisions=None, build_only=False, rebuild=False,
                  workspace_mb=1024, dla_core=None, progress=None) -> list[dict]:
    from fmdrive.inference.tensorrt_build import (
        BuildOptions,
        ensure_plan,
        import_tensorrt,
    )
    say = progress or (lambda m: print(m, file=sys.stderr, flush=True))
    import_tensorrt()      # says "TensorRT is not installed here; ..." before any work
    cards = find_cards(Path(engines_dir), models)
    options = BuildOptions(Path(engines_dir), workspace_mb, dla_core, 0, say)
    jobs = [(c, p, n) for c in cards if c.task != 'causal_lm' for p in (precisions or default_precisions(c))
            for n in c.networks]
    for c in cards:
        if c.task == 'causal_lm':
            say(f'{c.name}: causal_lm models run on ONNX Runtime (KV cache); no TensorRT plan built')
    results = []
    for i, (card, precision, network) in enumerate(jobs, 1):
        say(f'[{i}/{len(jobs)}] {card.name}/{network} {precision}')
        started = time.monotonic()
        plan = ensure_plan(card, precision, network, options, build=True, rebuild=rebuild)
        result = {'model': card.name, 'network': network, 'precision': precision, 'plan': str(plan),
                  'seconds': round(time.monotonic() - started, 1)}
        if not build_only:
            result['max_abs_diff_vs_onnxruntime_fp32'] = _check_plan(card, precision, network, options)
            say(f'  check run: max |TensorRT - ONNX Runtime fp32| per output '
                f'{result["max_abs_diff_vs_onnxruntime_fp32"]}')
        results.append(result)
    return results


def _check_plan(card: ModelCard, precision: str, network: str, options) -> dict:
    from fmdrive.inference.onnxruntime_backend import OnnxRuntimeBackend
    from fmdrive.inference.tensorrt_backend import TensorRTBackend
    trt = TensorRTBackend(options.engines_dir, build=False, device_id=options.device_id,
                          workspace_mb=options.workspace_mb, dla_core=options.dla_core, progress=options.progress)
    trt.load(card, precision, network)
    ort = OnnxRuntimeBackend(providers=['CPUExecutionProvider'])
    ort.load(card, 'fp32', network)
    feed = check_input(card, network)
    got, want = trt.infer(feed), ort.infer(feed)
    trt.close()
    return {name: round(float(np.max(np.abs(got[name].astype(np.float64) - want[name]))), 6) for name in want}


def run(args) -> int:
    """The command; a user-caused error (card, files, TensorRT missing) is one line and exit code 2."""
    try:
        results = build_engines(args.engines_dir, args.models, args.precision, args.build_only, args.rebuild,
                                args.workspace_mb, args.dla_core)
    except (CardError, BackendError) as e:
        print(f'fmdrive build-engines: error: {e}', file=sys.stderr)
        return 2
    for r in results:
        print(f'{r["model"]}/{r["network"]} {r["precision"]}: {r["plan"]}')
    return 0
