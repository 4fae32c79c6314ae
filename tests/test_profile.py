"""`fmdrive profile`: parameters, MACs and memory of a tiny model worked out by hand, latency measured
for each precision file present, the roofline estimate's fields, one-line errors, the committed camera
model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from onnx import helper
from test_inference_helpers import NORMALISATION, base_card, quantize_qdq, save_model, tensor, write_card

from fmdrive import cli, config
from fmdrive.inference.card import CardError
from fmdrive.profile import ORIN_DEVICES, profile_model

H = W = 8           # image [1, 3, 8, 8] -> heads [1, C, 4, 4] (stride 2)
C, E = 4, 2         # classes, embedding channels

# the tiny model's weights: name -> shape; which are quantized (1 byte at int8) and which are biases (4 bytes)
WEIGHTS = {'w1': (4, 3, 3, 3), 'b1': (4,), 'w2': (4, 1, 3, 3), 'w3': (2, 4, 1, 1), 'b3': (2,), 'w4': (4, 2),
           'w5': (8, 4), 'b5': (8,), 'w6': (4, E, 3, 3)}
BIASES = ('b1', 'b3', 'b5')
# by hand, per layer (output elements x multiply-accumulates per element):
MACS = {'conv1': (4 * 4 * 4) * (3 * 3 * 3),      # Conv 3 -> 4 channels, 3x3, stride 2: 64 outputs x 27 = 1728
        'conv2': (4 * 4 * 4) * (1 * 3 * 3),      # depthwise (groups 4): 64 outputs x 1 channel x 9 = 576
        'conv3': (2 * 4 * 4) * 4,                # 1x1, 4 -> 2: 32 outputs x 4 = 128
        'matmul': (1 * 4 * 4 * 2) * 4,           # batched [1, 4, 4, 4] @ [4, 2]: 32 outputs x K 4 = 128
        'gemm': 8 * 4,                           # [1, 4] @ [4, 8]^T: 8 outputs x K 4 = 32
        'deconv': (4 * 4 * 4) * (E * 3 * 3)}     # ConvTranspose 4 -> 2, 3x3: 64 inputs x 2 x 9 = 1152
PARAMS = sum(int(np.prod(s)) for s in WEIGHTS.values())                     # 278
INT8_WEIGHT_BYTES = sum(int(np.prod(s)) * (4 if n in BIASES else 1) for n, s in WEIGHTS.items())
# tensors in elements; graph order: conv1 relu conv2 sigmoid conv3 to_nhwc matmul to_nchw gap flatten gemm
# deconv
OUTPUTS = {'heatmap': C * 16, 'size': 2 * 16, 'offset': 2 * 16, 'pooled_fc': 8, 'embedding': E * 16}
INTERMEDIATES = {'feat': 64, 'r': 64, 'logits': 64, 'rt': 64, 'mm': 32, 'gap': 4, 'flat': 4}
# most live at once: the image (192) with conv1's output (64) at the first node, or at the MatMul
# r 64 + heatmap 64 + size 32 + rt 64 + mm 32 = 256
PEAK = 256
OUTPUT_SPECS = [('heatmap', (1, C, 4, 4), np.float32), ('size', (1, 2, 4, 4), np.float32),
                ('offset', (1, 2, 4, 4), np.float32), ('pooled_fc', (1, 8), np.float32),
                ('embedding', (1, E, 4, 4), np.float32)]


def tiny_model(path):
    """A CenterNet-convention model exercising each counted op: Conv (plain, depthwise, 1x1), a batched
    MatMul, a Gemm (an extra output, which the convention passes through) and a ConvTranspose."""
    rng = np.random.default_rng(0)
    inits = {name: rng.standard_normal(shape).astype(np.float32) * 0.5 for name, shape in WEIGHTS.items()}
    inits['flat_axis'] = np.array([1, -1], np.int64)       # a shape tensor: not a weight
    nodes = [
        helper.make_node('Conv', ['image', 'w1', 'b1'], ['feat'], name='conv1', kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node('Relu', ['feat'], ['r'], name='relu'),
        helper.make_node('Conv', ['r', 'w2'], ['logits'], name='conv2', group=4, pads=[1, 1, 1, 1]),
        helper.make_node('Sigmoid', ['logits'], ['heatmap'], name='sigmoid'),
        helper.make_node('Conv', ['r', 'w3', 'b3'], ['size'], name='conv3'),
        helper.make_node('Transpose', ['r'], ['rt'], name='to_nhwc', perm=[0, 2, 3, 1]),
        helper.make_node('MatMul', ['rt', 'w4'], ['mm'], name='matmul'),
        helper.make_node('Transpose', ['mm'], ['offset'], name='to_nchw', perm=[0, 3, 1, 2]),
        helper.make_node('GlobalAveragePool', ['r'], ['gap'], name='gap'),
        helper.make_node('Reshape', ['gap', 'flat_axis'], ['flat'], name='flatten'),
        helper.make_node('Gemm', ['flat', 'w5', 'b5'], ['pooled_fc'], name='gemm', transB=1),
        helper.make_node('ConvTranspose', ['r', 'w6'], ['embedding'], name='deconv', pads=[1, 1, 1, 1]),
    ]
    return save_model(path, [('image', (1, 3, H, W), np.float32)], OUTPUT_SPECS, nodes, inits)


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    """The tiny model with its card, fp32 + int8_cpu (U8S8) + int8_trt (S8S8) files: a user's own model."""
    d = tmp_path_factory.mktemp('profile') / 'my_tiny'
    fp32 = tiny_model(d / 'fp32.onnx')
    frames = [{'image': np.random.default_rng(i).standard_normal((1, 3, H, W)).astype(np.float32)}
              for i in range(4)]
    quantize_qdq(fp32, d / 'int8_cpu.onnx', frames, symmetric=False)
    quantize_qdq(fp32, d / 'int8_trt.onnx', frames, symmetric=True)
    networks = {'model': {'inputs': [tensor('image', (1, 3, H, W), normalisation=NORMALISATION)],
                          'outputs': [tensor(name, shape) for name, shape, _ in OUTPUT_SPECS]}}
    card = base_card('my_tiny', 'camera_detector', 'fmdrive_centernet', networks,
                     calibration={'count': 4, 'source': 'random frames (test)', 'method': 'minmax'})
    write_card(d, card, {'fp32': {'model': fp32}, 'int8_cpu': {'model': d / 'int8_cpu.onnx'},
                         'int8_trt': {'model': d / 'int8_trt.onnx'}})
    return d


