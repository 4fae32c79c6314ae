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
    """Topics whose publishers are latched (transient_local): /tf_static and camera_info."""
    return topic == TOPICS['tf_static'] or topic.rstrip('/').endswith('camera_info')


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

    def close(self) -> None:
        """Finish the MCAP file (index, summary) and write metadata.yaml."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def __enter__(self) -> 'BagWriter':
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on errors: what was written stays readable
