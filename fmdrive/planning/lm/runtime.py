"""Greedy constrained decoding of a causal LM exported in the Hugging Face ONNX convention, in numpy
over fmdrive/inference backends (ONNX Runtime here, TensorRT on the Jetson). No torch.

The convention (`io_convention: hf_causal_lm_with_past` in the card, what optimum / torch.onnx
exports of `transformers` causal LMs use):

    inputs   input_ids [batch, sequence] int64, attention_mask [batch, past + sequence] int64,
             position_ids [batch, sequence] int64 (optional), past_key_values.{i}.key / .value
             [batch, heads, past, head_dim] float32 for every layer i
    outputs  logits [batch, sequence, vocab], present.{i}.key / .value [batch, heads, past + sequence,
             head_dim]

One plan = prompt HEADER (fixed text) + per-frame suffix (scene, instruction) -> a few waypoint
tokens. Three ways to run it, all giving the same tokens:

    kv + prefix cache   the HEADER's present KV is computed once and reused for every frame: a plan
                        prefills only the suffix, then decodes one token per step against the cache;
                        with frame reuse (the node's default) the previous frame's prompt KV is kept
                        too and a new prompt prefills only from the first token where it differs
                        from it (consecutive frames at 10 Hz often start alike: the same speed
                        reads the same, the same lead car...): automatic prefix caching, as LLM
                        servers do it across requests, for one stream of frames
    kv                  prefill HEADER + suffix each plan, then one token per step
    + draft             (kv modes) a guess of the plan's tokens (the node passes its last frame's
                        plan: at 10 Hz the next plan, read relative to the constant-velocity
                        anchor, is often the same) rides along in the prefill call; each token the
                        greedy decoder would pick anyway is accepted from that call's logits, and
                        decoding goes on one token per step from the first that differs (its KV
                        beyond that point dropped). Lossless: the tokens are those of plain greedy
                        decoding (speculative decoding with a free draft, as prompt-lookup
                        decoding does; the logits of a token computed in one call with those
                        before it or step by step differ by float rounding only)
    nokv                every step runs the whole sequence again (what the KV cache saves)

Same tokens in every mode holds for fp32 (measured: 400 of 400 frames of two held-out closed-loop
drives, header cache, frame reuse and draft alike). It does NOT hold exactly for a dynamic int8
graph: DynamicQuantizeLinear takes one activation scale per call over all the token rows in it, so
a token's activations are rounded differently when the header runs in the same call (no prefix
cache), apart (prefix cache) or the draft rides along; measured on the same 400 frames, 10-14 % of
int8 plans differ from the uncached int8 plan (by a bin or more, up to 8 m at 3 s on a near-tie),
while int8 itself differs from fp32 on 62 % of the 300 open-loop eval samples, and the open-loop
L2@3s is the same with or without the cache (2.056 / 2.056 m; fp32 2.116 m). The caches change
which of int8's rounding errors a plan gets, not its quality; a chunk-invariant int8 would need a
scale per token row (static scales, or per-row quantization the fused operators do not offer).

Decoding is greedy and CONSTRAINED: at each step the logits of every token the grammar does not
allow are masked, so the output always parses (format.py's TrajectoryGrammar says what is allowed).
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fmdrive.inference.backend import make_backend
from fmdrive.inference.card import CardError, ModelCard, load_card

PAST_KEY = 'past_key_values.{}.key'
PAST_VALUE = 'past_key_values.{}.value'
PRESENT_KEY = 'present.{}.key'
PRESENT_VALUE = 'present.{}.value'
MODES = ('kv', 'nokv')


@dataclass(frozen=True)
class LMShape:
    """What the KV cache looks like: one (key, value) pair per layer, [1, heads, length, head_dim]."""
    num_layers: int
    num_heads: int
    head_dim: int
    max_positions: int | None = None    # longest sequence the model was trained for (None: unknown)

    def kv_bytes_per_token(self, bytes_per_value: int = 4) -> int:
        return 2 * self.num_layers * self.num_heads * self.head_dim * bytes_per_value


def lm_shape(card: ModelCard) -> LMShape:
    """Layers, key/value heads and head_dim from the past_key_values input shapes of the card, or
    where those are dynamic from its `decoder` section (num_kv_heads or num_heads, head_dim);
    num_layers and max_positions from `decoder` (layers default to the past inputs listed)."""
    net = card.networks['model']
    names = {t.name for t in net.inputs}
    layers = 0
    while PAST_KEY.format(layers) in names and PAST_VALUE.format(layers) in names:
        layers += 1
    d = card.decoder
    num_layers = int(d.get('num_layers', layers))
    if num_layers < 1 or num_layers != layers:
        raise CardError(f'card {card.path}: networks.model.inputs: {card.io_convention} needs '
                        f'past_key_values.{{0..{max(num_layers, 1) - 1}}}.key/value, the card lists {layers} layer(s)')
    shape = net.input(PAST_KEY.format(0)).shape
    if len(shape) != 4:
        raise CardError(f'card {card.path}: networks.model.inputs.{PAST_KEY.format(0)}.shape: must be '
                        f'[batch, heads, past, head_dim], the card says {list(shape)}')
    # the cache holds the key/value heads: fewer than the attention heads with grouped-query attention
    heads = shape[1] if isinstance(shape[1], int) else d.get('num_kv_heads', d.get('num_heads'))
    head_dim = shape[3] if isinstance(shape[3], int) else d.get('head_dim')
    if not (isinstance(heads, int) and isinstance(head_dim, int)):
        raise CardError(f'card {card.path}: decoder: num_heads and head_dim are needed (the past_key_values '
                        f'shape {list(shape)} does not fix them)')
    max_positions = d.get('max_positions')
    return LMShape(num_layers, int(heads), int(head_dim), None if max_positions is None else int(max_positions))


@dataclass
class KVCache:
    """Per layer (key, value) arrays [1, heads, length, head_dim] - what `present.*` returned."""
    layers: list
    length: int

    @classmethod
    def empty(cls, shape: LMShape, dtype=np.float32) -> 'KVCache':
        z = np.zeros((1, shape.num_heads, 0, shape.head_dim), dtype)
        return cls([(z, z) for _ in range(shape.num_layers)], 0)

    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)

    def truncated(self, length: int) -> 'KVCache':
        """The cache of the first `length` positions (a causal LM's KV of a position depends only on
        the tokens up to it)."""
        if not 0 <= length <= self.length:
            raise ValueError(f'cannot truncate a KV cache of {self.length} positions to {length}')
        return KVCache([(np.ascontiguousarray(k[:, :, :length]), np.ascontiguousarray(v[:, :, :length]))
                        for k, v in self.layers], length)


@dataclass
class Generation:
    tokens: list                    # the generated ids (the final eos included when produced)
    prompt_tokens: int              # header + suffix
    prefilled_tokens: int           # what this call ran through the model before the first new token
    prefix_hit: bool                # the header's KV came from the prefix cache
    forward_calls: int
    prefill_ms: float
    decode_ms: float
    timings_ms: list = field(default_factory=list)   # one per forward call
    reused_frame_tokens: int = 0    # prompt tokens after the header whose KV came from the last frame
    draft_tokens: int = 0           # length of the draft verified in the prefill call
    draft_accepted: int = 0         # of those, how many were the decoder's own choice
    guarded_tokens: int = 0         # positions where the guard turned down the most likely id

    @property
    def total_ms(self) -> float:
        return self.prefill_ms + self.decode_ms


class CausalLM:
    """One forward pass of the exported model through a backend; shapes and names from the card."""

    def __init__(self, card: ModelCard, backend):
        if card.io_convention != 'hf_causal_lm_with_past':
            raise CardError(f'card {card.path}: io_convention: {card.io_convention} is not hf_causal_lm_with_past')
        self.card, self.backend = card, backend
        self.shape = lm_shape(card)
        net = card.networks['model']
        self.input_dtypes = {t.name: np.dtype(t.dtype) for t in net.inputs}
        self.kv_dtype = self.input_dtypes[PAST_KEY.format(0)]
        self.has_position_ids = 'position_ids' in self.input_dtypes
        self.has_attention_mask = 'attention_mask' in self.input_dtypes
        logits = net.output('logits')
        self.vocab_size = logits.shape[-1] if isinstance(logits.shape[-1], int) else None

    @classmethod
    def load(cls, model_dir, precision: str = 'fp32', backend: str = 'auto', threads: int = 1,
             verify: bool = True, **options) -> 'CausalLM':
        card = load_card(Path(model_dir), verify=verify, variants=None)
        return cls(card, make_backend(card, precision, backend, 'model', threads=threads, **options))

    def empty_cache(self) -> KVCache:
        return KVCache.empty(self.shape, self.kv_dtype)

    def forward(self, input_ids, past: KVCache | None = None) -> tuple[np.ndarray, KVCache]:
        """Run `input_ids` (n,) after `past` (None: nothing before) -> (logits (n, vocab), the new cache)."""
        ids = np.asarray(input_ids, dtype=np.int64).reshape(1, -1)
        past = past if past is not None else self.empty_cache()
        n, total = ids.shape[1], past.length + ids.shape[1]
        if self.shape.max_positions is not None and total > self.shape.max_positions:
            raise ValueError(f'sequence of {total} tokens is longer than the model allows '
                             f'({self.shape.max_positions})')
        feed = {'input_ids': ids.astype(self.input_dtypes['input_ids'])}
        if self.has_attention_mask:
            feed['attention_mask'] = np.ones((1, total), self.input_dtypes['attention_mask'])
        if self.has_position_ids:
            feed['position_ids'] = np.arange(past.length, total, dtype=self.input_dtypes['position_ids'])[None]
        for i, (k, v) in enumerate(past.layers):
            feed[PAST_KEY.format(i)], feed[PAST_VALUE.format(i)] = k, v
        out = self.backend.infer(feed)
        present = [(out[PRESENT_KEY.format(i)], out[PRESENT_VALUE.format(i)]) for i in range(self.shape.num_layers)]
        got = present[0][0].shape[2]
        if got != total:
            raise RuntimeError(f'{self.card.name}: present KV holds {got} positions after {total} tokens: the '
                               'model does not follow the hf_causal_lm_with_past convention')
        return out['logits'][0], KVCache(present, total)

    def describe(self) -> dict:
        return {**self.backend.describe(), 'layers': self.shape.num_layers, 'heads': self.shape.num_heads,
                'head_dim': self.shape.head_dim}


def constrained_argmax(logits: np.ndarray, allowed) -> int:
    """The most likely token among `allowed` (ties: the lowest id)."""
    allowed = np.asarray(allowed, dtype=np.int64).reshape(-1)
    if allowed.size == 0:
        raise ValueError('the grammar allows no token at this step')
    if allowed.min() < 0 or allowed.max() >= logits.shape[-1]:
        raise ValueError(f'the grammar allows token ids outside the vocabulary (0..{logits.shape[-1] - 1})')
    scores = logits[allowed]
    return int(allowed[int(np.argmax(scores))])


def guarded_argmax(logits: np.ndarray, allowed, accept, candidates: int | None = None,
                   top: int = 1) -> tuple[int, bool]:
    """(the most likely allowed id at the highest level accept(ids) gives (bool mask, or levels:
    0 = refused, higher = preferred), among the `candidates` most likely (None: all allowed);
    whether that is not the most likely one). None accepted: the most likely, False. The
    candidates are offered in growing chunks in the model's order (1, then 15, 60, 240, ...); the
    search ends at the first id at level `top`, so the usual case costs one check and the answer is
    the same as checking them all at once."""
    allowed = np.asarray(allowed, dtype=np.int64).reshape(-1)
    best = constrained_argmax(logits, allowed)
    first = int(np.asarray(accept(np.array([best]))).reshape(-1)[0])
    if first >= top:
        return best, False                       # the usual case: one check
    n = allowed.size if candidates is None else min(max(1, int(candidates)), allowed.size)
    scores = logits[allowed]
    ranked = allowed[np.argsort(-scores, kind='stable')[:n]]
    ranked = ranked[ranked != best]
    found, level = best, first                   # the best so far and its level
    start, size = 0, 15
    while start < ranked.size:
        chunk = ranked[start:start + size]
        levels = np.asarray(accept(chunk)).astype(np.int64)
        if levels.shape != chunk.shape:
            break
        enough = np.flatnonzero(levels >= top)
        if enough.size:
            return int(chunk[enough[0]]), True
        i = int(np.argmax(levels))
        if levels[i] > level:
            found, level = int(chunk[i]), int(levels[i])
        start, size = start + size, size * 4
    return found, (found != best)


class ConstrainedDecoder:
    """Greedy constrained generation with a KV cache and a prefix cache (see the module docstring).

        decoder = ConstrainedDecoder(CausalLM.load('engines/planner_student', 'int8'))
        gen = decoder.generate(header_ids, frame_ids, grammar.allowed_ids, max_new_tokens=13, eos_id=eot)

    `allowed_ids(step)` -> the ids allowed at generation step `step` (0 = the first new token).
    The prefix cache keeps the KV of the last `prefix_slots` distinct headers (a header is the fixed
    part of the prompt, so one slot is what a running planner uses). frame_reuse: also keep the last
    prompt's KV and start the next prefill where the two prompts first differ (beyond the header)."""

    def __init__(self, lm: CausalLM, prefix_slots: int = 2, frame_reuse: bool = True):
        self.lm = lm
        self.prefix_slots = max(1, int(prefix_slots))
        self.frame_reuse = bool(frame_reuse)
        self._prefixes: collections.OrderedDict = collections.OrderedDict()   # ids tuple -> (cache, last logits)
        self._last_prompt: tuple | None = None       # (prompt ids, KV cache after prefilling them)

    def clear_prefix_cache(self):
        self._prefixes.clear()
        self._last_prompt = None

    def forget_last_prompt(self):
        """No frame reuse from the last prompt (a new drive); the headers' cache stays."""
        self._last_prompt = None

    def _reusable(self, header: list, prompt: list) -> int:
        """How many leading tokens of `prompt` the last prompt's KV covers (0: less than the header, or
        no last prompt); at least one token is always left to run, for the logits."""
        if not self.frame_reuse or self._last_prompt is None:
            return 0
        last = self._last_prompt[0]
        n = 0
        for a, b in zip(last, prompt):
            if a != b:
                break
            n += 1
        n = min(n, len(prompt) - 1)
        return n if n > len(header) else 0

    def prefix(self, header_ids) -> tuple[KVCache, np.ndarray, bool]:
        """(KV cache of the header, logits of its last token, whether it came from the cache)."""
        key = tuple(int(i) for i in header_ids)
        hit = self._prefixes.get(key)
        if hit is not None:
            self._prefixes.move_to_end(key)
            return hit[0], hit[1], True
        logits, cache = self.lm.forward(np.asarray(key, np.int64))
        self._prefixes[key] = (cache, logits[-1].copy())
        while len(self._prefixes) > self.prefix_slots:
            self._prefixes.popitem(last=False)
        return cache, logits[-1], False

    def generate(self, header_ids, suffix_ids, allowed_ids: Callable[[int], np.ndarray], max_new_tokens: int,
                 eos_id: int | None = None, mode: str = 'kv', prefix_cache: bool = True,
                 deadline: float | None = None, draft=None, guard=None, guard_candidates: int | None = None,
                 guard_top: int = 1) -> Generation:
        """Generate up to max_new_tokens after header + suffix. deadline: time.perf_counter() value
        past which a TimeoutError is raised between forward calls (the arbiter falls back anyway).
        draft: tokens guessed for the output, verified in the prefill call (kv mode; see the module
        docstring); the tokens generated do not depend on it, only the number of forward calls.
        guard: guard(step, tokens so far, candidate ids) -> bool or level per candidate (e.g.
        guard.CollisionGuard.free): at a position with more than one allowed id, the `guard_candidates`
        most likely (None: all) are offered in order and the first at the highest level is taken (the
        search ends at level `guard_top`); none accepted: the most likely."""
        if mode not in MODES:
            raise ValueError(f'mode {mode!r} is not one of {", ".join(MODES)}')
        header = [int(i) for i in header_ids]
        suffix = [int(i) for i in suffix_ids]
        if not header and not suffix:
            raise ValueError('empty prompt')
        timings = []

        def run(ids, past):
            if deadline is not None and time.perf_counter() > deadline:
                raise TimeoutError('deadline passed during decoding')
            t = time.perf_counter()
            out = self.lm.forward(ids, past)
            timings.append((time.perf_counter() - t) * 1e3)
            return out

        draft = [] if mode == 'nokv' or not draft else [int(i) for i in draft][:max_new_tokens]
        if draft:
            vocab = self.lm.vocab_size
            if min(draft) < 0 or (vocab is not None and max(draft) >= vocab):
                draft = []                      # a guess from elsewhere that this model cannot read

        def prefill(ids, past):
            """Run the prompt tokens `ids` after `past` with the draft behind them: (logits of the
            last prompt token, logits after each draft token, cache)."""
            logits, cache = run(list(ids) + draft, past)
            return logits[len(ids) - 1], logits[len(ids):], cache

        t0 = time.perf_counter()
        hit, reused = False, 0
        draft_logits = None
        if mode == 'nokv':
            sequence = header + suffix
            logits, _ = run(sequence, None)
            last, cache, prefilled = logits[-1], None, len(sequence)
        elif prefix_cache and header:
            prompt = header + suffix
            reuse = self._reusable(header, prompt)
            if reuse:
                hit, reused = True, reuse - len(header)
                last, draft_logits, cache = prefill(prompt[reuse:], self._last_prompt[1].truncated(reuse))
                prefilled = len(prompt) - reuse
            else:
                cache, last, hit = self.prefix(header)
                if not hit:
                    timings.append(float('nan'))      # the header forward ran inside prefix(); not timed apart
                prefilled = 0 if hit else len(header)
                if suffix:
                    last, draft_logits, cache = prefill(suffix, cache)
                    prefilled += len(suffix)
                elif draft:
                    draft_logits, cache = run(draft, cache)
            if self.frame_reuse:
                self._last_prompt = (prompt, cache.truncated(len(prompt)) if draft else cache)
        else:
            last, draft_logits, cache = prefill(header + suffix, None)
            prefilled = len(header + suffix)
        prompt_length = len(header) + len(suffix)
        t1 = time.perf_counter()

        tokens = []
        allowed = np.asarray(allowed_ids(0), dtype=np.int64).reshape(-1)
        guarded = 0
        for step in range(max_new_tokens):
            if allowed.size == 1:
                token = int(allowed[0])
            elif guard is None:
                token = constrained_argmax(last, allowed)
            else:
                token, moved = guarded_argmax(last, allowed, lambda c: guard(step, tokens, c), guard_candidates,
                                              guard_top)
                guarded += moved
            tokens.append(token)
            if (eos_id is not None and token == eos_id) or step == max_new_tokens - 1:
                break
            allowed = np.asarray(allowed_ids(step + 1), dtype=np.int64).reshape(-1)
            if allowed.size == 1 and eos_id is not None and int(allowed[0]) == eos_id:
                tokens.append(eos_id)         # the grammar ends here: no forward pass needed for it
                break
            if draft_logits is not None and step < len(draft) and token == draft[step]:
                last = draft_logits[step]     # the prefill call already ran this token: its logits are known
                continue
            draft_logits = None
            if mode == 'nokv':
                logits, _ = run(header + suffix + tokens, None)
            else:
                if cache.length != prompt_length + step:      # the draft's KV past the accepted tokens
                    cache = cache.truncated(prompt_length + step)
                logits, cache = run([token], cache)
            last = logits[-1]
        t2 = time.perf_counter()
        accepted = next((i for i, (a, b) in enumerate(zip(tokens, draft)) if a != b), min(len(tokens), len(draft)))
        return Generation(tokens, prompt_length, prefilled, hit, sum(1 for _ in timings), (t1 - t0) * 1e3,
                          (t2 - t1) * 1e3, timings, reused, len(draft), accepted, guarded)