@pytest.fixture(scope='module')
def tiny(tiny_dir):
    return profile_model(tiny_dir, runs=3, warmup=1)


def test_parameters_and_macs_are_the_ones_worked_out_by_hand(tiny):
    assert tiny['parameters'] == PARAMS == 278          # the int64 shape tensor is not counted
    assert tiny['macs'] == sum(MACS.values()) == 3744 and tiny['flops'] == 2 * 3744
    layers = {layer['name']: layer for layer in tiny['networks']['model']['layers']}
    for name, macs in MACS.items():
        assert layers[name]['macs'] == macs, name
    assert layers['conv1']['params'] == 4 * 27 + 4 and layers['gemm']['params'] == 32 + 8
    assert layers['conv1']['output_shape'] == [1, 4, 4, 4] and layers['gemm']['output_shape'] == [1, 8]
    assert layers['relu']['macs'] == 0 and layers['flatten']['params'] == 0
    assert len(layers) == 12                            # every node in the JSON, not only the top ones
    assert tiny['networks']['model']['other_ops_0_macs'] == {'Transpose': 2, 'Relu': 1, 'Sigmoid': 1,
                                                              'GlobalAveragePool': 1, 'Reshape': 1}


def test_weight_and_activation_memory_per_precision(tiny):
    weights = tiny['memory']['weight_bytes']
    assert weights == {'fp32': 4 * PARAMS, 'fp16': 2 * PARAMS, 'int8': INT8_WEIGHT_BYTES}
    assert INT8_WEIGHT_BYTES == (278 - 14) + 4 * 14      # 14 bias values stay 4 bytes
    for precision, size in (('fp32', 4), ('fp16', 2), ('int8', 1)):
        act = tiny['memory']['activation_bytes'][precision]
        assert act['inputs'] == 3 * H * W * size
        assert act['outputs'] == sum(OUTPUTS.values()) * size
        assert act['intermediates'] == sum(INTERMEDIATES.values()) * size
        assert act['all_written'] == (sum(OUTPUTS.values()) + sum(INTERMEDIATES.values())) * size
        assert act['peak_live'] == PEAK * size


