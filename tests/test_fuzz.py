"""Fuzzing (issue 12): no message a sensor, a bag or another node can send crashes, hangs or
confuses a node. Hypothesis generates messages of each input topic's type for every node of the
graph (lidar_encoder, fusion, planner, visualizer, and the /tf and /tf_static every TF user reads):
point clouds with random field lists, datatypes, offsets, steps, sizes and NaN/inf/huge values;
images with odd encodings and inconsistent sizes; camera_info with any intrinsics and distortion;
odometry with NaN and non-unit quaternions; object, lane, scene and plan messages of any size and
content; instructions of random unicode; TF with empty, equal or looping frame ids; headers with
any stamp (0, max, backwards, nanosec >= 1e9) and frame id.

Each message goes through serialize_message/deserialize_message (what DDS delivers) and then into
the node exactly as a DDS callback would: for queued topics `node._handle(topic, handler, msg)`
(what the worker thread runs), for the others the subscription's own callback. The nodes are real
rclpy nodes in this process, not spun: nothing else touches them. For every message:

1. no exception escapes the message path;
2. `_internal_errors` stays 0: bad input must be recognised as bad input (BAD_INPUT, counted in
   `_inputs[topic].bad`), an unexpected exception inside a handler is a bug even though the base
   class catches it (the failure shows its traceback);
3. it is handled within HANG_S (10 s; a hang);
4. a queued message ends either as exactly one output (`outputs`, one per published result) or as
   one counted bad input, never silently;
5. what the node publishes for it has no NaN/inf (a controller or RViz must never get them).

Messages of an input the node only stores (odometry, lanes, camera_info, TF, the visualizer's cloud,
objects and plan, the planner's instruction) are each followed by a good "trigger" message of the
node's main input at the same stamp, so the stored garbage is actually used (the visualizer decodes
the cloud and draws the objects when an image comes). After all examples of a topic the node must
still answer good input with the right result (the LiDAR node finds the car ahead, fusion tracks
it, the planner plans, the visualizer draws an overlay).

Examples per topic: FMDRIVE_FUZZ_EXAMPLES (default 1000: 17 topic inputs, about 8 minutes for the
module on 2 busy cores, time linear in it; the NaN test re-fuzzes, FMDRIVE_FUZZ_FINITE_EXAMPLES, only
where the crash test saw NaN/inf). The examples are derandomised (the same every run, for CI) unless
FMDRIVE_FUZZ_SEED is given. Node state carries over from one example to the next, as in a real stream,
so a shrunk example may need the ones before it: a failure also lists the last messages the node got.
The longer run (20x; before a release, or after touching msgs.py, tf.py or a node):

    FMDRIVE_FUZZ_EXAMPLES=20000 FMDRIVE_FUZZ_SEED=1 python -m pytest -q --timeout 0 tests/test_fuzz.py

or `scripts/fuzz_nodes.sh [EXAMPLES] [SEED]`, which does the same.
"""
from __future__ import annotations

import array
import collections
import functools
import math
import os
import threading
import time
import traceback

import numpy as np
import pytest

hypothesis = pytest.importorskip('hypothesis')
from hypothesis import HealthCheck, Phase, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fmdrive import config  # noqa: E402

T = config.TOPICS
EXAMPLES = int(os.environ.get('FMDRIVE_FUZZ_EXAMPLES', '1000'))
SEED = os.environ.get('FMDRIVE_FUZZ_SEED')
FINITE_EXAMPLES = int(os.environ.get('FMDRIVE_FUZZ_FINITE_EXAMPLES', str(max(100, EXAMPLES // 5))))
HANG_S = float(os.environ.get('FMDRIVE_FUZZ_HANG_S', '10'))
STAMP0 = 1_700_000_000_000_000_000          # a plausible sensor stamp; good inputs are near it
NAN, INF = math.nan, math.inf
FLT32_MAX = 3.4028234663852886e38

def fuzz_settings(examples: int):
    """Reproducible (derandomised unless FMDRIVE_FUZZ_SEED), no example database, no deadline (the
    hang bound is ours), slow generation is fine."""
    config_ = settings(max_examples=examples, deadline=None, derandomize=SEED is None, database=None,
                       suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                       phases=[Phase.explicit, Phase.generate, Phase.shrink], print_blob=True)

    def decorate(test):
        test = config_(test)
        return hypothesis.seed(int(SEED))(test) if SEED is not None else test
    return decorate


# ====================================================================== strategies
# Strategy objects are made once and reused (functools.cache): hypothesis validates each new one,
# which would otherwise cost more than running the node.
_INDEX = [st.integers(0, n - 1) for n in range(1, 12)]
ANY_U32 = st.integers(0, 2**32 - 1)


def pick(draw, *options):
    """One of the options (plain values, or strategies to draw from), uniformly; shrinks to the first."""
    option = options[draw(_INDEX[len(options) - 1])]
    return draw(option) if isinstance(option, st.SearchStrategy) else option


@functools.cache
def floats64(lo=-1e3, hi=1e3):
    """Plausible values most of the time, then every kind of edge a float64 field can carry."""
    return st.one_of(
        st.floats(lo, hi),
        st.sampled_from([0.0, -0.0, NAN, INF, -INF, 1e308, -1e308, 5e-324, 1e-12, 1e12, -1e12]),
        st.floats(allow_nan=True, allow_infinity=True))


@functools.cache
def floats32(lo=-1e3, hi=1e3):
    """The same for float32 fields (the message setters refuse finite values beyond float32)."""
    return st.one_of(
        st.floats(lo, hi, width=32),
        st.sampled_from([0.0, -0.0, NAN, INF, -INF, FLT32_MAX, -FLT32_MAX, 1e-45, 1e-12, 1e12, -1e12]),
        st.floats(width=32, allow_nan=True, allow_infinity=True))


@functools.cache
def near_stamp_ns():
    return st.integers(STAMP0 - 2 * 10**9, STAMP0 + 2 * 10**9)


@functools.cache
@st.composite
def stamps(draw):
    """builtin_interfaces/Time: near STAMP0 (so triggers and buffers match), or any edge."""
    from builtin_interfaces.msg import Time
    kind = draw(st.integers(0, 9))
    if kind < 6:
        ns = draw(near_stamp_ns())
        return Time(sec=ns // 10**9, nanosec=ns % 10**9)
    sec = draw(st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, -2**31]), st.integers(-2**31, 2**31 - 1)))
    nanosec = draw(st.one_of(st.sampled_from([0, 999_999_999, 10**9, 2**32 - 1]), st.integers(0, 2**32 - 1)))
    return Time(sec=sec, nanosec=nanosec)


FRAME_IDS = ['', 'lidar', 'base_link', 'camera_optical', 'odom', 'map', '/lidar', 'base_link/', 'velodyne',
             'camera', ' ', 'lidar ']


@functools.cache
def frame_ids():
    return st.one_of(st.sampled_from(FRAME_IDS), st.text(max_size=20))


@functools.cache
@st.composite
def headers(draw):
    from std_msgs.msg import Header
    return Header(stamp=draw(stamps()), frame_id=draw(frame_ids()))


@functools.cache
def short_text(max_size=30):
    return st.one_of(st.sampled_from(['', 'car', 'pedestrian', 'cyclist', 'cone', 'unknown', 'lidar',
                                      'shared', 'ok', 'Car', 'truck']),
                     st.text(max_size=max_size))


@functools.cache
@st.composite
def points(draw, lo=-100.0, hi=100.0):
    from geometry_msgs.msg import Point
    return Point(x=draw(floats64(lo, hi)), y=draw(floats64(lo, hi)), z=draw(floats64(-5, 5)))


@functools.cache
@st.composite
def vectors(draw, lo=-30.0, hi=30.0):
    from geometry_msgs.msg import Vector3
    return Vector3(x=draw(floats64(lo, hi)), y=draw(floats64(lo, hi)), z=draw(floats64(lo, hi)))


@functools.cache
@st.composite
def quaternions(draw):
    """Unit (a yaw), zero, non-unit, NaN/inf or anything."""
    from geometry_msgs.msg import Quaternion
    kind = draw(st.integers(0, 4))
    if kind <= 1:
        yaw = draw(st.floats(-7, 7))
        return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))
    if kind == 2:
        return Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)
    if kind == 3:
        x, y, z, w = (draw(st.floats(-1, 1)) for _ in range(4))
        n = math.sqrt(x * x + y * y + z * z + w * w)
        if n > 1e-6 and draw(st.booleans()):
            x, y, z, w = x / n, y / n, z / n, w / n          # a unit quaternion with roll and pitch
        return Quaternion(x=x, y=y, z=z, w=w)
    return Quaternion(x=draw(floats64(-2, 2)), y=draw(floats64(-2, 2)), z=draw(floats64(-2, 2)),
                      w=draw(floats64(-2, 2)))


