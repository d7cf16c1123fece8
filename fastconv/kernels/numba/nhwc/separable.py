"""A depthwise 3x3 convolution fused with the pointwise one that follows it (MobileNet's
separable block): the depthwise output never goes to memory.

A task works down its share of output rows a few rows at a time: the depthwise rows
(``microkernel.depthwise_row``, with its own epilogue) go into the task's scratch, which stays
in cache, and the pointwise GEMM tiles read them from there and write the block's output with
theirs. The pointwise weights are read once per few rows, from the L2 cache. The tasks
split the rows equally, and each steps through its share in equal steps.

:func:`expanded_separable` puts the pointwise layer before the depthwise one into the same
kernel too (MobileNet v2's inverted residual: expand, depthwise, project): the expanded rows
the depthwise rows read are made by the expand tiles into a zero-bordered slab in the task's
scratch, so the widest tensor of the block never goes to memory either. A step keeps the
slab rows the next step reads again (the 3x3 window's overlap), so only the rows at the edges
of a task's share are expanded twice.
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


@jit(parallel=True)
def expanded_separable(x, x_top, x_left, height, width, e_rows, e_w, e_panel, e_panels,
                       expanded, e_bias, e_has_bias, e_kind, e_lo, e_hi, e_alpha, e_beta,
                       e_wide, e_mr, e_nr, slab, slab_rows, dw_w, dw_bias, dw_kind, dw_lo,
                       dw_hi, dw_alpha, dw_beta, stride, ho, wo, block, w, panel, panels, out,
                       out_rows, out_channels, bias, has_bias, kind, lo, hi, alpha, beta, res,
                       res_rows, res_mode, wide, mr, nr, scratch, s_rows, taps, rows_per_step,
                       out_border, tasks):
    """A 1x1 expand layer, a depthwise 3x3 layer (padding 1, ``stride`` both ways) and a 1x1
    project layer as one kernel. ``x`` (N, Hb, Wb, C_in) bordered, its image's pixel (0, 0)
    at (``x_top``, ``x_left``), ``height`` x ``width`` pixels. The expand tiles (``e_*``, as
    :func:`~.conv.conv`'s) write ``expanded`` channels per pixel into ``slab`` (``(tasks,
    slab rows * (width + 2) * expanded)``, a zero column either side of each row), pixel
    ``q`` of a run of slab rows read from ``e_rows[q]`` (relative to the run's first input
    row) and written at ``slab_rows[q]``. The rest is :func:`separable`'s, the depthwise
    input being the slab."""
    n_images, rows_in, cols_in, c_in = x.shape
    xf, dwf = x.reshape(-1), dw_w.reshape(-1)
    pitch = (width + 2) * expanded  # one slab row, its two zero columns included
    rows = n_images * ho
    capacity = (rows_per_step - 1) * stride + 3
    for task in prange(tasks):
        zero_border_share(out, out_border, task, tasks)
        sl, sc = slab[task], scratch[task]
        for j in range(capacity):  # the expand tiles write only between the zero columns
            sl[j * pitch:j * pitch + expanded] = 0
            sl[(j + 1) * pitch - expanded:(j + 1) * pitch] = 0
        held_n, held_p0, held_count = -1, 0, 0  # the image and padded rows the slab holds
        first, last = task * rows // tasks, (task + 1) * rows // tasks
        steps = (last - first + rows_per_step - 1) // rows_per_step
        for step in range(steps):
            r = first + step * (last - first) // steps
            r1 = first + (step + 1) * (last - first) // steps
            while r < r1:  # the step's rows, image by image
                n = r // ho
                oh0 = r - n * ho
                seg = min(r1, (n + 1) * ho)
                p0 = oh0 * stride  # padded row p is the image's row p - 1
                need = (seg - 1 - r) * stride + 3
                keep = 0
                if held_n == n and held_p0 <= p0 < held_p0 + held_count:
                    keep = min(need, held_p0 + held_count - p0)
                    shift = (p0 - held_p0) * pitch
                    for i in range(keep * pitch):  # rows move up: a forward copy, in place
                        sl[i] = sl[shift + i]
                j = keep
                while j < need:
                    h = p0 + j - 1
                    if h < 0 or h >= height:  # the depthwise layer's zero padding
                        sl[j * pitch:(j + 1) * pitch] = 0
                        j += 1
                        continue
                    j1 = min(need, height + 1 - p0)  # slab rows j..j1 hold image rows
                    x_shift = ((n * rows_in + x_top + p0 - 1) * cols_in + x_left) * c_in
                    for u in range(e_panels):
                        _tiles(xf, e_rows, j * width, j1 * width, x_shift, taps, 1, c_in, 0,
                               c_in, e_w, u * e_panel, sl, slab_rows, u * e_nr,
                               min(e_nr, expanded - u * e_nr), True, True, e_bias, e_has_bias,
                               e_kind, e_lo, e_hi, e_alpha, e_beta, sl, slab_rows, 0, e_wide,
                               e_mr)
                    j = j1
                held_n, held_p0, held_count = n, p0, need
                for oh in range(oh0, oh0 + seg - r):
                    at = (oh - oh0) * wo * expanded
                    for c0 in range(0, expanded, block):
                        depthwise_row(sl, (oh - oh0) * stride * pitch, pitch,
                                      stride * expanded, expanded, dwf, c0, expanded, dw_bias,
                                      sc, at, expanded, wo, dw_kind, dw_lo, dw_hi, dw_alpha,
                                      dw_beta)
                for j in range(panels):  # the segment's rows, from the scratch
                    _tiles(sc, s_rows, r * wo, seg * wo, -r * wo * expanded, taps, 1,
                           expanded, 0, expanded, w, j * panel, out, out_rows, j * nr,
                           min(nr, out_channels - j * nr), True, True, bias, has_bias, kind,
                           lo, hi, alpha, beta, res, res_rows, res_mode, wide, mr)
                r = seg
