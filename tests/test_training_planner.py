"""Planner LM training side: tokenizer, one teacher / student step, ONNX export with past."""
import json

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('transformers')
pytest.importorskip('onnxruntime')

from fmdrive.planning.lm import format as fmt  # noqa: E402
from fmdrive.training import planner_lm as lm  # noqa: E402


def _samples(n, split='train', seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        v = float(rng.uniform(0, 15))
        gap = float(rng.uniform(5, 60))
        t = np.arange(1, 7) * 0.5
        out.append({'split': split, 'intent': fmt.INTENTS[i % len(fmt.INTENTS)],
                    'scene_text': f't={i * 0.5:.1f}s. Ego: {v:.1f} m/s, speed limit 13.9 m/s, in lane 0 '
                                  'of 2 from the right (left lane free, no right lane). Objects: '
                                  f'car #{i % 9 + 1} ahead in ego lane, {gap:.1f} m, stationary.',
                    'waypoints': np.c_[v * t, 0.1 * t].tolist(), 'ego_speed_mps': v, 'ego_yaw_rate_rps': 0.0})
    return out


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A tiny dataset (3 splits) and a tokenizer trained on it."""
    root = tmp_path_factory.mktemp('planner')
    data = root / 'data'
    data.mkdir()
    rows = _samples(48) + _samples(12, 'val', 1) + _samples(12, 'test', 2)
    (data / 'shard_00000.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    (data / 'meta.json').write_text(json.dumps({'seed': 0, 'command': 'test'}))
    out = root / 'run'
    lm.tokenizer_command(str(data), str(out))
    return data, out


def test_tokenizer_round_trips_a_prompt_and_loads_as_pretrained_tokenizer_fast(run):
    from transformers import PreTrainedTokenizerFast
    _, out = run
    tok = PreTrainedTokenizerFast.from_pretrained(str(out / 'tokenizer'))
    text = fmt.prompt_text('Ego: 8.4 m/s, speed limit 13.9 m/s. Objects: car #3 ahead in ego lane, 18.4 m, '
                           'stationary.', 'pull_over')
    ids = tok(text, add_special_tokens=False)['input_ids']
    assert tok.unk_token_id not in ids
    assert ''.join(tok.decode(ids).split()) == ''.join(text.split())     # WordLevel drops spaces only
    toks = tok.convert_ids_to_tokens(ids)
    assert toks[-2:] == ['<intent_pull_over>', fmt.PLAN]
    assert '8' in toks and '.4' in toks                          # a number is integer part + decimal
    header = tok(fmt.HEADER, add_special_tokens=False)['input_ids']
    assert ids[:len(header)] == header                           # the prefix cache can reuse it
    plan = fmt.encode_waypoints(np.zeros((6, 2))) + [fmt.EOT]
    assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(plan)) == plan


def test_teacher_and_students_take_a_training_step(run):
    data, out = run
    base = dict(data=str(data), out=str(out), size=lm.TINY, max_steps=2, batch_size=8, max_eval=4,
                eval_every_s=1e9, warmup_steps=1)
    teacher = lm.train(lm.TrainConfig(role='teacher', **base), progress=False)
    assert teacher['steps'] == 2 and (out / 'teacher' / 'model.safetensors').exists()
    assert np.isfinite(teacher['best_val']['l2_3s'])
    kd = lm.train(lm.TrainConfig(role='student', kd=True, kd_samples=16, **base), progress=False)
    labels = torch.load(out / 'teacher_labels.pt', weights_only=False)
    assert labels['greedy'].shape == (16, fmt.PLAN_TOKENS)
    assert labels['expert_logits'].shape[:2] == (16, fmt.PLAN_TOKENS)
    from transformers import LlamaForCausalLM
    tok = lm.load_tokenizer(out / 'tokenizer')
    train_d = lm.encode(tok, _samples(48))
    fresh = lm.greedy_plans(LlamaForCausalLM.from_pretrained(out / 'teacher'), lm.header_ids(tok),
                            [train_d[r][0] for r in labels['rows']], tok, lm.GrammarIndex(tok))
    own = torch.stack([labels['greedy'][labels['row_of'][int(r)]] for r in labels['rows']])
    assert torch.equal(fresh, own)              # the cropped-cache greedy plan is the real one
    nokd = lm.train(lm.TrainConfig(role='student', kd=False, kd_samples=16, **base), progress=False)
    assert kd['steps'] == nokd['steps'] == 2
    a = LlamaForCausalLM.from_pretrained(out / 'student_kd').state_dict()
    b = LlamaForCausalLM.from_pretrained(out / 'student_nokd').state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)          # the KD term changed the update


def test_shared_header_forward_equals_the_whole_prompt(run):
    _, out = run
    tok = lm.load_tokenizer(out / 'tokenizer')
    torch.manual_seed(0)
    model = lm.build_model(lm.TINY, len(tok), tok).eval()
    data = lm.encode(tok, _samples(4))
    seqs = [p + t for p, t in data]
    with torch.no_grad():
        shared, _, _ = lm.plan_logits(model, lm.header_ids(tok), seqs, tok.pad_token_id)
        whole, _, _ = lm.plan_logits(model, [], [lm.header_ids(tok) + s for s in seqs], tok.pad_token_id)
        with_aux, _, aux = lm.plan_logits(model, lm.header_ids(tok), seqs, tok.pad_token_id, prompt_lm=True)
    assert torch.allclose(shared, whole, atol=1e-5) and torch.allclose(shared, with_aux, atol=1e-5)
    # the auxiliary loss is the model's own next-token loss over each frame prompt, padding left out
    with torch.no_grad():
        per_token = []
        for p, _ in data:
            ids = torch.tensor([lm.header_ids(tok) + p])
            logits = model(input_ids=ids).logits[0]
            h = len(lm.header_ids(tok))
            per_token.append(torch.nn.functional.cross_entropy(logits[h:-1], ids[0, h + 1:], reduction='none'))
    assert torch.isclose(aux, torch.cat(per_token).mean(), atol=1e-4)


def test_onnx_export_matches_torch_with_and_without_past(run, tmp_path):
    from fmdrive.training.planner_export import OrtPlanDecoder, check_parity, export_onnx
    _, out = run
    tok = lm.load_tokenizer(out / 'tokenizer')
    torch.manual_seed(1)
    model = lm.build_model(lm.TINY, len(tok), tok).eval()
    path = export_onnx(model, tmp_path / 'fp32.onnx')
    data = lm.encode(tok, _samples(3))
    parity = check_parity(model, path, tok, lm.header_ids(tok) + data[0][0], atol=1e-4)
    assert max(parity.values()) < 1e-4
    gi = lm.GrammarIndex(tok)
    ids = lm.greedy_plans(model, lm.header_ids(tok), [p for p, _ in data], tok, gi)
    dec = OrtPlanDecoder(path, tok)
    for k, (prompt, _) in enumerate(data):
        assert dec.plan_ids(prompt) == ids[k].tolist() == dec.plan_ids(prompt, prefix_cache=False)


def test_exported_student_directory_has_a_card_that_loads(run, tmp_path):
    from fmdrive.inference.card import load_card
    from fmdrive.training.planner_export import export_planner
    data, out = run
    if not (out / 'student_kd' / 'config.json').exists():
        lm.train(lm.TrainConfig(data=str(data), out=str(out), role='student', kd=False, size=lm.TINY,
                                max_steps=1, batch_size=8, max_eval=8, warmup_steps=1), progress=False)
        (out / 'student_nokd').rename(out / 'student_kd')
    result = export_planner(out, data, tmp_path / 'engine', max_test=3, calib=2)
    card = load_card(tmp_path / 'engine' / 'card.yaml')             # hashes, signatures, int8 kind
    assert card.io_convention == 'hf_causal_lm_with_past' and set(card.files) == {'fp32', 'int8_cpu'}
    assert card.decoder['num_layers'] == lm.TINY.layers and card.decoder['head_dim'] == 16
    assert card.decoder['plan_anchor'] == 'constant_velocity'          # planner-tokenizer's defaults
    assert card.decoder['plan_order'] == 'goal_first'
    assert result['int8_method'] in ('dynamic', 'static_qdq')
    for name in ('tokenizer.json', 'config.json', 'model.safetensors'):
        assert (tmp_path / 'engine' / name).exists()


def test_goal_weight_puts_the_3s_points_tokens_first_in_the_loss():
    from fmdrive.training.planner_lm import token_weights
    w = token_weights(1.0, 'goal_first')
    assert torch.allclose(w, torch.ones(13))                  # the default: every token alike
    w = token_weights(5.0, 'goal_first')
    assert abs(float(w.mean()) - 1.0) < 1e-6 and w[0] == w[1] and w[0] == 5.0 * w[2]
    w = token_weights(5.0, 'forward')                          # the 3 s point is the last x, y there
    assert w[10] == w[11] == 5.0 * w[0] and w[12] == w[0]
    with pytest.raises(ValueError, match='goal_weight'):
        token_weights(0.0, 'goal_first')


def test_soft_plan_targets_are_gaussians_over_the_bins_and_one_hot_at_sigma_zero(run):
    _, out = run
    tok = lm.load_tokenizer(out / 'tokenizer')
    gi = lm.GrammarIndex(tok, 'goal_first')
    vocab = tok.get_vocab()
    xy = np.array([[1.0, 0.0], [2.0, 0.5], [3.0, 1.0], [4.0, 1.5], [5.0, 2.0], [6.0, 2.5]])
    ids = [vocab[t] for t in fmt.encode_waypoints(xy, order='goal_first')] + [vocab[fmt.EOT]]
    target = torch.tensor([ids])
    hard = lm.soft_plan_targets(target, gi, 0.0)
    assert torch.equal(gi.index[torch.arange(13), hard[0].argmax(-1)], target[0])
    assert torch.allclose(hard.sum(-1), torch.ones(1, 13))
    soft = lm.soft_plan_targets(target, gi, 1.0)
    assert torch.allclose(soft.sum(-1), torch.ones(1, 13))
    assert torch.equal(soft[0].argmax(-1), hard[0].argmax(-1))           # centred on the expert's bin
    assert torch.equal(soft[0, 12], hard[0, 12])                          # <eot> stays one-hot
    k = int(hard[0, 0].argmax())                                          # the 3 s point's x bin
    q = soft[0, 0]
    # sigma 1 m over 0.25 m bins: the bin 1 m (4 bins) away has exp(-1/2) of the peak, both sides
    assert abs(float(q[k + 4] / q[k]) - np.exp(-0.5)) < 1e-4 and abs(float(q[k - 4] / q[k]) - np.exp(-0.5)) < 1e-4
    ky = int(hard[0, 1].argmax())                                         # y: sigma / 4 = 0.25 m, 2.5 bins
    assert abs(float(soft[0, 1, ky + 5] / soft[0, 1, ky]) - np.exp(-2.0)) < 1e-4
    assert float(q[~gi.valid[0]].sum()) == 0.0


def test_numeric_init_makes_near_numbers_and_near_bins_start_near(run):
    _, out = run
    tok = lm.load_tokenizer(out / 'tokenizer')
    model = lm.build_model(lm.TINY, len(tok), tok)
    counts = lm.numeric_init_(model, tok, seed=0)
    assert counts['integers'] == 200 and counts['decimals'] == 10
    assert counts['x_bins'] == fmt.NUM_X_BINS and counts['y_bins'] == fmt.NUM_Y_BINS
    vocab = tok.get_vocab()
    emb, head = model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=0))  # noqa: E731
    assert cos(emb[vocab['18']], emb[vocab['19']]) > 0.7 > 0.4 > cos(emb[vocab['18']], emb[vocab['150']])
    x = [vocab[t] for t in fmt.X_TOKENS]
    assert cos(head[x[100]], head[x[101]]) > 0.7 > 0.4 > cos(head[x[100]], head[x[300]])
    assert abs(float(emb[vocab['18']].std()) - 0.02) < 0.01          # the scale of a fresh row
    base = dict(data=str(run[0]), out=str(out), size=lm.TINY, max_steps=1, batch_size=8, max_eval=4,
                eval_every_s=1e9, warmup_steps=1)
    r = lm.train(lm.TrainConfig(role='teacher', numeric_init=True, label_sigma_m=1.0, **base), progress=False)
    assert r['steps'] == 1 and np.isfinite(r['best_val']['l2_3s'])


def test_compact_prompt_style_is_recorded_with_the_tokenizer_and_used_to_encode(tmp_path, run):
    data, _ = run
    out = tmp_path / 'compact'
    info = lm.tokenizer_command(str(data), str(out), prompt_style='compact')
    assert info['prompt_style'] == 'compact' and lm.prompt_style_of(out / 'tokenizer') == 'compact'
    tok = lm.load_tokenizer(out / 'tokenizer')
    s = _samples(1)
    (p, _), = lm.encode(tok, s, prompt_style='compact')
    assert tok.convert_ids_to_tokens(p)[:8] == ['Ego', ':', '0', '.9', 'limit', '13', '.9', 'lane'] or \
        'm/s' not in tok.convert_ids_to_tokens(p)
    assert tok.unk_token_id not in p
    (full, _), = lm.encode(tok, s)
    assert len(p) < len(full)
    assert lm.prompt_style_of(run[1] / 'tokenizer') == 'full'
    with pytest.raises(fmt.FormatError, match='prompt style'):
        lm.tokenizer_command(str(data), str(tmp_path / 'x'), prompt_style='terse')


def test_spread_takes_samples_from_the_whole_split_not_its_first_scenarios():
    from fmdrive.training.planner_lm import spread
    rows = list(range(100))
    assert spread(rows, None) == rows and spread(rows, 200) == rows
    picked = spread(rows, 5)
    assert picked == [0, 25, 50, 74, 99]


def test_bench_times_a_teacher_with_its_own_tokenizer_and_says_whether_it_is_the_students(run, tmp_path):
    from fmdrive.cli import _benchmark_module
    data, out = run
    if not (out / 'teacher' / 'config.json').is_file():
        lm.train(lm.TrainConfig(role='teacher', data=str(data), out=str(out), size=lm.TINY, max_steps=1,
                                batch_size=8, max_eval=4, eval_every_s=1e9, warmup_steps=1), progress=False)
    bench = _benchmark_module('planner')
    student_tok = out / 'tokenizer' / 'tokenizer.json'
    teacher, why, note = bench._torch_planner('teacher', student_tok, out)
    assert why is None and note.endswith("the student's tokenizer")
    assert teacher.tokenizer.get_vocab() == json.loads(student_tok.read_text())['model']['vocab']
    other = json.loads(student_tok.read_text())
    other['model']['vocab']['an-extra-token'] = len(other['model']['vocab'])
    (tmp_path / 'tokenizer.json').write_text(json.dumps(other))
    teacher, why, note = bench._torch_planner('teacher', tmp_path / 'tokenizer.json', out)
    assert 'not the student' in note and 'an-extra-token' not in teacher.tokenizer.get_vocab()
    _, why, _ = bench._torch_planner('student_nokd', student_tok, tmp_path)
    assert why.startswith('no student_nokd at')


def test_a_run_of_steps_lays_its_lr_schedule_and_val_checks_out_in_steps(run):
    cfg = lm.TrainConfig(steps=30, max_minutes=1.0, warmup_steps=1)
    assert lm._lr(cfg, 15, elapsed_s=59.0) == pytest.approx(cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr))
    assert lm._lr(cfg, 30, elapsed_s=0.0) == pytest.approx(cfg.min_lr)
    timed = lm.TrainConfig(max_minutes=1.0, warmup_steps=1)
    assert lm._lr(timed, 15, elapsed_s=30.0) == pytest.approx(cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr))
    data, out = run
    res = lm.train(lm.TrainConfig(role='student', kd=False, data=str(data), out=str(out), size=lm.TINY, steps=6,
                                  max_minutes=10.0, batch_size=8, max_eval=4, warmup_steps=1), progress=False)
    assert res['steps'] == 6
    vals = [json.loads(line)['step'] for line in (out / 'student_nokd.log').read_text().splitlines()
            if '"val"' in line]
    assert vals[-3:] == [2, 4, 6]
