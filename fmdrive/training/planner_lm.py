"""The planner LM: tokenizer, teacher, student, distillation (torch; training only).

    fmdrive train planner-tokenizer --data runs/planning_dataset --out runs/planner_lm
    fmdrive train planner-teacher   --data runs/planning_dataset --out runs/planner_lm [--resume]
    fmdrive train planner-student   --data runs/planning_dataset --out runs/planner_lm [--no-kd]

Everything lives in one run directory: tokenizer/ (tokenizer.json), teacher/, student_kd/,
student_nokd/ (save_pretrained: config.json + model.safetensors), *.log, metrics.json.

Prompt and plan are planning/lm/format.py's. The plan anchor (format.py: tokens relative to the
constant-velocity rollout, or absolute) and the plan order (goal_first or forward) are chosen once
per run by planner-tokenizer (--plan-anchor, default constant_velocity; --plan-order, default
goal_first), written to tokenizer/plan_format.json beside the tokenizer, copied into every saved
model directory and into the exported card.

Sequences are LEFT-padded, so every sample's 13 plan
tokens are the last 13 positions of the batch: logits[:, -14:-1] predict them. The loss is taken
only there (the scene text is input, not something to learn to write).

Number tokenisation in the scene text: a decimal number is split into its integer part and its
first decimal ("18.4" -> "18" ".4"), so ~100 integer tokens and 10 decimal tokens cover every
distance and speed the scene says, each seen thousands of times, at two tokens per number
(digit-by-digit would be four, and the prompt length is what a CPU pays for at every frame).

Numbers and bins start smooth (--numeric-init, `numeric_init_`): the embeddings of the number
tokens and the input/output rows of the coordinate bins are initialised as smooth functions of the
value they stand for, so "18" starts next to "19" and the 10 m bin next to the 10.25 m one.
Soft targets (--label-sigma-m S, `soft_plan_targets`): the plan loss is the cross-entropy against a
Gaussian of S metres over the bins around the expert's (S / 4 in y), so a plan 0.25 m off is cheaper
than one 20 m off. Both leave the model, its ONNX graph and the decoder unchanged.

Distillation (planner-student): the teacher labels kd_samples rows of the train split once
(`teacher_labels`; teacher forward passes are what a CPU cannot afford for all rows): its logits
over the tokens the grammar allows at each of the 13 plan positions, teacher-forced on the expert
plan AND on its own greedy plan (sequence-level KD). Every student batch is half labelled rows,
half rows from the whole train split. On a labelled row the KD student takes the expert's or the
teacher's plan as target (a coin flip) and minimises
    CE(target) + kd_weight * T^2 * KL(teacher_T || student_T)   over the allowed tokens,
where the KL uses the teacher's logits for that same target sequence; other rows: CE(expert).
Without KD (--no-kd) the same student sees the same batches, steps and learning rate with
CE(expert plan) alone.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fmdrive.planning.lm import format as fmt
from fmdrive.sim.planning_dataset import load_planning_dataset

# words (hyphenated ones whole: front-left), m/s whole, numbers as integer part + decimal, punctuation
WORD_SPLIT = r'm/s|[A-Za-z_]+(?:-[A-Za-z_]+)*|\d+|\.\d|[^\sA-Za-z\d]'


# ---------------------------------------------------------------- configs
@dataclass
class ModelSize:
    hidden: int
    layers: int
    heads: int
    intermediate: int


TEACHER = ModelSize(hidden=320, layers=6, heads=8, intermediate=960)     # ~8.6M parameters
STUDENT = ModelSize(hidden=128, layers=4, heads=4, intermediate=384)     # ~1.1M parameters
TINY = ModelSize(hidden=32, layers=2, heads=2, intermediate=64)          # tests


@dataclass
class TrainConfig:
    data: str = 'runs/planning_dataset'
    out: str = 'runs/planner_lm'
    role: str = 'teacher'                 # teacher | student
    kd: bool = True                       # student only
    size: ModelSize = field(default_factory=lambda: TEACHER)
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    weight_decay: float = 0.05
    max_minutes: float = 30.0             # the LR schedule is laid out over this much time
    max_steps: int = 100000
    steps: int | None = None              # the run's length in optimizer steps instead of time: the LR
    #                                       schedule and the val checks (every third of it) follow steps,
    #                                       so what it learns does not depend on the machine's load;
    #                                       max_minutes still stops it
    eval_every_s: float = 600.0
    seed: int = 7
    threads: int = 2
    kd_temperature: float = 2.0
    kd_weight: float = 1.0
    goal_weight: float = 1.0              # CE weight of the 3 s point's two tokens vs the other 11
    prompt_lm_weight: float = 0.0         # weight of the auxiliary next-token loss on the scene text
    label_sigma_m: float = 0.0            # soft plan targets: Gaussian over bins (x; y a quarter of it)
    numeric_init: bool = False            # number / coordinate-bin rows start smooth in their value
    kd_samples: int = 6000                # train samples the teacher labels
    max_train: int | None = None          # first N train samples only (tests)
    max_eval: int = 600                   # val samples scored during training (evenly over the split)


# ---------------------------------------------------------------- tokenizer
def train_tokenizer(samples: list[dict], out_dir, prompt_style: str = 'full'):
    """WordLevel over the scene text in prompt_style (numbers split as WORD_SPLIT) +
    format.SPECIAL_TOKENS."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel(unk_token=fmt.UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(WORD_SPLIT), behavior='isolated')])
    # all integers 0..199 and decimals .0-.9 exist even if this dataset never said them
    numbers = [str(i) for i in range(200)] + [f'.{d}' for d in range(10)]
    trainer = trainers.WordLevelTrainer(special_tokens=list(fmt.SPECIAL_TOKENS), min_frequency=2)
    texts = (fmt.prompt_text(s['scene_text'], s['intent'], prompt_style) for s in samples)
    # twice: min_frequency 2 would otherwise drop the numbers this dataset never says (an <unk> on
    # the vehicle the first time a distance of 116 m comes up)
    tok.train_from_iterator(_chain([' '.join(numbers)] * 2, texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=fmt.BOS, eos_token=fmt.EOT,
                                   unk_token=fmt.UNK, pad_token=fmt.PAD)
    fast.padding_side = 'left'
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def _chain(*its):
    for it in its:
        yield from it


PLAN_FORMAT_FILE = 'plan_format.json'


def write_plan_format(directory, plan_anchor: str, plan_order: str = 'forward',
                      prompt_style: str = 'full'):
    fmt.check_anchor_mode(plan_anchor)
    fmt.check_order(plan_order)
    fmt.check_prompt_style(prompt_style)
    Path(directory, PLAN_FORMAT_FILE).write_text(json.dumps({'plan_anchor': plan_anchor,
                                                             'plan_order': plan_order,
                                                             'prompt_style': prompt_style}) + '\n')


def plan_format_of(directory) -> tuple[str, str, str]:
    """(plan anchor, plan order, prompt style) a tokenizer or model directory was made with, each
    checked; what plan_format.json does not say has the value of the runs before it existed
    ('none', 'forward', 'full')."""
    path = Path(directory, PLAN_FORMAT_FILE)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    return (fmt.check_anchor_mode(saved.get('plan_anchor', 'none')),
            fmt.check_order(saved.get('plan_order', 'forward')),
            fmt.check_prompt_style(saved.get('prompt_style', 'full')))


def plan_anchor_of(directory) -> str:
    return plan_format_of(directory)[0]


def plan_order_of(directory) -> str:
    return plan_format_of(directory)[1]


def prompt_style_of(directory) -> str:
    return plan_format_of(directory)[2]


def sample_anchor(sample: dict, plan_anchor: str):
    """The (6, 2) anchor of a dataset sample under plan_anchor, or None (absolute plans)."""
    if plan_anchor == 'none':
        return None
    return fmt.anchor_waypoints(sample['ego_speed_mps'], sample.get('ego_yaw_rate_rps', 0.0))


def load_tokenizer(path):
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    tok.padding_side = 'left'
    return tok


def header_ids(tok) -> list[int]:
    return tok(fmt.HEADER, add_special_tokens=False)['input_ids']


def encode(tok, samples: list[dict], plan_anchor: str = 'none', plan_order: str = 'forward',
           prompt_style: str = 'full') -> list[tuple[list[int], list[int]]]:
    """(frame prompt ids, 13 plan ids) per sample; the prompt is header_ids(tok) + frame ids in
    prompt_style; the plan tokens relative to each sample's anchor under plan_anchor."""
    header = header_ids(tok)
    prompts = tok([fmt.prompt_text(s['scene_text'], s['intent'], prompt_style) for s in samples],
                  add_special_tokens=False)['input_ids']
    if any(p[:len(header)] != header for p in prompts):
        raise ValueError('the tokenizer does not split HEADER off the prompt at the same place')
    vocab = tok.get_vocab()
    plans = [[vocab[t] for t in fmt.encode_waypoints(np.array(s['waypoints']), sample_anchor(s, plan_anchor),
                                                     plan_order)]
             + [vocab[fmt.EOT]] for s in samples]
    return [(p[len(header):], plan) for p, plan in zip(prompts, plans)]


def left_pad(seqs: list[list[int]], pad_id: int, offset: int = 0):
    """input_ids, attention_mask, position_ids (B, L) for left-padded sequences that follow
    `offset` tokens of a shared prefix (positions continue from it)."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s):] = torch.tensor(s)
        mask[i, n - len(s):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0) + offset
    return ids, mask, pos


def run_with_header(model, header, seqs, pad_id, logits_to_keep, use_cache=False):
    """Forward of header + each sequence, the header computed once and shared by the batch (the
    training-time twin of the runtime's prefix cache: same positions, same attention).
    Returns (model output, attention_mask over header + sequences, position_ids)."""
    ids, mask, pos = left_pad(seqs, pad_id, offset=len(header))
    cache = None
    if header:
        cache = model(input_ids=torch.tensor([header]), use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(seqs))
        mask = torch.cat([torch.ones((len(seqs), len(header)), dtype=mask.dtype), mask], 1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                use_cache=use_cache, logits_to_keep=logits_to_keep)
    return out, mask, pos


# ---------------------------------------------------------------- models
def build_model(size: ModelSize, vocab_size: int, tok=None):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=size.hidden, num_hidden_layers=size.layers,
                      num_attention_heads=size.heads, num_key_value_heads=size.heads,
                      intermediate_size=size.intermediate, max_position_embeddings=1024,
                      rope_theta=10000.0, tie_word_embeddings=False,
                      pad_token_id=None if tok is None else tok.pad_token_id,
                      bos_token_id=None if tok is None else tok.bos_token_id,
                      eos_token_id=None if tok is None else tok.eos_token_id)
    cfg._attn_implementation = 'sdpa'
    return LlamaForCausalLM(cfg)


def _smooth_rows(values: np.ndarray, span: float, width: int, rng) -> torch.Tensor:
    """(N, width) rows that are a smooth function of `values` (N,): sines and cosines of the value
    at periods from span/64 to 4 * span through one random projection, scaled to the std of a
    fresh Llama row (0.02). Values that differ by a small part of `span` get nearly the same row."""
    periods = span * np.geomspace(1 / 64, 4, 12)
    ph = 2 * np.pi * values[:, None] / periods[None, :]
    feats = np.concatenate([np.sin(ph), np.cos(ph)], 1)
    rows = feats @ rng.standard_normal((feats.shape[1], width))
    rows *= 0.02 / rows.std()
    return torch.from_numpy(rows.astype(np.float32))


@torch.no_grad()
def numeric_init_(model, tok, seed: int = 0) -> dict:
    """Start the input embeddings of the number tokens ("0".."199", ".0"..".9") and both the input
    and output rows of the coordinate-bin tokens from smooth functions of the value they stand for
    (_smooth_rows), instead of independent random rows. Why: a word-level number token is otherwise
    a symbol whose magnitude the model must learn from co-occurrence alone, and "18" and "19" start
    as unrelated as "18" and "car"; with a few epochs of CPU training that is most of what there is
    to learn. The architecture and the ONNX graph are unchanged: this is an initialisation.
    Returns how many rows of each kind were set."""
    rng = np.random.default_rng(seed)
    vocab = tok.get_vocab()
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    width = emb.shape[1]
    ints = sorted((int(t), i) for t, i in vocab.items() if t.isdigit())
    decs = sorted((int(t[1]), i) for t, i in vocab.items() if len(t) == 2 and t[0] == '.' and t[1].isdigit())
    counts = {}
    for name, pairs, span in (('integers', ints, 200.0), ('decimals', decs, 10.0)):
        if pairs:
            v, ids = np.array([p[0] for p in pairs], float), [p[1] for p in pairs]
            emb[ids] = _smooth_rows(v, span, width, rng)
            counts[name] = len(ids)
    for name, tokens, step, span in (('x_bins', fmt.X_TOKENS, fmt.X_BIN_M, fmt.X_RANGE_M[1] - fmt.X_RANGE_M[0]),
                                     ('y_bins', fmt.Y_TOKENS, fmt.Y_BIN_M, fmt.Y_RANGE_M[1] - fmt.Y_RANGE_M[0])):
        ids = [vocab[t] for t in tokens]
        v = np.arange(len(ids)) * step
        emb[ids] = _smooth_rows(v, span, width, rng)
        head[ids] = _smooth_rows(v, span, head.shape[1], rng)
        counts[name] = len(ids)
    return counts


def soft_plan_targets(target: torch.Tensor, gi: 'GrammarIndex', sigma_m: float) -> torch.Tensor:
    """(B, 13, A) target distributions over the grammar-allowed ids (gi) of the plan tokens
    `target` (B, 13): a Gaussian of sigma_m metres over the x bins around the expert's bin, of
    sigma_m / 4 over the y bins (their range is 4x narrower, and a lane is 3.5 m), one-hot on
    <eot>. sigma_m 0 gives one-hot targets throughout. Why: with one-hot targets over 0.25 m bins,
    a plan 0.25 m off costs as much as one 20 m off, so the model learns no order among the bins and
    its probability spreads over many; a Gaussian target teaches "near the expert's value"."""
    B = target.shape[0]
    index = gi.index.expand(B, -1, -1)                         # (B, 13, A)
    hit = (index == target[:, :, None]) & gi.valid             # the target's slot per position
    if not sigma_m > 0:
        return hit.float()
    slot = hit.float().argmax(-1, keepdim=True).float()         # bin number of the target
    pos = torch.arange(index.shape[-1], dtype=torch.float32)
    is_x = torch.tensor([k % 2 == 0 and k < fmt.PLAN_TOKENS - 1 for k in range(fmt.PLAN_TOKENS)])
    is_y = torch.tensor([k % 2 == 1 for k in range(fmt.PLAN_TOKENS)])
    sigma_bins = torch.where(is_x, sigma_m / fmt.X_BIN_M, sigma_m / 4 / fmt.Y_BIN_M)[None, :, None]
    q = torch.exp(-0.5 * ((pos - slot) / sigma_bins) ** 2) * gi.valid
    q = torch.where((is_x | is_y)[None, :, None], q, hit.float())
    return q / q.sum(-1, keepdim=True)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def token_weights(goal_weight: float, plan_order: str) -> torch.Tensor:
    """(13,) CE weights of the plan positions, mean 1: the 3 s point's x and y get goal_weight
    times the others' (1.0: every token alike). Why: in a goal-first plan those two tokens carry the
    decision (brake, follow, change lane) and the other eleven mostly follow from them, so with equal
    weights 11/13 of the gradient goes to tokens that are easy once the goal is known."""
    if not goal_weight > 0:
        raise ValueError(f'goal_weight must be > 0, got {goal_weight}')
    w = torch.ones(fmt.PLAN_TOKENS)
    slot = list(fmt.PLAN_ORDERS[fmt.check_order(plan_order)]).index(fmt.TRAJECTORY_STEPS - 1)
    w[2 * slot:2 * slot + 2] = float(goal_weight)
    return w / w.mean()


def plan_logits(model, header, batch_seqs, pad_id, prompt_lm: bool = False):
    """Logits (B, 13, V) that predict the 13 plan tokens of frame-prompt + plan sequences, and
    those plan tokens (B, 13); with prompt_lm also the mean next-token cross-entropy over the frame
    prompts (prompt_lm_loss), else None."""
    seqs = [s[:-1] for s in batch_seqs]
    out, _, _ = run_with_header(model, header, seqs, pad_id, 0 if prompt_lm else fmt.PLAN_TOKENS)
    target = torch.tensor([s[-fmt.PLAN_TOKENS:] for s in batch_seqs])
    if not prompt_lm:
        return out.logits, target, None
    ids, mask, _ = left_pad(seqs, pad_id)
    return out.logits[:, -fmt.PLAN_TOKENS:], target, prompt_lm_loss(out.logits, ids, mask)


def prompt_lm_loss(logits, ids, mask):
    """Next-token cross-entropy over the frame prompt of left-padded (frame prompt + plan[:-1])
    sequences: position j predicts ids[j + 1] where both are tokens (not padding) and j + 1 is
    still the prompt (the last 13 positions predict the plan, scored apart). An auxiliary loss:
    the forward pass is paid for anyway, and reading the scene text ("car ahead in ego lane,
    18.4 m") is what the plan needs, while the plan gives 13 targets a sample against ~140 here."""
    n = ids.shape[1] - fmt.PLAN_TOKENS                  # positions 0 .. n-1 predict prompt tokens 1 .. n
    if n < 1:
        return logits.new_zeros(())
    pred, tgt = logits[:, :n], ids[:, 1:n + 1]
    valid = (mask[:, :n] > 0) & (mask[:, 1:n + 1] > 0)
    ce = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), tgt.reshape(-1), reduction='none')
    return (ce * valid.reshape(-1)).sum() / valid.sum().clamp(min=1)


class GrammarIndex:
    """Allowed ids per plan position as one (13, A) index tensor (A = the most allowed), padded
    with -1; lets KD and decoding work on the grammar-restricted distributions."""

    def __init__(self, tok, order: str = 'forward'):
        g = fmt.TrajectoryGrammar(tok.get_vocab(), order)
        allowed = [g.allowed_ids(k) for k in range(fmt.PLAN_TOKENS)]
        width = max(len(a) for a in allowed)
        self.index = torch.full((fmt.PLAN_TOKENS, width), 0, dtype=torch.long)
        self.valid = torch.zeros((fmt.PLAN_TOKENS, width), dtype=torch.bool)
        for k, a in enumerate(allowed):
            self.index[k, :len(a)] = torch.from_numpy(a)
            self.valid[k, :len(a)] = True
        self.grammar = g

    def restrict(self, logits):
        """(B, 13, V) -> (B, 13, A) logits of the allowed ids (-inf where padded)."""
        x = torch.gather(logits, 2, self.index.expand(logits.shape[0], -1, -1))
        return x.masked_fill(~self.valid, float('-inf'))


@torch.no_grad()
def decode_plan(model, past, logits, mask, pos, gi: GrammarIndex):
    """Constrained greedy decoding of the 13 plan tokens from a prompt's KV cache `past` and the
    logits of its last position: ids (B, 13) and the grammar-restricted logits (B, 13, A)."""
    steps, steps_logits = [], []
    for k in range(fmt.PLAN_TOKENS):
        r = torch.gather(logits, 1, gi.index[k].expand(len(logits), -1))
        r = r.masked_fill(~gi.valid[k], float('-inf'))
        nxt = gi.index[k][r.argmax(1)]
        steps.append(nxt)
        steps_logits.append(r)
        if k == fmt.PLAN_TOKENS - 1:
            break
        mask = torch.cat([mask, torch.ones(len(logits), 1, dtype=mask.dtype)], 1)
        pos = pos[:, -1:] + 1
        res = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                    past_key_values=past, use_cache=True)
        past, logits = res.past_key_values, res.logits[:, -1]
    return torch.stack(steps, 1), torch.stack(steps_logits, 1)


