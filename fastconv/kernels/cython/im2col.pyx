# cython: language_level=3
"""im2col + GEMM, AOT-compiled: the twin of ``fastconv.kernels.numba.im2col``.

Columns are built and folded back by OpenMP ``prange`` loops; the GEMMs are BLAS calls
(``scipy.linalg.cython_blas``) made after each parallel region ends, so the thread pools never
nest. BLAS's ``beta`` accumulates the weight gradient in place, tile after tile. Tiles span the
batch's output pixels, under the workspace budget.
"""

include "_common.pxi"

import math

import numpy as np

from ... import workspace
from ..algorithms import reads_whole_input
from ..tiling import (batch_small_images, column_tiling, gradient_chunk, put_apart,
                      side_by_side, tiles)
from . import _checks


cdef inline void _tile_start(Py_ssize_t q0, Py_ssize_t pixels, Py_ssize_t wo_size,
                             Py_ssize_t* n, Py_ssize_t* oh, Py_ssize_t* ow) noexcept nogil:
    """Image, output row and output column of the batch's output pixel ``q0`` (called before
    the parallel loop, whose walk then advances them by counting)."""
    n[0] = q0 // pixels
    oh[0] = (q0 - n[0] * pixels) // wo_size
    ow[0] = q0 - n[0] * pixels - oh[0] * wo_size


cdef void _im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols, Py_ssize_t q0,
                  Py_ssize_t q1, Py_ssize_t pixels, Py_ssize_t kh_size, Py_ssize_t kw_size,
                  Py_ssize_t wo_size, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                  Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int threads) noexcept nogil:
    """cols[:, :q1-q0] = the patches of the batch's output pixels [q0, q1), walked one output
    row at a time by counting, not dividing (as in the Numba kernel)."""
    cdef Py_ssize_t height = x.shape[2], width = x.shape[3], taps = kh_size * kw_size
    cdef Py_ssize_t ho_size = pixels // wo_size, n0, oh0, ow00
    cdef Py_ssize_t r, c, kh, kw, offset, lo, hi, n, oh, ow0, ow1, dst, ih, a, b, i
    cdef const floating* row
    cdef floating* to
    _tile_start(q0, pixels, wo_size, &n0, &oh0, &ow00)
    for r in prange(cols.shape[0], schedule="static", num_threads=threads):
        c = r // taps
        kh = (r - c * taps) // kw_size
        kw = r - c * taps - kh * kw_size
        offset = kw * dw - pw
        lo = range_lo(offset, sw, wo_size)
        hi = range_hi(offset, sw, width, wo_size)
        n, oh, ow0, dst = n0, oh0, ow00, 0  # dst: the cols column of pixel (n, oh, ow0)
        while dst < q1 - q0:
            ow1 = ow0 + q1 - q0 - dst
            if ow1 > wo_size:
                ow1 = wo_size
            ih = oh * sh - ph + kh * dh
            to = &cols[r, dst]  # output column ow0 onwards
            if 0 <= ih < height:
                a = min(max(lo, ow0), ow1)
                b = min(max(hi, a), ow1)
                row = &x[n, c, ih, 0]
                for i in range(ow0, a):
                    to[i - ow0] = 0
                if sw == 1:
                    for i in range(a, b):
                        to[i - ow0] = row[i + offset]
                elif sw == 2:  # a constant stride: gcc vectorises it, a variable one not
                    for i in range(a, b):
                        to[i - ow0] = row[i * 2 + offset]
                else:
                    for i in range(a, b):
                        to[i - ow0] = row[i * sw + offset]
                for i in range(b, ow1):
                    to[i - ow0] = 0
            else:
                for i in range(ow0, ow1):
                    to[i - ow0] = 0
            dst = dst + ow1 - ow0
            ow0 = 0
            oh = oh + 1
            if oh == ho_size:
                n = n + 1
                oh = 0


