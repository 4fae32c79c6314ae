"""`fmdrive train lidar`: train the LiDAR encoder (lidar_model.py) on a dataset written by
`fmdrive train dataset`, on the CPU.

    fmdrive train lidar --data runs/dataset --out runs/lidar --epochs 8 --seed 7 [--resume]

Knobs are one flat TrainConfig. Fixed seeds (python, numpy, torch); a batch holds pairs of
consecutive frames of one scene (the embedding loss pulls an object's two views together); y-flip
augmentation. Every epoch: a checkpoint (model, optimiser, scheduler, epoch, best score, history)
in OUT/last.pt, val BEV AP, OUT/best.pt when the score improved, a line in OUT/log.jsonl; training
stops early after `patience` epochs without improvement, or when --max-minutes is spent (after the
epoch in progress). --resume continues from OUT/last.pt.
"""
from __future__ import annotations

import json
import math
import random
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fmdrive import config
from fmdrive.inference.pillars import MIRROR_Y_NEGATED
from fmdrive.training.lidar_augment import PASTED_ID_BASE, GtDatabase, paste_pair, rotate_frame, turn_canvas
from fmdrive.training.lidar_model import LidarCenterPoint, LidarConfig, centerpoint_loss, make_targets


@dataclass
class TrainConfig:
    data: str = 'runs/dataset'
    out: str = 'runs/lidar'
    epochs: int = 8
    batch_pairs: int = 4              # batch = 2 * batch_pairs frames
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 7
    patience: int = 3                 # epochs without a better val score before stopping
    max_minutes: float = 45.0         # stop after the epoch that passes this
    threads: int = 2
    max_scenes: int | None = None     # limit the training scenes (tests, quick runs)
    val_every: int = 2                # score every n-th val frame
    tiny: bool = False                # a very small network (tests)
    rare_class_weight: float = 4.0    # pairs showing a cyclist are drawn this much more often (CenterPoint's
                                      # class-balanced sampling, simplified): 1 % of the objects otherwise
    crop_rows: int = 128              # train on this band of grid rows (y) around the road, 0 = all:
                                      # half the compute; objects lie mostly within +-25 m of the road
    gt_paste: float = 0.5             # share of pairs that get rare-class objects pasted (lidar_augment.py)
    paste_cyclists: int = 2           # at most this many per pasted pair
    paste_pedestrians: int = 2
    rotate_deg: float = 0.0           # global rotation of both frames of a pair, uniform in +-this (0 = off)
    rot_loss: str = 'l1'              # 'axis': heading up to its reverse first (lidar_model.rotation_loss)
    quarter_turns: float = 0.0        # share of pairs turned about base_link by +-90 degrees (sign at random):
                                      # crossing traffic at no cost, since on the square grid centred on
                                      # base_link a quarter turn is an np.rot90 of the cached canvas
    axis_head: bool = True            # the (sin 2 yaw, cos 2 yaw) head (lidar_model.rotation_loss says why)
    axis_crossing_weight: float = 10.0  # crossing cars' weight in the axis loss (lidar_model.centerpoint_loss).
                                       # Measured 2026-12-05 (runs/lidar_axis, weight 1, 5 epochs): the axis
                                       # head gives cos 2 yaw ~ +0.75 at crossing cars, training frames too
                                       # (target -1; road cars +1.0): not the L1 ambiguity, the network
                                       # does not tell a crossing car from one along the road
                                       # (from context it gets the road's axis). Weight 10 (the committed
                                       # model, runs/lidar_axis10): intersection car AP 0.79, car AP 0.89
    bev_features: tuple = ()          # the network's input channels (pillars.bev_canvas); () = LidarConfig's.
                                      # With --init from a model without some of them, its first conv gets
                                      # zero weights for the new ones: the run starts as that model
    init: str = ''                    # checkpoint whose weights start this run (a second stage; its own
                                      # training command is kept in init_command for the card)
    init_command: str = ''
    qat: bool = False                 # quantization-aware fine-tuning (qat.py): int8_cpu's rounding simulated;
                                      # meant with --init (a trained model), a low lr and an epoch or two
    qat_calib_frames: int = 64        # evenly spaced train frames that set the simulated activation ranges
    crossing_weight: float = 1.0      # pairs showing a car turned > 45 degrees from the vehicle's heading
                                      # (crossing traffic: 6 % of the training cars) are drawn this much
                                      # more often; the rotation head learns them only with more exposure.
                                      # Measured 2026-12-04 (runs/lidar_xw4: weight 4, 5 epochs, 42.5 min
                                      # here, this VM ~2x slower than on 12-03): full-test car AP at
                                      # intersections 0.15 (committed model 0.18), car AP 0.79 (0.83): no
                                      # cure at this budget; the committed model stays


