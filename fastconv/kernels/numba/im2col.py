"""im2col + GEMM: unfold input patches into a column matrix, then BLAS GEMMs; forward and
backward.

For image ``n`` the column matrix has one row per (input channel, kernel row, kernel column)
and one column per output pixel; group ``g`` owns a contiguous block of rows, so
``W_g (C_out/g x K) @ cols_g (K x P)`` is its output and one batched matmul does all groups.
Backward: ``dW_g += dY_g @ cols_g^T`` and ``dcols_g = W_g^T @ dY_g``, folded back onto the
input by col2im. The columns are built (and folded) by parallel Numba kernels; the GEMMs are
numpy's BLAS calls, made *between* parallel regions, so the two thread pools never nest.

The column matrices are tiled over output pixels so they never exceed the workspace budget
(:func:`fastconv.config.get_workspace_budget`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import prange, uintp

from ... import config, workspace
from ...config import jit
from ...spec import ConvSpec
from ._common import add_bias, backward_bias, valid_output_range  # noqa: F401


def skips_padding(spec: ConvSpec) -> bool:
    """Padding is written into the columns as real zeros."""
    return False


def supports(spec: ConvSpec) -> str | None:
    """Every geometry is supported."""
    return None


class _Tiling(NamedTuple):
    """The column matrix of a spec and how it is cut into tiles of output pixels."""

    rows: int  # in_channels * kH * kW; group g owns rows [g * group_rows, (g+1) * group_rows)
    group_rows: int
    pixels: int  # output pixels per image
    tile: int  # output pixels per tile
    args: tuple  # the geometry the Numba kernels take


def _tiling(spec: ConvSpec, itemsize: int) -> _Tiling:
    """Tiles whose column matrix fits the workspace budget (all of the pixels if they fit, at
    least one)."""
    kh, kw = spec.kernel_size
    ho, wo = spec.output_size
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    rows = spec.in_channels * kh * kw
    pixels = ho * wo
    tile = int(max(1, min(pixels, config.get_workspace_budget() // (rows * itemsize))))
    return _Tiling(rows, rows // spec.groups, pixels, tile, (kh, kw, wo, sh, sw, ph, pw, dh, dw))


def _columns(spec: ConvSpec, tiling: _Tiling, dtype, slot: int = 0):
    """A (groups, group_rows, tile) workspace and its (rows, tile) view for the kernels."""
    cols = workspace.scratch((spec.groups, tiling.group_rows, tiling.tile), dtype, slot)
    return cols, cols.reshape(tiling.rows, tiling.tile)


def _tiles(tiling: _Tiling, n_images: int):
    """``(n, p0, p1)`` for every tile of every image."""
    for n in range(n_images):
        for p0 in range(0, tiling.pixels, tiling.tile):
            yield n, p0, min(tiling.pixels, p0 + tiling.tile)


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


@jit()
def _fold_row(grad_input, n, c, ih, start, sw, dcols, r, src, count):
    """``grad_input[n, c, ih, start + i*sw] += dcols[r, src + i]`` for ``i < count``."""
    if sw == 1:
        for i in range(uintp(count)):
            grad_input[n, c, ih, uintp(start) + i] += dcols[r, uintp(src) + i]
    else:
        for i in range(uintp(count)):
            grad_input[n, c, ih, uintp(start) + i * uintp(sw)] += dcols[r, uintp(src) + i]


@jit(parallel=True)
def _col2im(dcols, grad_input, n, p0, p1, kh_size, kw_size, wo_size, sh, sw, ph, pw, dh, dw):
    """Add the column gradients of output pixels ``[p0, p1)`` back onto image ``n``'s input
    gradient: the transpose of :func:`_im2col`. Parallel over input channels, so no two
    threads add into the same pixel; entries that fell on padding are dropped."""
    channels, height, width = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    for c in prange(channels):
        for kh in range(kh_size):
            for kw in range(kw_size):
                r = (c * kh_size + kh) * kw_size + kw
                offset = kw * dw - pw
                lo, hi = valid_output_range(offset, sw, width, wo_size)
                p = p0
                while p < p1:
                    oh = p // wo_size
                    ow0 = p - oh * wo_size
                    ow1 = min(wo_size, ow0 + p1 - p)
                    ih = oh * sh - ph + kh * dh
                    if 0 <= ih < height:
                        a = min(max(lo, ow0), ow1)
                        b = min(max(hi, a), ow1)
                        _fold_row(grad_input, n, c, ih, a * sw + offset, sw, dcols, r,
                                  p - p0 + a - ow0, b - a)
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
    tiling = _tiling(spec, x.dtype.itemsize)
    out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
    out_mat = out.reshape(n_images, spec.groups, spec.out_channels_per_group, tiling.pixels)
    w_mat = weight.reshape(spec.groups, spec.out_channels_per_group, tiling.group_rows)
    cols, cols_2d = _columns(spec, tiling, x.dtype)
    for n, p0, p1 in _tiles(tiling, n_images):
        _im2col(x, cols_2d, n, p0, p1, *tiling.args)
        # every group's GEMM in one call: numpy loops the groups in C
        np.matmul(w_mat, cols[:, :, : p1 - p0], out=out_mat[n, :, :, p0:p1])
    if bias is not None:
        add_bias(out.reshape(n_images, spec.out_channels, tiling.pixels), bias)
    return out


def backward_weight(grad_output, x, spec: ConvSpec):
    """``dW_g = sum over images and tiles of dY_g @ cols_g^T``.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C_out, H_out, W_out)
    x : ndarray, shape (N, C_in, H, W)
    spec : ConvSpec

    Returns
    -------
    ndarray, shape (C_out, C_in // groups, kH, kW)
    """
    n_images = x.shape[0]
    tiling = _tiling(spec, x.dtype.itemsize)
    grad = np.zeros((spec.groups, spec.out_channels_per_group, tiling.group_rows), x.dtype)
    partial = np.empty_like(grad)
    dy = grad_output.reshape(n_images, spec.groups, spec.out_channels_per_group, tiling.pixels)
    cols, cols_2d = _columns(spec, tiling, x.dtype)
    for n, p0, p1 in _tiles(tiling, n_images):
        _im2col(x, cols_2d, n, p0, p1, *tiling.args)
        np.matmul(dy[n, :, :, p0:p1], cols[:, :, : p1 - p0].transpose(0, 2, 1), out=partial)
        grad += partial
    return grad.reshape(spec.weight_shape)


def backward_input(grad_output, weight, spec: ConvSpec):
    """``dcols_g = W_g^T @ dY_g``, folded back onto the input (col2im).

    Parameters
    ----------
    grad_output : ndarray, shape (N, C_out, H_out, W_out)
    weight : ndarray, shape (C_out, C_in // groups, kH, kW)
    spec : ConvSpec

    Returns
    -------
    ndarray, shape (N, C_in, H, W)
    """
    n_images = grad_output.shape[0]
    dtype = grad_output.dtype
    tiling = _tiling(spec, dtype.itemsize)
    grad_input = np.zeros(spec.input_shape(n_images), dtype)
    dy = grad_output.reshape(n_images, spec.groups, spec.out_channels_per_group, tiling.pixels)
    w_t = weight.reshape(spec.groups, spec.out_channels_per_group,
                         tiling.group_rows).transpose(0, 2, 1)
    dcols, dcols_2d = _columns(spec, tiling, dtype)
    for n, p0, p1 in _tiles(tiling, n_images):
        np.matmul(w_t, dy[n, :, :, p0:p1], out=dcols[:, :, : p1 - p0])
        _col2im(dcols_2d, grad_input, n, p0, p1, *tiling.args)
    return grad_input
