"""Pointwise (1x1) convolution: a GEMM per image through BLAS.

With stride 1 and no padding the input of image ``n`` already *is* the column matrix
``(C_in, H*W)``, so ``W (C_out x C_in) @ x[n]`` is the whole convolution and needs no
workspace. A strided or padded 1x1 first gathers the pixels it reads; for a 1x1 kernel that
gather is exactly im2col's column matrix, so it reuses im2col's tiled path.
"""

from __future__ import annotations

import numpy as np

from ...spec import ConvSpec
from . import im2col
from ._common import add_bias



def skips_padding(spec: ConvSpec) -> bool:
    """A padded 1x1 runs through im2col, which writes real zeros."""
    return False


def supports(spec: ConvSpec) -> str | None:
    """Pointwise needs a 1x1 kernel."""
    if not spec.is_pointwise:
        return f"pointwise needs a 1x1 kernel, but got kernel_size={list(spec.kernel_size)}"
    return None


def forward(x, weight, bias, spec: ConvSpec):
    """Pointwise convolution forward.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    weight : ndarray, shape (C_out, C_in // groups, 1, 1)
    bias : ndarray of shape (C_out,) or None
    spec : ConvSpec
        A 1x1 spec.

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out)
    """
    if spec.stride != (1, 1) or spec.pads != ((0, 0), (0, 0)):
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
