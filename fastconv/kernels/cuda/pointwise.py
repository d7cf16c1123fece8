"""Pointwise (1x1) convolution on the GPU: stride 1 without padding is a GEMM per image and
group, on the input as it lies; anything else goes through im2col."""

from __future__ import annotations

import numpy as np
from numba import cuda

from ...spec import ConvSpec
from ..algorithms import is_plain_gemm
from . import im2col
from ._common import add_bias, gemm, to_device


def _plain(spec: ConvSpec, *arrays) -> bool:
    """Stride 1, no padding, and inputs that can be viewed as matrices (contiguous)."""
    return is_plain_gemm(spec) and all(a.is_c_contiguous() for a in arrays)


def forward(x, weight, bias, spec: ConvSpec):
    """``Y[n]_g = W_g @ X[n]_g``; returns a device array."""
    x, weight = to_device(x), to_device(weight)
    if not _plain(spec, x, weight):
        return im2col.forward(x, weight, bias, spec)
    n_images, groups = x.shape[0], spec.groups
    cg, og = spec.in_channels_per_group, spec.out_channels_per_group
    pixels = x.shape[2] * x.shape[3]
    out = cuda.device_array(spec.output_shape(n_images), x.dtype)
    x_mat = x.reshape(n_images, spec.in_channels, pixels)
    out_mat = out.reshape(n_images, spec.out_channels, pixels)
    w_mat = weight.reshape(spec.out_channels, cg)
    for n in range(n_images):
        for g in range(groups):
            gemm(w_mat[g * og:(g + 1) * og], x_mat[n, g * cg:(g + 1) * cg],
                 out_mat[n, g * og:(g + 1) * og])
    if bias is not None:
        add_bias(out, bias)
    return out


def backward_input(grad_output, weight, spec: ConvSpec):
    """``dX[n]_g = W_g^T @ dY[n]_g``; a device array."""
    dy, weight = to_device(grad_output), to_device(weight)
    if not _plain(spec, dy, weight):
        return im2col.backward_input(dy, weight, spec)
    n_images, groups = dy.shape[0], spec.groups
    cg, og = spec.in_channels_per_group, spec.out_channels_per_group
    pixels = dy.shape[2] * dy.shape[3]
    grad_input = cuda.device_array(spec.input_shape(n_images), dy.dtype)
    gi_mat = grad_input.reshape(n_images, spec.in_channels, pixels)
    dy_mat = dy.reshape(n_images, spec.out_channels, pixels)
    w_mat = weight.reshape(spec.out_channels, cg)
    for n in range(n_images):
        for g in range(groups):
            gemm(w_mat[g * og:(g + 1) * og], dy_mat[n, g * og:(g + 1) * og],
                 gi_mat[n, g * cg:(g + 1) * cg], trans_a=True)
    return grad_input


def backward_weight(grad_output, x, spec: ConvSpec):
    """``dW_g = sum_n dY[n]_g @ X[n]_g^T``, summed in place by the GEMM; a device array."""
    dy, x = to_device(grad_output), to_device(x)
    if not _plain(spec, dy, x):
        return im2col.backward_weight(dy, x, spec)
    n_images, groups = x.shape[0], spec.groups
    cg, og = spec.in_channels_per_group, spec.out_channels_per_group
    pixels = x.shape[2] * x.shape[3]
    grad = cuda.to_device(np.zeros((spec.out_channels, cg), x.dtype))
    x_mat = x.reshape(n_images, spec.in_channels, pixels)
    dy_mat = dy.reshape(n_images, spec.out_channels, pixels)
    for n in range(n_images):
        for g in range(groups):
            gemm(dy_mat[n, g * og:(g + 1) * og], x_mat[n, g * cg:(g + 1) * cg],
                 grad[g * og:(g + 1) * og], trans_b=True, beta=1.0)
    return grad.reshape(spec.weight_shape)
