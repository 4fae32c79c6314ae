"""The TF buffer of a recorded drive: /tf_static and /tf of a bag, for the offline consumers of
geometry (report, eval, calib-check, importers' checks). Nodes fill the same buffer from DDS."""
from __future__ import annotations

from fmdrive.config import TOPICS
from fmdrive.tf import TransformBuffer, stamped_transforms


def tf_buffer_from_bag(bag, fallback_extrinsics=None, dynamic: bool = True) -> TransformBuffer:
    """A TransformBuffer of the bag's /tf_static (and /tf when dynamic) with the whole /tf history
    kept; `fallback_extrinsics` (an Extrinsics) fills in children nothing in the bag publishes.
    `bag` is a path or an open fmdrive.bags.reader.BagReader."""
    from fmdrive.bags.reader import BagReader
    reader = bag if isinstance(bag, BagReader) else BagReader(bag)
    try:
        buf = TransformBuffer(dynamic_buffer_ns=reader.duration_ns + 10**10)
        topics = [t for t in (TOPICS['tf_static'], *((TOPICS['tf'],) if dynamic else ())) if t in reader.topics]
        for topic, _, msg in reader.messages(topics) if topics else ():
            buf.add_transforms(stamped_transforms(msg), static=topic == TOPICS['tf_static'])
        if fallback_extrinsics is not None:
            buf.add_extrinsics(fallback_extrinsics)
        return buf
    finally:
        if reader is not bag:
            reader.close()
