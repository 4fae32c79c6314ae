"""Read rosbag2 MCAP bags (the directory or the .mcap file) into rclpy messages.

    bag = BagReader('runs/drive1')
    bag.topics            # {'/sensors/lidar/points': ('sensor_msgs/msg/PointCloud2', 300), ...}
    for topic, stamp_ns, msg in bag.messages(['/sensors/lidar/points']):
        ...

Messages come in bag-time order. Anything wrong with the bag raises BagError with a one-line
reason (missing path, not a bag, corrupt or truncated file, a message type not installed here).
"""
from __future__ import annotations

from pathlib import Path

from rclpy.serialization import deserialize_message

from fmdrive.bags.typestore import BagError, message_class


def _one_line(err: Exception) -> str:
    return ' '.join(str(err).split()) or type(err).__name__


class BagReader:
    """An open bag. Use as a context manager or call close()."""

    def __init__(self, path):
        from rosbags.rosbag2 import Reader
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f'bag not found: {self.path}')
        storage_path = self.path
        if self.path.is_dir() and not (self.path / 'metadata.yaml').exists():
            mcaps = sorted(self.path.glob('*.mcap'))
            if len(mcaps) != 1:
                raise BagError(f'{self.path} is not a rosbag2 bag: no metadata.yaml and '
                               f'{len(mcaps)} .mcap files in it')
            storage_path = mcaps[0]  # a bag whose metadata.yaml got lost: read the MCAP itself
        elif self.path.is_file() and self.path.suffix != '.mcap':
            raise BagError(f'{self.path} is not a rosbag2 bag: give the bag directory or its '
                           '.mcap file')
        try:
            self._reader = Reader(storage_path)
            self._reader.open()
        except Exception as err:  # rosbags raises ReaderError, but also struct/EOF/yaml errors
            raise BagError(f'cannot read bag {self.path} (corrupt or truncated?): '
                           f'{_one_line(err)}') from None
        self._types = {c.topic: c.msgtype for c in self._reader.connections}
        counts: dict[str, int] = {}
        for c in self._reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
        self.topics: dict[str, tuple[str, int]] = {
            topic: (self._types[topic], counts[topic]) for topic in self._types}
        self.message_count = sum(counts.values())
        self.start_ns = int(self._reader.start_time) if self.message_count else 0
        # rosbags reports end_time as last stamp + 1
        self.end_ns = int(self._reader.end_time) - 1 if self.message_count else 0
        self.duration_ns = self.end_ns - self.start_ns

    def _connections(self, topics):
        if topics is None:
            return self._reader.connections
        unknown = [t for t in topics if t not in self._types]
        if unknown:
            raise BagError(f'topic {", ".join(unknown)} is not in bag {self.path}; it has '
                           f'{", ".join(sorted(self._types)) or "no topics"}')
        return [c for c in self._reader.connections if c.topic in set(topics)]

    def raw_messages(self, topics=None):
        """Iterator of (topic, msgtype, stamp_ns, CDR bytes) in bag-time order."""
        connections = self._connections(topics)
        try:
            for connection, stamp_ns, data in self._reader.messages(connections=connections):
                yield connection.topic, connection.msgtype, stamp_ns, data
        except BagError:
            raise
        except Exception as err:
            raise BagError(f'bag {self.path} is corrupt: {_one_line(err)}') from None

    def messages(self, topics=None):
        """Iterator of (topic, stamp_ns, rclpy message) in bag-time order."""
        connections = self._connections(topics)
        classes = {c.topic: message_class(c.msgtype) for c in connections}  # BagError if unknown
        for topic, msgtype, stamp_ns, data in self.raw_messages(
                None if topics is None else [c.topic for c in connections]):
            try:
                msg = deserialize_message(bytes(data), classes[topic])
            except Exception as err:
                raise BagError(f'message on {topic} at {stamp_ns} in {self.path} does not '
                               f'deserialise as {msgtype}: {_one_line(err)}') from None
            yield topic, stamp_ns, msg

    def close(self) -> None:
        if getattr(self, '_reader', None) is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def __enter__(self) -> 'BagReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f'BagReader({str(self.path)!r}: {self.message_count} messages, '
                f'{self.duration_ns / 1e9:.1f} s, {len(self.topics)} topics)')
