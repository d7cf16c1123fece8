"""Shared test helpers: random data, the reference with error bounds, optional torch.

Imported as `helpers` (pytest puts tests/ on sys.path); tests never import from benches/.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastconv import dispatch
from fastconv.kernels import reference
from fastconv.spec import ConvSpec

# "float64 within 1e-10 relative, float32 within 1e-4 relative of the float64 reference",
# relative to the size of the terms summed (see assert_conv_close).
RTOL = {np.float32: 1e-4, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]

try:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
except ImportError:  # pragma: no cover - CI installs torch
    torch = None
    F = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# every compiled backend this installation has, each with its algorithms: the grids run on all
COMPILED_BACKENDS = [b for b in ("numba", "cython") if b in dispatch.available_backends()]
KERNELS = [(b, a) for b in COMPILED_BACKENDS for a in dispatch.algorithms(b)]


def kernel_id(pair) -> str:
    backend, algorithm = pair
    return algorithm if backend == "numba" else f"{backend}-{algorithm}"


def random_array(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def spec_for(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> ConvSpec:
    return ConvSpec(x.shape[1], weight.shape[0], weight.shape[2:], stride=stride,
                    padding=padding, dilation=dilation, groups=groups,
                    bias=bias is not None, input_size=x.shape[2:])


def reference_conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """The NumPy reference in float64 and, for the tolerance, the same sum over |terms|."""
    spec = spec_for(x, weight, bias, stride, padding, dilation, groups)
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    b64 = None if bias is None else bias.astype(np.float64)
    expected = reference.forward(x64, w64, b64, spec)
    scale = reference.forward(np.abs(x64), np.abs(w64), None if b64 is None else np.abs(b64),
                              spec)
    return expected, scale


def assert_conv_close(actual, expected, scale, dtype):
    """|actual - expected| <= rtol * (sum of |w| |x| + |b|) elementwise.

    The rounding error of a sum of products is bounded by the sum of their magnitudes times a
    small multiple of the unit roundoff, so this is the tolerance that is both tight and
    immune to cancellation.
    """
    assert actual.dtype == np.dtype(dtype), (actual.dtype, dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    bound = RTOL[dtype] * (scale + np.finfo(np.float64).tiny)
    err = np.abs(actual.astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert np.all(err <= bound), (
        f"max error {err.max():.3g} at {worst}, bound there {bound[worst]:.3g}"
    )


def reference_grads(grad_output, x, weight, bias=None, stride=1, padding=0, dilation=1,
                    groups=1):
    """Reference gradients in float64, each with its error scale (the same sums over |terms|):
    ``[(grad_input, scale), (grad_weight, scale), (grad_bias, scale)]``."""
    spec = spec_for(x, weight, bias, stride, padding, dilation, groups)
    dy, x64, w64 = (a.astype(np.float64) for a in (grad_output, x, weight))
    return [
        (reference.backward_input(dy, w64, spec),
         reference.backward_input(abs(dy), abs(w64), spec)),
        (reference.backward_weight(dy, x64, spec),
         reference.backward_weight(abs(dy), abs(x64), spec)),
        (reference.backward_bias(dy), reference.backward_bias(abs(dy))),
    ]


# (name, input shape, weight shape, keyword arguments): odd and non-square sizes, kernels 1-5
# (non-square too), strides 1-3, dilations 1-3, padding ints/pairs/"same"/"valid", groups
# 1/2/C, depthwise multipliers 1-3, bias on/off, batch 0/1/2/3.
CASES = [
    ("3x3", (1, 3, 7, 9), (4, 3, 3, 3), {}),
    ("3x3 pad1 bias", (2, 4, 8, 5), (6, 4, 3, 3), dict(padding=1, bias=True)),
    ("3x5 pad pair", (1, 2, 9, 7), (3, 2, 3, 5), dict(padding=(2, 1))),
    ("stride2 bias", (3, 3, 11, 10), (5, 3, 3, 3), dict(stride=2, padding=1, bias=True)),
    ("5x2 stride pair", (1, 2, 13, 8), (4, 2, 5, 2), dict(stride=(3, 2), padding=(2, 0))),
    ("dilation2", (1, 3, 12, 11), (2, 3, 3, 3), dict(dilation=2, padding=2, bias=True)),
    ("dilation pair", (2, 2, 14, 9), (3, 2, 2, 3), dict(dilation=(3, 1), padding=(1, 2))),
    ("stride2 dilation2", (1, 4, 15, 13), (4, 4, 3, 3), dict(stride=2, dilation=2, padding=1)),
    ("same", (1, 3, 7, 6), (4, 3, 3, 3), dict(padding="same", bias=True)),
    ("same even kernel", (1, 3, 7, 6), (4, 3, 4, 2), dict(padding="same")),
    ("same even dilated", (2, 2, 9, 8), (3, 2, 2, 4), dict(padding="same", dilation=(2, 3))),
    ("valid 5x5", (1, 3, 6, 8), (2, 3, 5, 5), dict(padding="valid")),
    ("1x1 bias", (2, 5, 6, 7), (3, 5, 1, 1), dict(bias=True)),
    ("1x1 stride2 pad1", (1, 4, 7, 9), (6, 4, 1, 1), dict(stride=2, padding=1)),
    ("1x1 dilated", (1, 3, 5, 6), (2, 3, 1, 1), dict(dilation=3, stride=(1, 3))),
    ("1x1 groups2", (1, 6, 5, 4), (4, 3, 1, 1), dict(groups=2, bias=True)),
    ("groups2", (2, 4, 7, 7), (6, 2, 3, 3), dict(groups=2, padding=1, bias=True)),
    ("groups2 strided dilated", (1, 6, 11, 9), (4, 3, 3, 2),
     dict(groups=2, stride=(2, 1), dilation=(1, 2))),
    ("dw 3x3", (2, 4, 9, 8), (4, 1, 3, 3), dict(groups=4, padding=1, bias=True)),
    ("dw 3x3 s2", (1, 5, 11, 10), (5, 1, 3, 3), dict(groups=5, stride=2, padding=1)),
    ("dw 3x3 s2 even", (1, 3, 12, 14), (3, 1, 3, 3), dict(groups=3, stride=2, padding=1)),
    ("dw multiplier2", (1, 3, 8, 7), (6, 1, 3, 3), dict(groups=3, padding=1, bias=True)),
    ("dw multiplier3 s2 d2", (2, 2, 13, 12), (6, 1, 3, 3),
     dict(groups=2, stride=2, dilation=2, padding=2)),
    ("dw 5x5", (1, 4, 10, 9), (4, 1, 5, 5), dict(groups=4, padding=2)),
    ("dw 3x3 no pad", (1, 3, 6, 7), (3, 1, 3, 3), dict(groups=3)),
    ("dw same dilation3", (1, 3, 9, 9), (3, 1, 3, 3), dict(groups=3, padding="same", dilation=3)),
    ("dw stride3", (1, 2, 10, 11), (2, 1, 3, 3), dict(groups=2, stride=3, padding=1)),
    ("dw stride (2,1)", (1, 2, 9, 8), (2, 1, 3, 3), dict(groups=2, stride=(2, 1), padding=1)),
    ("dw 2x3", (1, 2, 8, 9), (4, 1, 2, 3), dict(groups=2, padding=(1, 0), bias=True)),
    ("dw 1x1", (1, 4, 5, 5), (8, 1, 1, 1), dict(groups=4)),
    ("single channel", (2, 1, 7, 6), (3, 1, 3, 3), dict(padding=1)),
    ("batch 0", (0, 3, 7, 7), (4, 3, 3, 3), dict(padding=1, bias=True)),
    ("batch 0 dw", (0, 4, 7, 7), (4, 1, 3, 3), dict(groups=4, padding=1)),
    ("batch 0 1x1", (0, 4, 7, 7), (5, 4, 1, 1), {}),
    ("1x1 input", (1, 3, 1, 1), (2, 3, 3, 3), dict(padding=1, bias=True)),
    ("dw 1x1 input", (1, 3, 1, 1), (3, 1, 3, 3), dict(padding=1, groups=3, bias=True)),
    ("kernel = input", (1, 2, 4, 5), (3, 2, 4, 5), {}),
    ("stride > kernel", (1, 2, 10, 10), (2, 2, 2, 2), dict(stride=3)),
    ("more channels", (1, 16, 9, 9), (8, 16, 3, 3), dict(padding=1)),
    ("classifier batch", (3, 16, 1, 1), (12, 16, 1, 1), dict(bias=True)),
    ("classifier", (1, 16, 1, 1), (12, 16, 1, 1), dict(bias=True)),
    ("classifier groups2", (1, 8, 1, 1), (6, 4, 1, 1), dict(groups=2)),
    ("classifier one output", (2, 5, 1, 1), (1, 5, 1, 1), {}),  # per-image weight gradients
    ("small images batch", (3, 8, 3, 3), (16, 8, 3, 3), dict(padding=1, bias=True)),
    ("padding past the stride", (1, 2, 1, 2), (2, 2, 3, 3), dict(padding=5, stride=(10, 7))),
    ("dw padding past the stride", (1, 2, 1, 2), (2, 1, 3, 3),
     dict(padding=5, stride=(9, 2), groups=2)),
]


def assert_like_module(got, module, x):
    """``got`` equals ``module(x)``: in float64 within 1e-10 of torch's float64 result; in
    float32 within four times torch's own float32 error against its float64 result (and at
    least 2e-5), both relative to the output's largest magnitude. A deep float32 network
    drifts from exact arithmetic; the plan may drift as far as torch does, not further."""
    import copy

    with torch.no_grad():
        exact = copy.deepcopy(module).double()(
            torch.from_numpy(np.ascontiguousarray(x, np.float64))).numpy()
        scale = max(1.0, float(abs(exact).max()))
        if got.dtype == np.float64:
            tol = 1e-10
        else:
            own = copy.deepcopy(module).float()(
                torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
            tol = max(2e-5, 4 * float(abs(own - exact).max()) / scale)
    assert got.shape == exact.shape
    np.testing.assert_allclose(got, exact, rtol=0, atol=tol * scale)


def check_plan(module, x, dtype):
    """Plan ``module`` in ``dtype`` and check the plan's output on ``x`` against the module's
    (:func:`assert_like_module`); returns the plan and its output."""
    import fastconv as fc

    module = module.to({np.float32: torch.float32, np.float64: torch.float64}[dtype])
    net = fc.Network.from_torch(module)
    x = x.astype(dtype)
    got = net(x)
    assert got.dtype == dtype
    assert_like_module(got, module, x)
    return net, got
