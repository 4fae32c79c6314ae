"""`fmdrive train camera`: train the camera encoder (camera_model.py) on the dataset's letterboxed
images, on the CPU. Same habits as train_lidar.py: flat TrainConfig, fixed seeds, pairs of
consecutive frames per batch (embedding loss), horizontal-flip augmentation, random bands of
crop_width columns (the network is fully convolutional; 60 % of the compute), a checkpoint every
epoch (OUT/last.pt, OUT/best.pt by val 2D mAP), OUT/log.jsonl, early stop, --max-minutes, --resume.
The learning-rate schedule ends at the last epoch or at --max-minutes, whichever comes first, and the
run stops mid-epoch at --max-minutes: on a shared 2-core machine the wall-clock budget, not the epoch
count, is what is known in advance.

    fmdrive train camera --data runs/dataset --out runs/camera --epochs 6 --batch-pairs 4 --seed 7 --max-minutes 34
"""
from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fmdrive.training.camera_model import (
    OUTPUT_NAMES,
    CameraCenterNet,
    CameraConfig,
    ap_2d,
    centernet_loss,
    decode_batch,
    make_targets,
    normalise,
)
from fmdrive.training.train_lidar import frame_pairs, learning_rate, seed_everything


@dataclass
class TrainConfig:
    data: str = 'runs/dataset'
    out: str = 'runs/camera'
    epochs: int = 6
    batch_pairs: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 7
    patience: int = 3
    max_minutes: float = 45.0
    threads: int = 2
    max_scenes: int | None = None
    val_every: int = 2
    crop_width: int = 192     # train on a random band of this many columns (multiple of 16), 0 = all:
    tiny: bool = False        # 60 % of the compute per image; the network is fully convolutional


def tiny_config() -> CameraConfig:
    return CameraConfig(widths=(8, 8, 16, 16), depths=(0, 0, 1), neck_channels=8, head_channels=8)


def make_batch(indices, frames, cfg: CameraConfig, flips, col_starts=None,
               crop_width: int = 0) -> tuple[torch.Tensor, dict]:
    """Input tensor and targets of frames[indices] (flips: per frame, mirror x). With crop_width,
    only columns col_starts[b] .. + crop_width of frame b (full height): image and targets cut alike;
    an object whose centre cell falls outside is not a target (its heatmap tail stays)."""
    images, heat, rows = [], [], {k: [] for k in ('batch_index', 'cell_index', 'size', 'offset', 'depth',
                                                  'instance')}
    W = cfg.input_hw[1] // cfg.stride
    for b, (i, flip) in enumerate(zip(indices, flips)):
        img = frames[i].image
        img = img[:, ::-1] if flip else img
        t = make_targets(frames[i], cfg, bool(flip), (zlib.crc32(frames[i].scene.encode()) % 100000) * 100000)
        if crop_width:
            c0, cw = int(col_starts[b]) // cfg.stride, crop_width // cfg.stride
            img = img[:, int(col_starts[b]):int(col_starts[b]) + crop_width]
            iy, ix = np.divmod(t['index'], W)
            keep = (ix >= c0) & (ix < c0 + cw)
            t = {k: v[keep] for k, v in t.items() if k != 'heatmap'} | {'heatmap': t['heatmap'][:, :, c0:c0 + cw]}
            t['index'] = iy[keep] * cw + ix[keep] - c0
        images.append(img)
        heat.append(t['heatmap'])
        rows['batch_index'].append(np.full(len(t['index']), b, np.int64))
        rows['cell_index'].append(t['index'])
        for k in ('size', 'offset', 'depth', 'instance'):
            rows[k].append(t[k])
    batch = {k: torch.from_numpy(np.concatenate(v)) for k, v in rows.items()}
    batch['heatmap'] = torch.from_numpy(np.stack(heat))
    return torch.from_numpy(normalise(np.stack(images))), batch


def evaluate(model, frames, card, batch: int = 8) -> dict:
    model.eval()
    dets = []
    with torch.no_grad():
        for s in range(0, len(frames), batch):
            x = torch.from_numpy(normalise(np.stack([f.image for f in frames[s:s + batch]])))
            outs = dict(zip(OUTPUT_NAMES, [o.numpy() for o in model(x)]))
            dets.extend(decode_batch(outs, card, j) for j in range(x.shape[0]))
    model.train()
    return ap_2d(dets, frames)


