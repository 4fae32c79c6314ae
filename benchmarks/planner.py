"""bench planner / eval planner: the distilled LM planner side by side with its teacher, its own
runtime modes and the classical planner, on real prompts of held-out simulator scenes, in one run.

Scenes: the test split of the planning dataset (fmdrive/sim/planning_dataset.py: scenario numbers
9, 19, 29, ...), re-simulated here (deterministic, no sensors), so nothing needs to exist on disk
but the models. A sample's scene text is the prompt the fusion node would write; its objects (ground
truth, now and at the six future times) give the Scene the arbiter plans on and the collisions.

bench (speed, one thread each, the same prompts, median ms per plan = prompt -> 13 tokens; per
prompt every variant in turn, each timed on its second run, so load on the shared cores hits all
alike and each runs with its own weights in cache, as the node's one model does):
  teacher_torch_ms        transformers `generate` of the teacher (greedy, KV cache, the same
                          grammar as a LogitsProcessor), torch CPU; null without torch or a teacher
  student_kv_ms           the exported student, ONNX Runtime fp32, KV cache + prefix cache
  student_int8_kv_ms      the same with the card's int8 variant (null: the card has none)
  student_nokv_ms         fp32, every token recomputes the whole sequence
  speedup_student_vs_teacher = teacher_torch_ms / student_int8_kv_ms (fp32 when no int8)
  speedup_kv              = student_nokv_ms / student_kv_ms
  prefix_cache_saving_pct = 1 - student_int8_kv_ms / (int8 KV cache, header prefilled every plan),
                          on the independent test prompts: what caching the fixed header alone
                          saves the variant the node runs (int8; fp32 when the card has none);
                          prefix_cache_saving_pct_fp32: the same for fp32
  stream_*                the same student (fp32) planning the 10 Hz frames of held-out scenarios in
                          order, as the node does (scenes of the batch closed loop driven by the
                          classical stack), each frame once per variant: no prefix cache, the
                          header's cache, the header's + the last frame's (frame reuse: prefill from
                          the first token where the prompt differs from the last one, the node's
                          default); stream_prefix_cache_saving_pct = 1 - frames / no prefix cache;
                          stream_draft_*: the same with the last plan verified as a draft in the
                          prefill call (runtime.py; the node's default, lm_draft): the saving of the
                          prefix caches with both arms drafting, the speedup the draft gives,
                          draft tokens accepted (of 12), forward calls per plan, and the share of
                          plans identical with and without the draft (lossless: 1.0 but for float
                          rounding on near-ties)
  prefill_ms, decode_ms   per variant, medians of the prompt's prefill (what the prefix cache cuts) and
                          of the plan tokens' one-token calls; the rest of a plan is tokenizing the
                          scene text and building the plan message
  plan_p99_ms             the arbiter's whole call as the node runs it (LM primary int8 under the
                          deadline, the classical planner beside it, the safety filter)
  deadline_ms             the planner node's deadline

eval (quality, open loop on the same kind of scenes): L2 at 1/2/3 s to the expert's waypoints and
the rate of plans whose footprint meets a ground-truth object box at a waypoint time, for the
expert itself, constant velocity, an ego-status-only MLP (EgoStatusMLP: no scene), the classical
planner, the student (ONNX, as the node decodes it: with the collision guard of planning/lm/guard.py;
`student_unguarded`: greedy over the grammar alone), the LLM stack (`llm_stack`: the arbiter's
published plan, student primary, safety filter, classical fallback: what the car is given), and with torch the
teacher and the student trained without KD; adversarial: every case of
tests/data/adversarial_instructions.yaml through the arbiter (student primary when it exists, the
text encoder's refusals) on test scenes, counting published plans the safety filter rejects and
instructions followed instead of refused. Closed loop (fmdrive/sim/closed_loop.py): the classical
stack and the LLM stack (student primary under the node's deadline, classical fallback, the safety
filter) each drive held-out scenarios (50; quick 6) in-process: success rate, collisions (and those
under an LLM plan that passed the filter), off road, progress against the expert, max jerk,
instruction compliance.

    fmdrive bench planner [--quick] [--json] [--planner-run DIR]
    fmdrive eval planner [--quick] [--json] [--planner-run DIR]     (DIR: the training run, default runs/planner_lm)
"""
import functools
import os
import sys
import time

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

