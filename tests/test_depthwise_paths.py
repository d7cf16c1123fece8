"""The depthwise 3x3 kernels' internal paths, each forced by its geometry, on every backend.

The grids in test_forward/test_backward reach every path too, but not on purpose; here each
geometry is checked to take the path it is meant for, so a change to the selection rules
cannot leave a path untested.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import config
from fastconv.kernels.depthwise_paths import path

from helpers import (COMPILED_BACKENDS, DTYPES, assert_conv_close, random_array, reference_conv,
                     reference_grads)

# (path, input (N, C, H, W), multiplier, stride, padding, dilation)
GEOMETRIES = [
    # narrow planes padded by their dilation: the wrapped copies
    ("wrapped", (2, 3, 7, 7), 1, 1, 1, 1),
    ("wrapped", (1, 2, 5, 9), 2, 1, (2, 1), (2, 1)),
    ("wrapped", (2, 2, 1, 3), 1, 1, (1, 2), (1, 2)),
    ("wrapped", (1, 4, 14, 31), 1, 1, 3, 3),
    # stride 2, undilated: the four phases (odd and even sizes, every padding parity)
    ("phases", (2, 3, 9, 7), 1, 2, 1, 1),
    ("phases", (1, 2, 8, 13), 2, 2, 0, 1),
    ("phases", (1, 2, 11, 40), 1, 2, (2, 1), 1),
    ("phases", (2, 2, 4, 3), 1, 2, (0, 2), 1),
    # stride 2, padding 1, even sizes, narrow: the even/odd column split
    ("split", (2, 3, 8, 6), 1, 2, 1, 1),
    ("split", (1, 2, 14, 28), 2, 2, 1, 1),
    ("split", (2, 2, 2, 2), 1, 2, 1, 1),
    ("split", (1, 1, 4, 62), 1, 2, 1, 1),
    # one padded copy: wide rows, unequal padding, dilated strides
    ("padded", (1, 2, 6, 37), 1, 1, 1, 1),
    ("padded", (2, 3, 7, 7), 1, 1, 0, 1),
    ("padded", (1, 2, 9, 35), 2, 2, 2, 2),
    ("padded", (1, 3, 8, 10), 1, (1, 2), 1, 1),
]


def _problem(geometry, dtype, seed):
    _, x_shape, multiplier, stride, padding, dilation = geometry
    rng = np.random.default_rng(seed)
    channels = x_shape[1]
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, (channels * multiplier, 1, 3, 3), dtype)
    b = random_array(rng, (channels * multiplier,), dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=channels)
    spec = fc.ConvSpec(channels, channels * multiplier, 3, **kwargs, input_size=x_shape[2:])
    return x, w, b, kwargs, spec


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}-{g[1]}-s{g[3]}")
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_each_path_forward_and_backward(backend, geometry, dtype):
    x, w, b, kwargs, spec = _problem(geometry, dtype, seed=len(str(geometry)))
    assert path(spec) == geometry[0]

    y = fc.conv2d(x, w, b, **kwargs, algorithm="depthwise", backend=backend)
    assert_conv_close(y, *reference_conv(x, w, b, **kwargs), dtype)

    dy = random_array(np.random.default_rng(1), y.shape, dtype)
    grads = fc.conv2d_backward(dy, x, w, **kwargs, algorithm="depthwise", backend=backend)
    for got, (value, scale) in zip(grads, reference_grads(dy, x, w, b, **kwargs)):
        assert_conv_close(got, value, scale, dtype)


@pytest.mark.parametrize("serial_below", [0, 10**12], ids=["threads", "calling-thread"])
def test_small_layers_on_the_calling_thread_give_the_same_result(monkeypatch, serial_below):
    monkeypatch.setattr(config, "SERIAL_BELOW", {"omp": serial_below, "tbb": serial_below})
    threads = config.get_num_threads()
    x, w, b, kwargs, _ = _problem(GEOMETRIES[4], np.float64, seed=3)
    y = fc.conv2d(x, w, b, **kwargs, algorithm="depthwise", backend="numba")
    assert_conv_close(y, *reference_conv(x, w, b, **kwargs), np.float64)
    assert config.get_num_threads() == threads  # the thread count is restored