@functools.cache
@st.composite
def poses(draw, lo=-200.0, hi=200.0):
    from geometry_msgs.msg import Pose
    return Pose(position=draw(points(lo, hi)), orientation=draw(quaternions()))


@functools.cache
@st.composite
def sizes(draw, small, large):
    """A length: up to `small` nine times in ten, up to `large` otherwise (big messages are slow)."""
    return draw(st.integers(0, large if draw(st.integers(0, 9)) == 9 else small))


# ---------------------------------------------------------------------- sensor messages
POINT_FIELD_NAMES = ['x', 'y', 'z', 'intensity', 'ring', 't', 'time', 'rgb', 'reflectivity', 'X', '']


@functools.cache
@st.composite
def point_fields(draw):
    """A PointCloud2 field list: the usual layouts (x/y/z/intensity[/ring]) or anything."""
    from sensor_msgs.msg import PointField
    kind = draw(st.integers(0, 3))
    if kind == 0:   # the common packed layout, datatype possibly float64 or wrong
        dt = draw(st.sampled_from([7, 7, 7, 8, 1, 2, 3, 4, 5, 6, 0, 9]))
        size = 8 if dt == 8 else 4
        names = ['x', 'y', 'z', 'intensity'] + (['ring'] if draw(st.booleans()) else [])
        return [PointField(name=n, offset=i * size, datatype=dt if n != 'ring' else 4, count=1)
                for i, n in enumerate(names)]
    n = draw(st.integers(0, 7))
    out = []
    for _ in range(n):
        out.append(PointField(
            name=draw(st.one_of(st.sampled_from(POINT_FIELD_NAMES), st.text(max_size=8))),
            offset=draw(st.one_of(st.integers(0, 40), st.sampled_from([2**32 - 1, 2**31]))),
            datatype=draw(st.one_of(st.integers(0, 9), st.integers(0, 255))),
            count=draw(st.integers(0, 3))))
    if kind == 1:   # make sure x, y, z are there (so decoding gets past the first check)
        have = {f.name for f in out}
        for i, name in enumerate('xyz'):
            if name not in have:
                out.append(PointField(name=name, offset=4 * i, datatype=7, count=1))
    return out


def cloud_values(rng, n, kind):
    """n float32 values: plausible LiDAR coordinates, with NaN/inf, huge, zeros or random bits."""
    if kind == 'bytes':
        return rng.integers(0, 256, 4 * n, dtype=np.uint8).view(np.float32)
    scale = {'near': 5.0, 'road': 30.0, 'far': 1e4, 'huge': 1e38, 'zeros': 0.0, 'nan': 30.0}[kind]
    v = (rng.normal(0.0, 1.0, n) * scale).astype(np.float32)
    if kind in ('nan', 'road'):
        bad = rng.random(n) < (0.3 if kind == 'nan' else 0.02)
        v[bad] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), bad.sum())
    return v


@functools.cache
@st.composite
def pointclouds(draw):
    from sensor_msgs.msg import PointCloud2, PointField
    msg = PointCloud2(header=draw(headers()))
    msg.fields = draw(point_fields())
    used = max((f.offset + 8 for f in msg.fields if f.offset < 64), default=16)
    msg.is_bigendian = draw(st.booleans())
    msg.is_dense = draw(st.booleans())
    if draw(st.booleans()):   # a consistent header (the values are what is odd), so the detector runs
        size = pick(draw, 4, 4, 4, 8)
        names = ['x', 'y', 'z', 'intensity', 'ring'][:pick(draw, 3, 4, 4, 5)]
        float_type = PointField.FLOAT32 if size == 4 else PointField.FLOAT64
        msg.fields = [PointField(name=n, offset=i * size, count=1,
                                 datatype=float_type if n != 'ring' else PointField.UINT32)
                      for i, n in enumerate(names)]
        msg.point_step = size * len(names)
        msg.height = pick(draw, 1, 1, 1, st.integers(0, 4))
        msg.width = draw(sizes(400, 4000))
        msg.row_step = msg.width * msg.point_step
        length = msg.row_step * msg.height
    else:
        point_step = pick(draw, used - (used % 4), used, st.integers(0, 48), 2**32 - 1, 1)
        msg.height = pick(draw, 1, 1, st.integers(0, 8), 2**32 - 1)
        msg.width = pick(draw, sizes(300, 3000), sizes(300, 3000), sizes(300, 3000), 2**32 - 1, 2**31)
        consistent = msg.width * point_step + pick(draw, 0, 0, 0, 4, 3)
        msg.row_step = pick(draw, consistent, consistent, 0, ANY_U32) if consistent < 2**32 else draw(ANY_U32)
        msg.point_step = point_step
        need = msg.row_step * msg.height
        length = pick(draw, need, need, need, st.integers(0, 4096), max(need - 1, 0), need + 5)
    length = min(length, 1 << 20)                      # a bigger claim needs no bigger data to be wrong
    rng = np.random.default_rng(draw(ANY_U32))
    kind = draw(st.sampled_from(['near', 'road', 'road', 'far', 'huge', 'zeros', 'nan', 'bytes']))
    data = cloud_values(rng, (length + 3) // 4, kind).tobytes()[:length]
    msg.data = array.array('B', data)
    return msg


IMAGE_ENCODINGS = ['rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8', 'mono16', 'yuv422', 'yuv422_yuy2',
                   'bayer_rggb8', 'bayer_bggr16', '16UC1', '32FC1', '8UC3', 'RGB8', 'Bgr8', 'rgb16', '',
                   'jpeg']
CHANNELS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'rgba8': 4, 'bgra8': 4, 'mono16': 2, 'yuv422': 2, '16UC1': 2,
            '32FC1': 4, '8UC3': 3, 'rgb16': 6}


