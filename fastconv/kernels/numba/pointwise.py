"""Pointwise (1x1) convolution: GEMMs through BLAS, forward and backward.

With stride 1 and no padding the input of image ``n`` already *is* the column matrix
``(C_in, H*W)``, so ``W (C_out x C_in) @ x[n]`` is the whole convolution and needs no
workspace; backward, ``dX[n] = W^T @ dY[n]`` and ``dW = sum_n dY[n] @ X[n]^T``. A strided or
padded 1x1 first gathers the pixels it reads; for a 1x1 kernel that gather is exactly im2col's
column matrix, so it reuses im2col's tiled path. So does a batch of one-pixel images (a
classifier's), whose batch is itself im2col's matrix (``reads_whole_input``): one GEMM over
the batch, not a matrix-vector product per image. The weight gradient of other small images
takes their pixels as rows (NHWC copies, ``tiling.pixel_rows``) for one GEMM, instead of a
weight-sized partial sum per image.
"""

from __future__ import annotations

import numpy as np

from ...spec import ConvSpec
from ..algorithms import is_plain_gemm, reads_whole_input
from ..tiling import batch_small_images, pixel_rows
from . import im2col
from ._common import add_bias


def forward(x, weight, bias, spec: ConvSpec):
    """Pointwise convolution forward.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    if not is_plain_gemm(spec) or reads_whole_input(spec):
        return im2col.forward(x, weight, bias, spec)
    n_images = x.shape[0]
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    pixels = x.shape[2] * x.shape[3]
    out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
    out_mat = out.reshape(n_images, groups, og, pixels)
    x_mat = x.reshape(n_images, groups, cg, pixels)
    w_mat = weight.reshape(groups, og, cg)
    for g in range(groups):
        # numpy loops the batch and calls BLAS gemm once per image
        np.matmul(w_mat[g], x_mat[:, g], out=out_mat[:, g])
    if bias is not None:
        add_bias(out.reshape(n_images, spec.out_channels, pixels), bias)
    return out


def backward_input(grad_output, weight, spec: ConvSpec):
    """``dX[n]_g = W_g^T @ dY[n]_g``.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    if not is_plain_gemm(spec) or reads_whole_input(spec):
        return im2col.backward_input(grad_output, weight, spec)
    n_images = grad_output.shape[0]
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    pixels = grad_output.shape[2] * grad_output.shape[3]
    grad_input = np.empty(spec.input_shape(n_images), dtype=grad_output.dtype)
    gi_mat = grad_input.reshape(n_images, groups, cg, pixels)
    dy = grad_output.reshape(n_images, groups, og, pixels)
    w_t = weight.reshape(groups, og, cg).transpose(0, 2, 1)
    for g in range(groups):
        np.matmul(w_t[g], dy[:, g], out=gi_mat[:, g])
    return grad_input


def backward_weight(grad_output, x, spec: ConvSpec):
    """``dW_g = sum_n dY[n]_g @ X[n]_g^T``.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    if not is_plain_gemm(spec) or reads_whole_input(spec):
        return im2col.backward_weight(grad_output, x, spec)
    n_images = x.shape[0]
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    if batch_small_images(spec, n_images):
        grad = partial = None
        for x_rows, dy_rows in pixel_rows(x, grad_output, spec):
            partial = np.matmul(dy_rows.reshape(-1, groups, og).transpose(1, 2, 0),
                                x_rows.reshape(-1, groups, cg).transpose(1, 0, 2), out=partial)
            if grad is None:  # the first run of images writes the gradient, later ones add
                grad, partial = partial, None
            else:
                grad += partial
        return grad.reshape(spec.weight_shape)
    pixels = x.shape[2] * x.shape[3]
    dy = grad_output.reshape(n_images, groups, og, pixels)
    x_t = x.reshape(n_images, groups, cg, pixels).transpose(0, 1, 3, 2)
    grad = np.matmul(dy[0], x_t[0])
    partial = None
    for n in range(1, n_images):  # one weight-sized partial at a time, not one per image
        partial = np.matmul(dy[n], x_t[n], out=partial)
        grad += partial
    return grad.reshape(spec.weight_shape)
