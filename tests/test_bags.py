"""fmdrive.bags: rosbag2 MCAP bags written and read back, checked with independent readers,
and replayed and recorded over real DDS (replay in a subprocess, record in this process)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml
from std_msgs.msg import String

from fmdrive import msgs
from fmdrive.bags import BagError, BagReader, BagWriter, record
from fmdrive.bags.replay import add_replay_arguments, run_replay, shift_stamps
from fmdrive.config import TOPICS
from fmdrive.geometry import make_T
from fmdrive.objects import EgoState, Object3D, Plan

T0_NS = 1_600_000_000_000_000_000
PERIOD_NS = 50_000_000
FRAMES = 12


def sample_messages():
    """(topic, stamp_ns, msg) of a short drive: cloud, odometry, objects, path, tf, camera_info."""
    rng = np.random.default_rng(0)
    out = [(TOPICS['tf_static'], T0_NS,
            msgs.transforms_to_tf([('base_link', 'lidar', make_T(t=[1.0, 0, 1.9]))], T0_NS)),
           (TOPICS['camera_info'], T0_NS, msgs.fields_to_camera_info(
               {'width': 64, 'height': 36, 'k': [40.0, 0, 32, 0, 40, 18, 0, 0, 1],
                'frame_id': 'camera_optical'}, T0_NS))]
    for i in range(FRAMES):
        t = T0_NS + i * PERIOD_NS
        out.append((TOPICS['points'], t, msgs.xyzi_to_pointcloud2(
            rng.normal(size=(200, 4)).astype(np.float32), t, 'lidar')))
        out.append((TOPICS['odometry'], t + 1, msgs.ego_to_odometry(
            t, EgoState(x=i * 0.5, speed_mps=10.0))))
        out.append((TOPICS['objects'], t + 2, msgs.objects_to_msg(
            [Object3D((10.0 - i, 0, 0.8), (4.5, 1.9, 1.6), label='car', id=3,
                      embedding=rng.normal(size=8).astype(np.float32))], t, 'base_link',
            'fusion')))
        out.append((TOPICS['trajectory'], t + 3, msgs.plan_to_path(Plan(
            t, np.c_[np.arange(3.0), np.zeros(3), np.zeros(3)], np.array([0.5, 1.0, 1.5]),
            np.full(3, 10.0)))))
    out.append((TOPICS['instruction'], T0_NS + PERIOD_NS, String(data='keep the lane')))
    return sorted(out, key=lambda m: m[1])


@pytest.fixture(scope='module')
def bag_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('bags') / 'drive'
    with BagWriter(path) as bag:
        for topic, stamp_ns, msg in sample_messages():
            bag.write(topic, msg, stamp_ns)
    return path


# ---------------------------------------------------------------- writing and reading
def test_read_back_gives_the_same_messages_in_time_order(bag_path):
    want = sample_messages()
    got = list(BagReader(bag_path).messages())
    assert [(t, s) for t, s, _ in got] == [(t, s) for t, s, _ in want]
    for (_, _, g), (_, _, w) in zip(got, want):
        assert type(g) is type(w) and g == w  # (CDR padding bytes may differ, values may not)


def test_reader_reports_topics_counts_and_duration(bag_path):
    bag = BagReader(bag_path)
    assert bag.topics[TOPICS['points']] == ('sensor_msgs/msg/PointCloud2', FRAMES)
    assert bag.topics[TOPICS['objects']] == ('fmdrive_msgs/msg/ObjectArray', FRAMES)
    assert bag.topics[TOPICS['tf_static']] == ('tf2_msgs/msg/TFMessage', 1)
    assert bag.start_ns == T0_NS
    assert bag.duration_ns == (FRAMES - 1) * PERIOD_NS + 3


def test_the_mcap_file_alone_and_a_topic_subset_can_be_read(bag_path):
    bag = BagReader(bag_path / 'drive.mcap')
    assert set(bag.topics) == set(BagReader(bag_path).topics)
    raw = list(bag.raw_messages([TOPICS['odometry']]))
    assert len(raw) == FRAMES and raw[0][1] == 'nav_msgs/msg/Odometry'


def test_metadata_yaml_lists_topics_and_latched_qos_readable_by_humble(bag_path):
    info = yaml.safe_load((bag_path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 8 and info['storage_identifier'] == 'mcap'
    assert info['relative_file_paths'] == ['drive.mcap']
    topics = {t['topic_metadata']['name']: t for t in info['topics_with_message_count']}
    assert set(topics) == {t for t, _, _ in sample_messages()}
    assert topics[TOPICS['points']]['message_count'] == FRAMES
    objects_hash = topics[TOPICS['objects']]['topic_metadata']['type_description_hash']
    assert objects_hash.startswith('RIHS01_')
    # version 8: QoS is a YAML string with numeric enums (durability 1 = transient_local)
    tf_qos = yaml.safe_load(topics[TOPICS['tf_static']]['topic_metadata']['offered_qos_profiles'])
    assert tf_qos[0]['durability'] == 1 and tf_qos[0]['depth'] == 1
    points_qos = yaml.safe_load(topics[TOPICS['points']]['topic_metadata']['offered_qos_profiles'])
    assert points_qos[0]['durability'] == 2 and points_qos[0]['reliability'] == 1


def test_mcap_is_readable_and_decodable_by_the_mcap_library(bag_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    with open(bag_path / 'drive.mcap', 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == 'ros2'
        decoded = list(reader.iter_decoded_messages(topics=[TOPICS['objects']]))
    assert len(decoded) == FRAMES
    schema, channel, message, obj = decoded[0]
    assert (schema.name, schema.encoding, channel.message_encoding) == \
        ('fmdrive_msgs/msg/ObjectArray', 'ros2msg', 'cdr')
    assert message.log_time == T0_NS + 2
    assert obj.source == 'fusion' and obj.objects[0].label == 'car'
    assert obj.objects[0].center.x == pytest.approx(10.0)


def test_existing_output_is_not_overwritten_unless_asked(bag_path, tmp_path):
    with pytest.raises(BagError, match='exists already'):
        BagWriter(bag_path)
    other = tmp_path / 'notes'
    other.mkdir()
    (other / 'todo.txt').write_text('keep me')
    with pytest.raises(BagError, match='not a rosbag2 directory'):
        BagWriter(other, overwrite=True)
    copy = tmp_path / 'copy'
    with BagWriter(copy) as bag:
        bag.write('/a', String(data='1'), 1)
    with BagWriter(copy, overwrite=True) as bag:
        bag.write('/b', String(data='2'), 2)
    assert list(BagReader(copy).topics) == ['/b']


# ---------------------------------------------------------------- bad bags
def test_missing_bag_raises_bag_error(tmp_path):
    with pytest.raises(BagError, match='not found'):
        BagReader(tmp_path / 'nope')


def test_directory_without_a_bag_raises_bag_error(tmp_path):
    with pytest.raises(BagError, match='not a rosbag2 bag'):
        BagReader(tmp_path)


def test_truncated_mcap_raises_bag_error(bag_path, tmp_path):
    data = (bag_path / 'drive.mcap').read_bytes()
    (tmp_path / 'cut.mcap').write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(BagError, match='corrupt or truncated'):
        BagReader(tmp_path / 'cut.mcap')


def test_garbage_file_raises_bag_error(tmp_path):
    (tmp_path / 'junk.mcap').write_bytes(os.urandom(4096))
    with pytest.raises(BagError):
        BagReader(tmp_path / 'junk.mcap')


def test_corrupt_metadata_raises_bag_error(bag_path, tmp_path):
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'drive.mcap').write_bytes((bag_path / 'drive.mcap').read_bytes())
    (broken / 'metadata.yaml').write_text('rosbag2_bagfile_information: {version: [}\n')
    with pytest.raises(BagError, match='cannot read bag'):
        BagReader(broken)


def test_unknown_message_type_raises_bag_error_but_raw_messages_still_work(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg('int32 value', 'acme_msgs/msg/Gadget'))
    with Writer(tmp_path / 'acme', version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection('/gadget', 'acme_msgs/msg/Gadget', typestore=store)
        writer.write(conn, 5, bytes([0, 1, 0, 0, 7, 0, 0, 0]))
    bag = BagReader(tmp_path / 'acme')
    with pytest.raises(BagError, match="unknown message type 'acme_msgs/msg/Gadget'"):
        next(bag.messages())
    assert [m[:3] for m in bag.raw_messages()] == [('/gadget', 'acme_msgs/msg/Gadget', 5)]


def test_unknown_topic_filter_raises_bag_error_naming_the_topics(bag_path):
    with pytest.raises(BagError, match='/no/such/topic is not in bag'):
        list(BagReader(bag_path).messages(['/no/such/topic']))


def test_replay_command_on_a_missing_bag_prints_one_error_line(tmp_path, capsys):
    import argparse
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)
    assert run_replay(parser.parse_args([str(tmp_path / 'missing')])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('fmdrive replay: error: bag not found')


# ---------------------------------------------------------------- restamping
def test_restamp_shifts_nested_stamps_of_paths_and_tf():
    path = msgs.plan_to_path(Plan(T0_NS, np.zeros((2, 3)), np.array([0.5, 1.0]), np.ones(2)))
    shift_stamps(path, 1_500_000_000)
    assert msgs.stamp_to_ns(path.header.stamp) == T0_NS + 1_500_000_000
    assert [msgs.stamp_to_ns(p.header.stamp) for p in path.poses] == \
        [T0_NS + 2_000_000_000, T0_NS + 2_500_000_000]
    tf = msgs.transforms_to_tf([('a', 'b', np.eye(4)), ('a', 'c', np.eye(4))], T0_NS)
    shift_stamps(tf, -T0_NS)
    assert [msgs.stamp_to_ns(t.header.stamp) for t in tf.transforms] == [0, 0]


def test_restamping_the_serialized_bytes_equals_the_message_round_trip():
    """The replay restamps header-only messages (clouds, images, odometry) in their CDR bytes:
    the same message as deserialise -> shift stamps gives, every byte after the stamp untouched."""
    from rclpy.serialization import deserialize_message, serialize_message

    from fmdrive.bags.replay import Restamper, header_only
    from fmdrive.bags.typestore import message_class
    from fmdrive.config import TOPIC_TYPES
    restamper, checked = Restamper(), set()
    for topic, _, msg in sample_messages():
        cls = message_class(TOPIC_TYPES[topic])
        if not header_only(cls):   # /tf (stamps per transform), paths (stamps per pose)
            continue
        data = serialize_message(msg)
        fast = restamper.restamp_serialized(memoryview(data))
        original, published = restamper.pairs[-1] if restamper.pairs[-1][0] == msgs.stamp_to_ns(
            msg.header.stamp) else next(p for p in restamper.pairs if p[0] == msgs.stamp_to_ns(msg.header.stamp))
        slow = deserialize_message(data, cls)
        shift_stamps(slow, published - original)
        assert deserialize_message(fast, cls) == slow, topic  # (CDR padding bytes are unspecified)
        assert len(fast) == len(data) and fast[12:] == data[12:]
        checked.add(topic)
    assert {TOPICS['points'], TOPICS['odometry'], TOPICS['camera_info']} <= checked
    stamps = [p for _, p in restamper.pairs]
    assert stamps == sorted(set(stamps)) and stamps[0] > T0_NS   # strictly increasing wall times
    # a stamp of 0 (unset) stays 0; bytes that are not plain CDR are left to the slow path
    info = serialize_message(msgs.fields_to_camera_info({'width': 4, 'height': 2, 'k': [1.0, 0, 2, 0, 1, 1, 0, 0, 1],
                                                         'frame_id': 'c'}, 0))
    assert Restamper().restamp_serialized(info) == info
    assert Restamper().restamp_serialized(b'\x00\x07' + info[2:]) is None


# ---------------------------------------------------------------- over DDS
REPLAY_CODE = """
import json, sys
from fmdrive.bags import replay
stats = replay(sys.argv[1], restamp=sys.argv[2] == 'restamp', rate=float(sys.argv[4]),
               progress=False, wait_for_subscribers=json.loads(sys.argv[3]))
