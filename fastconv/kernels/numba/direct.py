"""Direct convolution: any kernel, stride, padding, dilation and groups, no workspace.

Each parallel task owns one output plane ``(n, c_out)``. An output row is accumulated in
place over every (input channel, kernel row, kernel column) tap, so it stays in L1 while the
input rows stream past; the columns a tap cannot reach (padding) are cut off before the inner
loop, which is a plain strided multiply-add that LLVM vectorises.
"""

from __future__ import annotations

import numpy as np
from numba import prange, uintp

from ...config import jit
from ...spec import ConvSpec
from ._common import bias_or_zeros, valid_output_range


def skips_padding(spec: ConvSpec) -> bool:
    """Zero padding is skipped, never multiplied (so Inf * 0 never happens here)."""
    return True


def supports(spec: ConvSpec) -> str | None:
    """Every geometry is supported."""
    return None


@jit()
def _accumulate_row(out, n, oc, oh, lo, hi, x, c, ih, start, sw, wv):
    """``out[n, oc, oh, o] += wv * x[n, c, ih, start + (o - lo) * sw]`` for ``o`` in ``[lo, hi)``."""
    if sw == 1:  # its own loop, so LLVM sees a literal unit stride and vectorises
        for i in range(uintp(hi - lo)):
            out[n, oc, oh, uintp(lo) + i] += wv * x[n, c, ih, uintp(start) + i]
    else:
        for i in range(uintp(hi - lo)):
            out[n, oc, oh, uintp(lo) + i] += wv * x[n, c, ih, uintp(start) + i * uintp(sw)]


@jit(parallel=True)
def _forward(x, weight, bias, out, sh, sw, ph, pw, dh, dw, groups):
    n_images, _, height, width = x.shape
    c_out, cg, kh_size, kw_size = weight.shape
    ho_size, wo_size = out.shape[2], out.shape[3]
    og = c_out // groups

    # the output columns each kernel column can reach, computed once
    col_lo = np.empty(kw_size, np.int64)
    col_hi = np.empty(kw_size, np.int64)
    for kw in range(kw_size):
        col_lo[kw], col_hi[kw] = valid_output_range(kw * dw - pw, sw, width, wo_size)

    for task in prange(n_images * c_out):
        n = task // c_out
        oc = task - n * c_out
        c0 = (oc // og) * cg
        b = bias[oc]
        for oh in range(ho_size):
            for ow in range(wo_size):
                out[n, oc, oh, ow] = b
            for kh in range(kh_size):
                ih = oh * sh - ph + kh * dh
                if ih < 0 or ih >= height:
                    continue
                for ic in range(cg):
                    for kw in range(kw_size):
                        lo = col_lo[kw]
                        _accumulate_row(out, n, oc, oh, lo, col_hi[kw], x, c0 + ic, ih,
                                        lo * sw + kw * dw - pw, sw, weight[oc, ic, kh, kw])


def forward(x, weight, bias, spec: ConvSpec):
    """Direct convolution forward.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    weight : ndarray, shape (C_out, C_in // groups, kH, kW)
    bias : ndarray of shape (C_out,) or None
    spec : ConvSpec

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out)
    """
    out = np.empty(spec.output_shape(x.shape[0]), dtype=x.dtype)
    bias = bias_or_zeros(bias, spec.out_channels, x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    _forward(x, weight, bias, out, sh, sw, ph, pw, dh, dw, spec.groups)
    return out