@functools.cache
@st.composite
def images(draw):
    from sensor_msgs.msg import Image
    msg = Image(header=draw(headers()))
    if draw(st.booleans()):   # a consistent image of a supported encoding: only the pixels are random
        msg.encoding = pick(draw, 'rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8')
        msg.width, msg.height = draw(sizes(64, 640)) + 1, draw(sizes(48, 360)) + 1
        msg.step = msg.width * CHANNELS[msg.encoding] + pick(draw, 0, 0, 0, 2, 64)
        rng = np.random.default_rng(draw(ANY_U32))
        msg.data = array.array('B', rng.integers(0, 256, msg.step * msg.height, dtype=np.uint8).tobytes())
        return msg
    msg.encoding = pick(draw, st.sampled_from(IMAGE_ENCODINGS), st.sampled_from(IMAGE_ENCODINGS),
                        st.text(max_size=12))
    msg.width = pick(draw, sizes(48, 700), sizes(48, 700), sizes(48, 700), 2**32 - 1, 2**31)
    msg.height = pick(draw, sizes(32, 400), sizes(32, 400), sizes(32, 400), 2**32 - 1, 2**31)
    channels = CHANNELS.get(msg.encoding.lower()) or draw(st.integers(1, 4))
    consistent = msg.width * channels + pick(draw, 0, 0, 0, 1, 3, 64)
    msg.step = pick(draw, consistent, consistent, st.integers(0, 4096), 0, 2**32 - 1) \
        if consistent < 2**32 else draw(ANY_U32)
    msg.is_bigendian = pick(draw, 0, 1, 255)
    need = msg.step * msg.height
    length = min(pick(draw, need, need, st.integers(0, 4096), max(need - 1, 0)), 1 << 20)
    rng = np.random.default_rng(draw(ANY_U32))
    msg.data = array.array('B', rng.integers(0, 256, length, dtype=np.uint8).tobytes())
    return msg


@functools.cache
@st.composite
def camera_infos(draw):
    from sensor_msgs.msg import CameraInfo
    msg = CameraInfo(header=draw(headers()))
    if draw(st.booleans()):   # a camera_info the model accepts, with odd but valid numbers
        msg.width, msg.height = draw(st.integers(1, 4000)), draw(st.integers(1, 4000))
        msg.distortion_model, counts = pick(draw, ('plumb_bob', (0, 4, 5)), ('equidistant', (4,)),
                                            ('rational_polynomial', (0, 4, 5, 6, 7, 8)))
        n = pick(draw, *counts)
        msg.d = [pick(draw, st.floats(-1, 1), st.floats(-1e3, 1e3), 0.0, 1e-9) for _ in range(n)]
        fx, fy = draw(st.floats(1e-3, 1e6)), draw(st.floats(1e-3, 1e6))
        cx, cy = draw(st.floats(-1e4, 1e4)), draw(st.floats(-1e4, 1e4))
        msg.k = [fx, draw(st.floats(-1e3, 1e3)), cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return msg
    msg.width = draw(st.one_of(st.sampled_from([640, 1280, 64]), st.integers(0, 4000), st.just(2**32 - 1)))
    msg.height = draw(st.one_of(st.sampled_from([360, 720, 48]), st.integers(0, 4000), st.just(2**32 - 1)))
    msg.distortion_model = draw(st.one_of(
        st.sampled_from(['plumb_bob', 'rational_polynomial', 'equidistant', '', 'fisheye', 'PLUMB_BOB']),
        st.text(max_size=20)))
    msg.d = draw(st.lists(floats64(-1, 1), max_size=draw(st.sampled_from([0, 5, 8, 14]))))
    kind = draw(st.integers(0, 2))
    if kind < 2:   # a pinhole K with edges in its entries
        fx, fy = draw(floats64(-2000, 4000)), draw(floats64(-2000, 4000))
        cx, cy = draw(floats64(-100, 2000)), draw(floats64(-100, 2000))
        skew = draw(st.one_of(st.just(0.0), floats64(-10, 10)))
        msg.k = [fx, skew, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        if kind == 1:
            msg.k[8] = draw(floats64(-2, 2))
    else:
        msg.k = draw(st.lists(floats64(), min_size=9, max_size=9))
    msg.r = draw(st.one_of(st.just([1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]), st.just([0.0] * 9),
                           st.lists(floats64(-2, 2), min_size=9, max_size=9)))
    msg.p = draw(st.one_of(st.just([0.0] * 12), st.just([*msg.k[:3], 0.0, *msg.k[3:6], 0.0, *msg.k[6:], 0.0]),
                           st.lists(floats64(), min_size=12, max_size=12)))
    msg.binning_x, msg.binning_y = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 4))
    return msg


@functools.cache
@st.composite
def odometries(draw):
    from nav_msgs.msg import Odometry
    msg = Odometry(header=draw(headers()), child_frame_id=draw(frame_ids()))
    msg.pose.pose = draw(poses())
    msg.twist.twist.linear = draw(vectors(-40, 40))
    msg.twist.twist.angular = draw(vectors(-2, 2))
    if draw(st.booleans()):
        msg.pose.covariance = draw(st.lists(floats64(), min_size=36, max_size=36))
    return msg


# ---------------------------------------------------------------------- fmdrive_msgs
# Big arrays of objects, lanes and poses are made with numpy from a drawn seed (plausible values,
# cheap); the few values that matter are drawn by hypothesis on top ("poison": an edge value put
# into one field of one element), so a failure shrinks to the element and value that cause it.
EDGES64 = [NAN, INF, -INF, 1e308, -1e308, 0.0, -0.0, 5e-324, 1e12, -1e12]
EDGES32 = [NAN, INF, -INF, FLT32_MAX, -FLT32_MAX, 0.0, -0.0, 1e-45, 1e12, -1e12]
LABELS = ['car', 'pedestrian', 'cyclist', 'cone', 'unknown', '', 'truck', 'Car']
OBJECT_FIELDS = ['center.x', 'center.y', 'center.z', 'size.x', 'size.y', 'size.z', 'yaw_rad', 'score',
                 'velocity.x', 'velocity.y', 'velocity.z', 'box2d', 'embedding']
FLOAT32_FIELDS = {'yaw_rad', 'score', 'width_m', 'box2d', 'embedding'}


def set_path(msg, path: str, value):
    """msg.<a>.<b> = value (float32 fields get float32 edge values; arrays get it in their first slot)."""
    *parents, leaf = path.split('.')
    for name in parents:
        msg = getattr(msg, name)
    current = getattr(msg, leaf)
    if isinstance(current, (float, int)) and not isinstance(current, bool):
        setattr(msg, leaf, value)
    elif len(current):
        current[0] = value


@st.composite
def poison(draw, n_elements: int, fields: list, max_size=3):
    """[(element index, field path, edge value)]: what a bad sensor, bag or node puts in a message."""
    if n_elements == 0:
        return []
    items = draw(st.lists(st.tuples(st.integers(0, n_elements - 1), st.sampled_from(fields),
                                    st.integers(0, len(EDGES64) - 1)), max_size=max_size))
    return [(i, f, (EDGES32 if f.split('.')[-1] in FLOAT32_FIELDS else EDGES64)[k]) for i, f, k in items]


