"""The LiDAR encoder's training path (fmdrive/training): dataset determinism, a training step that
learns, ONNX export parity, INT8 variants a card accepts, and the committed model on a test frame.
Tiny networks and a few simulated frames: seconds, not minutes. Torch tests skip without torch
(requirements-train.txt)."""
from pathlib import Path

import numpy as np
import pytest

from fmdrive import config

ENGINE = Path(config.package_file('engines/lidar_centerpoint'))


def _short_scene(split='train', index=0, duration_s=0.6, camera=True):
    from fmdrive.training.dataset import scene_spec, simulate_scene
    return simulate_scene(scene_spec(split, index, duration_s), camera=camera)


def test_dataset_scene_is_deterministic_for_its_split_and_index():
    a, b = _short_scene(), _short_scene()
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a['images'].shape[1:] == (192, 320, 3)


def test_splits_draw_disjoint_scenarios_and_test_variants_share_scenes():
    from fmdrive.training.dataset import scene_spec
    seeds = {s: {scene_spec(s, i).seed for i in range(20)} for s in ('train', 'val', 'test')}
    assert not (seeds['train'] & seeds['val']) and not (seeds['train'] & seeds['test'])
    t32, t128 = scene_spec('test', 3), scene_spec('test128', 3)
    assert (t32.seed, t32.lidar.beams, t128.lidar.beams) == (t128.seed, 32, 128)


def test_dataset_writer_resumes_by_skipping_finished_scenes(tmp_path):
    from fmdrive.training.dataset import load_split, write_split
    first = write_split(tmp_path, 'val', 1, camera=False, progress=False, duration_s=0.4)
    again = write_split(tmp_path, 'val', 1, camera=False, progress=False, duration_s=0.4)
    assert (first['written'], again['written'], again['skipped']) == (1, 0, 1)
    frames = load_split(tmp_path, 'val')
    assert len(frames) == 2 and frames[0].points.shape[1] == 4


def test_targets_put_each_seen_object_on_a_heatmap_peak():
    from fmdrive.training.dataset import frames_of_scene
    pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.training.lidar_model import LidarConfig, make_targets
    frame = next(f for f in frames_of_scene(_short_scene(camera=False)) if (f.lidar_points > 0).any())
    t = make_targets(frame, LidarConfig())
    assert len(t.index) >= 1 and np.isclose(t.heatmap.max(), 1.0)
    assert np.all((t.offset >= 0) & (t.offset < 1))


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    from fmdrive.training.dataset import write_split
    root = tmp_path_factory.mktemp('dataset')
    for split in ('train', 'val', 'test'):
        write_split(root, split, 1, camera=False, progress=False, duration_s=0.8)
    return root