def train(tc: TrainConfig, resume: bool = False, progress: bool = True, log=print) -> dict:
    from tqdm import tqdm

    from fmdrive.training.camera_export import card_for
    from fmdrive.training.dataset import load_split
    torch.set_num_threads(tc.threads)
    seed_everything(tc.seed)
    out = Path(tc.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config() if tc.tiny else CameraConfig()
    frames = load_split(tc.data, 'train', tc.max_scenes)
    val_frames = load_split(tc.data, 'val', tc.max_scenes)[::tc.val_every]
    if frames[0].image is None:
        raise FileNotFoundError(f'{tc.data} has no camera images (written with --no-camera?)')
    pairs = frame_pairs(frames)
    model = CameraCenterNet(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(pairs) / tc.batch_pairs)
    total_steps = max(1, tc.epochs * steps_per_epoch)
    start_epoch, best, history, spent_s, stale = 0, -1.0, [], 0.0, 0
    last = out / 'last.pt'
    if resume and last.is_file():
        ck = torch.load(last, weights_only=False)
        model.load_state_dict(ck['model'])
        opt.load_state_dict(ck['optimizer'])
        start_epoch, best, history, spent_s = ck['epoch'] + 1, ck['best'], ck['history'], ck.get('spent_s', 0.0)
        stale = ck.get('stale', 0)
        torch.set_rng_state(ck['torch_rng'])
        log(f'resumed from {last} after epoch {ck["epoch"] + 1} (best val mAP {best:.4f})')
    card = card_for(cfg, out / 'card.yaml')
    log(f'camera encoder: {model.num_params() / 1e6:.2f} M parameters, {len(frames)} train frames, '
        f'{len(val_frames)} val frames, {tc.threads} threads')
    for epoch in range(start_epoch, tc.epochs):
        t_epoch = time.perf_counter()
        rng = np.random.default_rng([tc.seed, epoch])
        order = rng.permutation(len(pairs))
        flips = rng.random(len(pairs)) < 0.5
        crop_width = tc.crop_width if 0 < tc.crop_width < cfg.input_hw[1] else 0
        col_starts = 16 * rng.integers(0, (cfg.input_hw[1] - crop_width) // 16 + 1, len(pairs))
        sums, n = {}, 0
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f'epoch {epoch + 1}/{tc.epochs}', unit='batch', disable=not progress)
        for step in bar:
            sel = order[step * tc.batch_pairs:(step + 1) * tc.batch_pairs]
            x, batch = make_batch(pairs[sel].reshape(-1), frames, cfg, np.repeat(flips[sel], 2),
                                  np.repeat(col_starts[sel], 2), crop_width)
            # the schedule runs to its end by the last epoch or by --max-minutes, whichever comes first
            # (a shared machine may give a third of the planned epochs)
            minutes = (spent_s + time.perf_counter() - t_epoch) / 60
            if minutes > tc.max_minutes:
                break                                  # validated and saved below, then stopped
            at = max(epoch * steps_per_epoch + step, int(total_steps * minutes / max(tc.max_minutes, 1e-6)))
            for group in opt.param_groups:
                group['lr'] = learning_rate(tc.lr, min(at, total_steps), total_steps)
            loss, parts = centernet_loss(model(x.contiguous(memory_format=torch.channels_last)), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            n += 1
            for k, v in {'loss': float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f'{sums["loss"] / n:.3f}')
        metrics = evaluate(model, val_frames, card)
        score = metrics['map']
        improved = score > best
        spent_s += time.perf_counter() - t_epoch
        entry = {'epoch': epoch + 1, 'train': {k: round(v / max(n, 1), 4) for k, v in sums.items()},
                 'val': metrics, 'val_map': score, 'improved': improved, 'minutes': round(spent_s / 60, 2)}
        history.append(entry)
        with open(out / 'log.jsonl', 'a') as f:
            f.write(json.dumps(entry) + '\n')
        log(f'epoch {epoch + 1}: loss {entry["train"]["loss"]:.4f}  val 2D mAP {score:.4f}  AP {metrics["ap"]}  '
            f'({spent_s / 60:.1f} min)')
        if improved:
            best, stale = score, 0
            torch.save({'model': model.state_dict(), 'config': cfg.to_dict(), 'epoch': epoch, 'val': metrics,
                        'train_config': asdict(tc)}, out / 'best.pt')
        else:
            stale += 1
        torch.save({'model': model.state_dict(), 'optimizer': opt.state_dict(), 'epoch': epoch, 'best': best,
                    'history': history, 'config': cfg.to_dict(), 'torch_rng': torch.get_rng_state(),
                    'spent_s': spent_s, 'stale': stale, 'train_config': asdict(tc)}, last)
        if stale >= tc.patience:
            log(f'early stop: no better val mAP for {tc.patience} epochs')
            break
        if spent_s / 60 > tc.max_minutes:
            log(f'stopping: {spent_s / 60:.1f} min spent (--max-minutes {tc.max_minutes:g})')
            break
    return {'best_val_map': best, 'epochs_run': len(history), 'minutes': round(spent_s / 60, 2),
            'best': str(out / 'best.pt')}


def load_model(checkpoint) -> CameraCenterNet:
    ck = torch.load(checkpoint, weights_only=False, map_location='cpu')
    model = CameraCenterNet(CameraConfig.from_dict(ck['config']))
    model.load_state_dict(ck['model'])
    return model.eval()
