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
def global_average(x, top, left, height, width, out, out_top, out_left, tasks):
    """``out[n, out_top, out_left, c]`` = the mean of channel ``c`` of image ``n``."""
    n_images, channels = x.shape[0], x.shape[3]
    blocks = n_images * tasks
    for block in prange(blocks):
        n = block // tasks
        part = block - n * tasks
        c0, c1 = part * channels // tasks, (part + 1) * channels // tasks
        for c in range(c0, c1):
            out[n, out_top, out_left, c] = 0
        for h in range(height):
            for w in range(width):
                for c in range(c0, c1):
                    out[n, out_top, out_left, c] += x[n, top + h, left + w, c]
        count = height * width
        for c in range(c0, c1):
            out[n, out_top, out_left, c] = out[n, out_top, out_left, c] / count
