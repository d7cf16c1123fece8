"""The training network's per-channel and element-wise kernels, on NCHW arrays: batch norm in
training mode (its statistics, the normalisation, its backward), a clamp's forward and backward
(ReLU, ReLU6, Hardtanh, torch.clamp), alone or fused after a batch norm, and max and average
pooling: each a parallel pass or two where NumPy took several.

A channel's values are its plane in each image: ``x[n, c]``, contiguous. The batch norm's sums
are taken in float64 whatever the dtype (a float32 sum of a million values loses digits), in
one pass, around the channel's first value (``x[0, c, 0]``, within a few deviations of the
mean: the variance of values far from zero keeps its digits, as around the mean itself). Its
backward recomputes the normalised input from ``x``, the mean and ``1 / std`` rather than
keeping it: one array less per layer between the passes, for one multiply-add per value. The
per-channel coefficients (C values) are computed by the caller, in NumPy.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ...runtime import jit


@jit(inline=True)
def _statistics_around_the_mean(x, c):
    """Channel ``c``'s mean and biased variance of ``x`` (N, C, P) in two passes, around the
    mean: for a channel whose one-pass sums are not finite (an infinity, a NaN), torch's
    values (an infinite mean stays infinite)."""
    n_images, _, pixels = x.shape
    total = 0.0
    for n in range(n_images):
        for p in range(pixels):
            total += x[n, c, p]
    m = total / (n_images * pixels)
    squares = 0.0
    for n in range(n_images):
        for p in range(pixels):
            d = x[n, c, p] - m
            squares += d * d
    return m, squares / (n_images * pixels)


@jit(inline=True)
def _put_statistics(x, c, shift, total, squares, count, mean, var):
    """Channel ``c``'s mean and biased variance from its sums around ``shift``; in two
    passes where they are not finite."""
    m = total / count
    v = squares / count - m * m
    if np.isfinite(m) and np.isfinite(v):
        mean[c], var[c] = shift + m, max(v, 0.0)  # a rounding below zero
    else:
        mean[c], var[c] = _statistics_around_the_mean(x, c)


@jit(parallel=True)
def batch_norm_statistics(x, mean, var):
    """Each channel's mean and biased variance of ``x`` (N, C, P) into ``mean`` and ``var``
    (C,), float64."""
    n_images, channels, pixels = x.shape
    count = n_images * pixels
    for c in prange(channels):
        shift = float(x[0, c, 0]) if count else 0.0
        total = 0.0
        squares = 0.0
        for n in range(n_images):
            for p in range(pixels):
                d = x[n, c, p] - shift
                total += d
                squares += d * d
        _put_statistics(x, c, shift, total, squares, count, mean, var)


@jit(inline=True)
def _inside(v, lo, hi, any_lo, any_hi, closed):
    """Whether a clamp passes the gradient at ``v``, as torch's vectorised kernels do:
    torch.clamp's (``closed``) where ``lo <= v <= hi``, Hardtanh's and ReLU6's where ``lo < v
    < hi``, ReLU's unless ``v <= lo``: a NaN's gradient passes ReLU alone. An infinite bound
    (``any_lo``, ``any_hi`` False) is none."""
    if closed:
        return ((not any_lo) or v >= lo) and ((not any_hi) or v <= hi)
    if any_hi:
        return ((not any_lo) or v > lo) and v < hi
    return not (any_lo and v <= lo)


@jit(parallel=True)
def channel_affine(x, scale, shift, lo, hi, out):
    """``out = clamp(x * scale + shift, lo, hi)`` per channel (NaN kept): ``x`` and ``out``
    (N, C, P), ``scale`` and ``shift`` (C,), ``lo`` and ``hi`` of their dtype (a batch
    norm's normalisation and affine, and the clamp after it, as one; infinite bounds for
    none)."""
    n_images, channels, pixels = x.shape
    for c in prange(channels):
        s, t = scale[c], shift[c]
        for n in range(n_images):
            for p in range(pixels):
                v = x[n, c, p] * s + t
                out[n, c, p] = hi if v > hi else (lo if v < lo else v)


@jit(parallel=True)
def batch_norm_backward_sums(g, x, mean, inv_std, scale, shift, lo, hi, closed, sum_g,
                             sum_g_hat):
    """Per channel, the sums a batch norm's backward needs, float64 (C,): ``sum_g`` of the
    gradient ``g`` let through by the clamp after it (at ``x * scale + shift``, the batch
    norm's output, see :func:`channel_affine`), ``sum_g_hat`` of that gradient times the
    normalised input ``(x - mean) * inv_std``; ``g`` and ``x`` (N, C, P)."""
    n_images, channels, pixels = x.shape
    any_lo, any_hi = lo > -np.inf, hi < np.inf
    for c in prange(channels):
        m, r, s, t = mean[c], inv_std[c], scale[c], shift[c]
        total = 0.0
        weighted = 0.0
        for n in range(n_images):
            for p in range(pixels):
                xv = x[n, c, p]
                # a gradient stopped is a zero, which a NaN input still makes NaN (torch's)
                gv = g[n, c, p] if _inside(xv * s + t, lo, hi, any_lo, any_hi, closed) else 0.0
                total += gv
                weighted += gv * ((xv - m) * r)
        sum_g[c] = total
        sum_g_hat[c] = weighted


@jit(parallel=True)
def batch_norm_input_gradient(g, x, a, k, b, scale, shift, lo, hi, closed, out):
    """``out = g' * a - x * k + b`` per channel, ``g'`` the gradient the clamp lets through
    (as :func:`batch_norm_backward_sums`): a batch norm's input gradient, its coefficients
    from those sums; arrays (N, C, P) and (C,)."""
    n_images, channels, pixels = x.shape
    any_lo, any_hi = lo > -np.inf, hi < np.inf
    for c in prange(channels):
        av, kv, bv, s, t = a[c], k[c], b[c], scale[c], shift[c]
        for n in range(n_images):
            for p in range(pixels):
                xv = x[n, c, p]
                if _inside(xv * s + t, lo, hi, any_lo, any_hi, closed):
                    out[n, c, p] = g[n, c, p] * av - xv * kv + bv
                else:
                    out[n, c, p] = bv - xv * kv


# --- batch norm on small planes -------------------------------------------------------------
# A plane of a few pixels (ResNet's and MobileNet's last stages at 32x32: 2x2, 1x1) makes the
# per-channel loops above a short loop per image and channel. These take an image's values
# as one row ``x[n]`` (C * P), walked whole: each position's sum in its own accumulator
# (summed per channel after), the per-channel coefficients repeated per position by the
# caller (``np.repeat(scale, pixels)``), so that every inner loop is a contiguous run.


@jit(inline=True)
def _channel_block(block, blocks, channels, pixels):
    """The row positions ``[j0, j1)`` of the ``block``-th of ``blocks`` runs of channels."""
    return (block * channels // blocks) * pixels, ((block + 1) * channels // blocks) * pixels


@jit(parallel=True)
def batch_norm_statistics_rows(x, pixels, blocks, mean, var):
    """:func:`batch_norm_statistics` of ``x`` (N, C * P), planes of ``pixels`` values; the
    channels in ``blocks`` runs, each a thread's."""
    n_images, width = x.shape
    channels = width // pixels
    count = n_images * pixels
    for block in prange(blocks):
        j0, j1 = _channel_block(block, blocks, channels, pixels)
        shifts = np.zeros(j1 - j0)  # each position's channel's first value
        for c in range(j0 // pixels, j1 // pixels):
            if count:
                shifts[c * pixels - j0:(c + 1) * pixels - j0] = x[0, c * pixels]
        totals, squares = np.zeros(j1 - j0), np.zeros(j1 - j0)
        for n in range(n_images):
            for j in range(j0, j1):
                d = x[n, j] - shifts[j - j0]
                totals[j - j0] += d
                squares[j - j0] += d * d
        planes = x.reshape((n_images, channels, pixels))
        for c in range(j0 // pixels, j1 // pixels):
            at = c * pixels - j0
            _put_statistics(planes, c, shifts[at], totals[at:at + pixels].sum(),
                            squares[at:at + pixels].sum(), count, mean, var)


@jit(parallel=True)
def channel_affine_rows(x, scale, shift, lo, hi, out):
    """:func:`channel_affine` of ``x`` (N, C * P) into ``out``, ``scale`` and ``shift``
    repeated per position (C * P)."""
    n_images, width = x.shape
    for n in prange(n_images):
        for j in range(width):
            v = x[n, j] * scale[j] + shift[j]
            out[n, j] = hi if v > hi else (lo if v < lo else v)


@jit(parallel=True)
def batch_norm_backward_sums_rows(g, x, pixels, blocks, mean, inv_std, scale, shift, lo, hi,
                                  closed, sum_g, sum_g_hat):
    """:func:`batch_norm_backward_sums` of ``g`` and ``x`` (N, C * P), planes of ``pixels``
    values, the channels in ``blocks`` runs; ``scale`` and ``shift`` repeated per position
    (C * P), ``mean`` and ``inv_std`` per channel."""
    n_images, width = x.shape
    channels = width // pixels
    any_lo, any_hi = lo > -np.inf, hi < np.inf
    for block in prange(blocks):
        j0, j1 = _channel_block(block, blocks, channels, pixels)
        means, inv = np.empty(j1 - j0), np.empty(j1 - j0)
        for j in range(j0, j1):
            means[j - j0], inv[j - j0] = mean[j // pixels], inv_std[j // pixels]
        totals, weighted = np.zeros(j1 - j0), np.zeros(j1 - j0)
        for n in range(n_images):
            for j in range(j0, j1):
                xv = x[n, j]
                inside = _inside(xv * scale[j] + shift[j], lo, hi, any_lo, any_hi, closed)
                gv = g[n, j] if inside else 0.0
                totals[j - j0] += gv
                weighted[j - j0] += gv * ((xv - means[j - j0]) * inv[j - j0])
        for c in range(j0 // pixels, j1 // pixels):
            at = c * pixels - j0
            sum_g[c] = totals[at:at + pixels].sum()
            sum_g_hat[c] = weighted[at:at + pixels].sum()


@jit(parallel=True)
def batch_norm_input_gradient_rows(g, x, a, k, b, scale, shift, lo, hi, closed, out):
    """:func:`batch_norm_input_gradient` of ``g`` and ``x`` (N, C * P) into ``out``, every
    coefficient repeated per position (C * P)."""
    n_images, width = x.shape
    any_lo, any_hi = lo > -np.inf, hi < np.inf
    for n in prange(n_images):
        for j in range(width):
            xv = x[n, j]
            if _inside(xv * scale[j] + shift[j], lo, hi, any_lo, any_hi, closed):
                out[n, j] = g[n, j] * a[j] - xv * k[j] + b[j]
            else:
                out[n, j] = b[j] - xv * k[j]


@jit(parallel=True)
def clamp_forward(x, lo, hi, out):
    """``out = min(max(x, lo), hi)``, NaN kept; ``x`` and ``out`` flat, ``lo`` and ``hi`` of
    their dtype."""
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = hi if v > hi else (lo if v < lo else v)


@jit(parallel=True)
def clamp_backward(g, x, lo, hi, closed, gx):
    """``gx = g`` where the clamp passes the gradient at ``x`` (:func:`_inside`), else 0;
    all flat."""
    any_lo, any_hi = lo > -np.inf, hi < np.inf
    for i in prange(x.shape[0]):
        if _inside(x[i], lo, hi, any_lo, any_hi, closed):
            gx[i] = g[i]
        else:
            gx[i] = 0


def channels_view(a: np.ndarray) -> np.ndarray:
    """An (N, C, H, W) array as (N, C, H * W), without a copy where it is contiguous."""
    return a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3])  # -1 fails for 0 images


def image_rows(a: np.ndarray) -> np.ndarray:
    """An (N, C, H, W) array as (N, C * H * W), each image one row (the ``_rows`` kernels'),
    without a copy where it is contiguous."""
    return a.reshape(a.shape[0], a.shape[1] * a.shape[2] * a.shape[3])


@jit(parallel=True)
def max_pool_forward(x, taps, out, index):
    """Max pooling of each plane of ``x`` (N, C, P): output ``q`` is the largest of its taps
    inside the input (``taps``, ``PoolSpec.tap_table``: flat positions, -1 in the padding), a
    NaN if one is there, as torch's (the first of equal values, the last NaN); ``index`` its
    position, -1 for a window of padding only; ``out`` and ``index`` (N, C, Q)."""
    n_images, channels = x.shape[:2]
    windows, size = taps.shape
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        src = x[n, c]
        for q in range(windows):
            # without branches on the values (a data-dependent branch mispredicts): where
            # every value is finite (zero stays 0), the first of the largest wins
            best, at, zero = -np.inf, -1, 0.0
            for t in range(size):
                p = taps[q, t]
                v = src[max(p, 0)]
                zero += v * 0.0
                v = v if p >= 0 else -np.inf
                larger = v > best
                best = max(best, v)
                at = p if larger else at
            if zero != zero:  # an infinity or a NaN: torch's comparisons, one by one
                best, at = -np.inf, -1
                for t in range(size):
                    p = taps[q, t]
                    if p >= 0:
                        v = src[p]
                        if v > best or v != v or at < 0:
                            best, at = v, p
            out[n, c, q] = best
            index[n, c, q] = at


@jit(parallel=True)
def max_pool_backward(g, index, gx):
    """Each output's gradient ``g`` (N, C, Q) added at its maximum's position (``index``,
    from :func:`max_pool_forward`) in ``gx`` (N, C, P), zeroed first."""
    n_images, channels, windows = g.shape
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        gx[n, c, :] = 0
        for q in range(windows):
            at = index[n, c, q]
            if at >= 0:
                gx[n, c, at] += g[n, c, q]


@jit(parallel=True)
def avg_pool_forward(x, taps, divisors, out):
    """Average pooling of each plane of ``x`` (N, C, P): output ``q`` is the sum of its taps
    inside the input (as :func:`max_pool_forward`'s) over ``divisors[q]``."""
    n_images, channels = x.shape[:2]
    windows, size = taps.shape
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        for q in range(windows):
            total = 0.0
            for t in range(size):
                p = taps[q, t]
                if p >= 0:
                    total += x[n, c, p]
            out[n, c, q] = total / divisors[q]


@jit(parallel=True)
def avg_pool_backward(g, taps, divisors, gx):
    """The gradient of :func:`avg_pool_forward`: each output's ``g`` over its divisor, added
    at each of its taps inside the input, into ``gx`` (N, C, P), zeroed first."""
    n_images, channels, windows = g.shape
    size = taps.shape[1]
    for plane in prange(n_images * channels):
        n, c = plane // channels, plane % channels
        gx[n, c, :] = 0
        for q in range(windows):
            share = g[n, c, q] / divisors[q]
            for t in range(size):
                p = taps[q, t]
                if p >= 0:
                    gx[n, c, p] += share
