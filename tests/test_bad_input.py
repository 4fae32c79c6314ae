"""No message a sensor or a bag can carry crashes a node: bad inputs are sent over real DDS to the
running graph; every node must stay alive, report them on /diagnostics, and still serve good input."""
import array
import math

import numpy as np
import pytest
from fmdrive_msgs.msg import ObjectArray, SceneDescription
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from conftest import counter
from fmdrive import config
from fmdrive.graph import GRAPH
from fmdrive.msgs import ego_to_odometry, ns_to_stamp, objects_to_msg, stamp_to_ns, xyzi_to_pointcloud2
from fmdrive.objects import EgoState, Object3D

T = config.TOPICS
STAMP0 = 1_700_000_000_000_000_000


def cloud(fields, point_step, data: bytes, width, height=1, stamp_ns=STAMP0, row_step=None):
    msg = PointCloud2(height=height, width=width, is_bigendian=False, point_step=point_step,
                      row_step=row_step if row_step is not None else point_step * width, is_dense=False)
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields]
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = 'lidar'
    msg.data = array.array('B', data)
    return msg


F32 = PointField.FLOAT32
XYZI = [('x', 0, F32), ('y', 4, F32), ('z', 8, F32), ('intensity', 12, F32)]


def bad_clouds():
    good = np.random.default_rng(0).normal(0, 10, (100, 4)).astype(np.float32)
    nan = good.copy()
    nan[::3, 0] = np.nan
    nan[1::3, 2] = np.inf
    yield 'empty cloud', cloud(XYZI, 16, b'', 0)
    yield 'NaN and inf points', cloud(XYZI, 16, nan.tobytes(), 100)
    yield 'all NaN', cloud(XYZI, 16, np.full((50, 4), np.nan, np.float32).tobytes(), 50)
    yield 'missing z field', cloud(XYZI[:2] + XYZI[3:], 16, good.tobytes(), 100)
    yield 'extra fields', cloud(XYZI + [('ring', 16, PointField.UINT16), ('t', 20, F32)], 24,
                                np.zeros((100, 24), np.uint8).tobytes(), 100)
    yield 'odd point_step', cloud(XYZI, 13, good.tobytes()[:1300], 100)
    yield 'truncated data', cloud(XYZI, 16, good.tobytes()[:777], 100)
    yield 'unknown datatype', cloud([('x', 0, 99), ('y', 4, F32), ('z', 8, F32)], 16, good.tobytes(), 100)
    yield 'huge coordinates', cloud(XYZI, 16, np.full((100, 4), 3e38, np.float32).tobytes(), 100)
    yield 'stamp going backwards', cloud(XYZI, 16, good.tobytes(), 100, stamp_ns=STAMP0 - 10**10)


def bad_images():
    def img(enc, w, h, step, data):
        m = Image(height=h, width=w, encoding=enc, is_bigendian=0, step=step)
        m.header.stamp = ns_to_stamp(STAMP0)
        m.data = array.array('B', data)
        return m
    yield 'unknown encoding', img('yuv422_weird', 64, 48, 128, bytes(128 * 48))
    yield 'wrong encoding for data size', img('rgb8', 64, 48, 64 * 3, bytes(64 * 48))
    yield 'zero size', img('rgb8', 0, 0, 0, b'')
    yield 'truncated', img('bgr8', 64, 48, 64 * 3, bytes(1000))
    yield 'step too small', img('rgb8', 64, 48, 10, bytes(10 * 48))


def bad_camera_infos():
    m = CameraInfo(width=640, height=360, distortion_model='plumb_bob')
    m.k = [0.0] * 9
    yield 'zero focal length', m
    m2 = CameraInfo(width=0, height=0)
    m2.k = [400.0, 0, 320, 0, 400, 180, 0, 0, 1]
    yield 'zero image size', m2
    m3 = CameraInfo(width=640, height=360, distortion_model='fisheye_unknown')
    m3.k = [float('nan')] * 9
    yield 'NaN intrinsics', m3


