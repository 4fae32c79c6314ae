"""Specification of the drawing cores (fmdrive/visualization.py): camera overlay, marker data, BEV."""
from __future__ import annotations

import numpy as np
import pytest

from fmdrive.geometry import inv_T, make_T, quat_to_rot
from fmdrive.objects import EgoState, Object3D
from fmdrive.visualization import (CLASS_COLORS, DETECTION_COLOR, GT_COLOR, PLAN_COLOR,
                                   TRACK_COLOR, BevCanvas, clip_segments_near, clip_segments_rect,
                                   depth_colors, draw_bev, draw_overlay, markers_data)

# the simulated front camera (calibration/camera_front.yaml, extrinsics.yaml)
K = np.array([[400.0, 0.0, 319.5], [0.0, 400.0, 179.5], [0.0, 0.0, 1.0]])
T_CAMERA_BASE = inv_T(make_T(quat_to_rot([-0.5, 0.5, -0.5, 0.5]), [1.6, 0.0, 1.4]))
GREY = 50


def blank(h=360, w=640):
    return np.full((h, w, 3), GREY, np.uint8)


def changed(before, after):
    return np.any(before != after, axis=2)


def car(x, y, label='car', id=0):
    return Object3D([x, y, 0.8], [4.5, 1.9, 1.6], 0.0, label, 0.9, id)


# ------------------------------------------------------------------ overlay
def test_box_in_front_of_the_camera_is_drawn_where_it_projects():
    img = blank()
    out = draw_overlay(img, K, T_CAMERA_BASE, None, [car(20.0, 0.0)], None, labels=False)
    rows, cols = np.nonzero(changed(img, out))
    assert len(rows) > 50
    # the box straddles the optical axis (image centre) at 20 m: about +-0.95 m -> +-20 px
    assert 280 < cols.min() < 319.5 < cols.max() < 360
    assert np.all(out[rows, cols] == CLASS_COLORS['car'])


def cam_box(u0, v0, u1, v1, label='pedestrian'):
    return Object3D([0, 0, 0], [0, 0, 0], 0.0, label, 0.8, box2d=np.array([u0, v0, u1, v1], float))


def test_camera_2d_boxes_are_drawn_dashed_on_their_pixels():
    img = blank()
    out = draw_overlay(img, K, T_CAMERA_BASE, None, [], None, boxes2d=[cam_box(100, 50, 160, 200)], labels=False)
    rows, cols = np.nonzero(changed(img, out))
    assert rows.min() >= 49 and rows.max() <= 201 and cols.min() >= 99 and cols.max() <= 161
    assert np.all(out[rows, cols] == CLASS_COLORS['pedestrian'])
    top = changed(img, out)[50, 100:161]
    assert 0.3 < top.mean() < 0.8          # dashed, not solid
    assert not changed(img, out)[60:190, 110:150].any()   # an outline, not a filled box


def test_camera_2d_boxes_off_the_image_or_not_finite_are_skipped_and_others_clipped():
    img = blank()
    skipped = [cam_box(700, 10, 800, 50), cam_box(np.nan, 0, 10, 10), cam_box(50, 50, 40, 60),
               Object3D([0, 0, 0], [0, 0, 0], 0.0, 'car', 0.5)]
    assert np.array_equal(draw_overlay(img, K, T_CAMERA_BASE, None, [], None, boxes2d=skipped), img)
    out = draw_overlay(img, K, T_CAMERA_BASE, None, [], None, boxes2d=[cam_box(-50, -20, 30, 40, 'car')],
                       labels=False)
    rows, cols = np.nonzero(changed(img, out))
    assert len(rows) and rows.max() <= 40 and cols.max() <= 30


def test_box_behind_the_camera_is_ignored():
    img = blank()
    out = draw_overlay(img, K, T_CAMERA_BASE, None, [car(-15.0, 0.0, id=4)], None)
    assert np.array_equal(out, img)


