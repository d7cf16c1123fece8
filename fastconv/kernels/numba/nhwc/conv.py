"""Convolutions and linear layers as GEMMs of register tiles (``microkernel``).

Output pixel ``p`` of group ``g`` and channel ``n`` is ``sum_t sum_c x[rows[p] + g * c_in +
taps[t] + c] * w[g, t, c, n]``: ``rows`` holds each output pixel's first input pixel in the
zero-bordered input, ``taps`` the kernel taps' offsets from it, so stride, dilation and padding
are all in the two tables. A 1x1 convolution has one tap; a linear layer is a 1x1 convolution
whose "pixels" are the batch. The weights are packed once into panels of ``NR`` channels
(:func:`pack`); the calling thread's share of tiles and panels is chosen so that the two
threads (or more) get equal work whatever the layer's shape.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ....runtime import jit
from ..microkernel import (tile_1, tile_2, tile_4, tile_full, tile_shape, wide_1, wide_2, wide_4,
                           wide_full)
from .layout import zero_border_share


def wide(pixels: int, k: int, out_per_group: int, groups: int, dtype, threads: int) -> bool:
    """Whether a layer takes the wide tile (``tuning.GEMM_TILE_WIDE``) rather than the narrow.

    The narrow tile reads each input value once per narrow panel, the wide one half as
    often but with half the pixels per tile. The wide tile serves a layer with more channels
    than one narrow panel when its reduction is short (``k``, taps times input channels, at
    most ``tuning.WIDE_BELOW``), or its outputs are few (at most ``tuning.WIDE_BELOW``
    channels), or a thread's share of the input does not stay in the L2 cache.
    """
    from ... import tuning

    if out_per_group <= tile_shape(dtype)[1]:
        return False
    share = -(-pixels // max(1, threads)) * k * groups * np.dtype(dtype).itemsize
    return (k <= tuning.WIDE_BELOW or out_per_group <= tuning.WIDE_BELOW
            or share > l2_bytes() // 2)


def schedule(pixels: int, k: int, out_per_group: int, groups: int, dtype, threads: int,
             is_wide: bool, c_in: int | None = None) -> tuple[int, int, int, int]:
    """``(tile_groups, unit_groups, block, chunk)`` for a layer of ``pixels`` outputs, ``k``
    inputs per output (taps times ``c_in`` channels) and ``out_per_group`` outputs per group
    on ``threads``.

    The grid splits pixels and panels so that the largest task is smallest, or nearly
    (pixels first: then each task reads its share of the input only). Within a task the tiles come
    in blocks, each meeting every panel of the task: the block whose memory traffic is
    least, counting a block's input once if it fits half of the core's L2 cache (else once
    per panel) and the task's weights once if they fit (else once per block).
    """
    from ... import tuning

    mr, nr = tile_shape(dtype, is_wide)
    size = np.dtype(dtype).itemsize
    tiles = -(-pixels // mr)
    units = groups * -(-out_per_group // nr)
    tasks = max(1, min(threads, tiles * units))
    grids = [(-(-tiles // tg) * -(-units // (tasks // tg)), tg) for tg in range(tasks, 0, -1)
             if tasks % tg == 0]
    least = min(cost for cost, _ in grids)
    # the most pixel groups among the grids within tuning.GRID_SLACK of the least work:
    # splitting the panels instead makes every task read the whole input
    tile_groups = max(tg for cost, tg in grids if cost <= least * (1 + tuning.GRID_SLACK))
    unit_groups = tasks // tile_groups
    my_tiles, my_units = -(-tiles // tile_groups), -(-units // unit_groups)
    cache = l2_bytes() // 2
    weights = my_units * k * nr * size

    def traffic(block):
        a = block * mr * k * size
        inputs = my_tiles * mr * k * size * (1 if a <= cache else my_units)
        return inputs + weights * (1 if weights <= cache else -(-my_tiles // block))

    blocks = sorted({my_tiles, *(max(1, cache // (mr * k * size) >> s) for s in range(4))})
    block = min(blocks, key=lambda b: (traffic(b), -b))
    c_in = k if c_in is None else c_in
    chunk = c_in
    if k * nr * size > tuning.GEMM_CHUNK_ABOVE:  # a panel larger than the caches hold
        chunk = max(1, tuning.GEMM_CHUNK_BYTES // (nr * size))
        chunk = -(-c_in // -(-c_in // chunk))  # equal chunks
    return tile_groups, unit_groups, block, chunk


def l2_bytes() -> int:
    """This core's L2 cache, from sysfs (``tuning.L2_BYTES`` where it does not say)."""
    from ... import tuning

    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as fh:
            text = fh.read().strip()
        return int(text[:-1]) << {"K": 10, "M": 20}[text[-1]]
    except (OSError, ValueError, KeyError, IndexError):
        return tuning.L2_BYTES


