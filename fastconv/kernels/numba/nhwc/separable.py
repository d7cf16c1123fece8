"""A depthwise 3x3 convolution fused with the pointwise one that follows it (MobileNet's
separable block): the depthwise output never goes to memory.

A task works down its share of output rows a few rows at a time: the depthwise rows
(``microkernel.depthwise_row``, with its own epilogue) go into the task's scratch, which stays
in cache, and the pointwise GEMM tiles read them from there and write the block's output with
theirs. The pointwise weights are read once per few rows, from the L2 cache. The tasks
split the rows equally, and each steps through its share in equal steps.
"""

from __future__ import annotations

from numba import prange

from ....runtime import jit
from ..microkernel import depthwise_row
from .conv import _tiles
from .layout import zero_border_share


@jit(parallel=True)
def separable(x, top, left, dw_w, dw_bias, dw_kind, dw_lo, dw_hi, dw_alpha, dw_beta, sh, sw, dh,
              dw, ho, wo, block, w, panel, panels, out, out_rows, out_channels, bias, has_bias,
              kind, lo, hi, alpha, beta, res, res_rows, res_mode, wide, mr, nr, scratch,
              s_rows, taps, rows_per_step, out_border, tasks):
    """``x`` (N, Hb, Wb, C) bordered, the depthwise input (the padded input's pixel (0, 0)
    at (top, left)), ``dw_w`` (9, C); the pointwise output goes to the flat ``out`` at
    ``out_rows``. ``scratch`` is ``(tasks, rows_per_step * wo * C)``, ``s_rows[p]`` is ``p *
    C`` (a step's first pixel lands at the start of its task's scratch), ``taps`` a single
    zero. ``block`` is the depthwise row's channels per call; ``out_border`` ``out``'s
    geometry for :func:`~.layout.zero_border_share`."""
    n_images, rows_in, cols_in, channels = x.shape
    xf, dwf = x.reshape(-1), dw_w.reshape(-1)
    rows = n_images * ho
    for task in prange(tasks):
        zero_border_share(out, out_border, task, tasks)
        sc = scratch[task]
        first, last = task * rows // tasks, (task + 1) * rows // tasks
        steps = (last - first + rows_per_step - 1) // rows_per_step
        for step in range(steps):  # equal steps of at most rows_per_step rows
            r0 = first + step * (last - first) // steps
            r1 = first + (step + 1) * (last - first) // steps
            for r in range(r0, r1):
                n = r // ho
                oh = r - n * ho
                x_at = ((n * rows_in + top + oh * sh) * cols_in + left) * channels
                at = (r - r0) * wo * channels
                for c0 in range(0, channels, block):
                    depthwise_row(xf, x_at, dh * cols_in * channels, sw * channels,
                                  dw * channels, dwf, c0, channels, dw_bias, sc, at, channels,
                                  wo, dw_kind, dw_lo, dw_hi, dw_alpha, dw_beta)
            for j in range(panels):  # the step's rows, from the scratch
                _tiles(sc, s_rows, r0 * wo, r1 * wo, -r0 * wo * channels, taps, 1, channels, 0,
                       channels, w, j * panel, out, out_rows, j * nr,
                       min(nr, out_channels - j * nr), True, True, bias, has_bias, kind, lo,
                       hi, alpha, beta, res, res_rows, res_mode, wide, mr)
