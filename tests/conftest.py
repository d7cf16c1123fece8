"""Test session setup.

numba-cuda's simulator runs the CUDA kernels on the CPU, so the CUDA backend is tested on a
machine without a GPU; it must be chosen before numba is imported, hence here. Set
FASTCONV_TEST_REAL_CUDA=1 to test on a real device instead.
"""

import os

if not os.environ.get("FASTCONV_TEST_REAL_CUDA"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
