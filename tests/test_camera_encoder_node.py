"""The camera_encoder node over DDS: it publishes the objects of the card it runs, survives images it
cannot take, reports `unavailable: <why>` and publishes nothing when its card is broken, and encodes
at most max_rate_hz."""
from pathlib import Path

import numpy as np
import pytest
from fmdrive_msgs.msg import ObjectArray
from sensor_msgs.msg import Image

from conftest import counter, diagnostics_name
from fmdrive import config
from fmdrive.msgs import ns_to_stamp, rgb_to_image, stamp_to_ns

from test_inference_helpers import centernet_blob_model, centernet_card

T = config.TOPICS
STAMP0 = 1_700_000_000_000_000_000
ENGINE = Path(config.package_file('engines/camera_centernet'))


def tiny_card(tmp_path) -> Path:
    d = tmp_path / 'camera_tiny'
    d.mkdir()
    return centernet_card(d, centernet_blob_model(d / 'fp32.onnx')).parent


def patch_image(stamp_ns):
    image = np.zeros((720, 1280, 3), np.uint8)
    image[374:386, 798:810] = 255                 # the tiny model's pedestrian, centre (804, 380)
    return rgb_to_image(image, stamp_ns, 'camera_optical', 'bgr8')


def bad_images():
    zero = Image(height=0, width=0, encoding='rgb8', step=0)
    odd = Image(height=48, width=64, encoding='yuv422_weird', step=128)
    odd.data = bytes(128 * 48)
    truncated = Image(height=100000, width=100000, encoding='rgb8', step=300000)
    truncated.data = bytes(1000)
    for k, msg in enumerate((zero, odd, truncated)):
        msg.header.stamp = ns_to_stamp(STAMP0 + k)
    return [zero, odd, truncated]


@pytest.mark.timeout(120)
def test_the_node_publishes_the_cards_objects_and_reports_a_broken_card_unavailable(graph_nodes, probe, tmp_path):
    card_dir = tiny_card(tmp_path)
    probe.watch_diagnostics()
    probe.listen(T['camera_objects'], ObjectArray)
    graph_nodes('camera_encoder', overrides={'camera_encoder': {'backend': 'onnxruntime', 'model': str(card_dir),
                                                                'precision': 'fp32', 'max_rate_hz': 0.0}})
    kv = probe.wait_for_diagnostics('camera_encoder', lambda kv: 'backend' in kv, what='backend reported')
    assert kv['mode'] == 'ok' and 'onnxruntime' in kv['backend'], kv
    pub = probe.publisher(T['image'], Image)
    probe.wait_for_subscribers([T['image']], nodes=[])
    assert probe.spin_until(lambda: pub.get_subscription_count() >= 1, 30)
    for i, msg in enumerate(bad_images(), 1):     # none of these may kill it; each is counted
        pub.publish(msg)
        probe.wait_for_diagnostics('camera_encoder', lambda kv: counter(kv, 'bad_inputs') >= i, what=f'bad image {i}')
    stamp = STAMP0 + 10**9
    pub.publish(patch_image(stamp))
    assert probe.spin_until(lambda: any(stamp_to_ns(m.header.stamp) == stamp
                                        for m in probe.received[T['camera_objects']]), 30)
    msg = next(m for m in probe.received[T['camera_objects']] if stamp_to_ns(m.header.stamp) == stamp)
    assert msg.header.frame_id == 'camera_optical' and msg.source == 'camera_learned'
    (obj,) = msg.objects
    assert obj.label == 'pedestrian' and obj.has_box2d and not obj.has_box3d
    assert np.allclose(obj.box2d, [764, 356, 844, 404], atol=1.0) and len(obj.embedding) == 8

    # the broken card (its model file is missing): unavailable, said why, and nothing published
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'card.yaml').write_text((card_dir / 'card.yaml').read_text())
    graph_nodes('camera_encoder', overrides={'camera_encoder': {'backend': 'onnxruntime', 'model': str(broken)}})
    probe.diagnostics.pop(diagnostics_name('camera_encoder'), None)
    kv = probe.wait_for_diagnostics('camera_encoder', lambda kv: kv.get('backend') == 'unavailable',
                                    what='unavailable reported')
    assert kv['mode'].startswith('unavailable: ') and 'fp32.onnx' in kv['mode'], kv
    pub.publish(patch_image(stamp + 10**8))
    kv = probe.wait_for_diagnostics('camera_encoder', lambda kv: counter(kv, 'frames_unavailable') >= 1,
                                    what='the image taken and not encoded')
    # its own count, not the topic's: the first instance may still be leaving the graph
    assert counter(kv, 'outputs') == 0, kv


def admits(max_rate_hz, arrivals_s):
    from fmdrive.rate_gate import RateGate
    gate = RateGate(max_rate_hz)        # what the node puts at the door of its image input
    return [gate.admit(t) for t in arrivals_s]


def test_frames_above_max_rate_are_skipped_and_the_average_rate_is_kept():
    at_30hz = admits(5.0, list(100.0 + np.arange(300) / 30.0))           # 10 s of a 30 Hz camera
    assert 50 <= sum(at_30hz) <= 52                                        # (+ the bucket's burst)
    assert max(np.diff(np.flatnonzero(at_30hz))) <= 7                     # spread, no long holes
    at_3hz = admits(5.0, list(100.0 + np.arange(30) / 3.0))              # slower than the cap: all of them
    assert all(at_3hz)


@pytest.mark.skipif(not (ENGINE / 'card.yaml').is_file(), reason='no committed camera model')
@pytest.mark.timeout(120)
def test_the_committed_model_finds_the_car_ahead_on_a_simulated_image_through_the_node(graph_nodes, probe):
    from fmdrive.training.dataset import scene_spec, simulate_scene
    arrays = simulate_scene(scene_spec('test', 0, 0.4), camera=True, source_images=True)   # car_following
    image = arrays['source_images'][-1]
    probe.listen(T['camera_objects'], ObjectArray)
    graph_nodes('camera_encoder', overrides={'camera_encoder': {'backend': 'onnxruntime'}})
    pub = probe.publisher(T['image'], Image)
    probe.wait_for_subscribers([T['image']], nodes=[])
    assert probe.spin_until(lambda: pub.get_subscription_count() >= 1, 30)
    stamp = STAMP0 + 5 * 10**9
    pub.publish(rgb_to_image(image, stamp, 'camera_optical'))
    assert probe.spin_until(lambda: any(stamp_to_ns(m.header.stamp) == stamp
                                        for m in probe.received[T['camera_objects']]), 30)
    msg = next(m for m in probe.received[T['camera_objects']] if stamp_to_ns(m.header.stamp) == stamp)
    cars = [o for o in msg.objects if o.label == 'car']
    assert cars and len(cars[0].embedding) == 64
    u0, v0, u1, v1 = cars[0].box2d
    assert 0 <= u0 < u1 <= image.shape[1] and 0 <= v0 < v1 <= image.shape[0]
