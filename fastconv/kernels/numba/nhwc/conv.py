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
from ..microkernel import (GEOMETRY, VECTOR_BYTES, tile_1, tile_2, tile_4, tile_full,
                           tile_full_1v, wide_1, wide_2, wide_4, wide_full, wide_full_1v,
                           wide_full_2v, wide_full_3v)
from ...plan_tiles import aligned_empty
from .layout import zero_border_share

# the wide tile's vectors (its panel's), for _tiles
_WIDE_VECTORS = GEOMETRY.tile_shape(np.float32, True)[1] // GEOMETRY.lanes(np.float32)


# the geometry of the tiles compiled here (``plan_tiles``), as functions
wide = GEOMETRY.wide
schedule = GEOMETRY.schedule


def pack(weight, groups: int, dtype, is_wide: bool) -> tuple[np.ndarray, int]:
    """``TileGeometry.pack``'s panels, in parallel from ``weight`` as its strides are (a
    training step re-packs its layers' weights, and the output's gradient, at every step)."""
    _, nr = GEOMETRY.tile_shape(dtype, is_wide)
    out_channels, c_in, kh, kw = weight.shape
    panels = -(-(out_channels // groups) // nr)
    out = aligned_empty((groups, panels, kh * kw, c_in, nr), dtype)
    _pack_panels(weight.astype(dtype, copy=False), groups, out)
    return out.reshape(-1), kh * kw * c_in * nr


@jit(parallel=True)
def _pack_panels(weight, groups, out):
    """``out[g, panel, tap, c, r]`` = ``weight[g * O/g + panel * NR + r, c, tap]``, zero
    past O/g: each task a panel's tap, reading NR rows of the weights."""
    out_channels, c_in, kh, kw = weight.shape
    per_group = out_channels // groups
    panels, taps, nr = out.shape[1], kh * kw, out.shape[4]
    for task in prange(groups * panels * taps):
        g, rest = task // (panels * taps), task % (panels * taps)
        p, t = rest // taps, rest % taps
        i, j = t // kw, t % kw
        rows = min(nr, per_group - p * nr)
        first = g * per_group + p * nr
        for c in range(c_in):  # written in order, each a vector of NR
            for r in range(rows):
                out[g, p, t, c, r] = weight[first + r, c, i, j]
            for r in range(rows, nr):
                out[g, p, t, c, r] = 0


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
    tiles, the last few in narrower ones (a full one would repeat a pixel). A panel whose
    channels end in fewer vectors than the panel's (16 channels of a 32-wide panel) takes
    full tiles of those vectors alone."""
    needed = -(-n_valid // (VECTOR_BYTES // x.itemsize))
    m = p0
    while m < p1:
        left = p1 - m
        step = mr if left >= mr else (4 if left >= 4 else left)
        args = (x, rows, m, step, x_shift, taps, n_taps, c_in, c0, c1, w, w_at, out, out_rows,
                n_shift, n_valid, start, finish, bias, has_bias, kind, lo, hi, alpha, beta,
                res, res_rows, res_mode)
        if step == mr:
            if wide:
                if needed == 1:
                    wide_full_1v(*args)
                elif needed == 2:
                    wide_full_2v(*args)
                elif needed == 3 and _WIDE_VECTORS == 4:
                    wide_full_3v(*args)
                else:
                    wide_full(*args)
            elif needed == 1:
                tile_full_1v(*args)
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
