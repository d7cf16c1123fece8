"""The activations of the plan's epilogues, for the kernels written in Numba: the GEMM
tiles' epilogue IR applied along a row (``fastconv.kernels.epilogue`` names the kinds).

:func:`activate_row` runs over one output row while it is in cache.
"""

from __future__ import annotations

from ....runtime import jit
from ...epilogue import NONE
from ..microkernel import activate_span


@jit(inline=True)
def activate_row(out, n, row, col0, cols, kind, lo, hi, alpha, beta):
    """``out[n, row, col0:col0 + cols, :]`` through activation ``kind``; NaN stays NaN. The
    GEMM tiles' epilogue IR (``microkernel.activate_span``), a vector at a time: one
    implementation of every activation, whose exponential is vectorised."""
    if kind == NONE:
        return
    channels = out.shape[3]
    at = ((n * out.shape[1] + row) * out.shape[2] + col0) * channels
    activate_span(out.reshape(-1), at, cols * channels, kind, lo, hi, alpha, beta)
