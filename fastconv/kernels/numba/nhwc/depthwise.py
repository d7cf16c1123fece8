"""Depthwise convolution on NHWC: vectorised across channels.

Each output pixel's channels are one contiguous vector, and so are its input pixels', so a
tap is one vector multiply-add with no gather, whatever the stride or dilation; the zero
border of the input holds the padding. Each output is written once, from its taps summed in
registers; but with a channel multiplier (several filters per input channel, which read input
channel ``c // multiplier``), the taps accumulate one by one into the output row.

Both take ``x`` (N, Hb, Wb, C) bordered, with the padded input's pixel (0, 0) at ``(top,
left)``; ``w`` (taps, C_out), the taps row by row; and write the (ho, wo) outputs into ``out``
(N, Hb', Wb', C_out) from ``(out_top, out_left)``, over ``tasks`` parallel chunks of rows.
"""

from __future__ import annotations

from numba import prange

from ....runtime import jit
from ..microkernel import depthwise_row, depthwise_taps_row
from .epilogue import activate_row
from .layout import zero_border_share


@jit(parallel=True)
def depthwise_3x3(x, top, left, w, bias, out, out_top, out_left, ho, wo, sh, sw, dh, dw,
                  kind, lo, hi, alpha, beta, block, out_border, tasks):
    """Here ``x`` and ``out`` are their buffers' 4-D views; the rows run in register blocks
    of ``block`` channels (``microkernel.depthwise_row``); ``out_border`` is ``out``'s
    geometry for :func:`~.layout.zero_border_share`."""
    n_images, rows_in, cols_in, channels = x.shape
    rows_out, cols_out = out.shape[1], out.shape[2]
    xf, of, wf = x.reshape(-1), out.reshape(-1), w.reshape(-1)
    rows = n_images * ho
    for task in prange(tasks):
        zero_border_share(of, out_border, task, tasks)
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // ho
            oh = r - n * ho
            x_at = ((n * rows_in + top + oh * sh) * cols_in + left) * channels
            out_at = ((n * rows_out + out_top + oh) * cols_out + out_left) * channels
            for c0 in range(0, channels, block):
                depthwise_row(xf, x_at, dh * cols_in * channels, sw * channels, dw * channels,
                              wf, c0, channels, bias, of, out_at, channels, wo, kind, lo, hi,
                              alpha, beta)


@jit(parallel=True)
def depthwise(x, top, left, w, kh, kw, multiplier, bias, out, out_top, out_left, ho, wo, sh,
              sw, dh, dw, kind, lo, hi, alpha, beta, block, tasks):
    """Any kernel size. With one filter per channel, the rows run in register blocks of
    ``block`` channels, a few outputs at a time (``microkernel.depthwise_taps_row``); with a
    channel multiplier (output channel c reads input channel ``c // multiplier``), each
    output row accumulates its taps, one vector of channels per output pixel per tap, while
    the row is in cache."""
    n_images, rows_in, cols_in, c_in = x.shape
    rows_out, cols_out, channels = out.shape[1], out.shape[2], out.shape[3]
    xf, of, wf = x.reshape(-1), out.reshape(-1), w.reshape(-1)
    rows = n_images * ho
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // ho
            oh = r - n * ho
            row = out_top + oh
            o_at = ((n * rows_out + row) * cols_out + out_left) * channels
            if multiplier == 1:
                x_at = ((n * rows_in + top + oh * sh) * cols_in + left) * c_in
                for c0 in range(0, channels, block):
                    depthwise_taps_row(xf, x_at, dh * cols_in * c_in, sw * c_in, dw * c_in, wf,
                                       c0, channels, bias, of, o_at, channels, wo, kh, kw, kind,
                                       lo, hi, alpha, beta)
                continue
            for ow in range(wo):
                o = of[o_at + ow * channels:o_at + (ow + 1) * channels]
                for c in range(channels):
                    o[c] = bias[c]
            for i in range(kh):
                x_row = (n * rows_in + top + oh * sh + i * dh) * cols_in
                for j in range(kw):
                    wt = w[i * kw + j]
                    for ow in range(wo):
                        x_at = (x_row + left + ow * sw + j * dw) * c_in
                        o = of[o_at + ow * channels:o_at + (ow + 1) * channels]
                        for c in range(channels):
                            o[c] += wt[c] * xf[x_at + c // multiplier]
            activate_row(out, n, row, out_left, wo, kind, lo, hi, alpha, beta)
