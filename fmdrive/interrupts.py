"""Ctrl-C / SIGTERM for the CLI's long commands, so that one never gets lost.

Python raises KeyboardInterrupt from its signal handler at the next bytecode boundary of the main
thread, wherever that is: inside a finaliser (`__del__`, a weakref or GC callback, e.g. while an
rclpy node is being torn down) the exception is printed as "Exception ignored in ..." and
dropped, and the command runs on to its end. So the handler also sets a flag that outlives the
exception, and the orchestration code calls `check()` at its steps (every wait loop, after the
replay), which raises KeyboardInterrupt again when the first one was swallowed.

The same interrupt can land inside a library's constructor (e.g. rclpy's Executor.__init__): the
half-built object's finaliser then fails ("Exception ignored in ... AttributeError") and prints a
traceback of library internals after the command has said it was interrupted. Once the flag is
set, such unraisable exceptions are dropped (the flag already carries the interrupt); before it,
they go to the previous hook as always.
"""
from __future__ import annotations

import signal
import sys
import threading

_interrupted = threading.Event()


def _handler(signum, frame):
    _interrupted.set()
    raise KeyboardInterrupt


def _unraisable_hook_after(previous):
    def hook(unraisable):
        if not _interrupted.is_set():
            previous(unraisable)
    hook.fmdrive_interrupts = True
    return hook


def install() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt and set the flag (main thread only). Also
    re-enables SIGINT when it was inherited ignored (a process started in the background of a
    non-interactive shell: CI, nohup, cron), and silences finalisers that fail after an interrupt."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)
    if not getattr(sys.unraisablehook, 'fmdrive_interrupts', False):
        sys.unraisablehook = _unraisable_hook_after(sys.unraisablehook)


def note() -> None:
    """Record an interrupt that was handled elsewhere (e.g. the replay's own handler)."""
    _interrupted.set()


def interrupted() -> bool:
    return _interrupted.is_set()


def disguised(exc: BaseException) -> bool:
    """Whether `exc` is an interrupt in disguise. rclpy turns a taken message into Python by running
    the message class's __init__; a KeyboardInterrupt raised there is swallowed by pybind11 and
    comes out of spin as "RuntimeError: Unable to convert call argument '0' to Python object".
    After a Ctrl-C / SIGTERM, such a RuntimeError is the interrupt."""
    return isinstance(exc, RuntimeError) and _interrupted.is_set()


def check() -> None:
    """KeyboardInterrupt if a Ctrl-C / SIGTERM arrived since install()."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


def reset() -> None:
    """Forget an earlier interrupt (tests; a command that handled it and goes on)."""
    _interrupted.clear()
