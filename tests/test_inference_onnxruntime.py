"""The ONNX Runtime backend and the backend factory, for real on this machine's CPU."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import yaml
from test_inference_helpers import (
    centernet_blob_model,
    centernet_card,
    quantize_qdq,
    sha256,
)

from fmdrive.inference.backend import NO_TENSORRT, Backend, BackendError, make_backend
from fmdrive.inference.card import load_card
from fmdrive.inference.onnxruntime_backend import OnnxRuntimeBackend, ort_variant


@pytest.fixture
def card(tmp_path):
    return load_card(centernet_card(tmp_path, centernet_blob_model(tmp_path / 'fp32.onnx')))


def image_tensor(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3, 384, 640)).astype(np.float32)


def test_auto_is_onnxruntime_on_the_cpu_with_one_thread_each(card, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)        # as on a machine without TensorRT
    backend = make_backend(card, 'fp32', 'auto')
    assert isinstance(backend, Backend)
    d = backend.describe()
    assert d['backend'] == 'onnxruntime' and d['provider'] == 'CPUExecutionProvider'
    assert d['threads'] == 1 and d['inter_op_threads'] == 1 and d['precision'] == 'fp32'
    assert d['input_shapes'] == {'image': [1, 3, 384, 640]}
    opts = backend.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry('session.intra_op.allow_spinning') == '0'
    outputs = backend.infer({'image': image_tensor()})
    assert set(outputs) == {'heatmap', 'size', 'offset', 'embedding', 'depth'}
    assert outputs['heatmap'].shape == (1, 4, 96, 160)


def test_io_binding_gives_the_same_numbers_as_a_plain_run(card):
    plain = OnnxRuntimeBackend(io_binding=False)
    plain.load(card, 'fp32')
    bound = OnnxRuntimeBackend(io_binding=True, threads=2)
    bound.load(card, 'fp32')
    assert bound.describe()['io_binding'] and not plain.describe()['io_binding']
    for seed in (0, 1):       # the bound buffers are reused: the second frame must not see the first
        x = image_tensor(seed)
        a, b = plain.infer({'image': x}), bound.infer({'image': x})
        for name in a:
            assert np.array_equal(a[name], b[name])
    first = bound.infer({'image': image_tensor(0)})['heatmap']
    bound.infer({'image': image_tensor(1)})
    assert np.array_equal(first, plain.infer({'image': image_tensor(0)})['heatmap'])


def test_a_wrong_input_is_refused_by_name(card):
    backend = make_backend(card, 'fp32', 'onnxruntime')
    with pytest.raises(BackendError, match=r'input image has shape \[1, 3, 384, 600\]'):
        backend.infer({'image': np.zeros((1, 3, 384, 600), np.float32)})
    with pytest.raises(BackendError, match='inputs'):
        backend.infer({'images': image_tensor()})
    with pytest.raises(BackendError, match='is int64'):
        backend.infer({'image': np.zeros((1, 3, 384, 640), np.int64)})


def test_tensorrt_asked_for_without_tensorrt_says_to_use_onnxruntime(card, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    with pytest.raises(BackendError) as info:
        make_backend(card, 'fp16', 'tensorrt')
    assert str(info.value) == NO_TENSORRT == 'TensorRT is not installed here; use backend onnxruntime'


def test_fp16_on_the_cpu_without_an_fp16_file_is_refused_and_unknown_precisions_too(card):
    with pytest.raises(BackendError, match='fp16 without the TensorRT execution provider'):
        make_backend(card, 'fp16', 'onnxruntime')
    with pytest.raises(BackendError, match='precision'):
        make_backend(card, 'int4', 'onnxruntime')


def test_int8_runs_the_u8s8_qdq_file_on_the_cpu_close_to_fp32(tmp_path):
    fp32 = centernet_blob_model(tmp_path / 'fp32.onnx')
    frames = [image_tensor(i) for i in range(4)]
    quantize_qdq(fp32, tmp_path / 'int8_cpu.onnx', [{'image': x} for x in frames], symmetric=False)
    card_path = centernet_card(tmp_path, fp32, extra_files={'int8_cpu': {'model': tmp_path / 'int8_cpu.onnx'}})
    data = yaml.safe_load(card_path.read_text())
    data['calibration'] = {'count': 4, 'source': 'random frames (test)', 'method': 'minmax'}
    card_path.write_text(yaml.safe_dump(data))
    card = load_card(card_path)
    int8 = make_backend(card, 'int8', 'onnxruntime')
    assert int8.describe()['variant'] == 'int8_cpu' and ort_variant(card, 'int8', gpu=False) == 'int8_cpu'
    ref = make_backend(card, 'fp32', 'onnxruntime')
    x = frames[0]
    a, b = ref.infer({'image': x}), int8.infer({'image': x})
    assert np.max(np.abs(a['size'] - b['size'])) < 0.5        # constants through QDQ: within a quantum
    assert sha256(tmp_path / 'int8_cpu.onnx') == card.files['int8_cpu']['model'].sha256