def test_latency_is_measured_for_every_precision_file_and_fp16_is_not_faked(tiny):
    variants = tiny['latency_here']['variants']
    for variant in ('fp32', 'int8_cpu', 'int8_trt'):
        v = variants[variant]
        assert v['files'] == [f'{variant}.onnx'] and 0 < v['p50_ms'] <= v['p99_ms'], variant
    assert variants['fp16'] == {'skipped': 'not measured here (no GPU)'}
    assert '3 runs after 1 warm-up' in tiny['latency_here']['note']


def test_roofline_states_its_assumptions_and_is_consistent(tiny):
    roof = tiny['roofline']
    assert 'ESTIMATE' in roof['note'] and roof['devices'] == ORIN_DEVICES
    assert ORIN_DEVICES['Jetson AGX Orin 64GB']['int8_tops'] == 85.0
    assert ORIN_DEVICES['Jetson AGX Orin 64GB']['dram_gb_s'] == 204.8
    rows = {(r['device'], r['precision']): r for r in roof['estimates']}
    assert len(rows) == len(ORIN_DEVICES) * 3         # fp32, fp16, int8 per device
    r = rows[('Jetson AGX Orin 64GB', 'int8')]
    act = tiny['memory']['activation_bytes']['int8']
    moved = INT8_WEIGHT_BYTES + act['inputs'] + act['outputs'] + 2 * act['intermediates']
    assert r['bytes_moved'] == moved
    assert r['intensity_flop_per_byte'] == pytest.approx(2 * 3744 / moved, abs=0.01)
    assert r['bound'] == 'memory'                       # a tiny model: ~4 FLOP per byte, far below the ridge
    assert r['latency_ms'] == pytest.approx(moved / 204.8e9 * 1e3, abs=1e-4)
    assert r['ideal_ms'] <= r['latency_ms']


def test_a_variant_whose_file_is_missing_is_skipped_with_the_reason(tiny_dir, tmp_path):
    import shutil
    d = tmp_path / 'copy'
    shutil.copytree(tiny_dir, d)
    (d / 'int8_trt.onnx').unlink()
    result = profile_model(d, runs=1, warmup=0)
    assert result['latency_here']['variants']['int8_trt'] == {'skipped': 'int8_trt.onnx does not exist'}
    assert 'p50_ms' in result['latency_here']['variants']['int8_cpu']


def test_a_two_network_card_counts_both_and_times_them_one_after_the_other(tmp_path):
    from test_inference_helpers import autoware_card, autoware_encoder_model, autoware_head_model
    autoware_card(tmp_path, autoware_encoder_model(tmp_path / 'encoder.onnx'),
                  autoware_head_model(tmp_path / 'head.onnx'))
    result = profile_model(tmp_path, runs=2, warmup=0)
    encoder, head = result['networks']['encoder'], result['networks']['head']
    assert encoder['macs'] == 2000 * 32 * 32 * 9           # [2000, 32, 9] @ [9, 32]
    assert head['macs'] == 5 * 160 * 160 * 32              # 1x1 Conv 32 -> 5 classes at 160 x 160
    assert result['macs'] == encoder['macs'] + head['macs']
    assert result['parameters'] == encoder['parameters'] + head['parameters']
    fp32 = result['latency_here']['variants']['fp32']
    assert fp32['files'] == ['encoder.onnx', 'head.onnx']
    assert set(fp32['p50_ms_per_network']) == {'encoder', 'head'}


def test_the_cli_prints_one_json_object_and_text_with_the_top_layers(tiny_dir, capsys):
    assert cli.main(['profile', str(tiny_dir), '--json', '--runs', '2', '--warmup', '0']) == 0
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result['model'] == 'my_tiny' and result['macs'] == 3744
    assert cli.main(['profile', str(tiny_dir), '--runs', '2', '--warmup', '0']) == 0
    text = capsys.readouterr().out
    assert 'MACs        3,744' in text and 'ESTIMATE' in text and 'not measured here (no GPU)' in text
    assert 'deconv' in text and '204.8 GB/s' in text


def one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    err = captured.err.strip()
    assert '\n' not in err and 'Traceback' not in err and err.startswith('fmdrive profile: error: ')
    return err


