"""Pooling on NHWC, vectorised across channels: max and average over windows, and the global
average before a classifier.

The windows are clipped to the input (``x``'s pixel (0, 0) at ``(top, left)`` of its buffer,
``height x width`` of them), so these kernels do not rely on the border: max pooling pads
with -inf. The divisor of an average follows ``torch.nn.AvgPool2d``: the window's extent
inside the padded input (``count_include_pad``), or its pixels inside the input, or
``divisor``. A NaN in a window makes its maximum NaN, as in PyTorch.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ....runtime import jit


@jit(parallel=True)
def max_pool(x, top, left, height, width, out, out_top, out_left, ho, wo, kh, kw, sh, sw, ph,
             pw, dh, dw, tasks):
    n_images, channels = x.shape[0], x.shape[3]
    rows = n_images * ho
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // ho
            oh = r - n * ho
            row = out_top + oh
            for ow in range(wo):
                col = out_left + ow
                for c in range(channels):
                    out[n, row, col, c] = -np.inf
                for i in range(kh):
                    ih = oh * sh - ph + i * dh
                    if ih < 0 or ih >= height:
                        continue
                    for j in range(kw):
                        iw = ow * sw - pw + j * dw
                        if iw < 0 or iw >= width:
                            continue
                        for c in range(channels):
                            v = x[n, top + ih, left + iw, c]
                            m = out[n, row, col, c]
                            out[n, row, col, c] = v if (v > m or v != v) else m


@jit(parallel=True)
def avg_pool(x, top, left, height, width, out, out_top, out_left, ho, wo, kh, kw, sh, sw, ph,
             pw, pad_bottom, pad_right, count_include_pad, divisor, tasks):
    """``divisor`` 0 means the window's own count."""
    n_images, channels = x.shape[0], x.shape[3]
    rows = n_images * ho
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // ho
            oh = r - n * ho
            row = out_top + oh
            h0 = oh * sh - ph
            h1 = min(h0 + kh, height + pad_bottom)
            for ow in range(wo):
                col = out_left + ow
                w0 = ow * sw - pw
                w1 = min(w0 + kw, width + pad_right)
                pool = (h1 - h0) * (w1 - w0)
                a0, a1 = max(h0, 0), min(h1, height)
                b0, b1 = max(w0, 0), min(w1, width)
                count = divisor if divisor > 0 else (pool if count_include_pad
                                                     else (a1 - a0) * (b1 - b0))
                for c in range(channels):
                    out[n, row, col, c] = 0
                for ih in range(a0, a1):
                    for iw in range(b0, b1):
                        for c in range(channels):
                            out[n, row, col, c] += x[n, top + ih, left + iw, c]
                for c in range(channels):
                    out[n, row, col, c] = out[n, row, col, c] / count


@jit(parallel=True)
def global_average(x, top, left, height, width, maximum, out, out_top, out_left, tasks):
    """``out[n, out_top, out_left, c]`` = the mean (with ``maximum``, the maximum; NaN if
    any is) of channel ``c`` of image ``n``; each task reduces its share of the channels,
    pixel by pixel, along contiguous slices (which vectorise; the arrays' 4-D indices would
    not: the compiler cannot tell ``out`` from ``x``)."""
    n_images, rows_in, cols_in, channels = x.shape
    rows_out, cols_out = out.shape[1], out.shape[2]
    xf, of = x.reshape(-1), out.reshape(-1)
    scale = 1.0 / (height * width)
    blocks = n_images * tasks
    for block in prange(blocks):
        n = block // tasks
        part = block - n * tasks
        c0, c1 = part * channels // tasks, (part + 1) * channels // tasks
        at = ((n * rows_out + out_top) * cols_out + out_left) * channels
        total = of[at + c0:at + c1]
        if maximum:
            total[:] = -np.inf
            for h in range(height):
                row = ((n * rows_in + top + h) * cols_in + left) * channels
                for w in range(width):
                    pixel = xf[row + w * channels + c0:row + w * channels + c1]
                    for c in range(c1 - c0):
                        v = pixel[c]
                        if v > total[c] or v != v:  # a NaN stays (no later value beats it)
                            total[c] = v
            continue
        total[:] = 0
        for h in range(height):
            row = ((n * rows_in + top + h) * cols_in + left) * channels
            for w in range(width):
                pixel = xf[row + w * channels + c0:row + w * channels + c1]
                for c in range(c1 - c0):
                    total[c] += pixel[c]
        for c in range(c1 - c0):
            total[c] = total[c] * scale
