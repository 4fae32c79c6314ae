"""The tensor layout each io_convention promises, checked against a card before any file is read.

A card's `io_convention` decides how its outputs are decoded (decoders.py); this module makes sure
the card's tensors are the ones that decoder reads: names, ranks, channel counts tied to the
classes and the BEV grid, and strides that divide the input. docs/model_cards.md lists the same
layouts for people writing a card.
"""
from __future__ import annotations

from fmdrive.inference.card import CardError, ModelCard, TensorSpec

YOLOX_STRIDES = (8, 16, 32)
AUTOWARE_ENCODER_IN_FEATURES = 9   # x, y, z, time_lag, x-mean, y-mean, z-mean, x-centre, y-centre


def _fail(card: ModelCard, where: str, message: str):
    raise CardError(f'card {card.path}: {where}: {message}')


def _tensor(card: ModelCard, network: str, kind: str, name: str, required: bool = True) -> TensorSpec | None:
    net = card.networks[network]
    tensors = net.inputs if kind == 'inputs' else net.outputs
    for t in tensors:
        if t.name == name:
            return t
    if required:
        _fail(card, f'networks.{network}.{kind}', f'{card.io_convention} needs a tensor named {name!r} '
              f'(the card has {", ".join(t.name for t in tensors)})')
    return None


def _shape(card: ModelCard, network: str, kind: str, t: TensorSpec, expected: tuple):
    """expected: ints, or None where any static size is fine."""
    ok = len(t.shape) == len(expected) and all(isinstance(a, int) and (e is None or a == e)
                                               for a, e in zip(t.shape, expected))
    if not ok:
        shown = [('*' if e is None else e) for e in expected]
        _fail(card, f'networks.{network}.{kind}.{t.name}.shape',
              f'{card.io_convention} needs {shown}, the card says {list(t.shape)}')


def _image_input(card: ModelCard) -> tuple[TensorSpec, int, int]:
    net = card.networks['model']
    if len(net.inputs) != 1:
        _fail(card, 'networks.model.inputs', f'{card.io_convention} takes exactly one image input')
    t = net.inputs[0]
    _shape(card, 'model', 'inputs', t, (1, 3, None, None))
    if t.dtype != 'float32':
        _fail(card, f'networks.model.inputs.{t.name}.dtype', 'the image input must be float32')
    if t.normalisation is None:
        _fail(card, f'networks.model.inputs.{t.name}.normalisation',
              'an image input needs its normalisation (scale, mean, std, channel_order, letterbox)')
    if len(t.normalisation.mean) != 3:
        _fail(card, f'networks.model.inputs.{t.name}.normalisation.mean', 'needs one value per channel (3)')
    return t, t.shape[2], t.shape[3]


def _heads(card: ModelCard, network: str, channels: dict, height: int, width: int, optional=()):
    """Each head [1, channels, height, width]; optional heads [1, *, height, width] when present."""
    for name, c in channels.items():
        _shape(card, network, 'outputs', _tensor(card, network, 'outputs', name), (1, c, height, width))
    for name in optional:
        t = _tensor(card, network, 'outputs', name, required=False)
        if t is not None:
            _shape(card, network, 'outputs', t, (1, None, height, width))


def check_fmdrive_centernet(card: ModelCard):
    _, H, W = _image_input(card)
    heatmap = _tensor(card, 'model', 'outputs', 'heatmap')
    _shape(card, 'model', 'outputs', heatmap, (1, len(card.classes), None, None))
    h, w = heatmap.shape[2:]
    if H % h or W % w or H // h != W // w:
        _fail(card, 'networks.model.outputs.heatmap.shape',
              f'the heads ({h} x {w}) must be the input ({H} x {W}) divided by one integer stride')
    _heads(card, 'model', {'size': 2, 'offset': 2}, h, w, optional=('embedding',))
    depth = _tensor(card, 'model', 'outputs', 'depth', required=False)
    if depth is not None:
        _shape(card, 'model', 'outputs', depth, (1, 1, h, w))


def check_yolox(card: ModelCard):
    _, H, W = _image_input(card)
    net = card.networks['model']
    if len(net.outputs) != 1:
        _fail(card, 'networks.model.outputs', 'yolox has exactly one output [1, anchors, 5 + classes]')
    strides = tuple(card.decoder.get('strides', YOLOX_STRIDES))
    if any(H % s or W % s for s in strides):
        _fail(card, 'decoder.strides', f'each stride {list(strides)} must divide the input {H} x {W}')
    anchors = sum((H // s) * (W // s) for s in strides)
    _shape(card, 'model', 'outputs', net.outputs[0], (1, anchors, 5 + len(card.classes)))


def check_fmdrive_centerpoint(card: ModelCard):
    grid = card.bev_grid
    bev = _tensor(card, 'model', 'inputs', 'bev')
    _shape(card, 'model', 'inputs', bev, (1, len(grid.bev_features), grid.ny, grid.nx))
    h, w = grid.ny // grid.output_stride, grid.nx // grid.output_stride
    _heads(card, 'model', {'heatmap': len(card.classes), 'offset': 2, 'z': 1, 'size': 3, 'rot': 2}, h, w,
           optional=('embedding',))
    axis = _tensor(card, 'model', 'outputs', 'rot_axis', required=False)
    if axis is not None:
        _shape(card, 'model', 'outputs', axis, (1, 2, h, w))


def check_autoware_centerpoint(card: ModelCard):
    grid = card.bev_grid
    features = _tensor(card, 'encoder', 'inputs', 'input_features')
    _shape(card, 'encoder', 'inputs', features,
           (grid.max_pillars, grid.max_points_per_pillar, AUTOWARE_ENCODER_IN_FEATURES))
    pillar = _tensor(card, 'encoder', 'outputs', 'pillar_features')
    if len(pillar.shape) == 3:
        _shape(card, 'encoder', 'outputs', pillar, (grid.max_pillars, 1, None))
    else:
        _shape(card, 'encoder', 'outputs', pillar, (grid.max_pillars, None))
    channels = pillar.shape[-1]
    spatial = _tensor(card, 'head', 'inputs', 'spatial_features')
    _shape(card, 'head', 'inputs', spatial, (1, channels, grid.ny, grid.nx))
    k = 2 if card.decoder.get('has_variance', False) else 1
    h, w = grid.ny // grid.output_stride, grid.nx // grid.output_stride
    _heads(card, 'head', {'heatmap': len(card.classes), 'reg': 2 * k, 'height': 1 * k, 'dim': 3 * k,
                          'rot': 2 * k, 'vel': 2 * k}, h, w)


def check_hf_causal_lm_with_past(card: ModelCard):
    _tensor(card, 'model', 'inputs', 'input_ids')
    _tensor(card, 'model', 'outputs', 'logits')


def check_convention(card: ModelCard):
    """Raise CardError when the card's tensors are not the layout its io_convention decodes."""
    {'fmdrive_centernet': check_fmdrive_centernet, 'yolox': check_yolox,
     'fmdrive_centerpoint': check_fmdrive_centerpoint, 'autoware_centerpoint': check_autoware_centerpoint,
     'hf_causal_lm_with_past': check_hf_causal_lm_with_past}[card.io_convention](card)