def bulk_objects(rng, n: int) -> list:
    """n plausible detections/tracks around the car (base_link)."""
    from fmdrive_msgs.msg import Object
    from geometry_msgs.msg import Point, Vector3
    xyz = np.c_[rng.uniform(-60, 80, n), rng.uniform(-20, 20, n), rng.uniform(-1, 2, n)]
    lwh = np.abs(rng.normal([4.0, 1.8, 1.5], [2.0, 0.6, 0.5], (n, 3)))
    vel = rng.normal(0, 8, (n, 3))
    out = []
    for k in range(n):
        obj = Object(id=int(rng.integers(0, 40)), label=LABELS[int(rng.integers(0, len(LABELS)))],
                     score=float(rng.random()), has_box2d=bool(rng.random() < 0.2), has_box3d=True,
                     center=Point(x=xyz[k, 0], y=xyz[k, 1], z=xyz[k, 2]),
                     size=Vector3(x=lwh[k, 0], y=lwh[k, 1], z=lwh[k, 2]), yaw_rad=float(rng.uniform(-4, 4)),
                     velocity=Vector3(x=vel[k, 0], y=vel[k, 1], z=0.0))
        obj.box2d = [10.0, 10.0, 60.0, 50.0]
        if rng.random() < 0.1:
            obj.embedding = array.array('f', rng.normal(0, 1, 16).astype(np.float32).tobytes())
        out.append(obj)
    return out


@functools.cache
@st.composite
def objects(draw):
    """One object with every field drawn (any value, any string)."""
    from fmdrive_msgs.msg import Object
    obj = Object(id=draw(st.one_of(st.integers(0, 50), st.just(2**32 - 1))), label=draw(short_text()),
                 score=draw(floats32(0, 1)), has_box2d=draw(st.booleans()), has_box3d=draw(st.booleans()),
                 center=draw(points(-80, 80)), size=draw(vectors(-1, 12)), yaw_rad=draw(floats32(-7, 7)),
                 velocity=draw(vectors(-40, 40)), embedding_space=draw(short_text(10)))
    obj.box2d = draw(st.lists(floats32(-100, 2000), min_size=4, max_size=4))
    embedding_size = draw(st.sampled_from([0, 0, 8, 64]))
    obj.embedding = array.array('f', draw(st.lists(floats32(), max_size=embedding_size)))
    return obj


@functools.cache
@st.composite
def object_lists(draw, small=8, large=250):
    """A few fully drawn objects, then plausible ones (sometimes very many) with poison in them."""
    drawn = draw(st.lists(objects(), max_size=3))
    bulk = bulk_objects(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), draw(sizes(small, large)))
    for i, path, value in draw(poison(len(bulk), OBJECT_FIELDS)):
        set_path(bulk[i], path, value)
    return drawn + bulk


@functools.cache
@st.composite
def object_arrays(draw):
    from fmdrive_msgs.msg import ObjectArray
    return ObjectArray(header=draw(headers()), source=draw(short_text()), objects=draw(object_lists()))


def bulk_lane(rng, offset: int, n: int):
    """A plausible lane: a gently curving centreline ahead, ordered along x."""
    from fmdrive_msgs.msg import Lane
    from geometry_msgs.msg import Point
    x = np.cumsum(np.abs(rng.normal(2.0, 1.0, n))) - 10.0
    y = 3.5 * offset + rng.normal(0, 0.5) + rng.normal(0, 1e-3) * x * x
    return Lane(offset=offset, width_m=float(rng.uniform(2.5, 4.0)),
                centerline=[Point(x=float(a), y=float(b), z=0.0) for a, b in zip(x, y)])


@functools.cache
@st.composite
def lanes(draw):
    """A lane with every value drawn: any offset and width, centrelines of any shape (unordered,
    repeated points, NaN)."""
    from fmdrive_msgs.msg import Lane
    return Lane(offset=draw(st.integers(-128, 127)), width_m=draw(floats32(-1, 8)),
                centerline=draw(st.lists(points(), max_size=draw(st.sampled_from([0, 1, 2, 5, 12])))))


