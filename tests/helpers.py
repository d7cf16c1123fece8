"""Shared test helpers: random data, the reference with error bounds, optional torch.

Imported as `helpers` (pytest puts tests/ on sys.path); tests never import from benches/.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastconv import reference
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
