"""`fmdrive train dataset|lidar|camera`, `fmdrive export lidar|camera`, `fmdrive quantize lidar|camera` (torch is imported
only when a command runs, so `fmdrive --help` works on a vehicle without it).

    fmdrive train dataset --out runs/dataset --scenes 72            # resumable, deterministic (= fmdrive sim dataset)
    fmdrive train lidar --data runs/dataset --out runs/lidar --epochs 8 --seed 7 [--resume]
    fmdrive export lidar --checkpoint runs/lidar/best.pt --data runs/dataset --out engines/lidar_centerpoint
    fmdrive quantize lidar --model-dir engines/lidar_centerpoint --data runs/dataset [--frames 256]
    fmdrive train camera --data runs/dataset --out runs/camera --epochs 6 --seed 7      (and export/quantize camera)
    fmdrive train planner-tokenizer|planner-teacher|planner-student [--no-kd] --data runs/planning_dataset
                  --out runs/planner_lm [--max-minutes M] [--resume]      the planner LM (training/planner_lm.py)
    fmdrive train planner-eval --data runs/planning_dataset --out runs/planner_lm   open-loop L2 on the test split
    fmdrive export planner [--run runs/planner_lm] [--out engines/planner_student]
    fmdrive export planner-cpu [--model-dir engines/planner_student]   int8_cpu.onnx as one fused ORT graph
"""
from __future__ import annotations

import json
import sys

TORCH_MISSING = ('torch is not installed: training needs `pip install -r requirements-train.txt` '
                 '(torch==2.13.0, onnxscript)')


def _need_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError(TORCH_MISSING) from None


def _train_planner(args):
    from fmdrive.training import planner_lm as lm
    data, out = args.data if args.data != 'runs/dataset' else 'runs/planning_dataset', args.out or 'runs/planner_lm'
    if args.model == 'planner-tokenizer':
        return lm.tokenizer_command(data, out, args.plan_anchor, args.plan_order, args.prompt_style)
    if args.model == 'planner-eval':
        return lm.test_metrics(out, data)
    role = args.model.split('-')[1]
    cfg = lm.TrainConfig(data=data, out=out, role=role, kd=not args.no_kd, seed=args.seed, threads=args.threads,
                         size=lm.TINY if args.tiny else (lm.TEACHER if role == 'teacher' else lm.STUDENT),
                         max_minutes=args.max_minutes, lr=args.lr, goal_weight=args.goal_weight,
                         prompt_lm_weight=args.prompt_lm_weight, label_sigma_m=args.label_sigma_m,
                         numeric_init=args.numeric_init, steps=args.steps)
    if args.kd_samples:
        cfg.kd_samples = args.kd_samples
    cfg.batch_size = args.batch_size or args.batch_pairs or (8 if role == 'teacher' else 32)
    return lm.train(cfg, resume=args.resume, progress=not args.no_progress)


def dataset_command(args) -> int:
    """`fmdrive sim dataset` and `fmdrive train dataset` (one command, two names): numpy only, no torch."""
    from fmdrive.cli import UsageError
    from fmdrive.training.dataset import write_dataset
    counts = {'--scenes': args.scenes, '--val-scenes': args.val_scenes, '--test-scenes': args.test_scenes}
    bad = [f'{flag} {n}' for flag, n in counts.items() if n is not None and n < (1 if flag == '--scenes' else 0)]
    if bad:
        raise UsageError(f'{", ".join(bad)}: give at least one training scene, and no negative val/test count')
    print(json.dumps(write_dataset(args.out or 'runs/dataset', args.scenes, args.val_scenes, args.test_scenes,
                                   camera=not args.no_camera, progress=not args.no_progress)))
    return 0


