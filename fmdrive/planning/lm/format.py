"""The planner LM's contract: prompt text, intent tokens, trajectory tokens and the output grammar.

Training (fmdrive/training/planner_lm.py) and the runtime decoder (planning/lm/runtime.py) both
build prompts and read plans only through this module, so the two cannot drift apart.

Prompt = HEADER + frame part:

    HEADER   "<bos> You are the motion planner of a car that drives on the right. ... Scene:"
             identical for every frame, so its key/values are computed once and reused
             (the runtime's prefix cache).
    frame    " Ego: 8.2 m/s, ... Objects: car #3 ahead in ego lane, 18.4 m, ... .
              Instruction: <intent_keep_lane> <plan>"

The frame part is the fusion node's scene text (fusion/scene.py `describe_scene`) without its
leading "t=12.3s." time stamp: time is irrelevant to the plan, and a bag's absolute stamp
(t=1700000012.3s) would be out of every training distribution.

Prompt style (the card's `decoder.prompt_style`): `full` = the scene text as written, without the
phrases added after the first models (_NEWER_PHRASES); `compact2` = `compact` below with them: the
objects' acceleration ("braking 2.5": a lead that brakes, which one frame's positions and speeds
cannot show) and the ego's place in its lane ("0.9 left-of-own-centre heading-left 5.6 curve-left
294": the text places objects by lane, the plan is in base_link, and mid-manoeuvre or on a curve
the two differ by more than a car's width); `compact` =
the same text with units, object ids and filler words taken out and multi-word phrases made one
hyphenated word (`compact_scene`: "car #9 ahead in ego lane, 19.4 m, moving same direction at 8.6
m/s, closing at 3.0 m/s (time to collision 6.5 s)" -> "car ego-ahead 19.4 same 8.6 closing 3.0 ttc
6.5"). Every number and every deciding word stays. Why: on a CPU the training cost of a sample and
the prefill cost of a frame grow with the prompt length, and the compact frame is about half as
many tokens (69 against 139 on the planning dataset); a student trained 8 min on one thread reached
val L2@3s 2.85 m compact against 3.23 m full (constant velocity: 3.27 m). The instruction is never free
text: a human's words are mapped (by the runtime, through the pretrained text encoder) onto one
of INTENTS, which enters the prompt as one special token. `none` = no instruction.

Output = 6 waypoints at 0.5 s .. 3.0 s, x and y of base_link at that time in base_link of the
frame (metres, x forward, y left), as 12 tokens x1 y1 x2 y2 ... x6 y6 then `<eot>`.

Plan anchor (the card's `decoder.plan_anchor`): with `constant_velocity` the tokens say where the
car goes RELATIVE to where it would be if it kept its current speed and yaw rate
(`anchor_waypoints`), the anchor being computed from the ego state outside the model and added
back by the decoder; with `none` they are the waypoints themselves. Why the anchor: with absolute
bins the model must turn the speed it reads ("8" ".2" m/s) into 6 x bins before it can say
anything about the scene, which a small model trained for minutes on 2 cores does poorly (the
first absolute student's L2@1s was 3.8 m against constant velocity's 0.28 m); relative to the
anchor, "keep going" is one bin for every speed and what is learnt is the decision (brake,
follow, change lane). The same 381 x bins cover [-65, 30] m around the anchor (a stop from 30 m/s
within 3 s is -45 m), so both encodings share the vocabulary.

Plan order (the card's `decoder.plan_order`): `forward` = x1 y1 ... x6 y6; `goal_first` = x6 y6
(the 3 s point) first, then x1 y1 ... x5 y5. Why goal first: relative to the anchor the first
waypoints are all within a bin or two of 0 whatever the car will do (braking at 3 m/s^2 moves the
0.5 s point by 0.4 m), so a forward plan commits to "keep going" before the tokens that carry the
decision; a teacher trained that way answered exactly the constant-velocity plan on every
validation scene, greedy or expected-value decoding alike. Decided first, the 3 s point carries
the decision, and the intermediate points follow from it.

Number tokenisation (why one token per quantised coordinate): a coordinate written as digits
("12.25" -> 5 tokens) makes a plan ~60 tokens long, lets the model emit malformed numbers, and
makes the loss of "12.25" vs "12.50" depend on which digit is wrong. One token per bin makes a
plan exactly 13 tokens (decode cost is per token), makes the constrained decoder a fixed mask per
position (x bins at even steps, y bins at odd steps, `<eot>` last), so greedy decoding can only
produce a parseable, in-range trajectory, and lets the soft teacher distribution over neighbouring
bins carry "about 12 m" for distillation. The price is a vocabulary of 381 + 241 coordinate tokens
and a quantisation error of at most half a bin (0.125 m in x, 0.05 m in y), well under the
planner's L2 errors. Ranges: x in [-5, 90] m (3 s at 30 m/s) at 0.25 m, y in [-12, 12] m at 0.1 m;
values outside are clipped to the range.

Numbers inside the scene text are a separate matter, decided by the tokenizer (training side):
each decimal number ("18.4") is one word-level token, see planner_lm.py.
"""
from __future__ import annotations