def test_box_straddling_the_camera_plane_is_clipped_not_wrapped():
    # a long truck beside the ego from 20 m behind to 20 m ahead: only its front part shows, on
    # the left half of the image (it is to the left); nothing folds over to the right
    truck = Object3D([0.0, 4.0, 1.5], [40.0, 2.5, 3.0], 0.0, 'car', 1.0, 2)
    img = blank()
    out = draw_overlay(img, K, T_CAMERA_BASE, None, [truck], None, labels=False)
    cols = np.nonzero(changed(img, out))[1]
    assert len(cols) > 0 and cols.max() < 320


def test_near_plane_clipping_moves_the_hidden_end_onto_the_plane():
    a = np.array([[0.0, 0.0, -5.0], [0.0, 0.0, -5.0]])
    b = np.array([[2.0, 0.0, 5.0], [1.0, 0.0, -1.0]])
    a2, b2, keep = clip_segments_near(a, b, near_m=0.5)
    assert keep.tolist() == [True, False]
    assert a2[0, 2] == pytest.approx(0.5) and a2[0, 0] == pytest.approx(1.1)
    assert np.array_equal(b2[0], b[0])


def test_segments_are_clipped_to_the_image_rectangle():
    p0 = np.array([[-100.0, 50.0], [10.0, 10.0], [-5.0, -5.0]])
    p1 = np.array([[100.0, 50.0], [20.0, 20.0], [-1.0, -9.0]])
    q0, q1, keep = clip_segments_rect(p0, p1, 64, 48)
    assert keep.tolist() == [False, True, False]          # row 50 lies below a 48-px image
    q0, q1, keep = clip_segments_rect(np.array([[-100.0, 20.0]]), np.array([[100.0, 20.0]]), 64, 48)
    assert keep[0] and q0[0].tolist() == [0.0, 20.0] and q1[0].tolist() == [63.0, 20.0]


def test_points_behind_the_camera_are_not_projected():
    pts = np.c_[np.full(100, -10.0), np.linspace(-5, 5, 100), np.zeros(100), np.ones(100)]
    img = blank()
    assert np.array_equal(draw_overlay(img, K, T_CAMERA_BASE, pts, [], None), img)


def test_points_are_coloured_by_depth_near_warm_far_cold():
    near = np.array([[6.0, 0.0, 0.0]])
    far = np.array([[58.0, 0.0, 1.4]])
    img = blank()
    out_near = draw_overlay(img, K, T_CAMERA_BASE, near, [], None)
    out_far = draw_overlay(img, K, T_CAMERA_BASE, far, [], None)
    c_near = out_near[changed(img, out_near)][0].astype(int)
    c_far = out_far[changed(img, out_far)][0].astype(int)
    assert c_near[0] > c_near[2] and c_far[2] > c_far[0]
    assert np.array_equal(depth_colors(np.array([4.4]))[0], c_near)


def test_many_points_are_drawn_without_leaving_the_image():
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-30, 80, 30_000), rng.uniform(-40, 40, 30_000),
                rng.uniform(-2, 3, 30_000), rng.uniform(0, 1, 30_000)]
    img = blank()
    out = draw_overlay(img, K, T_CAMERA_BASE, pts, [car(12, 1, id=3)], np.c_[np.arange(1, 30.0),
                                                                              np.zeros(29)])
    assert out.shape == img.shape and out.dtype == np.uint8
    assert changed(img, out).mean() > 0.05


def test_trajectory_is_a_ribbon_on_the_ground_ahead():
    traj = np.c_[np.arange(0.5, 30.01, 0.5), np.zeros(60), np.zeros(60)]
    img = blank()
    out = draw_overlay(img, K, T_CAMERA_BASE, None, [], traj)
    mask = changed(img, out)
    rows, cols = np.nonzero(mask)
    assert rows.min() > 180                      # below the horizon (the ground)
    assert mask[340, 320] and not mask[340, 20]  # centred in front of the car
    r, g, b = out[340, 320].astype(int)
    assert r > GREY and b > GREY and g < r       # blended towards magenta
    assert np.all(out[~mask] == GREY)
    assert PLAN_COLOR[0] > PLAN_COLOR[1]


def test_overlay_rejects_a_grey_image_with_a_clear_message():
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        draw_overlay(np.zeros((10, 10), np.uint8), K, T_CAMERA_BASE)


