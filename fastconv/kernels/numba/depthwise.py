"""Depthwise convolution: ``groups == in_channels``, any channel multiplier.

Depthwise layers do 9 multiply-adds per output pixel and are bound by memory traffic, not
arithmetic. The 3x3 kernel (any stride, padding and dilation) therefore writes every output
pixel exactly once, summing all nine taps in one expression vectorised along the output row.
The input plane is first copied into a small zero-padded scratch plane (it is in cache, and
the copy is cheaper than border code: no pixel needs a bounds test). Wide planes are computed
row by row; narrow ones (MobileNet's 14x14 and 7x7) as one flat loop over the padded plane, so
that they vectorise too. Per-plane work avoids array views, whose reference counts are atomics
shared by both threads. Other kernel sizes, and
column strides above 2, use the direct kernel, whose per-row accumulation is already the right
shape for one input channel per group.
"""

from __future__ import annotations

import numpy as np
from numba import prange, uintp

from ... import config
from ...config import jit
from ...spec import ConvSpec
from . import direct
from ._common import backward_bias, bias_or_zeros  # noqa: F401


def skips_padding(spec: ConvSpec) -> bool:
    """The 3x3 path multiplies real zeros; other sizes run the direct kernel, which skips them."""
    return not _uses_3x3_path(spec)


def _uses_3x3_path(spec: ConvSpec) -> bool:
    return spec.kernel_size == (3, 3) and spec.stride[1] <= 2


def supports(spec: ConvSpec) -> str | None:
    """Depthwise needs one input channel per group."""
    if not spec.is_depthwise:
        return (
            f"depthwise needs groups == in_channels, but got groups={spec.groups} and "
            f"in_channels={spec.in_channels}"
        )
    return None


# a row shorter than this is too short for 16-wide vectors: compute the plane flat
_FLAT_BELOW = 32
_VECTOR = 16  # float32 lanes of an AVX-512 register


# The input plane is copied into a zero-padded scratch plane stored flat, row pitch ``wp``:
# tap (i, j) of the window at flat position p is then padded[p + i*dh*wp + j*dw], so the nine
# taps are nine constant offsets and no pixel needs a bounds test. Indices are unsigned (see
# _common). The sum is written once per output pixel.


@jit()
def _taps_3x3(padded, p, offsets, w):
    """The nine taps of the window whose top-left input pixel is ``padded[p]``."""
    o1, o2, o3, o4, o5, o6, o7, o8 = offsets
    return (
        w[0] * padded[p] + w[1] * padded[p + o1] + w[2] * padded[p + o2]
        + w[3] * padded[p + o3] + w[4] * padded[p + o4] + w[5] * padded[p + o5]
        + w[6] * padded[p + o6] + w[7] * padded[p + o7] + w[8] * padded[p + o8]
    )


@jit()
def _plane_by_rows(padded, wp, offsets, out, n, oc, sh, sw, w, b, line):
    """For wide planes: one vectorised loop per output row. Stride 2 computes the stride-1
    row into ``line`` (twice the multiplies, but unit-stride loads) and keeps every other
    value, which measured 3x faster than nine strided gathers per output."""
    ho_size, wo_size = out.shape[2], out.shape[3]
    span = uintp(sw * (wo_size - 1) + 1)  # stride-1 positions one output row spans
    for oh in range(uintp(ho_size)):
        base = oh * uintp(sh * wp)
        if sw == 1:
            for j in range(span):
                out[n, oc, oh, j] = b + _taps_3x3(padded, base + j, offsets, w)
        else:
            for j in range(span):
                line[j] = b + _taps_3x3(padded, base + j, offsets, w)
            for i in range(uintp(wo_size)):
                out[n, oc, oh, i] = line[i * uintp(sw)]


