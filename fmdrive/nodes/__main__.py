"""`python -m fmdrive.nodes NAME|MODULE [--ros-args ...]`: run one node (a GRAPH name such as planner,
or a node's module: what `fmdrive run` does)."""
import sys

from fmdrive.nodes.start import start

if len(sys.argv) < 2 or sys.argv[1].startswith('-'):
    print('usage: python -m fmdrive.nodes NAME|MODULE [--ros-args ...]', file=sys.stderr)
    sys.exit(2)
start(sys.argv.pop(1))