import re

import numpy as np

TRAJECTORY_STEPS = 6
DT_S = 0.5
PLAN_TOKENS = 2 * TRAJECTORY_STEPS + 1          # x1 y1 ... x6 y6 <eot>

X_RANGE_M, X_BIN_M = (-5.0, 90.0), 0.25
X_RESIDUAL_RANGE_M = (-65.0, 30.0)             # x relative to the anchor: the same 381 bins
Y_RANGE_M, Y_BIN_M = (-12.0, 12.0), 0.1
NUM_X_BINS = int(round((X_RANGE_M[1] - X_RANGE_M[0]) / X_BIN_M)) + 1   # 381
NUM_Y_BINS = int(round((Y_RANGE_M[1] - Y_RANGE_M[0]) / Y_BIN_M)) + 1   # 241
PLAN_ANCHORS = ('none', 'constant_velocity')
PLAN_ORDERS = {'forward': (0, 1, 2, 3, 4, 5), 'goal_first': (5, 0, 1, 2, 3, 4)}   # waypoint index per slot
ANCHOR_MAX_SPEED_MPS = 40.0      # the anchor's speed and yaw rate are clipped to these (a broken
ANCHOR_MAX_YAW_RATE_RPS = 1.0    # ego message must not move the anchor out of every bin)

PAD, BOS, EOT, UNK, PLAN = '<pad>', '<bos>', '<eot>', '<unk>', '<plan>'
INTENTS = ('none', 'keep_lane', 'change_lane_left', 'change_lane_right', 'pull_over', 'slow_down',
           'follow_lead', 'overtake', 'stop_at_intersection')
INTENT_TOKENS = tuple(f'<intent_{i}>' for i in INTENTS)
X_TOKENS = tuple(f'<x_{k:03d}>' for k in range(NUM_X_BINS))
Y_TOKENS = tuple(f'<y_{k:03d}>' for k in range(NUM_Y_BINS))
# Every token the tokenizer must hold as one unsplittable special token, in a fixed order.
SPECIAL_TOKENS = (PAD, BOS, EOT, UNK, PLAN) + INTENT_TOKENS + X_TOKENS + Y_TOKENS

HEADER = (f'{BOS} You are the motion planner of a car that drives on the right. '
          'The scene lists the ego state and the nearby objects, distances in metres and speeds '
          'in m/s. Follow the instruction when it is safe. Never leave the road, never come close '
          'to an object and keep to the speed limit. Answer with six waypoints, one every 0.5 s, '
          'x forward and y left of the car. Scene:')

_STAMP = re.compile(r'^\s*t=[^\s]*s\.\s*')
_X_RE = re.compile(r'^<x_(\d{3})>$')
_Y_RE = re.compile(r'^<y_(\d{3})>$')


class FormatError(ValueError):
    """Tokens that are not a plan, or an intent that is not one of INTENTS."""


def intent_token(intent: str | None) -> str:
    """The special token of an intent (None = 'none')."""
    intent = 'none' if intent is None else intent
    if intent not in INTENTS:
        raise FormatError(f'unknown intent {intent!r}; known: {", ".join(INTENTS)}')
    return f'<intent_{intent}>'


