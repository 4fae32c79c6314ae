"""`fmdrive eval RUN_DIR [RUN_DIR ...] [--json] [-o metrics.json]`: metrics of run dirs.

Prints a readable table, or with --json exactly one JSON object on stdout (progress goes to
stderr). With several run dirs the object holds the aggregate at the top level (the same keys as
for one run: detection.car_bev_ap50, planning.l2_3s, ...; rates and errors are the mean over the
runs, counts are summed) plus "runs": the per-run objects. Each run's metrics are also written to
RUN_DIR/metrics.json (read by `fmdrive report`) unless --no-save.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fmdrive.eval.metrics import EvalError, eval_run, json_safe  # noqa: F401  (eval_run re-exported)

# leaves that are counts: summed over runs (everything else numeric is averaged)
COUNT_KEYS = {'id_switches', 'tracks', 'matches', 'frames', 'plans', 'collisions', 'num_gt',
              'sensor_frames', 'dropped_sensor_frames', 'frames_scored', 'dds_lost_inputs',
              'queue_dropped_inputs'}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('run_dirs', nargs='+', metavar='RUN_DIR',
                        help='run directory (ground_truth.json, bag/, output/[, latency.json])')
    parser.add_argument('--json', action='store_true', help='print exactly one JSON object')
    parser.add_argument('-o', '--output', default=None, metavar='metrics.json',
                        help='also write the JSON object to this file')
    parser.add_argument('--no-save', action='store_true',
                        help='do not write RUN_DIR/metrics.json')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


def _user_errors() -> tuple:
    types = [EvalError, FileNotFoundError, NotADirectoryError, PermissionError]
    for module, name in (('fmdrive.bags.reader', 'BagError'), ('fmdrive.bags.typestore', 'BagError'),
                         ('fmdrive.msgs', 'MessageError')):
        try:
            types.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def aggregate(runs: list[dict]) -> dict:
    """Per-key aggregate of metric dicts: counts summed, other numbers averaged (None skipped)."""
    def merge(values, key):
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, dict) for v in present):
            keys = dict.fromkeys(k for v in present for k in v)
            # inside a count (e.g. num_gt per class) every number is a count too
            return {k: merge([v.get(k) for v in present], key if key in COUNT_KEYS else k) for k in keys}
        if not present:
            return None
        nums = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums and len(nums) == len(present):
            return int(sum(nums)) if key in COUNT_KEYS else float(np.mean(nums))
        distinct = list(dict.fromkeys(str(v) for v in present))
        return distinct[0] if len(distinct) == 1 else distinct
    out = merge(runs, '')
    out.pop('run_dir', None)
    return json_safe(out)


def flatten(d: dict, prefix: str = '') -> dict:
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict):
            out.update(flatten(v, key + '.'))
        elif not isinstance(v, list):
            out[key] = v
    return out


def format_table(results: list[dict], agg: dict | None) -> str:
    """Metric rows, one column per run (and one for the aggregate)."""
    columns = [(Path(r['run_dir']).name or r['run_dir'], flatten(r)) for r in results]
    if agg is not None:
        columns.append(('aggregate', flatten(agg)))
    keys = list(dict.fromkeys(k for _, c in columns for k in c if k not in ('run_dir',)))

    def cell(v):
        if v is None:
            return 'n/a'
        if isinstance(v, float):
            return f'{v:.3f}'
        return str(v)
    width = max(len(k) for k in keys) + 2
    col_w = [max(10, len(name), *(len(cell(c.get(k))) for k in keys)) + 2 for name, c in columns]
    lines = [' ' * width + ''.join(name.rjust(w) for (name, _), w in zip(columns, col_w))]
    for k in keys:
        lines.append(k.ljust(width) + ''.join(cell(c.get(k)).rjust(w)
                                              for (_, c), w in zip(columns, col_w)))
    return '\n'.join(lines)


def run(args) -> int:
    """Evaluate args.run_dirs; returns the exit code (2 with a one-line error on bad input)."""
    try:
        results = []
        for run_dir in args.run_dirs:
            metrics = eval_run(run_dir, progress=not getattr(args, 'no_progress', False))
            if not getattr(args, 'no_save', False):
                (Path(run_dir) / 'metrics.json').write_text(json.dumps(metrics, indent=1))
            results.append(metrics)
    except _user_errors() as exc:
        print(f'fmdrive eval: error: {exc}', file=sys.stderr)
        return 2
    if len(results) == 1:
        agg, obj = None, results[0]
    else:
        agg = aggregate(results)
        obj = {**agg, 'run_count': len(results), 'runs': results}
    text = json.dumps(obj, indent=None if args.json else 1)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + '\n')
    if args.json:
        print(text)
    else:
        print(format_table(results, agg))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='fmdrive eval', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
