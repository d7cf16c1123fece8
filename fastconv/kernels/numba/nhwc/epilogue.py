"""The activations of the plan's epilogues, for the kernels written in Numba (the GEMM tiles
apply the same ones in IR; ``fastconv.kernels.epilogue`` names them).

:func:`activate_row` runs over one output row while it is in cache, the activation chosen
once outside the loop, so that the loop vectorises.
"""

from __future__ import annotations

import math

from ....runtime import jit
from ...epilogue import CLAMP, HARDSIGMOID, HARDSWISH, LEAKY, NONE, SIGMOID


@jit(inline=True)
def activate_row(out, n, row, col0, cols, kind, lo, hi, alpha, beta):
    """``out[n, row, col0:col0 + cols, :]`` through activation ``kind``; NaN stays NaN."""
    channels = out.shape[3]
    if kind == NONE:
        return
    for col in range(col0, col0 + cols):
        if kind == CLAMP:
            for c in range(channels):
                v = out[n, row, col, c]
                v = lo if v < lo else v
                out[n, row, col, c] = hi if v > hi else v
        elif kind == LEAKY:
            for c in range(channels):
                v = out[n, row, col, c]
                out[n, row, col, c] = v * alpha if v < 0 else v
        elif kind == HARDSIGMOID:
            for c in range(channels):
                v = out[n, row, col, c] * alpha + beta
                v = 0 if v < 0 else v
                out[n, row, col, c] = 1 if v > 1 else v
        elif kind == HARDSWISH:
            for c in range(channels):
                v = out[n, row, col, c]
                g = v / 6 + 0.5
                g = 0 if g < 0 else g
                out[n, row, col, c] = v * (1 if g > 1 else g)
        elif kind == SIGMOID:
            for c in range(channels):
                out[n, row, col, c] = 1 / (1 + math.exp(-out[n, row, col, c]))
        else:  # SILU
            for c in range(channels):
                v = out[n, row, col, c]
                out[n, row, col, c] = v / (1 + math.exp(-v))