@torch.no_grad()
def greedy_plans(model, header, prompts: list[list[int]], tok, gi: GrammarIndex, batch_size=64):
    """Constrained greedy decoding with a KV cache, batched by prompt length: ids (N, 13)."""
    model.eval()
    ids = torch.zeros((len(prompts), fmt.PLAN_TOKENS), dtype=torch.long)
    order = np.argsort([len(p) for p in prompts])
    for b in range(0, len(prompts), batch_size):
        sel = order[b:b + batch_size]
        res, mask, pos = run_with_header(model, header, [prompts[i] for i in sel],
                                         tok.pad_token_id, 1, use_cache=True)
        got, _ = decode_plan(model, res.past_key_values, res.logits[:, -1], mask, pos, gi)
        ids[torch.from_numpy(sel)] = got
    return ids


def open_loop_l2(pred_xy: np.ndarray, true_xy: np.ndarray) -> dict:
    """Mean L2 (m) at 1, 2, 3 s of (N, 6, 2) plans against the expert."""
    err = np.linalg.norm(pred_xy - true_xy, axis=2)
    return {f'l2_{t}s': round(float(err[:, int(t / fmt.DT_S) - 1].mean()), 4) for t in (1, 2, 3)}


def evaluate(model, data, tok, gi, batch_size=64, true_xy=None, anchors=None) -> dict:
    """Open-loop L2 of constrained greedy plans against true_xy (N, 6, 2) (default: the quantised
    expert plans of `data`); anchors: one (6, 2) per sample (or None) when plans are anchored."""
    anchors = [None] * len(data) if anchors is None else anchors
    ids = greedy_plans(model, header_ids(tok), [p for p, _ in data], tok, gi, batch_size)
    pred = np.stack([gi.grammar.waypoints(r.tolist(), a) for r, a in zip(ids, anchors)])
    true = np.stack([gi.grammar.waypoints(t, a) for (_, t), a in zip(data, anchors)]) \
        if true_xy is None else true_xy
    return open_loop_l2(pred, true)