def cmd_train(args):
    if args.steps is not None:
        from fmdrive.cli import UsageError
        if args.model not in ('planner-teacher', 'planner-student'):
            raise UsageError(f'--steps is for planner-teacher and planner-student, not {args.model}')
        if args.steps < 1:
            raise UsageError(f'--steps must be >= 1, got {args.steps}')
    if args.model.startswith('planner-'):
        _need_torch()
        print(json.dumps(_train_planner(args)))
        return 0
    if args.model == 'dataset':
        return dataset_command(args)
    _need_torch()
    if args.model == 'camera':
        from fmdrive.training.train_camera import TrainConfig, train
    else:
        from fmdrive.training.train_lidar import TrainConfig, train
    tc = TrainConfig(data=args.data, out=args.out or f'runs/{args.model}', epochs=args.epochs, seed=args.seed,
                     lr=args.lr, patience=args.patience, max_minutes=args.max_minutes,
                     threads=args.threads, max_scenes=args.max_scenes, tiny=args.tiny)
    if args.batch_pairs:
        tc.batch_pairs = args.batch_pairs
    if args.bev_features is not None:
        from fmdrive.inference.card import BEV_FEATURES
        features = tuple(f.strip() for f in args.bev_features.split(',') if f.strip())
        unknown = [f for f in features if f not in BEV_FEATURES]
        if args.model != 'lidar' or not features or unknown or len(set(features)) != len(features):
            from fmdrive.cli import UsageError
            raise UsageError(f'--bev-features {args.bev_features!r}: give the LiDAR network\'s input channels, '
                             f'comma-separated, each once, from {", ".join(BEV_FEATURES)} (train lidar only)')
        tc.bev_features = features
    for name, bounds, message in LIDAR_OPTIONS:
        value = getattr(args, name)
        if value is None:
            continue
        if args.model != 'lidar' or (bounds is not None and not bounds[0] <= value <= bounds[1]):
            from fmdrive.cli import UsageError
            raise UsageError(message)
        setattr(tc, name, value)
    print(json.dumps(train(tc, resume=args.resume, progress=not args.no_progress)))
    return 0


# train lidar's own options: (attribute of args and TrainConfig, allowed range or None, the refusal)
LIDAR_OPTIONS = (
    ('gt_paste', (0.0, 1.0), '--gt-paste is a share in [0, 1] of the LiDAR training pairs (train lidar only)'),
    ('rotate_deg', (0.0, 180.0), '--rotate-deg is an angle in [0, 180] degrees (train lidar only)'),
    ('rot_loss', None, '--rot-loss is for train lidar only'),
    ('quarter_turns', (0.0, 1.0), '--quarter-turns is a share in [0, 1] of the LiDAR training pairs (train lidar only)'),
    ('crossing_weight', (1.0, 100.0), '--crossing-weight is a sampling weight in [1, 100] (train lidar only)'),
    ('crop_rows', (0, 4096), '--crop-rows is a number of grid rows >= 0, 0 = the whole grid (train lidar only)'),
    ('init', None, '--init is for train lidar only'),
    ('axis_head', None, '--axis-head is for train lidar only'),
    ('axis_crossing_weight', (1.0, 100.0), '--axis-crossing-weight is a loss weight in [1, 100] (train lidar only)'),
    ('qat', None, '--qat is for train lidar only'),
    ('qat_calib_frames', (1, 100000), '--qat-calib-frames is a number of train frames >= 1 (train lidar only)'),
)


