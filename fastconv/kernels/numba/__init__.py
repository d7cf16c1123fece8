"""Numba JIT kernels: one module per algorithm, forward and backward side by side.

Each module implements :class:`fastconv.kernels.algorithms.KernelModule`; the table below says
which algorithms this backend offers. Importing the package imports no kernel (and not Numba).
"""

from ..algorithms import CORE, Backend, always, off_3x3_path

BACKEND = Backend(
    name="numba", package=__name__, modules=(*CORE, "winograd"), bias_gradient="_common",
    # direct skips out-of-range taps; Winograd reads its tiles with bounds tests
    skips_padding={"direct": always, "depthwise": off_3x3_path, "winograd": always},
)
