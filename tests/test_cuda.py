"""The numba.cuda backend, on numba-cuda's simulator (see conftest.py) or a real device.

The simulator runs every GPU thread in Python, so the grid here is small: a few geometries of
the forward grid, forward and backward, each algorithm, both dtypes.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda (the cuda extra) is not installed")

import fastconv as fc  # noqa: E402
from fastconv import dispatch, models  # noqa: E402
from fastconv.kernels.algorithms import supports  # noqa: E402
from fastconv.bench import profile  # noqa: E402

from helpers import (CASES, DTYPES, assert_conv_close, reference_conv,  # noqa: E402
                     reference_grads, spec_for)
from test_forward import _arrays  # noqa: E402

from numba import cuda  # noqa: E402

if "cuda" not in dispatch.available_backends():
    pytest.skip(f"the CUDA backend cannot run here: {dispatch._cuda_missing()}",
                allow_module_level=True)

SIMULATED = cuda.simulator_enabled if hasattr(cuda, "simulator_enabled") else bool(
    getattr(__import__("numba.cuda", fromlist=["config"]).config, "ENABLE_CUDASIM", False))
needs_device = pytest.mark.skipif(SIMULATED, reason="needs a real CUDA device: the simulator's "
                                                    "events do not time anything")

SMALL = {"3x5 pad pair", "stride2 bias", "same even dilated", "same even kernel", "1x1 bias",
         "1x1 stride2 pad1", "1x1 groups2", "dw 3x3 s2", "dw multiplier3 s2 d2", "batch 0",
         "dw 2x3", "padding past the stride", "groups2 strided dilated"}
CUDA_CASES = [c for c in CASES if c[0] in SMALL]


def _grid():
    for name, x_shape, w_shape, kwargs in CUDA_CASES:
        spec = spec_for(np.empty(x_shape), np.empty(w_shape), None,
                        **{k: v for k, v in kwargs.items() if k != "bias"})
        for algorithm in dispatch.algorithms("cuda"):
            if supports(algorithm, spec) is None:
                # im2col's GEMM is the simulator's slowest kernel: float32 GEMMs are covered
                # by the pointwise cases, im2col itself runs in float64 only
                for dtype in DTYPES if algorithm != "im2col" else [np.float64]:
                    yield pytest.param(algorithm, x_shape, w_shape, kwargs, dtype,
                                       id=f"{algorithm}-{name}-{np.dtype(dtype).name}")


def test_the_small_grid_covers_every_algorithm():
    algorithms = {p.values[0] for p in _grid()}
    assert algorithms == set(dispatch.algorithms("cuda")) and len(CUDA_CASES) == len(SMALL)


@pytest.mark.parametrize("algorithm, x_shape, w_shape, kwargs, dtype", list(_grid()))
def test_forward_and_backward_against_reference(algorithm, x_shape, w_shape, kwargs, dtype):
    rng = np.random.default_rng(40)
    x, w, b, kwargs = _arrays(rng, x_shape, w_shape, kwargs, dtype)
    y = fc.conv2d(x, w, b, **kwargs, algorithm=algorithm, backend="cuda")
    assert isinstance(y, np.ndarray)  # host in, host out
    assert_conv_close(y, *reference_conv(x, w, b, **kwargs), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = fc.conv2d_backward(dy, x, w, **kwargs, bias=b is not None, algorithm=algorithm,
                               backend="cuda")
    for got, (value, scale) in zip(grads, reference_grads(dy, x, w, b, **kwargs)):
        if got is not None:
            assert isinstance(got, np.ndarray)
            assert_conv_close(got, value, scale, dtype)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "depthwise"])
def test_device_arrays_stay_on_the_device(algorithm):
    rng = np.random.default_rng(41)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((4, 1 if algorithm == "depthwise" else 4, 3, 3))
    groups = 4 if algorithm == "depthwise" else 1
    x_dev, w_dev = cuda.to_device(x), cuda.to_device(w)
    y = fc.conv2d(x_dev, w_dev, padding=1, groups=groups, algorithm=algorithm)  # auto -> cuda
    assert not isinstance(y, np.ndarray) and hasattr(y, "copy_to_host")
    expected, scale = reference_conv(x, w, padding=1, groups=groups)
    assert_conv_close(y.copy_to_host(), expected, scale, np.float64)
    dy = cuda.to_device(np.ones(expected.shape))
    gi, gw, gb = fc.conv2d_backward(dy, x_dev, w_dev, padding=1, groups=groups, bias=False,
                                    algorithm=algorithm)
    assert gb is None and hasattr(gi, "copy_to_host") and hasattr(gw, "copy_to_host")
    ref = reference_grads(np.ones(expected.shape), x, w, padding=1, groups=groups)
    assert_conv_close(gi.copy_to_host(), *ref[0], np.float64)
    assert_conv_close(gw.copy_to_host(), *ref[1], np.float64)


def test_strided_device_views_and_unbatched_input():
    rng = np.random.default_rng(42)
    x = rng.standard_normal((2, 3, 7, 12))
    w = rng.standard_normal((2, 3, 3, 3))
    view = cuda.to_device(x)[:, :, :, ::2]  # a non-contiguous device view, used as it lies
    y = fc.conv2d(view, cuda.to_device(w), stride=2, backend="cuda").copy_to_host()
    assert_conv_close(y, *reference_conv(np.ascontiguousarray(x[..., ::2]), w, stride=2),
                      np.float64)
    y0 = fc.conv2d(cuda.to_device(x[0]), cuda.to_device(w), backend="cuda").copy_to_host()
    assert_conv_close(y0, *(r[0] for r in reference_conv(x[:1], w)), np.float64)


@pytest.mark.skipif(not SIMULATED, reason="builds a __cuda_array_interface__ over host memory,"
                                          " which only the simulator may read")
def test_objects_exporting_the_cuda_array_interface():
    class Exported:  # what CuPy arrays and torch CUDA tensors look like to fastconv
        def __init__(self, array):
            self._array = array
            interface = array.__array_interface__
            self.__cuda_array_interface__ = dict(interface, version=3)

    rng = np.random.default_rng(43)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    y = fc.conv2d(Exported(x), Exported(w), padding=1)
    assert hasattr(y, "copy_to_host")
    assert_conv_close(y.copy_to_host(), *reference_conv(x, w, padding=1), np.float32)


def test_auto_never_picks_cuda_for_host_arrays():
    assert dispatch.select(fc.ConvSpec(4, 4, 3, input_size=8))[0] == "numba"


def test_device_arrays_on_a_cpu_backend_are_refused():
    x = cuda.to_device(np.ones((1, 2, 4, 4)))
    with pytest.raises(TypeError, match=re.escape(
            "the arrays are on a CUDA device: use backend='cuda' (or copy them to the host), "
            "not backend='numba'")):
        fc.conv2d(x, np.ones((2, 2, 3, 3)), backend="numba")


def test_missing_device_and_missing_numba_cuda_are_explained(monkeypatch):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="numba.cuda finds no CUDA device .* "
                                         "NUMBA_ENABLE_CUDASIM=1"):
        fc.conv2d(np.ones((1, 2, 4, 4)), np.ones((2, 2, 3, 3)), backend="cuda")
    assert "cuda" not in dispatch.available_backends()
    monkeypatch.undo()
    import sys

    monkeypatch.setitem(sys.modules, "numba.cuda", None)  # as if numba-cuda were missing
    with pytest.raises(ValueError, match=r"numba.cuda cannot be imported .* "
                                         r"pip install 'fastconv\[cuda\]'"):
        fc.conv2d(np.ones((1, 2, 4, 4)), np.ones((2, 2, 3, 3)), backend="cuda")


def test_profiler_runs_the_cuda_backend():
    net = models.chain([fc.ConvSpec(2, 4, 3, padding=1, groups=2), fc.ConvSpec(4, 3, 1)], 5)
    result = profile.profile_network(net, backend="cuda", mode="both", budget=0.01,
                                     settle=0.0)
    assert result["settings"]["backend"] == "cuda"
    assert all(r["seconds"] > 0 for r in result["layers"])
    assert result["total"]["flops"] == sum(r["flops"] for r in result["layers"])


@needs_device
def test_cuda_events_time_the_kernels():
    clock = profile._CudaClock()
    x = cuda.to_device(np.ones((1, 16, 64, 64), np.float32))
    w = cuda.to_device(np.ones((16, 16, 3, 3), np.float32))
    clock.start()
    fc.conv2d(x, w, padding=1, backend="cuda")
    assert clock.stop() > 0