def add_train_arguments(p):
    from fmdrive.planning.lm.format import PLAN_ANCHORS, PLAN_ORDERS, PROMPT_STYLES
    p.add_argument('model', choices=('dataset', 'lidar', 'camera', 'planner-tokenizer', 'planner-teacher',
                                     'planner-student', 'planner-eval'),
                   help='dataset: write training frames; lidar / camera: train that encoder; planner-*: the planner '
                   'LM (tokenizer, teacher, student with/without KD, test-split evaluation)')
    p.add_argument('--plan-anchor', default='constant_velocity', choices=PLAN_ANCHORS,
                   help='planner-tokenizer: plan tokens relative to the constant-velocity rollout (default) '
                   'or absolute waypoints (planning/lm/format.py); every model of the run follows it')
    p.add_argument('--plan-order', default='goal_first', choices=tuple(PLAN_ORDERS),
                   help='planner-tokenizer: the 3 s waypoint first, then 0.5 .. 2.5 s (default), or in time order')
    p.add_argument('--prompt-style', default='full', choices=PROMPT_STYLES,
                   help='planner-tokenizer: the scene text as fusion writes it (default) or its compact form '
                   '(planning/lm/format.py: units, ids and filler words out, ~2.5x fewer tokens)')
    p.add_argument('--label-sigma-m', type=float, default=0.0,
                   help='planner: soft plan targets, a Gaussian of this many metres over the coordinate bins '
                   'around the expert\'s (default 0 = one-hot)')
    p.add_argument('--numeric-init', action='store_true',
                   help='planner: start the embeddings of number tokens and the output rows of coordinate bins '
                   'from smooth functions of their value, so that near values start near each other')
    p.add_argument('--no-kd', action='store_true', help='planner-student: no distillation (the baseline)')
    p.add_argument('--batch-size', type=int, default=None, help='planner: samples per batch (teacher 8, students 32)')
    p.add_argument('--kd-samples', type=int, default=None, help='planner-student: train samples the teacher labels')
    p.add_argument('--goal-weight', type=float, default=1.0,
                   help='planner: cross-entropy weight of the 3 s point\'s two tokens against the other eleven')
    p.add_argument('--prompt-lm-weight', type=float, default=0.0,
                   help='planner: weight of an auxiliary next-token loss on the scene text (default 0 = off)')
    p.add_argument('--out', default=None, help='dataset: directory to write (default runs/dataset); '
                   'lidar/camera: run directory for checkpoints and logs (default runs/<model>)')
    p.add_argument('--scenes', type=int, default=72, help='dataset: training scenes (val/test: scenes // 8, >= 4)')
    p.add_argument('--val-scenes', type=int, default=None)
    p.add_argument('--test-scenes', type=int, default=None)
    p.add_argument('--no-camera', action='store_true', help='dataset: LiDAR only (faster)')
    p.add_argument('--data', default='runs/dataset', help='lidar: the dataset directory')
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--seed', type=int, default=7)
    p.add_argument('--batch-pairs', type=int, default=None, help='pairs of consecutive frames per batch '
                   '(default lidar 4, camera 8)')
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--gt-paste', type=float, default=None,
                   help='lidar: share of training pairs with cyclists/pedestrians pasted from other frames '
                        '(ground-truth sampling; default 0.5, 0 = off)')
    p.add_argument('--rotate-deg', type=float, default=None,
                   help='lidar: turn each training pair about the sensor by a random angle within +-this (default 0)')
    p.add_argument('--rot-loss', choices=('l1', 'axis'), default=None,
                   help="lidar: L1 on the heading's sin/cos as labelled (l1, default) or up to its reverse "
                        "first (axis: front and back of a far car look alike; see lidar_model.rotation_loss)")
    p.add_argument('--quarter-turns', type=float, default=None,
                   help='lidar: share of training pairs turned about the sensor by +-90 degrees, so crossing '
                        'traffic is common (free: the cached canvas is turned; default 0)')
    p.add_argument('--crop-rows', type=int, default=None,
                   help='lidar: train on a band of this many grid rows (y) around the road (default 128; 0 = all)')
    p.add_argument('--init', default=None,
                   help='lidar: a checkpoint (best.pt) whose weights start this run, as a second training stage')
    p.add_argument('--crossing-weight', type=float, default=None,
                   help='lidar: pairs showing a car turned > 45 degrees from the vehicle (crossing traffic) '
                        'are drawn this much more often (default 1)')
    p.add_argument('--axis-head', type=int, choices=(0, 1), default=None,
                   help='lidar: 1 (default) = an axis head, (sin, cos) of 2 x yaw, beside the heading head, so a '
                        'car whose front and back look alike still gets its axis (crossing traffic); 0 = none')
    p.add_argument('--axis-crossing-weight', type=float, default=None,
                   help='lidar: weight of a crossing car (|sin yaw| = 1) in the axis loss, 1 + (this - 1) |sin yaw| '
                        'per object (default 10, the committed model)')
    p.add_argument('--bev-features', default=None,
                   help='lidar: the input channels per pillar, comma-separated (default log_count,z_max,z_min,z_mean; '
                        'x_offset_mean,y_offset_mean add where in its cell the points lie)')
    p.add_argument('--qat', action='store_true', default=None,
                   help='lidar: quantization-aware fine-tuning (fmdrive/training/qat.py): the int8_cpu rounding is '
                        'simulated while training; use with --init, a low --lr and an epoch or two')
    p.add_argument('--qat-calib-frames', type=int, default=None,
                   help='lidar --qat: train frames whose min-max sets the simulated activation ranges (default 64)')
    p.add_argument('--patience', type=int, default=3, help='early stop after this many epochs without progress')
    p.add_argument('--max-minutes', type=float, default=45.0, help='stop after the epoch that passes this')
    p.add_argument('--steps', type=int, default=None,
                   help='planner-teacher / planner-student: a run of this many optimizer steps (its LR schedule '
                        'and val checks laid out in steps, not minutes: the same run on a busy or an idle machine; '
                        '--max-minutes still stops it)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--max-scenes', type=int, default=None, help='use only the first N scenes of each split')
    p.add_argument('--tiny', action='store_true', help='a very small network (smoke tests)')
    p.add_argument('--resume', action='store_true', help='continue from OUT/last.pt')
    p.add_argument('--no-progress', action='store_true')


