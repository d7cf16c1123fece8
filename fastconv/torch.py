"""PyTorch adapter: fastconv's kernels inside autograd (CPU tensors, float32/float64).

>>> import torch, fastconv.torch as fct                                   # doctest: +SKIP
>>> layer = fct.Conv2d(16, 32, 3, padding=1)       # same constructor as torch.nn.Conv2d
>>> y = layer(torch.randn(8, 16, 28, 28)); y.sum().backward()

Importable only where torch is installed. Tensors are shared with NumPy without copying
(``Tensor.numpy()`` / ``torch.from_numpy``), so the adapter costs a few microseconds per call.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import api

__all__ = ["Conv2dFunction", "conv2d", "Conv2d"]


def _as_numpy(tensor, name):
    if tensor.device.type != "cpu":
        raise ValueError(f"fastconv.torch runs on CPU tensors, but {name} is on {tensor.device}")
    return tensor.detach().numpy()


class Conv2dFunction(torch.autograd.Function):
    """``torch.autograd.Function`` running :func:`fastconv.conv2d` forward and
    :func:`fastconv.conv2d_backward` backward (only the gradients autograd asks for)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, algorithm):
        out = api.conv2d(_as_numpy(x, "input"), _as_numpy(weight, "weight"),
                         None if bias is None else _as_numpy(bias, "bias"), stride, padding,
                         dilation, groups, algorithm=algorithm)
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.algorithm = algorithm
        ctx.has_bias = bias is not None
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        needs = [name for name, flag in zip(("input", "weight", "bias"), wanted[:3]) if flag]
        grads = api.conv2d_backward(_as_numpy(grad_output.contiguous(), "grad_output"),
                                    _as_numpy(x, "input"), _as_numpy(weight, "weight"),
                                    *ctx.geometry, bias=ctx.has_bias, needs=needs,
                                    algorithm=ctx.algorithm)
        grads = [None if g is None else torch.from_numpy(np.ascontiguousarray(g)) for g in grads]
        return (*grads, None, None, None, None, None)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto"):
    """Differentiable :func:`fastconv.conv2d` on torch tensors (CPU)."""
    return Conv2dFunction.apply(x, weight, bias, stride, padding, dilation, groups, algorithm)


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` whose forward and backward run fastconv's kernels.

    Same constructor and parameters as ``torch.nn.Conv2d`` (so state dicts are
    interchangeable), plus ``algorithm``. Only ``padding_mode="zeros"`` is supported.
    """

    def __init__(self, *args, algorithm="auto", **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"fastconv.torch.Conv2d supports padding_mode='zeros' only, "
                             f"but got padding_mode={self.padding_mode!r}")
        self.algorithm = algorithm

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups, algorithm=self.algorithm)
