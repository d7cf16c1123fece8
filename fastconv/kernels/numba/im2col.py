"""im2col + GEMM: unfold input patches into a column matrix, then one BLAS GEMM per tile.

For image ``n`` the column matrix has one row per (input channel, kernel row, kernel column)
and one column per output pixel; group ``g`` owns a contiguous block of rows, so
``W_g (C_out/g x K) @ cols_g (K x P)`` is its output and one batched matmul does all groups. The columns are built by a parallel Numba kernel; the GEMM is numpy's BLAS call,
made *after* the parallel region ends, so the two thread pools never nest.

The column matrix is tiled over output pixels so it never exceeds the workspace budget
(:func:`fastconv.config.get_workspace_budget`).
"""

from __future__ import annotations

import numpy as np
from numba import prange, uintp

from ... import config, workspace
from ...config import jit
from ...spec import ConvSpec
from ._common import add_bias, valid_output_range



def skips_padding(spec: ConvSpec) -> bool:
    """Padding is written into the columns as real zeros."""
    return False


def supports(spec: ConvSpec) -> str | None:
    """Every geometry is supported."""
    return None


def pixels_per_tile(rows: int, pixels: int, itemsize: int) -> int:
    """Output pixels per column tile: all of them if the budget allows, at least one."""
    budget = config.get_workspace_budget()
    return int(max(1, min(pixels, budget // (rows * itemsize))))


@jit()
def _gather_row(cols, r, dst, count, x, n, c, ih, start, sw):
    """``cols[r, dst + i] = x[n, c, ih, start + i * sw]`` for ``i`` in ``[0, count)``."""
    if sw == 1:
        for i in range(uintp(count)):
            cols[r, uintp(dst) + i] = x[n, c, ih, uintp(start) + i]
    else:
        for i in range(uintp(count)):
            cols[r, uintp(dst) + i] = x[n, c, ih, uintp(start) + i * uintp(sw)]


@jit()
def _zero_row(cols, r, dst, count):
    for i in range(uintp(count)):
        cols[r, uintp(dst) + i] = 0.0


@jit(parallel=True)
def _im2col(x, cols, n, p0, p1, kh_size, kw_size, wo_size, sh, sw, ph, pw, dh, dw):
    """Fill ``cols[:, :p1-p0]`` with the patches of output pixels ``[p0, p1)`` of image ``n``;
    one row per (input channel, kernel row, kernel column)."""
    height, width = x.shape[2], x.shape[3]
    taps = kh_size * kw_size
    for r in prange(cols.shape[0]):
        c = r // taps
        kh = (r - c * taps) // kw_size
        kw = r - c * taps - kh * kw_size
        offset = kw * dw - pw
        lo, hi = valid_output_range(offset, sw, width, wo_size)
        p = p0
        while p < p1:  # one output row (or the part of it inside the tile) at a time
            oh = p // wo_size
            ow0 = p - oh * wo_size
            ow1 = min(wo_size, ow0 + p1 - p)
            dst = p - p0  # cols column of pixel (oh, ow0)
            ih = oh * sh - ph + kh * dh
            if 0 <= ih < height:
                # zeros left of the reachable span [a, b), the span, zeros right of it
                a = min(max(lo, ow0), ow1)
                b = min(max(hi, a), ow1)
                _zero_row(cols, r, dst, a - ow0)
                _gather_row(cols, r, dst + a - ow0, b - a, x, n, c, ih, a * sw + offset, sw)
                _zero_row(cols, r, dst + b - ow0, ow1 - b)
            else:
                _zero_row(cols, r, dst, ow1 - ow0)
            p += ow1 - ow0


def forward(x, weight, bias, spec: ConvSpec):
    """im2col + GEMM forward.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    weight : ndarray, shape (C_out, C_in // groups, kH, kW)
    bias : ndarray of shape (C_out,) or None
    spec : ConvSpec

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out)
    """
    n_images = x.shape[0]
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    kh_size, kw_size = spec.kernel_size
    ho_size, wo_size = spec.output_size
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    pixels = ho_size * wo_size
    rows = spec.in_channels * kh_size * kw_size  # group g owns rows [g*K, (g+1)*K)
    group_rows = cg * kh_size * kw_size

    out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
    out_mat = out.reshape(n_images, groups, og, pixels)
    w_mat = weight.reshape(groups, og, group_rows)
    tile = pixels_per_tile(rows, pixels, x.dtype.itemsize)
    cols = workspace.scratch((rows, tile), x.dtype)
    for n in range(n_images):
        for p0 in range(0, pixels, tile):
            p1 = min(pixels, p0 + tile)
            _im2col(x, cols, n, p0, p1, kh_size, kw_size, wo_size, sh, sw, ph, pw, dh, dw)
            # every group's GEMM in one call: numpy loops the groups in C
            np.matmul(w_mat, cols[:, : p1 - p0].reshape(groups, group_rows, p1 - p0),
                      out=out_mat[n, :, :, p0:p1])
    if bias is not None:
        add_bias(out.reshape(n_images, spec.out_channels, pixels), bias)
    return out
