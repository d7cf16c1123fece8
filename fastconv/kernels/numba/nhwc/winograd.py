"""Winograd F(2x2, 3x3) on NHWC: a 3x3 stride-1 convolution with 2.25x fewer multiplies.

Each 2x2 block of outputs ("tile") comes from a 4x4 patch of the zero-bordered input: the
patch is transformed (``V = B^T d B``, 16 values per channel), the 16 transformed positions
are 16 GEMMs of the tiles' values by the transformed filters (``U = G g G^T``, packed once),
done by the plan's register tiles, and the products are transformed back (``Y = A^T M A``)
with the epilogue (bias, a residual, activation) into the output. A task works through
blocks of tiles with its own scratch, so that a block's transformed values stay in cache
between the three steps; the transforms run along the channels, in vectors.
"""

from __future__ import annotations

from numba import prange

from ....runtime import jit
from ..microkernel import winograd_in, winograd_out
from ..microkernel import GEOMETRY
from .conv import _tiles
from .layout import zero_border_share

pack_filters = GEOMETRY.winograd_filters


@jit(parallel=True)
def winograd(x, top, left, w, panel, panels, channels, bias, out, out_top, out_left, ho, wo,
             kind, lo, hi, alpha, beta, res, res_top, res_left, res_channel, res_mode, v, m,
             rows, m_rows, taps, block, is_wide, mr, nr, out_border, tasks):
    """The convolution of ``x`` (N, Hb, Wb, C) bordered (the padded input's pixel (0, 0) at
    (top, left), a row and a column of zeros more past its end for an odd output) into
    ``out`` from (out_top, out_left). ``res`` (N, Hr, Wr, Cr), its pixel (0, 0) at (res_top,
    res_left) and the output's channel 0 at its ``res_channel``, is added before the
    activation (``res_mode`` 1), after it (2), or not (0). ``v`` and ``m`` are the tasks'
    scratch, ``(tasks, 16 * block * C)`` and ``(tasks, 16 * block * O)``; ``rows`` and
    ``m_rows`` the block's tile offsets in them (``t * C``, ``t * O``); ``taps`` a single
    zero. Task ``i`` takes blocks ``i``, ``i + tasks``, ...; ``out_border`` is ``out``'s
    geometry for :func:`~.layout.zero_border_share`."""
    n_images, rows_in, cols_in = x.shape[0], x.shape[1], x.shape[2]
    rows_out, cols_out, out_channels = out.shape[1], out.shape[2], out.shape[3]
    res_rows, res_cols, res_pitch = res.shape[1], res.shape[2], res.shape[3]
    xf, of, rf = x.reshape(-1), out.reshape(-1), res.reshape(-1)
    tiles_h, tiles_w = (ho + 1) // 2, (wo + 1) // 2
    per_image = tiles_h * tiles_w
    tiles = n_images * per_image
    v_shift, m_shift = block * channels, block * out_channels
    for task in prange(tasks):
        zero_border_share(of, out_border, task, tasks)
        vs, ms = v[task], m[task]
        for b0 in range(task * block, tiles, tasks * block):
            count = min(tiles, b0 + block) - b0
            for t in range(count):
                q = b0 + t
                n, r = q // per_image, q % per_image
                th, tw = r // tiles_w, r % tiles_w
                x_at = ((n * rows_in + top + 2 * th) * cols_in + left + 2 * tw) * channels
                winograd_in(xf, x_at, cols_in * channels, channels, channels, vs, t * channels,
                            v_shift)
            for xi in range(16):
                for j in range(panels):
                    _tiles(vs, rows, 0, count, xi * v_shift, taps, 1, channels, 0, channels, w,
                           (xi * panels + j) * panel, ms, m_rows, xi * m_shift + j * nr,
                           min(nr, out_channels - j * nr), True, True, bias, False, 0, lo, hi,
                           alpha, beta, ms, m_rows, 0, is_wide, mr)
            for t in range(count):
                q = b0 + t
                n, r = q // per_image, q % per_image
                th, tw = r // tiles_w, r % tiles_w
                out_at = ((n * rows_out + out_top + 2 * th) * cols_out + out_left + 2 * tw
                          ) * out_channels
                res_at = ((n * res_rows + res_top + 2 * th) * res_cols + res_left + 2 * tw
                          ) * res_pitch + res_channel
                winograd_out(ms, t * out_channels, m_shift, out_channels, bias, of, out_at,
                             cols_out * out_channels, out_channels, min(2, ho - 2 * th),
                             min(2, wo - 2 * tw), kind, lo, hi, alpha, beta, rf, res_at,
                             res_cols * res_pitch, res_pitch, res_mode)