# The compact prompt style: the same scene text with the words that carry nothing for a planner
# that always reads the same grammar taken out (units: the HEADER states them; object ids; "moving
# ... at"; "time to collision"), each remaining phrase one hyphenated word where it was several.
# Applied in order; every rule is a plain rewrite of fusion/scene.py's sentences, and text that
# matches none of them (a user's own wording) passes through unchanged.
_COMPACT_RULES = tuple((re.compile(a), b) for a, b in (
    (r' #\d+\b', ''),                                          # object ids
    (r'\(time to collision ([\d.]+) s\)', r'ttc \1'),
    (r'\bclosing at ', 'closing '),
    (r'\bgap opening at ', 'opening '),
    (r'\bmoving same direction at ', 'same '),
    (r'\bmoving opposite direction at ', 'oncoming '),
    (r'\bmoving (left|right) at ', r'to-\1 '),
    (r'\b(ahead|behind) in ego lane\b', r'ego-\1'),
    (r'\bin (left|right) lane\b', r'\1-lane'),
    (r'\b(\d+) lanes (left|right)\b', r'\1 lanes-\2'),
    (r' m (left|right) of ego lane centre', r' \1-of-centre'),
    (r'\bspeed limit ', 'limit '),
    (r'\bin lane (\d+) of (\d+) from the right\b', r'lane \1 of \2'),
    (r'\b(left|right) lane (occupied|free)\b', r'\1-\2'),
    (r'\bno (left|right) lane\b', r'no-\1'),
    (r'\bturning (left|right) at ([\d.]+) deg/s', r'turning-\1 \2'),
    (r'\(over the limit\)', 'over-limit'),
    (r' not listed\b', ''),
    (r'\bkeeping distance\b', 'keeping'),
    (r'\bbraking at ([\d.]+) m/s2', r'braking \1'),
    (r'\bspeeding up at ([\d.]+) m/s2', r'speeding \1'),
    (r' m (left|right) of its centre', r' \1-of-own-centre'),
    (r'\bheading ([\d.]+) deg (left|right) of it\b', r'heading-\2 \1'),
    (r'\broad ahead curving (left|right) \(radius (\d+) m\)', r'curve-\1 \2'),
    (r' (?:m/s|m|s)(?=[,;.)\s]|$)', ''),                         # units after a number
    (r',', ''),
))
PROMPT_STYLES = ('full', 'compact', 'compact2')
# Phrases fusion/scene.py writes since the `full` and `compact` models were trained: the objects'
# acceleration (", braking at 2.5 m/s2") and the ego's place in its lane (", 0.9 m left of its
# centre, heading 5.6 deg left of it, road ahead curving left (radius 294 m)"). Those styles take
# them out, so such a model reads the text it was trained on; `compact2` is `compact` with them.
_NEWER_PHRASES = re.compile(r', (?:braking|speeding up) at [\d.]+ m/s2'
                            r'|, [\d.]+ m (?:left|right) of its centre'
                            r'|, heading [\d.]+ deg (?:left|right) of it\b'
                            r'|, road ahead curving (?:left|right) \(radius \d+ m\)')


def check_prompt_style(style: str) -> str:
    if style not in PROMPT_STYLES:
        raise FormatError(f'unknown prompt style {style!r}; known: {", ".join(PROMPT_STYLES)}')
    return style


def compact_scene(body: str) -> str:
    """The compact style of a scene text (see _COMPACT_RULES): about 2.5x fewer tokens, which is
    2.5x more training samples per second on a CPU and a shorter prompt to run at every frame."""
    for pattern, repl in _COMPACT_RULES:
        body = pattern.sub(repl, body)
    return ' '.join(body.split())


def frame_text(scene_text: str, intent: str | None, style: str = 'full') -> str:
    """The per-frame part of the prompt (everything after HEADER), in prompt `style`."""
    body = _STAMP.sub('', scene_text or '').strip() or 'Objects: none.'
    body = ' '.join(body.split())            # one space between words, no newlines
    if check_prompt_style(style) != 'compact2':
        body = _NEWER_PHRASES.sub('', body)
    if style != 'full':
        body = compact_scene(body)
    return f' {body} Instruction: {intent_token(intent)} {PLAN}'


def prompt_text(scene_text: str, intent: str | None, style: str = 'full') -> str:
    """HEADER + frame_text: the whole prompt; the plan tokens follow it."""
    return HEADER + frame_text(scene_text, intent, style)


# ---------------------------------------------------------------- the plan anchor
def check_anchor_mode(mode: str) -> str:
    if mode not in PLAN_ANCHORS:
        raise FormatError(f'unknown plan anchor {mode!r}; known: {", ".join(PLAN_ANCHORS)}')
    return mode


