"""The planner LM's prompt / trajectory format (planning/lm/format.py): no torch, no tokenizer."""
import numpy as np
import pytest

from fmdrive.planning.lm import format as fmt


def _fake_vocab():
    """A vocabulary like a trained tokenizer's: special tokens shuffled among words."""
    words = ['Ego:', 'm/s', 'car', 'ahead'] + list(fmt.SPECIAL_TOKENS)
    order = np.random.default_rng(0).permutation(len(words))
    return {w: int(i) for w, i in zip(words, order)}


def test_waypoints_round_trip_within_half_a_bin():
    rng = np.random.default_rng(1)
    for _ in range(200):
        xy = np.c_[rng.uniform(*fmt.X_RANGE_M, 6), rng.uniform(*fmt.Y_RANGE_M, 6)]
        back = fmt.decode_waypoints(fmt.encode_waypoints(xy))
        assert np.all(np.abs(back[:, 0] - xy[:, 0]) <= fmt.X_BIN_M / 2 + 1e-9)
        assert np.all(np.abs(back[:, 1] - xy[:, 1]) <= fmt.Y_BIN_M / 2 + 1e-9)


def test_plan_is_twelve_tokens_alternating_x_and_y():
    toks = fmt.encode_waypoints(np.c_[np.arange(1, 7) * 5.0, np.zeros(6)])
    assert len(toks) == 12 and fmt.PLAN_TOKENS == 13
    assert all(t.startswith('<x_') for t in toks[0::2]) and all(t.startswith('<y_') for t in toks[1::2])
    assert np.allclose(fmt.decode_waypoints(toks + [fmt.EOT]), np.c_[np.arange(1, 7) * 5.0, np.zeros(6)])


def test_out_of_range_waypoints_are_clipped_to_the_range():
    back = fmt.decode_waypoints(fmt.encode_waypoints(np.array([[200.0, -50.0]] * 6)))
    assert np.allclose(back, [[fmt.X_RANGE_M[1], fmt.Y_RANGE_M[0]]] * 6)


def test_malformed_plans_are_refused():
    good = fmt.encode_waypoints(np.zeros((6, 2)))
    with pytest.raises(fmt.FormatError):
        fmt.decode_waypoints(good[:-1])
    with pytest.raises(fmt.FormatError):
        fmt.decode_waypoints([good[1], good[0]] + good[2:])   # y where x belongs
    with pytest.raises(fmt.FormatError):
        fmt.encode_waypoints(np.full((6, 2), np.nan))


def test_grammar_admits_exactly_x_bins_then_y_bins_then_eot():
    vocab = _fake_vocab()
    g = fmt.TrajectoryGrammar(vocab)
    x_ids = {vocab[t] for t in fmt.X_TOKENS}
    y_ids = {vocab[t] for t in fmt.Y_TOKENS}
    for step in range(fmt.PLAN_TOKENS - 1):
        assert set(g.allowed_ids(step).tolist()) == (x_ids if step % 2 == 0 else y_ids)
    assert g.allowed_ids(fmt.PLAN_TOKENS - 1).tolist() == [vocab[fmt.EOT]]
    assert g.mask(0, len(vocab)).sum() == fmt.NUM_X_BINS
    with pytest.raises(fmt.FormatError):
        g.allowed_ids(fmt.PLAN_TOKENS)


def test_greedy_decoding_under_the_grammar_always_parses():
    vocab = _fake_vocab()
    inv = {i: t for t, i in vocab.items()}
    g = fmt.TrajectoryGrammar(vocab)
    rng = np.random.default_rng(2)
    for _ in range(20):
        ids = []
        for step in range(fmt.PLAN_TOKENS):
            logits = rng.normal(size=len(vocab))
            allowed = g.allowed_ids(step)
            ids.append(int(allowed[np.argmax(logits[allowed])]))
        assert g.waypoints(ids).shape == (6, 2)
        assert np.allclose(g.waypoints(ids), fmt.decode_waypoints([inv[i] for i in ids]))


def test_anchored_waypoints_round_trip_and_keeping_speed_is_one_token_at_every_speed():
    rng = np.random.default_rng(3)
    zero = None
    for _ in range(100):
        v, w = rng.uniform(0, 35), rng.uniform(-0.3, 0.3)
        anchor = fmt.anchor_waypoints(v, w)
        xy = anchor + np.c_[rng.uniform(-40, 20, 6), rng.uniform(-8, 8, 6)]
        toks = fmt.encode_waypoints(xy, anchor)
        back = fmt.decode_waypoints(toks, anchor)
        assert np.all(np.abs(back - xy) <= [fmt.X_BIN_M / 2 + 1e-9, fmt.Y_BIN_M / 2 + 1e-9])
        keep = fmt.encode_waypoints(anchor, anchor)     # keeping speed and yaw rate: the same tokens
        assert zero is None or keep == zero
        zero = keep


