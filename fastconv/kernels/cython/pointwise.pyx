# cython: language_level=3
"""Pointwise (1x1) convolution, AOT-compiled: the twin of
``fastconv.kernels.numba.pointwise``. Stride 1 without padding is a GEMM per image and group
(through ``scipy.linalg.cython_blas``, the weight gradient accumulated by BLAS's ``beta``);
the weight gradient of a batch of small images one GEMM over their pixels as rows; everything
else, and a batch of one-pixel images (one GEMM over the batch), goes through im2col."""

import numpy as np

from ..algorithms import is_plain_gemm, reads_whole_input
from ..tiling import batch_small_images, pixel_rows
from . import _checks, im2col
from .im2col import gemm_checked


def forward(x, weight, bias, spec):
    """``Y[n]_g = W_g @ X[n]_g``."""
    if not is_plain_gemm(spec) or reads_whole_input(spec):
        return im2col.forward(x, weight, bias, spec)
    _checks.forward_args(x, weight, bias, spec)
    n_images, groups = x.shape[0], spec.groups
    cg, og = spec.in_channels_per_group, spec.out_channels_per_group
    pixels = x.shape[2] * x.shape[3]
    out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
    w, xs, ys = weight.reshape(-1), x.reshape(-1), out.reshape(-1)
    for n in range(n_images):
        for g in range(groups):
            gemm_checked(False, False, og, pixels, cg, w, g * og * cg, cg, xs,
                         (n * spec.in_channels + g * cg) * pixels, pixels, 0.0, ys,
                         (n * spec.out_channels + g * og) * pixels, pixels)
    if bias is not None:
        out += bias[:, None, None]
    return out


def backward_input(grad_output, weight, spec):
    """``dX[n]_g = W_g^T @ dY[n]_g``."""
    if not is_plain_gemm(spec) or reads_whole_input(spec):
        return im2col.backward_input(grad_output, weight, spec)
    n_images = _checks.backward_args(grad_output, spec, weight=weight)
    groups = spec.groups
    cg, og = spec.in_channels_per_group, spec.out_channels_per_group
    pixels = grad_output.shape[2] * grad_output.shape[3]
    grad_input = np.empty(spec.input_shape(n_images), dtype=grad_output.dtype)
    w, dys, gis = weight.reshape(-1), grad_output.reshape(-1), grad_input.reshape(-1)
    for n in range(n_images):
        for g in range(groups):
            gemm_checked(True, False, cg, pixels, og, w, g * og * cg, cg, dys,
                         (n * spec.out_channels + g * og) * pixels, pixels, 0.0, gis,
                         (n * spec.in_channels + g * cg) * pixels, pixels)
    return grad_input


def backward_weight(grad_output, x, spec):
    """``dW_g = sum_n dY[n]_g @ X[n]_g^T``, summed by BLAS in place."""
    if not is_plain_gemm(spec) or reads_whole_input(spec):
        return im2col.backward_weight(grad_output, x, spec)
    n_images = _checks.backward_args(grad_output, spec, x=x)
    groups = spec.groups
    cg, og = spec.in_channels_per_group, spec.out_channels_per_group
    pixels = x.shape[2] * x.shape[3]
    grad = np.empty(spec.weight_shape, dtype=x.dtype)
    gs, dys, xs = grad.reshape(-1), grad_output.reshape(-1), x.reshape(-1)
    if batch_small_images(spec, n_images):  # dW_g = sum of dY_rows_g^T @ X_rows_g
        beta = 0.0
        for x_rows, dy_rows in pixel_rows(x, grad_output, spec):
            for g in range(groups):
                gemm_checked(True, False, og, cg, x_rows.shape[0], dy_rows.reshape(-1), g * og,
                             spec.out_channels, x_rows.reshape(-1), g * cg, spec.in_channels,
                             beta, gs, g * og * cg, cg)
            beta = 1.0
        return grad
    for n in range(n_images):
        for g in range(groups):
            gemm_checked(False, True, og, cg, pixels, dys,
                         (n * spec.out_channels + g * og) * pixels, pixels, xs,
                         (n * spec.in_channels + g * cg) * pixels, pixels,
                         0.0 if n == 0 else 1.0, gs, g * og * cg, cg)
    return grad
