"""The camera encoder's training path (fmdrive/training): targets on the letterboxed image, a training
step that learns, export parity with INT8 variants a card accepts, and the committed model on a test
frame. Tiny networks and a few simulated frames. Torch tests skip without torch (requirements-train.txt)."""
from pathlib import Path

import numpy as np
import pytest

from fmdrive import config

ENGINE = Path(config.package_file('engines/camera_centernet'))


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    from fmdrive.training.dataset import write_split
    root = tmp_path_factory.mktemp('camera_dataset')
    for split in ('train', 'val'):
        write_split(root, split, 1, camera=True, progress=False, duration_s=0.8)
    return root


def test_dataset_images_are_letterboxed_to_the_card_input(tiny_data):
    from fmdrive.training.dataset import load_split
    frame = load_split(tiny_data, 'train')[0]
    assert frame.image.shape == (192, 320, 3) and frame.image.dtype == np.uint8
    assert (frame.image[:6] == 114).all() and (frame.image[-6:] == 114).all()    # 320x180 centred in 192 rows


def test_a_few_camera_training_steps_reduce_the_loss(tiny_data):
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.training.camera_model import CameraCenterNet, centernet_loss
    from fmdrive.training.dataset import load_split
    from fmdrive.training.train_camera import frame_pairs, make_batch, seed_everything, tiny_config
    seed_everything(0)
    cfg = tiny_config()
    frames = load_split(tiny_data, 'train')
    idx = frame_pairs(frames)[:2].reshape(-1)
    x, batch = make_batch(idx, frames, cfg, np.zeros(len(idx), bool))
    model = CameraCenterNet(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(12):
        loss, _ = centernet_loss(model(x), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


def test_camera_export_matches_torch_and_int8_variants_pass_the_card_checks(tiny_data, tmp_path):
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.inference.card import load_card
    from fmdrive.training.camera_export import export_camera, quantize_camera
    from fmdrive.training.camera_model import CameraCenterNet
    from fmdrive.training.train_camera import tiny_config
    torch.manual_seed(0)
    cfg = tiny_config()
    ckpt = tmp_path / 'tiny.pt'
    torch.save({'model': CameraCenterNet(cfg).state_dict(), 'config': cfg.to_dict(),
                'train_config': {'epochs': 1, 'seed': 0}}, ckpt)
    out = export_camera(ckpt, tmp_path / 'engine', tiny_data, log=lambda *_: None)
    assert max(out['max_abs_diff'].values()) < 1e-4
    quantize_camera(tmp_path / 'engine', tiny_data, calib_frames=4, methods=('minmax',), log=lambda *_: None)
    card = load_card(tmp_path / 'engine')
    assert set(card.files) == {'fp32', 'int8_trt', 'int8_cpu'} and card.opset >= 17


@pytest.fixture(scope='module')
def test_scene_frame():
    """The last frame of test scene 0 (car_following) and its 640x360 camera image."""
    from fmdrive.training.dataset import frames_of_scene, scene_spec, simulate_scene
    arrays = simulate_scene(scene_spec('test', 0, 0.4), camera=True, source_images=True)
    return frames_of_scene(arrays)[-1], arrays['source_images'][-1]


@pytest.mark.skipif(not (ENGINE / 'card.yaml').is_file(), reason='no committed camera model')
@pytest.mark.parametrize('precision', ['fp32', 'int8'])
def test_committed_camera_model_finds_the_car_on_a_test_frame(precision, test_scene_frame):
    from fmdrive.inference.detectors import load_detector
    detector = load_detector(ENGINE, precision, 'onnxruntime', threads=1)
    frame, image = test_scene_frame
    cars = [j for j in range(len(frame.labels)) if frame.labels[j] == 0 and frame.camera_pixels[j] >= 400]
    assert cars, 'the test scene should show a car'
    found = [d for d in detector.detect(image) if d.label == 'car']
    assert found and found[0].embedding.shape == (64,)
    gt = frame.boxes2d[cars].copy()                      # letterboxed input pixels -> source pixels
    gt[:, [0, 2]] *= 2.0
    gt[:, [1, 3]] = (gt[:, [1, 3]] - 6.0) * 2.0
    assert max(_iou_xyxy(d.box2d, gt).max() for d in found) >= 0.5


def _iou_xyxy(box, boxes):
    """IoU of one [x0, y0, x1, y1] box with each of boxes (numpy: this test runs without torch)."""
    box, boxes = np.asarray(box, float), np.asarray(boxes, float).reshape(-1, 4)
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return w * h / (area(box) + area(boxes) - w * h)


def test_2d_ap_and_its_paired_int8_gap_over_scenes():
    pytest.importorskip('torch', reason='camera_model needs torch (requirements-train.txt)')
    import importlib.util
    from types import SimpleNamespace

    from fmdrive import config
    from fmdrive.training.camera_model import ap_2d
    spec = importlib.util.spec_from_file_location('bench_camera', config.package_file('benchmarks/camera.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    car = config.CLASSES.index('car')
    box = np.array([[10.0, 10.0, 50.0, 40.0]])
    frames = [SimpleNamespace(labels=np.array([car]), boxes2d=box, camera_pixels=np.array([500]), scene=f's{k // 4}')
              for k in range(16)]
    hit = (box.copy(), np.array([0.9]), np.array([car]))
    miss = (box + 30.0, np.array([0.9]), np.array([car]))           # IoU 0: a false positive and a miss
    fp32 = [hit] * 16
    int8 = [hit] * 12 + [miss] * 4                                  # the last scene lost by int8
    assert ap_2d(fp32, frames)['ap']['car'] == pytest.approx(1.0)
    assert ap_2d(int8, frames)['recall']['car'] == pytest.approx(0.75)
    gap = bench.int8_gaps(fp32, int8, frames)
    assert gap['car']['difference'] == pytest.approx(ap_2d(int8, frames)['ap']['car'] - 1.0, abs=1e-4)
    assert gap['car']['scenes'] == 4
    lo, hi = gap['car']['ci95']
    assert lo < gap['car']['difference'] <= hi <= 0.0 and lo < hi     # a draw without that scene: no gap
    assert gap['pedestrian']['difference'] is None                    # no pedestrian ground truth
    same = bench.int8_gaps(fp32, fp32, frames)['car']
    assert same['difference'] == 0.0 and same['ci95'] == [0.0, 0.0]
