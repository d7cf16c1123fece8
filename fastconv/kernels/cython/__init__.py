"""Cython AOT kernels, compiled at install time: twins of the Numba modules, same interface.

Parallel loops are OpenMP ``prange`` and GEMMs go through ``scipy.linalg.cython_blas``; every
wrapper checks the shapes (``_checks``) before it drops the GIL. The table below says which
algorithms this backend offers.
"""

from ..algorithms import CORE, Backend, always, off_3x3_path

# the direct kernels skip out-of-range taps
BACKEND = Backend(name="cython", package=__name__, modules=CORE, bias_gradient="direct",
                  skips_padding={"direct": always, "depthwise": off_3x3_path})
