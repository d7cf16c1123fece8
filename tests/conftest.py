"""Test session setup.

A tuning that ``fastconv tune`` stored on this machine is not read (``FASTCONV_TUNING``): the
tests assert the planner's choices under ``kernels/tuning.py``'s defaults, whatever the machine;
``tests/test_tuning.py`` loads tunings of its own.

numba-cuda's simulator runs the CUDA kernels on the CPU, so the CUDA backend is tested on a
machine without a GPU; it must be chosen before numba is imported, hence here. Set
FASTCONV_TEST_REAL_CUDA=1 to test on a real device instead.
"""

import os

os.environ.setdefault("FASTCONV_TUNING", "defaults")

if not os.environ.get("FASTCONV_TEST_REAL_CUDA"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


import pytest  # noqa: E402


@pytest.fixture(params=["numba", "cython"])
def plan_backend(request, monkeypatch):
    """Run a test of fastconv.Network on each executor: ``backend="auto"`` (the default)
    resolves to this one; the Cython one is skipped where its kernels were not built."""
    from fastconv.network import network

    if request.param == "cython":
        try:
            import fastconv.kernels.cython.plan  # noqa: F401
        except ImportError:
            pytest.skip("the Cython plan kernels are not built")
    resolve = network._resolve
    monkeypatch.setattr(network, "_resolve",
                        lambda backend: resolve(request.param if backend == "auto" else backend))
    return request.param
