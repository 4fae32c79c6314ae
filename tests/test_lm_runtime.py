"""The LM runtime (fmdrive/planning/lm/runtime.py): greedy constrained decoding over an ONNX causal LM
in the Hugging Face `hf_causal_lm_with_past` convention, with a KV cache and a prefix cache.

Two models: a tiny causal transformer written here with onnx.helper (attention over the past KV,
causal mask, position ids - numpy and onnxruntime only, always runs), and a randomly initialised
`transformers` GPT-2 exported with torch (only where torch + transformers are installed), so the
runtime is checked against the convention real exports follow.
"""
from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import yaml

from fmdrive.inference.card import load_card
from fmdrive.planning.lm.runtime import CausalLM, ConstrainedDecoder, lm_shape

VOCAB, LAYERS, HEADS, HEAD_DIM, MAX_POS = 48, 2, 2, 8, 256


# ======================================================================= the tiny ONNX model
def tiny_causal_lm_onnx(path, vocab=VOCAB, layers=LAYERS, heads=HEADS, head_dim=HEAD_DIM, max_pos=MAX_POS, seed=0,
                        head_scale=1.0, head_bias=None):
    """A causal transformer (no layer norm, one tanh MLP per layer) in the HF ONNX convention.
    head_scale / head_bias (vocab,): logits = head_scale * x W + head_bias, to make a model that
    prefers given tokens whatever the input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    E = heads * head_dim
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, ins, outs=None, **attrs):
        outs = outs or [f'{op}_{len(nodes)}']
        nodes.append(helper.make_node(op, ins, outs, **attrs))
        return outs[0]

    init('wte', rng.normal(0, 1.0, (vocab, E)).astype(np.float32))
    init('wpe', rng.normal(0, 0.5, (max_pos, E)).astype(np.float32))
    init('bhsd', np.array([1, -1, heads, head_dim], np.int64))   # [B, S, H, D] (batch 1 asserted by shape)
    init('bse', np.array([1, -1, E], np.int64))
    init('two', np.array(2, np.int64))
    init('one', np.array(1, np.int64))
    init('zero', np.array(0, np.int64))
    init('axes01', np.array([0], np.int64))
    init('axes1', np.array([1], np.int64))
    init('axes12', np.array([1, 2], np.int64))
    init('scale', np.array(1.0 / np.sqrt(head_dim), np.float32))
    init('neg', np.array(-1e9, np.float32))
    x = node('Add', [node('Gather', ['wte', 'input_ids']), node('Gather', ['wpe', 'position_ids'])])
    am = node('Unsqueeze', [node('Cast', ['attention_mask'], to=TensorProto.BOOL), 'axes12'])  # [B,1,1,T]
    for i in range(layers):
        def heads_of(w):
            h = node('Reshape', [node('MatMul', [x, init(f'{w}{i}', rng.normal(0, 0.4, (E, E)).astype(np.float32))]),
                                 'bhsd'])
            return node('Transpose', [h], perm=[0, 2, 1, 3])
        q, k, v = heads_of('wq'), heads_of('wk'), heads_of('wv')
        K = node('Concat', [f'past_key_values.{i}.key', k], [f'present.{i}.key'], axis=2)
        V = node('Concat', [f'past_key_values.{i}.value', v], [f'present.{i}.value'], axis=2)
        scores = node('Mul', [node('MatMul', [q, node('Transpose', [K], perm=[0, 1, 3, 2])]), 'scale'])
        past = node('Gather', [node('Shape', [f'past_key_values.{i}.key']), 'two'])
        total = node('Gather', [node('Shape', [K]), 'two'])
        qpos = node('Range', [past, total, 'one'])
        kpos = node('Range', ['zero', total, 'one'])
        causal = node('LessOrEqual', [node('Unsqueeze', [kpos, 'axes01']), node('Unsqueeze', [qpos, 'axes1'])])
        allowed = node('And', [causal, am])
        attn = node('Softmax', [node('Where', [allowed, scores, 'neg'])], axis=-1)
        out = node('Reshape', [node('Transpose', [node('MatMul', [attn, V])], perm=[0, 2, 1, 3]), 'bse'])
        x = node('Add', [x, node('MatMul', [out, init(f'wo{i}', rng.normal(0, 0.3, (E, E)).astype(np.float32))])])
        mlp = node('Tanh', [node('MatMul', [x, init(f'w1{i}', rng.normal(0, 0.3, (E, 2 * E)).astype(np.float32))])])
        x = node('Add', [x, node('MatMul', [mlp, init(f'w2{i}', rng.normal(0, 0.3, (2 * E, E)).astype(np.float32))])])
    head = (head_scale * rng.normal(0, 1.0, (E, vocab))).astype(np.float32)
    if head_bias is None:
        node('MatMul', [x, init('lm_head', head)], ['logits'])
    else:
        node('Add', [node('MatMul', [x, init('lm_head', head)]),
                     init('lm_bias', np.asarray(head_bias, np.float32))], ['logits'])

    def value(name, elem, shape):
        return helper.make_tensor_value_info(name, elem, shape)
    inputs = [value('input_ids', TensorProto.INT64, ['batch', 'sequence']),
              value('attention_mask', TensorProto.INT64, ['batch', 'total_sequence']),
              value('position_ids', TensorProto.INT64, ['batch', 'sequence'])]
    outputs = [value('logits', TensorProto.FLOAT, ['batch', 'sequence', vocab])]
    for i in range(layers):
        for kind in ('key', 'value'):
            inputs.append(value(f'past_key_values.{i}.{kind}', TensorProto.FLOAT,
                                ['batch', heads, 'past_sequence', head_dim]))
            outputs.append(value(f'present.{i}.{kind}', TensorProto.FLOAT,
                                 ['batch', heads, 'total_sequence', head_dim]))
    graph = helper.make_graph(nodes, 'tiny_causal_lm', inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], producer_name='fmdrive-tests')
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_lm_card(directory, files: dict, vocab=VOCAB, layers=LAYERS, heads=HEADS, head_dim=HEAD_DIM,
                  decoder_extra=None, opset=17):
    """A card.yaml for an hf_causal_lm_with_past model; files: variant -> file name in directory."""
    inputs = [{'name': 'input_ids', 'shape': ['batch', 'sequence'], 'dtype': 'int64'},
              {'name': 'attention_mask', 'shape': ['batch', 'total_sequence'], 'dtype': 'int64'},
              {'name': 'position_ids', 'shape': ['batch', 'sequence'], 'dtype': 'int64'}]
    outputs = [{'name': 'logits', 'shape': ['batch', 'sequence', vocab], 'dtype': 'float32'}]
    for i in range(layers):
        for kind in ('key', 'value'):
            inputs.append({'name': f'past_key_values.{i}.{kind}', 'shape': ['batch', heads, 'past_sequence', head_dim],
                           'dtype': 'float32'})
            outputs.append({'name': f'present.{i}.{kind}', 'shape': ['batch', heads, 'total_sequence', head_dim],
                            'dtype': 'float32'})
    card = {'name': directory.name, 'version': '0.0.1', 'task': 'causal_lm', 'io_convention': 'hf_causal_lm_with_past',
            'opset': opset, 'networks': {'model': {'inputs': inputs, 'outputs': outputs}},
            'files': {v: {'model': {'path': f, 'sha256': hashlib.sha256((directory / f).read_bytes()).hexdigest()}}
                      for v, f in files.items()},
            'decoder': {'num_layers': layers, 'max_positions': MAX_POS, **(decoder_extra or {})}}
    (directory / 'card.yaml').write_text(yaml.safe_dump(card, sort_keys=False))
    return directory


@pytest.fixture(scope='module')
def tiny_lm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('tiny_lm')
    tiny_causal_lm_onnx(d / 'fp32.onnx')
    return write_lm_card(d, {'fp32': 'fp32.onnx'})


@pytest.fixture(scope='module')
def tiny_lm(tiny_lm_dir):
    return CausalLM.load(tiny_lm_dir, 'fp32', 'onnxruntime')


def every_token(step):
    return np.arange(VOCAB)


# ==================================================================================== tests
def test_card_gives_layers_heads_and_head_dim(tiny_lm_dir):
    shape = lm_shape(load_card(tiny_lm_dir))
    assert (shape.num_layers, shape.num_heads, shape.head_dim, shape.max_positions) == \
        (LAYERS, HEADS, HEAD_DIM, MAX_POS)
    assert shape.kv_bytes_per_token() == 2 * LAYERS * HEADS * HEAD_DIM * 4


def test_forward_with_past_equals_forward_of_the_whole_sequence(tiny_lm):
    ids = np.array([3, 7, 1, 9, 4, 4, 12])
    full, cache_full = tiny_lm.forward(ids)
    first, cache = tiny_lm.forward(ids[:4])
    rest, cache = tiny_lm.forward(ids[4:], cache)
    assert cache.length == cache_full.length == len(ids)
    np.testing.assert_allclose(np.vstack([first, rest]), full, atol=1e-4)
    np.testing.assert_allclose(cache.layers[1][0], cache_full.layers[1][0], atol=1e-5)


def test_the_model_is_causal_a_later_token_does_not_change_earlier_logits(tiny_lm):
    a, _ = tiny_lm.forward([5, 6, 7, 8])
    b, _ = tiny_lm.forward([5, 6, 7, 30])
    np.testing.assert_allclose(a[:3], b[:3], atol=1e-5)
    assert np.abs(a[3] - b[3]).max() > 1e-3


def test_kv_prefix_cache_and_nokv_decode_the_same_tokens(tiny_lm):
    dec = ConstrainedDecoder(tiny_lm, frame_reuse=False)
    header, suffix = [1, 2, 3, 4, 5, 6, 7, 8], [20, 21, 22]
    runs = [dec.generate(header, suffix, every_token, 10, mode='kv', prefix_cache=True),
            dec.generate(header, suffix, every_token, 10, mode='kv', prefix_cache=True),
            dec.generate(header, suffix, every_token, 10, mode='kv', prefix_cache=False),
            dec.generate(header, suffix, every_token, 10, mode='nokv')]
    assert [r.tokens for r in runs[1:]] == [runs[0].tokens] * 3
    assert not runs[0].prefix_hit and runs[1].prefix_hit
    assert runs[1].prefilled_tokens == len(suffix)            # the header came from the cache
    assert runs[2].prefilled_tokens == len(header) + len(suffix)
    assert runs[3].forward_calls == 10                        # one full-sequence run per token


def test_grammar_mask_is_obeyed_at_every_step(tiny_lm):
    dec = ConstrainedDecoder(tiny_lm)
    allowed = {0: [10, 11], 1: [12], 2: [40, 41, 42, 43], 3: [7]}
    gen = dec.generate([1, 2, 3], [4], lambda s: allowed[s], 4, eos_id=7)
    assert gen.tokens[0] in allowed[0] and gen.tokens[1] == 12 and gen.tokens[2] in allowed[2]
    assert gen.tokens[3] == 7
    free = dec.generate([1, 2, 3], [4], every_token, 4)
    logits, _ = tiny_lm.forward([1, 2, 3, 4])
    assert free.tokens[0] == int(np.argmax(logits[-1]))       # unconstrained = plain greedy


def test_generation_stops_at_eos(tiny_lm):
    dec = ConstrainedDecoder(tiny_lm)
    gen = dec.generate([1, 2], [3], lambda s: [9] if s < 2 else [5], 10, eos_id=5)
    assert gen.tokens == [9, 9, 5]


def test_a_grammar_allowing_nothing_or_unknown_ids_is_an_error(tiny_lm):
    dec = ConstrainedDecoder(tiny_lm)
    with pytest.raises(ValueError, match='allows no token'):
        dec.generate([1], [2], lambda s: [], 3)
    with pytest.raises(ValueError, match='outside the vocabulary'):
        dec.generate([1], [2], lambda s: [1, VOCAB + 5], 3)


def test_prompt_longer_than_the_model_is_refused(tiny_lm):
    with pytest.raises(ValueError, match='longer than the model allows'):
        tiny_lm.forward(np.zeros(MAX_POS + 1, np.int64))


def test_a_passed_deadline_stops_decoding(tiny_lm):
    dec = ConstrainedDecoder(tiny_lm)
    with pytest.raises(TimeoutError):
        dec.generate([1, 2], [3], every_token, 10, deadline=time.perf_counter() - 1)


def test_frame_reuse_prefills_from_where_the_prompt_differs_from_the_last_and_decodes_the_same(tiny_lm):
    header = [1, 2, 3, 4, 5, 6, 7, 8]
    frame1, frame2 = [20, 21, 22, 23, 24], [20, 21, 22, 30, 31, 32]     # alike for 3 tokens
    dec = ConstrainedDecoder(tiny_lm)
    first = dec.generate(header, frame1, every_token, 6)
    second = dec.generate(header, frame2, every_token, 6)
    assert first.reused_frame_tokens == 0
    assert second.prefix_hit and second.reused_frame_tokens == 3 and second.prefilled_tokens == 3
    fresh = ConstrainedDecoder(tiny_lm, frame_reuse=False).generate(header, frame2, every_token, 6)
    assert fresh.prefilled_tokens == len(header) + len(frame2) and fresh.reused_frame_tokens == 0
    assert second.tokens == fresh.tokens
    again = dec.generate(header, frame2, every_token, 6)                 # the same prompt: one token runs
    assert again.prefilled_tokens == 1 and again.tokens == fresh.tokens
    other = dec.generate([9, 9, 9], frame2, every_token, 6)              # another header: nothing reused
    assert other.reused_frame_tokens == 0 and not other.prefix_hit
    dec.clear_prefix_cache()
    assert dec.generate(header, frame2, every_token, 6).prefilled_tokens == len(header) + len(frame2)


def test_a_draft_changes_the_forward_calls_never_the_tokens(tiny_lm):
    """Speculative decoding with a free draft (the last frame's plan): a right draft is verified in
    the prefill call (one call for the whole plan), a partly right one saves the steps it got right,
    a wrong one costs nothing but its own positions in that call; the tokens are plain greedy's."""
    header, frame = [1, 2, 3, 4, 5, 6, 7, 8], [20, 21, 22]
    plain = ConstrainedDecoder(tiny_lm, frame_reuse=False)
    plain.generate(header, frame, every_token, 8)                        # header cached for all below
    want = plain.generate(header, frame, every_token, 8)
    assert want.forward_calls == 1 + 7 and want.draft_tokens == 0
    wrong = [(t + 1) % VOCAB for t in want.tokens]
    half = want.tokens[:4] + wrong[4:]
    for draft, accepted, calls in ((want.tokens, 8, 1), (half, 4, 1 + 3), (wrong, 0, 1 + 7)):
        gen = plain.generate(header, frame, every_token, 8, draft=draft)
        assert gen.tokens == want.tokens, draft
        assert (gen.draft_tokens, gen.draft_accepted, gen.forward_calls) == (8, accepted, calls), draft
    # without the prefix cache, and with the grammar's forced end: the same tokens
    assert plain.generate(header, frame, every_token, 8, prefix_cache=False, draft=half).tokens == want.tokens
    allowed = {0: [10, 11], 1: [12], 2: [40, 41, 42, 43], 3: [7]}
    ref = plain.generate(header, frame, lambda s: allowed[s], 4, eos_id=7)
    got = plain.generate(header, frame, lambda s: allowed[s], 4, eos_id=7, draft=ref.tokens)
    assert got.tokens == ref.tokens and got.forward_calls == 1
    # a draft the model cannot read (out of vocabulary), or in nokv mode, is not used
    assert plain.generate(header, frame, every_token, 8, draft=[VOCAB + 3] * 8).draft_tokens == 0
    assert plain.generate(header, frame, every_token, 8, mode='nokv', draft=want.tokens).tokens == want.tokens


def test_frame_reuse_after_a_draft_keeps_the_prompts_kv_only(tiny_lm):
    header, frame1, frame2 = [1, 2, 3, 4, 5, 6, 7, 8], [20, 21, 22, 23], [20, 21, 22, 30]
    dec = ConstrainedDecoder(tiny_lm)
    first = dec.generate(header, frame1, every_token, 6)
    dec.generate(header, frame1, every_token, 6, draft=[(t + 1) % VOCAB for t in first.tokens])
    second = dec.generate(header, frame2, every_token, 6, draft=first.tokens)
    fresh = ConstrainedDecoder(tiny_lm, frame_reuse=False).generate(header, frame2, every_token, 6)
    assert second.reused_frame_tokens == 3 and second.tokens == fresh.tokens


def test_prefix_cache_keeps_only_the_newest_headers(tiny_lm):
    dec = ConstrainedDecoder(tiny_lm, prefix_slots=1)
    assert not dec.generate([1, 2], [3], every_token, 2).prefix_hit
    assert not dec.generate([4, 5], [3], every_token, 2).prefix_hit
    assert not dec.generate([1, 2], [3], every_token, 2).prefix_hit   # evicted by [4, 5]
    assert dec.generate([1, 2], [3], every_token, 2).prefix_hit


# ================================================================ a real transformers export
def export_tiny_gpt2(directory, seed=0):
    """A random GPT-2 (transformers) exported with torch in the HF convention + its card."""
    torch = pytest.importorskip('torch')
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=MAX_POS, n_embd=HEADS * HEAD_DIM, n_layer=LAYERS,
                                     n_head=HEADS)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(directory / 'hf')

    class WithPast(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = transformers.DynamicCache()
            for i in range(LAYERS):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
            flat = []
            for i in range(LAYERS):
                layer = out.past_key_values.layers[i] if hasattr(out.past_key_values, 'layers') else None
                k, v = (layer.keys, layer.values) if layer is not None else out.past_key_values[i]
                flat += [k, v]
            return (out.logits, *flat)

    past_len, n = 3, 2
    past = [torch.randn(1, HEADS, past_len, HEAD_DIM) for _ in range(2 * LAYERS)]
    args = (torch.randint(0, VOCAB, (1, n)), torch.ones(1, past_len + n, dtype=torch.long),
            torch.arange(past_len, past_len + n)[None], *past)
    in_names = ['input_ids', 'attention_mask', 'position_ids'] + [f'past_key_values.{i}.{k}' for i in range(LAYERS)
                                                                  for k in ('key', 'value')]
    out_names = ['logits'] + [f'present.{i}.{k}' for i in range(LAYERS) for k in ('key', 'value')]
    axes = {'input_ids': {1: 'sequence'}, 'attention_mask': {1: 'total_sequence'}, 'position_ids': {1: 'sequence'},
            'logits': {1: 'sequence'}}
    axes.update({n_: {2: 'past_sequence'} for n_ in in_names[3:]})
    axes.update({n_: {2: 'total_sequence'} for n_ in out_names[1:]})
    torch.onnx.export(WithPast(model), args, str(directory / 'fp32.onnx'), input_names=in_names,
                      output_names=out_names, dynamic_axes=axes, opset_version=17, dynamo=False)
    return model


def test_a_transformers_gpt2_export_decodes_like_transformers(tmp_path):
    torch = pytest.importorskip('torch')
    pytest.importorskip('transformers')
    import onnx
    model = export_tiny_gpt2(tmp_path)
    # batch is static 1 in this export; the card names what the file says
    inputs = onnx.load(str(tmp_path / 'fp32.onnx')).graph.input
    opset = 17
    write_lm_card(tmp_path, {'fp32': 'fp32.onnx'}, opset=opset)
    card = yaml.safe_load((tmp_path / 'card.yaml').read_text())
    for t in card['networks']['model']['inputs'] + card['networks']['model']['outputs']:
        t['shape'][0] = 1
    (tmp_path / 'card.yaml').write_text(yaml.safe_dump(card, sort_keys=False))
    assert {i.name for i in inputs} >= {'input_ids', 'past_key_values.1.value'}
    lm = CausalLM.load(tmp_path, 'fp32', 'onnxruntime')
    dec = ConstrainedDecoder(lm)
    header, suffix = [1, 2, 3, 4, 5], [6, 7]
    gen = dec.generate(header, suffix, every_token, 8, mode='kv')
    with torch.no_grad():
        ref = model.generate(torch.tensor([header + suffix]), max_new_tokens=8, do_sample=False,
                             attention_mask=torch.ones(1, 7, dtype=torch.long), pad_token_id=0)
    assert gen.tokens == ref[0, 7:].tolist()
    assert dec.generate(header, suffix, every_token, 8, mode='nokv').tokens == gen.tokens
    assert dec.generate(header, suffix, every_token, 8, mode='kv').prefix_hit


# ============================================================== TensorRT (fakes of trt + pycuda)
def dynamic_fake_engine(trt, cuda, v2=False):
    """Replace the fake runtime's engine with one that has dynamic shapes and typed tensors, as a
    real TensorRT plan of this model has: -1 for the named dimensions, input shapes set per call,
    output shapes that follow the inputs; it runs the ONNX model on the device buffers. v2: the
    TensorRT 8 binding API, where int64 inputs become INT32 bindings (as its ONNX parser casts them)."""
    import onnxruntime as ort
    types = {'tensor(float)': ('FLOAT', np.float32), 'tensor(int64)': ('INT32', np.int32) if v2 else ('INT64', np.int64)}

    class Engine:
        def __init__(self, model_bytes):
            self.session = ort.InferenceSession(model_bytes, providers=['CPUExecutionProvider'])
            self.onnx_types = {v.name: v.type for v in self.session.get_inputs()}
            self.io = [(v.name, True, tuple(d if isinstance(d, int) else -1 for d in v.shape), types[v.type])
                       for v in self.session.get_inputs()]
            self.io += [(v.name, False, tuple(d if isinstance(d, int) else -1 for d in v.shape), types[v.type])
                        for v in self.session.get_outputs()]
            self.by_name = {x[0]: x for x in self.io}

        # TensorRT 10
        num_io_tensors = property(lambda self: len(self.io))

        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if self.by_name[name][1] else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return self.by_name[name][2]

        def get_tensor_dtype(self, name):
            return self.by_name[name][3][0]

        # TensorRT 8
        num_bindings = property(lambda self: len(self.io))

        def get_binding_name(self, i):
            return self.io[i][0]

        def binding_is_input(self, i):
            return self.io[i][1]

        def get_binding_shape(self, i):
            return self.io[i][2]

        def get_binding_dtype(self, i):
            return self.io[i][3][0]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.addresses, self.shapes = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def set_binding_shape(self, i, shape):
            return self.set_input_shape(self.engine.io[i][0], shape)

        def _feeds(self, zeros=False):
            feeds = {}
            for name, is_input, _, (_, dtype) in self.engine.io:
                if not is_input:
                    continue
                shape = self.shapes[name]
                if zeros:
                    a = np.ones(shape, dtype)
                else:
                    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                    a = np.frombuffer(bytes(cuda.memory[self.addresses[name]][:n]), dtype).reshape(shape)
                feeds[name] = a.astype(np.int64) if self.engine.onnx_types[name] == 'tensor(int64)' else a
            return feeds

        def get_tensor_shape(self, name):
            if self.engine.by_name[name][1]:
                return self.shapes[name]
            return self.engine.session.run([name], self._feeds(zeros=True))[0].shape

        def get_binding_shape(self, i):
            return self.get_tensor_shape(self.engine.io[i][0])

        def _run(self):
            names = [x[0] for x in self.engine.io if not x[1]]
            for name, value in zip(names, self.engine.session.run(names, self._feeds())):
                cuda.memory[self.addresses[name]][:value.nbytes] = value.tobytes()

        def set_tensor_address(self, name, address):
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle):
            cuda.streams[stream_handle].enqueue('execute', self._run)
            return True

        def execute_async_v2(self, bindings, stream_handle):
            self.addresses = {x[0]: int(b) for x, b in zip(self.engine.io, bindings)}
            cuda.streams[stream_handle].enqueue('execute', self._run)
            return True

    real = trt.Runtime.deserialize_cuda_engine

    def deserialize(self, data):
        engine = real(self, data)
        return None if engine is None else Engine(data.split(b'\n', 2)[2])
    trt.Runtime.deserialize_cuda_engine = deserialize
    return Engine