cdef void _col2im(const floating[:, ::1] dcols, floating[:, :, :, ::1] grad_input,
                  Py_ssize_t q0, Py_ssize_t q1, Py_ssize_t pixels, Py_ssize_t kh_size,
                  Py_ssize_t kw_size, Py_ssize_t wo_size, Py_ssize_t sh, Py_ssize_t sw,
                  Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                  int threads) noexcept nogil:
    """Add the column gradients of pixels [q0, q1) back onto the input gradient; parallel
    over input channels, so no two threads add into the same pixel."""
    cdef Py_ssize_t height = grad_input.shape[2], width = grad_input.shape[3]
    cdef Py_ssize_t ho_size = pixels // wo_size, n0, oh0, ow00
    cdef Py_ssize_t c, kh, kw, r, offset, lo, hi, n, oh, ow0, ow1, src, ih, a, b, i
    cdef const floating* row
    cdef floating* to
    _tile_start(q0, pixels, wo_size, &n0, &oh0, &ow00)
    for c in prange(grad_input.shape[1], schedule="static", num_threads=threads):
        for kh in range(kh_size):
            for kw in range(kw_size):
                r = (c * kh_size + kh) * kw_size + kw
                offset = kw * dw - pw
                lo = range_lo(offset, sw, wo_size)
                hi = range_hi(offset, sw, width, wo_size)
                n, oh, ow0, src = n0, oh0, ow00, 0  # walked as in _im2col
                while src < q1 - q0:
                    ow1 = ow0 + q1 - q0 - src
                    if ow1 > wo_size:
                        ow1 = wo_size
                    ih = oh * sh - ph + kh * dh
                    if 0 <= ih < height:
                        a = min(max(lo, ow0), ow1)
                        b = min(max(hi, a), ow1)
                        row = &dcols[r, src]  # output column ow0 onwards
                        to = &grad_input[n, c, ih, 0]
                        if sw == 1:
                            for i in range(a, b):
                                to[i + offset] += row[i - ow0]
                        else:
                            for i in range(a, b):
                                to[i * sw + offset] += row[i - ow0]
                    src = src + ow1 - ow0
                    ow0 = 0
                    oh = oh + 1
                    if oh == ho_size:
                        n = n + 1
                        oh = 0


def _im2col_kernel(const floating[:, :, :, ::1] x, floating[:, ::1] cols, Py_ssize_t q0,
                   Py_ssize_t q1, geometry, int threads):
    cdef Py_ssize_t pixels, kh, kw, wo, sh, sw, ph, pw, dh, dw
    pixels, kh, kw, wo, sh, sw, ph, pw, dh, dw = geometry
    with nogil:
        _im2col(x, cols, q0, q1, pixels, kh, kw, wo, sh, sw, ph, pw, dh, dw, threads)


def _col2im_kernel(const floating[:, ::1] dcols, floating[:, :, :, ::1] grad_input,
                   Py_ssize_t q0, Py_ssize_t q1, geometry, int threads):
    cdef Py_ssize_t pixels, kh, kw, wo, sh, sw, ph, pw, dh, dw
    pixels, kh, kw, wo, sh, sw, ph, pw, dh, dw = geometry
    with nogil:
        _col2im(dcols, grad_input, q0, q1, pixels, kh, kw, wo, sh, sw, ph, pw, dh, dw, threads)


def _gemm(bint trans_a, bint trans_b, int m, int n, int k, const floating[::1] a,
          Py_ssize_t a_at, int lda, const floating[::1] b, Py_ssize_t b_at, int ldb,
          floating beta, floating[::1] c, Py_ssize_t c_at, int ldc):
    """One BLAS GEMM on flat buffers; the offsets and leading dimensions were checked by the
    caller against the buffers' sizes."""
    with nogil:
        gemm(trans_a, trans_b, m, n, k, &a[a_at], lda, &b[b_at], ldb, beta, &c[c_at], ldc)


def _check_span(name, buffer, at, rows, cols, ld):
    """The matrix at ``at`` (rows x cols, leading dimension ld) lies inside ``buffer``."""
    if rows and cols and (at < 0 or at + (rows - 1) * ld + cols > buffer.size or cols > ld):
        raise ValueError(f"{name}: a {rows}x{cols} matrix at {at} (ld {ld}) overruns a "
                         f"buffer of {buffer.size}")