def good_cloud(stamp_ns):
    """A car 11-15.5 m ahead on flat ground, in the lidar frame (1.9 m above ground), as a LiDAR sees
    one: returns from its surfaces (the rear face and the left side, body from 0.3 m above the road),
    none from inside its footprint (that is what vegetation gives)."""
    rng = np.random.default_rng(1)
    ground = np.c_[rng.uniform(2, 40, 3000), rng.uniform(-10, 10, 3000), np.full(3000, -1.9), np.full(3000, 10)]
    rear = np.c_[rng.uniform(11.0, 11.1, 500), rng.uniform(-0.95, 0.95, 500), rng.uniform(-1.6, -0.4, 500),
                 np.full(500, 60)]
    side = np.c_[rng.uniform(11.0, 15.5, 600), rng.uniform(0.9, 0.95, 600), rng.uniform(-1.6, -0.4, 600),
                 np.full(600, 60)]
    pts = np.vstack([ground, rear, side]).astype(np.float32)
    return xyzi_to_pointcloud2(pts, stamp_ns, 'lidar')


def handled(kv: dict, topic: str) -> int:
    """Messages of `topic` a node has finished with: each queued input ends as a bad input, an output
    (the nodes record one per message they publish for) or an internal error, or was dropped."""
    return (counter(kv, f'{topic}/bad') + counter(kv, 'outputs') + counter(kv, 'internal_errors')
            + counter(kv, f'{topic}/dropped'))


def readers(key):
    return [node.name for node in GRAPH if key in node.inputs]


def received(probe, key) -> dict:
    """{node: messages of config.TOPICS[key] its callback has taken}, from each reader's latest report."""
    return {name: counter(probe.wait_for_diagnostics(name, lambda kv: True, what='a first report'),
                          f'{T[key]}/received') for name in readers(key)}


def wait_received(probe, key, expected: dict):
    """Until every graph node that reads config.TOPICS[key] reports at least expected[node] received."""
    topic = T[key]
    for name, count in expected.items():
        probe.wait_for_diagnostics(name, lambda kv: counter(kv, f'{topic}/received') >= count,
                                   what=f'{count} received on {topic}')


def send_paced(probe, pub, key, messages, examiner=None, batch: int = 1):
    """Publish `batch` messages at a time, the next only once every node that reads the topic has taken
    the previous ones (as its /diagnostics says) and `examiner` (the node that decodes this input, if
    any) has finished with them: a reader's DDS history (KEEP_LAST, as shallow as 2 for the
    visualizer's clouds; 5 for sensor topics) never has to drop one, however slow the machine; batch
    stays below the shallowest depth. Returns the number sent."""
    topic = T[key]
    counts = received(probe, key)
    start = None if examiner is None else \
        handled(probe.wait_for_diagnostics(examiner, lambda kv: True, what='a first report'), topic)
    for first in range(0, len(messages), batch):
        chunk = messages[first:first + batch]
        for _, msg in chunk:
            pub.publish(msg)
        counts = {name: n + len(chunk) for name, n in counts.items()}
        wait_received(probe, key, counts)
        if examiner is not None:
            done = start + first + len(chunk)
            probe.wait_for_diagnostics(examiner, lambda kv: handled(kv, topic) >= done,
                                       what=f'{topic} {chunk[-1][0]!r} handled')
    return len(messages)


