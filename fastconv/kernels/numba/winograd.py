"""Winograd F(2x2, 3x3): 3x3 stride-1 convolution with 2.25x fewer multiplications.

Each 2x2 block of outputs comes from a 4x4 input tile ``d`` (Lavin & Gray 2016):
``Y = A^T [(G g G^T) * (B^T d B)] A``. The 16 element-wise products of all tiles, channels and
filters are 16 independent GEMMs, ``M[k] = U[k] (C_out x C_in) @ V[k] (C_in x tiles)``, done
in one batched BLAS call; the transforms around them are parallel Numba kernels. Tiles of the
whole batch share the GEMMs, in chunks under the workspace budget.

Backward: the input gradient of a 3x3 stride-1 convolution is itself a 3x3 stride-1
convolution (of ``dY`` with the rotated, transposed filters), so it runs through Winograd too;
the weight gradient uses im2col's GEMMs. Input with NaN or Inf goes through im2col: the
transforms would spread a non-finite value over its whole tile.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ... import config, workspace
from ...config import jit
from ...spec import ConvSpec
from . import im2col
from ._common import add_bias, backward_bias  # noqa: F401

# B^T and A^T are unrolled in the kernels below.


def skips_padding(spec: ConvSpec) -> bool:
    """Tiles are read with bounds tests: padding is skipped, never multiplied."""
    return True


def supports(spec: ConvSpec) -> str | None:
    """3x3 kernels at stride 1 and dilation 1."""
    if spec.kernel_size != (3, 3) or spec.stride != (1, 1) or spec.dilation != (1, 1):
        return (f"winograd F(2x2, 3x3) needs a 3x3 kernel, stride 1 and dilation 1, but got "
                f"kernel_size={list(spec.kernel_size)}, stride={list(spec.stride)} and "
                f"dilation={list(spec.dilation)}")
    return None


@jit(parallel=True)
def _input_transform(x, v, t0, t1, tiles_h, tiles_w, ph, pw):
    """``v[k, c, t - t0]`` = element k of ``B^T d B`` for the 4x4 input tile of output tile t
    (tiles numbered image after image, row after row); pixels outside the input are zero."""
    n_images, channels, height, width = x.shape
    per_image = tiles_h * tiles_w
    for c in prange(channels):
        d = np.empty((4, 4), x.dtype)
        for t in range(t0, t1):
            n = t // per_image
            r = t - n * per_image
            top = (r // tiles_w) * 2 - ph
            left = (r - (r // tiles_w) * tiles_w) * 2 - pw
            for i in range(4):
                for j in range(4):
                    h, w = top + i, left + j
                    d[i, j] = x[n, c, h, w] if 0 <= h < height and 0 <= w < width else 0.0
            # rows: B^T d
            for j in range(4):
                a0 = d[0, j] - d[2, j]
                a1 = d[1, j] + d[2, j]
                a2 = d[2, j] - d[1, j]
                a3 = d[1, j] - d[3, j]
                d[0, j], d[1, j], d[2, j], d[3, j] = a0, a1, a2, a3
            # columns: (B^T d) B
            k = t - t0
            for i in range(4):
                v[4 * i + 0, c, k] = d[i, 0] - d[i, 2]
                v[4 * i + 1, c, k] = d[i, 1] + d[i, 2]
                v[4 * i + 2, c, k] = d[i, 2] - d[i, 1]
                v[4 * i + 3, c, k] = d[i, 1] - d[i, 3]


@jit(parallel=True)
def _output_transform(m, out, t0, t1, tiles_h, tiles_w):
    """``out`` 2x2 block of tile t = ``A^T M_t A``, cropped to the output. Returns the sum of
    the outputs: not finite if any input or weight was not (or the sums overflowed)."""
    n_images, channels, ho_size, wo_size = out.shape
    per_image = tiles_h * tiles_w
    checksum = 0.0
    for c in prange(channels):
        for t in range(t0, t1):
            k = t - t0
            n = t // per_image
            r = t - n * per_image
            oh = (r // tiles_w) * 2
            ow = (r - (r // tiles_w) * tiles_w) * 2
            # rows: A^T m (2x4), A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
            s00 = m[0, c, k] + m[4, c, k] + m[8, c, k]
            s01 = m[1, c, k] + m[5, c, k] + m[9, c, k]
            s02 = m[2, c, k] + m[6, c, k] + m[10, c, k]
            s03 = m[3, c, k] + m[7, c, k] + m[11, c, k]
            s10 = m[4, c, k] - m[8, c, k] - m[12, c, k]
            s11 = m[5, c, k] - m[9, c, k] - m[13, c, k]
            s12 = m[6, c, k] - m[10, c, k] - m[14, c, k]
            s13 = m[7, c, k] - m[11, c, k] - m[15, c, k]
            # columns: (A^T m) A
            y00, y01 = s00 + s01 + s02, s01 - s02 - s03
            y10, y11 = s10 + s11 + s12, s11 - s12 - s13
            checksum += y00 + y01 + y10 + y11
            out[n, c, oh, ow] = y00
            if ow + 1 < wo_size:
                out[n, c, oh, ow + 1] = y01
            if oh + 1 < ho_size:
                out[n, c, oh + 1, ow] = y10
                if ow + 1 < wo_size:
                    out[n, c, oh + 1, ow + 1] = y11
    return checksum


# G g G^T as one linear map from the 9 taps to the 16 products: kron(G, G), with
# G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_FILTER_MAP = np.kron(_G, _G)  # (16, 9)


def _filter_transform(weight, spec: ConvSpec):
    """``U[k, g] = (G g G^T)[k]`` for every filter: one (16 x 9) @ (9 x filters) GEMM."""
    taps = weight.reshape(-1, 9).T  # (9, C_out * C_in/g)
    u = _FILTER_MAP.astype(weight.dtype) @ taps
    return u.reshape(16, spec.groups, spec.out_channels_per_group, spec.in_channels_per_group)


def forward(x, weight, bias, spec: ConvSpec):
    """Winograd F(2x2, 3x3) forward.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    weight : ndarray, shape (C_out, C_in // groups, 3, 3)
    bias : ndarray of shape (C_out,) or None
    spec : ConvSpec
        3x3, stride 1, dilation 1.

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out)
    """
    n_images = x.shape[0]
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    ho, wo = spec.output_size
    (ph, _), (pw, _) = spec.pads
    tiles_h, tiles_w = -(-ho // 2), -(-wo // 2)
    total = n_images * tiles_h * tiles_w
    # V and M side by side, 16 values per tile and channel each
    per_tile = 16 * (spec.in_channels + spec.out_channels) * x.dtype.itemsize
    chunk = int(max(1, min(total, config.get_workspace_budget() // per_tile)))
    u = _filter_transform(weight, spec)
    v = workspace.scratch((16, spec.in_channels, chunk), x.dtype, slot=0)
    m = workspace.scratch((16, spec.out_channels, chunk), x.dtype, slot=1)
    out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
    for t0 in range(0, total, chunk):
        t1 = min(total, t0 + chunk)
        width = t1 - t0
        _input_transform(x, v, t0, t1, tiles_h, tiles_w, ph, pw)
        # 16 x groups GEMMs in one batched call
        np.matmul(u, v[:, :, :width].reshape(16, groups, cg, width),
                  out=m[:, :, :width].reshape(16, groups, og, width))
        if not np.isfinite(_output_transform(m, out, t0, t1, tiles_h, tiles_w)):
            # the transforms add and subtract neighbours: an Inf would become NaN across its
            # tile, where a direct convolution (and PyTorch) keeps it to the outputs it reaches
            return im2col.forward(x, weight, bias, spec)
    if bias is not None:
        add_bias(out.reshape(n_images, spec.out_channels, ho * wo), bias)
    return out


def backward_input(grad_output, weight, spec: ConvSpec):
    """The input gradient: ``dY`` correlated (3x3, stride 1) with the filters rotated by 180
    degrees and transposed per group, after padding ``dY`` by ``2 - p`` on each side (or
    cropping it where the padding ``p`` exceeds 2: those rows only reach padding).

    Parameters
    ----------
    grad_output : ndarray, shape (N, C_out, H_out, W_out)
    weight : ndarray, shape (C_out, C_in // groups, 3, 3)
    spec : ConvSpec

    Returns
    -------
    ndarray, shape (N, C_in, H, W)
    """
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    rotated = weight[:, :, ::-1, ::-1].reshape(groups, og, cg, 3, 3)
    transposed = np.ascontiguousarray(rotated.transpose(0, 2, 1, 3, 4)).reshape(
        spec.in_channels, og, 3, 3)
    (top, bottom), (left, right) = spec.pads
    extra = (2 - top, 2 - bottom, 2 - left, 2 - right)
    dy = grad_output
    if min(extra) >= 0 and extra[0] == extra[1] and extra[2] == extra[3]:
        padding = (extra[0], extra[2])
    else:
        height, width = dy.shape[2:]
        dy = dy[:, :, max(0, -extra[0]):height - max(0, -extra[1]),
                max(0, -extra[2]):width - max(0, -extra[3])]
        dy = np.pad(dy, ((0, 0), (0, 0), (max(0, extra[0]), max(0, extra[1])),
                         (max(0, extra[2]), max(0, extra[3]))))
        dy.flags.writeable = False  # the layout the kernels are compiled for
        padding = 0
    transposed_spec = ConvSpec(spec.out_channels, spec.in_channels, 3, padding=padding,
                               groups=groups, input_size=dy.shape[2:])
    return forward(dy, transposed, None, transposed_spec)


def backward_weight(grad_output, x, spec: ConvSpec):
    """The weight gradient, through im2col's GEMMs."""
    return im2col.backward_weight(grad_output, x, spec)