def install_fake_tensorrt(monkeypatch, version):
    import sys

    from test_inference_tensorrt import make_fake_cuda, make_fake_tensorrt
    log = []
    cuda = make_fake_cuda(log)
    trt = make_fake_tensorrt(version, cuda, log)
    pycuda = type(sys)('pycuda')
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    monkeypatch.setitem(sys.modules, 'pycuda', pycuda)
    monkeypatch.setitem(sys.modules, 'pycuda.driver', cuda)
    dynamic_fake_engine(trt, cuda, v2=not version.startswith('10'))
    return trt, cuda


@pytest.mark.parametrize('version', ['10.3.0', '8.6.1'])
def test_tensorrt_backend_serves_the_lm_with_dynamic_shapes_like_onnxruntime(tiny_lm_dir, tiny_lm, tmp_path,
                                                                              monkeypatch, version):
    from fmdrive.inference.backend import make_backend
    trt, cuda = install_fake_tensorrt(monkeypatch, version)
    profiles = []
    build = trt.Builder.build_serialized_network

    def recording_build(self, network, config):
        profiles.extend(p.shapes for p in config.profiles)
        return build(self, network, config)
    trt.Builder.build_serialized_network = recording_build

    card = load_card(tiny_lm_dir)
    backend = make_backend(card, 'fp32', 'tensorrt', engines_dir=tmp_path / 'engines')
    assert profiles[0]['past_key_values.0.key'] == ((1, HEADS, 0, HEAD_DIM), (1, HEADS, MAX_POS // 2, HEAD_DIM),
                                                    (1, HEADS, MAX_POS - 1, HEAD_DIM))
    assert profiles[0]['input_ids'] == ((1, 1), (1, 64), (1, MAX_POS))
    lm = CausalLM(card, backend)
    header, suffix = [1, 2, 3, 4, 5, 6], [7, 8]
    trt_tokens = ConstrainedDecoder(lm).generate(header, suffix, every_token, 8).tokens
    ort_tokens = ConstrainedDecoder(tiny_lm).generate(header, suffix, every_token, 8).tokens
    assert trt_tokens == ort_tokens
    logits_trt, cache = lm.forward([3, 4, 5])
    logits_ort, _ = tiny_lm.forward([3, 4, 5])
    np.testing.assert_allclose(logits_trt, logits_ort, atol=1e-5)
    assert cache.length == 3 and backend.context.shapes['past_key_values.1.value'] == (1, HEADS, 0, HEAD_DIM)
    assert backend.v3 == version.startswith('10')
    with pytest.raises(Exception, match='larger than the plan'):
        lm.backend.infer({**{'input_ids': np.zeros((1, MAX_POS + 1), np.int64),
                             'attention_mask': np.ones((1, MAX_POS + 1), np.int64),
                             'position_ids': np.zeros((1, MAX_POS + 1), np.int64)},
                          **{f'past_key_values.{i}.{k}': np.zeros((1, HEADS, 0, HEAD_DIM), np.float32)
                             for i in range(LAYERS) for k in ('key', 'value')}})
