"""Where a node's process begins: the console scripts (`ros2 run fmdrive planner`, the launch
files) and `fmdrive run` (`python -m fmdrive.nodes fmdrive.nodes.planner_node`) both come through `start`.

A node spends its first second or two importing (rclpy, numpy, ONNX Runtime, open3d). A Ctrl-C
then (ros2 launch and `fmdrive run` pass one to every node at once, often right after starting
them) printed a KeyboardInterrupt traceback from inside whatever was being imported. Here the
handler is in place before those imports, and an interrupt that comes before the node exists
ends the process quietly with exit code 0, as a Ctrl-C does later (run_node).

Before the node's participant exists, a process that follows an unclean end of its node's last one
(killed; ros2 launch's respawn starts it again) is given a Fast DDS participant id of its own
(fmdrive/respawn.py).
"""
from __future__ import annotations

import faulthandler
import functools
import importlib
import signal
import sys

from fmdrive import interrupts


def start(node: str, args=None) -> None:
    """Import `node` (a GRAPH name, or the module of any node: what `fmdrive run` passes) and run
    its main(args). `kill -USR1 PID` prints every thread's stack to the node's stderr (its log):
    where a node that stopped reporting is stuck, without a debugger on the vehicle."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    interrupts.install()
    instance = None
    try:
        from fmdrive import respawn
        from fmdrive.graph import GRAPH
        modules = {n.name: n.module for n in GRAPH}
        module = node
        if '.' not in node:
            if node not in modules:
                print(f'error: no node named {node!r}; the nodes are {", ".join(modules)}', file=sys.stderr)
                sys.exit(2)
            module = modules[node]
        name = next((n for n, m in modules.items() if m == module), module)
        instance, line = respawn.prepare(name)       # before the participant exists
        if line:
            print(f'[{name}] {line}', file=sys.stderr, flush=True)
        main = importlib.import_module(module).main
        interrupts.check()      # one swallowed inside an import (a finaliser) still stops the start
    except KeyboardInterrupt:
        if instance is not None:
            instance.clean_end()            # no participant was made
        sys.exit(0)
    code = 1                    # a crash, or an exit asking for a restart (75), is not a clean end:
    try:                        # the next process gets a participant id of its own
        main(args)
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code
        raise
    finally:                    # main() returns or raises once the node's participant is gone
        if instance is not None and code in (0, 2):
            instance.clean_end()


def __getattr__(attr: str):
    """`fmdrive.nodes.start:<node name>` is each node's console-script entry point."""
    if attr.startswith('_'):
        raise AttributeError(attr)
    return functools.partial(start, attr)