MODEL_DIR = 'engines/planner_student'
RUN_DIR = 'runs/planner_lm'          # teacher/ and student_nokd/ (save_pretrained) of the training run
SCENARIOS, QUICK_SCENARIOS = 10, 3
PROMPTS, QUICK_PROMPTS = 60, 24
EVAL_SAMPLES, QUICK_EVAL_SAMPLES = 300, 40
CLOSED_LOOP_SCENARIOS, CLOSED_LOOP_QUICK = 50, 6     # held-out scenarios driven closed loop
MLP_SCENARIOS = 40                   # train-split scenarios the ego-status MLP is fitted on (quick: 10)
SEED = 0


def _resolve(path) -> Path:
    from fmdrive import config
    p = Path(path)
    return p if p.is_absolute() else config.package_file(str(p))


def test_samples(scenarios: int, seed: int = SEED) -> list:
    """Samples of the first `scenarios` test-split scenarios (re-simulated, deterministic)."""
    from fmdrive.sim.planning_dataset import simulate_scenario
    out = []
    for k in range(scenarios):
        out += simulate_scenario(10 * k + 9, seed, with_lanes=True)
    return out


def train_samples(scenarios: int, seed: int = SEED) -> list:
    """Samples of the first `scenarios` train-split scenarios (numbers 0-7, 10-17, ...)."""
    from fmdrive.sim.planning_dataset import simulate_scenario, split_of
    out, index = [], 0
    while scenarios > 0:
        if split_of(index) == 'train':
            out += simulate_scenario(index, seed, with_lanes=True)
            scenarios -= 1
        index += 1
    return out


class EgoStatusMLP:
    """The ego-status-only baseline (as AD-MLP, Zhai et al. 2023, "Rethinking the open-loop evaluation
    of end-to-end autonomous driving"): the plan from the ego's own speed and yaw rate and the
    instruction's intent (the high-level command), no scene at all. Two tanh layers of 64, numpy,
    full-batch Adam on train-split samples, deterministic. Open-loop L2 rewards it because the
    expert mostly keeps going: it has no way to see a stopped car ahead, which collisions show."""

    def __init__(self, hidden: int = 64, seed: int = 0):
        self.hidden, self.rng = hidden, np.random.default_rng(seed)

    @staticmethod
    def features(samples) -> np.ndarray:
        from fmdrive.planning.lm.format import INTENTS
        x = np.zeros((len(samples), 2 + len(INTENTS)))
        for i, s in enumerate(samples):
            x[i, 0] = s['ego_speed_mps'] / 10.0
            x[i, 1] = s.get('ego_yaw_rate_rps', 0.0) * 10.0
            x[i, 2 + INTENTS.index(s['intent'] if s['intent'] in INTENTS else 'none')] = 1.0
        return x

    def fit(self, samples, steps: int = 1500, lr: float = 3e-3) -> 'EgoStatusMLP':
        x = self.features(samples)
        y = np.array([np.asarray(s['waypoints']).reshape(-1) for s in samples]) / 10.0
        sizes = [x.shape[1], self.hidden, self.hidden, y.shape[1]]
        self.w = [self.rng.normal(0, 1 / np.sqrt(a), (a, b)) for a, b in zip(sizes, sizes[1:])]
        self.b = [np.zeros(b) for b in sizes[1:]]
        params = self.w + self.b
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        for t in range(1, steps + 1):
            h1 = np.tanh(x @ self.w[0] + self.b[0])
            h2 = np.tanh(h1 @ self.w[1] + self.b[1])
            err = (h2 @ self.w[2] + self.b[2] - y) * (2.0 / len(x))        # d(mean squared error)
            g2 = err @ self.w[2].T * (1 - h2 ** 2)
            g1 = g2 @ self.w[1].T * (1 - h1 ** 2)
            grads = [x.T @ g1, h1.T @ g2, h2.T @ err, g1.sum(0), g2.sum(0), err.sum(0)]
            for k, (p, g) in enumerate(zip(params, grads)):
                m[k] = 0.9 * m[k] + 0.1 * g
                v[k] = 0.999 * v[k] + 0.001 * g * g
                p -= lr * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8)
        return self

    def predict(self, samples) -> list:
        h = np.tanh(self.features(samples) @ self.w[0] + self.b[0])
        h = np.tanh(h @ self.w[1] + self.b[1])
        return list((h @ self.w[2] + self.b[2]).reshape(len(samples), -1, 2) * 10.0)


