"""Bad input: a TypeError or ValueError whose message names the argument and the shapes."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastconv as fc

X = np.zeros((1, 3, 10, 10), np.float32)
W = np.zeros((8, 3, 3, 3), np.float32)


def _conv(**changes):
    args = dict(x=X, weight=W)
    args.update(changes)
    return lambda: fc.conv2d(**args)


TYPE_ERRORS = [
    ("list input", _conv(x=X.tolist()),
     "argument 'x' must be a numpy.ndarray (or a CUDA device array), not list"),
    ("masked input", _conv(x=np.ma.masked_array(X)), "argument 'x' must be a numpy.ndarray"),
    ("int weight", _conv(weight=W.astype(np.int64)),
     "expected 'weight' to be float32 or float64, but got an array of dtype int64"),
    ("float16 input", _conv(x=X.astype(np.float16)), "but got an array of dtype float16"),
    ("complex input", _conv(x=X.astype(np.complex64)), "dtype complex64"),
    ("object input", _conv(x=X.astype(object)), "dtype object"),
    ("bool bias", _conv(bias=np.ones(8, bool)), "expected 'bias' to be float32 or float64"),
    ("mixed dtypes", _conv(weight=W.astype(np.float64)),
     "Input type (float32) and weight type (float64) should be the same"),
    ("mixed bias dtype", _conv(bias=np.zeros(8, np.float64)),
     "Input type (float32) and bias type (float64) should be the same"),
    ("float stride", _conv(stride=1.5), "stride must be an int or a tuple of ints, but got 1.5"),
    ("bool stride", _conv(stride=True), "stride must be an int or a tuple of ints"),
    ("str groups", _conv(groups="1"), "groups must be an int"),
    ("float padding", _conv(padding=(1, 0.5)), "padding must be an int or a tuple of ints"),
    ("algorithm type", _conv(algorithm=3), "algorithm must be a str, but got int"),
    ("backend type", _conv(backend=None), "backend must be a str, but got NoneType"),
]

VALUE_ERRORS = [
    ("2-D input", _conv(x=np.zeros((2, 3), np.float32)),
     "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [2, 3]"),
    ("5-D input", _conv(x=np.zeros((1, 1, 3, 10, 10), np.float32)),
     "but got input of size: [1, 1, 3, 10, 10]"),
    ("3-D weight", _conv(weight=np.zeros((8, 3, 3), np.float32)),
     "Expected 4D weight for conv2d, but got weight of size [8, 3, 3]"),
    ("channel mismatch", _conv(weight=np.zeros((8, 4, 3, 3), np.float32)),
     "Given groups=1, weight of size [8, 4, 3, 3], expected input[1, 3, 10, 10] to have 4 "
     "channels, but got 3 channels instead"),
    ("groups do not divide C_out",
     _conv(x=np.zeros((1, 4, 5, 5), np.float32), weight=np.zeros((3, 2, 3, 3), np.float32),
           groups=2),
     "Given groups=2, expected weight to be divisible by 2 at dimension 0, but got weight of "
     "size [3, 2, 3, 3] instead"),
    ("groups do not divide C_in", _conv(weight=np.zeros((8, 1, 3, 3), np.float32), groups=2),
     "Given groups=2, weight of size [8, 1, 3, 3], expected input[1, 3, 10, 10] to have 2 "
     "channels, but got 3 channels instead"),
    ("zero groups", _conv(groups=0), "non-positive groups is not supported"),
    ("no output channels", _conv(weight=np.zeros((0, 3, 3, 3), np.float32)),
     "expected weight to be at least 1 at dimension 0, but got weight of size [0, 3, 3, 3]"),
    ("empty kernel", _conv(weight=np.zeros((8, 3, 0, 3), np.float32)),
     "expected a non-empty kernel, but got weight of size [8, 3, 0, 3]"),
    ("empty input plane", _conv(x=np.zeros((1, 3, 0, 10), np.float32), padding=2),
     "Only zero batch or zero channel inputs are supported, but got input shape: "
     "[1, 3, 0, 10]"),
    ("bias length", _conv(bias=np.zeros(7, np.float32)),
     "Given weight of size [8, 3, 3, 3], expected bias to be 1-dimensional with 8 elements, "
     "but got bias of size [7] instead"),
    ("bias ndim", _conv(bias=np.zeros((8, 1), np.float32)), "but got bias of size [8, 1]"),
    ("zero stride", _conv(stride=0), "non-positive stride is not supported"),
    ("negative stride", _conv(stride=(1, -2)), "non-positive stride is not supported"),
    ("zero dilation", _conv(dilation=0), "dilation should be greater than zero, but got [0, 0]"),
    ("negative padding", _conv(padding=-1), "negative padding is not supported, but got [-1, -1]"),
    ("three strides", _conv(stride=(1, 2, 3)),
     "expected stride to be a single integer value or a list of 2 values to match the "
     "convolution dimensions, but got stride=[1, 2, 3]"),
    ("three paddings", _conv(padding=[1, 2, 3]), "list of 2 values"),
    ("kernel too large", _conv(x=np.zeros((1, 3, 2, 2), np.float32)),
     "Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3). Kernel size "
     "can't be greater than actual input size"),
    ("dilated kernel too large", _conv(x=np.zeros((1, 3, 5, 5), np.float32), dilation=3),
     "Calculated padded input size per channel: (5 x 5). Kernel size: (7 x 7)"),
    ("same with stride", _conv(padding="same", stride=2),
     "padding='same' is not supported for strided convolutions"),
    ("unknown padding", _conv(padding="full"),
     "Invalid padding string: 'full', should be one of ['same', 'valid']"),
    ("unknown algorithm", _conv(algorithm="fft"), "unknown algorithm 'fft'; expected one of"),
    ("unknown backend", _conv(backend="gpu"), "unknown backend 'gpu'; expected one of"),
    ("depthwise on dense", _conv(algorithm="depthwise"),
     "algorithm 'depthwise' cannot serve a convolution with weight of size [8, 3, 3, 3] and "
     "groups=1: depthwise needs groups == in_channels, but got groups=1 and in_channels=3"),
    ("pointwise on 3x3", _conv(algorithm="pointwise"),
     "pointwise needs a 1x1 kernel, but got kernel_size=[3, 3]"),
    ("reference on numba", _conv(algorithm="reference", backend="numba"),
     "algorithm 'reference' is not available on backend 'numba'"),
    ("im2col on numpy", _conv(algorithm="im2col", backend="numpy"),
     "algorithm 'im2col' is not available on backend 'numpy'"),
]

CONV1D_ERRORS = [
    (lambda: fc.conv1d(np.zeros((2, 3, 4, 5)), np.zeros((4, 3, 3))), ValueError,
     "Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: "
     "[2, 3, 4, 5]"),
    (lambda: fc.conv1d(np.zeros((2, 3, 8)), np.zeros((4, 3, 3, 3))), ValueError,
     "Expected 3D weight for conv1d, but got weight of size [4, 3, 3, 3]"),
    (lambda: fc.conv1d(np.zeros((2, 3, 8)), np.zeros((4, 3, 3)), stride=(1, 2)), ValueError,
     "expected stride to be a single integer value or a list of 1 values"),
    (lambda: fc.conv1d(np.zeros((2, 3, 8)), np.zeros((4, 2, 3))), ValueError,
     "expected input[2, 3, 8] to have 2 channels, but got 3 channels instead"),
    (lambda: fc.conv1d(np.zeros((2, 3, 8)), np.zeros((4, 3, 3), np.float32)), TypeError,
     "Input type (float64) and weight type (float32) should be the same"),
]

SEPARABLE_ERRORS = [
    (lambda: fc.separable_conv2d(np.zeros((1, 3, 8, 8)), np.zeros((3, 3, 3, 3)),
                                 np.zeros((4, 3, 1, 1))), ValueError,
     "expected depthwise_weight of size [3 * multiplier, 1, kH, kW] for input of size "
     "[1, 3, 8, 8], but got depthwise_weight of size [3, 3, 3, 3]"),
    (lambda: fc.separable_conv2d(np.zeros((1, 3, 8, 8)), np.zeros((4, 1, 3, 3)),
                                 np.zeros((4, 4, 1, 1))), ValueError,
     "but got depthwise_weight of size [4, 1, 3, 3]"),
    (lambda: fc.separable_conv2d(np.zeros((1, 3, 8, 8)), np.zeros((6, 1, 3, 3)),
                                 np.zeros((4, 3, 1, 1))), ValueError,
     "expected pointwise_weight of size [C_out, 6, 1, 1] after depthwise_weight of size "
     "[6, 1, 3, 3], but got pointwise_weight of size [4, 3, 1, 1]"),
    (lambda: fc.separable_conv2d(np.zeros((1, 3, 8, 8)), np.zeros((3, 1, 3, 3)),
                                 np.zeros((4, 3, 1, 1), np.float32)), TypeError,
     "Input type (float64) and pointwise_weight type (float32) should be the same"),
    (lambda: fc.separable_conv2d(np.zeros((1, 3, 8, 8)), np.zeros((3, 1, 3, 3)),
                                 np.zeros((4, 3, 1, 1)), bias=np.zeros(3)), ValueError,
     "expected bias to be 1-dimensional with 4 elements, but got bias of size [3]"),
]

SPEC_ERRORS = [
    (dict(in_channels=0, out_channels=4, kernel_size=3), "in_channels must be positive"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2),
     "in_channels must be divisible by groups, but got in_channels=3 and groups=2"),
    (dict(in_channels=4, out_channels=3, kernel_size=3, groups=2),
     "out_channels must be divisible by groups, but got out_channels=3 and groups=2"),
    (dict(in_channels=3, out_channels=4, kernel_size=(3, 0)),
     "kernel_size must be positive, but got kernel_size=[3, 0]"),
    (dict(in_channels=3, out_channels=4, kernel_size=3, input_size=(0, 5)),
     "input_size must be positive, but got [0, 5]"),
    (dict(in_channels=3, out_channels=4, kernel_size=5, input_size=4, padding=0),
     "Calculated padded input size per channel: (4 x 4). Kernel size: (5 x 5)"),
]


@pytest.mark.parametrize("name, call, fragment", TYPE_ERRORS, ids=[e[0] for e in TYPE_ERRORS])
def test_type_errors(name, call, fragment):
    with pytest.raises(TypeError, match=re.escape(fragment)):
        call()


@pytest.mark.parametrize("name, call, fragment", VALUE_ERRORS, ids=[e[0] for e in VALUE_ERRORS])
def test_value_errors(name, call, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        call()


@pytest.mark.parametrize("call, kind, fragment", CONV1D_ERRORS + SEPARABLE_ERRORS)
def test_conv1d_and_separable_errors(call, kind, fragment):
    with pytest.raises(kind, match=re.escape(fragment)):
        call()


@pytest.mark.parametrize("kwargs, fragment", SPEC_ERRORS)
def test_convspec_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        fc.ConvSpec(**kwargs)


@pytest.mark.parametrize("stride", [1.0, (1.0, 1.0), True, (1, True)])
def test_a_cached_geometry_does_not_admit_an_equal_float_or_bool(stride):
    """The geometry cache's keys compare 1.0 and True equal to 1: the same call with an int
    stride, made first, must not let a float or bool one through."""
    fc.conv2d(X, W, stride=1)
    fc.conv2d(X, W, stride=(1, 1))
    with pytest.raises(TypeError, match="stride must be an int or a tuple of ints"):
        fc.conv2d(X, W, stride=stride)


@pytest.mark.parametrize("name, call", [
    (name, call) for name, call, _ in TYPE_ERRORS
    if name in ("masked input", "bool stride", "str groups", "mixed bias dtype")
] + [("bool groups", _conv(groups=True)), ("float groups", _conv(groups=1.0)),
     ("float padding", _conv(padding=0.0))])
def test_a_validated_call_does_not_admit_an_equal_bad_one(name, call):
    """Valid calls are remembered by their arrays' types, shapes and dtypes and their
    arguments; a bad call equal to a remembered one under ``==`` must still be refused."""
    fc.conv2d(X, W)
    fc.conv2d(X, W, bias=np.zeros(8, np.float32))
    with pytest.raises(TypeError):
        call()


def test_numpy_int_geometry_is_accepted_as_an_int():
    ref = fc.conv2d(X, W, stride=2, padding=1)
    np.testing.assert_array_equal(
        fc.conv2d(X, W, stride=np.int64(2), padding=(np.int32(1), 1)), ref)


def test_spec_without_input_size_says_how_to_fix():
    spec = fc.ConvSpec(3, 4, 3)
    with pytest.raises(ValueError, match=r"no input_size.*with_input_size"):
        _ = spec.output_size
    assert spec.with_input_size(8).output_size == (6, 6)


def test_unbuilt_cython_backend_says_how_to_build_it(monkeypatch):
    from fastconv import api, dispatch

    table = dispatch._table("cython")
    monkeypatch.setitem(dispatch._TABLES, "cython",
                        table.replace(package="fastconv.kernels.nowhere"))
    # a backend that goes missing at run time is a test's fiction: a call remembered by an
    # earlier test would not look the backend up again
    monkeypatch.setattr(api, "_VALIDATED", {})
    with pytest.raises(ValueError, match=r"backend 'cython' is not built: the Cython AOT kernels "
                                         r"are not built in this installation .*pip install \."):
        fc.conv2d(X, W, backend="cython")
    assert "cython" not in dispatch.available_backends()


def test_ci_built_the_cython_backend():
    """CI sets FASTCONV_REQUIRE_CYTHON=1: there the AOT backend must have been compiled."""
    import os

    from fastconv import dispatch

    if not os.environ.get("FASTCONV_REQUIRE_CYTHON"):
        pytest.skip("FASTCONV_REQUIRE_CYTHON is not set")
    assert "cython" in dispatch.available_backends()
    import fastconv.kernels.cython.plan  # noqa: F401 (the network plan's kernels too)