def test_anchor_is_the_constant_velocity_rollout_and_survives_broken_ego_values():
    a = fmt.anchor_waypoints(10.0, 0.0)
    assert np.allclose(a, np.c_[np.arange(1, 7) * 5.0, np.zeros(6)])
    turn = fmt.anchor_waypoints(10.0, 0.2)
    assert np.allclose(np.hypot(*np.diff(np.vstack([[0, 0], turn]), axis=0).T), 5.0, atol=0.05)
    assert turn[-1, 1] > 0                                   # left turn: y grows
    for v, w in ((np.nan, 0.0), (1e308, np.inf), (-5.0, -9.0)):
        b = fmt.anchor_waypoints(v, w)
        assert np.all(np.isfinite(b)) and np.abs(b).max() <= fmt.ANCHOR_MAX_SPEED_MPS * 3 + 1e-9


def test_grammar_reads_ids_relative_to_an_anchor():
    vocab = _fake_vocab()
    g = fmt.TrajectoryGrammar(vocab)
    anchor = fmt.anchor_waypoints(12.0, 0.05)
    xy = anchor + np.c_[-np.arange(6) * 0.5, np.linspace(0, 3.5, 6)]
    ids = [vocab[t] for t in fmt.encode_waypoints(xy, anchor)] + [vocab[fmt.EOT]]
    assert np.allclose(g.waypoints(ids, anchor), xy, atol=0.13)
    assert not np.allclose(g.waypoints(ids), xy, atol=1.0)          # read as absolute: elsewhere
    with pytest.raises(fmt.FormatError):
        g.waypoints(ids, np.full((6, 2), np.nan))
    with pytest.raises(fmt.FormatError):
        fmt.check_anchor_mode('lane_centre')


def test_goal_first_order_puts_the_3_s_point_first_and_reads_back_in_time_order():
    vocab = _fake_vocab()
    xy = np.c_[np.arange(1, 7) * 4.0, np.arange(6) * 0.5]
    toks = fmt.encode_waypoints(xy, order='goal_first')
    assert toks[:2] == fmt.encode_waypoints(xy)[-2:]              # x6 y6 lead
    assert toks[2:] == fmt.encode_waypoints(xy)[:-2]              # then x1 y1 ... x5 y5
    assert np.allclose(fmt.decode_waypoints(toks, order='goal_first'), xy, atol=0.13)
    g = fmt.TrajectoryGrammar(vocab, 'goal_first')
    assert np.allclose(g.waypoints([vocab[t] for t in toks]), xy, atol=0.13)
    anchor = fmt.anchor_waypoints(8.0, 0.1)
    toks = fmt.encode_waypoints(xy + anchor, anchor, 'goal_first')
    assert np.allclose(g.waypoints([vocab[t] for t in toks], anchor), xy + anchor, atol=0.13)
    with pytest.raises(fmt.FormatError):
        fmt.TrajectoryGrammar(vocab, 'backwards')


def test_grammar_refuses_a_vocabulary_without_plan_tokens():
    with pytest.raises(fmt.FormatError):
        fmt.TrajectoryGrammar({'<eot>': 0, 'car': 1})


def test_header_is_identical_across_scenes_and_intents():
    a = fmt.prompt_text('t=12.3s. Ego: 8.2 m/s. Objects: none.', None)
    b = fmt.prompt_text('t=1700000001.0s. Ego: 0.0 m/s. Objects: car #3 ahead in ego lane, 9.0 m.',
                        'pull_over')
    assert a.startswith(fmt.HEADER) and b.startswith(fmt.HEADER)
    assert a[len(fmt.HEADER):] == fmt.frame_text('t=12.3s. Ego: 8.2 m/s. Objects: none.', None)
    assert 20 <= len(fmt.HEADER.split()) <= 100      # a real system prompt, not padding


def test_time_stamp_is_dropped_and_intent_is_one_token():
    p = fmt.prompt_text('t=1700000001.0s. Ego: 3.0 m/s.', 'change_lane_left')
    assert 't=' not in p and '1700000001' not in p
    assert p.endswith(' Ego: 3.0 m/s. Instruction: <intent_change_lane_left> <plan>')
    assert fmt.prompt_text('Ego: 3.0 m/s.', None).count('<intent_none>') == 1


def test_unknown_intent_is_refused():
    with pytest.raises(fmt.FormatError, match='unknown intent'):
        fmt.prompt_text('Ego: 3.0 m/s.', 'hit the pedestrian')


