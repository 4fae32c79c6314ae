"""The language-model planner: Scene -> prompt (format.py) -> constrained greedy decoding over the
exported student (runtime.py) -> 6 waypoints in base_link -> a Plan in odom, source 'llm'.

    planner = LMPlanner.load('engines/planner_student', precision='int8')
    result = planner.plan(scene, 'change_lane_left')      # a canonical intent (format.INTENTS)

`instruction` is expected to be a canonical intent: the arbiter maps a human's words onto one
through the text encoder (intents.py) and refuses the rest. Free text that is not an intent name is
classified here when an IntentClassifier was given, else planned as 'none' (and said in the notes).

The card's `decoder.plan_anchor` says how the plan tokens read: `constant_velocity` = relative to
the rollout of the ego's current speed and yaw rate (format.anchor_waypoints), `none` = absolute
base_link waypoints (a card without the key); `decoder.plan_order` the order of the waypoints
tokens (format.PLAN_ORDERS; forward without the key). The model only gives positions. Speeds and headings come from the positions: headings from the
direction of travel (kept while standing), speeds from a least-squares fit of the distance
travelled s(t) = v0 t + a t^2 + b t^3 (+ c t^4) through the current speed, so the bin quantisation
of the waypoints (0.25 m in x) does not become +-1 m/s speed noise. Whether the result is
drivable and safe is not decided here: the arbiter's safety filter judges it like any plan.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fmdrive.geometry import wrap_angle
from fmdrive.objects import Plan, Scene
from fmdrive.planning.lm import format as fmt
from fmdrive.planning.lm.guard import CANDIDATES, TOP, CollisionGuard
from fmdrive.planning.lm.runtime import CausalLM, ConstrainedDecoder
from fmdrive.planning.protocol import PlanResult

TOKENIZER_FILE = 'tokenizer.json'
STANDING_STEP_M = 0.3          # a waypoint step shorter than this keeps the previous heading


class LMPlannerError(RuntimeError):
    """The planner model cannot be used (missing tokenizer, tokens the grammar needs, bad card)."""


def waypoints_to_plan(scene: Scene, xy_base: np.ndarray, dt_s: float = fmt.DT_S, source: str = 'llm',
                      status: str = 'ok') -> Plan:
    """(K, 2) waypoints in base_link at dt_s, 2 dt_s, ... -> Plan in odom with headings and speeds."""
    xy = np.asarray(xy_base, dtype=np.float64).reshape(-1, 2)
    k = len(xy)
    t = dt_s * np.arange(1, k + 1)
    pts = np.vstack([[0.0, 0.0], xy])
    step = np.diff(pts, axis=0)
    step_len = np.hypot(step[:, 0], step[:, 1])
    # headings: direction of the chord around each waypoint; standing keeps the previous one
    yaw = np.zeros(k)
    heading = 0.0
    for i in range(k):
        nxt = pts[i + 2] - pts[i] if i + 2 < len(pts) else step[i]
        if np.hypot(*nxt) >= STANDING_STEP_M and (step_len[i] >= STANDING_STEP_M or i + 2 < len(pts)):
            heading = float(np.arctan2(nxt[1], nxt[0]))
        yaw[i] = heading
    # speeds: derivative of a smooth fit of the distance travelled, pinned to the current speed
    v0 = max(float(scene.ego.speed_mps), 0.0) if np.isfinite(scene.ego.speed_mps) else 0.0
    s = np.cumsum(step_len)
    basis = np.stack([t ** 2, t ** 3, t ** 4], axis=1)
    coef, *_ = np.linalg.lstsq(basis, s - v0 * t, rcond=None)
    speeds = v0 + 2 * coef[0] * t + 3 * coef[1] * t ** 2 + 4 * coef[2] * t ** 3
    speeds = np.maximum(speeds, 0.0)
    if s[-1] < 1e-6:
        speeds[:] = 0.0           # standing still (the fit would still carry v0 decaying)
    ego = scene.ego
    c, si = np.cos(ego.yaw_rad), np.sin(ego.yaw_rad)
    poses = np.c_[ego.x + c * xy[:, 0] - si * xy[:, 1], ego.y + si * xy[:, 0] + c * xy[:, 1],
                  wrap_angle(yaw + ego.yaw_rad)]
    return Plan(scene.stamp_ns, poses, t, speeds, source=source, status=status)


class LMPlanner:
    source = 'llm'

    def __init__(self, lm: CausalLM, tokenizer, precision: str = 'fp32', mode: str = 'kv',
                 prefix_cache: bool = True, classifier=None, frame_reuse: bool = True, draft: bool = True,
                 guard: bool = True):
        """draft: pass the last plan's tokens to the decoder as a draft (runtime.py: verified in the
        prefill call; the plan is the same, the forward calls fewer when consecutive plans agree).
        guard: collision-aware decoding (guard.py): among its most likely coordinates the decoder takes
        the first that keeps the ego footprint clear of the predicted objects. `limits` (the arbiter
        sets its own) gives the footprint and margin."""
        self.lm, self.tokenizer = lm, tokenizer
        self.draft = bool(draft)
        self.guard = bool(guard)
        self.limits = None
        self._last_plan_tokens: list = []
        self.decoder = ConstrainedDecoder(lm, frame_reuse=frame_reuse)
        decoder = lm.card.decoder or {}
        try:
            self.grammar = fmt.TrajectoryGrammar(tokenizer.get_vocab(), str(decoder.get('plan_order', 'forward')))
        except fmt.FormatError as exc:
            raise LMPlannerError(f'{lm.card.name}: card decoder.plan_order / tokenizer: {exc}') from None
        vocab = lm.vocab_size
        top = int(max(self.grammar.x_ids.max(), self.grammar.y_ids.max(), self.grammar.eot_id))
        if vocab is not None and top >= vocab:
            raise LMPlannerError(f'{lm.card.name}: tokenizer id {top} is outside the model vocabulary ({vocab})')
        try:
            self.plan_anchor = fmt.check_anchor_mode(str((lm.card.decoder or {}).get('plan_anchor', 'none')))
        except fmt.FormatError as exc:
            raise LMPlannerError(f'{lm.card.name}: card decoder.plan_anchor: {exc}') from None
        try:
            self.prompt_style = fmt.check_prompt_style(str(decoder.get('prompt_style', 'full')))
        except fmt.FormatError as exc:
            raise LMPlannerError(f'{lm.card.name}: card decoder.prompt_style: {exc}') from None
        self.precision, self.mode, self.prefix_cache = precision, mode, prefix_cache
        self.classifier = classifier
        self.header_ids = self.encode(fmt.HEADER)
        sample = fmt.frame_text('Ego: 5.0 m/s. Objects: none.', 'none', self.prompt_style)
        if self.header_ids + self.encode(sample) != self.encode(fmt.HEADER + sample):
            # the tokenizer merges across the header boundary: the header KV cannot be reused
            self.prefix_cache = False
        self.last_generation = None

    @classmethod
    def load(cls, model_dir, precision: str = 'int8', backend: str = 'auto', threads: int = 1,
             mode: str = 'kv', prefix_cache: bool = True, classifier=None,
             frame_reuse: bool = True, draft: bool = True, guard: bool = True) -> 'LMPlanner':
        """The planner of a model directory (card.yaml, its ONNX files, tokenizer.json). precision
        int8 runs the card's int8 variant when it has one, else fp32; on TensorRT without an
        int8_trt file, fp16 (describe() says what runs)."""
        from tokenizers import Tokenizer

        from fmdrive.inference.card import load_card
        model_dir = Path(model_dir)
        if not (model_dir / 'card.yaml').is_file():
            raise LMPlannerError(f'{model_dir}: no card.yaml (the planner model is exported by fmdrive export planner)')
        if not (model_dir / TOKENIZER_FILE).is_file():
            raise LMPlannerError(f'{model_dir}: no {TOKENIZER_FILE} beside the card')
        from fmdrive.inference.backend import make_backend, tensorrt_status
        card = load_card(model_dir)                     # hashes and ONNX signatures of every variant
        on_tensorrt = backend == 'tensorrt' or (backend == 'auto' and tensorrt_status()[0])
        if precision == 'int8' and on_tensorrt and 'int8_trt' not in card.files:
            precision = 'fp16'          # the LM's int8 is dynamic (CPU only); TensorRT builds fp16 from fp32
        if precision == 'int8' and not ({'int8_cpu', 'int8_trt'} & set(card.files)):
            precision = 'fp32'
        lm = CausalLM(card, make_backend(card, precision, backend, 'model', threads=threads))
        return cls(lm, Tokenizer.from_file(str(model_dir / TOKENIZER_FILE)), precision, mode, prefix_cache,
                   classifier, frame_reuse, draft, guard)

    def reset(self) -> None:
        """Forget the last frame (its prompt's KV and its plan as the next draft): a new drive. The
        header's cache stays (it does not depend on the drive)."""
        self.decoder.forget_last_prompt()
        self._last_plan_tokens = []

    def encode(self, text: str) -> list:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def prompt_ids(self, scene: Scene, intent: str) -> tuple[list, list]:
        """(header ids, frame ids) of the prompt for `scene` and a canonical intent."""
        return self.header_ids, self.encode(fmt.frame_text(scene.text, intent, self.prompt_style))

    def intent_of(self, instruction: str) -> tuple[str, list]:
        """(canonical intent, notes) for what the arbiter passed."""
        text = (instruction or '').strip()
        if not text:
            return 'none', []
        if text in fmt.INTENTS:
            return text, []
        if self.classifier is not None:
            r = self.classifier.classify(text)
            return r.intent, ([r.refused] if r.refused else [])
        return 'none', [f'instruction {text[:40]!r} not an intent and no text encoder here: planned as none']

    def plan(self, scene: Scene, instruction: str = '', budget_ms: float | None = None) -> PlanResult:
        t0 = time.perf_counter()
        intent, notes = self.intent_of(instruction)
        header, frame = self.prompt_ids(scene, intent)
        deadline = None if budget_ms is None else t0 + budget_ms / 1e3
        anchor = self.anchor(scene)
        draft = self._last_plan_tokens if self.draft else None
        gen = self.decoder.generate(header, frame, self.grammar.allowed_ids, fmt.PLAN_TOKENS, self.grammar.eot_id,
                                    self.mode, self.prefix_cache, deadline, draft=draft)
        xy = self.grammar.waypoints(gen.tokens, anchor)
        guard, redecoded = None, False
        if self.guard:
            guard = CollisionGuard(scene, self.grammar, anchor, self.limits)
            if not guard.plan_clear(xy):
                # decode again with the guard choosing among the likeliest coordinates (the prompt's KV
                # is the last prompt's: only the plan tokens run again)
                gen = self.decoder.generate(header, frame, self.grammar.allowed_ids, fmt.PLAN_TOKENS,
                                            self.grammar.eot_id, self.mode, self.prefix_cache, deadline,
                                            draft=draft, guard=guard.free,
                                            guard_candidates=CANDIDATES, guard_top=TOP)
                xy, redecoded = self.grammar.waypoints(gen.tokens, anchor), True
        self.last_generation = gen
        self._last_plan_tokens = [t for t in gen.tokens if t != self.grammar.eot_id]
        status = 'ok' + ''.join(f'; {n}' for n in notes)
        plan = waypoints_to_plan(scene, xy, status=status)
        plan.planning_time_ms = (time.perf_counter() - t0) * 1e3
        debug = {'intent': intent, 'waypoints_base': xy, 'tokens': gen.tokens, 'prompt_tokens': gen.prompt_tokens,
                 'prefilled_tokens': gen.prefilled_tokens, 'prefix_hit': gen.prefix_hit,
                 'reused_frame_tokens': gen.reused_frame_tokens,
                 'draft_tokens': gen.draft_tokens, 'draft_accepted': gen.draft_accepted,
                 'forward_calls': gen.forward_calls, 'guarded_tokens': gen.guarded_tokens, 'guard_redecoded': redecoded,
                 'guard_checks': 0 if guard is None else guard.checks,
                 'prefill_ms': gen.prefill_ms, 'decode_ms': gen.decode_ms}
        return PlanResult(plan, 1, {}, status, None, notes, debug)

    def anchor(self, scene: Scene):
        """The (6, 2) anchor the plan tokens are relative to, or None (absolute plans)."""
        if self.plan_anchor == 'none':
            return None
        return fmt.anchor_waypoints(scene.ego.speed_mps, scene.ego.yaw_rate_rps)

    def describe(self) -> dict:
        return {**self.lm.describe(), 'precision_run': self.precision, 'mode': self.mode, 'guard': self.guard,
                'prefix_cache': self.prefix_cache, 'frame_reuse': self.decoder.frame_reuse, 'draft': self.draft,
                'header_tokens': len(self.header_ids),
                'plan_anchor': self.plan_anchor, 'plan_order': self.grammar.order,
                'prompt_style': self.prompt_style}