def gemm_checked(trans_a, trans_b, m, n, k, a, a_at, lda, b, b_at, ldb, beta, c, c_at, ldc):
    """Row-major ``C = op(A) @ op(B) + beta C`` on flat C-contiguous buffers, with every
    matrix checked to lie inside its buffer before the GIL is dropped."""
    _check_span("A", a, a_at, *((k, m) if trans_a else (m, k)), lda)
    _check_span("B", b, b_at, *((n, k) if trans_b else (k, n)), ldb)
    _check_span("C", c, c_at, m, n, ldc)
    _gemm(trans_a, trans_b, m, n, k, a, a_at, lda, b, b_at, ldb, beta, c, c_at, ldc)


def _whole_input(spec):
    """Where one output pixel reads the whole input (``reads_whole_input``): the leading
    dimensions of the input's and the output's (images, channels x pixels) matrices, and a
    group's columns of the input (its rows of the im2col matrix)."""
    if not reads_whole_input(spec):
        return None
    k = math.prod(spec.weight_shape[1:])  # a filter's values
    return spec.groups * k, spec.out_channels, k


def forward(x, weight, bias, spec):
    """im2col + GEMM forward (see ``fastconv.kernels.numba.im2col.forward``)."""
    _checks.forward_args(x, weight, bias, spec)
    n_images, groups = x.shape[0], spec.groups
    og = spec.out_channels_per_group
    whole = _whole_input(spec)
    if whole:  # (N x k, of the input's rows) @ W_g^T into (N x og, of the output's rows)
        x_ld, y_ld, k = whole
        out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
        for g in range(groups):
            gemm_checked(False, True, n_images, og, k, x.reshape(-1), g * k, x_ld,
                         weight.reshape(-1), g * og * k, k, 0.0, out.reshape(-1), g * og, y_ld)
        if bias is not None:
            out += bias[:, None, None]
        return out
    # small images: one GEMM over them side by side, its output copied apart
    batched = batch_small_images(spec, n_images)
    tiling = column_tiling(spec, x.dtype.itemsize, n_images,
                           extra_rows=spec.out_channels if batched else 0)
    rows, group_rows, pixels, tile, geometry = tiling
    out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
    cols = workspace.scratch((rows, tile), x.dtype)
    w_flat, cols_flat, out_flat = weight.reshape(-1), cols.reshape(-1), out.reshape(-1)
    out_tile = workspace.scratch((groups, og, tile), x.dtype, slot=1) if batched else None
    threads = _checks.threads()
    for q0, q1, segments in tiles(tiling, n_images):
        _im2col_kernel(x, cols, q0, q1, geometry, threads)
        if batched and len(segments) > 1:
            for g in range(groups):
                gemm_checked(False, False, og, q1 - q0, group_rows, w_flat,
                             g * og * group_rows, group_rows, cols_flat, g * group_rows * tile,
                             tile, 0.0, out_tile.reshape(-1), g * og * tile, tile)
            put_apart(out_tile, segments, out.reshape(n_images, groups, og, pixels))
            continue
        for n, p0, p1, at in segments:
            for g in range(groups):
                gemm_checked(False, False, og, p1 - p0, group_rows, w_flat,
                             g * og * group_rows, group_rows, cols_flat,
                             g * group_rows * tile + at, tile, 0.0, out_flat,
                             (n * spec.out_channels + g * og) * pixels + p0, pixels)
    if bias is not None:
        out += bias[:, None, None]
    return out