def sample_scene(sample: dict, stamp_ns: int = 1_000_000_000):
    """The Scene of a dataset sample: ego at the origin of odom, ground-truth objects (velocity
    from their first future pose, acceleration as the tracker estimates it when the sample has it) and lanes (test_samples simulates them; a sample without them
    leaves the planner and the safety filter one assumed lane, so a lane change or a nudge past a
    parked car "leaves the road")."""
    from fmdrive.objects import EgoState, Lane, Object3D, Scene
    objects = []
    for o in sample['objects']:
        (x, y, yaw), (fx, fy, _) = o['now'], o['future'][0]
        objects.append(Object3D(center=[x, y, 0.8], size=[o['size'][0], o['size'][1], 1.6], yaw_rad=yaw,
                                label=o['label'], id=int(o['id']), velocity=[(fx - x) / 0.5, (fy - y) / 0.5, 0.0],
                                acceleration=[*o.get('acceleration', (0.0, 0.0)), 0.0]))
    lanes = [Lane(int(ln['offset']), float(ln['width_m']),
                  np.c_[np.asarray(ln['centerline'], float), np.zeros(len(ln['centerline']))])
             for ln in sample.get('lanes', [])]
    ego = EgoState(0.0, 0.0, 0.0, float(sample['ego_speed_mps']), float(sample.get('ego_yaw_rate_rps', 0.0)))
    return Scene(stamp_ns, ego, objects, lanes, float(sample['speed_limit_mps']), sample['scene_text'])


def _median_ms(fn, items, repeats=1) -> float:
    fn(items[0])
    ts = []
    for _ in range(repeats):
        for it in items:
            t0 = time.perf_counter()
            fn(it)
            ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


# ------------------------------------------------------------------------------ torch side (offline)
class TorchPlanner:
    """A save_pretrained causal LM run by transformers `generate` with the plan grammar as a
    LogitsProcessor: the same prompt and the same constrained greedy decoding as the runtime."""

    def __init__(self, hf_dir, tokenizer_file):
        import torch
        import transformers
        from tokenizers import Tokenizer

        from fmdrive.planning.lm.format import TrajectoryGrammar
        from fmdrive.training.planner_lm import plan_format_of
        torch.set_num_threads(1)
        self.plan_anchor, plan_order, self.prompt_style = plan_format_of(hf_dir)
        self.torch = torch
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.grammar = TrajectoryGrammar(self.tokenizer.get_vocab(), plan_order)
        grammar, vocab = self.grammar, self.model.config.vocab_size

        class Grammar(transformers.LogitsProcessor):
            def __init__(self, prompt_len):
                self.prompt_len = prompt_len

            def __call__(self, input_ids, scores):
                step = input_ids.shape[1] - self.prompt_len
                mask = torch.full_like(scores, float('-inf'))
                mask[:, torch.from_numpy(grammar.allowed_ids(min(step, 12)))] = 0.0
                return scores + mask
        self.Grammar = Grammar
        self.vocab = vocab

    def waypoints(self, scene_text: str, intent: str, speed_mps: float = 0.0,
                  yaw_rate_rps: float = 0.0) -> np.ndarray:
        """The plan of a scene text and intent; the ego's speed and yaw rate place the anchor when
        the model's plans are anchored (the runtime takes them from the Scene the same way)."""
        from fmdrive.planning.lm import format as fmt
        ids = self.tokenizer.encode(fmt.prompt_text(scene_text, intent, self.prompt_style),
                                    add_special_tokens=False).ids
        x = self.torch.tensor([ids])
        with self.torch.no_grad():
            out = self.model.generate(x, attention_mask=self.torch.ones_like(x), max_new_tokens=fmt.PLAN_TOKENS,
                                      do_sample=False, use_cache=True, pad_token_id=0,
                                      logits_processor=[self.Grammar(len(ids))])
        anchor = None if self.plan_anchor == 'none' else fmt.anchor_waypoints(speed_mps, yaw_rate_rps)
        return self.grammar.waypoints(out[0, len(ids):].tolist(), anchor)


