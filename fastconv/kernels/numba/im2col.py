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

import numpy as np
from numba import prange, uintp
from numpy.lib.stride_tricks import as_strided

from ... import workspace
from ...runtime import jit
from ...spec import ConvSpec
from ..algorithms import reads_whole_input
from ..tiling import (ColumnTiling, batch_small_images, column_tiling, gradient_chunk,
                      put_apart, side_by_side, tiles)
from ._common import add_bias, parallel_chunks, valid_output_range


def _columns(spec: ConvSpec, tiling: ColumnTiling, dtype, slot: int = 0):
    """A (groups, group_rows, tile) workspace and its (rows, tile) view for the kernels."""
    cols = workspace.scratch((spec.groups, tiling.group_rows, tiling.tile), dtype, slot)
    return cols, cols.reshape(tiling.rows, tiling.tile)


def _gather(grad_output_mat, segments, buffer):
    """The tile's slice of ``grad_output`` as one (groups, C_out/g, width) matrix: a view when
    the tile lies inside one image, else the segments copied side by side into ``buffer``."""
    if len(segments) == 1:
        n, p0, p1, _ = segments[0]
        return grad_output_mat[n, :, :, p0:p1]
    return side_by_side(grad_output_mat, segments, buffer)


@jit(inline=True)
def _gather_row(cols, r, dst, count, x, n, c, ih, start, sw, spare):
    """``cols[r, dst + i] = x[n, c, ih, start + i * sw]`` for ``i`` in ``[0, count)``.

    At stride 2 each pair's other element goes to ``spare`` (never read): loads of whole
    pairs vectorise, a lone stride-2 load runs scalar. The last pair
    is only read if it lies inside the row."""
    if sw == 1:
        for i in range(uintp(count)):
            cols[r, uintp(dst) + i] = x[n, c, ih, uintp(start) + i]
    elif sw == 2:
        pairs = count
        if count > 0 and start + 2 * count > x.shape[3]:
            pairs = count - 1  # the last pair's second element lies past the row's end
        two = uintp(2)
        for i in range(uintp(pairs)):
            cols[r, uintp(dst) + i] = x[n, c, ih, uintp(start) + two * i]
            spare[i] = x[n, c, ih, uintp(start) + two * i + uintp(1)]
        if pairs < count:
            cols[r, uintp(dst + pairs)] = x[n, c, ih, uintp(start + 2 * pairs)]
    else:
        for i in range(uintp(count)):
            cols[r, uintp(dst) + i] = x[n, c, ih, uintp(start) + i * uintp(sw)]


@jit(inline=True)
def _zero_row(cols, r, dst, count):
    for i in range(uintp(count)):
        cols[r, uintp(dst) + i] = 0.0


@jit()
def _tile_start(q0, pixels, wo_size):
    """Image, output row and output column of the batch's output pixel ``q0``."""
    n = q0 // pixels
    oh = (q0 - n * pixels) // wo_size
    return n, oh, q0 - n * pixels - oh * wo_size


