"""shm_ports: a process that Fast DDS cut off from its shared-memory listening port is recognised
from its /proc entries (fd links and maps), and one that uses no Fast DDS shared memory is left alone."""
import os
from pathlib import Path

from fmdrive.shm_ports import listening_ports, mapped_port_inodes, stranded_ports


def fake_proc(tmp_path, links, maps_lines):
    """A /proc/<pid>/fd directory of symlinks to `links` and a maps file of `maps_lines`."""
    fd_dir = tmp_path / 'fd'
    fd_dir.mkdir()
    for i, target in enumerate(links):
        os.symlink(target, fd_dir / str(i + 3))
    maps = tmp_path / 'maps'
    maps.write_text(''.join(line + '\n' for line in maps_lines))
    return str(fd_dir), str(maps)


def maps_line(inode, name, deleted=False):
    return (f'7f3c2a000000-7f3c2a00d000 rw-s 00000000 00:1a {inode}                    /dev/shm/{name}'
            + (' (deleted)' if deleted else ''))


def shm_file(shm, name) -> int:
    (shm / name).write_bytes(b'\0' * 16)
    return os.stat(shm / name).st_ino


def test_no_fast_dds_shared_memory_is_nothing_to_report(tmp_path):
    fd_dir, maps = fake_proc(tmp_path, ['/dev/null', '/tmp/x.log', 'socket:[1234]'], [])
    assert stranded_ports(fd_dir, maps, str(tmp_path)) == []


def test_a_listener_mapping_the_current_port_segment_is_healthy(tmp_path):
    shm = tmp_path / 'shm'
    shm.mkdir()
    ino = shm_file(shm, 'fastdds_port7411')
    peer = shm_file(shm, 'fastdds_port7413')
    links = ['/dev/shm/fastdds_0123456789abcdef_el', '/dev/shm/fastdds_port7411_el']
    fd_dir, maps = fake_proc(tmp_path, links, [maps_line(ino, 'fastdds_port7411'), maps_line(peer, 'fastdds_port7413'),
                                               maps_line(peer + 1000, 'fastdds_port7415', deleted=True)])
    assert listening_ports(links) == {'fastdds_port7411'}
    # a peer's port this process writes to may be unlinked (the peer died): not this process's problem
    assert stranded_ports(fd_dir, maps, str(shm)) == []


def test_a_port_segment_replaced_by_another_process_is_reported(tmp_path):
    shm = tmp_path / 'shm'
    shm.mkdir()
    current = shm_file(shm, 'fastdds_port7411')
    links = ['/dev/shm/fastdds_0123456789abcdef_el', '/dev/shm/fastdds_port7411_el (deleted)']
    fd_dir, maps = fake_proc(tmp_path, links, [maps_line(current + 1, 'fastdds_port7411', deleted=True)])
    (problem,) = stranded_ports(fd_dir, maps, str(shm))
    assert 'fastdds_port7411 was replaced by another process' in problem


def test_a_removed_port_segment_is_reported(tmp_path):
    shm = tmp_path / 'shm'
    shm.mkdir()
    links = ['/dev/shm/fastdds_port7411_el']
    fd_dir, maps = fake_proc(tmp_path, links, [maps_line(77, 'fastdds_port7411', deleted=True)])
    assert stranded_ports(fd_dir, maps, str(shm)) == [f'{shm}/fastdds_port7411 was removed']


def test_shared_memory_in_use_without_any_listening_port_is_reported(tmp_path):
    fd_dir, maps = fake_proc(tmp_path, ['/dev/shm/fastdds_0123456789abcdef_el'], [])
    assert stranded_ports(fd_dir, maps, str(tmp_path)) == ['shared-memory transport in use but no listening port held']