def init_weights(checkpoint: dict, cfg: LidarConfig, state: dict, name: str) -> dict:
    """The weights of `checkpoint` for a network of `cfg` (whose fresh state_dict is `state`). The two
    networks must be the same but for input channels cfg adds to the checkpoint's (new per-pillar
    features): the first conv gets zero weights for those, so the network computes what the
    checkpoint's did until training gives them weight."""
    theirs = dict(checkpoint.get('config') or {})
    old_features = tuple(theirs.get('bev_features', ()))
    if {**theirs, 'bev_features': list(cfg.bev_features)} != cfg.to_dict() or \
            not set(old_features) <= set(cfg.bev_features):
        raise ValueError(f'--init {name}: its network ({theirs}) is not this one')
    weights = dict(checkpoint['model'])
    if old_features != tuple(cfg.bev_features):
        stems = [k for k, v in weights.items() if v.dim() == 4 and v.shape[1] == len(old_features)
                 and state[k].shape[1] == len(cfg.bev_features)]
        if len(stems) != 1:
            raise ValueError(f'--init {name}: cannot tell the first conv among {stems}')
        old = weights[stems[0]]
        new = torch.zeros(state[stems[0]].shape, dtype=old.dtype)
        for j, feature in enumerate(cfg.bev_features):
            if feature in old_features:
                new[:, j] = old[:, old_features.index(feature)]
        weights[stems[0]] = new
    return weights


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def frame_pairs(frames) -> np.ndarray:
    """(P, 2) indices of consecutive frames of one scene: (0, 1), (2, 3), ... per scene."""
    pairs = []
    for i in range(len(frames) - 1):
        if frames[i].scene == frames[i + 1].scene and (not pairs or pairs[-1][1] < i):
            pairs.append((i, i + 1))
    return np.asarray(pairs, np.int64).reshape(-1, 2)


CROSSING_SIN = math.sin(math.radians(45))


def pair_weights(pairs, frames, grid, rare_class_weight: float = 1.0, crossing_weight: float = 1.0) -> np.ndarray:
    """Sampling probability of each pair (sums to 1): rare_class_weight if a frame of it shows a cyclist,
    times crossing_weight if one shows a car turned more than 45 degrees from the vehicle's heading
    (both: >= 5 LiDAR returns; crossing cars also on the grid, where they are targets)."""
    rare, car = config.CLASSES.index('cyclist'), config.CLASSES.index('car')
    (x0, x1), (y0, y1) = grid.x_range_m, grid.y_range_m

    def shows_cyclist(f) -> bool:
        return bool(((f.lidar_points >= 5) & (f.labels == rare)).any())

    def shows_crossing_car(f) -> bool:
        c = f.centers
        inside = (c[:, 0] >= x0) & (c[:, 0] < x1) & (c[:, 1] >= y0) & (c[:, 1] < y1)
        turned = np.abs(np.sin(f.yaws)) > CROSSING_SIN
        return bool(((f.lidar_points >= 5) & inside & (f.labels == car) & turned).any())

    w = np.ones(len(pairs))
    for weight, shows in ((rare_class_weight, shows_cyclist), (crossing_weight, shows_crossing_car)):
        if weight != 1.0:
            w *= np.array([weight if any(shows(frames[i]) for i in p) else 1.0 for p in pairs])
    return w / w.sum()


