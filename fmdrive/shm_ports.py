"""Is this process still reachable over Fast DDS shared memory? (Linux, /proc; ROS-free.)

A Fast DDS participant receives shared-memory traffic on a *port*: a segment /dev/shm/fastdds_port<N>
(`fastrtps_port<N>` before Fast DDS 2.8, Humble) that the listener maps, plus a lock file
`<segment>_el` it holds while alive. Writers open the segment by name. When a participant dies
(kill -9), its peers find the port dead and regenerate it: they probe the lock (open, lock, unlock,
*remove* the lock file) and remove and re-create the segment. A node restarted at once takes the same
participant id, so the same port, while those probes still run (until the dead participant's lease
ends, ~20 s): measured here, about one restart in four of a process beside four peers loses the race
(Fast DDS logs "Failed init_port fastdds_port<N>: open_and_lock_file failed", or nothing) and ends up
listening on a segment that is no longer the file at /dev/shm/fastdds_port<N>. Writers write into the
file, the listener reads its unlinked segment: the node is on the graph, publishes, matches every
subscription, and never receives a message again. Fast DDS does not notice.

`stranded_ports()` tells from /proc/self/fd (which port locks this process holds) and /proc/self/maps
(which segment inodes it maps) whether a port it listens on is no longer the one writers reach. A
node that finds itself so cut off exits (`EXIT_TRANSPORT_LOST`) so that its supervisor (`fmdrive run`
or `ros2 launch` with respawn) starts it again; the new process opens the port anew. Another RMW,
or Fast DDS without shared memory, holds no such files: nothing to check, nothing reported.
"""
from __future__ import annotations

import os
import re

# sysexits.h EX_TEMPFAIL: a node that exits with it asks to be started again (not a bad parameter)
EXIT_TRANSPORT_LOST = 75

SHM_DIR = '/dev/shm'
_PORT = r'(?:fastdds|fastrtps)_port\d+'
_PORT_LOCK_LINK = re.compile(rf'^{re.escape(SHM_DIR)}/({_PORT})_el(?: \(deleted\))?$')
_SEGMENT_LOCK_LINK = re.compile(
    rf'^{re.escape(SHM_DIR)}/(?:fastdds|fastrtps)_[0-9a-f]{{16}}_el(?: \(deleted\))?$')
_MAPS_PORT = re.compile(rf'^\S+\s+\S+\s+\S+\s+\S+\s+(\d+)\s+{re.escape(SHM_DIR)}/({_PORT})(?: \(deleted\))?$')


def fd_links(fd_dir: str) -> list[str]:
    links = []
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return links
    for name in names:
        try:
            links.append(os.readlink(os.path.join(fd_dir, name)))
        except OSError:          # closed between listdir and readlink
            continue
    return links


def listening_ports(links: list[str]) -> set[str]:
    """Port segment names whose listener lock (`<segment>_el`) this process holds, from its fd links."""
    return {m.group(1) for m in map(_PORT_LOCK_LINK.match, links) if m}


def mapped_port_inodes(maps_lines) -> dict[str, set[int]]:
    """{port segment name: inodes of its mappings} from /proc/<pid>/maps lines (unlinked ones included)."""
    inodes: dict[str, set[int]] = {}
    for line in maps_lines:
        m = _MAPS_PORT.match(line.rstrip('\n'))
        if m:
            inodes.setdefault(m.group(2), set()).add(int(m.group(1)))
    return inodes


def _look(fd_dir: str, maps_path: str, shm_dir: str) -> tuple[list[str], dict[str, set[int]]]:
    """(problems, {listening port: the inodes of it this process maps}) from a full look at /proc."""
    links = fd_links(fd_dir)
    uses_shm = any(_SEGMENT_LOCK_LINK.match(link) for link in links)
    ports = listening_ports(links)
    if not ports:
        return (['shared-memory transport in use but no listening port held'] if uses_shm else []), {}
    try:
        with open(maps_path) as f:
            mapped = mapped_port_inodes(f)
    except OSError:
        return [], {}
    problems = []
    for port in sorted(ports):
        path = os.path.join(shm_dir, port)
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            problems.append(f'{path} was removed')
            continue
        except OSError:
            continue
        if current not in mapped.get(port, set()):
            problems.append(f'{path} was replaced by another process '
                            f'(this one reads the old, unlinked segment)')
    return problems, {port: mapped.get(port, set()) for port in ports}