def constant_velocity_l2(samples) -> dict:
    """Baseline: keep the current speed straight ahead (yaw rate held)."""
    pred = []
    for s in samples:
        v, w = s['ego_speed_mps'], s['ego_yaw_rate_rps']
        t = np.arange(1, fmt.TRAJECTORY_STEPS + 1) * fmt.DT_S
        yaw = w * t
        if abs(w) < 1e-4:
            pred.append(np.c_[v * t, np.zeros_like(t)])
        else:
            pred.append(np.c_[v / w * np.sin(yaw), v / w * (1 - np.cos(yaw))])
    return open_loop_l2(np.array(pred), np.array([s['waypoints'] for s in samples]))


# ---------------------------------------------------------------- training
def _lr(cfg, step, elapsed_s):
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, step / cfg.steps if cfg.steps else elapsed_s / (cfg.max_minutes * 60))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


def _batches(n, batch_size, lengths, rng):
    """Random batches of similar length (less padding): shuffle, sort chunks of 50 batches."""
    perm = rng.permutation(n)
    chunk = batch_size * 50
    out = []
    for c in range(0, n, chunk):
        part = perm[c:c + chunk]
        part = part[np.argsort(lengths[part], kind='stable')]
        out += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return out


def _log(path, record):
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def prepare(cfg: TrainConfig):
    out = Path(cfg.out)
    tok = load_tokenizer(out / 'tokenizer')
    anchor, order, style = plan_format_of(out / 'tokenizer')
    train_s = load_planning_dataset(cfg.data, 'train')[:cfg.max_train]
    val_s = load_planning_dataset(cfg.data, 'val')
    val_s = spread(val_s, cfg.max_eval)   # evenly over every val scenario, not the first one or two
    return (tok, train_s, val_s, encode(tok, train_s, anchor, order, style),
            encode(tok, val_s, anchor, order, style))