def _engine(model: str) -> str:
    return {'lidar': 'engines/lidar_centerpoint', 'camera': 'engines/camera_centernet'}[model]


def cmd_export(args):
    if args.model == 'planner-cpu':          # numpy + onnx + onnxruntime: no torch
        from fmdrive.training.planner_fused import FuseError, fuse_int8_cpu
        try:
            print(json.dumps(fuse_int8_cpu(args.model_dir or 'engines/planner_student')))
        except FuseError as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
        return 0
    _need_torch()
    if args.model == 'planner':
        from fmdrive.training.planner_export import export_planner
        print(json.dumps(export_planner(args.run, args.data if args.data != 'runs/dataset' else 'runs/planning_dataset',
                                        args.out or 'engines/planner_student')))
        return 0
    if args.model == 'camera':
        from fmdrive.training.camera_export import export_camera as export
    else:
        from fmdrive.training.export import export_lidar as export
    print(json.dumps(export(args.checkpoint or f'runs/{args.model}/best.pt', args.out or _engine(args.model),
                            args.data)))
    return 0


def add_export_arguments(p):
    p.add_argument('model', choices=('lidar', 'camera', 'planner', 'planner-cpu'),
                   help='planner-cpu: rewrite a planner card\'s int8_cpu.onnx as the fused ONNX Runtime CPU graph '
                        'of its HF weights (training/planner_fused.py)')
    p.add_argument('--checkpoint', default=None, help='default runs/<model>/best.pt')
    p.add_argument('--model-dir', default=None, help='planner-cpu: the card directory (default engines/planner_student)')
    p.add_argument('--run', default='runs/planner_lm', help='planner: the training run directory')
    p.add_argument('--data', default='runs/dataset', help='the dataset (a val frame is the parity sample)')
    p.add_argument('--out', default=None, help='default engines/lidar_centerpoint or engines/camera_centernet')


def cmd_quantize(args):
    from fmdrive.training.export import CALIBRATION_METHODS, quantize_lidar
    methods = tuple(args.methods or CALIBRATION_METHODS)
    if args.model == 'camera':
        from fmdrive.training.camera_export import quantize_camera as quantize
    else:
        quantize = quantize_lidar
    result = quantize(args.model_dir or _engine(args.model), args.data, args.frames, methods)
    print(json.dumps({'best_method': result['best_method'], 'comparison': result['comparison']}))
    return 0


def add_quantize_arguments(p):
    p.add_argument('model', choices=('lidar', 'camera'))
    p.add_argument('--model-dir', default=None, help='default engines/lidar_centerpoint or engines/camera_centernet')
    p.add_argument('--data', default='runs/dataset')
    p.add_argument('--frames', type=int, default=256, help='calibration frames (evenly spaced over the train split)')
    p.add_argument('--methods', nargs='+', choices=('minmax', 'entropy', 'percentile'), default=None,
                   help='calibration methods to compare (default all three)')