def _torch_planner(name: str, student_tokenizer, run_dir=RUN_DIR):
    """(TorchPlanner or None, why not, note). The model reads prompts with its own tokenizer.json
    (save_pretrained writes one beside every model of a run); the note says when that is not the
    student's tokenizer (a run made after the student: its speed compares, its ids do not)."""
    hf_dir = _resolve(run_dir) / name
    if not (hf_dir / 'config.json').is_file():
        return None, f'no {name} at {hf_dir} (fmdrive train planner-{name.split("_")[0]})', None
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        return None, f'{e.name} is not installed here (training extras)', None
    own = hf_dir / 'tokenizer.json'
    tokenizer_file = own if own.is_file() else student_tokenizer
    if tokenizer_file is None or not Path(tokenizer_file).is_file():
        return None, f'no tokenizer.json for the {name} at {hf_dir}', None
    note = f'{name}: {hf_dir}'
    if student_tokenizer is not None and Path(student_tokenizer).is_file():
        same = Path(tokenizer_file).read_bytes() == Path(student_tokenizer).read_bytes()
        note += ', the student\'s tokenizer' if same else ', its own tokenizer (not the student\'s)'
    from fmdrive.planning.lm.format import FormatError
    try:
        return TorchPlanner(hf_dir, tokenizer_file), None, note
    except FormatError as e:             # a run of another prompt format than this code writes
        return None, f'{name} at {hf_dir} cannot be read: {e}', None


# ----------------------------------------------------------------------------------------- bench
def measure(quick: bool = False, model_dir: str = MODEL_DIR, planner_run: str = RUN_DIR) -> dict:
    from fmdrive import config
    from fmdrive.planning.arbiter import Arbiter
    from fmdrive.planning.lm.lm_planner import LMPlanner
    params = config.node_params('planner')
    out = {'teacher_torch_ms': None, 'student_kv_ms': None, 'student_int8_kv_ms': None, 'student_nokv_ms': None,
           'speedup_student_vs_teacher': None, 'speedup_kv': None, 'prefix_cache_saving_pct': None,
           'plan_p99_ms': None, 'deadline_ms': float(params['deadline_ms'])}
    model = _resolve(model_dir)
    if not (model / 'card.yaml').is_file():
        out['reason'] = f'no student model at {model} (fmdrive export planner)'
        return out
    samples = test_samples(QUICK_SCENARIOS if quick else SCENARIOS)
    rng = np.random.default_rng(SEED)
    picked = [samples[i] for i in sorted(rng.choice(len(samples), min(len(samples), QUICK_PROMPTS if quick
                                                                       else PROMPTS), replace=False))]
    scenes = [sample_scene(s) for s in picked]
    items = [(sc, s['intent']) for sc, s in zip(scenes, picked)]

    # independent prompts, each timed on its second run: neither the last frame's KV nor its plan
    # (as a draft) may be reused
    # the LM runtime alone (the collision guard's checks are the planner's, not the model's: off here, in
    # plan_p99_ms below as the node runs it)
    kv = LMPlanner.load(model, 'fp32', 'onnxruntime', 1, 'kv', True, frame_reuse=False, draft=False, guard=False)
    runs = {'kv': kv, 'kv_no_prefix': LMPlanner.load(model, 'fp32', 'onnxruntime', 1, 'kv', False, draft=False,
                                                     guard=False),
            'nokv': LMPlanner.load(model, 'fp32', 'onnxruntime', 1, 'nokv', draft=False, guard=False)}
    int8 = LMPlanner.load(model, 'int8', 'onnxruntime', 1, 'kv', True, frame_reuse=False, draft=False, guard=False)
    if int8.precision == 'int8':
        runs['int8_kv'] = int8
        runs['int8_kv_no_prefix'] = LMPlanner.load(model, 'int8', 'onnxruntime', 1, 'kv', False, draft=False,
                                                   guard=False)
    else:
        out['student_int8_reason'] = 'the card has no int8 variant'
    tok = model / 'tokenizer.json'
    teacher, why, note = _torch_planner('teacher', tok, planner_run)
    if teacher is None:
        out['teacher_reason'] = why
    else:
        out['teacher'] = note
    # side by side: every prompt through every variant in turn, so load on the shared cores hits all alike
    ms = {k: [] for k in list(runs) + (['teacher'] if teacher else [])}
    prefill = {k: [] for k in runs}
    decode = {k: [] for k in runs}
    for planner in runs.values():
        planner.plan(*items[0])
    if teacher:
        teacher.waypoints(items[0][0].text, items[0][1], items[0][0].ego.speed_mps, items[0][0].ego.yaw_rate_rps)
    for sc, intent in items:
        for k, planner in runs.items():
            planner.plan(sc, intent)        # warm: its weights back in cache after the other variants ran
            t0 = time.perf_counter()
            r = planner.plan(sc, intent)
            ms[k].append((time.perf_counter() - t0) * 1e3)
            prefill[k].append(r.debug['prefill_ms'])
            decode[k].append(r.debug['decode_ms'])
        if teacher:
            teacher.waypoints(sc.text, intent, sc.ego.speed_mps, sc.ego.yaw_rate_rps)
            t0 = time.perf_counter()
            teacher.waypoints(sc.text, intent, sc.ego.speed_mps, sc.ego.yaw_rate_rps)
            ms['teacher'].append((time.perf_counter() - t0) * 1e3)
    med = {k: round(float(np.median(v)), 2) for k, v in ms.items()}
    out['student_kv_ms'], out['student_nokv_ms'] = med['kv'], med['nokv']
    out['student_int8_kv_ms'] = med.get('int8_kv')
    out['teacher_torch_ms'] = med.get('teacher')
    out['student_kv_no_prefix_ms'] = med['kv_no_prefix']
    no_prefix_ms = med['kv_no_prefix']
    # where a plan's time goes: the prompt's prefill (what the prefix cache cuts), the plan tokens'
    # one-token calls, and the rest (tokenizing the scene text, the plan message)
    out['prefill_ms'] = {k: round(float(np.median(v)), 2) for k, v in prefill.items()}
    out['decode_ms'] = {k: round(float(np.median(v)), 2) for k, v in decode.items()}
    fastest = out['student_int8_kv_ms'] or out['student_kv_ms']
    if out['teacher_torch_ms']:
        out['speedup_student_vs_teacher'] = round(out['teacher_torch_ms'] / fastest, 2)
    out['speedup_kv'] = round(out['student_nokv_ms'] / out['student_kv_ms'], 2)
    out['prefix_cache_saving_pct_fp32'] = round(100.0 * (1.0 - out['student_kv_ms'] / no_prefix_ms), 1)
    if 'int8_kv' in med:
        out['student_int8_kv_no_prefix_ms'] = med['int8_kv_no_prefix']
        out['prefix_cache_saving_pct'] = round(100.0 * (1.0 - med['int8_kv'] / med['int8_kv_no_prefix']), 1)
    else:
        out['prefix_cache_saving_pct'] = out['prefix_cache_saving_pct_fp32']
    out['int8_graph'] = int8.lm.card.decoder.get('int8_graph', 'export') if int8.precision == 'int8' else None
    out.update(_stream(model, 1 if quick else 2))
    # the node's whole planning call, LM primary at the node's precision, classical beside it
    primary = LMPlanner.load(model, 'int8', 'onnxruntime', 1)     # as the node runs it (frame reuse, draft)
    arbiter = Arbiter.from_node_params(params, primary)
    arbiter.plan(scenes[0])
    times, sources = [], []
    for sc, intent in items * (1 if quick else 2):
        r = arbiter.plan(sc, intent)
        times.append(r.plan.planning_time_ms)
        sources.append(r.source)
    out['plan_p99_ms'] = round(float(np.percentile(times, 99)), 2)
    out['plan_p50_ms'] = round(float(np.percentile(times, 50)), 2)
    out['llm_share'] = round(sources.count('llm') / len(sources), 3)
    out['prompt_tokens_mean'] = round(float(np.mean([len(kv.header_ids) + len(kv.prompt_ids(s, i)[1])
                                                     for s, i in items])), 1)
    out['header_tokens'] = len(kv.header_ids)
    out['prompts'] = len(items)
    out['model'] = kv.lm.card.name
    return out


