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
from numba import prange, uintp

from ... import config, workspace
from ...runtime import jit
from ...spec import ConvSpec, swap_group_channels
from ..tiling import winograd_tiles
from . import im2col
from ._common import add_bias

# B^T and A^T are unrolled in the kernels below.


# Both transforms run over (channel, row of tiles) tasks, a whole row of tiles at a time, as
# short loops of one or two streams each: a loop that reads and writes sixteen rows of V or M
# at once does not vectorise (LLVM gives up on that many runtime alias checks). Tiles are
# numbered image after image, row after row; a chunk [t0, t1) may start and end inside a row.


@jit(inline=True)
def _tile_rows(t0, t1, tiles_w):
    """The first row of tiles that chunk ``[t0, t1)`` touches, and how many."""
    first = t0 // tiles_w
    return first, (t1 - 1) // tiles_w - first + 1


@jit(inline=True)
def _tile_span(t0, t1, tile_row, tiles_w):
    """The tiles ``[j0, j1)`` of row ``tile_row`` inside the chunk, and the V/M column of the
    row's tile 0 (``t - t0`` for ``t = tile_row * tiles_w``; negative when the chunk starts
    inside the row, whose earlier tiles are then skipped)."""
    base = tile_row * tiles_w - t0
    return max(0, -base), min(tiles_w, t1 - t0 - base), base


@jit(inline=True)
def _split_row(x, n, c, h, pw, even, odd):
    """The zero-padded input row ``h`` (pixel ``w`` at padded column ``w + pw``) split into its
    even and odd padded columns: ``even[q]`` is padded column ``2q``, ``odd[q]`` is ``2q + 1``.
    Tile j reads padded columns 2j..2j+3: ``even[j], odd[j], even[j + 1], odd[j + 1]``."""
    height, width, size = x.shape[2], x.shape[3], even.shape[0]
    for q in range(uintp(size)):
        even[q] = 0.0
        odd[q] = 0.0
    if 0 <= h < height:
        n, c, h = uintp(n), uintp(c), uintp(h)
        for w in range(uintp(min(width, 2 * size - pw))):
            column = w + uintp(pw)
            if column & uintp(1):
                odd[column >> uintp(1)] = x[n, c, h, w]
            else:
                even[column >> uintp(1)] = x[n, c, h, w]


@jit(inline=True)
def _columns_b(even, odd, i, v, c, first, count):
    """``v[4i + 0..3, c, first + j]``, ``j < count``: row ``i`` of ``(B^T d) B`` for a row of
    tiles, from row ``i`` of ``B^T d`` split into even and odd columns (see _split_row). All
    indices unsigned (and never a signed plus an unsigned one, which Numba makes a float)."""
    k, c, first, one = uintp(4 * i), uintp(c), uintp(first), uintp(1)
    for j in range(uintp(count)):
        v[k, c, first + j] = even[j] - even[j + one]
    for j in range(uintp(count)):
        v[k + one, c, first + j] = odd[j] + even[j + one]
    for j in range(uintp(count)):
        v[k + uintp(2), c, first + j] = even[j + one] - odd[j]
    for j in range(uintp(count)):
        v[k + uintp(3), c, first + j] = odd[j] - odd[j + one]


# B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: row i of B^T d is
# d[p] + sign * d[r]
_B_ROWS = ((0, 2, -1), (1, 2, 1), (2, 1, -1), (1, 3, -1))


@jit(parallel=True)
def _input_transform(x, v, t0, t1, tiles_h, tiles_w, ph, pw, n_chunks):
    """``v[k, c, t - t0]`` = element k of ``B^T d B`` for the 4x4 input tile of output tile t;
    pixels outside the input are zero."""
    channels, size = x.shape[1], tiles_w + 1  # even (or odd) padded columns a row of tiles reads
    first_row, n_rows = _tile_rows(t0, t1, tiles_w)
    tasks = channels * n_rows
    for chunk in prange(n_chunks):
        even, odd = np.empty((4, size), x.dtype), np.empty((4, size), x.dtype)
        a_even, a_odd = np.empty(size, x.dtype), np.empty(size, x.dtype)
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            c = task // n_rows
            tile_row = first_row + task - c * n_rows
            n = tile_row // tiles_h
            top = (tile_row - n * tiles_h) * 2 - ph
            for i in range(4):
                _split_row(x, n, c, top + i, pw, even[i], odd[i])
            j0, j1, base = _tile_span(t0, t1, tile_row, tiles_w)
            for i in range(4):  # row i of B^T d, from tile j0 on, then its columns
                p, r, sign = _B_ROWS[i]
                for q in range(uintp(size - j0)):
                    a_even[q] = even[p, q + uintp(j0)] + sign * even[r, q + uintp(j0)]
                    a_odd[q] = odd[p, q + uintp(j0)] + sign * odd[r, q + uintp(j0)]
                _columns_b(a_even, a_odd, i, v, c, base + j0, j1 - j0)


