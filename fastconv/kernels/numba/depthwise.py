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
from ._common import bias_or_zeros


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
def _taps_3x3(padded, p, offsets, w, b):
    """Bias plus the nine taps of the window whose top-left input pixel is ``padded[p]``."""
    o1, o2, o3, o4, o5, o6, o7, o8 = offsets
    return (
        b
        + w[0] * padded[p] + w[1] * padded[p + o1] + w[2] * padded[p + o2]
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
                out[n, oc, oh, j] = _taps_3x3(padded, base + j, offsets, w, b)
        else:
            for j in range(span):
                line[j] = _taps_3x3(padded, base + j, offsets, w, b)
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
        full[p] = _taps_3x3(padded, p, offsets, w, b)
    for oh in range(uintp(ho_size)):
        base = oh * uintp(sh * wp)
        for ow in range(uintp(wo_size)):
            out[n, oc, oh, ow] = full[base + ow * uintp(sw)]


@jit()
def _pad_plane(padded, wp, top, left, x, n, c, rows, cols):
    """Copy ``x[n, c, :rows, :cols]`` into the flat padded plane at (top, left); the border is
    left as it is (zero). An explicit loop: Numba's 2-D slice assignment is several times
    slower, and a view of ``x`` per plane costs reference counting."""
    for r in range(uintp(rows)):
        base = (r + uintp(top)) * uintp(wp) + uintp(left)
        for col in range(uintp(cols)):
            padded[base + col] = x[n, c, r, col]


@jit(parallel=True)
def _forward_3x3(x, weight, bias, out, sh, sw, ph, pw, dh, dw, n_chunks):
    n_images, c_in, height, width = x.shape
    c_out, ho_size, wo_size = out.shape[1], out.shape[2], out.shape[3]
    multiplier = c_out // c_in
    # the part of the zero-padded input that the outputs read
    hp = (ho_size - 1) * sh + 2 * dh + 1
    wp = (wo_size - 1) * sw + 2 * dw + 1
    rows = min(height, hp - ph)
    cols = min(width, wp - pw)
    # flat offset of tap (i, j) from tap (0, 0), as unsigned ints (mixed signed/unsigned
    # arithmetic would make them signed again)
    offsets = (uintp(dw), uintp(2 * dw),
               uintp(dh * wp), uintp(dh * wp + dw), uintp(dh * wp + 2 * dw),
               uintp(2 * dh * wp), uintp(2 * dh * wp + dw), uintp(2 * dh * wp + 2 * dw))
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
                _pad_plane(padded, wp, ph, pw, x, n, ic, rows, cols)
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
    n_chunks = min(x.shape[0] * spec.out_channels, 4 * config.get_num_threads())
    _forward_3x3(x, weight, bias, out, sh, sw, ph, pw, dh, dw, n_chunks)
    return out