@jit(parallel=True)
def _im2col(x, cols, q0, q1, pixels, kh_size, kw_size, wo_size, sh, sw, ph, pw, dh, dw,
            n_chunks):
    """Fill ``cols[:, :q1-q0]`` with the patches of the batch's output pixels ``[q0, q1)``
    (numbered image after image); one row per (input channel, kernel row, kernel column),
    the rows in ``n_chunks`` parallel chunks. The tile is walked one output row (or the part
    of it inside the tile) at a time, its position advanced by counting, not by dividing (two
    divisions per 14-pixel row cost as much as the copy)."""
    height, width = x.shape[2], x.shape[3]
    taps, ho_size, rows = kh_size * kw_size, pixels // wo_size, cols.shape[0]
    n0, oh0, ow00 = _tile_start(q0, pixels, wo_size)
    for chunk in prange(n_chunks):
        spare = np.empty(wo_size, x.dtype)  # see _gather_row
        for r in range(chunk * rows // n_chunks, (chunk + 1) * rows // n_chunks):
            c = r // taps
            kh = (r - c * taps) // kw_size
            kw = r - c * taps - kh * kw_size
            offset = kw * dw - pw
            lo, hi = valid_output_range(offset, sw, width, wo_size)
            n, oh, ow0, dst = n0, oh0, ow00, 0
            while dst < q1 - q0:
                ow1 = min(wo_size, ow0 + q1 - q0 - dst)
                ih = oh * sh - ph + kh * dh
                if 0 <= ih < height:
                    # zeros left of the reachable span [a, b), the span, zeros right of it
                    a = min(max(lo, ow0), ow1)
                    b = min(max(hi, a), ow1)
                    _zero_row(cols, r, dst, a - ow0)
                    _gather_row(cols, r, dst + a - ow0, b - a, x, n, c, ih, a * sw + offset,
                                sw, spare)
                    _zero_row(cols, r, dst + b - ow0, ow1 - b)
                else:
                    _zero_row(cols, r, dst, ow1 - ow0)
                dst += ow1 - ow0
                ow0, oh = 0, oh + 1
                if oh == ho_size:
                    n, oh = n + 1, 0


@jit(inline=True)
def _fold_row(grad_input, n, c, ih, start, sw, dcols, r, src, count):
    """``grad_input[n, c, ih, start + i*sw] += dcols[r, src + i]`` for ``i < count``."""
    if sw == 1:
        for i in range(uintp(count)):
            grad_input[n, c, ih, uintp(start) + i] += dcols[r, uintp(src) + i]
    else:
        for i in range(uintp(count)):
            grad_input[n, c, ih, uintp(start) + i * uintp(sw)] += dcols[r, uintp(src) + i]


@jit(parallel=True)
def _col2im(dcols, grad_input, q0, q1, pixels, kh_size, kw_size, wo_size, sh, sw, ph, pw, dh,
            dw):
    """Add the column gradients of the batch's output pixels ``[q0, q1)`` back onto the input
    gradient: the transpose of :func:`_im2col`. Parallel over input channels, so no two
    threads add into the same pixel; entries that fell on padding are dropped."""
    channels, height, width = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    ho_size = pixels // wo_size
    n0, oh0, ow00 = _tile_start(q0, pixels, wo_size)
    for c in prange(channels):
        for kh in range(kh_size):
            for kw in range(kw_size):
                r = (c * kh_size + kh) * kw_size + kw
                offset = kw * dw - pw
                lo, hi = valid_output_range(offset, sw, width, wo_size)
                n, oh, ow0, src = n0, oh0, ow00, 0  # walked as in _im2col
                while src < q1 - q0:
                    ow1 = min(wo_size, ow0 + q1 - q0 - src)
                    ih = oh * sh - ph + kh * dh
                    if 0 <= ih < height:
                        a = min(max(lo, ow0), ow1)
                        b = min(max(hi, a), ow1)
                        _fold_row(grad_input, n, c, ih, a * sw + offset, sw, dcols, r,
                                  src + a - ow0, b - a)
                    src += ow1 - ow0
                    ow0, oh = 0, oh + 1
                    if oh == ho_size:
                        n, oh = n + 1, 0


def _whole_images(array, groups):
    """A batch of images (N, C, H, W) as per-group matrices (groups, N, C / g * H * W): where
    one output pixel reads the whole input, the input's (and the output's) im2col matrix."""
    return array.reshape(array.shape[0], groups, -1).transpose(1, 0, 2)


def _whole_input_weight(weight, spec: ConvSpec):
    """The weight as per-group matrices (groups, C_out / g, C_in / g * kH * kW)."""
    return weight.reshape(spec.groups, spec.out_channels_per_group, -1)


def forward(x, weight, bias, spec: ConvSpec):
    """im2col + GEMM forward.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    n_images = x.shape[0]
    og = spec.out_channels_per_group
    if reads_whole_input(spec):
        out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
        np.matmul(_whole_images(x, spec.groups),
                  _whole_input_weight(weight, spec).transpose(0, 2, 1),
                  out=_whole_images(out, spec.groups))
        if bias is not None:
            out += bias[:, None, None]
        return out
    # a GEMM per image, straight into the output, unless the images are small: one GEMM over
    # them side by side, its output then copied apart, reads the weight once
    batched = batch_small_images(spec, n_images)
    tiling = column_tiling(spec, x.dtype.itemsize, n_images,
                           extra_rows=spec.out_channels if batched else 0)
    out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
    out_mat = out.reshape(n_images, spec.groups, og, tiling.pixels)
    w_mat = weight.reshape(spec.groups, og, tiling.group_rows)
    cols, cols_2d = _columns(spec, tiling, x.dtype)
    out_tile = (workspace.scratch((spec.groups, og, tiling.tile), x.dtype, slot=1) if batched
                else None)
    for q0, q1, segments in tiles(tiling, n_images):
        _im2col(x, cols_2d, q0, q1, *tiling.args, parallel_chunks(tiling.rows))
        if batched and len(segments) > 1:
            np.matmul(w_mat, cols[:, :, :q1 - q0], out=out_tile[:, :, :q1 - q0])
            put_apart(out_tile, segments, out_mat)
            continue
        for n, p0, p1, at in segments:
            # every group's GEMM in one call: numpy loops the groups in C
            np.matmul(w_mat, cols[:, :, at:at + p1 - p0], out=out_mat[n, :, :, p0:p1])
    if bias is not None:
        add_bias(out.reshape(n_images, spec.out_channels, tiling.pixels), bias)
    return out


def backward_weight(grad_output, x, spec: ConvSpec):
    """``dW_g = sum over tiles of dY_g @ cols_g^T``; a tile may span several images, so a
    batch of small images makes a few large GEMMs.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    n_images = x.shape[0]
    og = spec.out_channels_per_group
    if reads_whole_input(spec):
        # one image: an outer product, which broadcasting computes several times faster than
        # numpy's matmul with an inner dimension of 1
        product = np.multiply if n_images == 1 else np.matmul
        return product(_whole_images(grad_output, spec.groups).transpose(0, 2, 1),
                       _whole_images(x, spec.groups)).reshape(spec.weight_shape)
    tiling = column_tiling(spec, x.dtype.itemsize, n_images, extra_rows=spec.out_channels)
    dy = grad_output.reshape(n_images, spec.groups, og, tiling.pixels)
    cols, cols_2d = _columns(spec, tiling, x.dtype)
    dy_tile = workspace.scratch((spec.groups, og, tiling.tile), x.dtype, slot=1)
    grad = partial = None
    for q0, q1, segments in tiles(tiling, n_images):
        _im2col(x, cols_2d, q0, q1, *tiling.args, parallel_chunks(tiling.rows))
        chunk = gradient_chunk(og, tiling.group_rows, q1 - q0)
        if chunk < q1 - q0:  # image by image, dY where it is (not copied side by side)
            for n, p0, p1, at in segments:
                product = _chunked_product(dy[n, :, :, p0:p1],
                                           cols[:, :, at:at + p1 - p0].transpose(0, 2, 1),
                                           min(chunk, p1 - p0))
                if grad is None:
                    grad = product
                else:
                    grad += product
            continue
        lhs = _gather(dy, segments, dy_tile)
        rhs = cols[:, :, : q1 - q0].transpose(0, 2, 1)
        if grad is None:  # the first tile writes the gradient, later ones add to it
            grad = np.matmul(lhs, rhs)
        else:
            partial = np.matmul(lhs, rhs, out=partial)
            grad += partial
    return grad.reshape(spec.weight_shape)


def _chunked_product(lhs, rhs, chunk):
    """``lhs @ rhs`` for (G, M, K) and (G, K, N) operands, as one batched matmul over chunks
    of the inner dimension (strided views, no copies) summed after; see
    :func:`fastconv.kernels.tiling.gradient_chunk`."""
    (groups, m, k), n = lhs.shape, rhs.shape[2]
    whole = k // chunk
    (g_l, m_l, k_l), (g_r, k_r, n_r) = lhs.strides, rhs.strides
    lhs_chunks = as_strided(lhs, (groups, whole, m, chunk), (g_l, chunk * k_l, m_l, k_l),
                            writeable=False)
    rhs_chunks = as_strided(rhs, (groups, whole, chunk, n), (g_r, chunk * k_r, k_r, n_r),
                            writeable=False)
    product = np.matmul(lhs_chunks, rhs_chunks).sum(axis=1)
    if whole * chunk < k:
        product += np.matmul(lhs[:, :, whole * chunk:], rhs[:, whole * chunk:])
    return product


def backward_input(grad_output, weight, spec: ConvSpec):
    """``dcols_g = W_g^T @ dY_g``, folded back onto the input (col2im).

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    n_images = grad_output.shape[0]
    dtype = grad_output.dtype
    og = spec.out_channels_per_group
    if reads_whole_input(spec):
        grad_input = np.empty(spec.input_shape(n_images), dtype)
        np.matmul(_whole_images(grad_output, spec.groups), _whole_input_weight(weight, spec),
                  out=_whole_images(grad_input, spec.groups))
        return grad_input
    tiling = column_tiling(spec, dtype.itemsize, n_images, extra_rows=spec.out_channels)
    grad_input = np.zeros(spec.input_shape(n_images), dtype)
    dy = grad_output.reshape(n_images, spec.groups, og, tiling.pixels)
    w_t = weight.reshape(spec.groups, og, tiling.group_rows).transpose(0, 2, 1)
    dcols, dcols_2d = _columns(spec, tiling, dtype)
    dy_tile = workspace.scratch((spec.groups, og, tiling.tile), dtype, slot=1)
    for q0, q1, segments in tiles(tiling, n_images):
        np.matmul(w_t, _gather(dy, segments, dy_tile), out=dcols[:, :, : q1 - q0])
        _col2im(dcols_2d, grad_input, q0, q1, *tiling.args)
    return grad_input
