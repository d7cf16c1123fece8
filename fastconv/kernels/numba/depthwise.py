"""Depthwise convolution: ``groups == in_channels``, any channel multiplier.

Depthwise layers do 9 multiply-adds per output pixel and are bound by memory traffic, not
arithmetic. The 3x3 kernel (any stride, padding and dilation) therefore writes every output
pixel exactly once, summing all nine taps in one expression vectorised along the output row.
The input plane is first copied into a small scratch buffer (it is in cache, and the copy is
cheaper than border code: no pixel needs a bounds test), laid out by one of the paths of
:mod:`fastconv.kernels.depthwise_paths`: a zero-padded plane (wide planes computed row by row,
narrow ones as one flat loop so that they vectorise too), its four phases (stride 2), its even
and odd columns (narrow stride-2 planes padded by 1), or three wrapped copies (narrow "same"
planes). Per-plane work avoids array views, whose reference
counts are atomics shared by both threads. Small layers run on the calling thread alone (see
``runtime.run_sized``). Other kernel sizes, and
column strides above 2, use the direct kernel, whose per-row accumulation is already the right
shape for one input channel per group.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import prange, uintp

from ... import runtime
from ...runtime import jit
from ...spec import ConvSpec
from ..tuning import VECTOR
from ..depthwise_paths import (channel_scale_backward_input, channel_scale_backward_weight,
                               channel_scale_forward, flat_rows, is_channel_scale, path,
                               scratch_geometry, scratch_offsets, split_geometry, spread_geometry,
                               uses_3x3_path, uses_phases, wrapped_geometry)
from . import direct
from ._common import bias_or_zeros, parallel_chunks




# The input plane is copied into a zero-padded scratch plane stored flat, row pitch ``wp``:
# tap (i, j) of the window at flat position p is then padded[p + i*dh*wp + j*dw], so the nine
# taps are nine constant offsets and no pixel needs a bounds test. Indices are unsigned (see
# _common). The sum is written once per output pixel.


@functools.lru_cache(maxsize=256)
def _u64(offsets):
    """Taps (0, 1) ... (2, 2) as unsigned constants for the kernels (tap (0, 0) is 0)."""
    return tuple(np.uint64(o) for o in offsets[1:])


def _unsigned(geometry):
    """``(size, offsets)`` with the offsets as :func:`_u64`."""
    size, offsets = geometry
    return size, _u64(offsets)


@jit(inline=True)
def _output_plane(task, c_out, multiplier):
    """Task ``task`` of a forward kernel: its image, output channel and input channel."""
    n = task // c_out
    oc = task - n * c_out
    return n, oc, oc // multiplier


@jit(inline=True)
def _kernel(weight, oc, rotated):
    """Filter ``oc``'s nine weights as a tuple (row by row), or rotated by 180 degrees for the
    transposed correlation of the input gradient."""
    if rotated:
        return (weight[oc, 0, 2, 2], weight[oc, 0, 2, 1], weight[oc, 0, 2, 0],
                weight[oc, 0, 1, 2], weight[oc, 0, 1, 1], weight[oc, 0, 1, 0],
                weight[oc, 0, 0, 2], weight[oc, 0, 0, 1], weight[oc, 0, 0, 0])
    return (weight[oc, 0, 0, 0], weight[oc, 0, 0, 1], weight[oc, 0, 0, 2],
            weight[oc, 0, 1, 0], weight[oc, 0, 1, 1], weight[oc, 0, 1, 2],
            weight[oc, 0, 2, 0], weight[oc, 0, 2, 1], weight[oc, 0, 2, 2])


@jit(inline=True)
def _taps_3x3(padded, p, offsets, w):
    """The nine taps of the window whose top-left input pixel is ``padded[p]``."""
    o1, o2, o3, o4, o5, o6, o7, o8 = offsets
    return (
        w[0] * padded[p] + w[1] * padded[p + o1] + w[2] * padded[p + o2]
        + w[3] * padded[p + o3] + w[4] * padded[p + o4] + w[5] * padded[p + o5]
        + w[6] * padded[p + o6] + w[7] * padded[p + o7] + w[8] * padded[p + o8]
    )


@jit(inline=True)
def _plane_by_rows(padded, wp, offsets, out, n, oc, sh, sw, w, b, line):
    """For wide planes: one vectorised loop per output row. Stride 2 computes the stride-1
    row into ``line`` (twice the multiplies, but unit-stride loads that vectorise) and keeps
    every other value, instead of nine strided gathers per output, which run scalar."""
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


@jit(inline=True)
def _plane_flat(padded, wp, offsets, out, n, oc, sh, sw, w, b, full):
    """For narrow planes (rows shorter than a few vectors): one vectorised loop over the whole
    flattened plane at stride 1, pad columns included, then pick the outputs. At 7x7 this does
    1.3x (stride 1) to 5x (stride 2) the multiplies but in 16-wide vectors instead of scalars."""
    ho_size, wo_size = out.shape[2], out.shape[3]
    span = (ho_size - 1) * sh * wp + (wo_size - 1) * sw + 1
    # round up to whole vectors: a remainder loop would run scalar (the buffers have slack)
    span = uintp((span + VECTOR - 1) // VECTOR * VECTOR)
    for p in range(span):
        full[p] = b + _taps_3x3(padded, p, offsets, w)
    for oh in range(uintp(ho_size)):
        base = oh * uintp(sh * wp)
        for ow in range(uintp(wo_size)):
            out[n, oc, oh, ow] = full[base + ow * uintp(sw)]


@jit(inline=True)
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


@jit(inline=True)
def _place_phases(flat, pitch, plane, top, left, src, n, c, rows, cols):
    """Copy an input plane into its zero-padded scratch plane split into four phases: padded
    pixel (R, C) goes to phase ``2 * (R % 2) + C % 2`` (each ``plane`` long, row pitch
    ``pitch``) at ``(R // 2) * pitch + C // 2``. Positions not written stay zero. Columns go
    in pairs, one to each column phase: a whole interleaved pair vectorises, a lone column
    per loop would not."""
    one, two = uintp(1), uintp(2)
    first = uintp(left) & one  # the column phase of input column 0
    for r in range(uintp(rows)):
        row = uintp(top) + r
        base = (row & one) * two * uintp(plane) + (row >> one) * uintp(pitch)
        to_even = base + first * uintp(plane) + (uintp(left) >> one)  # columns 0, 2, 4...
        to_odd = base + (one - first) * uintp(plane) + ((uintp(left) + one) >> one)
        for k in range(uintp(cols) >> one):
            flat[to_even + k] = src[n, c, r, two * k]
            flat[to_odd + k] = src[n, c, r, two * k + one]
        if uintp(cols) & one:
            flat[to_even + (uintp(cols) >> one)] = src[n, c, r, uintp(cols) - one]


@jit(parallel=True)
def _forward_3x3(x, weight, bias, out, sh, sw, ph, pw, pitch, plane, rows, cols, phased, flat,
                 offsets, n_chunks):
    n_images, c_in = x.shape[0], x.shape[1]
    c_out = out.shape[1]
    multiplier = c_out // c_in
    size = 4 * plane if phased else plane
    if phased:  # the phases turn the stride-2 layer into a stride-1 one over the phases
        sh = sw = 1
    tasks = n_images * c_out

    for chunk in prange(n_chunks):
        # per-chunk scratch: the padded plane (its border stays zero) and the stride-1 results
        padded = np.zeros(size + VECTOR, x.dtype)
        scratch = np.empty(size + VECTOR if flat else pitch, x.dtype)
        copied = -1
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            n, oc, ic = _output_plane(task, c_out, multiplier)
            if n * c_in + ic != copied:  # the channels of a multiplier group share an input
                if phased:
                    _place_phases(padded, pitch, plane, ph, pw, x, n, ic, rows, cols)
                else:
                    _place_plane(padded, pitch, ph, pw, x, n, ic, rows, cols, 1, 1)
                copied = n * c_in + ic
            w = _kernel(weight, oc, False)
            if flat:
                _plane_flat(padded, pitch, offsets, out, n, oc, sh, sw, w, bias[oc], scratch)
            else:
                _plane_by_rows(padded, pitch, offsets, out, n, oc, sh, sw, w, bias[oc], scratch)


# The "wrapped" path (see depthwise_paths): three contiguous copies cost less than a padded copy
# and a compaction of the result, and the outputs are written once, in order.


@jit(inline=True)
def _place_wrapped(copies, copy, x, n, c, width, dh, dw):
    """The three copies of plane ``x[n, c]`` (flattened to (N, C, H*W)); see above."""
    pixels = uintp(x.shape[2])
    start = uintp(dh * width + dw)
    for k in range(uintp(3)):
        base = k * uintp(copy) + start
        for p in range(pixels):
            copies[base + p] = x[n, c, p]
    for row in range(pixels // uintp(width)):
        for k in range(uintp(dw)):
            copies[start + row * uintp(width) + uintp(width) - uintp(1) - k] = 0.0
            copies[uintp(2 * copy) + start + row * uintp(width) + k] = 0.0


@jit(parallel=True)
def _forward_wrapped_3x3(x, weight, bias, out, width, dh, dw, copy, offsets, n_chunks):
    """On (N, C, H*W) views of the input and output; see above."""
    n_images, c_in, pixels = x.shape
    c_out = out.shape[1]
    multiplier = c_out // c_in
    tasks = n_images * c_out
    for chunk in prange(n_chunks):
        copies = np.zeros(3 * copy + VECTOR, x.dtype)
        copied = -1
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            n, oc, ic = _output_plane(task, c_out, multiplier)
            if n * c_in + ic != copied:
                _place_wrapped(copies, copy, x, n, ic, width, dh, dw)
                copied = n * c_in + ic
            w = _kernel(weight, oc, False)
            b = bias[oc]
            for p in range(uintp(pixels)):
                out[n, oc, p] = b + _taps_3x3(copies, p, offsets, w)


# The "split" path (see depthwise_paths): one flat, vectorised pass splits the whole plane into
# its even and odd columns, instead of deinterleaving rows too short for a vector.


@jit(inline=True)
def _place_split(buf, part, x, n, c, half):
    """The three parts of the "split" scratch for plane ``x[n, c]`` (flattened to
    (N, C, H*W)): odd columns (last zeroed), even columns, odd columns."""
    start = uintp(1 + half)  # after the lead element and the zero row
    for k in range(uintp(x.shape[2]) >> uintp(1)):
        odd = x[n, c, uintp(2) * k + uintp(1)]
        buf[start + k] = odd
        buf[uintp(part) + start + k] = x[n, c, uintp(2) * k]
        buf[uintp(2 * part) + start + k] = odd
    for row in range((uintp(x.shape[2]) >> uintp(1)) // uintp(half)):
        buf[start + row * uintp(half) + uintp(half - 1)] = 0.0


@jit(parallel=True)
def _forward_split_3x3(x, weight, bias, out, half, part, offsets, n_chunks):
    """On (N, C, H*W) and (N, C, H/2 * W/2) views; see above."""
    n_images, c_in = x.shape[0], x.shape[1]
    c_out, rows_out = out.shape[1], out.shape[2] // half
    multiplier = c_out // c_in
    tasks = n_images * c_out
    # every row's positions (the odd rows are wasted), in whole vectors
    span = uintp(((2 * rows_out - 1) * half + VECTOR - 1) // VECTOR * VECTOR)
    for chunk in prange(n_chunks):
        buf = np.zeros(3 * part + VECTOR, x.dtype)
        full = np.empty(span, x.dtype)
        copied = -1
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            n, oc, ic = _output_plane(task, c_out, multiplier)
            if n * c_in + ic != copied:
                _place_split(buf, part, x, n, ic, half)
                copied = n * c_in + ic
            w = _kernel(weight, oc, False)
            b = bias[oc]
            for q in range(span):
                full[q] = b + _taps_3x3(buf, q, offsets, w)
            for oh in range(uintp(rows_out)):
                for ow in range(uintp(half)):
                    out[n, oc, oh * uintp(half) + ow] = full[uintp(2) * oh * uintp(half) + ow]


def forward(x, weight, bias, spec: ConvSpec):
    """Depthwise convolution forward.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    if is_channel_scale(spec):
        return channel_scale_forward(x, weight, bias, spec)
    if not uses_3x3_path(spec):
        return direct.forward(x, weight, bias, spec)
    out = np.empty(spec.output_shape(x.shape[0]), dtype=x.dtype)
    bias = bias_or_zeros(bias, spec.out_channels, x.dtype)
    (sh, sw), ((ph, _), (pw, _)) = spec.stride, spec.pads
    size, chunks = x.size + out.size, parallel_chunks(x.shape[0] * spec.out_channels)
    kind = path(spec)
    if kind == "wrapped":
        (dh, dw), width = spec.dilation, spec.input_size[1]
        runtime.run_sized(size, _forward_wrapped_3x3, _planes(x), weight, bias, _planes(out),
                          width, dh, dw, *_unsigned(wrapped_geometry(spec)), chunks)
    elif kind == "split":
        runtime.run_sized(size, _forward_split_3x3, _planes(x), weight, bias, _planes(out),
                          spec.output_size[1], *_unsigned(split_geometry(spec)), chunks)
    else:
        runtime.run_sized(size, _forward_3x3, x, weight, bias, out, sh, sw, ph, pw,
                          *scratch_geometry(spec), uses_phases(spec), flat_rows(spec),
                          _u64(scratch_offsets(spec)), chunks)
    return out


# --- backward -----------------------------------------------------------------------------
#
# The input gradient is a forward-style 3x3 correlation too: spread dY out at the stride
# (zeros between, a 2*dilation border of zeros), correlate it at stride 1 with the kernel
# rotated by 180 degrees, and the result is the gradient of the forward's padded plane; crop
# the padding off. A strided layer multiplies many of the spread zeros, but in vectors, and
# dilation only changes the nine offsets: no slow path.


@jit(parallel=True)
def _backward_input_3x3(grad_output, weight, grad_input, sh, sw, ph, pw, dh, dw, pitch, hp,
                        rows, cols, offsets, n_chunks):
    n_images, c_out, ho_size, wo_size = grad_output.shape
    c_in, height, width = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    multiplier = c_out // c_in
    wp = pitch - 2 * dw  # the forward's padded plane, inside the spread plane's border
    span = uintp(((hp - 1) * pitch + wp + VECTOR - 1) // VECTOR * VECTOR)
    tasks = n_images * c_in

    for chunk in prange(n_chunks):
        spread = np.zeros((hp + 2 * dh) * pitch + VECTOR, grad_output.dtype)
        acc = np.empty(span, grad_output.dtype)
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            n = task // c_in
            ic = task - n * c_in
            for j in range(multiplier):  # every output channel fed by this input channel
                oc = ic * multiplier + j
                _place_plane(spread, pitch, 2 * dh, 2 * dw, grad_output, n, oc, ho_size,
                             wo_size, sh, sw)
                w = _kernel(weight, oc, True)
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


@jit(inline=True)
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
def _backward_weight_3x3(grad_output, x, grad_weight, sh, sw, ph, pw, pitch, plane, rows, cols,
                         phased, offsets, n_chunks, zero):
    """``dW[oc, i, j] = sum_p spread_dY[p] * padded_x[p + offset(i, j)]``: nine dot products
    over the flat planes, one pass per plane; the planes' sums are added in float64."""
    n_images, c_in = x.shape[0], x.shape[1]
    c_out, ho_size, wo_size = grad_output.shape[1], grad_output.shape[2], grad_output.shape[3]
    multiplier = c_out // c_in
    size = 4 * plane if phased else plane
    if phased:  # dY sits at unit stride beside the input's phases
        sh = sw = 1
    span = uintp(((ho_size - 1) * sh * pitch + (wo_size - 1) * sw + VECTOR)
                 // VECTOR * VECTOR)

    for chunk in prange(n_chunks):
        padded = np.zeros(size + VECTOR, x.dtype)
        spread = np.zeros(plane + VECTOR, x.dtype)
        sums = np.empty(9, np.float64)
        for oc in range(chunk * c_out // n_chunks, (chunk + 1) * c_out // n_chunks):
            ic = oc // multiplier
            sums[:] = 0.0
            for n in range(n_images):
                if phased:
                    _place_phases(padded, pitch, plane, ph, pw, x, n, ic, rows, cols)
                else:
                    _place_plane(padded, pitch, ph, pw, x, n, ic, rows, cols, 1, 1)
                _place_plane(spread, pitch, 0, 0, grad_output, n, oc, ho_size, wo_size, sh, sw)
                dots = _plane_dots(spread, padded, span, offsets, zero)
                for k in range(9):
                    sums[k] += dots[k]
            for k in range(9):
                grad_weight[oc, 0, k // 3, k % 3] = sums[k]


# A stride-1 layer padded by its dilation is its own transpose: the input gradient is the same
# wrapped correlation of dY with the kernel rotated by 180 degrees, and the weight gradient is
# nine dot products of dY's plane with the input's wrapped copies.


@jit(parallel=True)
def _backward_input_wrapped_3x3(grad_output, weight, grad_input, width, dh, dw, copy, offsets,
                                n_chunks):
    """On (N, C, H*W) views of dY and dX."""
    n_images, c_in, pixels = grad_input.shape
    multiplier = grad_output.shape[1] // c_in
    tasks = n_images * c_in
    for chunk in prange(n_chunks):
        copies = np.zeros(3 * copy + VECTOR, grad_output.dtype)
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            n = task // c_in
            ic = task - n * c_in
            for j in range(multiplier):  # every output channel fed by this input channel
                oc = ic * multiplier + j
                _place_wrapped(copies, copy, grad_output, n, oc, width, dh, dw)
                w = _kernel(weight, oc, True)
                if j == 0:
                    for p in range(uintp(pixels)):
                        grad_input[n, ic, p] = _taps_3x3(copies, p, offsets, w)
                else:
                    for p in range(uintp(pixels)):
                        grad_input[n, ic, p] += _taps_3x3(copies, p, offsets, w)


@jit(parallel=True)
def _backward_weight_wrapped_3x3(grad_output, x, grad_weight, width, dh, dw, copy, offsets,
                                 n_chunks, zero):
    """On (N, C, H*W) views of dY and x; the planes' sums are added in float64."""
    n_images, c_in, pixels = x.shape
    c_out = grad_output.shape[1]
    multiplier = c_out // c_in
    for chunk in prange(n_chunks):
        copies = np.zeros(3 * copy + VECTOR, x.dtype)
        plane = np.empty(pixels, x.dtype)
        sums = np.empty(9, np.float64)
        for oc in range(chunk * c_out // n_chunks, (chunk + 1) * c_out // n_chunks):
            ic = oc // multiplier
            sums[:] = 0.0
            for n in range(n_images):
                _place_wrapped(copies, copy, x, n, ic, width, dh, dw)
                for p in range(uintp(pixels)):
                    plane[p] = grad_output[n, oc, p]
                dots = _plane_dots(plane, copies, uintp(pixels), offsets, zero)
                for k in range(9):
                    sums[k] += dots[k]
            for k in range(9):
                grad_weight[oc, 0, k // 3, k % 3] = sums[k]


# Stride 2 (undilated): the transpose of the phase-split forward. Each phase of the padded
# plane's gradient collects only its own taps (4, 2, 2 and 1 of the nine), read from dY laid
# out at unit stride with the phases' pitch, a zero row above and a zero column before each
# row; then the phases are interleaved back into the input's rows. No multiply by a spread
# zero, so the stride-2 gradient costs what the forward does.


@jit(inline=True)
def _phase_taps(d, p, row, w):
    """The four phases' gradients at one position, from dY at ``d[p]`` and its neighbours to
    the left, above and above-left (``row`` back): the even-even phase collects taps (0,0)
    (0,2) (2,0) (2,2), even-odd (0,1) (2,1), odd-even (1,0) (1,2), odd-odd (1,1); ``w`` is the
    kernel in forward order."""
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = w
    here, left = d[p], d[p - uintp(1)]
    up, up_left = d[p - row], d[p - row - uintp(1)]
    return (w0 * here + w2 * left + w6 * up + w8 * up_left, w1 * here + w7 * up,
            w3 * here + w5 * left, w4 * here)


@jit(inline=True)
def _phase_gradients(acc, d, plane, pitch, w, accumulate):
    """``acc`` (four phases of ``plane``) (+)= the padded plane's gradient from ``d``, dY at
    ``d[(1 + oh) * pitch + 1 + ow]``. One pass writes all four phases, and ``accumulate``
    picks one of two loops (a select inside one loop was slower)."""
    one, row, size = uintp(pitch + 1), uintp(pitch), uintp(plane)
    second, third, fourth = size, uintp(2) * size, uintp(3) * size  # where each phase starts
    if accumulate:
        for q in range(size):
            g0, g1, g2, g3 = _phase_taps(d, q + one, row, w)
            acc[q] += g0
            acc[second + q] += g1
            acc[third + q] += g2
            acc[fourth + q] += g3
    else:
        for q in range(size):
            g0, g1, g2, g3 = _phase_taps(d, q + one, row, w)
            acc[q] = g0
            acc[second + q] = g1
            acc[third + q] = g2
            acc[fourth + q] = g3


@jit(inline=True)
def _take_phases(dst, n, c, flat, pitch, plane, top, left, rows, cols):
    """The inverse of :func:`_place_phases`: ``dst[n, c]`` from the phases of its padded
    plane, zero where the forward read no input."""
    one, two = uintp(1), uintp(2)
    first = uintp(left) & one
    for r in range(uintp(dst.shape[2])):
        if r >= uintp(rows):
            for col in range(uintp(dst.shape[3])):
                dst[n, c, r, col] = 0.0
            continue
        row = uintp(top) + r
        base = (row & one) * two * uintp(plane) + (row >> one) * uintp(pitch)
        from_even = base + first * uintp(plane) + (uintp(left) >> one)
        from_odd = base + (one - first) * uintp(plane) + ((uintp(left) + one) >> one)
        for k in range(uintp(cols) >> one):
            dst[n, c, r, two * k] = flat[from_even + k]
            dst[n, c, r, two * k + one] = flat[from_odd + k]
        if uintp(cols) & one:
            dst[n, c, r, uintp(cols) - one] = flat[from_even + (uintp(cols) >> one)]
        for col in range(uintp(cols), uintp(dst.shape[3])):
            dst[n, c, r, col] = 0.0


@jit(parallel=True)
def _backward_input_phases_3x3(grad_output, weight, grad_input, ph, pw, pitch, plane, rows,
                               cols, n_chunks):
    n_images, c_out, ho_size, wo_size = grad_output.shape
    c_in = grad_input.shape[1]
    multiplier = c_out // c_in
    tasks = n_images * c_in
    for chunk in prange(n_chunks):
        d = np.zeros((ho_size + 3) * pitch + VECTOR, grad_output.dtype)
        acc = np.empty(4 * plane, grad_output.dtype)
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            n = task // c_in
            ic = task - n * c_in
            for j in range(multiplier):  # every output channel fed by this input channel
                oc = ic * multiplier + j
                _place_plane(d, pitch, 1, 1, grad_output, n, oc, ho_size, wo_size, 1, 1)
                w = _kernel(weight, oc, False)
                _phase_gradients(acc, d, plane, pitch, w, j > 0)
            _take_phases(grad_input, n, ic, acc, pitch, plane, ph, pw, rows, cols)


def _planes(a):
    """The (N, C, H*W) view of a C-contiguous (N, C, H, W) array."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def backward_input(grad_output, weight, spec: ConvSpec):
    """Depthwise gradient of the input.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    if is_channel_scale(spec):
        return channel_scale_backward_input(grad_output, weight, spec)
    if not uses_3x3_path(spec):
        return direct.backward_input(grad_output, weight, spec)
    n_images = grad_output.shape[0]
    grad_input = np.empty(spec.input_shape(n_images), dtype=grad_output.dtype)
    size, chunks = grad_output.size + grad_input.size, parallel_chunks(n_images * spec.in_channels)
    if path(spec) == "wrapped":
        runtime.run_sized(size, _backward_input_wrapped_3x3, _planes(grad_output), weight,
                          _planes(grad_input), spec.input_size[1], *spec.dilation,
                          *_unsigned(wrapped_geometry(spec)), chunks)
        return grad_input
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    if uses_phases(spec):
        runtime.run_sized(size, _backward_input_phases_3x3, grad_output, weight, grad_input, ph,
                          pw, *scratch_geometry(spec), chunks)
        return grad_input
    pitch, hp, taps = spread_geometry(spec)
    _, _, rows, cols = scratch_geometry(spec)
    runtime.run_sized(size, _backward_input_3x3, grad_output, weight, grad_input, sh, sw, ph, pw,
                      dh, dw, pitch, hp, rows, cols, _u64(taps), chunks)
    return grad_input


def backward_weight(grad_output, x, spec: ConvSpec):
    """Depthwise gradient of the weight.

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    if is_channel_scale(spec):
        return channel_scale_backward_weight(grad_output, x, spec)
    if not uses_3x3_path(spec):
        return direct.backward_weight(grad_output, x, spec)
    grad_weight = np.empty(spec.weight_shape, dtype=x.dtype)
    (sh, sw), ((ph, _), (pw, _)) = spec.stride, spec.pads
    size, zero = grad_output.size + x.size, x.dtype.type(0)
    chunks = parallel_chunks(spec.out_channels)
    if path(spec) == "wrapped":
        runtime.run_sized(size, _backward_weight_wrapped_3x3, _planes(grad_output), _planes(x),
                          grad_weight, spec.input_size[1], *spec.dilation,
                          *_unsigned(wrapped_geometry(spec)), chunks, zero)
    else:
        runtime.run_sized(size, _backward_weight_3x3, grad_output, x, grad_weight, sh, sw, ph,
                          pw, *scratch_geometry(spec), uses_phases(spec),
                          _u64(scratch_offsets(spec)), chunks, zero)
    return grad_weight
