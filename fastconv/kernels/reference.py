"""The ground truth: a slow, obviously correct NumPy convolution (``backend="numpy"``).

Padding is real zeros (``np.pad``) and every kernel tap is one strided slice of the padded
input contracted with one weight slice, so each line can be checked by eye against the
definition of ``torch.nn.functional.conv2d``.
"""

from __future__ import annotations

import numpy as np

from ..spec import ConvSpec
from .algorithms import Backend

#: The NumPy backend is this one module ("reference"); ``np.pad`` writes real zeros.
BACKEND = Backend(name="numpy", package="fastconv.kernels", modules=("reference",),
                  bias_gradient="reference")


def _tap(padded, spec: ConvSpec, kh: int, kw: int):
    """The input pixels that kernel tap (kh, kw) meets, one per output pixel."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    ho, wo = spec.output_size
    top, left = kh * dh, kw * dw
    return padded[..., top : top + sh * (ho - 1) + 1 : sh, left : left + sw * (wo - 1) + 1 : sw]


def forward(x, weight, bias, spec: ConvSpec):
    """``y[n, o] = bias[o] + sum_{c, i, j} w[o, c, i, j] * x_padded[n, g*Cg + c, s*h + d*i, ...]``.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    n = x.shape[0]
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    padded = np.pad(x, ((0, 0), (0, 0), *spec.pads))
    padded = padded.reshape(n, groups, cg, *padded.shape[2:])
    w = weight.reshape(groups, og, cg, *spec.kernel_size)
    out = np.zeros((n, groups, og, *spec.output_size), dtype=x.dtype)
    for kh in range(spec.kernel_size[0]):
        for kw in range(spec.kernel_size[1]):
            out += np.einsum("ngchw,goc->ngohw", _tap(padded, spec, kh, kw), w[..., kh, kw])
    out = out.reshape(spec.output_shape(n))
    if bias is not None:
        out += bias[:, None, None]
    return out


def backward_input(grad_output, weight, spec: ConvSpec):
    """Gradient of the input: every forward product ``w * x_padded[tap]`` sends ``w * dy``
    back to the same padded pixel; the padding's share is dropped.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    n = grad_output.shape[0]
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    (top, _), (left, _) = spec.pads
    height, width = spec.input_size
    grad_padded = np.zeros((n, groups, cg, *spec.padded_input_size), dtype=grad_output.dtype)
    dy = grad_output.reshape(n, groups, og, *spec.output_size)
    w = weight.reshape(groups, og, cg, *spec.kernel_size)
    for kh in range(spec.kernel_size[0]):
        for kw in range(spec.kernel_size[1]):
            _tap(grad_padded, spec, kh, kw)[...] += np.einsum("ngohw,goc->ngchw", dy,
                                                              w[..., kh, kw])
    grad_padded = grad_padded.reshape(n, spec.in_channels, *spec.padded_input_size)
    return np.ascontiguousarray(grad_padded[:, :, top:top + height, left:left + width])


def backward_weight(grad_output, x, spec: ConvSpec):
    """Gradient of the weight: ``dw[o, c, i, j] = sum_{n,h,w} dy[n, o, h, w] * x_tap(i, j)``.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    n = x.shape[0]
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    padded = np.pad(x, ((0, 0), (0, 0), *spec.pads))
    padded = padded.reshape(n, groups, cg, *padded.shape[2:])
    dy = grad_output.reshape(n, groups, og, *spec.output_size)
    grad = np.zeros((groups, og, cg, *spec.kernel_size), dtype=x.dtype)
    for kh in range(spec.kernel_size[0]):
        for kw in range(spec.kernel_size[1]):
            grad[..., kh, kw] = np.einsum("ngohw,ngchw->goc", dy, _tap(padded, spec, kh, kw))
    return grad.reshape(spec.weight_shape)


def backward_bias(grad_output):
    """Gradient of the bias: ``dy`` summed over images and pixels."""
    return grad_output.sum(axis=(0, 2, 3))
