"""The planner LM's fused ONNX Runtime CPU graph (training/planner_fused.py): the same numbers as the
standard-operator export, with and without a past, for the committed student and for a Llama of
another shape (grouped-query attention), in far fewer operators; what it cannot write is refused."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('onnxruntime')
from fmdrive import config  # noqa: E402
from fmdrive.training.planner_fused import (FuseError, fuse_int8_cpu, fused_llama,  # noqa: E402
                                            logits_difference)

STUDENT = Path(config.package_file('engines/planner_student'))


def _shape(cfg):
    return dict(n_layers=cfg['num_hidden_layers'], kv_heads=cfg.get('num_key_value_heads') or cfg['num_attention_heads'],
                head_dim=cfg.get('head_dim') or cfg['hidden_size'] // cfg['num_attention_heads'],
                vocab=cfg['vocab_size'])


def test_the_fused_graph_of_the_committed_student_matches_its_export(tmp_path):
    import onnx
    from safetensors.numpy import load_file
    cfg = json.loads((STUDENT / 'config.json').read_text())
    path = tmp_path / 'fused.onnx'
    onnx.save(fused_llama(cfg, load_file(str(STUDENT / 'model.safetensors'))), str(path))
    diff = logits_difference(STUDENT / 'fp32.onnx', path, **_shape(cfg))
    assert diff['same_greedy_tokens'], diff
    assert max(v for k, v in diff.items() if k.startswith('max_abs')) < 1e-3, diff
    # and it is what it is for: a fraction of the operators
    assert len(onnx.load(str(path)).graph.node) * 5 < len(onnx.load(str(STUDENT / 'fp32.onnx')).graph.node)


def test_the_committed_int8_cpu_variant_is_the_fused_graph_and_agrees_with_fp32():
    import onnx
    from fmdrive.inference.card import load_card
    load_card(STUDENT)                                       # hashes and signature verified
    ops = {n.op_type for n in onnx.load(str(STUDENT / 'int8_cpu.onnx')).graph.node}
    assert {'GroupQueryAttention', 'DynamicQuantizeLinear'} <= ops, ops
    cfg = json.loads((STUDENT / 'config.json').read_text())
    diff = logits_difference(STUDENT / 'fp32.onnx', STUDENT / 'int8_cpu.onnx', **_shape(cfg))
    # int8's own error (per-tensor weights, per-call activations), not a wrong graph: a wrong
    # rotary, mask or residual moves logits by several units
    assert max(v for k, v in diff.items() if k.startswith('max_abs')) < 2.0, diff


def test_fusing_rewrites_int8_cpu_and_the_card_and_keeps_the_first_check(tmp_path):
    model_dir = tmp_path / 'student'
    shutil.copytree(STUDENT, model_dir)
    first = fuse_int8_cpu(model_dir)
    again = fuse_int8_cpu(model_dir)
    assert first['sha256'] == again['sha256']
    card = (model_dir / 'card.yaml').read_text()
    assert 'int8_graph: fused' in card and again['sha256'] in card
    # the check against the graph it replaced is kept on record; the rebuild is checked against the last
    assert again['parity']['fused_int8_vs_int8_cpu_before'] == first['parity']['fused_int8_vs_int8_cpu_before'] \
        or 'fused_int8_vs_int8_cpu_before' not in first['parity']
    assert again['parity']['fused_int8_vs_int8_cpu_now']['max_abs_diff_no_past'] == 0.0


def test_a_llama_with_grouped_kv_heads_and_tied_embeddings_fuses_to_its_export(tmp_path):
    torch = pytest.importorskip('torch')
    transformers = pytest.importorskip('transformers')
    from fmdrive.training.planner_export import export_onnx
    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(vocab_size=211, hidden_size=96, intermediate_size=160, num_hidden_layers=2,
                                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
                                      rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=5000.0)
    model = transformers.LlamaForCausalLM(hf_cfg).eval()
    model.save_pretrained(tmp_path / 'hf')
    export_onnx(model, tmp_path / 'fp32.onnx')
    import onnx
    from safetensors.numpy import load_file
    cfg = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    onnx.save(fused_llama(cfg, load_file(str(tmp_path / 'hf' / 'model.safetensors'))), str(tmp_path / 'fused.onnx'))
    diff = logits_difference(tmp_path / 'fp32.onnx', tmp_path / 'fused.onnx', **_shape(cfg))
    assert diff['same_greedy_tokens'] and max(v for k, v in diff.items() if k.startswith('max_abs')) < 1e-3, diff


@pytest.mark.parametrize('change, message', [
    ({'model_type': 'gpt2'}, 'Llama only'),
    ({'hidden_act': 'gelu'}, 'only silu'),
    ({'rope_parameters': {'rope_type': 'yarn', 'rope_theta': 1e4}}, 'rope type'),
])
def test_what_the_fused_graph_cannot_express_is_refused_in_one_line(change, message):
    cfg = json.loads((STUDENT / 'config.json').read_text())
    cfg.update(change)
    with pytest.raises(FuseError, match=message):
        fused_llama(cfg, {})


def test_a_missing_weight_is_named():
    cfg = json.loads((STUDENT / 'config.json').read_text())
    with pytest.raises(FuseError, match='model.embed_tokens.weight is missing'):
        fused_llama(cfg, {})


def test_export_planner_cpu_refuses_a_card_that_is_not_a_dynamic_int8_llm(tmp_path, capsys):
    from fmdrive.cli import main
    model_dir = tmp_path / 'student'
    shutil.copytree(STUDENT, model_dir)
    text = (model_dir / 'card.yaml').read_text().replace('int8_method: dynamic', 'int8_method: static_qdq')
    (model_dir / 'card.yaml').write_text(text)
    assert main(['export', 'planner-cpu', '--model-dir', str(model_dir)]) == 2
    assert 'quantized dynamically only' in capsys.readouterr().err
    assert np.array_equal(np.frombuffer((model_dir / 'int8_cpu.onnx').read_bytes(), np.uint8),
                          np.frombuffer((STUDENT / 'int8_cpu.onnx').read_bytes(), np.uint8))