def test_humble_fast_dds_names_are_read_too(tmp_path):
    shm = tmp_path / 'shm'
    shm.mkdir()
    ino = shm_file(shm, 'fastrtps_port7411')
    links = ['/dev/shm/fastrtps_0123456789abcdef_el', '/dev/shm/fastrtps_port7411_el']
    fd_dir, maps = fake_proc(tmp_path, links, [maps_line(ino, 'fastrtps_port7411')])
    assert mapped_port_inodes([maps_line(ino, 'fastrtps_port7411')]) == {'fastrtps_port7411': {ino}}
    assert stranded_ports(fd_dir, maps, str(shm)) == []
    os.remove(shm / 'fastrtps_port7411')
    assert stranded_ports(fd_dir, maps, str(shm)) == [f'{shm}/fastrtps_port7411 was removed']



def test_the_watch_stats_the_ports_between_full_looks_and_looks_again_when_one_changes(tmp_path):
    from fmdrive.shm_ports import PortWatch
    shm = tmp_path / 'shm'
    shm.mkdir()
    ino = shm_file(shm, 'fastdds_port7411')
    links = ['/dev/shm/fastdds_0123456789abcdef_el', '/dev/shm/fastdds_port7411_el']
    fd_dir, maps = fake_proc(tmp_path, links, [maps_line(ino, 'fastdds_port7411')])
    watch = PortWatch(fd_dir, maps, str(shm), relook_every=30)
    assert [watch.check() for _ in range(5)] == [[]] * 5 and watch.full_looks == 1
    shm_file(shm, 'new_segment')                               # a peer re-creates the segment (made while
    os.replace(shm / 'new_segment', shm / 'fastdds_port7411')  # the old one exists: another inode)
    (problem,) = watch.check()
    assert 'replaced by another process' in problem and watch.full_looks == 2
    assert watch.check() == [problem] and watch.full_looks == 3  # a problem is looked at again each time
    assert watch.consecutive == 2                              # the give-up rule's count (nodes, fmdrive run)
    new = os.stat(shm / 'fastdds_port7411').st_ino               # the process maps the new segment (a
    Path(maps).write_text(maps_line(new, 'fastdds_port7411') + '\n')  # re-created participant): the count resets
    assert watch.check() == [] and watch.consecutive == 0


def test_the_watch_of_a_process_without_shared_memory_looks_rarely(tmp_path):
    from fmdrive.shm_ports import PortWatch
    fd_dir, maps = fake_proc(tmp_path, ['/dev/null'], [])
    watch = PortWatch(fd_dir, maps, str(tmp_path), relook_every=10)
    assert all(watch.check() == [] for _ in range(25)) and watch.full_looks == 3


def test_stale_segments_of_dead_participants_are_removed_and_live_ones_kept(tmp_path):
    """A participant killed with -9 leaves fastdds_<16 hex> (+ _el) in /dev/shm for good: removed once
    nobody holds its lock and it is not brand new; a held lock, a port, other files stay."""
    import fcntl
    import time
    from fmdrive.shm_ports import remove_stale_segments

    def segment(name, size=4096, lock=True):
        (tmp_path / name).write_bytes(b'\1' * size)
        if lock:
            (tmp_path / f'{name}_el').write_bytes(b'')
    segment('fastdds_0123456789abcdef')                  # alive: its lock held (below)
    segment('fastdds_1111111111111111', size=3 * 4096)   # dead: lock file left, nobody holds it
    segment('fastdds_2222222222222222', lock=False)      # dead: a peer's probe removed the lock file
    segment('fastrtps_3333333333333333')                 # dead, Humble's name
    segment('fastdds_port7411')                          # a port: Fast DDS's business
    (tmp_path / 'other_file').write_bytes(b'x')
    held = os.open(tmp_path / 'fastdds_0123456789abcdef_el', os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert remove_stale_segments(str(tmp_path), min_age_s=30.0) == (0, 0)      # all too young yet
        count, freed = remove_stale_segments(str(tmp_path), min_age_s=30.0, now=time.time() + 60)
    finally:
        os.close(held)
    assert count == 3 and freed >= 5 * 4096
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'fastdds_0123456789abcdef', 'fastdds_0123456789abcdef_el', 'fastdds_port7411', 'fastdds_port7411_el',
        'other_file']
    assert remove_stale_segments(str(tmp_path / 'missing')) == (0, 0)