@functools.cache
@st.composite
def lane_lists(draw):
    drawn = draw(st.lists(lanes(), max_size=2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bulk = [bulk_lane(rng, int(rng.integers(-2, 3)), draw(sizes(40, 1000)))
            for _ in range(draw(sizes(3, 12)))]
    lane_fields = ['width_m', 'centerline.x', 'centerline.y', 'centerline.z']
    for i, path, value in draw(poison(len(bulk), lane_fields)):
        if path == 'width_m':
            bulk[i].width_m = value
        elif bulk[i].centerline:
            point = bulk[i].centerline[draw(st.integers(0, len(bulk[i].centerline) - 1))]
            setattr(point, path[-1], value)
    return drawn + bulk


@functools.cache
@st.composite
def lane_arrays(draw):
    from fmdrive_msgs.msg import LaneArray
    return LaneArray(header=draw(headers()), source=draw(short_text()), lanes=draw(lane_lists()))


@functools.cache
@st.composite
def scene_descriptions(draw):
    from fmdrive_msgs.msg import SceneDescription
    return SceneDescription(
        header=draw(headers()), ego_pose=draw(poses()), ego_speed_mps=draw(floats32(-5, 40)),
        ego_yaw_rate_rps=draw(floats32(-2, 2)), speed_limit_mps=draw(floats32(-5, 60)),
        objects=draw(object_lists(8, 150)), lanes=draw(lane_lists()), text=draw(st.text(max_size=200)))


@functools.cache
@st.composite
def plans(draw):
    """A plan: plausible poses (or a few drawn ones) with poison, time and speed arrays of the same or
    any other length."""
    from fmdrive_msgs.msg import Plan
    from geometry_msgs.msg import Pose
    msg = Plan(header=draw(headers()), source=draw(short_text()), status=draw(short_text(60)),
               deadline_met=draw(st.booleans()), cost=draw(floats32()), planning_time_ms=draw(floats32()))
    if draw(st.integers(0, 3)) == 0:
        msg.poses = draw(st.lists(poses(), max_size=8))
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        n = draw(sizes(60, 3000))
        x0, y0, v = rng.uniform(-100, 100), rng.uniform(-100, 100), rng.uniform(0, 20)
        t = np.linspace(0, 6, n)
        msg.poses = [Pose() for _ in range(n)]
        for k, pose in enumerate(msg.poses):
            pose.position.x, pose.position.y = x0 + v * t[k], y0
            pose.orientation.w = 1.0
        for i, path, value in draw(poison(n, ['position.x', 'position.y', 'position.z', 'orientation.z',
                                               'orientation.w'])):
            set_path(msg.poses[i], path, value)
    n = len(msg.poses)
    m = draw(st.one_of(st.just(n), st.just(n), st.integers(0, 80)))
    t = np.linspace(0, 6, m, dtype=np.float32)
    speeds = np.full(draw(st.one_of(st.just(n), st.just(n), st.integers(0, 80))), 5.0, np.float32)
    for arr in (t, speeds):
        for i, _, value in draw(poison(len(arr), ['t'], 2)):
            arr[i] = np.float32(value if abs(value) <= FLT32_MAX or not math.isfinite(value) else np.inf)
    msg.time_from_start_s = array.array('f', t.tobytes())
    msg.speeds_mps = array.array('f', speeds.tobytes())
    return msg


@functools.cache
@st.composite
def strings(draw):
    from std_msgs.msg import String
    return String(data=draw(st.one_of(st.text(max_size=60), st.text(max_size=60),
                                      st.text(min_size=1000, max_size=10_000),
                                      st.sampled_from(['stop', 'change lane left', 'x' * 10_000, '\x00',
                                                       'overtake \U0001F697', '\u202e\u0000\ud7ff']))))


@functools.cache
@st.composite
def tf_messages(draw):
    from geometry_msgs.msg import Transform, TransformStamped
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage
    n = draw(sizes(4, 20))
    out = []
    for _ in range(n):
        parent = draw(frame_ids())
        child = draw(st.one_of(frame_ids(), st.just(parent)))
        out.append(TransformStamped(
            header=Header(stamp=draw(stamps()), frame_id=parent), child_frame_id=child,
            transform=Transform(translation=draw(vectors(-5, 5)), rotation=draw(quaternions()))))
    return TFMessage(transforms=out)


@functools.cache
@st.composite
def speed_limits(draw):
    from std_msgs.msg import Float32
    return Float32(data=draw(floats32(0, 70)))


STRATEGIES = {     # message type -> strategy; every input type of the graph must be here
    'sensor_msgs/msg/PointCloud2': pointclouds(),
    'sensor_msgs/msg/Image': images(),
    'sensor_msgs/msg/CameraInfo': camera_infos(),
    'nav_msgs/msg/Odometry': odometries(),
    'fmdrive_msgs/msg/ObjectArray': object_arrays(),
    'fmdrive_msgs/msg/LaneArray': lane_arrays(),
    'fmdrive_msgs/msg/SceneDescription': scene_descriptions(),
    'fmdrive_msgs/msg/Plan': plans(),
    'std_msgs/msg/String': strings(),
    'tf2_msgs/msg/TFMessage': tf_messages(),
    'std_msgs/msg/Float32': speed_limits(),
}


def type_name(msg_type) -> str:
    module = msg_type.__module__.split('.')
    return f'{module[0]}/msg/{msg_type.__name__}'


# ====================================================================== good inputs
def good_stamp(ns):
    from fmdrive.msgs import ns_to_stamp
    return ns_to_stamp(ns)


def good_cloud(stamp, n_ground=400, n_car=300):
    """Flat ground and the rear face + roof of a car 12 m ahead, in the lidar frame (1.9 m up)."""
    from fmdrive.msgs import xyzi_to_pointcloud2
    rng = np.random.default_rng(1)
    ground = np.c_[rng.uniform(2, 30, n_ground), rng.uniform(-8, 8, n_ground), np.full(n_ground, -1.9),
                   np.full(n_ground, 10)]
    car = np.c_[rng.uniform(11, 15.5, 4 * n_car), rng.uniform(-0.95, 0.95, 4 * n_car),
                rng.uniform(-1.9, -0.4, 4 * n_car), np.full(4 * n_car, 60)]
    car = car[(car[:, 0] < 11.3) | (car[:, 2] > -0.5)][:n_car]
    msg = xyzi_to_pointcloud2(np.vstack([ground, car]).astype(np.float32), 0, 'lidar')
    msg.header.stamp = stamp
    return msg


def good_objects(stamp, x=12.0):
    from fmdrive.msgs import objects_to_msg
    from fmdrive.objects import Object3D
    msg = objects_to_msg([Object3D(center=[x, 0.0, 0.75], size=[4.5, 1.9, 1.5], label='car', score=0.9)],
                         0, 'base_link', 'lidar_classical')
    msg.header.stamp = stamp
    return msg


def good_scene(stamp):
    from fmdrive.msgs import scene_to_msg
    from fmdrive.objects import EgoState, Lane, Object3D, Scene
    centerline = np.c_[np.linspace(-10, 80, 46), np.zeros(46), np.zeros(46)]
    scene = Scene(stamp_ns=0, ego=EgoState(speed_mps=8.0), speed_limit_mps=13.9, text='a car ahead',
                  objects=[Object3D(center=[30.0, 0.0, 0.75], size=[4.5, 1.9, 1.5], label='car', id=1)],
                  lanes=[Lane(0, 3.5, centerline), Lane(1, 3.5, centerline + [0, 3.5, 0])])
    msg = scene_to_msg(scene)
    msg.header.stamp = stamp
    return msg


def good_image(stamp, width=64, height=48):
    from fmdrive.msgs import rgb_to_image
    msg = rgb_to_image(np.full((height, width, 3), 90, np.uint8), 0, 'camera_optical')
    msg.header.stamp = stamp
    return msg


def good_camera_info(stamp):
    from fmdrive.calibration.camera_model import CameraModel
    from fmdrive.msgs import fields_to_camera_info
    msg = fields_to_camera_info(CameraModel.from_yaml(config.CAMERA_INFO_FILE).to_camera_info_fields(), 0)
    msg.header.stamp = stamp
    return msg


def good_tf_static(stamp):
    from fmdrive.calibration.extrinsics import load_extrinsics
    from fmdrive.msgs import transforms_to_tf
    ex = load_extrinsics(config.EXTRINSICS_FILE)
    msg = transforms_to_tf([(ex.frame_id, child, T) for child, T in ex.items()], 0)
    for tf in msg.transforms:
        tf.header.stamp = stamp
    return msg


def good_odometry(stamp_ns, speed_mps=5.0):
    from fmdrive.msgs import ego_to_odometry
    from fmdrive.objects import EgoState
    return ego_to_odometry(stamp_ns, EgoState(x=speed_mps * (stamp_ns - STAMP0) / 1e9, speed_mps=speed_mps))


# the main (queued) input of each node, and the good message of it that follows a stored input
MAIN_INPUT = {'lidar_encoder': T['points'], 'fusion': T['lidar_objects'], 'planner': T['scene'],
              'visualizer': T['image']}
TRIGGERS = {'lidar_encoder': lambda stamp: good_cloud(stamp, 150, 100), 'fusion': good_objects,
            'planner': good_scene, 'visualizer': good_image}


# ====================================================================== the nodes, and feeding them
class NodeFault(AssertionError):
    """A node did something no input may make it do (the subclasses say what; xfail marks name one)."""


class InternalError(NodeFault):
    """An unexpected exception inside a handler (caught by the base class, counted as internal error)."""


class EscapedException(NodeFault):
    """An exception came out of the message path (in the real node: out of the DDS callback)."""


class Hang(NodeFault):
    """A message took longer than HANG_S."""


class LostMessage(NodeFault):
    """A queued message ended neither as an output nor as a counted bad input."""


class NonFinite(NodeFault):
    """The node published NaN/inf."""


class RefusedGoodInput(NodeFault):
    """After the fuzzing, the node refuses or gets wrong a good input."""


NODE_CLASSES = {
    'lidar_encoder': 'fmdrive.nodes.lidar_encoder_node:LidarEncoderNode',
    'fusion': 'fmdrive.nodes.fusion_node:FusionNode',
    'planner': 'fmdrive.nodes.planner_node:PlannerNode',
    'visualizer': 'fmdrive.nodes.visualizer_node:VisualizerNode',
}

# what each node reads (checked against the nodes themselves: a new input must get fuzzed too)
FUZZED_INPUTS = {
    'lidar_encoder': ['points', 'tf', 'tf_static'],
    'fusion': ['lidar_objects', 'odometry', 'lanes', 'camera_info', 'speed_limit'],
    'planner': ['scene', 'instruction'],
    'visualizer': ['image', 'points', 'objects', 'plan', 'odometry', 'camera_info', 'tf', 'tf_static',
                   'camera_objects'],
}
CASES = [(node, T[key]) for node, keys in FUZZED_INPUTS.items() for key in keys]

# Faults the fuzzing found that are not fixed yet: (test, node, topic) -> (fault, why). The case stays
# in the suite as a strict xfail of that one fault: another fault still fails it, the fix flips it.
KNOWN_FAULTS = {}


def cases(test: str):
    out = []
    for name, topic in CASES:
        known = KNOWN_FAULTS.get((test, name, topic))
        marks = [pytest.mark.xfail(strict=True, raises=known[0], reason=known[1])] if known else []
        out.append(pytest.param(name, topic, marks=marks, id=f'{name}:{topic}'))
    return out


class Tap:
    """Stands in for a node's publisher: keeps what it publishes, then publishes it for real
    (serialisation of the node's own output is part of the message path)."""

    def __init__(self, publisher):
        self.publisher = publisher
        self.messages = []

    def publish(self, msg):
        self.messages.append(msg)
        self.publisher.publish(msg)

    def get_subscription_count(self):
        # the tap reads everything published: a node that publishes only to subscribers (the
        # visualizer's lazy overlay) must see it as one
        return self.publisher.get_subscription_count() + 1

    def __getattr__(self, name):
        return getattr(self.publisher, name)


class NodeUnderTest:
    """A node of the graph in this process, its publishers tapped and its internal errors kept
    with their tracebacks; `deliver` runs one message through the DDS callback path."""

    def __init__(self, name: str):
        import importlib
        module, cls = NODE_CLASSES[name].split(':')
        self.name = name
        self.node = getattr(importlib.import_module(module), cls)()
        self.taps = {}
        for attr, value in list(vars(self.node).items()):
            if attr.startswith('pub_'):
                self.taps[attr] = Tap(value)
                setattr(self.node, attr, self.taps[attr])
        self.errors = []                   # tracebacks of unexpected exceptions inside handlers
        self.history = collections.deque(maxlen=4)   # what came before a failure (nodes keep state)
        self.wedged = None                 # the message a handler never returned from
        warn = self.node.warn

        def warn_and_keep_traceback(text, key=None, period_s=2.0):
            if key and key.startswith('err'):     # FmdriveNode._handle: an unexpected exception
                self.errors.append(traceback.format_exc())
            return warn(text, key, period_s)
        self.node.warn = warn_and_keep_traceback
        self.outputs = 0                   # results published (the node calls record() once per result)
        record = self.node.record

        def count_and_record(processing_ms, stamp_ns):
            self.outputs += 1
            return record(processing_ms, stamp_ns)
        self.node.record = count_and_record

    def published(self):
        return [m for tap in self.taps.values() for m in tap.messages]

    def clear_published(self):
        for tap in self.taps.values():
            tap.messages.clear()

    def deliver(self, topic: str, msg, wire: bool = True) -> dict:
        """One message through the node's message path, as DDS delivers it. Returns what became of
        it: {'bad': 0|1, 'outputs': n, 'seconds': s}; asserts checks 1-3 of the module docstring."""
        from rclpy.serialization import deserialize_message, serialize_message
        if self.wedged is not None:
            raise Hang(f'{self.name} is still stuck in an earlier message: {self.wedged}')
        if wire:
            msg = deserialize_message(serialize_message(msg), type(msg))
        node = self.node
        if topic == T['image'] and hasattr(node, 'last_overlay'):
            node.last_overlay = 0.0        # the overlay rate limit would skip most images unseen
        stats = node._inputs[topic]
        bad0, out0, err0, internal0 = stats.bad, self.outputs, len(self.errors), node._internal_errors
        if topic in node._handlers:
            path = lambda: node._handle(topic, node._handlers[topic], msg)  # noqa: E731 - the worker
        else:
            path = lambda: node._subs[topic]['callback'](msg)               # noqa: E731 - DDS callback
        escaped = []
        self.history.append(f'{topic}: {summary(msg, 300)}')

        def run():
            try:
                path()
            except BaseException:  # noqa: BLE001 - reported below
                escaped.append(traceback.format_exc())
        worker = threading.Thread(target=run, daemon=True)
        t0 = time.perf_counter()
        worker.start()
        worker.join(HANG_S)
        seconds = time.perf_counter() - t0
        if worker.is_alive():
            self.wedged = f'{topic}: {summary(msg)}'
            raise Hang(f'{self.name} hangs on {topic} (> {HANG_S:.0f} s): {summary(msg)}')
        if escaped:
            raise EscapedException(f'an exception escaped {self.name}\'s {topic} callback:\n{escaped[0]}')
        if len(self.errors) != err0 or node._internal_errors != internal0:
            raise InternalError(
            f'{self.name}: unexpected exception handling {topic} (counted as an internal error, not as '
            f'bad input):\n{self.errors[err0] if len(self.errors) > err0 else node._last_warning}\n'
            f'the last messages this node was sent, oldest first:\n' + '\n'.join(self.history))
        return {'bad': stats.bad - bad0, 'outputs': self.outputs - out0, 'seconds': seconds}

    def destroy(self):
        self.node.destroy_node()


def summary(msg, limit=600) -> str:
    text = repr(msg)
    return text if len(text) <= limit else text[:limit] + f'... ({len(text)} chars)'


def nonfinite(msg, path='', out=None, budget=None):
    """Paths of NaN/inf values in a message (floats, float arrays, nested messages, lists)."""
    out = [] if out is None else out
    budget = [20000] if budget is None else budget
    if budget[0] <= 0 or len(out) > 5:
        return out
    budget[0] -= 1
    if isinstance(msg, float):
        # Plan.cost inf is how a plan with no feasible candidate says so (the planner's own convention)
        if not math.isfinite(msg) and not (path.endswith('.cost') and msg == INF):
            out.append(f'{path}={msg}')
    elif isinstance(msg, array.array):
        if msg.typecode in 'fd' and len(msg) and not np.isfinite(np.frombuffer(msg, msg.typecode)).all():
            out.append(f'{path}[...] has NaN/inf')
    elif isinstance(msg, np.ndarray):
        if msg.dtype.kind == 'f' and not np.isfinite(msg).all():
            out.append(f'{path}[...] has NaN/inf')
    elif isinstance(msg, (list, tuple)):
        for i, item in enumerate(msg):
            nonfinite(item, f'{path}[{i}]', out, budget)
    elif hasattr(msg, 'get_fields_and_field_types'):
        for name in msg.get_fields_and_field_types():
            if name == 'data':             # image and cloud bytes
                continue
            nonfinite(getattr(msg, name), f'{path}.{name}', out, budget)
    return out


@pytest.fixture(scope='module')
def ros(ros_domain):
    """rclpy's default context (what the node classes use), on this run's own domain."""
    import rclpy
    owner = not rclpy.ok()
    if owner:
        rclpy.init()
    yield rclpy
    if owner:
        rclpy.try_shutdown()


@pytest.fixture
def make_node(ros):
    made = []

    def make(name):
        made.append(NodeUnderTest(name))
        return made[-1]
    yield make
    for n in made:
        n.destroy()


# ====================================================================== checks after the fuzzing
def stamps_of(messages):
    from fmdrive.msgs import stamp_to_ns
    return {stamp_to_ns(m.header.stamp) for m in messages}


def expect(condition, message):
    if not condition:
        raise RefusedGoodInput(message)


def answers_good_input(nut: NodeUnderTest):
    """The node, after whatever came before, still gives the right answer to good input."""
    from fmdrive.msgs import stamp_to_ns
    node, name = nut.node, nut.name
    base = STAMP0 + 50 * 10**9                 # after anything plausible the fuzzing sent
    if T['tf_static'] in node._inputs:
        result = nut.deliver(T['tf_static'], good_tf_static(good_stamp(base)))
        expect(result['bad'] == 0,
               f'{name} refused the good /tf_static: {node._last_warning}')
    if T['camera_info'] in node._inputs:
        result = nut.deliver(T['camera_info'], good_camera_info(good_stamp(base)))
        expect(result['bad'] == 0,
               f'{name} refused a good camera_info: {node._last_warning}')
    if T['odometry'] in node._inputs:
        for k in range(30):
            expect(nut.deliver(T['odometry'], good_odometry(base + k * 20_000_000))['bad'] == 0,
                   f'{name} refused good odometry: {node._last_warning}')
    nut.clear_published()
    if name == 'lidar_encoder':
        stamp = base + 100_000_000
        expect(nut.deliver(T['points'], good_cloud(good_stamp(stamp)))['outputs'] == 1, node._last_warning)
        found = [m for m in nut.taps['pub_objects'].messages if stamp_to_ns(m.header.stamp) == stamp]
        # the box, not its label: classification is the detector's business, finding it is the node's
        expect(found and any(10 < o.center.x < 17 and abs(o.center.y) < 1.5 and 3 < o.size.x < 6
                             for o in found[0].objects),
               f'the car 12 m ahead is not found after the fuzzing: {found}')
    elif name == 'fusion':
        for k in range(4):
            result = nut.deliver(T['lidar_objects'], good_objects(good_stamp(base + 100_000_000 * (k + 1)),
                                                                   12.0 + 0.5 * k))
            expect(result['outputs'] == 1, node._last_warning)
        last = nut.taps['pub_objects'].messages[-1]
        expect(any(o.label == 'car' and o.id > 0 for o in last.objects), f'no tracked car: {last}')
        expect(nut.taps['pub_scene'].messages, 'no scene description for good objects')
    elif name == 'planner':
        stamp = base + 100_000_000
        expect(nut.deliver(T['instruction'], good_instruction())['bad'] == 0,
               'a good instruction was refused')
        expect(nut.deliver(T['scene'], good_scene(good_stamp(stamp)))['outputs'] == 1, node._last_warning)
        paths = [m for m in nut.taps['pub_path'].messages if stamp_to_ns(m.header.stamp) == stamp]
        expect(paths and len(paths[0].poses) >= 2,
               f'no trajectory for a good scene: {node._last_warning}')
        xs = [p.pose.position.x for p in paths[0].poses]
        expect(xs[-1] > xs[0], f'the trajectory for a clear road does not go forward: {xs}')
    elif name == 'visualizer':
        stamp = base + 100_000_000
        nut.deliver(T['plan'], plan_msg_for(stamp))
        nut.deliver(T['objects'], good_objects(good_stamp(stamp)))
        nut.clear_published()              # markers drawn with the last fuzzed plan or objects
        nut.deliver(T['objects'], good_objects(good_stamp(stamp)))
        nut.deliver(T['points'], good_cloud(good_stamp(stamp)))
        expect(nut.deliver(T['image'], good_image(good_stamp(stamp), 320, 180))['outputs'] == 1,
               node._last_warning)
        overlays = [m for m in nut.taps['pub_overlay'].messages if stamp_to_ns(m.header.stamp) == stamp]
        expect(overlays and (overlays[0].width, overlays[0].height) == (320, 180),
               f'no 320x180 overlay for a good image: {node._last_warning}')
        pixels = np.frombuffer(overlays[0].data, np.uint8)
        expect((pixels != 90).any(), 'nothing (points, car box, plan) was drawn on the overlay')
        expect(nut.taps['pub_markers'].messages, 'no markers for good objects')
    problems = [p for m in nut.published() for p in nonfinite(m)]
    if problems:
        raise NonFinite(f'{name} published NaN/inf for good input: {problems[:5]}')


def good_instruction():
    from std_msgs.msg import String
    return String(data='keep the lane')


def plan_msg_for(stamp_ns):
    from fmdrive.msgs import plan_to_msg
    from fmdrive.objects import Plan
    t = np.linspace(0, 3, 7)
    poses = np.c_[5 * t, np.zeros(7), np.zeros(7)] + [[5 * (stamp_ns - STAMP0) / 1e9, 0, 0]]
    return plan_to_msg(Plan(stamp_ns=stamp_ns, poses=poses, t_s=t, speeds_mps=np.full(7, 5.0)))


# ====================================================================== the tests
def test_every_input_of_every_node_is_fuzzed(make_node):
    """A node that gains an input must gain its fuzzing: the table above is what the nodes read."""
    for name, keys in FUZZED_INPUTS.items():
        node = make_node(name).node
        assert set(node._inputs) == {T[k] for k in keys}, name
        for topic in node._inputs:
            assert type_name(node._subs[topic]['msg_type']) in STRATEGIES, topic
        assert MAIN_INPUT[name] in node._handlers


def trigger_stamp(msg):
    if hasattr(msg, 'header'):
        return msg.header.stamp
    if getattr(msg, 'transforms', None):
        return msg.transforms[0].header.stamp
    return good_stamp(STAMP0)


def fuzz_topic(nut: NodeUnderTest, topic: str, examples: int, finite: bool) -> dict:
    """Feed `examples` generated messages to one input of the node (each stored input followed by
    a good trigger); asserts checks 1-4 for every message and, if `finite`, check 5."""
    name, node = nut.name, nut.node
    strategy = STRATEGIES[type_name(node._subs[topic]['msg_type'])]
    main = MAIN_INPUT[name]
    seen = {'examples': 0, 'bad': 0, 'seconds': 0.0, 'slowest': 0.0, 'nonfinite': []}

    @fuzz_settings(examples)
    @given(msg=strategy)
    def fuzz(msg):
        nut.clear_published()
        result = nut.deliver(topic, msg)
        seen['examples'] += 1
        seen['bad'] += result['bad']
        seen['seconds'] += result['seconds']
        seen['slowest'] = max(seen['slowest'], result['seconds'])
        if topic == main:
            if result['bad'] + result['outputs'] != 1:
                raise LostMessage(f'{name}: a {topic} message ended neither as one output nor as one bad '
                                  f'input: {result}')
        else:
            # a stored input is used by the next main input: a good one at the same stamp
            note(f'followed by a good {main} message')
            after = nut.deliver(main, TRIGGERS[name](trigger_stamp(msg)), wire=False)
            seen['seconds'] += after['seconds']
            if after['bad'] + after['outputs'] != 1:
                raise LostMessage(f'{name}: the good {main} after it was lost: {after}')
        problems = [p for m in nut.published() for p in nonfinite(m)]
        if problems and finite:
            raise NonFinite(f'{name} published NaN/inf after a {topic} message: {problems}')
        if problems and len(seen['nonfinite']) < 3:
            seen['nonfinite'].append(f'{problems} after {summary(msg)}')

    t0 = time.monotonic()
    fuzz()
    seen['total_s'] = time.monotonic() - t0
    print(f'\n{name} {topic}: {seen["examples"]} examples in {seen["total_s"]:.1f} s '
          f'(in the node {seen["seconds"]:.1f} s, slowest {seen["slowest"] * 1e3:.0f} ms), '
          f'{seen["bad"]} counted as bad input')
    assert seen['examples'] >= min(examples, 100), seen
    return seen


# (node, topic) -> what the crash test saw published as NaN/inf: the NaN test needs no second run of
# its own where the first one saw nothing
NONFINITE_SEEN: dict[tuple, list] = {}


@pytest.mark.timeout(max(600, EXAMPLES))
@pytest.mark.parametrize('name,topic', cases('crash'))
def test_no_generated_message_crashes_or_hangs_the_node(make_node, name, topic):
    nut = make_node(name)
    NONFINITE_SEEN[name, topic] = fuzz_topic(nut, topic, EXAMPLES, finite=False)['nonfinite']
    answers_good_input(nut)


@pytest.mark.timeout(max(600, EXAMPLES))
@pytest.mark.parametrize('name,topic', cases('nan'))
def test_a_node_publishes_no_nan_or_inf_whatever_it_is_sent(make_node, name, topic):
    """Check 5. The crash test above already looked at everything it made the node publish; only
    where it saw NaN/inf (or did not run) does this fuzz again, failing on the first one, shrunk."""
    earlier = NONFINITE_SEEN.get((name, topic))
    if earlier == []:
        return                             # EXAMPLES messages, nothing non-finite published
    nut = make_node(name)
    fuzz_topic(nut, topic, FINITE_EXAMPLES, finite=True)
    if earlier:
        raise NonFinite(f'{name} published NaN/inf in the crash test (not found again in '
                        f'{FINITE_EXAMPLES} examples): {earlier[0]}')


# ====================================================================== what the fuzzing found, minimal
# Each is the smallest message (sequence) found for one fault, on a fresh node; xfail (strict) until
# the node is fixed, so the fix flips it; then it stays as a regression test.
def minimal_scene_with_lane(x_m):
    from fmdrive_msgs.msg import Lane, SceneDescription
    from geometry_msgs.msg import Point
    scene = SceneDescription()
    scene.header.stamp = good_stamp(STAMP0)
    scene.ego_pose.orientation.w = 1.0
    scene.lanes = [Lane(offset=0, width_m=3.5, centerline=[Point(x=-5.0), Point(x=x_m)])]
    return scene


@pytest.mark.parametrize('x_m', [1e308, 1e12, 1e7])
def test_a_scene_with_a_lane_point_absurdly_far_is_bad_input_not_a_planner_error(make_node, x_m):
    # found by this fuzzing, fixed in 6a6cd5c: 1e308 m was an OverflowError and 1e12 m a MemoryError in
    # frenet.ReferenceLine (internal errors), 1e7 m took ~2 GB and over 10 s (a hang)
    nut = make_node('planner')
    result = nut.deliver(T['scene'], minimal_scene_with_lane(x_m))
    assert result['bad'] + result['outputs'] == 1


@pytest.mark.parametrize('name', ['lidar_encoder', 'visualizer'])
def test_garbage_tf_static_does_not_lock_out_the_true_calibration(make_node, name):
    from geometry_msgs.msg import Transform, TransformStamped
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage
    nut = make_node(name)
    for parent, child in (('map', 'lidar'), ('lidar', 'base_link')):
        nut.deliver(T['tf_static'], TFMessage(transforms=[TransformStamped(
            header=Header(stamp=good_stamp(STAMP0), frame_id=parent), child_frame_id=child,
            transform=Transform())]))
    result = nut.deliver(T['tf_static'], good_tf_static(good_stamp(STAMP0 + 10**9)))
    expect(result['bad'] == 0, f'{name} refused the true calibration: {nut.node._last_warning}')


def max_speed_scene():
    from fmdrive_msgs.msg import Lane
    from geometry_msgs.msg import Point
    scene = minimal_scene_with_lane(10.0)
    scene.ego_speed_mps = FLT32_MAX
    scene.lanes = [Lane(offset=2, width_m=3.87,
                        centerline=[Point(x=-8.13, y=7.017), Point(x=-5.49, y=7.036)])]
    return scene


def nan_lanes():
    from fmdrive_msgs.msg import Lane, LaneArray
    from geometry_msgs.msg import Point
    return LaneArray(header=header_at(STAMP0), lanes=[Lane(offset=0, width_m=3.5,
                                                           centerline=[Point(x=0.0), Point(x=NAN)])])


def nan_size_objects():
    from fmdrive_msgs.msg import Object, ObjectArray
    msg = ObjectArray(header=header_at(STAMP0), objects=[Object()])
    msg.objects[0].size.z = NAN
    return msg


def nan_pose_plan():
    from fmdrive_msgs.msg import Plan
    from geometry_msgs.msg import Pose
    msg = Plan(header=header_at(STAMP0), poses=[Pose(), Pose()])
    msg.poses[1].position.y = NAN
    return msg


def header_at(stamp_ns):
    from std_msgs.msg import Header
    return Header(stamp=good_stamp(stamp_ns))


@pytest.mark.parametrize('name,topic,make_msg', [
    # found by this fuzzing (inf speeds in the Plan), fixed in the planner's speed repair
    pytest.param('planner', T['scene'], max_speed_scene),
    # found by this fuzzing, fixed: the fusion and visualizer nodes refuse NaN lanes, objects and plans
    pytest.param('fusion', T['lanes'], nan_lanes),
    pytest.param('visualizer', T['objects'], nan_size_objects),
    pytest.param('visualizer', T['plan'], nan_pose_plan),
], ids=['planner:scene', 'fusion:lanes', 'visualizer:objects', 'visualizer:plan'])
def test_a_nan_in_an_input_is_not_passed_on(make_node, name, topic, make_msg):
    nut = make_node(name)
    nut.deliver(topic, make_msg())
    if topic != MAIN_INPUT[name]:
        nut.deliver(MAIN_INPUT[name], TRIGGERS[name](good_stamp(STAMP0)), wire=False)
    problems = [p for m in nut.published() for p in nonfinite(m)]
    if problems:
        raise NonFinite(f'{name} published NaN/inf after a NaN on {topic}: {problems}')
