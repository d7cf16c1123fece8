"""The plan's edges and element-wise steps on NHWC: NCHW in and out, zeroing a buffer's
border, a per-channel affine (a batch norm that follows no convolution), an activation on its
own, and the sum of two activations.

Element-wise kernels take their operands as (buffer, top, left) with the (h, w) interior size,
so that each may have its own border.
"""

from __future__ import annotations

from numba import prange

from ....runtime import jit
from .epilogue import activate_row


@jit(parallel=True)
def from_nchw(x, out, top, left, border, tasks):
    """``out[n, top + h, left + w, c] = x[n, c, h, w]`` (``x`` in any memory layout), and
    ``out``'s border zeroed (:func:`zero_border_share`)."""
    n_images, channels, height, width = x.shape
    rows = n_images * height
    flat = out.reshape(-1)
    for task in prange(tasks):
        zero_border_share(flat, border, task, tasks)
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // height
            h = r - n * height
            for w in range(width):
                for c in range(channels):
                    out[n, top + h, left + w, c] = x[n, c, h, w]


@jit(parallel=True)
def to_nchw(src, top, left, out, tasks):
    """``out[n, c, h, w] = src[n, top + h, left + w, c]``."""
    n_images, channels, height, width = out.shape
    planes = n_images * channels
    for task in prange(tasks):
        for p in range(task * planes // tasks, (task + 1) * planes // tasks):
            n = p // channels
            c = p - n * channels
            for h in range(height):
                for w in range(width):
                    out[n, c, h, w] = src[n, top + h, left + w, c]


@jit(parallel=True)
def zero_border(buf, border, tasks):
    """Zero the border of ``buf`` (a buffer, flat): :func:`zero_border_share` over ``tasks``
    parallel chunks."""
    for task in prange(tasks):
        zero_border_share(buf, border, task, tasks)


@jit()
def zero_border_share(buf, border, task, tasks):
    """Zero task ``task``'s share (of ``tasks``) of the border of ``buf``, a flat (N, Hb, Wb,
    C) buffer, ``border`` ``(N, Hb, Wb, C, top, bottom, left, right)``: the padding its
    readers read. The kernels that write a buffer call it in each of their tasks, so that
    the border costs no parallel region of its own (they write only the interior)."""
    n_images, rows_b, cols_b, channels = border[0], border[1], border[2], border[3]
    top, bottom, left, right = border[4], border[5], border[6], border[7]
    if top + bottom + left + right == 0:
        return
    rows = n_images * rows_b
    row_length = cols_b * channels
    for r in range(task * rows // tasks, (task + 1) * rows // tasks):
        h = r % rows_b
        at = r * row_length
        if h < top or h >= rows_b - bottom:
            buf[at:at + row_length] = 0
        else:
            buf[at:at + left * channels] = 0
            buf[at + row_length - right * channels:at + row_length] = 0


@jit(parallel=True)
def affine(x, top, left, scale, shift, has_affine, out, out_top, out_left, height, width,
           kind, lo, hi, alpha, beta, tasks):
    """``out = act(x * scale[c] + shift[c])`` (or ``act(x)`` without ``has_affine``)."""
    n_images, channels = x.shape[0], x.shape[3]
    rows = n_images * height
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // height
            h = r - n * height
            for w in range(width):
                if has_affine:
                    for c in range(channels):
                        out[n, out_top + h, out_left + w, c] = (x[n, top + h, left + w, c]
                                                                * scale[c] + shift[c])
                else:
                    for c in range(channels):
                        out[n, out_top + h, out_left + w, c] = x[n, top + h, left + w, c]
            activate_row(out, n, out_top + h, out_left, width, kind, lo, hi, alpha, beta)


@jit(parallel=True)
def add(a, a_top, a_left, b, b_top, b_left, out, out_top, out_left, height, width, kind, lo,
        hi, alpha, beta, tasks):
    """``out = act(a + b)``."""
    n_images, channels = a.shape[0], a.shape[3]
    rows = n_images * height
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // height
            h = r - n * height
            for w in range(width):
                for c in range(channels):
                    out[n, out_top + h, out_left + w, c] = (a[n, a_top + h, a_left + w, c]
                                                            + b[n, b_top + h, b_left + w, c])
            activate_row(out, n, out_top + h, out_left, width, kind, lo, hi, alpha, beta)


@jit(parallel=True)
def flatten(src, top, left, out, channels, height, width, tasks):
    """``out[n * F + (c * H + h) * W + w] = src[n, top + h, left + w, c]``: torch's flatten
    order, NCHW, for a flat output (N, F)."""
    n_images = src.shape[0]
    features = channels * height * width
    planes = n_images * channels
    for task in prange(tasks):
        for p in range(task * planes // tasks, (task + 1) * planes // tasks):
            n = p // channels
            c = p - n * channels
            base = n * features + c * height * width
            for h in range(height):
                for w in range(width):
                    out[base + h * width + w] = src[n, top + h, left + w, c]
