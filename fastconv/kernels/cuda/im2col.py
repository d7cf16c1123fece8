"""im2col + a shared-memory tiled GEMM on the GPU, forward and backward.

Per image and tile of output pixels: a kernel unfolds the patches into a column matrix (a
thread per entry, zeros for padding), then one GEMM per group (``_common.gemm``). Backward:
``dW_g += dY_g @ cols_g^T`` accumulates in place (beta = 1), and ``dcols_g = W_g^T @ dY_g`` is
folded back by a kernel where a thread per input pixel gathers its columns (no atomics). The
column matrix is tiled under the workspace budget.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ...spec import ConvSpec
from ..tiling import column_tiling
from ._common import THREADS, add_bias, blocks, gemm, to_device


def _geometry(spec: ConvSpec):
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    return (spec.kernel_size[0], spec.kernel_size[1], spec.output_size[1], sh, sw, ph, pw, dh,
            dw)


@cuda.jit
def _im2col_kernel(x, cols, n, p0, width_tile, kh_size, kw_size, wo_size, sh, sw, ph, pw, dh,
                   dw, zero):
    i = cuda.grid(1)
    rows = cols.shape[0]
    if i >= rows * width_tile:
        return
    r = i // width_tile
    q = i - r * width_tile
    taps = kh_size * kw_size
    c = r // taps
    kh = (r - c * taps) // kw_size
    kw = r - c * taps - kh * kw_size
    p = p0 + q
    oh = p // wo_size
    ow = p - oh * wo_size
    h = oh * sh - ph + kh * dh
    w = ow * sw - pw + kw * dw
    cols[r, q] = x[n, c, h, w] if 0 <= h < x.shape[2] and 0 <= w < x.shape[3] else zero


@cuda.jit
def _col2im_kernel(dcols, grad_input, n, p0, width_tile, kh_size, kw_size, wo_size, sh, sw,
                   ph, pw, dh, dw):
    """grad_input[n] += the column entries of pixels [p0, p0 + width_tile) that read it."""
    i = cuda.grid(1)
    channels, height, width = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    if i >= channels * height * width:
        return
    iw = i % width
    ih = (i // width) % height
    c = i // (width * height)
    acc = grad_input[n, c, ih, iw]
    for kh in range(kh_size):
        th = ih + ph - kh * dh
        if th < 0 or th % sh != 0:
            continue
        for kw in range(kw_size):
            tw = iw + pw - kw * dw
            if tw < 0 or tw % sw != 0 or tw // sw >= wo_size:
                continue
            q = (th // sh) * wo_size + tw // sw - p0
            if 0 <= q < width_tile:
                acc += dcols[(c * kh_size + kh) * kw_size + kw, q]
    grad_input[n, c, ih, iw] = acc


def _tiles(pixels, tile):
    for p0 in range(0, pixels, tile):
        yield p0, min(pixels, p0 + tile)


def forward(x, weight, bias, spec: ConvSpec):
    """im2col + GEMM forward on the device; returns a device array."""
    x, weight = to_device(x), to_device(weight)
    n_images, groups = x.shape[0], spec.groups
    og = spec.out_channels_per_group
    rows, _, pixels, tile, _ = column_tiling(spec, x.dtype.itemsize, 1)  # tiles in an image
    kg = rows // groups
    out = cuda.device_array(spec.output_shape(n_images), x.dtype)
    out_mat = out.reshape(n_images, spec.out_channels, pixels)
    w_mat = weight.reshape(spec.out_channels, kg)
    cols = cuda.device_array((rows, tile), x.dtype)
    for n in range(n_images):
        for p0, p1 in _tiles(pixels, tile):
            width = p1 - p0
            _im2col_kernel[blocks(rows * width), THREADS](x, cols, n, p0, width,
                                                          *_geometry(spec), x.dtype.type(0))
            for g in range(groups):
                gemm(w_mat[g * og:(g + 1) * og], cols[g * kg:(g + 1) * kg, :width],
                     out_mat[n, g * og:(g + 1) * og, p0:p1])
    if bias is not None:
        add_bias(out, bias)
    return out


def backward_weight(grad_output, x, spec: ConvSpec):
    """``dW_g += dY_g @ cols_g^T``, accumulated in place by the GEMM; a device array."""
    dy, x = to_device(grad_output), to_device(x)
    n_images, groups = x.shape[0], spec.groups
    og = spec.out_channels_per_group
    rows, _, pixels, tile, _ = column_tiling(spec, x.dtype.itemsize, 1)  # tiles in an image
    kg = rows // groups
    grad = cuda.to_device(np.zeros((spec.out_channels, kg), x.dtype))
    dy_mat = dy.reshape(n_images, spec.out_channels, pixels)
    cols = cuda.device_array((rows, tile), x.dtype)
    for n in range(n_images):
        for p0, p1 in _tiles(pixels, tile):
            width = p1 - p0
            _im2col_kernel[blocks(rows * width), THREADS](x, cols, n, p0, width,
                                                          *_geometry(spec), x.dtype.type(0))
            for g in range(groups):
                gemm(dy_mat[n, g * og:(g + 1) * og, p0:p1], cols[g * kg:(g + 1) * kg, :width],
                     grad[g * og:(g + 1) * og], trans_b=True, beta=1.0)
    return grad.reshape(spec.weight_shape)


def backward_input(grad_output, weight, spec: ConvSpec):
    """``dcols_g = W_g^T @ dY_g``, gathered back onto the input; a device array."""
    dy, weight = to_device(grad_output), to_device(weight)
    n_images, groups = dy.shape[0], spec.groups
    og = spec.out_channels_per_group
    rows, _, pixels, tile, _ = column_tiling(spec, dy.dtype.itemsize, 1)
    kg = rows // groups
    grad_input = cuda.to_device(np.zeros(spec.input_shape(n_images), dy.dtype))
    dy_mat = dy.reshape(n_images, spec.out_channels, pixels)
    w_mat = weight.reshape(spec.out_channels, kg)
    dcols = cuda.device_array((rows, tile), dy.dtype)
    plane = spec.in_channels * spec.input_size[0] * spec.input_size[1]
    for n in range(n_images):
        for p0, p1 in _tiles(pixels, tile):
            width = p1 - p0
            for g in range(groups):
                gemm(w_mat[g * og:(g + 1) * og], dy_mat[n, g * og:(g + 1) * og, p0:p1],
                     dcols[g * kg:(g + 1) * kg, :width], trans_a=True)
            _col2im_kernel[blocks(plane), THREADS](dcols, grad_input, n, p0, width,
                                                   *_geometry(spec))
    return grad_input
