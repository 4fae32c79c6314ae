"""Message types for bags: "pkg/msg/Type" names, rclpy classes, and the rosbags typestore.

The typestore gives every MCAP channel its schema (the full .msg text with dependencies) and
rosbag2's type_description_hash (RIHS01, checked equal to what the ROS build computes). It starts
from rosbags' ROS 2 Kilted store (the runtime here), adds fmdrive_msgs and tf2_msgs from their
.msg files in this repository, and any other type from <prefix>/share/<pkg>/msg/<Type>.msg.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from functools import lru_cache
from pathlib import Path

from fmdrive.config import PACKAGE_ROOT

MSG_DIRS = {  # interface packages whose .msg files live in this repository
    'fmdrive_msgs': PACKAGE_ROOT / 'ros2_ws' / 'src' / 'fmdrive_msgs' / 'msg',
    'tf2_msgs': PACKAGE_ROOT / 'scripts' / 'interfaces' / 'tf2_msgs' / 'msg',
}
_PRIMITIVES = {'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16',
               'int32', 'uint32', 'int64', 'uint64', 'string', 'wstring', 'time', 'duration'}


class BagError(ValueError):
    """A bag that cannot be read or written; the text is one line saying why."""


def msgtype_of(msg) -> str:
    """"pkg/msg/Type" of an rclpy message (or message class)."""
    cls = msg if isinstance(msg, type) else type(msg)
    package, kind = cls.__module__.split('.')[:2]
    return f'{package}/{kind}/{cls.__name__}'


def message_class(msgtype: str):
    """The rclpy class of "pkg/msg/Type" (also accepts "pkg/Type"); BagError when unknown."""
    parts = msgtype.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3:
        raise BagError(f'malformed message type {msgtype!r}: expected "pkg/msg/Type"')
    try:
        return getattr(importlib.import_module(f'{parts[0]}.{parts[1]}'), parts[2])
    except (ImportError, AttributeError):
        raise BagError(f'unknown message type {msgtype!r}: install or build the interface package '
                       f'{parts[0]!r} into this environment') from None


def _share_dirs() -> list[Path]:
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    return [Path(p) / 'share' for p in dict.fromkeys(prefixes)]


def _find_msg_file(msgtype: str) -> Path | None:
    package, _, name = msgtype.split('/')
    candidates = [MSG_DIRS[package] / f'{name}.msg'] if package in MSG_DIRS else []
    candidates += [share / package / 'msg' / f'{name}.msg' for share in _share_dirs()]
    return next((path for path in candidates if path.is_file()), None)


def _referenced_types(text: str, package: str) -> set[str]:
    """"pkg/msg/Type" of every non-primitive field of a .msg text."""
    out = set()
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        base = re.sub(r'<=\d+$', '', re.sub(r'\[.*\]$', '', line.split()[0]))
        if base in _PRIMITIVES:  # constants (NAME=value) are always primitive too
            continue
        if base == 'Header':
            out.add('std_msgs/msg/Header')
        elif '/' in base:
            pkg, name = base.split('/')[0], base.split('/')[-1]
            out.add(f'{pkg}/msg/{name}')
        else:
            out.add(f'{package}/msg/{base}')
    return out


@lru_cache(maxsize=1)
def typestore():
    """The shared typestore (Kilted + this repository's interfaces)."""
    from rosbags.typesys import Stores, get_typestore
    store = get_typestore(Stores.ROS2_KILTED)
    for package, folder in MSG_DIRS.items():
        for path in sorted(folder.glob('*.msg')):
            ensure_type(store, f'{package}/msg/{path.stem}', force=True)
    return store


def ensure_type(store, msgtype: str, force: bool = False) -> None:
    """Register msgtype (and what it references) from .msg files unless the store has it."""
    from rosbags.typesys import get_types_from_msg
    pending = [msgtype]
    while pending:
        name = pending.pop()
        if name in store.fielddefs and not (force and name == msgtype):
            continue
        path = _find_msg_file(name)
        if path is None:
            raise BagError(f'no message definition for {name!r}: its .msg file is not under '
                           f'{", ".join(str(s) for s in _share_dirs())}; install its package')
        text = path.read_text()
        store.register(get_types_from_msg(text, name))
        pending += [t for t in _referenced_types(text, name.split('/')[0])
                    if t not in store.fielddefs]
