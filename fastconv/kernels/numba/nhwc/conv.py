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


def wide(out_per_group: int, dtype) -> bool:
    """Whether a layer of ``out_per_group`` channels per group takes the wide tile: more
    channels than one narrow panel holds (``tuning.GEMM_TILE_WIDE``)."""
    return out_per_group > tile_shape(dtype)[1]


def schedule(pixels: int, k: int, out_per_group: int, groups: int, dtype,
             threads: int) -> tuple[int, int, int]:
    """``(tile_groups, unit_groups, block)`` for a layer of ``pixels`` outputs, ``k`` inputs
    per output (taps times channels) and ``out_per_group`` outputs per group on ``threads``.

    The grid splits pixels and panels so that the largest task is smallest (pixels first on
    a tie: then each task reads its share of the input only). Within a task the tiles come
    in blocks, each meeting every panel of the task: the block whose memory traffic is
    least, counting a block's input once if it fits half of the core's L2 cache (else once
    per panel) and the task's weights once if they fit (else once per block).
    """
    is_wide = wide(out_per_group, dtype)
    mr, nr = tile_shape(dtype, is_wide)
    size = np.dtype(dtype).itemsize
    tiles = -(-pixels // mr)
    units = groups * -(-out_per_group // nr)
    tasks = max(1, min(threads, tiles * units))
    best = None
    for tg in range(tasks, 0, -1):
        if tasks % tg:
            continue
        cost = -(-tiles // tg) * -(-units // (tasks // tg))
        if best is None or cost < best[0]:
            best = (cost, tg, tasks // tg)
    _, tile_groups, unit_groups = best
    my_tiles, my_units = -(-tiles // tile_groups), -(-units // unit_groups)
    cache = l2_bytes() // 2
    weights = my_units * k * nr * size

    def traffic(block):
        a = block * mr * k * size
        inputs = my_tiles * mr * k * size * (1 if a <= cache else my_units)
        return inputs + weights * (1 if weights <= cache else -(-my_tiles // block))

    blocks = sorted({my_tiles, *(max(1, cache // (mr * k * size) >> s) for s in range(4))})
    block = min(blocks, key=lambda b: (traffic(b), -b))
    return tile_groups, unit_groups, block


def l2_bytes() -> int:
    """This core's L2 cache, from sysfs (``tuning.L2_BYTES`` where it does not say)."""
    from ... import tuning

    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as fh:
            text = fh.read().strip()
        return int(text[:-1]) << {"K": 10, "M": 20}[text[-1]]
    except (OSError, ValueError, KeyError, IndexError):
        return tuning.L2_BYTES


def pack(weight, groups: int, dtype) -> tuple[np.ndarray, int]:
    """Weights (O, I/g, kH, kW) as panels ``[g][panel][tap][c][NR]`` (zero past O/g), flat, NR
    that of the tile :func:`wide` chooses; returns them and one panel's length."""
    _, nr = tile_shape(dtype, wide(weight.shape[0] // groups, dtype))
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
         unit_groups, block):
    """The convolution of every output pixel in ``rows`` (see the module docstring), with its
    epilogue; ``res``/``res_rows`` a residual added when ``res_mode`` is 1 (before the
    activation) or 2 (after); ``wide`` selects the wide tile, ``(mr, nr)`` its shape
    (``tile_shape``). The work is a grid of ``tile_groups x unit_groups`` parallel tasks
    (pixels by panels, :func:`schedule`), and in a task ``block`` tiles at a time meet every
    panel."""
    pixels = rows.shape[0]
    tiles = (pixels + mr - 1) // mr
    panels = (out_per_group + nr - 1) // nr
    units = groups * panels
    tasks = tile_groups * unit_groups
    n_taps = taps.shape[0]
    for task in prange(tasks):
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
                for i in range(b0, b1):
                    m0 = i * mr
                    if pixels - m0 >= mr:
                        args = (x, rows, m0, mr, g * c_in, taps, n_taps, c_in, w, u * panel, out,
                                out_rows, n_shift, n_valid, bias, has_bias, kind, lo, hi, alpha,
                                beta, res, res_rows, res_mode)
                        if wide:
                            wide_full(*args)
                        else:
                            tile_full(*args)
                        continue
                    # the last pixels, in narrower tiles (a full one would repeat a pixel)
                    m = m0
                    while m < pixels:
                        left = pixels - m
                        step = 4 if left >= 4 else left
                        args = (x, rows, m, step, g * c_in, taps, n_taps, c_in, w, u * panel,
                                out, out_rows, n_shift, n_valid, bias, has_bias, kind, lo, hi,
                                alpha, beta, res, res_rows, res_mode)
                        if wide:
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
