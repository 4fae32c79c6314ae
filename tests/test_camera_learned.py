"""The camera encoder's ROS-free core (fmdrive/perception/camera_learned.py) on a tiny exported model
(tests/test_inference_helpers.py: a CenterNet whose pedestrian heatmap lights up where the image is
bright, box 40 x 24 input pixels, depth 12 m, embedding k = k), on ONNX Runtime; no torch, no ROS."""
import types

import numpy as np
import pytest

from fmdrive import config
from fmdrive.calibration.camera_model import CameraModel
from fmdrive.inference.detectors import load_detector
from fmdrive.perception.camera_learned import MAX_IMAGE_PIXELS, ImageError, LearnedCameraDetector

from test_inference_helpers import centernet_blob_model, centernet_card

# a 1280x720 image fits the 640x384 input at scale 0.5 with 12 rows of padding above and below; the
# input cell (iy 50, ix 100) covers input x 400..404, y 200..204 = source u 800..808, v 376..384
PATCH = (slice(374, 386), slice(798, 810))
CELL_CENTRE_UV = (804.0, 380.0)


@pytest.fixture(scope='module')
def core(tmp_path_factory):
    d = tmp_path_factory.mktemp('camera_tiny')
    return LearnedCameraDetector(load_detector(centernet_card(d, centernet_blob_model(d / 'fp32.onnx')), 'fp32',
                                               'onnxruntime', threads=1))


def image_with_patch(width=1280, height=720):
    image = np.zeros((height, width, 3), np.uint8)
    image[PATCH] = 255
    return image


def camera_for(width, height):
    return CameraModel.from_yaml(config.CAMERA_INFO_FILE).scaled(width, height)


def test_a_bright_patch_is_a_pedestrian_box_in_the_source_pixels_with_its_embedding(core):
    result = core.detect(image_with_patch(), camera_for(1280, 720))
    assert not result.warnings and len(result.objects) == 1
    obj = result.objects[0]
    assert obj.label == 'pedestrian' and obj.score > 0.9
    cu, cv = CELL_CENTRE_UV                           # box 40 x 24 input pixels = 80 x 48 source pixels
    assert np.allclose(obj.box2d, [cu - 40, cv - 24, cu + 40, cv + 24], atol=0.6)
    assert np.allclose(obj.embedding, np.arange(8) / np.linalg.norm(np.arange(8)))      # unit length after the decoder
    assert obj.embedding_space == 'camera_centernet'
    assert not np.any(obj.size), 'a camera detection has no 3D box'


def test_the_depth_head_puts_the_object_12_m_along_the_ray_through_its_box_centre(core):
    camera = camera_for(1280, 720)
    obj = core.detect(image_with_patch(), camera).objects[0]
    assert np.linalg.norm(obj.center) == pytest.approx(12.0)
    uv, _, in_image = camera.project(obj.center[None])
    assert in_image[0] and np.allclose(uv[0], CELL_CENTRE_UV, atol=1.0)


def test_a_camera_info_of_another_resolution_is_scaled_to_the_image_and_said(core):
    result = core.detect(image_with_patch(), camera_for(640, 360))
    assert any('scaled' in w for w in result.warnings)
    uv, _, _ = camera_for(1280, 720).project(result.objects[0].center[None])
    assert np.allclose(uv[0], CELL_CENTRE_UV, atol=1.5)


def test_without_a_camera_the_boxes_come_without_a_position(core):
    obj = core.detect(image_with_patch(), None).objects[0]
    assert obj.box2d is not None and not np.any(obj.center)


def test_a_bgr_image_of_another_size_gives_the_same_box_in_its_own_pixels(core):
    image = np.zeros((360, 640, 3), np.uint8)       # half size: no letterbox scaling left to do but padding
    image[187:193, 399:405] = 255
    result = core.detect(image[:, :, ::-1].copy(), camera_for(640, 360), image_order='bgr')
    assert len(result.objects) == 1
    assert np.allclose(result.objects[0].box2d, [402 - 20, 190 - 12, 402 + 20, 190 + 12], atol=0.6)


def test_the_embedding_map_is_handed_out_as_the_feature_map_with_its_stride(core):
    result = core.detect(np.zeros((720, 1280, 3), np.uint8), None)
    assert result.objects == []
    assert result.features.shape == (8, 96, 160) and result.feature_stride == 4
    assert result.features[3, 10, 10] == 3.0


@pytest.mark.parametrize('image, why', [
    (np.zeros((0, 640, 3), np.uint8), 'zero size'),
    (np.zeros((48, 64), np.uint8), 'height, width, 3'),
    (np.full((48, 64, 3), np.nan, np.float32), 'uint8'),
    (np.lib.stride_tricks.as_strided(np.zeros(3, np.uint8), (20000, 20000, 3), (0, 0, 1)), 'larger than'),
])
def test_images_the_encoder_cannot_take_are_refused_with_the_reason(core, image, why):
    with pytest.raises(ImageError, match=why):
        core.detect(image, None)
    assert 20000 * 20000 > MAX_IMAGE_PIXELS


def test_a_failing_or_nan_backend_gives_warnings_not_exceptions(core):
    def boom(image, order):
        raise RuntimeError('device lost')
    broken = LearnedCameraDetector(types.SimpleNamespace(card=core.detector.card, detect=boom))
    result = broken.detect(image_with_patch(), None)
    assert result.objects == [] and 'device lost' in result.warnings[0]

    real = core.detector

    def nan_scores(image, order):
        dets = real.detect(image, order)
        dets[0].box2d = np.full(4, np.nan)
        return dets
    nan = LearnedCameraDetector(types.SimpleNamespace(card=real.card, detect=nan_scores, input=real.input,
                                                      last_timing_ms={}))
    result = nan.detect(image_with_patch(), None)
    assert result.objects == [] and 'NaN' in result.warnings[0]