def train(cfg: TrainConfig, resume=False, progress=True) -> dict:
    """Train the teacher, or a student (with KD from out/teacher unless cfg.kd is False)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    name = 'teacher' if cfg.role == 'teacher' else ('student_kd' if cfg.kd else 'student_nokd')
    out = Path(cfg.out)
    run = out / name
    ckpt = out / f'{name}.ckpt.pt'
    log = out / f'{name}.log'
    tok, train_s, val_s, train_d, val_d = prepare(cfg)
    plan_anchor, plan_order, prompt_style = plan_format_of(out / 'tokenizer')
    val_anchors = [sample_anchor(s, plan_anchor) for s in val_s]
    gi = GrammarIndex(tok, plan_order)
    weights = token_weights(cfg.goal_weight, plan_order)
    header = header_ids(tok)
    model = build_model(cfg.size, len(tok), tok)
    if cfg.numeric_init:
        numeric_init_(model, tok, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=(0.9, 0.95))
    labels = teacher_labels(cfg, tok, gi, train_d, progress) if cfg.role == 'student' and cfg.kd \
        else None
    step, elapsed, best, rng_state = 0, 0.0, None, None
    if resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['opt'])
        step, elapsed, best, rng_state = state['step'], state['elapsed'], state['best'], state['rng']
    rng = np.random.default_rng(cfg.seed)
    if rng_state is not None:
        rng.bit_generator.state = rng_state
    lengths = np.array([len(p) for p, _ in train_d])
    everything = np.arange(len(train_d))
    # students: half of each batch from the kd_samples rows the teacher labels (the same rows with
    # and without KD), half from the whole train split; both students draw identical batches
    kd_rows = kd_rows_of(cfg, len(train_d)) if cfg.role == 'student' else None
    coin = np.random.default_rng(cfg.seed + 2)       # expert or teacher plan, KD student only
    from tqdm import tqdm
    bar = tqdm(total=int(cfg.max_minutes * 60), initial=int(elapsed), unit='s', disable=not progress,
               desc=f'train {name} ({n_params(model) / 1e6:.2f}M params)')
    model.train()
    t_start, last_eval = time.perf_counter() - elapsed, elapsed
    batches = []
    while True:
        if kd_rows is not None:
            half = cfg.batch_size // 2
            idx = np.r_[rng.choice(kd_rows, half, replace=len(kd_rows) < half),
                        rng.choice(everything, cfg.batch_size - half, replace=False)]
        else:
            if not batches:
                batches = list(_batches(len(train_d), cfg.batch_size, lengths, rng))
            idx = batches.pop()
        elapsed = time.perf_counter() - t_start
        for g in opt.param_groups:
            g['lr'] = _lr(cfg, step, elapsed)
        labelled = np.zeros(len(idx), bool)
        use_teacher = np.zeros(len(idx), bool)
        if labels is not None:     # per labelled sample: expert plan or the teacher's (sequence KD)
            labelled = np.array([int(i) in labels['row_of'] for i in idx])
            use_teacher = labelled & (coin.random(len(idx)) < 0.5)
        plans = [labels['greedy'][labels['row_of'][int(i)]].tolist() if u else train_d[i][1]
                 for i, u in zip(idx, use_teacher)]
        logits, target, aux = plan_logits(model, header, [train_d[i][0] + p for i, p in zip(idx, plans)],
                                          tok.pad_token_id, cfg.prompt_lm_weight > 0)
        if cfg.label_sigma_m > 0:
            logp = F.log_softmax(gi.restrict(logits), -1).masked_fill(~gi.valid, 0.0)
            ce = -(soft_plan_targets(target, gi, cfg.label_sigma_m) * logp).sum(-1)
        else:
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                 reduction='none').view(target.shape)
        loss = (ce * weights).mean()
        if aux is not None:
            loss = loss + cfg.prompt_lm_weight * aux
        kd = torch.zeros(())
        if labelled.any():
            rows = [labels['row_of'][int(i)] for i in idx[labelled]]
            t_logits = torch.where(torch.from_numpy(use_teacher[labelled])[:, None, None],
                                   labels['greedy_logits'][rows], labels['expert_logits'][rows]).float()
            T = cfg.kd_temperature
            s_r = gi.restrict(logits[torch.from_numpy(labelled)]) / T
            t_r = t_logits / T
            valid = gi.valid.expand_as(s_r)
            p_t = F.softmax(t_r, -1)
            kl = (p_t * (F.log_softmax(t_r, -1) - F.log_softmax(s_r, -1))).masked_fill(~valid, 0.0)
            kd = kl.sum(-1).mean() * T * T
            loss = loss + cfg.kd_weight * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        elapsed = time.perf_counter() - t_start
        bar.n = min(int(elapsed), bar.total)
        bar.set_postfix(step=step, loss=f'{loss.item():.3f}', kd=f'{kd.item():.3f}')
        if step % 20 == 0:
            _log(log, {'step': step, 'elapsed_s': round(elapsed, 1), 'loss': round(loss.item(), 4),
                       'kd': round(kd.item(), 4), 'lr': opt.param_groups[0]['lr']})
        done = elapsed >= cfg.max_minutes * 60 or step >= min(cfg.max_steps, cfg.steps or cfg.max_steps)
        check = (step % max(1, cfg.steps // 3) == 0) if cfg.steps else elapsed - last_eval >= cfg.eval_every_s
        if check or done:
            metrics = evaluate(model, val_d, tok, gi, anchors=val_anchors)
            model.train()
            last_eval = elapsed
            _log(log, {'step': step, 'elapsed_s': round(elapsed, 1), 'val': metrics})
            if best is None or metrics['l2_3s'] <= best['l2_3s']:
                best = dict(metrics, step=step)
                model.save_pretrained(run)
                tok.save_pretrained(run)
                write_plan_format(run, plan_anchor, plan_order, prompt_style)
            torch.save({'model': model.state_dict(), 'opt': opt.state_dict(), 'step': step,
                        'elapsed': elapsed, 'best': best, 'rng': rng.bit_generator.state}, ckpt)
        if done:
            break
    bar.close()
    result = {'model': name, 'dir': str(run), 'params': n_params(model), 'steps': step,
              'minutes': round(elapsed / 60, 1), 'best_val': best,
              'train_samples_seen': step * cfg.batch_size,
              'config': {k: v for k, v in asdict(cfg).items()}}
    (out / f'{name}.result.json').write_text(json.dumps(result, indent=1))
    return result


def spread(samples: list, n: int | None) -> list:
    """n samples spread evenly over `samples` (all of them when n is None or not smaller): a split's
    samples come scenario by scenario, so its first n are a handful of scenarios."""
    if n is None or len(samples) <= n:
        return list(samples)
    return [samples[i] for i in np.linspace(0, len(samples) - 1, n).round().astype(int)]


def kd_rows_of(cfg: TrainConfig, n_train: int) -> np.ndarray:
    """The train rows the teacher labels (sorted), a function of the seed and kd_samples only."""
    return np.sort(np.random.default_rng(cfg.seed + 1).permutation(n_train)[:min(cfg.kd_samples, n_train)])


@torch.no_grad()
def teacher_labels(cfg: TrainConfig, tok, gi, train_d, progress=True) -> dict:
    """Teacher logits (restricted to the grammar) on the expert plan and on its own greedy plan,
    for kd_samples train samples; cached in out/teacher_labels.pt."""
    from transformers import LlamaForCausalLM
    path = Path(cfg.out) / 'teacher_labels.pt'
    rows = kd_rows_of(cfg, len(train_d))
    if path.exists():
        labels = torch.load(path, weights_only=False)
        if np.array_equal(labels['rows'], rows):
            return labels
    teacher_dir = Path(cfg.out) / 'teacher'
    if not (teacher_dir / 'config.json').exists():
        raise FileNotFoundError(f'no teacher in {teacher_dir}: run `fmdrive train planner-teacher` '
                                'first, or train the student with --no-kd')
    teacher = LlamaForCausalLM.from_pretrained(teacher_dir).eval()
    from tqdm import tqdm
    greedy, greedy_lg, expert_lg = [], [], []
    header = header_ids(tok)
    bs = 64
    n_plan = fmt.PLAN_TOKENS - 1          # plan tokens that are input (all but <eot>)
    order = rows[np.argsort([len(train_d[i][0]) for i in rows], kind='stable')]   # less padding
    for b in tqdm(range(0, len(order), bs), disable=not progress, desc='teacher labels'):
        sel = order[b:b + bs]
        # one pass over prompt + expert plan gives the teacher-forced logits; the same cache,
        # cropped back to the prompt, starts the teacher's own greedy plan
        res, mask, pos = run_with_header(teacher, header, [train_d[i][0] + train_d[i][1][:-1] for i in sel],
                                         tok.pad_token_id, fmt.PLAN_TOKENS, use_cache=True)
        expert_lg.append(gi.restrict(res.logits).half())
        past = res.past_key_values
        past.crop(-n_plan)
        g, gl = decode_plan(teacher, past, res.logits[:, 0], mask[:, :-n_plan], pos[:, :-n_plan], gi)
        greedy.append(g)
        greedy_lg.append(gl.half())
    labels = {'rows': rows, 'row_of': {int(r): k for k, r in enumerate(order)},
              'greedy': torch.cat(greedy), 'greedy_logits': torch.cat(greedy_lg),
              'expert_logits': torch.cat(expert_lg)}
    torch.save(labels, path)
    return labels


def test_metrics(out, data, batch_size=64, max_test=None, threads=1) -> dict:
    """Open-loop L2 at 1/2/3 s on the test split (all of it, or max_test samples spread evenly over
    it: the first 600 are a handful of scenarios): constant velocity, teacher, students (1 thread:
    faster than 2 on a loaded 2-core machine)."""
    from transformers import LlamaForCausalLM
    torch.set_num_threads(threads)
    out = Path(out)
    tok = load_tokenizer(out / 'tokenizer')
    plan_anchor, plan_order, prompt_style = plan_format_of(out / 'tokenizer')
    gi = GrammarIndex(tok, plan_order)
    test_s = spread(load_planning_dataset(data, 'test'), max_test)
    test_d = encode(tok, test_s, plan_anchor, plan_order, prompt_style)
    anchors = [sample_anchor(s, plan_anchor) for s in test_s]
    true_xy = np.array([s['waypoints'] for s in test_s])      # every model against the raw expert
    res = {'test_samples': len(test_s), 'plan_anchor': plan_anchor, 'plan_order': plan_order,
           'constant_velocity': constant_velocity_l2(test_s)}
    for name in ('teacher', 'student_kd', 'student_nokd'):
        if (out / name / 'config.json').exists():
            m = LlamaForCausalLM.from_pretrained(out / name).eval()
            t0 = time.perf_counter()
            res[name] = dict(evaluate(m, test_d, tok, gi, batch_size, true_xy, anchors), params=n_params(m),
                             eval_s=round(time.perf_counter() - t0, 1))
    (out / 'metrics.json').write_text(json.dumps(res, indent=1))
    return res


def tokenizer_command(data, out, plan_anchor: str = 'constant_velocity', plan_order: str = 'goal_first',
                      prompt_style: str = 'full') -> dict:
    fmt.check_anchor_mode(plan_anchor)
    fmt.check_order(plan_order)
    fmt.check_prompt_style(prompt_style)
    samples = load_planning_dataset(data, 'train')
    tok = train_tokenizer(samples, Path(out) / 'tokenizer', prompt_style)
    write_plan_format(Path(out) / 'tokenizer', plan_anchor, plan_order, prompt_style)
    enc = encode(tok, samples[:2000], plan_anchor, plan_order, prompt_style)
    unk = sum(p.count(tok.unk_token_id) for p, _ in enc) / max(1, sum(len(p) for p, _ in enc))
    header = tok(fmt.HEADER, add_special_tokens=False)['input_ids']
    return {'vocab': len(tok), 'dir': str(Path(out) / 'tokenizer'), 'plan_anchor': plan_anchor,
            'plan_order': plan_order, 'prompt_style': prompt_style,
            'header_tokens': len(header),
            'frame_tokens_mean': round(float(np.mean([len(p) for p, _ in enc])), 1),
            'frame_tokens_max': int(max(len(p) for p, _ in enc)), 'unk_rate': round(unk, 5)}
