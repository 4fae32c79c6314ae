"""The planner LM's CPU graph: the card's Llama weights (the Hugging Face files config.json +
model.safetensors) written as one ONNX graph of ONNX Runtime's fused transformer operators, with
the same inputs and outputs as the torch export (`hf_causal_lm_with_past`), then quantized the
same way as the card's int8_cpu variant. Numpy + onnx + onnxruntime: no torch.

    fmdrive export planner-cpu [--model-dir engines/planner_student]

Why: a plan is a prefill and twelve one-token decoding calls, and a one-token call of this small
model is mostly per-operator overhead: the torch export is ~580 ONNX nodes (250 after ONNX
Runtime's own optimizer: rotary embedding, causal mask and KV concatenation spelt out in Gather,
Unsqueeze, Concat, Slice, Transpose...), while per layer the fused graph is

    SimplifiedLayerNormalization -> MatMul q, k, v -> GroupQueryAttention (rotary inside, past +
    new KV -> present) -> MatMul o -> SkipSimplifiedLayerNormalization (residual add + norm) ->
    MatMul gate, up -> QuickGelu(alpha=1) = SiLU -> Mul -> MatMul down -> Add

(~60 nodes for the four layers), what ONNX Runtime's own generative-AI model builder emits for
Llama. The weights are the card's, each matrix quantized alone as before, so the int8 graph
computes what the unfused int8_cpu graph computes (checked: max |logit difference| against it and
against the fp32 export are printed and stored in the card). Only for ONNX Runtime: TensorRT does
not take com.microsoft operators, so fp32.onnx (the standard-operator export, what the Jetson
builds its engine from) stays as it is. GroupQueryAttention reads the sequence lengths from
attention_mask (the sum of each row): rows must not be left-padded (the runtime plans one
unpadded row).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

OPSET = 17
PARITY_ATOL = 1e-3           # fused fp32 vs the torch export (float rounding only: ~1e-5)
# fused int8 vs the unfused int8: the same quantized weights, bit-identical logits on a prefill; with a
# past, a float-rounding difference in the attention occasionally moves one activation across a
# rounding step of the dynamic quantization (measured up to 0.016, against 1.15 between int8 and fp32)
INT8_PARITY_ATOL = 0.05


class FuseError(RuntimeError):
    """A model this builder cannot write (not a Llama, missing weights): one line for the user."""


def _rope_theta(cfg: dict) -> float:
    rope = cfg.get('rope_parameters') or cfg.get('rope_scaling') or {}
    if rope.get('rope_type', 'default') not in ('default', None):
        raise FuseError(f'rope type {rope.get("rope_type")!r} is not supported (only the default rotary embedding)')
    return float(rope.get('rope_theta', cfg.get('rope_theta', 10000.0)))


def fused_llama(cfg: dict, weights: dict):
    """onnx.ModelProto of a LlamaForCausalLM (config dict, {name: array} weights) in the
    hf_causal_lm_with_past convention, built from fused ONNX Runtime operators (module docstring)."""
    from onnx import TensorProto as TP
    from onnx import helper as h
    from onnx import numpy_helper as nh
    if cfg.get('model_type') != 'llama':
        raise FuseError(f'model_type {cfg.get("model_type")!r}: the fused CPU graph is written for Llama only')
    if cfg.get('attention_bias') or cfg.get('mlp_bias'):
        raise FuseError('attention or MLP biases are not supported by the fused CPU graph')
    if cfg.get('hidden_act', 'silu') != 'silu':
        raise FuseError(f'hidden_act {cfg.get("hidden_act")!r}: only silu is supported')
    theta = _rope_theta(cfg)
    n_layers, heads = int(cfg['num_hidden_layers']), int(cfg['num_attention_heads'])
    kv_heads = int(cfg.get('num_key_value_heads') or heads)
    hidden = int(cfg['hidden_size'])
    head_dim = int(cfg.get('head_dim') or hidden // heads)
    eps, max_pos = float(cfg['rms_norm_eps']), int(cfg['max_position_embeddings'])

    def weight(name):
        if name not in weights:
            raise FuseError(f'weight {name} is missing from the checkpoint')
        return np.ascontiguousarray(np.asarray(weights[name], np.float32))

    embed = weight('model.embed_tokens.weight')
    head = embed if cfg.get('tie_word_embeddings') and 'lm_head.weight' not in weights else weight('lm_head.weight')
    vocab = head.shape[0]
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(max_pos, dtype=np.float64)[:, None] * inv_freq[None]
    inits = [nh.from_array(np.cos(angles).astype(np.float32), 'cos_cache'),
             nh.from_array(np.sin(angles).astype(np.float32), 'sin_cache'),
             nh.from_array(embed, 'embed_tokens'), nh.from_array(np.ascontiguousarray(head.T), 'lm_head'),
             nh.from_array(weight('model.norm.weight'), 'final_norm'),
             nh.from_array(np.array([1], np.int64), 'one'), nh.from_array(np.array([1], np.int64), 'axis1')]
    inputs = [h.make_tensor_value_info('input_ids', TP.INT64, ['batch', 'sequence']),
              h.make_tensor_value_info('attention_mask', TP.INT64, ['batch', 'total_sequence']),
              h.make_tensor_value_info('position_ids', TP.INT64, ['batch', 'sequence'])]
    outputs = [h.make_tensor_value_info('logits', TP.FLOAT, ['batch', 'sequence', vocab])]
    # GroupQueryAttention's lengths: seqlens_k = tokens per row - 1 (int32), total_sequence_length = mask width
    nodes = [h.make_node('ReduceSum', ['attention_mask', 'axis1'], ['mask_sum'], keepdims=0),
             h.make_node('Sub', ['mask_sum', 'one'], ['seqlens_k64']),
             h.make_node('Cast', ['seqlens_k64'], ['seqlens_k'], to=TP.INT32),
             h.make_node('Shape', ['attention_mask'], ['total_len64'], start=1, end=2),
             h.make_node('Squeeze', ['total_len64'], ['total_len_scalar']),
             h.make_node('Cast', ['total_len_scalar'], ['total_sequence_length'], to=TP.INT32),
             h.make_node('Gather', ['embed_tokens', 'input_ids'], ['hidden_0'])]
    x = 'hidden_0'
    for i in range(n_layers):
        p = f'model.layers.{i}.'
        kv_shape = ['batch', kv_heads, 'past_sequence', head_dim]
        inputs += [h.make_tensor_value_info(f'past_key_values.{i}.{kv}', TP.FLOAT, kv_shape) for kv in ('key', 'value')]
        outputs += [h.make_tensor_value_info(f'present.{i}.{kv}', TP.FLOAT,
                                             ['batch', kv_heads, 'total_sequence', head_dim]) for kv in ('key', 'value')]
        inits += [nh.from_array(weight(p + 'input_layernorm.weight'), f'l{i}.norm1'),
                  nh.from_array(weight(p + 'post_attention_layernorm.weight'), f'l{i}.norm2')]
        # one MatMul per HF matrix (not packed): each is quantized alone, as in the torch export
        for short, name in (('q', 'self_attn.q_proj'), ('k', 'self_attn.k_proj'), ('v', 'self_attn.v_proj'),
                            ('o', 'self_attn.o_proj'), ('gate', 'mlp.gate_proj'), ('up', 'mlp.up_proj'),
                            ('down', 'mlp.down_proj')):
            inits.append(nh.from_array(np.ascontiguousarray(weight(p + name + '.weight').T), f'l{i}.{short}'))
        n = f'l{i}.'
        nodes += [
            h.make_node('SimplifiedLayerNormalization', [x, n + 'norm1'], [n + 'normed1'], axis=-1, epsilon=eps),
            h.make_node('MatMul', [n + 'normed1', n + 'q'], [n + 'query']),
            h.make_node('MatMul', [n + 'normed1', n + 'k'], [n + 'key']),
            h.make_node('MatMul', [n + 'normed1', n + 'v'], [n + 'value']),
            h.make_node('GroupQueryAttention',
                        [n + 'query', n + 'key', n + 'value', f'past_key_values.{i}.key', f'past_key_values.{i}.value',
                         'seqlens_k', 'total_sequence_length', 'cos_cache', 'sin_cache'],
                        [n + 'attention', f'present.{i}.key', f'present.{i}.value'], domain='com.microsoft',
                        num_heads=heads, kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0),
            h.make_node('MatMul', [n + 'attention', n + 'o'], [n + 'attn_out']),
            h.make_node('SkipSimplifiedLayerNormalization', [n + 'attn_out', x, n + 'norm2'],
                        [n + 'normed2', '', '', n + 'residual'], domain='com.microsoft', epsilon=eps),
            h.make_node('MatMul', [n + 'normed2', n + 'gate'], [n + 'gate_out']),
            h.make_node('MatMul', [n + 'normed2', n + 'up'], [n + 'up_out']),
            h.make_node('QuickGelu', [n + 'gate_out'], [n + 'silu'], domain='com.microsoft', alpha=1.0),
            h.make_node('Mul', [n + 'silu', n + 'up_out'], [n + 'mlp_in']),
            h.make_node('MatMul', [n + 'mlp_in', n + 'down'], [n + 'mlp_out']),
            h.make_node('Add', [n + 'mlp_out', n + 'residual'], [f'hidden_{i + 1}'])]
        x = f'hidden_{i + 1}'
    nodes += [h.make_node('SimplifiedLayerNormalization', [x, 'final_norm'], ['normed_final'], axis=-1, epsilon=eps),
              h.make_node('MatMul', ['normed_final', 'lm_head'], ['logits'])]
    graph = h.make_graph(nodes, 'llama_fused_cpu', inputs, outputs, inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid('', OPSET), h.make_opsetid('com.microsoft', 1)],
                         producer_name='fmdrive planner_fused')
    return model       # (onnx.checker does not know ONNX Runtime's SimplifiedLayerNormalization: ORT loads it)


def _session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])


def logits_difference(reference, candidate, n_layers: int, kv_heads: int, head_dim: int, vocab: int,
                      seed: int = 0) -> dict:
    """Max |logit difference| of two ONNX files of the convention on random prompts: a 60-token
    prefill (no past), 20 tokens after it (a chunk with past, as a draft), one token (a decoding
    step); plus whether the greedy token agrees at every position."""
    rng = np.random.default_rng(seed)
    ref, cand = _session(reference), _session(candidate)
    empty = [np.zeros((1, kv_heads, 0, head_dim), np.float32)] * (2 * n_layers)

    def feeds(ids, past, start):
        f = {'input_ids': np.asarray([ids], np.int64),
             'attention_mask': np.ones((1, start + len(ids)), np.int64),
             'position_ids': np.arange(start, start + len(ids), dtype=np.int64)[None]}
        for j in range(n_layers):
            f[f'past_key_values.{j}.key'], f[f'past_key_values.{j}.value'] = past[2 * j], past[2 * j + 1]
        return f
    out, agree = {}, True
    past_r = past_c = empty
    start = 0
    for what, length in (('no_past', 60), ('chunk_with_past', 20), ('one_token', 1)):
        ids = rng.integers(3, vocab, length).tolist()
        r = ref.run(None, feeds(ids, past_r, start))
        c = cand.run(None, feeds(ids, past_c, start))
        out[f'max_abs_diff_{what}'] = float(np.abs(r[0] - c[0]).max())
        agree &= bool((r[0].argmax(-1) == c[0].argmax(-1)).all())
        past_r, past_c, start = r[1:], c[1:], start + length
    out['same_greedy_tokens'] = agree
    return out


def quantize_int8_dynamic(fp32_path, out_path) -> Path:
    """The card's dynamic int8: every MatMul's weight to int8 per tensor, activations per call; what
    planner_export.quantize_variants uses for the torch export too (the same graph as without
    DefaultTensorType there, where every type is inferred)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    # the fused operators' outputs carry no inferred type for the quantizer: they are float
    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, op_types_to_quantize=['MatMul'],
                     extra_options={'DefaultTensorType': TensorProto.FLOAT})
    return Path(out_path)