print(json.dumps(stats))
"""


def replay_and_record(bag_path, out_path, topics, restamp, rate=2.0):
    """Replay bag_path in a subprocess while this process records topics into out_path; the
    recorder stops when the replay process has ended (and drains what is still on its way)."""
    proc = subprocess.Popen([sys.executable, '-c', REPLAY_CODE, str(bag_path),
                             'restamp' if restamp else 'keep', json.dumps(topics), str(rate)],
                            stdout=subprocess.PIPE, text=True)
    try:
        counts = record(topics, out_path, progress=False, idle_timeout_s=20,
                        until=lambda: proc.poll() is not None)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()  # only the replay process this test started
            proc.wait()
    assert proc.returncode == 0
    return counts, json.loads(stdout.strip().splitlines()[-1])


def header_stamp_ns(topic, msg):
    return msgs.stamp_to_ns(msg.transforms[0].header.stamp if topic == TOPICS['tf_static']
                            else msg.header.stamp)


def test_replayed_bag_is_recorded_completely_and_in_order(bag_path, tmp_path, ros_domain):
    topics = [TOPICS['tf_static'], TOPICS['points'], TOPICS['objects'], TOPICS['trajectory']]
    counts, stats = replay_and_record(bag_path, tmp_path / 'rec', topics, restamp=False)
    want = [(t, m) for t, _, m in sample_messages() if t in topics]
    assert counts == {t: sum(1 for w, _ in want if w == t) for t in topics}
    assert {t: stats['published'][t] for t in topics} == counts and stats['loops'] == 1
    got = list(BagReader(tmp_path / 'rec').messages())
    for topic in topics:  # per topic, every message arrives unchanged and in order
        assert [m for t, _, m in got if t == topic] == [m for t, m in want if t == topic]


@pytest.mark.parametrize('rate', [1.0, 5.0])
def test_restamped_replay_stamps_each_message_at_its_publish_time_at_any_rate(
        bag_path, tmp_path, ros_domain, rate):
    topics = [TOPICS['points'], TOPICS['odometry'], TOPICS['trajectory'], TOPICS['clock']]
    counts, stats = replay_and_record(bag_path, tmp_path / 'rec', topics, restamp=True,
                                      rate=rate)
    assert counts[TOPICS['points']] == FRAMES and counts[TOPICS['trajectory']] == FRAMES
    got = list(BagReader(tmp_path / 'rec').messages())
    back = {published: original for original, published in stats['stamp_map_ns']}
    for topic in topics[:3]:
        received = [(recv_ns, header_stamp_ns(t, m)) for t, recv_ns, m in got if t == topic]
        # never in the future: receive time - stamp is a latency, >= 0 at any rate
        assert all(stamp <= recv_ns for recv_ns, stamp in received), topic
        # the map gives every message its bag stamp back, in order
        original = [header_stamp_ns(t, m) for t, _, m in sample_messages() if t == topic]
        assert [back[stamp] for _, stamp in received] == original
    # messages of one instant (LiDAR and odometry stamped t in the bag) share their new stamp
    points = [header_stamp_ns(t, m) for t, _, m in got if t == TOPICS['points']]
    odometry = [header_stamp_ns(t, m) for t, _, m in got if t == TOPICS['odometry']]
    assert points == odometry
    # the bag's time spacing is kept, divided by the rate (publish times follow the schedule)
    spacing_ns = np.diff(points)
    assert np.median(spacing_ns) == pytest.approx(PERIOD_NS / rate, rel=0.5)
    # stamps inside a message move with its header: plan poses keep their time from start
    path = next(m for t, _, m in got if t == TOPICS['trajectory'])
    assert msgs.stamp_to_ns(path.poses[0].header.stamp) == \
        msgs.stamp_to_ns(path.header.stamp) + 500_000_000
    clock_ns = [msgs.stamp_to_ns(m.clock) for t, _, m in got if t == TOPICS['clock']]
    assert len(clock_ns) > FRAMES and clock_ns == sorted(clock_ns)
    assert clock_ns[-1] >= max(points)


def test_eval_gives_outputs_their_bag_stamps_back_through_the_restamp_map(tmp_path):
    from fmdrive.eval.metrics import replay_stamp_restorer
    (tmp_path / 'replay.json').write_text(json.dumps(
        {'stamp_map_ns': [[T0_NS, 5_000], [T0_NS + PERIOD_NS, 5_010]]}))
    to_bag = replay_stamp_restorer(tmp_path)
    assert [to_bag(5_000), to_bag(5_010), to_bag(7)] == [T0_NS, T0_NS + PERIOD_NS, 7]
    (tmp_path / 'replay.json').write_text(json.dumps({'stamp_offset_ns': 100}))  # older runs
    assert replay_stamp_restorer(tmp_path)(T0_NS + 100) == T0_NS


def test_remap_publishes_a_bag_topic_under_another_name(bag_path, tmp_path, ros_domain):
    from fmdrive.bags import replay
    import threading
    renamed = '/velodyne_points'
    done = threading.Event()
    result = {}

    def run_replay_thread():
        result['stats'] = replay(bag_path, topics=[TOPICS['points']], rate=4.0, progress=False,
                                 remap={TOPICS['points']: renamed},
                                 wait_for_subscribers={renamed: 1}, clock=False)
        done.set()

    thread = threading.Thread(target=run_replay_thread)
    thread.start()
    counts = record([renamed], tmp_path / 'rec', progress=False, idle_timeout_s=20,
                    until=done.is_set)
    thread.join(30)
    assert result['stats']['published'] == {renamed: FRAMES}
    assert counts == {renamed: FRAMES}


def test_remap_of_a_topic_the_bag_lacks_is_a_bag_error(bag_path):
    from fmdrive.bags import replay
    with pytest.raises(BagError, match='cannot remap /nope'):
        replay(bag_path, remap={'/nope': '/x'}, progress=False)


# ---------------------------------------------------------------- a recorder killed
RECORD_CODE = """
import sys
from fmdrive.bags import record
record([sys.argv[1]], sys.argv[2], progress=False, status_file=sys.argv[3])
"""


def test_a_bag_whose_recorder_was_killed_is_recovered_readable(bag_path, tmp_path, ros_domain):
    from fmdrive.bags.writer import recover_bag
    from fmdrive.cli import main
    out, status = tmp_path / 'killed', tmp_path / 'status.json'
    recorder = subprocess.Popen([sys.executable, '-c', RECORD_CODE, TOPICS['points'], str(out),
                                 str(status)])
    try:
        def recorder_state():
            try:
                return json.loads(status.read_text())
            except (OSError, ValueError):
                return None
        # replay while the recorder runs; once every frame is flushed to disk, kill -9
        proc = subprocess.Popen([sys.executable, '-c', REPLAY_CODE, str(bag_path), 'keep',
                                 json.dumps([TOPICS['points']]), '4.0'], stdout=subprocess.PIPE)
        proc.communicate(timeout=60)
        import time
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                (recorder_state() or {}).get('flushed', {}).get(TOPICS['points']) == FRAMES):
            time.sleep(0.05)  # polling the status file the recorder rewrites
        assert recorder_state()['flushed'][TOPICS['points']] == FRAMES
        os.kill(recorder.pid, signal.SIGKILL)
        recorder.wait(10)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    assert not (out / 'metadata.yaml').exists()
    with pytest.raises(BagError):
        BagReader(out)
    assert main(['bag', 'recover', str(out)]) == 0
    bag = BagReader(out)
    assert bag.topics[TOPICS['points']] == ('sensor_msgs/msg/PointCloud2', FRAMES)
    want = [m for t, _, m in sample_messages() if t == TOPICS['points']]
    assert [m for _, _, m in bag.messages()] == want
    with pytest.raises(BagError, match='not found'):
        recover_bag(tmp_path / 'missing')


def test_recover_of_a_missing_bag_is_one_error_line(tmp_path, capsys):
    from fmdrive.cli import main
    assert main(['bag', 'recover', str(tmp_path / 'nope')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'bag not found' in err[0]