def anchor_waypoints(speed_mps: float, yaw_rate_rps: float = 0.0) -> np.ndarray:
    """(6, 2) base_link positions at 0.5 .. 3 s when keeping the current speed and yaw rate (a
    non-finite value counts as 0; both clipped to the ANCHOR_MAX_* bounds)."""
    v = float(speed_mps) if np.isfinite(speed_mps) else 0.0
    w = float(yaw_rate_rps) if np.isfinite(yaw_rate_rps) else 0.0
    v = min(max(v, 0.0), ANCHOR_MAX_SPEED_MPS)
    w = min(max(w, -ANCHOR_MAX_YAW_RATE_RPS), ANCHOR_MAX_YAW_RATE_RPS)
    t = DT_S * np.arange(1, TRAJECTORY_STEPS + 1)
    if abs(w) < 1e-4:
        return np.c_[v * t, np.zeros_like(t)]
    return np.c_[v / w * np.sin(w * t), v / w * (1 - np.cos(w * t))]


def check_order(order: str) -> str:
    if order not in PLAN_ORDERS:
        raise FormatError(f'unknown plan order {order!r}; known: {", ".join(PLAN_ORDERS)}')
    return order


def _x_origin(anchor) -> float:
    return X_RANGE_M[0] if anchor is None else X_RESIDUAL_RANGE_M[0]


def _anchor_array(anchor) -> np.ndarray:
    a = np.asarray(anchor, dtype=np.float64)
    if a.shape != (TRAJECTORY_STEPS, 2) or not np.all(np.isfinite(a)):
        raise FormatError(f'an anchor must be finite, shape ({TRAJECTORY_STEPS}, 2)')
    return a