@pytest.mark.timeout(300)
def test_no_bad_input_crashes_a_node_and_each_is_reported(running_graph, probe):
    probe.watch_diagnostics()
    probe.listen(T['lidar_objects'], ObjectArray)
    probe.listen(T['trajectory'], Path)
    from fmdrive.nodes.base import make_qos
    pubs = {
        'points': probe.publisher(T['points'], PointCloud2),
        'image': probe.publisher(T['image'], Image),
        'camera_info': probe.publisher(T['camera_info'], CameraInfo, make_qos('latched')),
        'odometry': probe.publisher(T['odometry'], Odometry),
        'lidar_objects': probe.publisher(T['lidar_objects'], ObjectArray),
        'scene': probe.publisher(T['scene'], SceneDescription),
    }
    probe.listen(T['overlay'], Image)   # watched, the visualizer takes (and examines) what the overlay needs
    probe.wait_for_subscribers([T[k] for k in pubs], lazy=True)
    for node in GRAPH:  # every node reports, so the counters below start from what it says
        probe.wait_for_diagnostics(node.name, lambda kv: True, what='a first report')

    # camera_info is latched with depth 1: one at a time, or a newer one replaces an unsent one
    send_paced(probe, pubs['camera_info'], 'camera_info', list(bad_camera_infos()))
    # odometry with NaN and stamps going backwards; objects with NaN; a scene with NaN speed
    odom = ego_to_odometry(STAMP0, EgoState(x=math.nan, y=0.0, yaw_rad=math.inf, speed_mps=math.nan))
    send_paced(probe, pubs['odometry'], 'odometry',
               [('NaN odometry', odom), ('odometry 5 s back', ego_to_odometry(STAMP0 - 5 * 10**9, EgoState()))])
    nan_obj = Object3D(center=[np.nan, 0, 0], size=[4.5, 1.9, 1.5], label='car')
    pubs['lidar_objects'].publish(objects_to_msg([nan_obj, Object3D(center=[1e30, 0, 0], size=[0, 0, 0])],
                                                 STAMP0, 'base_link', 'test'))
    objects_topic = T['lidar_objects']
    probe.wait_for_diagnostics('fusion', lambda kv: counter(kv, f'{objects_topic}/received') >= 1
                               and handled(kv, objects_topic) >= 1, what='the NaN objects handled')
    scene = SceneDescription()
    scene_stamp = STAMP0 + 7  # its own stamp: the trajectory planned for it (if any) says it was handled
    scene.header.stamp = ns_to_stamp(scene_stamp)
    scene.ego_speed_mps = float('nan')
    pubs['scene'].publish(scene)
    scene_topic = T['scene']
    assert probe.spin_until(lambda: any(stamp_to_ns(m.header.stamp) == scene_stamp
                                        for m in probe.received[T['trajectory']])
                            or counter(probe.diagnostics.get('fmdrive/planner', {}), f'{scene_topic}/bad')
                            + counter(probe.diagnostics.get('fmdrive/planner', {}), 'internal_errors') >= 1, 60), \
        'the planner neither planned for nor reported the scene with NaN speed'

    clouds = send_paced(probe, pubs['points'], 'points', list(bad_clouds()), examiner='lidar_encoder')
    images = send_paced(probe, pubs['image'], 'image', list(bad_images()), examiner='visualizer')
    assert running_graph.dead() == {}, {n: running_graph.log_tail(n) for n in running_graph.dead()}

    # good input afterwards is still served end to end
    good_stamp = STAMP0 + 10**9
    send_paced(probe, pubs['odometry'], 'odometry',
               [(f'odometry {k}', ego_to_odometry(good_stamp + k * 20_000_000, EgoState(x=0.02 * k * 5, speed_mps=5.0)))
                for k in range(25)], batch=4)
    good_stamps = [good_stamp + k * 100_000_000 for k in range(3)]
    send_paced(probe, pubs['points'], 'points', [(f'good cloud {k}', good_cloud(s)) for k, s in enumerate(good_stamps)],
               examiner='lidar_encoder')
    assert probe.spin_until(lambda: any(stamp_to_ns(m.header.stamp) in good_stamps
                                        for m in probe.received[T['trajectory']]), 60), \
        'no trajectory for good input after the bad input'
    objects = [m for m in probe.received[T['lidar_objects']] if stamp_to_ns(m.header.stamp) in good_stamps]
    assert any(o.label == 'car' for m in objects for o in m.objects), 'the car ahead was not detected'

    # /diagnostics tells about the bad input, per node; nothing was lost on the way
    lidar = probe.diagnostics['fmdrive/lidar_encoder']
    visualizer = probe.diagnostics['fmdrive/visualizer']
    fusion = probe.diagnostics['fmdrive/fusion']
    assert counter(lidar, f"{T['points']}/received") == clouds + len(good_stamps), lidar
    assert counter(lidar, f"{T['points']}/dropped") == 0, lidar
    assert counter(visualizer, f"{T['image']}/received") == images, visualizer
    assert counter(visualizer, f"{T['image']}/dropped") == 0, visualizer
    # missing z, odd point_step, truncated data, unknown datatype cannot be decoded at all
    assert counter(lidar, 'bad_inputs') >= 4, lidar
    assert counter(visualizer, 'bad_inputs') >= 4, visualizer
    assert counter(fusion, 'bad_inputs') >= 1, fusion   # camera_info with zero focal length
    assert running_graph.dead() == {}