@jit(inline=True)
def _rows_a(m, c, first, count, s):
    """``s[4r + col, j]`` = element (r, col) of ``A^T m`` (2 x 4), ``A^T = [[1, 1, 1, 0],
    [0, 1, -1, -1]]``, for the tiles in M's columns ``first + j``, ``j < count``; unsigned
    indices as in :func:`_columns_b`."""
    c, first = uintp(c), uintp(first)
    for col in range(uintp(4)):
        top, middle, bottom = col + uintp(4), col + uintp(8), col + uintp(12)
        for j in range(uintp(count)):
            k = first + j
            s[col, j] = m[col, c, k] + m[top, c, k] + m[middle, c, k]
        for j in range(uintp(count)):
            k = first + j
            s[top, j] = m[top, c, k] - m[middle, c, k] - m[bottom, c, k]


@jit(parallel=True)
def _output_transform(m, out, t0, t1, tiles_h, tiles_w, n_chunks):
    """``out`` 2x2 block of tile t = ``A^T M_t A``, cropped to the output. Returns the sum of
    the outputs: not finite if any input or weight was not (or the sums overflowed)."""
    channels, ho_size, wo_size = out.shape[1], out.shape[2], out.shape[3]
    first_row, n_rows = _tile_rows(t0, t1, tiles_w)
    tasks = channels * n_rows
    checksum = 0.0
    for chunk in prange(n_chunks):
        s = np.empty((8, tiles_w), m.dtype)  # A^T m: row r, column col at s[4r + col]
        lines = np.empty((2, 2 * tiles_w), out.dtype)  # the row of tiles' two output rows
        total = 0.0
        for task in range(chunk * tasks // n_chunks, (chunk + 1) * tasks // n_chunks):
            c = task // n_rows
            tile_row = first_row + task - c * n_rows
            n = tile_row // tiles_h
            oh = (tile_row - n * tiles_h) * 2
            j0, j1, base = _tile_span(t0, t1, tile_row, tiles_w)
            # A^T m A: rows, then columns
            _rows_a(m, c, base + j0, j1 - j0, s)
            two = uintp(2)
            for r in range(2):  # lines[r, 2(j - j0) + 0..1]: output row oh + r from column 2 j0
                for j in range(uintp(j1 - j0)):
                    lines[r, two * j] = s[4 * r, j] + s[4 * r + 1, j] + s[4 * r + 2, j]
                    lines[r, two * j + uintp(1)] = (s[4 * r + 1, j] - s[4 * r + 2, j]
                                                    - s[4 * r + 3, j])
                for q in range(uintp(2 * (j1 - j0))):
                    total += lines[r, q]
            first = uintp(2 * j0)
            for r in range(min(2, ho_size - oh)):  # crop: an odd size's last tile overhangs
                for ow in range(uintp(min(2 * j1, wo_size) - 2 * j0)):
                    out[uintp(n), uintp(c), uintp(oh + r), first + ow] = lines[r, ow]
        checksum += total
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

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    n_images = x.shape[0]
    groups, cg, og = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
    ho, wo = spec.output_size
    (ph, _), (pw, _) = spec.pads
    tiles_h, tiles_w = winograd_tiles(spec)
    total = n_images * tiles_h * tiles_w
    # V and M side by side, 16 values per tile and channel each, beside the transformed
    # filters U (16 values per filter) under the workspace budget
    per_tile = 16 * (spec.in_channels + spec.out_channels) * x.dtype.itemsize
    u = _filter_transform(weight, spec)
    room = config.get_workspace_budget() - u.nbytes
    chunk = int(max(1, min(total, room // per_tile)))
    v = workspace.scratch((16, spec.in_channels, chunk), x.dtype, slot=0)
    m = workspace.scratch((16, spec.out_channels, chunk), x.dtype, slot=1)
    out = np.empty(spec.output_shape(n_images), dtype=x.dtype)
    chunks = 4 * config.get_num_threads()  # a few per thread, for balance
    for t0 in range(0, total, chunk):
        t1 = min(total, t0 + chunk)
        width = t1 - t0
        _input_transform(x, v, t0, t1, tiles_h, tiles_w, ph, pw, chunks)
        # 16 x groups GEMMs in one batched call
        np.matmul(u, v[:, :, :width].reshape(16, groups, cg, width),
                  out=m[:, :, :width].reshape(16, groups, og, width))
        if not np.isfinite(_output_transform(m, out, t0, t1, tiles_h, tiles_w, chunks)):
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

    Arrays and spec as in :class:`fastconv.kernels.algorithms.KernelModule`.
    """
    transposed = swap_group_channels(weight[:, :, ::-1, ::-1], spec.groups)
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
                               groups=spec.groups, input_size=dy.shape[2:])
    return forward(dy, transposed, None, transposed_spec)


def backward_weight(grad_output, x, spec: ConvSpec):
    """The weight gradient, through im2col's GEMMs."""
    return im2col.backward_weight(grad_output, x, spec)