def pack(weight, groups: int, dtype, is_wide: bool) -> tuple[np.ndarray, int]:
    """Weights (O, I/g, kH, kW) as panels ``[g][panel][tap][c][NR]`` (zero past O/g), flat, NR
    that of the tile (wide or narrow); returns them and one panel's length."""
    _, nr = tile_shape(dtype, is_wide)
    out_channels, c_in, kh, kw = weight.shape
    og = out_channels // groups
    panels = -(-og // nr)
    w = np.zeros((groups, panels * nr, kh * kw, c_in), dtype)
    w[:, :og] = weight.reshape(groups, og, c_in, kh * kw).transpose(0, 1, 3, 2)
    w = w.reshape(groups, panels, nr, kh * kw, c_in).transpose(0, 1, 3, 4, 2)
    return np.ascontiguousarray(w).reshape(-1), kh * kw * c_in * nr


@jit(parallel=True)
def conv(x, rows, taps, c_in, groups, w, panel, out, out_rows, out_per_group, bias, has_bias,
         kind, lo, hi, alpha, beta, res, res_rows, res_mode, wide, mr, nr, tile_groups,
         unit_groups, block, chunk, out_border):
    """The convolution of every output pixel in ``rows`` (see the module docstring), with its
    epilogue; ``res``/``res_rows`` a residual added when ``res_mode`` is 1 (before the
    activation) or 2 (after); ``wide`` selects the wide tile, ``(mr, nr)`` its shape
    (``tile_shape``). The work is a grid of ``tile_groups x unit_groups`` parallel tasks
    (pixels by panels, :func:`schedule`), and in a task ``block`` tiles at a time meet every
    panel, ``chunk`` input channels at a time (so that the chunk's weights stay in L1).
    ``out_border`` is ``out``'s geometry for :func:`~.layout.zero_border_share`."""
    pixels = rows.shape[0]
    tiles = (pixels + mr - 1) // mr
    panels = (out_per_group + nr - 1) // nr
    units = groups * panels
    tasks = tile_groups * unit_groups
    n_taps = taps.shape[0]
    for task in prange(tasks):
        zero_border_share(out, out_border, task, tasks)
        ti, ui = task // unit_groups, task % unit_groups
        t0, t1 = ti * tiles // tile_groups, (ti + 1) * tiles // tile_groups
        u0, u1 = ui * units // unit_groups, (ui + 1) * units // unit_groups
        # blocks of tiles whose input stays in cache while every panel passes over them
        for b0 in range(t0, t1, block):
            b1 = min(t1, b0 + block)
            for u in range(u0, u1):
                g = u // panels
                j = u - g * panels
                n_shift = g * out_per_group + j * nr
                n_valid = min(nr, out_per_group - j * nr)
                for c0 in range(0, c_in, chunk):
                    c1 = min(c_in, c0 + chunk)
                    _tiles(x, rows, b0 * mr, min(pixels, b1 * mr), g * c_in, taps, n_taps,
                           c_in, c0, c1, w, u * panel, out, out_rows, n_shift, n_valid, c0 == 0,
                           c1 == c_in, bias, has_bias, kind, lo, hi, alpha, beta, res, res_rows,
                           res_mode, wide, mr)


@jit()
def _tiles(x, rows, p0, p1, x_shift, taps, n_taps, c_in, c0, c1, w, w_at, out, out_rows,
           n_shift, n_valid, start, finish, bias, has_bias, kind, lo, hi, alpha, beta, res,
           res_rows, res_mode, wide, mr):
    """The pixels ``p0`` to ``p1`` of one panel and one chunk of input channels, in full
    tiles, the last few in narrower ones (a full one would repeat a pixel)."""
    m = p0
    while m < p1:
        left = p1 - m
        step = mr if left >= mr else (4 if left >= 4 else left)
        args = (x, rows, m, step, x_shift, taps, n_taps, c_in, c0, c1, w, w_at, out, out_rows,
                n_shift, n_valid, start, finish, bias, has_bias, kind, lo, hi, alpha, beta,
                res, res_rows, res_mode)
        if step == mr:
            if wide:
                wide_full(*args)
            else:
                tile_full(*args)
        elif wide:
            if step >= 3:
                wide_4(*args)
            elif step == 2:
                wide_2(*args)
            else:
                wide_1(*args)
        elif step >= 3:
            tile_4(*args)
        elif step == 2:
            tile_2(*args)
        else:
            tile_1(*args)
        m += step