def test_an_unknown_model_is_one_line_naming_the_models_there(capsys):
    err = one_line_error(capsys, ['profile', 'no_such_model'])
    assert "unknown model 'no_such_model'" in err and 'camera_centernet' in err


def test_a_broken_card_or_a_missing_fp32_file_is_the_card_loaders_one_line(tiny_dir, tmp_path, capsys):
    import shutil
    d = tmp_path / 'broken'
    shutil.copytree(tiny_dir, d)
    card = yaml.safe_load((d / 'card.yaml').read_text())
    card['bogus'] = 1
    (d / 'card.yaml').write_text(yaml.safe_dump(card))
    assert 'bogus: unknown key' in one_line_error(capsys, ['profile', str(d)])
    del card['bogus']
    (d / 'card.yaml').write_text(yaml.safe_dump(card))
    (d / 'fp32.onnx').unlink()
    assert 'files.fp32.model.path' in one_line_error(capsys, ['profile', str(d)])
    assert 'does not exist' in one_line_error(capsys, ['profile', str(tmp_path / 'nothing_here')])
    with pytest.raises(CardError):
        profile_model(d)


@pytest.mark.skipif(not (config.package_file('engines/camera_centernet') / 'card.yaml').is_file(),
                    reason='no committed camera model')
def test_the_committed_camera_model():
    result = profile_model(config.package_file('engines/camera_centernet'), runs=3, warmup=1)
    assert round(result['parameters'] / 1e6, 2) == 0.98          # CameraConfig(): 979,977 weights
    assert result['macs'] > 0
    assert {'fp32', 'int8_cpu', 'int8_trt'} <= {v for v, r in result['latency_here']['variants'].items()
                                                 if 'p50_ms' in r}


def test_a_causal_lm_reports_flops_per_token_kv_cache_bytes_and_ms_per_plan(tmp_path):
    from test_lm_runtime import HEAD_DIM, HEADS, LAYERS, tiny_causal_lm_onnx, write_lm_card

    from fmdrive.planning.lm.format import PLAN_TOKENS
    d = tmp_path / 'tiny_lm'
    d.mkdir()
    tiny_causal_lm_onnx(d / 'fp32.onnx')
    write_lm_card(d, {'fp32': 'fp32.onnx'})
    result = profile_model(d, runs=3, warmup=1, prompt_tokens=20)
    lm = result['causal_lm']
    per_token = 2 * LAYERS * HEADS * HEAD_DIM                  # a key and a value per layer and head
    assert lm['kv_cache_bytes_per_token'] == {'fp32': 4 * per_token, 'fp16': 2 * per_token, 'int8': per_token}
    assert lm['kv_cache_bytes_per_plan']['fp32'] == 4 * per_token * (20 + PLAN_TOKENS)
    assert lm['flops_per_token'] == round(result['flops'] / 20)
    assert lm['ms_per_plan']['fp32']['plans'] == 3 and lm['ms_per_plan']['fp32']['p50'] > 0
    assert 'skipped' in lm['ms_per_plan']['fp16']
    text = cli_text(d)
    assert 'KV cache per plan' in text and 'ms per plan' in text


def cli_text(model_dir):
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(['profile', str(model_dir), '--runs', '2', '--warmup', '0', '--prompt-tokens', '12']) == 0
    return buf.getvalue()


@pytest.mark.skipif(not (config.package_file('engines/planner_student') / 'card.yaml').is_file(),
                    reason='no committed planner model')
def test_profile_planner_is_the_committed_planner_student():
    from fmdrive.profile import resolve_model
    assert resolve_model('planner').name == 'planner_student'


def test_host_cpu_names_the_int8_dot_product_instructions_int8_timings_depend_on():
    from fmdrive.profile import host_cpu
    epyc = 'processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n'
    xeon = 'model name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512_vnni\n'
    arm = 'CPU part\t: 0xd42\nFeatures\t: fp asimd asimddp i8mm\n'
    assert host_cpu(epyc).startswith('AMD EPYC, ') and host_cpu(epyc).endswith('none (no VNNI/AMX/dotprod)')
    assert host_cpu(xeon).endswith('int8 dot product: avx512_vnni')
    assert host_cpu(arm).endswith('int8 dot product: asimddp, i8mm')