def test_overlay_does_not_modify_its_input():
    img = blank()
    draw_overlay(img, K, T_CAMERA_BASE, np.array([[10.0, 0, 0]]), [car(10, 0)], None)
    assert np.all(img == GREY)


# ------------------------------------------------------------------ markers
def test_markers_describe_each_object_and_the_plan():
    objs = [car(10, 0, id=7), car(20, 3, 'pedestrian', id=0)]
    plan = np.c_[np.arange(6.0), np.zeros(6), np.zeros(6)]
    m = markers_data(objs, plan)
    assert m[0]['action'] == 'deleteall'
    cubes = [d for d in m if d['type'] == 'cube']
    texts = [d for d in m if d['type'] == 'text']
    strips = [d for d in m if d['type'] == 'line_strip']
    assert len(cubes) == 2 and len(texts) == 2 and len(strips) == 1
    assert cubes[0]['id'] == 7 and cubes[0]['frame_id'] == 'base_link'
    assert cubes[0]['pose']['position'] == [10.0, 0.0, 0.8]
    assert cubes[0]['scale'] == [4.5, 1.9, 1.6] and len(cubes[0]['color']) == 4
    assert cubes[1]['id'] != 7                       # untracked objects get their own ids
    assert 'car #7' in texts[0]['text'] and texts[0]['pose']['position'][2] > 1.6
    assert strips[0]['frame_id'] == 'odom' and len(strips[0]['points']) == 6


def test_markers_are_plain_python_data():
    import json
    json.dumps(markers_data([car(10, 0, id=1)], np.zeros((3, 3)), clear=False))


# ------------------------------------------------------------------ bird's-eye view
def test_bev_size_follows_the_extent_and_resolution():
    img = draw_bev(extent_m=(-10, 30, -15, 15), px_per_m=5)
    assert img.shape == (200, 150, 3)


def test_bev_draws_gt_green_detections_red_tracks_blue_at_their_places():
    ego = EgoState(100.0, 50.0, np.pi / 2)           # facing +y in odom
    cv = BevCanvas()
    ahead_odom = Object3D([100.0, 80.0, 0.8], [4.5, 1.9, 1.6], np.pi / 2, 'car')   # 30 m ahead
    left_odom = Object3D([90.0, 60.0, 0.8], [4.5, 1.9, 1.6], np.pi / 2, 'car', id=5)  # 10 m left
    behind_odom = Object3D([100.0, 40.0, 0.8], [4.5, 1.9, 1.6], np.pi / 2, 'car')
    img = draw_bev([ahead_odom], [left_odom], [behind_odom], ego=ego, legend=False)

    def has_color_near(xy_base, color, r=14):
        u, v = cv.to_px([xy_base])[0].astype(int)
        patch = img[max(v - r, 0):v + r, max(u - r, 0):u + r].reshape(-1, 3)
        return np.any(np.all(patch == color, axis=1))
    assert has_color_near((30.0, 0.0), GT_COLOR)
    assert has_color_near((10.0, 10.0), DETECTION_COLOR)
    assert has_color_near((-10.0, 0.0), TRACK_COLOR)
    assert not has_color_near((30.0, 0.0), DETECTION_COLOR)


def test_bev_draws_the_plan_magenta_and_the_expert_white():
    traj = np.c_[np.arange(0.0, 30.0, 1.0), np.zeros(30)]
    expert = np.c_[np.arange(0.0, 30.0, 1.0), np.full(30, 10.0)]
    img = draw_bev(trajectory=traj, expert_trajectory=expert, legend=False)
    cv = BevCanvas()
    u, v = cv.to_px([[20.0, 0.0]])[0].astype(int)
    assert np.all(img[v, u] == PLAN_COLOR)
    u, v = cv.to_px([[20.0, 10.0]])[0].astype(int)
    assert np.any(np.all(img[v - 8:v + 8, u - 2:u + 3].reshape(-1, 3) == 255, axis=1))


def test_bev_rejects_an_empty_extent():
    with pytest.raises(ValueError, match='extent_m'):
        draw_bev(extent_m=(10, 0, -5, 5))