def _stream(model, scenarios: int, seed: int = SEED) -> dict:
    """Per-plan ms of the student on the 10 Hz frames of `scenarios` held-out closed-loop scenarios,
    in order, without / with the header's cache / with frame reuse too (see the module docstring)."""
    from fmdrive import config
    from fmdrive.planning.arbiter import Arbiter
    from fmdrive.planning.lm.lm_planner import LMPlanner
    from fmdrive.sim import closed_loop as cl

    frames = []

    class Recording(Arbiter):
        def plan(self, scene, instruction=''):
            frames.append((scene, instruction))
            return super().plan(scene, instruction)

    params = config.node_params('planner')
    for i in range(scenarios):
        arbiter = Recording.from_node_params({**params, 'deadline_ms': 1000.0}, None, cl.CanonicalIntents())
        cl.run_scenario(10 * i + 9, seed, arbiter)
    # the runtime alone (no collision guard)
    load = functools.partial(LMPlanner.load, model, 'fp32', 'onnxruntime', 1, 'kv', guard=False)
    variants = {'no_prefix': load(False, draft=False),
                'header': load(True, frame_reuse=False, draft=False),
                'frames': load(True, frame_reuse=True, draft=False),
                'no_prefix_draft': load(False, draft=True),
                'frames_draft': load(True, frame_reuse=True, draft=True)}
    ms = {k: [] for k in variants}
    reused, prompt, accepted, calls, same = [], [], [], {'frames': [], 'frames_draft': []}, []
    for scene, instruction in frames:
        tokens = {}
        for k, planner in variants.items():
            t0 = time.perf_counter()
            r = planner.plan(scene, instruction)
            ms[k].append((time.perf_counter() - t0) * 1e3)
            tokens[k] = r.debug['tokens']
            if k == 'frames':
                reused.append(r.debug['reused_frame_tokens'])
                prompt.append(r.debug['prompt_tokens'])
            if k == 'frames_draft':
                accepted.append(r.debug['draft_accepted'])
            if k in calls:
                calls[k].append(r.debug['forward_calls'])
        same.append(tokens['frames_draft'] == tokens['frames'] and tokens['no_prefix_draft'] == tokens['no_prefix'])
    med = {k: float(np.median(v)) for k, v in ms.items()}
    mean = {k: float(np.mean(v)) for k, v in ms.items()}
    return {'stream_frames': len(frames), 'stream_ms_p50': {k: round(v, 2) for k, v in med.items()},
            'stream_ms_mean': {k: round(v, 2) for k, v in mean.items()},
            'stream_header_saving_pct': round(100.0 * (1.0 - mean['header'] / mean['no_prefix']), 1),
            'stream_prefix_cache_saving_pct': round(100.0 * (1.0 - mean['frames'] / mean['no_prefix']), 1),
            'stream_reused_frame_tokens_mean': round(float(np.mean(reused)), 1),
            'stream_prompt_tokens_mean': round(float(np.mean(prompt)), 1),
            # the last plan as a draft (speculative decoding, lossless): both arms draft alike
            'stream_draft_prefix_cache_saving_pct': round(100.0 * (1.0 - mean['frames_draft'] / mean['no_prefix_draft']), 1),
            'stream_draft_speedup': round(mean['frames'] / mean['frames_draft'], 2),
            'stream_draft_accepted_mean': round(float(np.mean(accepted)), 2),
            'stream_forward_calls_mean': {k: round(float(np.mean(v)), 2) for k, v in calls.items()},
            'stream_draft_same_plans': round(float(np.mean(same)), 4)}


