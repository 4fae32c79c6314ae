"""Model cards: a card that disagrees with its ONNX files is refused with one line naming the field."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from test_inference_helpers import (
    CLASSES,
    centernet_blob_model,
    centernet_card,
    constant_outputs_model,
    sha256,
    tensor,
    write_card,
)

from fmdrive.inference.card import CardError, load_card


@pytest.fixture
def card_dir(tmp_path):
    d = tmp_path / 'camera_centernet'
    d.mkdir()
    centernet_card(d, centernet_blob_model(d / 'fp32.onnx'))
    return d


def edit_card(card_dir, change):
    path = card_dir / 'card.yaml'
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def refused(path, *fragments) -> str:
    with pytest.raises(CardError) as info:
        load_card(path)
    message = str(info.value)
    assert '\n' not in message
    assert str(path if path.name == 'card.yaml' else path / 'card.yaml') in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_card_that_matches_its_onnx_file_loads_with_every_field(card_dir):
    card = load_card(card_dir)
    assert card.name == 'camera_centernet' and card.io_convention == 'fmdrive_centernet'
    assert card.classes == tuple(CLASSES)
    image = card.networks['model'].inputs[0]
    assert image.shape == (1, 3, 384, 640) and image.dtype == 'float32'
    assert image.normalisation.letterbox.pad_value == 114 and image.normalisation.channel_order == 'rgb'
    assert [t.name for t in card.networks['model'].outputs] == ['heatmap', 'size', 'offset', 'embedding', 'depth']
    assert card.file('fp32').path == card_dir / 'fp32.onnx'
    assert card.training['data_seed'] == 0
    assert card.label(1) == 'pedestrian'


def test_a_changed_onnx_file_is_refused_by_its_hash(card_dir):
    with open(card_dir / 'fp32.onnx', 'ab') as f:
        f.write(b'\0')
    refused(card_dir, 'files.fp32.model.sha256', 'fp32.onnx')


def test_a_missing_onnx_file_is_refused(card_dir):
    (card_dir / 'fp32.onnx').unlink()
    refused(card_dir, 'files.fp32.model.path', 'does not exist')


def test_an_output_name_the_graph_does_not_have_is_refused(card_dir):
    path = edit_card(card_dir, lambda d: d['networks']['model']['outputs'][3].update(name='emb'))
    refused(path, 'networks.model.outputs', "'emb'", 'fp32.onnx has outputs')


def test_a_tensor_the_convention_needs_is_refused_by_name(card_dir):
    path = edit_card(card_dir, lambda d: d['networks']['model']['outputs'][1].update(name='wh'))
    refused(path, 'networks.model.outputs', "needs a tensor named 'size'")


def test_a_shape_that_disagrees_with_the_graph_is_refused(card_dir):
    def change(d):
        d['networks']['model']['inputs'][0]['shape'] = [1, 3, 768, 1280]
    refused(edit_card(card_dir, change), 'networks.model.inputs[0].shape', '[1, 3, 384, 640]')


def test_a_dtype_that_disagrees_with_the_graph_is_refused(card_dir):
    path = edit_card(card_dir, lambda d: d['networks']['model']['outputs'][4].update(dtype='float16'))
    refused(path, 'networks.model.outputs[4].dtype', 'float32')


def test_an_opset_that_disagrees_with_the_graph_is_refused(card_dir):
    refused(edit_card(card_dir, lambda d: d.update(opset=13)), 'opset', '17')


def test_heatmap_channels_must_equal_the_number_of_classes(card_dir):
    refused(edit_card(card_dir, lambda d: d.update(classes=['car', 'pedestrian'])), 'heatmap.shape')


def test_an_unknown_key_is_refused_by_name(card_dir):
    refused(edit_card(card_dir, lambda d: d.update(normalization={})), 'normalization', 'unknown key')


def test_an_int8_variant_without_calibration_is_refused(card_dir):
    shutil.copy(card_dir / 'fp32.onnx', card_dir / 'int8_cpu.onnx')

    def change(d):
        d['files']['int8_cpu'] = {'model': {'path': 'int8_cpu.onnx', 'sha256': sha256(card_dir / 'int8_cpu.onnx')}}
    refused(edit_card(card_dir, change), 'calibration')


def test_float_nodes_of_the_calibration_must_be_node_names(card_dir):
    def change(nodes):
        return lambda d: d.update(calibration={'count': 2, 'source': 'test', 'method': 'minmax', 'float_nodes': nodes})
    refused(edit_card(card_dir, change([1, 2])), 'calibration.float_nodes', 'node names')
    assert load_card(edit_card(card_dir, change(['/heads/heatmap/Conv']))).calibration['float_nodes'] == \
        ['/heads/heatmap/Conv']


def test_per_variant_calibration_methods_name_a_variant_and_a_method(card_dir):
    def change(methods):
        return lambda d: d.update(calibration={'count': 2, 'source': 'test', 'method': 'minmax',
                                               'variant_methods': methods})
    refused(edit_card(card_dir, change({'int8_trt': 'guess'})), 'calibration.variant_methods', 'entropy')
    refused(edit_card(card_dir, change({'fp16': 'entropy'})), 'calibration.variant_methods', 'int8_trt')
    kept = {'int8_trt': 'entropy', 'int8_cpu': 'minmax'}
    assert load_card(edit_card(card_dir, change(kept))).calibration['variant_methods'] == kept


def test_a_convention_and_task_that_do_not_go_together_are_refused(card_dir):
    refused(edit_card(card_dir, lambda d: d.update(task='lidar_detector')), 'task', 'camera_detector')


def test_a_missing_card_and_bad_yaml_are_one_line(tmp_path):
    refused(tmp_path, 'does not exist')
    (tmp_path / 'card.yaml').write_text('name: [unclosed')
    refused(tmp_path, 'not valid YAML')


def test_a_camera_input_without_normalisation_is_refused(tmp_path):
    model = constant_outputs_model(tmp_path / 'fp32.onnx', 'images', (1, 3, 64, 64),
                                   {'output': np.zeros((1, 84, 9), np.float32)})
    card = {'name': 'y', 'version': 1, 'task': 'camera_detector', 'io_convention': 'yolox', 'opset': 17,
            'classes': CLASSES, 'networks': {'model': {'inputs': [tensor('images', (1, 3, 64, 64))],
                                                       'outputs': [tensor('output', (1, 84, 9))]}}}
    refused(write_card(tmp_path, card, {'fp32': {'model': model}}), 'normalisation')


def test_without_the_onnx_package_names_and_shapes_are_checked_through_onnxruntime(card_dir, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'onnx', None)
    assert load_card(card_dir).name == 'camera_centernet'

    renamed = edit_card(card_dir, lambda d: d['networks']['model']['outputs'][3].update(name='emb'))
    refused(renamed, 'networks.model.outputs', "'emb'", 'fp32.onnx has outputs')
    edit_card(card_dir, lambda d: d['networks']['model']['outputs'][3].update(name='embedding'))

    def change(d):
        d['networks']['model']['inputs'][0]['shape'] = [1, 3, 768, 1280]
    refused(edit_card(card_dir, change), 'networks.model.inputs[0].shape')


def test_the_card_checker_prints_ok_or_the_reason(card_dir, capsys):
    from fmdrive.inference.card import main
    assert main([str(card_dir)]) == 0
    assert 'ok:' in capsys.readouterr().out
    (card_dir / 'fp32.onnx').write_bytes(b'not onnx')
    assert main([str(card_dir)]) == 2
    assert 'files.fp32.model.sha256' in capsys.readouterr().err


def with_int8_trt(card_dir, file):
    def change(d):
        d['files']['int8_trt'] = {'model': {'path': file.name, 'sha256': sha256(file)}}
        d['calibration'] = {'count': 2, 'source': 'random frames (test)', 'method': 'entropy'}
    return edit_card(card_dir, change)


def test_an_int8_variant_that_is_no_qdq_model_is_refused(card_dir):
    shutil.copy(card_dir / 'fp32.onnx', card_dir / 'int8_trt.onnx')
    refused(with_int8_trt(card_dir, card_dir / 'int8_trt.onnx'), 'files.int8_trt.model', 'QuantizeLinear')


def test_int8_trt_must_be_symmetric_for_tensorrt(card_dir):
    from test_inference_helpers import quantize_qdq
    frames = [{'image': np.random.default_rng(i).standard_normal((1, 3, 384, 640)).astype(np.float32)}
              for i in range(2)]
    u8 = quantize_qdq(card_dir / 'fp32.onnx', card_dir / 'int8_trt.onnx', frames, symmetric=False)
    refused(with_int8_trt(card_dir, u8), 'files.int8_trt.model', 'zero point 0')
    s8 = quantize_qdq(card_dir / 'fp32.onnx', card_dir / 'int8_trt.onnx', frames, symmetric=True)
    assert load_card(with_int8_trt(card_dir, s8)).file('int8_trt').path == s8