def stranded_ports(fd_dir: str = '/proc/self/fd', maps_path: str = '/proc/self/maps',
                   shm_dir: str = SHM_DIR) -> list[str]:
    """Why this process cannot receive over Fast DDS shared memory, one entry per cause; empty when
    it can, or when it uses no Fast DDS shared memory at all (or there is no /proc to read)."""
    return _look(fd_dir, maps_path, shm_dir)[0]


class PortWatch:
    """stranded_ports() for a check every second at the cost of a stat per port: the full look at
    /proc (a few ms: the maps of a process with numpy and ONNX Runtime run to ~1000 lines) is taken
    at the first check, again when a port's file is no longer the inode this process mapped, and
    every `relook_every` checks (a participant created later, or none at all so far). `consecutive`:
    how many checks in a row (the last included) found a problem, what a caller's give-up rule reads."""

    def __init__(self, fd_dir: str = '/proc/self/fd', maps_path: str = '/proc/self/maps',
                 shm_dir: str = SHM_DIR, relook_every: int = 30):
        self.fd_dir, self.maps_path, self.shm_dir = fd_dir, maps_path, shm_dir
        self.relook_every = relook_every
        self._ports: dict[str, set[int]] = {}
        self._problems: list[str] = []
        self._checks = 0
        self.full_looks = 0
        self.consecutive = 0

    def _unchanged(self) -> bool:
        for port, inodes in self._ports.items():
            try:
                if os.stat(os.path.join(self.shm_dir, port)).st_ino not in inodes:
                    return False
            except OSError:
                return False
        return True

    def check(self) -> list[str]:
        due = self._checks % self.relook_every == 0
        self._checks += 1
        if not due and not self._problems and (not self._ports or self._unchanged()):
            self.consecutive = 0
            return []
        self.full_looks += 1
        self._problems, self._ports = _look(self.fd_dir, self.maps_path, self.shm_dir)
        self.consecutive = self.consecutive + 1 if self._problems else 0
        return self._problems


# ---------------------------------------------------------------- stale segments of dead processes
_SEGMENT = re.compile(r'^(?:fastdds|fastrtps)_[0-9a-f]{16}$')
STALE_MIN_AGE_S = 10.0     # a segment younger than this may belong to a process still creating it


def remove_stale_segments(shm_dir: str = SHM_DIR, min_age_s: float = STALE_MIN_AGE_S,
                          now: float | None = None) -> tuple[int, int]:
    """Remove the shared-memory segments of Fast DDS participants that are gone: (count, bytes).

    Each participant writes into its own segment /dev/shm/fastdds_<16 hex> (32 MB with
    config/fastdds_large_messages.xml; the pages it wrote stay in RAM) and holds an exclusive flock
    on `<segment>_el` while alive. A process killed with -9 cannot remove them and Fast DDS never
    does (its `fastdds shm clean` tool does, by hand): measured here, 1243 such segments, 5.5 GB of
    RAM in /dev/shm, after a few hundred node kills. A segment is stale when its lock file is
    missing or can be locked (nobody holds it) and it is older than min_age_s; what a live process
    holds, or a file this process may not remove, is left alone. Port segments (fastdds_port<N>)
    are left to Fast DDS, which regenerates them."""
    import fcntl
    import time
    now = time.time() if now is None else now
    removed = freed = 0
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return 0, 0
    for name in names:
        if not _SEGMENT.match(name):
            continue
        path = os.path.join(shm_dir, name)
        lock_path = path + '_el'
        try:
            st = os.stat(path)
        except OSError:
            continue
        if now - st.st_ctime < min_age_s:
            continue
        fd = None
        try:
            if os.path.exists(lock_path):
                fd = os.open(lock_path, os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue                 # held: its participant is alive
            os.remove(path)
            removed += 1
            freed += st.st_blocks * 512
            if fd is not None:
                os.remove(lock_path)
        except OSError:
            continue
        finally:
            if fd is not None:
                os.close(fd)
    return removed, freed
