"""Write standard rosbag2 MCAP bags (metadata.yaml + <name>.mcap) from rclpy messages.

    with BagWriter('runs/drive1') as bag:
        bag.write('/sensors/camera/image_raw', image_msg, stamp_ns)

Messages are stored as the CDR bytes rclpy.serialization produces, so the bag holds exactly
what went over the wire. Each channel carries its full .msg schema (rosbags typestore) and the
QoS profile the topic is offered with (/tf_static and camera_info latched: transient_local,
depth 1), so `ros2 bag play` re-creates latched publishers.

Metadata version: 8 (rosbags writes 8 or 9). Version 9 serialises offered_qos_profiles as a
YAML list with enum names, which Humble's rosbag2 (0.15.x) cannot parse ("yaml-cpp: bad
conversion", ros2/rosbag2#2013); version 8 keeps the QoS as a YAML string with numeric enums,
which Humble reads (it ignores the newer keys type_description_hash and ros_distro) and Jazzy
and later read too (rosbag2 keeps backward compatibility).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from rclpy.serialization import serialize_message

from fmdrive.bags.typestore import BagError, ensure_type, msgtype_of, typestore
from fmdrive.config import QOS, TOPICS

METADATA_VERSION = 8


def is_latched_topic(topic: str) -> bool:
    """Topics whose publishers are latched (transient_local): /tf_static, camera_info and the road's
    speed limit (state, published once, needed by late joiners)."""
    return topic in (TOPICS['tf_static'], TOPICS['speed_limit']) or topic.rstrip('/').endswith('camera_info')


def default_qos_name(topic: str, qos: str = 'reliable') -> str:
    """Name of the fmdrive.config.QOS profile a topic is published with in replay/bags."""
    return 'latched' if is_latched_topic(topic) else qos


def rosbags_qos(profile: dict):
    """rosbags Qos of a profile dict like fmdrive.config.QOS['reliable']."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    infinite = QosTime(sec=2_147_483_647, nsec=4_294_967_295)  # what rclcpp writes for "none"
    return Qos(history=QosHistory.KEEP_LAST, depth=int(profile['depth']),
               reliability=QosReliability[profile['reliability'].upper()],
               durability=QosDurability[profile['durability'].upper()],
               deadline=infinite, lifespan=infinite, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=infinite, avoid_ros_namespace_conventions=False)


def _looks_like_bag(path: Path) -> bool:
    return path.is_dir() and all(p.name == 'metadata.yaml' or p.suffix == '.mcap'
                                 for p in path.iterdir())