def fuse_int8_cpu(model_dir='engines/planner_student') -> dict:
    """Rewrite the card's int8_cpu.onnx as the fused graph of its HF weights, dynamic int8, after
    checking it against fp32.onnx (fused fp32) and against the int8_cpu.onnx it replaces (same
    quantized weights); the card's file hash, decoder.int8_graph and metrics.fused_cpu_parity
    follow. Run again on a card already fused, it rebuilds the same graph."""
    import yaml
    from safetensors.numpy import load_file

    from fmdrive.inference.card import load_card, sha256_of
    model_dir = Path(model_dir)
    card_path = model_dir / 'card.yaml'
    if not card_path.is_file():
        raise FuseError(f'no card at {card_path}')
    data = yaml.safe_load(card_path.read_text())
    dec = data.get('decoder') or {}
    if data.get('io_convention') != 'hf_causal_lm_with_past':
        raise FuseError(f'{card_path}: io_convention {data.get("io_convention")!r} is not hf_causal_lm_with_past')
    if dec.get('int8_method') != 'dynamic':
        raise FuseError(f'{card_path}: int8_method {dec.get("int8_method")!r}: the fused graph is quantized '
                        f'dynamically only')
    cfg_path, weights_path = model_dir / dec.get('hf_config', 'config.json'), model_dir / dec.get('hf_weights',
                                                                                                  'model.safetensors')
    for p in (cfg_path, weights_path, model_dir / 'fp32.onnx'):
        if not p.is_file():
            raise FuseError(f'{p} is missing: the fused graph is built from the HF weights and checked against it')
    cfg = json.loads(cfg_path.read_text())
    import onnx
    model = fused_llama(cfg, load_file(str(weights_path)))
    shape = dict(n_layers=int(cfg['num_hidden_layers']),
                 kv_heads=int(cfg.get('num_key_value_heads') or cfg['num_attention_heads']),
                 head_dim=int(cfg.get('head_dim') or cfg['hidden_size'] // cfg['num_attention_heads']),
                 vocab=int(dec.get('vocab_size') or cfg['vocab_size']))
    int8_path = model_dir / 'int8_cpu.onnx'
    with tempfile.TemporaryDirectory() as tmp:
        fused_fp32, fused_int8 = Path(tmp) / 'fused_fp32.onnx', Path(tmp) / 'fused_int8.onnx'
        onnx.save(model, str(fused_fp32))
        fp32_parity = logits_difference(model_dir / 'fp32.onnx', fused_fp32, **shape)
        worst = max(v for k, v in fp32_parity.items() if k.startswith('max_abs'))
        if worst > PARITY_ATOL:
            raise FuseError(f'the fused graph differs from fp32.onnx by {worst:.3g} in the logits (limit '
                            f'{PARITY_ATOL:g}): not written')
        quantize_int8_dynamic(fused_fp32, fused_int8)
        parity = {'fused_fp32_vs_fp32_onnx': fp32_parity}
        already = dec.get('int8_graph') == 'fused'
        if already and 'fused_int8_vs_int8_cpu_before' in (data.get('metrics') or {}).get('fused_cpu_parity', {}):
            # rebuilt: what it was checked against the first time (the unfused graph) stays on record
            parity['fused_int8_vs_int8_cpu_before'] = data['metrics']['fused_cpu_parity']['fused_int8_vs_int8_cpu_before']
        if int8_path.is_file():
            int8_parity = logits_difference(int8_path, fused_int8, **shape)
            parity['fused_int8_vs_int8_cpu_now' if already else 'fused_int8_vs_int8_cpu_before'] = int8_parity
            worst = max(v for k, v in int8_parity.items() if k.startswith('max_abs'))
            if worst > INT8_PARITY_ATOL:
                raise FuseError(f'the fused int8 graph differs from {int8_path} by {worst:.3g} in the logits '
                                f'(limit {INT8_PARITY_ATOL:g}): not written')
        shutil.copy(fused_int8, int8_path)
    data['files']['int8_cpu']['model']['sha256'] = sha256_of(int8_path)
    dec['int8_graph'] = 'fused'
    data['decoder'] = dec
    data.setdefault('metrics', {})['fused_cpu_parity'] = parity
    header = ''.join(ln + '\n' for ln in card_path.read_text().splitlines() if ln.startswith('#'))
    note = ('# int8_cpu.onnx: the fused ONNX Runtime CPU graph of the HF weights, dynamic int8 '
            '(fmdrive export planner-cpu, fmdrive/training/planner_fused.py)\n')
    card_path.write_text(header + ('' if note in header else note) + yaml.safe_dump(data, sort_keys=False))
    load_card(card_path)           # the card still verifies (hashes, input/output names and shapes)
    nodes = len(onnx.load(str(int8_path), load_external_data=False).graph.node)
    return {'model_dir': str(model_dir), 'int8_cpu_nodes': nodes, 'parity': parity,
            'sha256': data['files']['int8_cpu']['model']['sha256']}
