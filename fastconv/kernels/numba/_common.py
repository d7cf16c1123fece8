"""Small pieces the Numba kernels share.

A convention every kernel follows: hot loops index the full arrays with *unsigned* indices
(``numba.uintp``) instead of building per-row views. A signed index that might be negative
makes Numba emit wrap-around code, which turns each vector load into a gather; and each view
costs an atomic reference-count update that the two threads fight over.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import prange, uintp

from ... import runtime
from ...runtime import jit


@jit()
def valid_output_range(offset, stride, in_size, out_size):
    """Output positions ``o`` whose input index ``o * stride + offset`` lies in ``[0, in_size)``.

    Returns ``(lo, hi)`` with ``lo <= hi``: the loops over ``range(lo, hi)`` need no bounds
    test, which keeps padding out of the inner loops.
    """
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = (in_size - 1 - offset) // stride + 1  # floor division: negative when none is valid
    if hi > out_size:
        hi = out_size
    if lo > out_size:
        lo = out_size
    if hi < lo:
        hi = lo
    return lo, hi


def parallel_chunks(tasks: int) -> int:
    """Chunks for a kernel that splits ``tasks`` over its thread pool: a few per thread, for
    balance; each chunk allocates its scratch once."""
    return max(1, min(tasks, 4 * runtime.pool_size()))


@jit(parallel=True)
def add_bias(out, bias):
    """``out[n, c, ...] += bias[c]`` for an (N, C, P) array, in parallel over (n, c)."""
    n_images, channels, pixels = out.shape
    for task in prange(n_images * channels):
        n = task // channels
        c = task - n * channels
        value = bias[c]
        for p in range(uintp(pixels)):
            out[n, c, p] += value


def bias_or_zeros(bias, channels, dtype):
    """The bias, or read-only zeros, so a kernel compiles one specialisation for both."""
    return _zeros(channels, np.dtype(dtype)) if bias is None else bias


@functools.lru_cache(maxsize=256)
def _zeros(channels, dtype):
    """Read-only, so one array per size serves every call (and every thread)."""
    zeros = np.zeros(channels, dtype=dtype)
    zeros.flags.writeable = False
    return zeros


@jit(parallel=True)
def _sum_planes(grad_output, out):
    n_images, channels, height, width = grad_output.shape
    for c in prange(channels):
        acc = 0.0
        for n in range(n_images):
            for h in range(uintp(height)):
                for w in range(uintp(width)):
                    acc += grad_output[n, c, h, w]
        out[c] = acc


def backward_bias(grad_output):
    """Gradient of the bias: ``grad_output`` summed over images and pixels, per channel."""
    out = np.empty(grad_output.shape[1], grad_output.dtype)
    _sum_planes(grad_output, out)
    return out


@jit(parallel=True)
def parallel_copy(src, dst):
    """``dst[:] = src`` with every thread: the machine's streaming bandwidth probe."""
    for i in prange(src.shape[0]):
        dst[i] = src[i]