def backward_weight(grad_output, x, spec):
    """``dW_g += dY_g @ cols_g^T`` tile after tile, accumulated by BLAS (beta = 1); a tile's
    image segments are copied side by side first, so small images make one GEMM, unless the
    gradient is summed in chunks of pixels anyway."""
    n_images = _checks.backward_args(grad_output, spec, x=x)
    groups, og = spec.groups, spec.out_channels_per_group
    whole = _whole_input(spec)
    if whole:  # (N x og, of the output's rows)^T @ (N x k, of the input's rows)
        x_ld, y_ld, k = whole
        grad = np.empty(spec.weight_shape, dtype=x.dtype)
        for g in range(groups):
            gemm_checked(True, False, og, k, n_images, grad_output.reshape(-1), g * og, y_ld,
                         x.reshape(-1), g * k, x_ld, 0.0, grad.reshape(-1), g * og * k, k)
        return grad
    tiling = column_tiling(spec, x.dtype.itemsize, n_images, extra_rows=spec.out_channels)
    rows, group_rows, pixels, tile, geometry = tiling
    grad = np.zeros(spec.weight_shape, dtype=x.dtype)
    cols = workspace.scratch((rows, tile), x.dtype)
    dy_tile = workspace.scratch((groups, og, tile), x.dtype, slot=1)
    dy = grad_output.reshape(n_images, groups, og, pixels)
    grad_flat, cols_flat, dy_flat = grad.reshape(-1), cols.reshape(-1), dy_tile.reshape(-1)
    threads = _checks.threads()
    dy_full = grad_output.reshape(-1)
    for q0, q1, segments in tiles(tiling, n_images):
        _im2col_kernel(x, cols, q0, q1, geometry, threads)
        # a small gradient over a long tile: a GEMM per chunk of pixels (see gradient_chunk)
        chunk = gradient_chunk(og, group_rows, q1 - q0)
        if len(segments) == 1 or chunk < q1 - q0:  # dY where it is, image by image
            parts = [(dy_full, n * spec.out_channels * pixels + p0, pixels, og * pixels, at,
                      p1 - p0) for n, p0, p1, at in segments]
        else:  # small images side by side: one GEMM
            side_by_side(dy, segments, dy_tile)
            parts = [(dy_flat, 0, tile, og * tile, 0, q1 - q0)]
        for lhs, lhs_at, lhs_ld, group_step, at, width in parts:
            for g in range(groups):
                for k0 in range(0, width, chunk):
                    gemm_checked(False, True, og, group_rows, min(chunk, width - k0), lhs,
                                 lhs_at + g * group_step + k0, lhs_ld, cols_flat,
                                 g * group_rows * tile + at + k0, tile, 1.0, grad_flat,
                                 g * og * group_rows, group_rows)
    return grad


def backward_input(grad_output, weight, spec):
    """``dcols_g = W_g^T @ dY_g``, folded back onto the input (col2im)."""
    n_images = _checks.backward_args(grad_output, spec, weight=weight)
    groups, og = spec.groups, spec.out_channels_per_group
    dtype = grad_output.dtype
    whole = _whole_input(spec)
    if whole:  # (N x og, of the output's rows) @ W_g into (N x k, of the input's rows)
        x_ld, y_ld, k = whole
        grad_input = np.empty(spec.input_shape(n_images), dtype)
        for g in range(groups):
            gemm_checked(False, False, n_images, k, og, grad_output.reshape(-1), g * og, y_ld,
                         weight.reshape(-1), g * og * k, k, 0.0, grad_input.reshape(-1), g * k,
                         x_ld)
        return grad_input
    tiling = column_tiling(spec, dtype.itemsize, n_images, extra_rows=spec.out_channels)
    rows, group_rows, pixels, tile, geometry = tiling
    dy_tile = workspace.scratch((groups, og, tile), dtype, slot=1)
    grad_input = np.zeros(spec.input_shape(n_images), dtype)
    dcols = workspace.scratch((rows, tile), dtype)
    w_flat, dcols_flat = weight.reshape(-1), dcols.reshape(-1)
    dy_flat = grad_output.reshape(-1)
    threads = _checks.threads()
    for q0, q1, segments in tiles(tiling, n_images):
        if len(segments) > 1:  # small images side by side: one GEMM
            side_by_side(grad_output.reshape(n_images, groups, og, pixels), segments, dy_tile)
            for g in range(groups):
                gemm_checked(True, False, group_rows, q1 - q0, og, w_flat,
                             g * og * group_rows, group_rows, dy_tile.reshape(-1),
                             g * og * tile, tile, 0.0, dcols_flat, g * group_rows * tile, tile)
            _col2im_kernel(dcols, grad_input, q0, q1, geometry, threads)
            continue
        for n, p0, p1, at in segments:
            for g in range(groups):
                gemm_checked(True, False, group_rows, p1 - p0, og, w_flat, g * og * group_rows,
                             group_rows, dy_flat, (n * spec.out_channels + g * og) * pixels + p0,
                             pixels, 0.0, dcols_flat, g * group_rows * tile + at, tile)
        _col2im_kernel(dcols, grad_input, q0, q1, geometry, threads)
    return grad_input
