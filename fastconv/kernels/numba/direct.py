"""Direct convolution: any kernel, stride, padding, dilation and groups, no workspace;
forward and backward.

Each parallel task owns one output plane ``(n, c_out)``. An output row is accumulated in
place over every (input channel, kernel row, kernel column) tap, so it stays in L1 while the
input rows stream past; the columns a tap cannot reach (padding) are cut off before the inner
loop, which is a plain strided multiply-add that LLVM vectorises.
"""

from __future__ import annotations

import numpy as np
from numba import prange, uintp

from ...runtime import jit
from ...spec import ConvSpec
from ._common import bias_or_zeros, valid_output_range


@jit()
def _reach(k_size, dilation, pad, stride, in_size, out_size):
    """For each kernel offset, the output range whose input index is inside the input."""
    lo = np.empty(k_size, np.int64)
    hi = np.empty(k_size, np.int64)
    for k in range(k_size):
        lo[k], hi[k] = valid_output_range(k * dilation - pad, stride, in_size, out_size)
    return lo, hi


@jit(inline=True)
def _accumulate_row(out, n, oc, oh, lo, hi, x, c, ih, start, sw, wv):
    """``out[n, oc, oh, o] += wv * x[n, c, ih, start + (o - lo) * sw]``, ``lo <= o < hi``."""
    if sw == 1:  # its own loop, so LLVM sees a literal unit stride and vectorises
        for i in range(uintp(hi - lo)):
            out[n, oc, oh, uintp(lo) + i] += wv * x[n, c, ih, uintp(start) + i]
    else:
        for i in range(uintp(hi - lo)):
            out[n, oc, oh, uintp(lo) + i] += wv * x[n, c, ih, uintp(start) + i * uintp(sw)]


@jit(parallel=True)
def _forward(x, weight, bias, out, sh, sw, ph, pw, dh, dw, groups):
    n_images, _, height, width = x.shape
    c_out, cg, kh_size, kw_size = weight.shape
    ho_size, wo_size = out.shape[2], out.shape[3]
    og = c_out // groups

    col_lo, col_hi = _reach(kw_size, dw, pw, sw, width, wo_size)

    for task in prange(n_images * c_out):
        n = task // c_out
        oc = task - n * c_out
        c0 = (oc // og) * cg
        b = bias[oc]
        for oh in range(ho_size):
            for ow in range(wo_size):
                out[n, oc, oh, ow] = b
            for kh in range(kh_size):
                ih = oh * sh - ph + kh * dh
                if ih < 0 or ih >= height:
                    continue
                for ic in range(cg):
                    for kw in range(kw_size):
                        lo = col_lo[kw]
                        _accumulate_row(out, n, oc, oh, lo, col_hi[kw], x, c0 + ic, ih,
                                        lo * sw + kw * dw - pw, sw, weight[oc, ic, kh, kw])


def forward(x, weight, bias, spec: ConvSpec):
    """Direct convolution forward.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    out = np.empty(spec.output_shape(x.shape[0]), dtype=x.dtype)
    bias = bias_or_zeros(bias, spec.out_channels, x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    _forward(x, weight, bias, out, sh, sw, ph, pw, dh, dw, spec.groups)
    return out


# --- backward -----------------------------------------------------------------------------


@jit(inline=True)
def _scatter_row(grad_input, n, c, ih, start, sw, grad_output, oc, oh, lo, count, wv):
    """``grad_input[n, c, ih, start + i*sw] += wv * grad_output[n, oc, oh, lo + i]``."""
    if sw == 1:
        for i in range(uintp(count)):
            grad_input[n, c, ih, uintp(start) + i] += wv * grad_output[n, oc, oh, uintp(lo) + i]
    else:
        for i in range(uintp(count)):
            grad_input[n, c, ih, uintp(start) + i * uintp(sw)] += (
                wv * grad_output[n, oc, oh, uintp(lo) + i])


@jit(inline=True)
def _dot_row(grad_output, n, oc, oh, lo, count, x, c, ih, start, sw):
    """``sum_i grad_output[n, oc, oh, lo + i] * x[n, c, ih, start + i*sw]``."""
    acc = 0.0
    if sw == 1:
        for i in range(uintp(count)):
            acc += grad_output[n, oc, oh, uintp(lo) + i] * x[n, c, ih, uintp(start) + i]
    else:
        for i in range(uintp(count)):
            acc += grad_output[n, oc, oh, uintp(lo) + i] * x[n, c, ih, uintp(start) + i * uintp(sw)]
    return acc


@jit(parallel=True)
def _backward_input(grad_output, weight, grad_input, sh, sw, ph, pw, dh, dw, groups):
    n_images, c_in, height, width = grad_input.shape
    c_out, cg, kh_size, kw_size = weight.shape
    ho_size, wo_size = grad_output.shape[2], grad_output.shape[3]
    og = c_out // groups
    row_lo, row_hi = _reach(kh_size, dh, ph, sh, height, ho_size)
    col_lo, col_hi = _reach(kw_size, dw, pw, sw, width, wo_size)
    # each task owns one input plane: no two threads add into the same pixel
    for task in prange(n_images * c_in):
        n = task // c_in
        c = task - n * c_in
        g = c // cg
        icg = c - g * cg
        for ih in range(uintp(height)):
            for iw in range(uintp(width)):
                grad_input[n, c, ih, iw] = 0.0
        for oc in range(g * og, (g + 1) * og):
            for kh in range(kh_size):
                for oh in range(row_lo[kh], row_hi[kh]):
                    ih = oh * sh - ph + kh * dh
                    for kw in range(kw_size):
                        lo = col_lo[kw]
                        _scatter_row(grad_input, n, c, ih, lo * sw + kw * dw - pw, sw,
                                     grad_output, oc, oh, lo, col_hi[kw] - lo,
                                     weight[oc, icg, kh, kw])


@jit(parallel=True)
def _backward_weight(grad_output, x, grad_weight, sh, sw, ph, pw, dh, dw, groups):
    n_images, _, height, width = x.shape
    c_out, cg, kh_size, kw_size = grad_weight.shape
    ho_size, wo_size = grad_output.shape[2], grad_output.shape[3]
    og = c_out // groups
    row_lo, row_hi = _reach(kh_size, dh, ph, sh, height, ho_size)
    col_lo, col_hi = _reach(kw_size, dw, pw, sw, width, wo_size)
    # each task owns one output channel's filters
    for oc in prange(c_out):
        c0 = (oc // og) * cg
        for icg in range(cg):
            for kh in range(kh_size):
                for kw in range(kw_size):
                    lo = col_lo[kw]
                    acc = 0.0
                    for n in range(n_images):
                        for oh in range(row_lo[kh], row_hi[kh]):
                            acc += _dot_row(grad_output, n, oc, oh, lo, col_hi[kw] - lo, x,
                                            c0 + icg, oh * sh - ph + kh * dh,
                                            lo * sw + kw * dw - pw, sw)
                    grad_weight[oc, icg, kh, kw] = acc


def backward_input(grad_output, weight, spec: ConvSpec):
    """Gradient of the input, scattered row by row from each output plane.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    grad_input = np.empty(spec.input_shape(grad_output.shape[0]), dtype=grad_output.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    _backward_input(grad_output, weight, grad_input, sh, sw, ph, pw, dh, dw, spec.groups)
    return grad_input


def backward_weight(grad_output, x, spec: ConvSpec):
    """Gradient of the weight, as row dot products.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    grad_weight = np.empty(spec.weight_shape, dtype=x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    _backward_weight(grad_output, x, grad_weight, sh, sw, ph, pw, dh, dw, spec.groups)
    return grad_weight
