"""Camera checkpoint -> engines/camera_centernet/: fp32.onnx (checked against torch), int8_trt.onnx and
int8_cpu.onnx (the same QDQ recipes as the LiDAR model, export.quantize_variant) calibrated on train
images, the calibration method chosen by val 2D mAP, and card.yaml. As for the LiDAR model, the best
method is then tried with the output heads in float (heatmap, size, offset, depth; not the
embedding) and that is kept if val 2D mAP gains FLOAT_HEADS_MIN_GAIN.

    fmdrive export camera --checkpoint runs/camera/best.pt --out engines/camera_centernet
    fmdrive quantize camera --model-dir engines/camera_centernet --data runs/dataset
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from fmdrive.training.export import (CALIBRATION_METHODS, FLOAT_HEADS_MIN_GAIN, OPSET, export_onnx, ort_outputs,
                                     ort_session, output_cosine, output_head_nodes, quantize_variant, ranges_cache_name,
                                     sha256, write_card)

MODEL_NAME = 'camera_centernet'
DECODER = {'score_threshold': 0.3, 'top_k': 100}


def card_dict(cfg, files=None, calibration=None, training=None, metrics=None, decoder=None) -> dict:
    from fmdrive.training.camera_model import MEAN, STD
    from fmdrive.training.dataset import LETTERBOX_PAD
    H, W = cfg.input_hw
    h, w = H // cfg.stride, W // cfg.stride
    outputs = [('heatmap', len(cfg.classes)), ('size', 2), ('offset', 2), ('depth', 1), ('embedding', cfg.embed_dim)]
    card = {
        'name': MODEL_NAME, 'version': '1.0.0', 'task': 'camera_detector', 'io_convention': 'fmdrive_centernet',
        'opset': OPSET, 'classes': list(cfg.classes),
        'networks': {'model': {
            'inputs': [{'name': 'image', 'shape': [1, 3, H, W], 'dtype': 'float32',
                        'normalisation': {'scale': 1 / 255.0, 'mean': list(MEAN), 'std': list(STD),
                                          'channel_order': 'rgb',
                                          'letterbox': {'pad_value': float(LETTERBOX_PAD), 'align': 'center'}}}],
            'outputs': [{'name': n, 'shape': [1, c, h, w], 'dtype': 'float32'} for n, c in outputs]}},
        'files': {v: {'model': {'path': p, 'sha256': s}}
                  for v, (p, s) in (files or {'fp32': ('fp32.onnx', '0' * 64)}).items()},
        'decoder': dict(decoder or DECODER),
    }
    for key, value in (('calibration', calibration), ('training', training), ('metrics', metrics)):
        if value:
            card[key] = value
    return card


def card_for(cfg, path):
    from fmdrive.inference.card import parse_card
    return parse_card(card_dict(cfg), Path(path))


def _inputs(frames) -> np.ndarray:
    from fmdrive.training.camera_model import normalise
    return normalise(np.stack([f.image for f in frames]))


def _ap(outputs, frames, card) -> dict:
    from fmdrive.training.camera_model import ap_2d, decode_batch
    return ap_2d([decode_batch(o, card) for o in outputs], frames)


def export_camera(checkpoint, out_dir, data_dir, log=print) -> dict:
    import torch

    from fmdrive.training.camera_model import OUTPUT_NAMES
    from fmdrive.training.dataset import SPLIT_SEEDS, load_split
    from fmdrive.training.train_camera import load_model
    ck = torch.load(checkpoint, weights_only=False, map_location='cpu')
    model = load_model(checkpoint)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    val = load_split(data_dir, 'val')[::2]
    sample = _inputs(val[:1])
    diff = export_onnx(model, out_dir / 'fp32.onnx', sample.shape, OPSET, sample, log, 'image', OUTPUT_NAMES)
    decoder, tuning = tune_decoder(out_dir / 'fp32.onnx', model.cfg, val, log)
    tc = ck.get('train_config', {})
    training = {'command': f"fmdrive train camera --data {tc.get('data')} --out {tc.get('out')} --epochs "
                           f"{tc.get('epochs')} --batch-pairs {tc.get('batch_pairs')} --seed {tc.get('seed')} "
                           f"--patience {tc.get('patience')} --max-minutes {tc.get('max_minutes')} "
                           f"(crop_width {tc.get('crop_width', 0)})",
                'data_seed': SPLIT_SEEDS['train'],
                'data': 'fmdrive train dataset --out runs/dataset --scenes 72 (letterboxed 640x360 camera images)',
                'notes': f'export: fmdrive export camera --checkpoint {checkpoint} --out {out_dir}; INT8: fmdrive '
                         f'quantize camera --model-dir {out_dir} --data {data_dir}'}
    write_card(card_dict(model.cfg, {'fp32': ('fp32.onnx', sha256(out_dir / 'fp32.onnx'))}, training=training,
                         metrics={'export_max_abs_diff': max(diff.values()), 'val_decoder_tuning': tuning},
                         decoder=decoder), out_dir)
    return {'max_abs_diff': diff, 'card': str(out_dir / 'card.yaml')}


def tune_decoder(onnx_path, cfg, frames, log=print) -> tuple[dict, dict]:
    """The score threshold with the best val 2D mAP, kept >= 0.1 so fusion is not fed a cloud of
    low-score boxes (a short training leaves the heatmap peaks of true objects near 0.3-0.5)."""
    outputs = ort_outputs(ort_session(onnx_path), _inputs(frames))
    results, best = {}, None
    for threshold in (0.1, 0.2, 0.3):
        decoder = {**DECODER, 'score_threshold': threshold}
        card = parse_card_dict(card_dict(cfg, decoder=decoder), Path(onnx_path).parent / 'card.yaml')
        results[f'threshold {threshold}'] = m = _ap(outputs, frames, card)['map']
        if best is None or m > best[0]:
            best = (m, decoder)
    log('decoder tuning on val (2D mAP): ' + ', '.join(f'{k}: {v}' for k, v in results.items()))
    return best[1], results


def parse_card_dict(card: dict, path):
    from fmdrive.inference.card import parse_card
    return parse_card(card, Path(path))


def quantize_camera(model_dir, data_dir, calib_frames: int = 256, methods=CALIBRATION_METHODS, val_every: int = 2,
                    log=print) -> dict:
    import yaml

    from fmdrive.inference.card import parse_card
    from fmdrive.training.dataset import load_split
    model_dir = Path(model_dir)
    card_yaml = yaml.safe_load((model_dir / 'card.yaml').read_text())
    card = parse_card(card_yaml, model_dir / 'card.yaml')
    train = load_split(data_dir, 'train')
    pick = np.linspace(0, len(train) - 1, min(calib_frames, len(train))).round().astype(int)
    calib = _inputs([train[i] for i in pick])
    del train
    val = load_split(data_dir, 'val')[::val_every]
    val_inputs = _inputs(val)
    fp32 = ort_outputs(ort_session(model_dir / 'fp32.onnx'), val_inputs)
    ap_fp32 = _ap(fp32, val, card)
    work = Path(data_dir) / 'cache' / 'quantize_camera'
    work.mkdir(parents=True, exist_ok=True)
    comparison = {}

    def run(method: str, float_nodes=(), tag: str = '') -> dict:
        t0 = time.perf_counter()
        cache = work / ranges_cache_name(method, model_dir / 'fp32.onnx', len(calib))
        row = {}
        for variant in ('int8_cpu', 'int8_trt'):
            path = work / f'{variant}_{method}{tag}.onnx'
            quantize_variant(model_dir / 'fp32.onnx', path, variant, method, calib, cache, 'image', float_nodes)
            outs = ort_outputs(ort_session(path), val_inputs)
            ap = _ap(outs, val, card)
            row[variant] = {'map': ap['map'], 'ap': ap['ap'], 'cosine': round(output_cosine(
                outs, fp32, ('heatmap', 'size', 'offset', 'depth', 'embedding')), 5)}
        row['seconds'] = round(time.perf_counter() - t0, 1)
        log(f'calibration {method + tag:22s}: ' + '  '.join(f'{v} 2D mAP {row[v]["map"]} cosine {row[v]["cosine"]}'
                                                            for v in ('int8_cpu', 'int8_trt')) + f'  ({row["seconds"]} s)')
        return row

    for method in methods:
        comparison[method] = run(method)
    best = max(comparison, key=lambda m: (comparison[m]['int8_cpu']['map'], comparison[m]['int8_trt']['map']))
    float_nodes, tag = [], ''
    heads = output_head_nodes(model_dir / 'fp32.onnx')
    if heads:
        # every method again with the heads in float (its ranges are cached: seconds each); the best of
        # those is kept if it beats the best all-INT8 graph by FLOAT_HEADS_MIN_GAIN
        for method in methods:
            comparison[f'{method}+float_heads'] = {**run(method, heads, '_float_heads'), 'float_nodes': heads}
        with_heads = max(methods, key=lambda m: (comparison[f'{m}+float_heads']['int8_cpu']['map'],
                                                  comparison[f'{m}+float_heads']['int8_trt']['map']))
        if comparison[f'{with_heads}+float_heads']['int8_cpu']['map'] >= \
                comparison[best]['int8_cpu']['map'] + FLOAT_HEADS_MIN_GAIN:
            best, float_nodes, tag = with_heads, heads, '_float_heads'
    log(f'val fp32 2D mAP {ap_fp32["map"]}; kept calibration method: {best}'
        + (f' with {len(float_nodes)} output-head nodes in float' if float_nodes else ''))
    for variant in ('int8_cpu', 'int8_trt'):
        shutil.copyfile(work / f'{variant}_{best}{tag}.onnx', model_dir / f'{variant}.onnx')
    card_yaml['files'] = {v: {'model': {'path': f'{v}.onnx', 'sha256': sha256(model_dir / f'{v}.onnx')}}
                          for v in ('fp32', 'int8_trt', 'int8_cpu')}
    card_yaml['calibration'] = {'source': f'{len(calib)} evenly spaced letterboxed images of the train split of '
                                          f'{Path(data_dir).name} (train seed 101)',
                                'count': int(len(calib)), 'method': best}
    if float_nodes:
        card_yaml['calibration']['float_nodes'] = list(float_nodes)
    card_yaml['metrics'] = {**card_yaml.get('metrics', {}), 'val_ap_fp32': ap_fp32['ap'],
                            'val_map_fp32': ap_fp32['map'], 'calibration_comparison': comparison}
    write_card(card_yaml, model_dir)
    return {'best_method': best, 'float_nodes': list(float_nodes), 'comparison': comparison, 'val_fp32': ap_fp32}
