"""A node started again after an unclean end, by any supervisor, gets a Fast DDS participant id of its own.

`fmdrive run` gives the nodes it restarts a participant id no process used lately (graph.py,
RESTART_PARTICIPANT_IDS says why: with the automatic id a restarted node takes the id, so the
shared-memory port, of the process that just died while its peers are still regenerating that port,
and can end up deaf). `ros2 launch` (respawn=True), systemd or a shell loop cannot do that: they
start the same command again. So the node does it itself, before rclpy creates its participant
(nodes/start.py calls `prepare`):

- each node process holds an exclusive lock on `<INSTANCE_DIR>/<domain>/<node>.lock` while it runs
  and writes "running <pid> <time>" into it; a clean end (main() returned or exited with 0, or with
  2 for a bad parameter: the participant destroyed) writes "clean". A process killed with SIGKILL,
  ended by a watchdog's _exit, crashed, or exiting with 75 to be restarted (its transport lost)
  leaves "running" behind, and the kernel drops its lock.
- the next process of that node on that domain finds "running" under a lock it can take: its
  predecessor ended uncleanly. It asks for a participant id from RESTART_PARTICIPANT_IDS (ports
  free, not handed out on this domain within PARTICIPANT_ID_REUSE_S, by any process: the hand-outs
  are kept in `<INSTANCE_DIR>/<domain>/participant_ids.json` under a lock) and points Fast DDS at a
  copy of its profile with that id (`<INSTANCE_DIR>/<domain>/<node>.fastdds.xml`), through the
  variable its distribution's Fast DDS reads (rosenv.profile_env_var).

Processes started by `fmdrive run` (SUPERVISOR_ENV set) are left alone: it gives the id itself.
A first start, a start after a clean end, another RMW, or a second live process of the same node
name (its lock held) keep the automatic id. ROS-free; Linux (flock).
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from fmdrive.graph import SUPERVISOR_ENV, next_participant_id, port_in_use, restart_profile_text, uses_fast_dds
from fmdrive.rosenv import domain_id_of, profile_file, set_profile_file

INSTANCE_DIR_ENV = 'FMDRIVE_INSTANCE_DIR'     # where the claims live (tests give their own)
INSTANCE_DIR = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'fmdrive-nodes')


@dataclass
class Instance:
    """This process's claim on its node name: held (locked) until the process ends."""
    path: Path
    fd: int
    restarted: bool         # the previous process of this node ended without a clean end
    previous: str           # what it left in the file ('running <pid> <time>', 'clean' or '')

    def clean_end(self) -> None:
        """Mark a clean end (call once the node's participant is destroyed)."""
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, b'clean\n', 0)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


def claim(domain_id: int, name: str, directory=INSTANCE_DIR) -> Instance | None:
    """Claim node `name` on `domain_id`; None when another live process holds it (or the directory
    cannot be written)."""
    folder = Path(directory) / str(int(domain_id))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f'{name}.lock'
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    previous = os.pread(fd, 256, 0).decode(errors='replace').strip()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'running {os.getpid()} {time.time():.3f}\n'.encode(), 0)
    return Instance(path, fd, previous.startswith('running'), previous)


def hand_out_id(domain_id: int, directory=INSTANCE_DIR, now: float | None = None,
                in_use=port_in_use) -> int | None:
    """A participant id for a restarted node on domain_id (graph.next_participant_id, with the ids
    handed out on this domain by any process as its history), recorded for the next caller; None
    when none is free."""
    folder = Path(directory) / str(int(domain_id))
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time() if now is None else now
    with open(folder / 'participant_ids.lock', 'a') as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        record_path = folder / 'participant_ids.json'
        try:
            given = {int(k): float(v) for k, v in json.loads(record_path.read_text()).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            given = {}
        pid = next_participant_id(domain_id, given, now, in_use)
        if pid is not None:
            given[pid] = now
            tmp = record_path.with_suffix('.tmp')
            tmp.write_text(json.dumps({str(k): v for k, v in given.items()}))
            os.replace(tmp, record_path)
        return pid


def prepare(name: str, env=None) -> tuple[Instance | None, str | None]:
    """Before rclpy.init(): claim the node name and, after an unclean end of its previous process,
    set env (default os.environ) so Fast DDS gives this one a fresh participant id.
    (claim or None, a line to log or None)."""
    env = os.environ if env is None else env
    directory = env.get(INSTANCE_DIR_ENV) or INSTANCE_DIR
    domain = domain_id_of(env)
    if env.get(SUPERVISOR_ENV) or not uses_fast_dds(env) or domain is None:
        return None, None
    instance = claim(domain, name, directory)
    if instance is None or not instance.restarted:
        return instance, None
    last_pid = (instance.previous.split()[1:2] or ['?'])[0]
    why = f'the last {name} process (pid {last_pid}) ended without a clean shutdown'
    try:
        pid = hand_out_id(domain, directory)
        text = restart_profile_text(env, pid) if pid is not None else None
    except OSError as e:
        return instance, f'{why}; the Fast DDS participant id stays automatic ({e})'
    if text is None:
        reason = ('no id of the restart range is free' if pid is None
                  else f'{profile_file(env)} is not a profile fmdrive can edit')
        return instance, f'{why}; the Fast DDS participant id stays automatic ({reason})'
    path = Path(directory) / str(domain) / f'{name}.fastdds.xml'
    path.write_text(text)
    set_profile_file(env, path)
    return instance, f'{why}: Fast DDS participant id {pid} (not the one it had; profile {path})'