# ---------------------------------------------------------------- waypoints <-> tokens
def quantise_waypoints(xy: np.ndarray, anchor=None) -> tuple[np.ndarray, np.ndarray]:
    """Bin indices (x_bins, y_bins), each (TRAJECTORY_STEPS,), of clipped waypoints (relative to
    `anchor` (6, 2) when one is given)."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.shape != (TRAJECTORY_STEPS, 2):
        raise FormatError(f'waypoints must have shape ({TRAJECTORY_STEPS}, 2), got {xy.shape}')
    if not np.all(np.isfinite(xy)):
        raise FormatError('waypoints must be finite')
    x_range = X_RANGE_M
    if anchor is not None:
        xy = xy - _anchor_array(anchor)
        x_range = X_RESIDUAL_RANGE_M
    xb = np.rint((np.clip(xy[:, 0], *x_range) - x_range[0]) / X_BIN_M).astype(int)
    yb = np.rint((np.clip(xy[:, 1], *Y_RANGE_M) - Y_RANGE_M[0]) / Y_BIN_M).astype(int)
    return xb, yb


def encode_waypoints(xy: np.ndarray, anchor=None, order: str = 'forward') -> list[str]:
    """(6, 2) metres in base_link -> the 12 coordinate tokens x y per waypoint in `order` (forward:
    x1 y1 ... x6 y6) without <eot>, relative to `anchor` (6, 2) when one is given."""
    xb, yb = quantise_waypoints(xy, anchor)
    out = []
    for i in PLAN_ORDERS[check_order(order)]:
        out += [X_TOKENS[xb[i]], Y_TOKENS[yb[i]]]
    return out


def decode_waypoints(token_strings, anchor=None, order: str = 'forward') -> np.ndarray:
    """12 coordinate tokens in `order` (a trailing <eot> and surrounding spaces allowed) -> (6, 2)
    metres in time order (the tokens read relative to `anchor` (6, 2) when one is given)."""
    slots = PLAN_ORDERS[check_order(order)]
    toks = [t.strip() for t in token_strings if t.strip()]
    if toks and toks[-1] == EOT:
        toks = toks[:-1]
    if len(toks) != 2 * TRAJECTORY_STEPS:
        raise FormatError(f'a plan is {2 * TRAJECTORY_STEPS} coordinate tokens, got {len(toks)}')
    xy = np.empty((TRAJECTORY_STEPS, 2))
    for i in range(TRAJECTORY_STEPS):
        mx, my = _X_RE.match(toks[2 * i]), _Y_RE.match(toks[2 * i + 1])
        if mx is None or my is None or int(mx[1]) >= NUM_X_BINS or int(my[1]) >= NUM_Y_BINS:
            raise FormatError(f'waypoint {i + 1} is not <x_###> <y_###>: '
                              f'{toks[2 * i]!r} {toks[2 * i + 1]!r}')
        xy[slots[i]] = _x_origin(anchor) + int(mx[1]) * X_BIN_M, Y_RANGE_M[0] + int(my[1]) * Y_BIN_M
    return xy if anchor is None else xy + _anchor_array(anchor)


# ---------------------------------------------------------------- constrained decoding
class TrajectoryGrammar:
    """Which token ids may come at each output position, from a tokenizer's vocabulary.

    Output position step 0..11 alternates x and y bins; step 12 admits only <eot>. Greedy decoding
    that takes the argmax over `allowed_ids(step)` can only produce a parseable trajectory.
    """

    def __init__(self, vocab: dict, order: str = 'forward'):
        missing = [t for t in (EOT,) + X_TOKENS + Y_TOKENS if t not in vocab]
        if missing:
            raise FormatError(f'the tokenizer lacks {len(missing)} plan tokens (e.g. {missing[0]}); '
                              'it was not built with planning.lm.format.SPECIAL_TOKENS')
        self.x_ids = np.array([vocab[t] for t in X_TOKENS], dtype=np.int64)
        self.y_ids = np.array([vocab[t] for t in Y_TOKENS], dtype=np.int64)
        self.eot_id = int(vocab[EOT])
        self.eot_ids = np.array([self.eot_id], dtype=np.int64)
        self.order = check_order(order)
        self._slots = np.array(PLAN_ORDERS[order])
        self._x_bin = {int(i): k for k, i in enumerate(self.x_ids)}
        self._y_bin = {int(i): k for k, i in enumerate(self.y_ids)}

    def allowed_ids(self, step: int) -> np.ndarray:
        if not 0 <= step < PLAN_TOKENS:
            raise FormatError(f'output position {step} outside 0..{PLAN_TOKENS - 1}')
        if step == PLAN_TOKENS - 1:
            return self.eot_ids
        return self.x_ids if step % 2 == 0 else self.y_ids

    def waypoint_of_step(self, step: int) -> int:
        """The waypoint (0 = 0.5 s .. 5 = 3 s) whose x (even step) or y (odd step) output position
        `step` holds, in the grammar's order."""
        if not 0 <= step < 2 * TRAJECTORY_STEPS:
            raise FormatError(f'output position {step} is not a coordinate position')
        return int(self._slots[step // 2])

    def coordinates(self, waypoint: int, anchor=None) -> tuple[np.ndarray, np.ndarray]:
        """(x metres of every x bin, y metres of every y bin) of waypoint `waypoint` in base_link,
        as waypoints() reads them (relative to `anchor` when one is given)."""
        x = _x_origin(anchor) + np.arange(NUM_X_BINS) * X_BIN_M
        y = Y_RANGE_M[0] + np.arange(NUM_Y_BINS) * Y_BIN_M
        if anchor is not None:
            a = _anchor_array(anchor)[waypoint]
            x, y = x + a[0], y + a[1]
        return x, y

    def bin_of(self, token: int) -> int:
        """The x or y bin index of a coordinate token."""
        token = int(token)
        if token in self._x_bin:
            return self._x_bin[token]
        if token in self._y_bin:
            return self._y_bin[token]
        raise FormatError(f'id {token} is not a coordinate token')

    def mask(self, step: int, vocab_size: int) -> np.ndarray:
        """Boolean (vocab_size,) mask of the allowed ids (for masking logits with -inf)."""
        m = np.zeros(vocab_size, dtype=bool)
        m[self.allowed_ids(step)] = True
        return m

    def waypoints(self, ids, anchor=None) -> np.ndarray:
        """(6, 2) metres in time order from the 12 (or 13 with <eot>) generated ids in the
        grammar's order (read relative to `anchor` (6, 2) when one is given)."""
        ids = [int(i) for i in ids]
        if len(ids) == PLAN_TOKENS and ids[-1] == self.eot_id:
            ids = ids[:-1]
        if len(ids) != 2 * TRAJECTORY_STEPS:
            raise FormatError(f'a plan is {2 * TRAJECTORY_STEPS} coordinate ids, got {len(ids)}')
        try:
            bins = np.array([[self._x_bin[ids[2 * i]], self._y_bin[ids[2 * i + 1]]]
                             for i in range(TRAJECTORY_STEPS)], dtype=np.float64)
        except KeyError as exc:
            raise FormatError(f'id {exc.args[0]} is not a coordinate token at its position') from None
        xy = np.empty((TRAJECTORY_STEPS, 2))
        xy[self._slots] = np.c_[_x_origin(anchor) + bins[:, 0] * X_BIN_M, Y_RANGE_M[0] + bins[:, 1] * Y_BIN_M]
        return xy if anchor is None else xy + _anchor_array(anchor)