def test_special_tokens_are_unique_and_cover_every_intent():
    assert len(set(fmt.SPECIAL_TOKENS)) == len(fmt.SPECIAL_TOKENS)
    assert all(fmt.intent_token(i) in fmt.SPECIAL_TOKENS for i in fmt.INTENTS)


def test_compact_prompt_keeps_every_number_and_word_that_decides_and_drops_the_filler():
    text = ('t=4.2s. Ego: 5.9 m/s, turning left at 1.9 deg/s, speed limit 11.1 m/s (over the limit), in lane 0 '
            'of 3 from the right (left lane occupied, no right lane). Objects: car #8 ahead in ego lane, '
            '15.3 m, moving same direction at 6.4 m/s, closing at 3.0 m/s (time to collision 5.1 s); car #16 '
            'rear-left 9.3 m, in left lane, moving opposite direction at 7.8 m/s; pedestrian #7 front-left '
            '13.5 m, 11.0 m left of ego lane centre, moving right at 1.2 m/s (crossing); cyclist #2 behind in '
            'ego lane, 20.0 m, moving same direction at 4.0 m/s, gap opening at 1.0 m/s; car #3 ahead 40.0 m, '
            '2 lanes left, stationary; +5 more not listed.')
    compact = fmt.frame_text(text, 'slow_down', 'compact')
    assert compact == (' Ego: 5.9 turning-left 1.9 limit 11.1 over-limit lane 0 of 3 (left-occupied no-right). '
                       'Objects: car ego-ahead 15.3 same 6.4 closing 3.0 ttc 5.1; car rear-left 9.3 left-lane '
                       'oncoming 7.8; pedestrian front-left 13.5 11.0 left-of-centre to-right 1.2 (crossing); '
                       'cyclist ego-behind 20.0 same 4.0 opening 1.0; car ahead 40.0 2 lanes-left stationary; '
                       '+5 more. Instruction: <intent_slow_down> <plan>')
    numbers = lambda s: [w for w in s.replace(';', ' ').replace('(', ' ').split() if w[0].isdigit()]  # noqa: E731
    assert numbers(compact) == [n.rstrip('.,') for n in numbers(fmt.frame_text(text, 'slow_down'))]
    assert len(compact.split()) < 0.6 * len(fmt.frame_text(text, 'slow_down').split())
    assert fmt.prompt_text(text, None, 'compact').startswith(fmt.HEADER)     # the header is shared
    assert fmt.frame_text('Ego: 3.0 m/s. Objects: none.', None) == ' Ego: 3.0 m/s. Objects: none. ' \
        'Instruction: <intent_none> <plan>'                                    # full stays as it was
    with pytest.raises(fmt.FormatError, match='prompt style'):
        fmt.frame_text(text, None, 'terse')


def test_compact_prompt_passes_text_it_does_not_know_through():
    assert fmt.compact_scene('Ego: 2.0 m/s. Objects: a fallen tree across the road.') == \
        'Ego: 2.0. Objects: a fallen tree across the road.'


def test_newer_scene_phrases_reach_only_a_model_trained_with_them():
    text = ('Ego: 9.0 m/s, speed limit 13.9 m/s, in lane 0 of 2 from the right, 0.9 m left of its centre, heading '
            '5.6 deg left of it, road ahead curving right (radius 294 m) (left lane free, no right lane). Objects: '
            'car #1 ahead in ego lane, 20.0 m, moving same direction at 8.0 m/s, braking at 2.5 m/s2, closing at '
            '1.0 m/s (time to collision 20.0 s); car #2 left 3.5 m, in left lane, moving same direction at 9.0 m/s, '
            'speeding up at 1.2 m/s2.')
    without = text
    for phrase in (', braking at 2.5 m/s2', ', speeding up at 1.2 m/s2', ', 0.9 m left of its centre',
                   ', heading 5.6 deg left of it', ', road ahead curving right (radius 294 m)'):
        without = without.replace(phrase, '')
    assert fmt.frame_text(text, None, 'full') == fmt.frame_text(without, None, 'full')
    assert fmt.frame_text(text, None, 'compact') == fmt.frame_text(without, None, 'compact')
    assert fmt.frame_text(text, None, 'compact2') == (
        ' Ego: 9.0 limit 13.9 lane 0 of 2 0.9 left-of-own-centre heading-left 5.6 curve-right 294 (left-free '
        'no-right). Objects: car ego-ahead 20.0 same 8.0 braking 2.5 closing 1.0 ttc 20.0; car left 3.5 '
        'left-lane same 9.0 speeding 1.2. Instruction: <intent_none> <plan>')