def test_a_few_training_steps_reduce_the_loss(tiny_data):
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.training.lidar_data import split_canvases
    from fmdrive.training.lidar_model import LidarCenterPoint, centerpoint_loss
    from fmdrive.training.train_lidar import frame_pairs, make_batch, seed_everything, tiny_config
    seed_everything(0)
    cfg = tiny_config()
    frames, canvases = split_canvases(tiny_data, 'train', cfg.bev_grid(), progress=False)
    idx = frame_pairs(frames)[:2].reshape(-1)
    x, batch = make_batch(idx, frames, canvases, cfg, np.zeros(len(idx), bool))
    model = LidarCenterPoint(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(12):
        loss, _ = centerpoint_loss(model(x), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_checkpoints_every_epoch_and_resumes(tiny_data, tmp_path):
    pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.training.train_lidar import TrainConfig, train
    tc = TrainConfig(data=str(tiny_data), out=str(tmp_path / 'run'), epochs=1, tiny=True, threads=1)
    train(tc, progress=False, log=lambda *_: None)
    tc.epochs = 2
    result = train(tc, resume=True, progress=False, log=lambda *_: None)
    assert result['epochs_run'] == 2
    assert (tmp_path / 'run' / 'last.pt').is_file() and (tmp_path / 'run' / 'best.pt').is_file()
    assert len((tmp_path / 'run' / 'log.jsonl').read_text().splitlines()) == 2


def test_a_second_stage_starts_from_the_first_and_its_command_names_both(tiny_data, tmp_path):
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.training.export import training_command
    from fmdrive.training.train_lidar import TrainConfig, train
    first = TrainConfig(data=str(tiny_data), out=str(tmp_path / 'one'), epochs=1, tiny=True, threads=1)
    train(first, progress=False, log=lambda *_: None)
    second = TrainConfig(data=str(tiny_data), out=str(tmp_path / 'two'), epochs=1, tiny=True, threads=1, lr=5e-4,
                         init=str(tmp_path / 'one' / 'best.pt'), crop_rows=0, crossing_weight=8.0)
    lines = []
    train(second, progress=False, log=lines.append)
    assert any(line.startswith(f'starting from {tmp_path / "one" / "best.pt"}') for line in lines)
    ck = torch.load(tmp_path / 'two' / 'best.pt', weights_only=False)
    cmd = training_command(ck['train_config'])
    one, two = cmd.split(' && ')
    assert f'--out {tmp_path / "one"} ' in one and '--init' not in one
    assert f'--init {tmp_path / "one" / "best.pt"}' in two and '--crop-rows 0' in two and '--lr 0.0005' in two
    wrong = TrainConfig(data=str(tiny_data), out=str(tmp_path / 'three'), epochs=1, threads=1,
                        init=str(tmp_path / 'one' / 'best.pt'))                 # the full network, not tiny
    with pytest.raises(ValueError, match='is not this one'):
        train(wrong, progress=False, log=lambda *_: None)


def test_export_matches_torch_and_int8_variants_pass_the_card_checks(tiny_data, tmp_path):
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    pytest.importorskip('onnxscript', reason="torch's ONNX exporter needs onnxscript (requirements-train.txt)")
    from fmdrive.inference.card import load_card
    from fmdrive.training.export import export_lidar, quantize_lidar
    from fmdrive.training.lidar_model import LidarCenterPoint
    from fmdrive.training.train_lidar import tiny_config
    torch.manual_seed(0)
    cfg = tiny_config()
    ckpt = tmp_path / 'tiny.pt'
    torch.save({'model': LidarCenterPoint(cfg).state_dict(), 'config': cfg.to_dict(),
                'train_config': {'epochs': 1, 'seed': 0}}, ckpt)
    out = export_lidar(ckpt, tmp_path / 'engine', tiny_data, log=lambda *_: None)
    assert max(out['max_abs_diff'].values()) < 1e-4
    res = quantize_lidar(tmp_path / 'engine', tiny_data, calib_frames=4, methods=('minmax', 'entropy'),
                         log=lambda *_: None)
    card = load_card(tmp_path / 'engine')          # hashes, shapes, QDQ, symmetric int8_trt
    assert set(card.files) == {'fp32', 'int8_trt', 'int8_cpu'} and card.opset >= 17
    # each variant keeps the method its own val mAP prefers, and the card says which
    comparison = res['comparison']
    for variant, method in card.calibration['variant_methods'].items():
        assert comparison[method][variant]['map'] == max(comparison[m][variant]['map'] for m in ('minmax', 'entropy'))
    assert card.calibration['variant_methods'] == res['variant_methods']
    # mixed precision tried too: the five small output heads and the sigmoid in float, not the embedding
    import onnx
    heads = res['comparison'][res['best_method'] + '+float_heads']['float_nodes']
    assert len(heads) == 7 and not any('embedding' in h for h in heads), 'six heads (the axis head too) + sigmoid'
    assert card.calibration['float_nodes'] == res['float_nodes'] and res['float_nodes'] in ([], heads)
    mixed = onnx.load(str(tiny_data / 'cache' / 'quantize' / f'int8_cpu_{res["best_method"]}_float_heads.onnx')).graph
    weights = {i.name for i in mixed.initializer}
    for node in mixed.node:
        if node.name in heads and node.op_type == 'Conv':
            assert node.input[1] in weights, f'{node.name} reads float weights, not a DequantizeLinear'
    assert any(n.op_type == 'DequantizeLinear' for n in mixed.node), 'the rest is still INT8'


def test_committed_lidar_model_has_a_valid_card():
    from fmdrive.inference.card import load_card
    card = load_card(ENGINE)
    assert card.io_convention == 'fmdrive_centerpoint' and set(card.files) == {'fp32', 'int8_trt', 'int8_cpu'}
    assert all(p.path.stat().st_size <= 8 * 2**20 for v in card.files.values() for p in v.values())


@pytest.mark.parametrize('precision', ['fp32', 'int8', 'int8_trt'])
def test_committed_lidar_model_finds_the_car_on_a_test_frame(precision):
    from fmdrive.bev import iou_matrix
    from fmdrive.inference.card import load_card
    from fmdrive.inference.detectors import load_detector
    from fmdrive.training.dataset import frames_of_scene
    if precision == 'int8_trt':      # the Jetson's QDQ graph, run here as bench lidar runs it
        import importlib
        card = importlib.import_module('benchmarks.lidar').trt_variant_card(load_card(ENGINE))
        detector = load_detector(card, 'int8', 'onnxruntime', threads=1)
        assert detector.describe()['networks']['model']['variant'] == 'int8_trt'
    else:
        detector = load_detector(ENGINE, precision, 'onnxruntime', threads=1)
    frames = frames_of_scene(_short_scene('test', 0, duration_s=0.4, camera=False))   # car_following
    frame = frames[-1]
    cars = [o for o, n in zip(frame.gt_objects(), frame.lidar_points)
            if o.label == 'car' and n >= 30 and np.hypot(*o.center[:2]) < 40]
    assert cars, 'the test scene should hold a well-seen car'
    found = [d for d in detector.detect(frame.points) if d.label == 'car']
    assert found and iou_matrix(found, cars).max(0).min() >= 0.5
    assert found[0].embedding.shape == (64,)


# ------------------------------------------------------------------------ ground-truth sampling
def _frames(split, index, duration_s=0.8):
    from fmdrive.training.dataset import frames_of_scene
    return frames_of_scene(_short_scene(split, index, duration_s, camera=False), f'{split}/scene_{index:04d}')


def test_gt_paste_moves_a_cyclist_track_with_its_points_into_another_scene():
    import dataclasses

    from fmdrive.sim import SCENARIO_KINDS
    from fmdrive.training.lidar_augment import PASTED_ID_BASE, CLEARANCE_M, GtDatabase, box_mask, paste_pair
    cyclist = config.CLASSES.index('cyclist')
    source = _frames('train', SCENARIO_KINDS.index('cyclist'))
    db = GtDatabase(source, ('cyclist',))
    assert db.counts()['cyclist'] >= 2 and db.next_of, 'the cyclist scene has a cyclist track in consecutive frames'
    a, b = (dataclasses.replace(f, beams=source[0].beams) for f in _frames('train', SCENARIO_KINDS.index('cut_in'))[:2])
    rng = np.random.default_rng(0)
    pa, pb = next((p for p in (paste_pair(a, b, db, rng, {'cyclist': 2}) for _ in range(20)) if p[0] is not a))
    new = pa.ids >= PASTED_ID_BASE
    assert new.any() and (pa.labels[new] == cyclist).all()
    np.testing.assert_array_equal(pa.ids[new], pb.ids[pb.ids >= PASTED_ID_BASE])    # one track in both frames
    for f in (pa, pb):
        for j in np.flatnonzero(f.ids >= PASTED_ID_BASE):
            inside = box_mask(f.points, f.centers[j], f.sizes[j], float(f.yaws[j]))
            assert 5 <= inside.sum() <= f.lidar_points[j], 'the pasted returns are in the box, nothing else is'
            others = np.delete(np.arange(len(f.ids)), j)
            gap = np.hypot(*(f.centers[others, :2] - f.centers[j, :2]).T) \
                - 0.5 * np.hypot(f.sizes[others, 0], f.sizes[others, 1]) - 0.5 * np.hypot(*f.sizes[j, :2])
            assert (gap >= CLEARANCE_M - 1e-4).all(), 'a pasted box keeps its distance from every other box'
    k = int(np.flatnonzero(pa.ids >= PASTED_ID_BASE)[0])
    assert not np.allclose(pa.centers[k], pb.centers[k]), 'the second frame gets the track\'s next position'
    assert len(a.points) == len(_frames('train', SCENARIO_KINDS.index('cut_in'))[0].points), 'the source is not changed'


def test_gt_paste_refuses_other_sensors_and_occupied_places():
    import dataclasses

    from fmdrive.sim import SCENARIO_KINDS
    from fmdrive.training.lidar_augment import GtDatabase, plan_pastes
    source = _frames('train', SCENARIO_KINDS.index('cyclist'))
    db = GtDatabase(source, ('cyclist',))
    rng = np.random.default_rng(1)
    far = dataclasses.replace(source[0], beams=source[0].beams * 4)
    assert plan_pastes(far, db, rng, {'cyclist': 3}) == [], 'no cyclist from a sensor 4x as dense'
    # the source frame itself: its own cyclist occupies every place the database can put one
    own = [k for k, o in enumerate(db.objects) if o.key[2] == 0]
    assert own
    for _ in range(20):
        assert not {k for k, _ in plan_pastes(source[0], db, rng, {'cyclist': 3}, max_angle=0.0)} & set(own)


def test_the_card_names_the_dataset_command_that_made_the_data(tmp_path):
    import json

    from fmdrive.training.export import dataset_command
    (tmp_path / 'dataset.json').write_text(json.dumps({'splits': {'train': 144, 'val': 18, 'test': 9}, 'camera': False}))
    assert dataset_command(tmp_path) == (f'fmdrive train dataset --out {tmp_path} --scenes 144 --val-scenes 18 '
                                         '--test-scenes 9 --no-camera')
    assert 'sizes unknown' in dataset_command(tmp_path / 'missing')


def test_calibration_reads_in_chunks_that_divide_the_frames():
    from fmdrive.training.export import CanvasReader, calibration_chunk
    assert [calibration_chunk(n) for n in (256, 200, 7, 1)] == [32, 25, 7, 1]
    reader = CanvasReader(np.arange(10, dtype=np.float32).reshape(10, 1), 'x')
    seen = []
    for start in range(0, len(reader), 5):           # what onnxruntime does with CalibStridedMinMax
        reader.set_range(start_index=start, end_index=start + 5)
        while (item := reader.get_next()) is not None:
            seen.append(float(item['x'][0, 0]))
    assert seen == list(range(10)) and len(reader) == 10


def test_global_rotation_turns_points_boxes_and_headings_together():
    from fmdrive.sim import SCENARIO_KINDS
    from fmdrive.training.lidar_augment import box_mask, rotate_frame
    f = next(x for x in _frames('train', SCENARIO_KINDS.index('intersection')) if (x.lidar_points >= 20).any())
    turned = rotate_frame(f, np.pi / 2)
    j = int(np.argmax(f.lidar_points))
    before = box_mask(f.points, f.centers[j], f.sizes[j], float(f.yaws[j])).sum()
    after = box_mask(turned.points, turned.centers[j], turned.sizes[j], float(turned.yaws[j])).sum()
    assert before >= 20 and after == before, 'the same returns fall in the turned box'
    np.testing.assert_allclose(turned.centers[j, :2], [-f.centers[j, 1], f.centers[j, 0]], atol=1e-4)
    assert np.all(np.abs(turned.yaws) <= np.pi + 1e-6) and turned.centers[j, 2] == f.centers[j, 2]
    assert rotate_frame(f, 0.0) is f


@pytest.mark.parametrize('features', [('log_count', 'z_max', 'z_min', 'z_mean'),
                                      ('log_count', 'z_max', 'z_min', 'z_mean', 'x_offset_mean', 'y_offset_mean')])
def test_a_quarter_turn_of_the_cached_canvas_is_the_canvas_of_the_turned_points(features):
    import dataclasses

    from fmdrive.inference.card import BevGrid
    from fmdrive.inference.pillars import bev_canvas
    from fmdrive.sim import SCENARIO_KINDS
    from fmdrive.training.lidar_augment import rotate_frame, turn_canvas
    grid = BevGrid((-51.2, 51.2), (-51.2, 51.2), (-3.0, 5.0), (0.4, 0.4, 8.0), 2,
                   bev_features=features)     # the LiDAR encoder's grid (the offsets turn with the points)
    frames = _frames('train', SCENARIO_KINDS.index('intersection'))[:2]
    canvases = [bev_canvas(f.points, grid)[0] for f in frames]
    # a point right on a cell edge goes to the cell above it ([min, max)), so after a turn to the
    # mirrored one: away from the edges the two canvases must agree exactly
    offset = (frames[0].points[:, :2] - grid.x_range_m[0]) / grid.voxel_size_m[0]
    inner = dataclasses.replace(frames[0], points=frames[0].points[(np.abs(offset - np.round(offset)) > 1e-3).all(1)])
    for turn in (1, -1):
        made = bev_canvas(rotate_frame(inner, turn * np.pi / 2).points, grid)[0]
        turned = turn_canvas(bev_canvas(inner.points, grid)[0], turn, grid)
        np.testing.assert_allclose(turned, made, atol=1e-5)
        assert not np.allclose(turned, canvases[0]), 'the canvas did turn'


def test_the_offset_channels_say_where_in_its_cell_a_point_lies_and_mirror_with_the_canvas():
    from fmdrive.inference.card import BevGrid
    from fmdrive.inference.pillars import MIRROR_Y_NEGATED, bev_canvas
    grid = BevGrid((-4.0, 4.0), (-4.0, 4.0), (-3.0, 5.0), (0.4, 0.4, 8.0), 2,
                   bev_features=('count', 'x_offset_mean', 'y_offset_mean'))
    # two points in the cell x 0.0 .. 0.4, y 0.8 .. 1.2 (centre 0.2, 1.0), one alone in another
    pts = np.array([[0.1, 0.9, 0.0], [0.3, 0.9, 0.0], [-1.0, -1.1, 0.0]], np.float32)
    c = bev_canvas(pts, grid)[0]
    iy, ix = int((1.0 + 4.0) / 0.4), int((0.2 + 4.0) / 0.4)
    assert c[0, iy, ix] == 2
    np.testing.assert_allclose(c[1:, iy, ix], [0.0, -0.25], atol=1e-5)     # mean x at the centre, y 0.1 m below
    jy, jx = int((-1.1 + 4.0) / 0.4), int((-1.0 + 4.0) / 0.4)
    np.testing.assert_allclose(c[1:, jy, jx], [0.0, -0.25], atol=1e-5)     # cell -1.2 .. -0.8, centre -1.0
    assert np.abs(c[1:]).max() <= 0.5 and (c[1:][:, c[0] == 0] == 0).all()
    # mirrored points (y -> -y) give the mirrored canvas with the y offsets negated (what make_batch does)
    mirrored = bev_canvas(pts * np.array([1, -1, 1], np.float32), grid)[0]
    expected = c[:, ::-1].copy()
    expected[[k for k, n in enumerate(grid.bev_features) if n in MIRROR_Y_NEGATED]] *= -1
    np.testing.assert_allclose(mirrored, expected, atol=1e-5)


def test_a_second_stage_with_new_input_channels_starts_as_the_first_stage():
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    import dataclasses

    from fmdrive.training.lidar_model import LidarCenterPoint
    from fmdrive.training.train_lidar import init_weights, tiny_config
    old_cfg = tiny_config(True)
    new_cfg = dataclasses.replace(old_cfg, bev_features=tuple(old_cfg.bev_features) + ('x_offset_mean', 'y_offset_mean'))
    torch.manual_seed(0)
    first = LidarCenterPoint(old_cfg).eval()
    second = LidarCenterPoint(new_cfg).eval()
    second.load_state_dict(init_weights({'config': old_cfg.to_dict(), 'model': first.state_dict()}, new_cfg,
                                        second.state_dict(), 'best.pt'))
    h, w = old_cfg.grid_hw
    x = torch.rand(1, len(old_cfg.bev_features), h, w)
    extra = torch.rand(1, 2, h, w)
    with torch.no_grad():
        a, b = first(x), second(torch.cat([x, extra], 1))
    a, b = (list(a.values()), list(b.values())) if isinstance(a, dict) else (list(a), list(b))
    assert len(a) == len(b) > 0
    for x_a, x_b in zip(a, b):
        torch.testing.assert_close(x_a, x_b, rtol=1e-5, atol=1e-5)
    other = dataclasses.replace(old_cfg, embed_dim=old_cfg.embed_dim * 2)
    with pytest.raises(ValueError, match='is not this one'):
        init_weights({'config': other.to_dict(), 'model': {}}, new_cfg, second.state_dict(), 'best.pt')


def test_quarter_turned_pairs_turn_frames_and_cached_canvases_alike():
    pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.inference.pillars import bev_canvas
    from fmdrive.sim import SCENARIO_KINDS
    from fmdrive.training.lidar_model import LidarConfig
    from fmdrive.training.train_lidar import pasted_pairs
    grid = LidarConfig().bev_grid()
    frames = _frames('train', SCENARIO_KINDS.index('intersection'))[:2]
    canvases = [bev_canvas(f.points, grid)[0] for f in frames]
    out_f, out_c = pasted_pairs([(0, 1)], frames, canvases, None, np.random.default_rng(0), 0.0, {}, grid,
                                quarter_turns=1.0)
    from fmdrive.geometry import wrap_angle
    turns = [wrap_angle(f.yaws - src.yaws) for f, src in zip(out_f, frames)]
    assert np.allclose(np.abs(turns[0]), np.pi / 2, atol=1e-5), 'every heading turned by 90 degrees'
    assert np.allclose(turns[1], turns[0][0], atol=1e-5), 'both frames of the pair by the same turn'
    for f, c in zip(out_f, out_c):
        assert (np.abs(bev_canvas(f.points, grid)[0] - c).max(0) > 1e-5).mean() < 0.01, 'canvas matches the frame'
    same_f, same_c = pasted_pairs([(0, 1)], frames, canvases, None, np.random.default_rng(0), 0.0, {}, grid)
    assert same_f[0] is frames[0] and same_c[0] is canvases[0], 'off by default: the cache is used as is'


def test_axis_rotation_loss_learns_the_axis_where_front_and_back_look_alike():
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.training.lidar_model import rotation_loss
    # a crossing car, +90 or -90 degrees with equal odds: targets (sin, cos) = (1, 0) and (-1, 0)
    targets = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    on_axis = torch.tensor([[1.0, 0.0], [1.0, 0.0]])       # a box along the car (direction a guess)
    average = torch.zeros(2, 2)                            # (0, 0): no heading at all
    along_road = torch.tensor([[0.0, 1.0], [0.0, 1.0]])    # the road's heading: BEV IoU 0.25
    plain = [float(rotation_loss(p, targets, 'l1')) for p in (on_axis, average, along_road)]
    assert plain[0] == pytest.approx(plain[1]), \
        'plain L1 is flat from the axis to (0, 0), whose heading any small bias (the road) then decides'
    axis = [float(rotation_loss(p, targets, 'axis')) for p in (on_axis, average, along_road)]
    assert axis[0] < 0.25 * min(axis[1], axis[2]), 'axis: the car\'s axis is far the cheapest'
    one = torch.tensor([[0.6, 0.8]])
    assert float(rotation_loss(one, one, 'axis')) == pytest.approx(0.0)
    assert float(rotation_loss(one, one, 'l1')) == pytest.approx(0.0)
    assert float(rotation_loss(-one, one, 'axis')) < float(rotation_loss(-one, one, 'l1')), 'a reversed box costs little'
    with pytest.raises(ValueError, match='unknown rotation loss'):
        rotation_loss(one, one, 'l2')


def test_the_axis_head_gives_a_crossing_cars_axis_where_l1_on_the_heading_averages_it_away():
    """The committed L1 model at crossing cars: sin ~0, cos ~0.1 -> atan2 says the road's heading. With
    +90 and -90 degrees equally likely for one shape (the y-flip makes it so), that is the L1 optimum;
    the axis head's target (sin 2 yaw, cos 2 yaw) is the same for both, so it is learned, and the
    decoder turns it into a heading along the car."""
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.inference.decoders import axis_with_direction
    from fmdrive.training.lidar_model import axis_target, rotation_loss
    torch.manual_seed(0)
    targets = torch.tensor([[1.0, 0.0], [-1.0, 0.0]] * 8)       # one crossing car's shape, both directions
    rot = torch.tensor([0.0, 0.1], requires_grad=True)          # one prediction for the one shape
    axis = torch.tensor([0.0, 1.0], requires_grad=True)         # starts at the road's axis
    opt = torch.optim.Adam([rot, axis], lr=0.02)
    for _ in range(400):
        loss = rotation_loss(rot.expand(len(targets), 2), targets, 'l1') \
            + (axis.expand(len(targets), 2) - axis_target(targets)).abs().sum(1).mean() / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    s, c = rot.detach().numpy()
    heading_only = np.degrees(np.arctan2(s, c))
    assert abs(s) < 0.05, 'L1 on the heading settles between +90 and -90 degrees'
    yaw = np.degrees(axis_with_direction(axis.detach().numpy()[:, None], np.array([np.arctan2(s, c)])))[0]
    assert abs(abs(yaw) - 90) < 3, f'decoded with the axis head: {yaw:.1f} deg (heading head alone: {heading_only:.1f})'


def test_the_axis_loss_weighs_crossing_cars_by_axis_crossing_weight():
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.training.lidar_model import centerpoint_loss
    B, C, H, W = 1, 4, 4, 4
    rot = torch.tensor([[0.0, 1.0], [1.0, 0.0]])                    # one car along the road, one crossing
    batch = {'heatmap': torch.zeros(B, C, H, W), 'batch_index': torch.zeros(2, dtype=torch.long),
             'cell_index': torch.tensor([0, 5]), 'offset': torch.zeros(2, 2), 'z': torch.zeros(2),
             'log_size': torch.zeros(2, 3), 'rot': rot, 'instance': torch.tensor([1, 2])}
    road_axis = torch.zeros(B, 2, H, W)
    road_axis[:, 1] = 1.0                                           # the road's axis everywhere: wrong for the crossing car
    outputs = (torch.full((B, C, H, W), 0.1), torch.zeros(B, 2, H, W), torch.zeros(B, 1, H, W),
               torch.zeros(B, 3, H, W), torch.zeros(B, 2, H, W), torch.nn.functional.normalize(torch.randn(B, 8, H, W), dim=1),
               road_axis)
    plain = centerpoint_loss(outputs, batch)[1]['rot_axis']
    heavy = centerpoint_loss(outputs, batch, axis_crossing_weight=9.0)[1]['rot_axis']
    assert plain == pytest.approx(1.0 / 2) and heavy == pytest.approx(9 * 1.0 / 10)


def test_the_decoder_takes_the_axis_from_the_axis_head_and_the_direction_from_the_heading_head():
    from fmdrive.inference.decoders import axis_with_direction
    yaw = np.radians([100.0, 100.0, -170.0, 5.0])
    axis = np.stack([np.sin(2 * yaw), np.cos(2 * yaw)])
    direction = np.radians([170.0, -10.0, 150.0, 5.0])          # a rough heading, within 90 degrees of one end
    got = np.degrees(axis_with_direction(axis, direction))
    np.testing.assert_allclose(got, [100.0, -80.0, -170.0, 5.0], atol=1e-4)


def test_a_card_with_an_axis_head_of_the_wrong_size_is_refused(tmp_path):
    import yaml

    from fmdrive.inference.card import CardError, parse_card
    from fmdrive.inference.conventions import check_convention
    card = yaml.safe_load((ENGINE / 'card.yaml').read_text())     # the committed model has an axis head
    good = parse_card(card, tmp_path / 'card.yaml')
    check_convention(good)
    assert [t.name for t in good.networks['model'].outputs][-1] == 'rot_axis'
    axis = next(t for t in card['networks']['model']['outputs'] if t['name'] == 'rot_axis')
    axis['shape'][1] = 3
    with pytest.raises(CardError, match='rot_axis'):
        check_convention(parse_card(card, tmp_path / 'card.yaml'))


def _boxes_frame(scene, labels, yaws, centers, lidar_points):
    from fmdrive.training.dataset import Frame
    n = len(labels)
    return Frame(points=np.zeros((0, 4), np.float32), image=None, centers=np.asarray(centers, np.float32),
                 sizes=np.tile(np.float32([4.5, 1.8, 1.5]), (n, 1)), yaws=np.asarray(yaws, np.float32),
                 labels=np.asarray(labels, np.int64), ids=np.arange(n), lidar_points=np.asarray(lidar_points),
                 boxes2d=np.full((n, 4), np.nan, np.float32), camera_pixels=np.zeros(n), scene=scene)


def test_pairs_with_crossing_cars_or_cyclists_are_drawn_by_their_weights():
    pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.training.lidar_model import LidarConfig
    from fmdrive.training.train_lidar import frame_pairs, pair_weights
    car, cyclist = config.CLASSES.index('car'), config.CLASSES.index('cyclist')
    along = _boxes_frame('a', [car], [0.1], [[20, 3, 0.8]], [50])
    crossing = _boxes_frame('b', [car], [np.pi / 2], [[30, 0, 0.8]], [50])
    unseen = _boxes_frame('c', [car], [-np.pi / 2], [[30, 0, 0.8]], [3])        # < 5 returns: not a target
    off_grid = _boxes_frame('d', [car], [np.pi / 2], [[60, 0, 0.8]], [50])      # beyond the 51.2 m grid
    rider = _boxes_frame('e', [cyclist], [0.0], [[10, 2, 0.8]], [50])
    frames = [f for f in (along, crossing, unseen, off_grid, rider) for _ in range(2)]
    pairs = frame_pairs(frames)
    grid = LidarConfig().bev_grid()
    assert np.allclose(pair_weights(pairs, frames, grid), 0.2)
    w = pair_weights(pairs, frames, grid, rare_class_weight=3.0, crossing_weight=4.0)
    assert np.allclose(w * 10, [1, 4, 1, 1, 3])


@pytest.mark.parametrize('option, value', [('--crossing-weight', '0.5'), ('--quarter-turns', '1.5'),
                                           ('--gt-paste', '-0.1'), ('--rotate-deg', '270')])
def test_train_lidar_refuses_out_of_range_options_with_one_line(option, value, capsys, tmp_path):
    pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.cli import main
    assert main(['train', 'lidar', '--data', str(tmp_path), '--out', str(tmp_path / 'run'), option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('fmdrive train: error: ' + option) and '\n' not in err
    assert not (tmp_path / 'run').exists()


def test_lidar_only_training_options_are_refused_for_the_camera(capsys, tmp_path):
    pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.cli import main
    assert main(['train', 'camera', '--data', str(tmp_path), '--crossing-weight', '4']) == 2
    assert 'train lidar only' in capsys.readouterr().err


def test_the_export_turns_the_necks_transposed_convs_into_1x1_convs_and_a_pixel_shuffle_exactly():
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    import copy

    import torch.nn as nn

    from fmdrive.training.export import fold_batchnorm, transposed_to_pixel_shuffle
    from fmdrive.training.lidar_model import LidarCenterPoint
    from fmdrive.training.train_lidar import tiny_config
    torch.manual_seed(0)
    model = LidarCenterPoint(tiny_config())
    for m in model.modules():                       # BN statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        ref = model(x)
        folded = fold_batchnorm(copy.deepcopy(model))
        rewritten = transposed_to_pixel_shuffle(fold_batchnorm(copy.deepcopy(model)))
        got = rewritten(x)
    assert any(isinstance(m, nn.ConvTranspose2d) for m in folded.modules())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())
    assert sum(isinstance(m, nn.PixelShuffle) for m in rewritten.modules()) == 2      # strides 4 and 8
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and back (what bench lidar does to run an exported graph's weights as trained)
    from fmdrive.training.export import pixel_shuffle_to_transposed
    up, shuffled = folded.ups[2].layers[0], rewritten.ups[2].layers[0][0]
    w, b = pixel_shuffle_to_transposed(shuffled.weight.detach().numpy(), shuffled.bias.detach().numpy(), up.stride[0])
    np.testing.assert_allclose(w, up.weight.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(b, up.bias.detach().numpy(), atol=1e-6)


def _onnx_up(stride: int, pads=(0, 0, 0, 0), relu: bool = True, bias: bool = True):
    """A graph x -> ConvTranspose(kernel = stride) [-> Relu] -> y, with random weights."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(stride)
    w = rng.normal(size=(6, 5, stride, stride)).astype(np.float32)
    inits = [numpy_helper.from_array(w, 'w')] + ([numpy_helper.from_array(rng.normal(size=5).astype(np.float32), 'b')]
                                                 if bias else [])
    nodes = [helper.make_node('ConvTranspose', ['x', 'w'] + (['b'] if bias else []), ['t' if relu else 'y'], name='up',
                              kernel_shape=[stride, stride], strides=[stride, stride], pads=list(pads))]
    if relu:
        nodes.append(helper.make_node('Relu', ['t'], ['y'], name='relu'))
    h = 7 * stride - pads[0] - pads[2]
    graph = helper.make_graph(nodes, 'up', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 6, 7, 7])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 5, h, h])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])


@pytest.mark.parametrize('stride, relu, bias', [(2, True, True), (4, True, False), (2, False, True)])
def test_the_quantizer_sees_a_graphs_transposed_convs_as_1x1_convs_and_a_pixel_shuffle_exactly(stride, relu, bias):
    """onnx_transposed_to_pixel_shuffle: an ONNX graph (a user's, or one exported before the torch pass)
    gets the same rewrite before quantization; the ReLU moves before the shuffle; outputs unchanged."""
    import onnxruntime as ort

    from fmdrive.training.export import onnx_transposed_to_pixel_shuffle
    model = _onnx_up(stride, relu=relu, bias=bias)
    x = np.random.default_rng(1).normal(size=(1, 6, 7, 7)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider']).run(None, {'x': x})[0]  # noqa: E731
    ref = run(model)
    assert onnx_transposed_to_pixel_shuffle(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == (['Conv', 'Relu', 'DepthToSpace'] if relu else ['Conv', 'DepthToSpace'])
    np.testing.assert_allclose(run(model), ref, atol=1e-5)
    assert {t.name for t in model.graph.initializer}.isdisjoint({'w', 'b'})      # the old weights are gone


def test_a_transposed_conv_that_is_not_a_pixel_shuffle_is_left_alone():
    from fmdrive.training.export import onnx_transposed_to_pixel_shuffle
    model = _onnx_up(2, pads=(1, 1, 1, 1))
    assert onnx_transposed_to_pixel_shuffle(model) == 0
    assert [n.op_type for n in model.graph.node] == ['ConvTranspose', 'Relu']


def test_bench_lidar_splits_car_ap_by_scenario_kind():
    """bench lidar's per-kind car AP: each frame goes to its scene's kind; a kind's figure is of its
    frames alone (a perfect kind stays 1.0 next to one where every car is missed)."""
    import importlib

    from fmdrive.objects import Object3D
    from fmdrive.sim import SCENARIO_KINDS
    from fmdrive.training.dataset import Frame
    bench = importlib.import_module('benchmarks.lidar')

    def frame(scene_index):
        car = np.array([[10.0, 0.0, 0.8]])
        return Frame(np.zeros((0, 4), np.float32), None, car, np.array([[4.5, 1.8, 1.6]]), np.zeros(1),
                     np.array([config.CLASSES.index('car')]), np.array([1]), np.array([40]), np.full((1, 4), np.nan),
                     np.zeros(1, np.int64), f'test/scene_{scene_index:04d}', 32)

    frames = [frame(0), frame(0), frame(4), frame(13)]
    hit = [Object3D((10.0, 0.0, 0.8), (4.5, 1.8, 1.6), 0.0, 'car', 0.9)]
    turned = [Object3D((10.0, 0.0, 0.8), (4.5, 1.8, 1.6), np.pi / 2, 'car', 0.9)]   # right place, 90 deg off
    assert [bench.scenario_kind(f) for f in frames] == [SCENARIO_KINDS[0], SCENARIO_KINDS[0], SCENARIO_KINDS[4],
                                                        SCENARIO_KINDS[4]]
    per_kind = bench.car_ap_per_kind([hit, hit, turned, turned], frames)
    assert per_kind == {SCENARIO_KINDS[0]: 1.0, SCENARIO_KINDS[4]: 0.0}


def test_qat_simulates_the_int8_cpu_graph_onnxruntime_runs(tiny_data, tmp_path):
    """The fake-quantized network is nearer ONNX Runtime's int8_cpu graph (quantized on the same
    canvases, min-max) than the float network is: QAT trains against the rounding that ships."""
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    pytest.importorskip('onnxscript', reason="torch's ONNX exporter needs onnxscript (requirements-train.txt)")
    from fmdrive.training.export import export_lidar, ort_session, quantize_variant
    from fmdrive.training.lidar_data import split_canvases
    from fmdrive.training.lidar_model import LidarCenterPoint
    from fmdrive.training.qat import QAT, measure_ranges
    from fmdrive.training.train_lidar import load_model, tiny_config
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LidarCenterPoint(cfg)
    for m in model.modules():                # a trained-looking BatchNorm, not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    ckpt = tmp_path / 'tiny.pt'
    torch.save({'model': model.state_dict(), 'config': cfg.to_dict(), 'train_config': {'epochs': 1, 'seed': 0}}, ckpt)
    export_lidar(ckpt, tmp_path / 'engine', tiny_data, log=lambda *_: None)
    _, canvases = split_canvases(tiny_data, 'train', cfg.bev_grid(), progress=False)
    calib = np.asarray(canvases[:4], np.float32)
    quantize_variant(tmp_path / 'engine' / 'fp32.onnx', tmp_path / 'int8_cpu.onnx', 'int8_cpu', 'minmax', calib)
    x = calib[:1]
    names = [o.name for o in ort_session(tmp_path / 'int8_cpu.onnx').get_outputs()]
    int8 = dict(zip(names, ort_session(tmp_path / 'int8_cpu.onnx').run(None, {'bev': x})))
    model = load_model(ckpt)
    model.heads.normalize_embedding = False
    with torch.no_grad():
        float_out = dict(zip(names, (t.numpy() for t in model(torch.from_numpy(x)))))
        qat = QAT(model, measure_ranges(model, calib))
        model.eval()
        fake_out = dict(zip(names, (t.numpy() for t in model(torch.from_numpy(x)))))
    for name in ('offset', 'size', 'embedding'):
        err_float = np.abs(float_out[name] - int8[name]).mean()
        err_fake = np.abs(fake_out[name] - int8[name]).mean()
        assert err_fake < 0.5 * err_float, f'{name}: fake quant {err_fake:.2e} vs float {err_float:.2e} from int8'
    qat.detach()
    assert set(model.state_dict()) == set(LidarCenterPoint(cfg).state_dict())


def test_a_qat_stage_writes_a_plain_checkpoint_resumes_and_its_command_says_qat(tiny_data, tmp_path):
    torch = pytest.importorskip('torch', reason='training needs torch (requirements-train.txt)')
    from fmdrive.training.export import training_command
    from fmdrive.training.train_lidar import TrainConfig, load_model, train
    first = TrainConfig(data=str(tiny_data), out=str(tmp_path / 'one'), epochs=1, tiny=True, threads=1)
    train(first, progress=False, log=lambda *_: None)
    qat = TrainConfig(data=str(tiny_data), out=str(tmp_path / 'qat'), epochs=1, tiny=True, threads=1, lr=1e-4,
                      init=str(tmp_path / 'one' / 'best.pt'), qat=True, qat_calib_frames=3)
    lines = []
    train(qat, progress=False, log=lines.append)
    assert any(line.startswith('quantization-aware: int8_cpu rounding simulated') for line in lines)
    load_model(tmp_path / 'qat' / 'best.pt')                  # strict: the keys of a plain network
    ranges = torch.load(tmp_path / 'qat' / 'last.pt', weights_only=False)['qat_ranges']
    assert ranges and all(lo <= hi for lo, hi in ranges.values())
    qat.epochs = 2
    assert train(qat, resume=True, progress=False, log=lambda *_: None)['epochs_run'] == 2
    assert torch.load(tmp_path / 'qat' / 'last.pt', weights_only=False)['qat_ranges'] == ranges
    cmd = training_command(torch.load(tmp_path / 'qat' / 'last.pt', weights_only=False)['train_config'])
    assert '--qat --qat-calib-frames 3' in cmd.split(' && ')[1]