class BagWriter:
    """A rosbag2 MCAP bag being written (a context manager; close() finishes the files)."""

    def __init__(self, path, overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise BagError(f'{self.path} exists already; choose another output or pass '
                               'overwrite=True (--overwrite)')
            if not _looks_like_bag(self.path):
                raise BagError(f'refusing to overwrite {self.path}: it is not a rosbag2 directory '
                               '(only metadata.yaml and .mcap files may be in it)')
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._store = typestore()
        self._writer = Writer(self.path, version=METADATA_VERSION,
                              storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {}   # topic -> (msgtype, rosbags Connection)
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str, qos: dict | None = None) -> None:
        """Declare a topic (done by write() on first use); qos = a fmdrive.config.QOS-style dict
        of the offered profile (default: latched for /tf_static and camera_info, else reliable)."""
        if topic in self._connections:
            if self._connections[topic][0] != msgtype:
                raise BagError(f'topic {topic} is {self._connections[topic][0]} in this bag, '
                               f'cannot also write {msgtype}')
            return
        ensure_type(self._store, msgtype)
        profile = qos or QOS[default_qos_name(topic)]
        connection = self._writer.add_connection(topic, msgtype, typestore=self._store,
                                                 offered_qos_profiles=[rosbags_qos(profile)])
        self._connections[topic] = (msgtype, connection)
        self.counts[topic] = 0

    def write(self, topic: str, msg, stamp_ns: int) -> None:
        """Write an rclpy message with bag timestamp stamp_ns (int nanoseconds)."""
        self.write_raw(topic, msgtype_of(msg), serialize_message(msg), stamp_ns)

    def write_raw(self, topic: str, msgtype: str, data: bytes, stamp_ns: int) -> None:
        """Write an already CDR-serialised message of type "pkg/msg/Type"."""
        if self._writer is None:
            raise BagError(f'bag {self.path} is closed')
        if topic not in self._connections or self._connections[topic][0] != msgtype:
            self.add_topic(topic, msgtype)
        self._writer.write(self._connections[topic][1], int(stamp_ns), data)
        self.counts[topic] += 1

    def flush(self) -> None:
        """Put what was written so far on disk as complete MCAP chunks, so a process killed
        without closing (SIGKILL, power loss) loses only what came after; `recover_bag` reads
        such a file back. (rosbags buffers a chunk of up to 1 MiB in memory otherwise.)"""
        storage = getattr(self._writer, 'storage', None)
        chunk = getattr(storage, 'chunk', None)
        if storage is None or chunk is None or not hasattr(storage, 'close_chunk'):
            return
        if chunk.msgs:
            storage.close_chunk()
        storage.bio.flush()

    def close(self) -> None:
        """Finish the MCAP file (index, summary) and write metadata.yaml."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def __enter__(self) -> 'BagWriter':
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on errors: what was written stays readable


# ---------------------------------------------------------------- recovery
def _qos_dict(offered_qos_profiles: str, topic: str) -> dict:
    """fmdrive.config.QOS-style dict of a channel's offered_qos_profiles (YAML, numeric enums or
    names); the default profile of the topic when it cannot be read."""
    import yaml
    profile = dict(QOS[default_qos_name(topic)])
    try:
        first = (yaml.safe_load(offered_qos_profiles) or [{}])[0]
    except (yaml.YAMLError, IndexError, TypeError, KeyError):
        return profile
    if not isinstance(first, dict):
        return profile
    reliability = str(first.get('reliability', '')).lower()
    durability = str(first.get('durability', '')).lower()
    if reliability in ('1', 'reliable'):
        profile['reliability'] = 'reliable'
    elif reliability in ('2', 'best_effort'):
        profile['reliability'] = 'best_effort'
    if durability in ('1', 'transient_local'):
        profile['durability'] = 'transient_local'
    elif durability in ('2', 'volatile'):
        profile['durability'] = 'volatile'
    if isinstance(first.get('depth'), int) and first['depth'] > 0:
        profile['depth'] = first['depth']
    return profile


def _register_schema(store, msgtype: str, schema_text: str) -> None:
    """Register msgtype from the ros2msg schema an MCAP channel carries (the main definition,
    then '====' separators and 'MSG: pkg/Type' dependencies), for types without a .msg here."""
    import re as _re

    from rosbags.typesys import get_types_from_msg
    parts = _re.split(r'^=+\s*$', schema_text, flags=_re.M)
    types = dict(get_types_from_msg(parts[0], msgtype))
    for part in parts[1:]:
        match = _re.match(r'\s*MSG:\s*(\S+)\s*\n', part)
        if match:
            pkg, name = match.group(1).split('/')[0], match.group(1).split('/')[-1]
            types.update(get_types_from_msg(part[match.end():], f'{pkg}/msg/{name}'))
    store.register(types)


def recover_bag(bag, output=None) -> dict:
    """A readable bag from one whose writer never closed it (recorder killed): the MCAP records
    are read one after the other up to the first damaged one, and written again as a complete
    MCAP with its summary plus metadata.yaml. output None: in place (the unfinished .mcap is
    replaced). Returns {'output', 'messages', 'topics': {topic: n}, 'complete'} where complete
    says whether the file ended cleanly (else its damaged tail, at most a chunk, was dropped)."""
    from mcap.stream_reader import StreamReader
    from mcap.records import Channel, Message, Schema

    bag = Path(bag)
    if not bag.exists():
        raise BagError(f'bag not found: {bag}')
    mcaps = [bag] if bag.is_file() else sorted(bag.glob('*.mcap'))
    if len(mcaps) != 1:
        raise BagError(f'{bag}: expected one .mcap file to recover, found {len(mcaps)}')
    source = mcaps[0]
    bag_dir = source.parent
    target = Path(output) if output is not None else bag_dir.with_name(bag_dir.name + '.recovering')
    if target.exists():
        raise BagError(f'{target} exists already; choose another output')
    schemas, channels, complete = {}, {}, False
    writer = None
    counts: dict[str, int] = {}
    try:
        with open(source, 'rb') as stream:
            try:
                for record in StreamReader(stream, skip_magic=False).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record
                    elif isinstance(record, Channel):
                        channels[record.id] = record
                    elif isinstance(record, Message) and record.channel_id in channels:
                        channel = channels[record.channel_id]
                        schema = schemas.get(channel.schema_id)
                        if schema is None:
                            continue
                        if writer is None:
                            writer = BagWriter(target)
                        if channel.topic not in writer.counts:
                            try:
                                ensure_type(writer._store, schema.name)
                            except BagError:
                                _register_schema(writer._store, schema.name,
                                                 schema.data.decode('utf-8', 'replace'))
                            writer.add_topic(channel.topic, schema.name, qos=_qos_dict(
                                channel.metadata.get('offered_qos_profiles', ''), channel.topic))
                        writer.write_raw(channel.topic, schema.name, record.data,
                                         record.log_time)
                complete = True
            except Exception:  # noqa: BLE001 - a truncated or torn tail ends the readable part
                pass
    except OSError as err:
        raise BagError(f'cannot read {source}: {err}') from None
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise BagError(f'{source}: no readable message in it (not an MCAP bag, or killed '
                       'before its first chunk reached the disk)')
    counts = dict(writer.counts)
    if output is None:  # swap the recovered files in
        new_mcap = target / f'{target.name}.mcap'
        source.unlink()
        (bag_dir / 'metadata.yaml').unlink(missing_ok=True)
        new_mcap.rename(bag_dir / f'{bag_dir.name}.mcap')
        meta = (target / 'metadata.yaml').read_text().replace(
            f'{target.name}.mcap', f'{bag_dir.name}.mcap')
        (bag_dir / 'metadata.yaml').write_text(meta)
        (target / 'metadata.yaml').unlink()
        target.rmdir()
        target = bag_dir
    return {'output': str(target), 'messages': sum(counts.values()), 'topics': counts,
            'complete': complete}