# ------------------------------------------------------------------------------------------ eval
def _collides(sample: dict, xy: np.ndarray, limits) -> bool:
    """Ego footprint at each waypoint (heading along the path) meets a ground-truth future box."""
    from fmdrive.sim.expert import boxes_overlap
    pts = np.vstack([[0.0, 0.0], xy])
    for i in range(len(xy)):
        d = pts[i + 1] - pts[i]
        yaw = float(np.arctan2(d[1], d[0])) if np.hypot(*d) > 0.05 else 0.0
        c = xy[i] + limits.base_to_center_m * np.array([np.cos(yaw), np.sin(yaw)])
        for o in sample['objects']:
            fx, fy, fyaw = o['future'][i]
            if boxes_overlap(c, limits.vehicle_length_m, limits.vehicle_width_m, yaw, np.array([fx, fy]),
                             o['size'][0], o['size'][1], fyaw):
                return True
    return False


def _scores(samples, plans, limits) -> dict:
    errs = np.array([np.linalg.norm(np.asarray(p) - np.asarray(s['waypoints']), axis=1)
                     for s, p in zip(samples, plans)])
    return {'l2_1s': round(float(errs[:, 1].mean()), 3), 'l2_2s': round(float(errs[:, 3].mean()), 3),
            'l2_3s': round(float(errs[:, 5].mean()), 3),
            'collision_rate': round(float(np.mean([_collides(s, np.asarray(p), limits)
                                                   for s, p in zip(samples, plans)])), 4),
            'samples': len(samples)}


