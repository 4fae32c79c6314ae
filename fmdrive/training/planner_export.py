"""Export the planner student to ONNX in the Hugging Face causal-LM-with-past convention, INT8 it,
and write engines/planner_student/ with its card (torch; training side).

    fmdrive export planner [--run runs/planner_lm] [--data runs/planning_dataset]
                           [--out engines/planner_student]

The ONNX graph (io_convention hf_causal_lm_with_past, as optimum exports a decoder with past):
    inputs   input_ids (batch, seq) int64, attention_mask (batch, past+seq) int64,
             position_ids (batch, seq) int64, past_key_values.{i}.key / .value
             (batch, heads, past, head_dim) float32 for every layer i (past may be 0)
    outputs  logits (batch, seq, vocab) float32, present.{i}.key / .value (batch, heads, past+seq,
             head_dim) float32
`LlamaWithPast` below is that forward written out in plain torch over the HF model's own modules
(same weights), which the TorchScript exporter traces without Hugging Face's cache objects; the
exported logits are checked against `LlamaForCausalLM` itself, with and without past.

INT8: both onnxruntime.quantization flavours are built and measured on test prompts (open-loop L2
and ms per plan with the KV + prefix cache): dynamic (weights int8, activations quantised per call)
and static QDQ (activations calibrated on train prompts, minmax). `choose_int8` keeps the fastest
one that is no worse than fp32 + 10% in L2@3s as the card's int8_cpu variant.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fmdrive.planning.lm import format as fmt

OPSET = 17
MAX_FILE_BYTES = 8 * 1024 * 1024


# ---------------------------------------------------------------- the exportable forward
def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class LlamaWithPast(nn.Module):
    """LlamaForCausalLM's forward with explicit key/value tensors in and out (HF ONNX naming)."""

    def __init__(self, hf_model):
        super().__init__()
        cfg = hf_model.config
        self.m = hf_model
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, 'head_dim', None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        theta = getattr(cfg, 'rope_theta', None) or cfg.rope_parameters['rope_theta']
        inv = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        self.register_buffer('inv_freq', inv, persistent=False)

    def _norm(self, x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def forward(self, input_ids, attention_mask, position_ids, *past):
        b, s = input_ids.shape
        x = self.m.model.embed_tokens(input_ids)
        freqs = position_ids[..., None].float() * self.inv_freq           # (B, S, D/2)
        emb = torch.cat([freqs, freqs], -1)[:, None]                      # (B, 1, S, D)
        cos, sin = emb.cos(), emb.sin()
        total = attention_mask.shape[1]
        p = total - s
        key_pos = torch.arange(total)[None, :]
        query_pos = torch.arange(s)[:, None] + p
        allowed = (key_pos <= query_pos)[None, None] & attention_mask[:, None, None, :].bool()
        bias = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed,
                                                                     torch.finfo(x.dtype).min)
        presents = []
        for i, layer in enumerate(self.m.model.layers):
            a = layer.self_attn
            h = self._norm(x, layer.input_layernorm.weight)
            q = a.q_proj(h).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
            k = a.k_proj(h).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
            v = a.v_proj(h).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            if self.n_kv != self.n_heads:
                rep = self.n_heads // self.n_kv
                k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            att = (q @ k.transpose(-1, -2)) * (self.head_dim ** -0.5) + bias
            y = torch.softmax(att, -1) @ v
            x = x + a.o_proj(y.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim))
            h = self._norm(x, layer.post_attention_layernorm.weight)
            mlp = layer.mlp
            x = x + mlp.down_proj(nn.functional.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        x = self._norm(x, self.m.model.norm.weight)
        return (self.m.lm_head(x), *presents)


def io_names(n_layers: int):
    past = [f'past_key_values.{i}.{kv}' for i in range(n_layers) for kv in ('key', 'value')]
    present = [f'present.{i}.{kv}' for i in range(n_layers) for kv in ('key', 'value')]
    return ['input_ids', 'attention_mask', 'position_ids'] + past, ['logits'] + present


def export_onnx(hf_model, path, opset=OPSET) -> Path:
    wrapper = LlamaWithPast(hf_model.eval()).eval()
    n, h, d = wrapper.n_layers, wrapper.n_kv, wrapper.head_dim
    b, s, p = 2, 3, 4
    ids = torch.randint(0, hf_model.config.vocab_size, (b, s))
    mask = torch.ones((b, p + s), dtype=torch.long)
    pos = torch.arange(p, p + s)[None].repeat(b, 1)
    past = [torch.randn(b, h, p, d) for _ in range(2 * n)]
    inputs, outputs = io_names(n)
    axes = {'input_ids': {0: 'batch', 1: 'sequence'}, 'attention_mask': {0: 'batch', 1: 'total_sequence'},
            'position_ids': {0: 'batch', 1: 'sequence'}, 'logits': {0: 'batch', 1: 'sequence'}}
    for name in inputs[3:]:
        axes[name] = {0: 'batch', 2: 'past_sequence'}
    for name in outputs[1:]:
        axes[name] = {0: 'batch', 2: 'total_sequence'}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(wrapper, (ids, mask, pos, *past), str(path), input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    return path


# ---------------------------------------------------------------- ORT greedy decoding (measurement)
class OrtPlanDecoder:
    """Constrained greedy decoding of one plan over ONNX Runtime with a KV cache; the header's
    key/values are computed once and reused (prefix cache). For measuring exports here; the
    vehicle's decoder is planning/lm/runtime.py."""

    def __init__(self, onnx_path, tok, threads=2, order='forward'):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(onnx_path), so, providers=['CPUExecutionProvider'])
        self.past_names = [i.name for i in self.sess.get_inputs()][3:]
        shape = self.sess.get_inputs()[3].shape
        self.heads, self.head_dim = shape[1], shape[3]
        self.grammar = fmt.TrajectoryGrammar(tok.get_vocab(), order)
        self.tok = tok
        self.header = np.array(tok(fmt.HEADER, add_special_tokens=False)['input_ids'], np.int64)
        self.header_past = None

    def _run(self, ids, past, p):
        s = ids.shape[1]
        feeds = {'input_ids': ids[None].astype(np.int64) if ids.ndim == 1 else ids,
                 'attention_mask': np.ones((1, p + s), np.int64),
                 'position_ids': np.arange(p, p + s, dtype=np.int64)[None]}
        feeds.update(zip(self.past_names, past))
        out = self.sess.run(None, feeds)
        return out[0], out[1:]

    def plan_ids(self, frame_ids, prefix_cache=True):
        empty = [np.zeros((1, self.heads, 0, self.head_dim), np.float32)] * len(self.past_names)
        if prefix_cache:
            if self.header_past is None:
                _, self.header_past = self._run(self.header[None], empty, 0)
            past, p = self.header_past, len(self.header)
            logits, past = self._run(np.asarray(frame_ids, np.int64)[None], past, p)
        else:
            ids = np.concatenate([self.header, np.asarray(frame_ids, np.int64)])[None]
            logits, past = self._run(ids, empty, 0)
        p = past[0].shape[2]
        out = []
        for step in range(fmt.PLAN_TOKENS):
            allowed = self.grammar.allowed_ids(step)
            nxt = int(allowed[np.argmax(logits[0, -1, allowed])])
            out.append(nxt)
            if step == fmt.PLAN_TOKENS - 1:
                break
            logits, past = self._run(np.array([[nxt]], np.int64), past, p)
            p += 1
        return out


def measure_onnx(onnx_path, tok, test_d, true_xy, repeats_ms=30, anchors=None, order='forward') -> dict:
    """Open-loop L2 of the ORT decoder on test prompts against true_xy (N, 6, 2), and ms per plan
    (p50 over the first repeats_ms plans, KV + prefix cache, 2 threads); anchors: one (6, 2) per
    prompt when the plans are anchored."""
    anchors = [None] * len(test_d) if anchors is None else anchors
    from fmdrive.training.planner_lm import open_loop_l2
    dec = OrtPlanDecoder(onnx_path, tok, order=order)
    pred, times = [], []
    for k, (prompt, _) in enumerate(test_d):
        t0 = time.perf_counter()
        ids = dec.plan_ids(prompt)
        if k < repeats_ms:
            times.append((time.perf_counter() - t0) * 1e3)
        pred.append(dec.grammar.waypoints(ids, anchors[k]))
    return dict(open_loop_l2(np.array(pred), np.asarray(true_xy)),
                ms_per_plan_p50=round(float(np.median(times)), 2))


# ---------------------------------------------------------------- parity
@torch.no_grad()
def check_parity(hf_model, onnx_path, tok, prompt_ids, atol=1e-3) -> dict:
    """Max |logit difference| of ONNX vs torch LlamaForCausalLM, on the whole prompt (no past) and
    on the frame part after the header's past; raises if above atol."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    names = [i.name for i in sess.get_inputs()]
    shape = sess.get_inputs()[3].shape
    ids = np.array([prompt_ids], np.int64)
    ref = hf_model(input_ids=torch.from_numpy(ids)).logits.numpy()
    empty = {n: np.zeros((1, shape[1], 0, shape[3]), np.float32) for n in names[3:]}
    full = sess.run(None, {'input_ids': ids, 'attention_mask': np.ones_like(ids),
                           'position_ids': np.arange(ids.shape[1])[None], **empty})
    h = len(tok(fmt.HEADER, add_special_tokens=False)['input_ids'])
    first = sess.run(None, {'input_ids': ids[:, :h], 'attention_mask': np.ones((1, h), np.int64),
                            'position_ids': np.arange(h)[None], **empty})
    rest = sess.run(None, {'input_ids': ids[:, h:], 'attention_mask': np.ones_like(ids),
                           'position_ids': np.arange(h, ids.shape[1])[None],
                           **dict(zip(names[3:], first[1:]))})
    res = {'max_abs_diff_no_past': float(np.abs(full[0] - ref).max()),
           'max_abs_diff_with_past': float(np.abs(rest[0] - ref[:, h:]).max())}
    if max(res.values()) > atol:
        raise RuntimeError(f'ONNX logits differ from torch: {res}')
    return res


# ---------------------------------------------------------------- INT8
class _PromptReader:
    """Calibration feeds for static quantization: whole prompts with an empty past, then one
    decode step after each (so both the prefill and the decode shapes are seen)."""

    def __init__(self, fp32_path, prompts):
        import onnxruntime as ort
        sess = ort.InferenceSession(str(fp32_path), providers=['CPUExecutionProvider'])
        names = [i.name for i in sess.get_inputs()]
        shape = sess.get_inputs()[3].shape
        self.feeds = []
        for ids in prompts:
            ids = np.array([ids], np.int64)
            empty = {n: np.zeros((1, shape[1], 0, shape[3]), np.float32) for n in names[3:]}
            feed = {'input_ids': ids, 'attention_mask': np.ones_like(ids),
                    'position_ids': np.arange(ids.shape[1])[None], **empty}
            out = sess.run(None, feed)
            self.feeds.append(feed)
            nxt = np.array([[int(out[0][0, -1].argmax())]], np.int64)
            self.feeds.append({'input_ids': nxt, 'attention_mask': np.ones((1, ids.shape[1] + 1), np.int64),
                               'position_ids': np.array([[ids.shape[1]]], np.int64),
                               **dict(zip(names[3:], out[1:]))})
        self._it = iter(self.feeds)

    def get_next(self):
        return next(self._it, None)


def quantize_variants(fp32_path, out_dir, calib_prompts) -> dict:
    """int8 ONNX files: {'dynamic': path, 'static_qdq': path}."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from fmdrive.training.planner_fused import quantize_int8_dynamic
    out_dir = Path(out_dir)
    dyn = quantize_int8_dynamic(fp32_path, out_dir / 'int8_dynamic.onnx')
    qdq = out_dir / 'int8_static_qdq.onnx'
    quantize_static(str(fp32_path), str(qdq), _PromptReader(fp32_path, calib_prompts),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=['MatMul'],
                    calibrate_method=CalibrationMethod.MinMax, per_channel=False,
                    extra_options={'DedicatedQDQPair': False})
    return {'dynamic': dyn, 'static_qdq': qdq}


def choose_int8(measured: dict) -> str:
    """The INT8 flavour to ship: the fastest of those whose L2@3s is no worse than fp32's + 10%
    (an int8 model should be the fp32 model, faster; a lower L2 than fp32 is quantisation noise
    on a weak model, not quality), else the one with the lowest L2@3s."""
    names = [k[len('int8_'):] for k in measured if k.startswith('int8_')]
    ok = [n for n in names if measured[f'int8_{n}']['l2_3s'] <= 1.1 * measured['fp32']['l2_3s']]
    if ok:
        return min(ok, key=lambda n: measured[f'int8_{n}']['ms_per_plan_p50'])
    return min(names, key=lambda n: measured[f'int8_{n}']['l2_3s'])


# ---------------------------------------------------------------- the engine directory
def export_planner(run='runs/planner_lm', data='runs/planning_dataset', out='engines/planner_student',
                   model='student_kd', max_test=300, calib=64) -> dict:
    from transformers import LlamaForCausalLM

    from fmdrive.inference.card import sha256_of
    from fmdrive.sim.planning_dataset import load_planning_dataset
    from fmdrive.training.planner_lm import encode, load_tokenizer, plan_format_of, sample_anchor, spread
    run, out = Path(run), Path(out)
    src = run / model
    if not (src / 'config.json').exists():
        raise FileNotFoundError(f'no trained model in {src}: run `fmdrive train planner-student` first')
    hf = LlamaForCausalLM.from_pretrained(src).eval()
    tok = load_tokenizer(run / 'tokenizer')
    plan_anchor, plan_order, style = plan_format_of(src)
    tok_format = plan_format_of(run / 'tokenizer')
    if (plan_anchor, plan_order, style) != tok_format:
        raise RuntimeError(f'{src} was trained with plan anchor {plan_anchor!r}, order {plan_order!r}, prompt '
                           f'style {style!r} but the run\'s tokenizer says {tok_format[0]!r}, {tok_format[1]!r}, '
                           f'{tok_format[2]!r}: retrain the student')
    out.mkdir(parents=True, exist_ok=True)
    work = run / 'export'
    work.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(hf, out / 'fp32.onnx')
    test_s = spread(load_planning_dataset(data, 'test'), max_test)
    test_d = encode(tok, test_s, plan_anchor, plan_order, style)
    anchors = [sample_anchor(s, plan_anchor) for s in test_s]
    header = tok(fmt.HEADER, add_special_tokens=False)['input_ids']
    parity = check_parity(hf, fp32, tok, header + test_d[0][0])
    train_s = load_planning_dataset(data, 'train')
    calib_rows = np.random.default_rng(0).permutation(len(train_s))[:calib]
    calib_prompts = [header + p for p, _ in encode(tok, [train_s[i] for i in calib_rows], prompt_style=style)]
    variants = quantize_variants(fp32, work, calib_prompts)
    true_xy = np.array([s['waypoints'] for s in test_s])
    measured = {'fp32': measure_onnx(fp32, tok, test_d, true_xy, anchors=anchors, order=plan_order)}
    for name, path in variants.items():
        measured[f'int8_{name}'] = measure_onnx(path, tok, test_d, true_xy, anchors=anchors, order=plan_order)
    best = choose_int8(measured)
    shutil.copy(variants[best], out / 'int8_cpu.onnx')
    for name in ('config.json', 'model.safetensors', 'generation_config.json'):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    shutil.copy(run / 'tokenizer' / 'tokenizer.json', out / 'tokenizer.json')
    for name in ('tokenizer_config.json', 'special_tokens_map.json'):
        if (run / 'tokenizer' / name).exists():
            shutil.copy(run / 'tokenizer' / name, out / name)
    metrics_path = run / 'metrics.json'
    test_metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    card = _card(hf.config, out, tok, best, parity, measured, test_metrics, data, sha256_of,
                 _commands(run, data, out, plan_anchor, plan_order, style), plan_anchor, plan_order,
                 _stopped_notes(run), style)
    if best == 'dynamic':
        # the int8 graph ONNX Runtime runs here: the same quantized weights in fused operators
        from fmdrive.training.planner_fused import fuse_int8_cpu
        fuse_int8_cpu(out)
    for f in out.iterdir():
        if f.stat().st_size > MAX_FILE_BYTES:
            raise RuntimeError(f'{f} is {f.stat().st_size / 1e6:.1f} MB, over the 8 MB limit')
    return {'out': str(out), 'int8_method': best, 'parity': parity, 'measured': measured,
            'card': str(card)}


def _commands(run, data, out, plan_anchor='none', plan_order='forward', prompt_style='full') -> list[str]:
    """The commands that made this engine, with the settings each training run recorded."""
    meta = json.loads((Path(data) / 'meta.json').read_text())
    cmds = [meta.get('command', f'fmdrive sim planning-dataset --out {data}'),
            f'fmdrive train planner-tokenizer --data {data} --out {run} --plan-anchor {plan_anchor} '
            f'--plan-order {plan_order}' + (f' --prompt-style {prompt_style}' if prompt_style != 'full' else '')]
    for name, args in (('teacher', 'planner-teacher'), ('student_nokd', 'planner-student --no-kd'),
                       ('student_kd', 'planner-student')):
        path = Path(run) / f'{name}.result.json'
        if not path.exists():
            continue
        c = json.loads(path.read_text())['config']
        cmd = (f'fmdrive train {args} --data {data} --out {run} --max-minutes {c["max_minutes"]:g} '
               f'--threads {c["threads"]} --batch-size {c["batch_size"]} --lr {c["lr"]:g} '
               f'--seed {c["seed"]}')
        if name != 'teacher':
            cmd += f' --kd-samples {c["kd_samples"]}'
        if float(c.get('goal_weight', 1.0)) != 1.0:
            cmd += f' --goal-weight {c["goal_weight"]:g}'
        if float(c.get('prompt_lm_weight', 0.0)) != 0.0:
            cmd += f' --prompt-lm-weight {c["prompt_lm_weight"]:g}'
        if float(c.get('label_sigma_m', 0.0)) != 0.0:
            cmd += f' --label-sigma-m {c["label_sigma_m"]:g}'
        if c.get('numeric_init'):
            cmd += ' --numeric-init'
        cmds.append(cmd)
    return cmds + [f'fmdrive train planner-eval --data {data} --out {run}',
                   f'fmdrive export planner --run {run} --data {data} --out {out}']


def _stopped_notes(run) -> str:
    """What the runs' result files say about runs stopped before their --max-minutes."""
    notes = []
    for name in ('teacher', 'student_nokd', 'student_kd'):
        path = Path(run) / f'{name}.result.json'
        if path.exists():
            stopped = json.loads(path.read_text()).get('stopped')
            if stopped:
                notes.append(f'{name} stopped {stopped}')
    return ('; ' + '; '.join(notes)) if notes else ''


def _card(cfg, out, tok, int8_method, parity, measured, test_metrics, data, sha256_of, commands,
          plan_anchor='none', plan_order='forward', extra_notes='', prompt_style='full') -> Path:
    import yaml
    n, h = cfg.num_hidden_layers, cfg.num_key_value_heads
    d = getattr(cfg, 'head_dim', None) or cfg.hidden_size // cfg.num_attention_heads
    inputs = [{'name': 'input_ids', 'shape': ['batch', 'sequence'], 'dtype': 'int64'},
              {'name': 'attention_mask', 'shape': ['batch', 'total_sequence'], 'dtype': 'int64'},
              {'name': 'position_ids', 'shape': ['batch', 'sequence'], 'dtype': 'int64'}]
    outputs = [{'name': 'logits', 'shape': ['batch', 'sequence', int(cfg.vocab_size)], 'dtype': 'float32'}]
    for i in range(n):
        for kv in ('key', 'value'):
            inputs.append({'name': f'past_key_values.{i}.{kv}', 'shape': ['batch', h, 'past_sequence', d],
                           'dtype': 'float32'})
            outputs.append({'name': f'present.{i}.{kv}', 'shape': ['batch', h, 'total_sequence', d],
                            'dtype': 'float32'})
    dataset_meta = json.loads((Path(data) / 'meta.json').read_text())
    card = {
        'name': 'planner_student', 'version': '1.0.0', 'task': 'causal_lm',
        'io_convention': 'hf_causal_lm_with_past', 'opset': OPSET,
        'networks': {'model': {'inputs': inputs, 'outputs': outputs}},
        'files': {'fp32': {'model': {'path': 'fp32.onnx', 'sha256': sha256_of(out / 'fp32.onnx')}},
                  'int8_cpu': {'model': {'path': 'int8_cpu.onnx',
                                         'sha256': sha256_of(out / 'int8_cpu.onnx')}}},
        'calibration': {'count': 64 if int8_method == 'static_qdq' else 0,
                        'source': 'train-split prompts of the planning dataset (prefill + one decode '
                                  'step each)' if int8_method == 'static_qdq' else
                                  'none: dynamic quantization (activation ranges per call)',
                        'method': 'minmax' if int8_method == 'static_qdq' else 'dynamic'},
        'decoder': {
            'num_layers': int(n), 'num_heads': int(cfg.num_attention_heads), 'num_kv_heads': int(h),
            'head_dim': int(d), 'hidden_size': int(cfg.hidden_size), 'vocab_size': int(cfg.vocab_size),
            'max_positions': int(cfg.max_position_embeddings),
            'tokenizer': 'tokenizer.json', 'hf_config': 'config.json', 'hf_weights': 'model.safetensors',
            'prompt_format': 'fmdrive.planning.lm.format (HEADER + frame_text; plan = 12 coordinate '
                             'tokens + <eot>)',
            'trajectory_steps': fmt.TRAJECTORY_STEPS, 'dt_s': fmt.DT_S, 'plan_anchor': plan_anchor,
            'plan_order': plan_order, 'prompt_style': prompt_style,
            'int8_method': int8_method,
            'other_files': {name: sha256_of(out / name) for name in
                            ('tokenizer.json', 'config.json', 'model.safetensors')
                            if (out / name).exists()}},
        'training': {
            'command': ' && '.join(commands),
            'data_seed': int(dataset_meta.get('seed', 0)), 'data': str(data),
            'notes': 'LlamaForCausalLM student distilled from a LlamaForCausalLM teacher '
                     '(fmdrive/training/planner_lm.py); the teacher is not committed (> 8 MB): '
                     'rebuild it with the teacher command above' + extra_notes},
        'metrics': {'open_loop_test': test_metrics, 'onnx_parity': parity, 'onnx_measured': measured},
    }
    path = out / 'card.yaml'
    path.write_text('# written by fmdrive/training/planner_export.py (fmdrive export planner); '
                    'check it with\n'
                    f'# python -m fmdrive.inference.card {out}\n' + yaml.safe_dump(card, sort_keys=False))
    return path
