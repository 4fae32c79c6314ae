"""Quantization-aware fine-tuning of the LiDAR encoder: the network trains with the rounding of
the int8_cpu QDQ graph simulated (fake quantization, straight-through gradients), so its weights
learn to live with it; the checkpoint stays a plain float one, exported and quantized by the usual
commands (export.py's static quantization then finds ranges the weights were trained for).

What is simulated (export.quantize_variant, int8_cpu):
- every convolution's weights, per output channel, symmetric S8 in [-127, 127] (ConvTranspose2d:
  its output channels are dim 1). Per-channel symmetric rounding is unchanged by a positive (or
  negative) per-channel factor, so quantizing the weights before the frozen BatchNorm that follows
  is quantizing the folded ones the export writes;
- every convolution's input (the BEV canvas, then each ReLU output; the concatenated neck) and
  every output head's conv output, per tensor, asymmetric U8 with the min-max range measured on
  calibration canvases before fine-tuning (min-max: the method the committed card keeps). The
  ranges stay fixed while training (a short fine-tune from a trained model; ONNX Runtime's
  calibration on the final weights sets the deployed ones);
- BatchNorm frozen (running statistics, affine kept), as the export folds it.
The int8_trt variant (symmetric S8 activations) rounds the same tensors a little coarser; it is not
simulated apart.

    fmdrive train lidar --init runs/lidar_offsets/best.pt --qat --epochs 1 --lr 2e-4 ... --out runs/lidar_qat
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize

W_QMIN, W_QMAX = -127, 127           # onnxruntime's symmetric S8 weights
A_QMIN, A_QMAX = 0, 255              # U8 activations (int8_cpu)


class WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric S8 fake quantization of a conv weight (a parametrization)."""

    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, w):
        dims = [d for d in range(w.dim()) if d != self.axis]
        amax = w.detach().abs().amax(dim=dims).clamp_min(1e-8)
        scale = (amax / W_QMAX).float()
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, self.axis, W_QMIN, W_QMAX)


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of asymmetric U8 over [lo, hi] widened to hold 0, as onnxruntime computes them."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (A_QMAX - A_QMIN) if hi > lo else 1.0
    zero = int(round(A_QMIN - lo / scale))
    return scale, max(A_QMIN, min(A_QMAX, zero))


def fake_quant_activation(x, qparams):
    scale, zero = qparams
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, A_QMIN, A_QMAX)


def quantized_convs(model) -> dict:
    """name -> module of every Conv2d / ConvTranspose2d of the network."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}


def head_convs(model) -> dict:
    """name -> module of the output heads' 1x1 convs (their outputs are graph outputs, quantized too)."""
    return {n: m for n, m in quantized_convs(model).items() if n.startswith('heads.heads.')}


@torch.no_grad()
def measure_ranges(model, canvases, batch: int = 4) -> dict:
    """Min-max of every conv's input ('<name>:in') and every head conv's output ('<name>:out') of the
    float network (eval mode) over the canvases [N, F, H, W]."""
    ranges: dict = {}

    def note(key, t):
        lo, hi = float(t.min()), float(t.max())
        old = ranges.get(key)
        ranges[key] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    hooks = []
    for name, m in quantized_convs(model).items():
        hooks.append(m.register_forward_pre_hook(lambda mod, args, key=f'{name}:in': note(key, args[0])))
    for name, m in head_convs(model).items():
        hooks.append(m.register_forward_hook(lambda mod, args, out, key=f'{name}:out': note(key, out)))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(canvases), batch):
            model(torch.as_tensor(canvases[i:i + batch], dtype=torch.float32))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return ranges


class QAT:
    """Fake quantization attached to a LidarCenterPoint (see the module docstring); detach() leaves
    the plain float network with the fine-tuned weights."""

    def __init__(self, model, ranges: dict):
        self.model, self.ranges = model, dict(ranges)
        self.hooks = []
        convs = quantized_convs(model)
        missing = [n for n in convs if f'{n}:in' not in ranges]
        if missing:
            raise ValueError(f'no calibrated range for the inputs of {missing[:3]}')
        for name, m in convs.items():
            axis = 1 if isinstance(m, nn.ConvTranspose2d) else 0
            parametrize.register_parametrization(m, 'weight', WeightFakeQuant(axis))
            q_in = activation_qparams(*ranges[f'{name}:in'])
            self.hooks.append(m.register_forward_pre_hook(
                lambda mod, args, q=q_in: (fake_quant_activation(args[0], q),) + tuple(args[1:])))
        for name, m in head_convs(model).items():
            q_out = activation_qparams(*ranges[f'{name}:out'])
            self.hooks.append(m.register_forward_hook(lambda mod, args, out, q=q_out: fake_quant_activation(out, q)))

    def freeze_batchnorm(self):
        """BatchNorm on running statistics (call after every model.train())."""
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    def state_dict(self) -> dict:
        """The float network's state_dict (the keys of a network without fake quantization)."""
        out = {}
        for k, v in self.model.state_dict().items():
            out[k.replace('parametrizations.weight.original', 'weight')] = v
        return out

    def detach(self):
        for h in self.hooks:
            h.remove()
        self.hooks = []
        for m in quantized_convs(self.model).values():
            if parametrize.is_parametrized(m, 'weight'):
                parametrize.remove_parametrizations(m, 'weight', leave_parametrized=False)