def make_batch(indices, frames, canvases, cfg: LidarConfig, flips, row_starts=None,
               crop_rows: int = 0) -> tuple[torch.Tensor, dict]:
    """Input tensor and targets of frames[indices] (flips: per frame, mirror y). With crop_rows, only
    grid rows row_starts[b] .. + crop_rows of frame b (full x): inputs and targets cut alike."""
    bev, heat, rows = [], [], {k: [] for k in ('batch_index', 'cell_index', 'offset', 'z', 'log_size', 'rot',
                                               'instance')}
    s = cfg.output_stride
    negate = [k for k, name in enumerate(cfg.bev_features) if name in MIRROR_Y_NEGATED]   # under a y-mirror
    for b, (i, flip) in enumerate(zip(indices, flips)):
        canvas = np.asarray(canvases[i], np.float32)
        if flip:
            canvas = canvas[:, ::-1]
            if negate:
                canvas = canvas.copy()
                canvas[negate] *= -1
        scene_key = (zlib.crc32(frames[i].scene.encode()) % 100000) * 100000
        t = make_targets(frames[i], cfg, bool(flip), scene_key)
        if crop_rows:
            r0 = int(row_starts[b])
            canvas = canvas[:, r0:r0 + crop_rows]
            W = t.heatmap.shape[2]
            head_row = t.index // W - r0 // s
            keep = (head_row >= 0) & (head_row < crop_rows // s)
            t.heatmap = t.heatmap[:, r0 // s:(r0 + crop_rows) // s]
            t.index = head_row[keep] * W + t.index[keep] % W
            for k in ('offset', 'z', 'log_size', 'rot', 'instance'):
                setattr(t, k, getattr(t, k)[keep])
        bev.append(canvas)
        heat.append(t.heatmap)
        rows['batch_index'].append(np.full(len(t.index), b, np.int64))
        rows['cell_index'].append(t.index)
        for k in ('offset', 'z', 'log_size', 'rot', 'instance'):
            rows[k].append(getattr(t, k))
    batch = {k: torch.from_numpy(np.concatenate(v)) for k, v in rows.items()}
    batch['heatmap'] = torch.from_numpy(np.stack(heat))
    return torch.from_numpy(np.ascontiguousarray(np.stack(bev))), batch


def pasted_pairs(pair_rows, frames, canvases, db, rng, share: float, per_class: dict, grid,
                 rotate_deg: float = 0.0, quarter_turns: float = 0.0) -> tuple[list, list]:
    """Frames and canvases of the batch's pairs (flat: a0, b0, a1, b1, ...), `share` of the pairs
    with rare-class objects pasted (GtDatabase, both frames alike), then with rotate_deg every pair
    turned about the sensor by one random angle, then `quarter_turns` of the pairs by +-90 degrees.
    A frame changed by pasting or rotate_deg gets its canvas made again by the vehicle's bev_canvas;
    a quarter turn of a cached canvas is exact and free (turn_canvas); the others come from the cache."""
    from fmdrive.inference.pillars import bev_canvas
    out_f, out_c = [], []
    for slot, (i, j) in enumerate(pair_rows):
        a, b = frames[i], frames[j]
        if db is not None and rng.random() < share:
            a, b = paste_pair(a, b, db, rng, per_class, PASTED_ID_BASE + 1000 * slot)
        if rotate_deg > 0:
            angle = float(np.deg2rad(rng.uniform(-rotate_deg, rotate_deg)))
            a, b = rotate_frame(a, angle), rotate_frame(b, angle)
        turn = 0
        if quarter_turns > 0 and rng.random() < quarter_turns:
            turn = 1 if rng.random() < 0.5 else -1
        for k, f in ((i, a), (j, b)):
            canvas = canvases[k] if f is frames[k] else None
            f = rotate_frame(f, turn * np.pi / 2) if turn else f
            out_f.append(f)
            if canvas is None:
                canvas = bev_canvas(f.points, grid)[0]
            elif turn:
                canvas = turn_canvas(canvas, turn, grid)
            out_c.append(canvas)
    return out_f, out_c


def learning_rate(peak: float, step: int, total: int, warmup: float = 0.05) -> float:
    """Linear warm-up, then cosine down to 5 % of the peak; a function of the step, so a resumed
    run (even with more --epochs) continues the curve without scheduler state."""
    w = max(1, int(warmup * total))
    if step < w:
        return peak * (step + 1) / w
    t = min(1.0, (step - w) / max(1, total - w))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def tiny_config(axis_head: bool = True) -> LidarConfig:
    return LidarConfig(widths=(8, 16, 16), depths=(0, 1, 1), neck_channels=8, head_channels=8, axis_head=axis_head)


def evaluate(model: LidarCenterPoint, frames, canvases, card, batch: int = 4) -> dict:
    """BEV AP / recall on frames with the torch model and the card's decoder (same as ONNX)."""
    from fmdrive.inference.decoders import decode_fmdrive_centerpoint
    from fmdrive.training.lidar_data import score_detections
    from fmdrive.training.lidar_model import output_names
    names = output_names(model.cfg)
    model.eval()
    dets = []
    with torch.no_grad():
        for s in range(0, len(frames), batch):
            x = torch.from_numpy(np.asarray(canvases[s:s + batch], np.float32))
            outs = [o.numpy() for o in model(x)]
            for j in range(x.shape[0]):
                dets.append(decode_fmdrive_centerpoint({n: o[j:j + 1] for n, o in zip(names, outs)}, card))
    model.train()
    return score_detections(dets, frames)


def val_score(metrics: dict) -> float:
    """Mean AP over the classes with ground truth (the early-stopping criterion)."""
    aps = [v for v in metrics['ap'].values() if v is not None]
    return float(np.mean(aps)) if aps else 0.0


def train(tc: TrainConfig, resume: bool = False, progress: bool = True, log=print) -> dict:
    from tqdm import tqdm

    from fmdrive.training.export import card_for
    from fmdrive.training.lidar_data import split_canvases
    torch.set_num_threads(tc.threads)
    seed_everything(tc.seed)
    out = Path(tc.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(bool(tc.axis_head)) if tc.tiny else LidarConfig(axis_head=bool(tc.axis_head))
    if tc.bev_features:
        cfg = replace(cfg, bev_features=tuple(tc.bev_features))
    grid = cfg.bev_grid()
    frames, canvases = split_canvases(tc.data, 'train', grid, tc.max_scenes, progress)
    val_frames, val_canvases = split_canvases(tc.data, 'val', grid, tc.max_scenes, progress)
    val_frames, val_canvases = val_frames[::tc.val_every], val_canvases[::tc.val_every]
    pairs = frame_pairs(frames)
    paste = {'cyclist': tc.paste_cyclists, 'pedestrian': tc.paste_pedestrians}
    db = GtDatabase(frames, tuple(k for k, v in paste.items() if v > 0)) if tc.gt_paste > 0 else None
    model = LidarCenterPoint(cfg).to(memory_format=torch.channels_last)   # faster convs on the CPU
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(pairs) / tc.batch_pairs)
    weights = pair_weights(pairs, frames, grid, tc.rare_class_weight, tc.crossing_weight)
    total_steps = max(1, tc.epochs * steps_per_epoch)
    start_epoch, best, history, spent_s = 0, -1.0, [], 0.0
    last = out / 'last.pt'
    if tc.init and not (resume and last.is_file()):
        first = torch.load(tc.init, weights_only=False, map_location='cpu')
        model.load_state_dict(init_weights(first, cfg, model.state_dict(), tc.init))
        from fmdrive.training.export import training_command
        tc.init_command = training_command(first.get('train_config', {}))
        log(f'starting from {tc.init} (trained by: {tc.init_command})')
    if resume and last.is_file():
        ck = torch.load(last, weights_only=False)
        model.load_state_dict(ck['model'])
        opt.load_state_dict(ck['optimizer'])
        start_epoch, best, history, spent_s = ck['epoch'] + 1, ck['best'], ck['history'], ck.get('spent_s', 0.0)
        torch.set_rng_state(ck['torch_rng'])
        log(f'resumed from {last} after epoch {ck["epoch"] + 1} (best val mAP {best:.4f})')
    qat = None
    if tc.qat:
        from fmdrive.training.qat import QAT, measure_ranges
        ranges = ck.get('qat_ranges') if resume and last.is_file() else None
        if ranges is None:
            pick = np.linspace(0, len(canvases) - 1, min(tc.qat_calib_frames, len(canvases))).round().astype(int)
            ranges = measure_ranges(model, np.asarray(canvases[pick], np.float32))
        qat = QAT(model, ranges)
        log(f'quantization-aware: int8_cpu rounding simulated at {len(qat.hooks)} tensors and every conv\'s '
            f'weights, activation ranges from {tc.qat_calib_frames} train frames')

    def plain_state() -> dict:
        return qat.state_dict() if qat is not None else model.state_dict()

    card = card_for(cfg, out / 'card.yaml')
    log(f'LiDAR encoder: {model.num_params() / 1e6:.2f} M parameters, {len(frames)} train frames '
        f'({len(pairs)} pairs), {len(val_frames)} val frames, {tc.threads} threads'
        + (f', GT-paste database {db.counts()} into {tc.gt_paste:.0%} of the pairs' if db else ''))
    stale = next((k for k, h in enumerate(history[::-1]) if h.get('improved')), len(history))
    for epoch in range(start_epoch, tc.epochs):
        t_epoch = time.perf_counter()
        rng = np.random.default_rng([tc.seed, epoch])          # the epoch's order, also after a resume
        order = rng.choice(len(pairs), len(pairs), p=weights,
                           replace=tc.rare_class_weight != 1.0 or tc.crossing_weight != 1.0)
        flips = rng.random(len(pairs)) < 0.5
        paste_rng = np.random.default_rng([tc.seed, epoch, 1])
        # crops start on multiples of the network's total stride (8), centred on the road +- 8 rows x 8
        ny = cfg.grid_hw[0]
        crop_rows = tc.crop_rows if 0 < tc.crop_rows < ny else 0
        centre = (ny - crop_rows) // 2
        row_starts = centre + 8 * rng.integers(-3, 4, len(pairs)) if crop_rows else np.zeros(len(pairs), int)
        row_starts = np.clip(row_starts, 0, ny - crop_rows)
        model.train()
        if qat is not None:
            qat.freeze_batchnorm()
        sums, n = {}, 0
        bar = tqdm(range(steps_per_epoch), desc=f'epoch {epoch + 1}/{tc.epochs}', unit='batch', disable=not progress)
        for step in bar:
            sel = order[step * tc.batch_pairs:(step + 1) * tc.batch_pairs]
            b_frames, b_canvases = pasted_pairs(pairs[sel], frames, canvases, db, paste_rng, tc.gt_paste, paste, grid,
                                               tc.rotate_deg, tc.quarter_turns)
            x, batch = make_batch(range(len(b_frames)), b_frames, b_canvases, cfg, np.repeat(flips[sel], 2),
                                  np.repeat(row_starts[sel], 2), crop_rows)
            x = x.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group['lr'] = learning_rate(tc.lr, epoch * steps_per_epoch + step, total_steps)
            loss, parts = centerpoint_loss(model(x), batch, rot_loss=tc.rot_loss,
                                           axis_crossing_weight=tc.axis_crossing_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            n += 1
            for k, v in {'loss': float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f'{sums["loss"] / n:.3f}')
        metrics = evaluate(model, val_frames, val_canvases, card)
        score = val_score(metrics)
        improved = score > best
        spent_s += time.perf_counter() - t_epoch
        entry = {'epoch': epoch + 1, 'train': {k: round(v / max(n, 1), 4) for k, v in sums.items()},
                 'val': metrics, 'val_map': round(score, 4), 'improved': improved, 'minutes': round(spent_s / 60, 2)}
        history.append(entry)
        with open(out / 'log.jsonl', 'a') as f:
            f.write(json.dumps(entry) + '\n')
        log(f'epoch {epoch + 1}: loss {entry["train"]["loss"]:.4f}  val mAP {score:.4f}  car AP '
            f'{metrics["car_bev_ap50"]}  recall {metrics["recall"]}  ({spent_s / 60:.1f} min)')
        if improved:
            best, stale = score, 0
            torch.save({'model': plain_state(), 'config': cfg.to_dict(), 'epoch': epoch, 'val': metrics,
                        'train_config': asdict(tc)}, out / 'best.pt')
        else:
            stale += 1
        torch.save({'model': plain_state(), 'optimizer': opt.state_dict(),
                    'epoch': epoch, 'best': best, 'history': history, 'config': cfg.to_dict(),
                    'torch_rng': torch.get_rng_state(), 'spent_s': spent_s, 'train_config': asdict(tc),
                    'qat_ranges': None if qat is None else qat.ranges}, last)
        if stale >= tc.patience:
            log(f'early stop: no better val mAP for {tc.patience} epochs')
            break
        if spent_s / 60 > tc.max_minutes:
            log(f'stopping: {spent_s / 60:.1f} min spent (--max-minutes {tc.max_minutes:g})')
            break
    return {'best_val_map': best, 'epochs_run': len(history), 'minutes': round(spent_s / 60, 2),
            'best': str(out / 'best.pt')}


def load_model(checkpoint) -> LidarCenterPoint:
    ck = torch.load(checkpoint, weights_only=False, map_location='cpu')
    model = LidarCenterPoint(LidarConfig.from_dict(ck['config']))
    model.load_state_dict(ck['model'])
    return model.eval()