def evaluate(quick: bool = False, model_dir: str = MODEL_DIR, planner_run: str = RUN_DIR) -> dict:
    from fmdrive.planning.arbiter import CLASSICAL_PHRASES
    from fmdrive.planning.classical import ClassicalPlanner
    from fmdrive.planning.limits import VehicleLimits
    from fmdrive.planning.lm.format import DT_S, TRAJECTORY_STEPS
    limits = VehicleLimits()
    samples = test_samples(QUICK_SCENARIOS + 2 if quick else 3 * SCENARIOS)
    rng = np.random.default_rng(SEED + 1)
    n = min(len(samples), QUICK_EVAL_SAMPLES if quick else EVAL_SAMPLES)
    samples = [samples[i] for i in sorted(rng.choice(len(samples), n, replace=False))]
    t = DT_S * np.arange(1, TRAJECTORY_STEPS + 1)
    plans = {'expert': [np.asarray(s['waypoints']) for s in samples],
             'constant_velocity': [np.c_[s['ego_speed_mps'] * t, np.zeros_like(t)] for s in samples]}
    classical = ClassicalPlanner()
    plans['classical'] = []
    for s in samples:
        classical.reset()
        r = classical.plan(sample_scene(s), CLASSICAL_PHRASES.get(s['intent'], ''))
        p = r.plan
        plans['classical'].append(p.poses[:TRAJECTORY_STEPS, :2] if len(p.poses) >= TRAJECTORY_STEPS
                                  else np.zeros((TRAJECTORY_STEPS, 2)))
    mlp_train = train_samples(MLP_SCENARIOS // 4 if quick else MLP_SCENARIOS)
    plans['ego_status_mlp'] = EgoStatusMLP().fit(mlp_train).predict(samples)
    from fmdrive import config
    notes = {'classical': 'on the scenario\'s ground-truth lanes (as the closed loop gives them; fusion does in the graph)',
             'ego_status_mlp': f'ego speed, yaw rate and intent only (no scene), numpy MLP fitted on '
                               f'{len(mlp_train)} train-split samples',
             'closed_loop': f'in-process (fmdrive/sim/closed_loop.py): held-out test-split scenarios, the '
                            f'arbiter as the node runs it (deadline {config.node_params("planner")["deadline_ms"]:g} '
                            'ms on these cores) drives the ego through pure pursuit + speed control'}
    model = _resolve(model_dir)
    student = None
    if (model / 'card.yaml').is_file():
        from fmdrive.planning.lm.lm_planner import LMPlanner
        # the samples are independent frames: no frame reuse or draft from the sample before (their
        # state belongs to consecutive frames; with dynamic int8 it would also change which rounding
        # a plan gets, runtime.py), the header's cache as the node has it
        independent = LMPlanner.load(model, 'int8', 'onnxruntime', 1, frame_reuse=False, draft=False)
        plans['student'] = [independent.plan(sample_scene(s), s['intent']).debug['waypoints_base'] for s in samples]
        # the model's own greedy plans, grammar only: the row to compare with the teacher and the no-KD
        # student (decoded the same way); 'student' is what the node's LM planner gives (collision guard on)
        raw = LMPlanner.load(model, 'int8', 'onnxruntime', 1, frame_reuse=False, draft=False, guard=False)
        plans['student_unguarded'] = [raw.plan(sample_scene(s), s['intent']).debug['waypoints_base'] for s in samples]
        notes['student_unguarded'] = ('the student without the collision guard (planning/lm/guard.py): greedy over '
                                      'the grammar alone, as the teacher and student_no_kd rows are decoded')
        plans['llm_stack'], sources = _stack_plans(independent, samples)
        notes['llm_stack'] = (f'what the car is given: the arbiter as the node runs it (student primary, one safety '
                              f'filter, classical fallback) on each sample alone; plan sources {sources}')
        student = LMPlanner.load(model, 'int8', 'onnxruntime', 1)        # the node's, for the closed loop
        notes['student'] = f'{student.lm.card.name} {student.precision} (ONNX Runtime)'
    else:
        notes['student'] = f'no student model at {model}'
    tok = model / 'tokenizer.json'
    if not tok.is_file():
        tok = _resolve(planner_run) / 'tokenizer' / 'tokenizer.json'
    for name, key in (('teacher', 'teacher'), ('student_nokd', 'student_no_kd')):
        tp, why, note = _torch_planner(name, tok, planner_run)
        if tp is None:
            notes[key] = why
            continue
        notes[key] = note
        plans[key] = [tp.waypoints(s['scene_text'], s['intent'], s['ego_speed_mps'], s.get('ego_yaw_rate_rps', 0.0))
                      for s in samples]
    open_loop = {k: _scores(samples, v, limits) for k, v in plans.items()}
    out = {'open_loop': {'l2_3s': {k: v['l2_3s'] for k, v in open_loop.items()}, 'models': open_loop},
           'closed_loop': closed_loop(student, CLOSED_LOOP_QUICK if quick else CLOSED_LOOP_SCENARIOS),
           'adversarial': _adversarial(student, samples[:3 if quick else 10]),
           'notes': notes}
    return out


def _stack_plans(student, samples) -> tuple[list, dict]:
    """The arbiter's published plan (base_link waypoints) for each sample alone, and how many came
    from each source."""
    from fmdrive import config
    from fmdrive.planning.arbiter import Arbiter
    from fmdrive.planning.lm.format import TRAJECTORY_STEPS
    from fmdrive.sim.closed_loop import CanonicalIntents
    arbiter = Arbiter.from_node_params(config.node_params('planner'), student, CanonicalIntents())
    plans, sources = [], {}
    for s in samples:
        arbiter.reset()
        r = arbiter.plan(sample_scene(s), s['intent'])
        sources[r.source] = sources.get(r.source, 0) + 1
        poses = r.plan.poses
        plans.append(poses[:TRAJECTORY_STEPS, :2] if len(poses) >= TRAJECTORY_STEPS else np.zeros((TRAJECTORY_STEPS, 2)))
    return plans, sources


def closed_loop(student, scenarios: int, seed: int = SEED) -> dict:
    """The classical stack and the LLM stack (student primary, classical fallback, one safety
    filter) each drive the first `scenarios` test-split scenarios; the expert drives them too, as
    the reference for progress and instructions."""
    from tqdm import tqdm

    from fmdrive import config

    from fmdrive.planning.arbiter import Arbiter
    from fmdrive.sim import closed_loop as cl
    params = config.node_params('planner')
    stacks = {'classical': Arbiter.from_node_params(params, None, cl.CanonicalIntents())}
    if student is not None:
        stacks['llm'] = Arbiter.from_node_params(params, student, cl.CanonicalIntents())
    results = {k: [] for k in stacks}
    for k in tqdm(range(scenarios), desc='closed loop', unit='scenario', file=sys.stderr,
                  disable=not sys.stderr.isatty()):
        index = 10 * k + 9
        expert = cl.expert_run(index, seed)
        for name, arbiter in stacks.items():
            results[name].append(cl.run_scenario(index, seed, arbiter, expert))
    summary = {name: cl.summarise(rs) for name, rs in results.items()}
    out = {'scenarios': scenarios,
           'success_rate': {k: summary.get(k, {}).get('success_rate') for k in ('llm', 'classical')},
           'collisions': {k: summary.get(k, {}).get('collisions') for k in ('llm', 'classical')},
           'collisions_under_llm_plan': summary.get('llm', {}).get('collisions_under_llm_plan'),
           'stacks': summary,
           'failures': {name: [{k: v for k, v in r.to_dict().items() if k not in ('sources',)}
                               for r in rs if not r.success] for name, rs in results.items()}}
    return out


def _adversarial(student, samples) -> dict:
    """Every adversarial case through the arbiter on test scenes: unsafe published plans and
    instructions followed instead of refused."""
    import yaml

    from fmdrive import config
    from fmdrive.planning.arbiter import Arbiter, load_instruction_classifier
    from fmdrive.planning.safety import check_trajectory
    cases = yaml.safe_load(config.package_file('tests/data/adversarial_instructions.yaml').read_text())['cases']
    texts = [c['text'] * int(c.get('repeat', 1)) for c in cases]
    classifier, why = load_instruction_classifier()
    if classifier is None:
        return {'unsafe_plans': None, 'cases': len(texts), 'reason': why}
    arbiter = Arbiter.from_node_params({**config.node_params('planner'), 'deadline_ms': 1000.0}, student, classifier)
    unsafe = followed = plans = 0
    baseline = 0          # the same scenes without an instruction: what no instruction can be blamed for
    for s in samples:
        scene = sample_scene(s)
        r = arbiter.plan(scene, '')
        baseline += int(not check_trajectory(r.plan.poses, r.plan.t_s, r.plan.speeds_mps, scene, arbiter.limits).ok)
    for text in texts:
        for s in samples:
            scene = sample_scene(s)
            r = arbiter.plan(scene, text)
            plans += 1
            report = check_trajectory(r.plan.poses, r.plan.t_s, r.plan.speeds_mps, scene, arbiter.limits)
            unsafe += int(not report.ok)
            followed += int(r.instruction is None or r.instruction.refused is None)
    return {'unsafe_plans': unsafe, 'cases': len(texts), 'plans': plans, 'followed': followed,
            'unsafe_plans_without_instruction': baseline, 'scenes': len(samples),
            'primary': 'student' if student is not None else 'classical (no student model)'}