@jit()
def _plane_flat(padded, wp, offsets, out, n, oc, sh, sw, w, b, full):
    """For narrow planes (rows shorter than a few vectors): one vectorised loop over the whole
    flattened plane at stride 1, pad columns included, then pick the outputs. At 7x7 this does
    1.3x (stride 1) to 5x (stride 2) the multiplies but in 16-wide vectors instead of scalars."""
    ho_size, wo_size = out.shape[2], out.shape[3]
    span = (ho_size - 1) * sh * wp + (wo_size - 1) * sw + 1
    # round up to whole vectors: a remainder loop would run scalar (the buffers have slack)
    span = uintp((span + _VECTOR - 1) // _VECTOR * _VECTOR)
    for p in range(span):
        full[p] = b + _taps_3x3(padded, p, offsets, w)
    for oh in range(uintp(ho_size)):
        base = oh * uintp(sh * wp)
        for ow in range(uintp(wo_size)):
            out[n, oc, oh, ow] = full[base + ow * uintp(sw)]


@jit()
def _place_plane(flat, pitch, top, left, src, n, c, rows, cols, sh, sw):
    """``flat[(top + r*sh) * pitch + left + col*sw] = src[n, c, r, col]`` for ``r < rows``,
    ``col < cols``; everything else in ``flat`` is left as it is (zero). Copies an input plane
    into its padded scratch plane (stride 1), or spreads a gradient plane out at the stride.
    An explicit loop: Numba's 2-D slice assignment is several times slower, and a view of
    ``src`` per plane costs reference counting."""
    for r in range(uintp(rows)):
        base = (uintp(top) + r * uintp(sh)) * uintp(pitch) + uintp(left)
        for col in range(uintp(cols)):
            flat[base + col * uintp(sw)] = src[n, c, r, col]


def _offsets(pitch: int, dh: int, dw: int):
    """Flat offsets of taps (0, 1) ... (2, 2) from tap (0, 0) in a plane of row pitch ``pitch``."""
    return tuple(np.uint64(i * dh * pitch + j * dw) for i in range(3) for j in range(3))[1:]


@jit(parallel=True)
def _forward_3x3(x, weight, bias, out, sh, sw, ph, pw, dh, dw, offsets, n_chunks):
    n_images, c_in, height, width = x.shape
    c_out, ho_size, wo_size = out.shape[1], out.shape[2], out.shape[3]
    multiplier = c_out // c_in
    # the part of the zero-padded input that the outputs read
    hp = (ho_size - 1) * sh + 2 * dh + 1
    wp = (wo_size - 1) * sw + 2 * dw + 1
    rows = max(0, min(height, hp - ph))
    cols = max(0, min(width, wp - pw))
    flat = wo_size < _FLAT_BELOW
    tasks = n_images * c_out

    for chunk in prange(n_chunks):
        # per-chunk scratch: the padded plane (its border stays zero) and the stride-1 results
        padded = np.zeros(hp * wp + _VECTOR, x.dtype)
        scratch = np.empty(hp * wp + _VECTOR if flat else wp, x.dtype)
        copied = -1
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            n = task // c_out
            oc = task - n * c_out
            ic = oc // multiplier
            if n * c_in + ic != copied:  # the channels of a multiplier group share an input
                _place_plane(padded, wp, ph, pw, x, n, ic, rows, cols, 1, 1)
                copied = n * c_in + ic
            w = (
                weight[oc, 0, 0, 0], weight[oc, 0, 0, 1], weight[oc, 0, 0, 2],
                weight[oc, 0, 1, 0], weight[oc, 0, 1, 1], weight[oc, 0, 1, 2],
                weight[oc, 0, 2, 0], weight[oc, 0, 2, 1], weight[oc, 0, 2, 2],
            )
            if flat:
                _plane_flat(padded, wp, offsets, out, n, oc, sh, sw, w, bias[oc], scratch)
            else:
                _plane_by_rows(padded, wp, offsets, out, n, oc, sh, sw, w, bias[oc], scratch)


def forward(x, weight, bias, spec: ConvSpec):
    """Depthwise convolution forward.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    weight : ndarray, shape (C_in * multiplier, 1, kH, kW)
    bias : ndarray of shape (C_out,) or None
    spec : ConvSpec
        A depthwise spec (``groups == in_channels``).

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out)
    """
    if not _uses_3x3_path(spec):
        return direct.forward(x, weight, bias, spec)
    out = np.empty(spec.output_shape(x.shape[0]), dtype=x.dtype)
    bias = bias_or_zeros(bias, spec.out_channels, x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    wp = (spec.output_size[1] - 1) * sw + 2 * dw + 1
    _forward_3x3(x, weight, bias, out, sh, sw, ph, pw, dh, dw, _offsets(wp, dh, dw),
                 _chunks(x.shape[0] * spec.out_channels))
    return out


def _chunks(tasks: int) -> int:
    """Parallel chunks: a few per thread, for balance; each allocates its scratch once."""
    return max(1, min(tasks, 4 * config.get_num_threads()))


# --- backward -----------------------------------------------------------------------------
#
# The input gradient is a forward-style 3x3 correlation too: spread dY out at the stride
# (zeros between, a 2*dilation border of zeros), correlate it at stride 1 with the kernel
# rotated by 180 degrees, and the result is the gradient of the forward's padded plane; crop
# the padding off. A strided layer multiplies many of the spread zeros, but in vectors, and
# dilation only changes the nine offsets: no slow path.


@jit(parallel=True)
def _backward_input_3x3(grad_output, weight, grad_input, sh, sw, ph, pw, dh, dw, offsets,
                        n_chunks):
    n_images, c_out, ho_size, wo_size = grad_output.shape
    c_in, height, width = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    multiplier = c_out // c_in
    hp = (ho_size - 1) * sh + 2 * dh + 1  # the forward's padded plane
    wp = (wo_size - 1) * sw + 2 * dw + 1
    pitch = wp + 2 * dw  # the spread plane: dY at the stride inside a 2*d border
    span = uintp(((hp - 1) * pitch + wp + _VECTOR - 1) // _VECTOR * _VECTOR)
    rows = max(0, min(height, hp - ph))  # input rows/columns the forward reads; the rest get zero
    cols = max(0, min(width, wp - pw))
    tasks = n_images * c_in

    for chunk in prange(n_chunks):
        spread = np.zeros((hp + 2 * dh) * pitch + _VECTOR, grad_output.dtype)
        acc = np.empty(span, grad_output.dtype)
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            n = task // c_in
            ic = task - n * c_in
            for j in range(multiplier):  # every output channel fed by this input channel
                oc = ic * multiplier + j
                _place_plane(spread, pitch, 2 * dh, 2 * dw, grad_output, n, oc, ho_size,
                             wo_size, sh, sw)
                w = (
                    weight[oc, 0, 2, 2], weight[oc, 0, 2, 1], weight[oc, 0, 2, 0],
                    weight[oc, 0, 1, 2], weight[oc, 0, 1, 1], weight[oc, 0, 1, 0],
                    weight[oc, 0, 0, 2], weight[oc, 0, 0, 1], weight[oc, 0, 0, 0],
                )
                if j == 0:
                    for p in range(span):
                        acc[p] = _taps_3x3(spread, p, offsets, w)
                else:
                    for p in range(span):
                        acc[p] += _taps_3x3(spread, p, offsets, w)
            for ih in range(uintp(height)):
                base = (ih + uintp(ph)) * uintp(pitch) + uintp(pw)
                if ih < rows:
                    for iw in range(uintp(cols)):
                        grad_input[n, ic, ih, iw] = acc[base + iw]
                    for iw in range(uintp(cols), uintp(width)):
                        grad_input[n, ic, ih, iw] = 0.0
                else:
                    for iw in range(uintp(width)):
                        grad_input[n, ic, ih, iw] = 0.0


@jit()
def _plane_dots(spread, padded, span, offsets, zero):
    """The nine dot products ``sum_p spread[p] * padded[p + offset]`` in one pass, summed in
    the arrays' dtype (vectorised: one plane is at most a few ten thousand terms)."""
    o1, o2, o3, o4, o5, o6, o7, o8 = offsets
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = zero
    for p in range(span):
        g = spread[p]
        a0 += g * padded[p]
        a1 += g * padded[p + o1]
        a2 += g * padded[p + o2]
        a3 += g * padded[p + o3]
        a4 += g * padded[p + o4]
        a5 += g * padded[p + o5]
        a6 += g * padded[p + o6]
        a7 += g * padded[p + o7]
        a8 += g * padded[p + o8]
    return a0, a1, a2, a3, a4, a5, a6, a7, a8


@jit(parallel=True)
def _backward_weight_3x3(grad_output, x, grad_weight, sh, sw, ph, pw, dh, dw, offsets,
                         n_chunks, zero):
    """``dW[oc, i, j] = sum_p spread_dY[p] * padded_x[p + offset(i, j)]``: nine dot products
    over the flat planes, one pass per plane; the planes' sums are added in float64."""
    n_images, c_in, height, width = x.shape
    c_out, ho_size, wo_size = grad_output.shape[1], grad_output.shape[2], grad_output.shape[3]
    multiplier = c_out // c_in
    hp = (ho_size - 1) * sh + 2 * dh + 1
    wp = (wo_size - 1) * sw + 2 * dw + 1
    rows = max(0, min(height, hp - ph))
    cols = max(0, min(width, wp - pw))
    span = uintp(((ho_size - 1) * sh * wp + (wo_size - 1) * sw + _VECTOR) // _VECTOR * _VECTOR)

    for chunk in prange(n_chunks):
        padded = np.zeros(hp * wp + _VECTOR, x.dtype)
        spread = np.zeros(hp * wp + _VECTOR, x.dtype)
        sums = np.empty(9, np.float64)
        for oc in range(chunk * c_out // n_chunks, (chunk + 1) * c_out // n_chunks):
            ic = oc // multiplier
            sums[:] = 0.0
            for n in range(n_images):
                _place_plane(padded, wp, ph, pw, x, n, ic, rows, cols, 1, 1)
                _place_plane(spread, wp, 0, 0, grad_output, n, oc, ho_size, wo_size, sh, sw)
                dots = _plane_dots(spread, padded, span, offsets, zero)
                for k in range(9):
                    sums[k] += dots[k]
            for k in range(9):
                grad_weight[oc, 0, k // 3, k % 3] = sums[k]


def backward_input(grad_output, weight, spec: ConvSpec):
    """Depthwise gradient of the input.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C_out, H_out, W_out)
    weight : ndarray, shape (C_out, 1, kH, kW)
    spec : ConvSpec

    Returns
    -------
    ndarray, shape (N, C_in, H, W)
    """
    if not _uses_3x3_path(spec):
        return direct.backward_input(grad_output, weight, spec)
    n_images = grad_output.shape[0]
    grad_input = np.empty(spec.input_shape(n_images), dtype=grad_output.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    pitch = (spec.output_size[1] - 1) * sw + 4 * dw + 1
    _backward_input_3x3(grad_output, weight, grad_input, sh, sw, ph, pw, dh, dw,
                        _offsets(pitch, dh, dw), _chunks(n_images * spec.in_channels))
    return grad_input


def backward_weight(grad_output, x, spec: ConvSpec):
    """Depthwise gradient of the weight.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C_out, H_out, W_out)
    x : ndarray, shape (N, C_in, H, W)
    spec : ConvSpec

    Returns
    -------
    ndarray, shape (C_out, 1, kH, kW)
    """
    if not _uses_3x3_path(spec):
        return direct.backward_weight(grad_output, x, spec)
    grad_weight = np.empty(spec.weight_shape, dtype=x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    wp = (spec.output_size[1] - 1) * sw + 2 * dw + 1
    _backward_weight_3x3(grad_output, x, grad_weight, sh, sw, ph, pw, dh, dw,
                         _offsets(wp, dh, dw), _chunks(spec.out_channels), x.dtype.type(0))
    return grad_weight
