"""How every backend cuts im2col's column matrix under the workspace budget, and copies a
batch of small images side by side for one GEMM (pure Python)."""

from __future__ import annotations

from typing import NamedTuple

from .. import config, workspace
from ..spec import ConvSpec
from . import tuning


class ColumnTiling(NamedTuple):
    """The column matrix of a spec and how it is cut into tiles.

    A tile is a range of the batch's output pixels ``[q0, q1)``, numbered image after image,
    so one tile may hold the ends of one image and the starts of the next: small images are
    then batched into one GEMM instead of many thin ones."""

    rows: int  # in_channels * kH * kW; group g owns rows [g * group_rows, (g+1) * group_rows)
    group_rows: int
    pixels: int  # output pixels per image
    tile: int  # output pixels per tile
    args: tuple  # the geometry the im2col/col2im kernels take


def column_tiling(spec: ConvSpec, itemsize: int, n_images: int,
                  extra_rows: int = 0) -> ColumnTiling:
    """Tiles whose column matrix (plus ``extra_rows`` rows of another buffer of the same
    width) fits the workspace budget: the whole batch if it fits, at least one pixel."""
    kh, kw = spec.kernel_size
    ho, wo = spec.output_size
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    rows = spec.in_channels * kh * kw
    pixels = ho * wo
    per_pixel = (rows + extra_rows) * itemsize
    tile = int(max(1, min(n_images * pixels, config.get_workspace_budget() // per_pixel)))
    return ColumnTiling(rows, rows // spec.groups, pixels, tile,
                        (pixels, kh, kw, wo, sh, sw, ph, pw, dh, dw))


def tiles(tiling: ColumnTiling, n_images: int):
    """``(q0, q1, segments)`` per tile; a segment ``(n, p0, p1, at)`` is image ``n``'s output
    pixels ``[p0, p1)``, held in the tile's columns from ``at`` on."""
    total = n_images * tiling.pixels
    for q0 in range(0, total, tiling.tile):
        q1 = min(total, q0 + tiling.tile)
        segments, q = [], q0
        while q < q1:
            n, p0 = divmod(q, tiling.pixels)
            p1 = min(tiling.pixels, p0 + q1 - q)
            segments.append((n, p0, p1, q - q0))
            q += p1 - p0
        yield q0, q1, segments


def _runs(segments, pixels: int):
    """The segments as runs ``(n0, n1, p0, p1, at)``: images ``[n0, n1)``, each its pixels
    ``[p0, p1)``, side by side from column ``at`` on (whole images in a row make one run)."""
    runs = []
    for n, p0, p1, at in segments:
        whole = p0 == 0 and p1 == pixels
        if runs and whole and runs[-1][1:4] == [n, 0, pixels]:
            runs[-1][1] = n + 1
        else:
            runs.append([n, n + 1, p0, p1, at])
    return runs


def side_by_side(matrix, segments, buffer):
    """A tile's segments of ``matrix`` (images, groups, rows, pixels) copied side by side
    into ``buffer`` (groups, rows, tile); returns the filled (groups, rows, width) part."""
    for n0, n1, p0, p1, at in _runs(segments, matrix.shape[3]):
        width = (n1 - n0) * (p1 - p0)
        buffer[:, :, at:at + width].reshape(*buffer.shape[:2], n1 - n0, p1 - p0)[...] = (
            matrix[n0:n1, :, :, p0:p1].transpose(1, 2, 0, 3))
    last = segments[-1]
    return buffer[:, :, :last[3] + last[2] - last[1]]


def put_apart(buffer, segments, matrix) -> None:
    """:func:`side_by_side` undone: a tile's columns of ``buffer`` (groups, rows, tile) into
    their images' pixels of ``matrix`` (images, groups, rows, pixels)."""
    for n0, n1, p0, p1, at in _runs(segments, matrix.shape[3]):
        width = (n1 - n0) * (p1 - p0)
        matrix[n0:n1, :, :, p0:p1] = buffer[:, :, at:at + width].reshape(
            *buffer.shape[:2], n1 - n0, p1 - p0).transpose(2, 0, 1, 3)


def pixel_rows(x, grad_output, spec: ConvSpec):
    """A plain 1x1 layer's input and output gradient (N, C, H, W) as pixel rows, a run of
    images at a time under the workspace budget: ``(x_rows, dy_rows)``, (images x H x W,
    C_in) and (images x H x W, C_out) in two workspaces (NHWC copies), whose product is the
    weight gradient of small images in one GEMM per group."""
    n_images, pixels = x.shape[0], x.shape[2] * x.shape[3]
    per_image = (spec.in_channels + spec.out_channels) * pixels * x.dtype.itemsize
    chunk = max(1, min(n_images, config.get_workspace_budget() // per_image))
    x_rows = workspace.scratch((chunk, pixels, spec.in_channels), x.dtype, slot=0)
    dy_rows = workspace.scratch((chunk, pixels, spec.out_channels), x.dtype, slot=1)
    for n0 in range(0, n_images, chunk):
        n1 = min(n_images, n0 + chunk)
        for rows, array in ((x_rows, x), (dy_rows, grad_output)):
            rows[:n1 - n0] = array[n0:n1].reshape(n1 - n0, array.shape[1], pixels).transpose(
                0, 2, 1)
        yield (x_rows[:n1 - n0].reshape(-1, spec.in_channels),
               dy_rows[:n1 - n0].reshape(-1, spec.out_channels))


def winograd_tiles(spec: ConvSpec) -> tuple[int, int]:
    """Rows and columns of Winograd F(2x2, 3x3)'s 2x2 output tiles in one image (an odd
    output size leaves the last row or column of tiles half outside it)."""
    ho, wo = spec.output_size
    return -(-ho // 2), -(-wo // 2)


def batch_small_images(spec: ConvSpec, n_images: int) -> bool:
    """Whether a GEMM should run over several images side by side rather than one per image:
    when the weight is larger than an image's columns and outputs, each per-image GEMM reads
    the whole weight (the forward, the input's gradient) or writes a weight-sized partial sum
    (the weight's gradient) for little work (a classifier's are matrix-vector products), and
    copying the images side by side, and apart again, is cheaper (``pytest
    benches/bench_tuning.py -k small_images`` compares the two)."""
    kh, kw = spec.kernel_size
    ho, wo = spec.output_size
    group_rows = spec.in_channels_per_group * kh * kw
    og = spec.out_channels_per_group
    return n_images > 1 and og * group_rows > (group_rows + og) * ho * wo


def gradient_chunk(filters: int, taps: int, width: int) -> int:
    """How many output pixels one weight-gradient GEMM ``(filters x width) @ (width x taps)``
    should cover; ``width`` (no chunking) unless the gradient is small and the product long.

    A layer with few filters of few taps (MobileNet's first: 32 filters of 27 taps) has a
    gradient of under a thousand values, each summed over every pixel. OpenBLAS runs that
    product on its threads over the whole inner dimension (12544 pixels at batch 1), far below
    its speed on square matrices. In chunks of just under ``tuning.SMALL_GEMM`` multiply-adds
    each (one batched matmul, summed after) it runs on the calling thread, and leaves the
    other thread pools alone."""
    result = filters * taps
    if result > tuning.SMALL_GRADIENT:
        return width
    chunk = max(1, tuning.SMALL_GEMM // result - 1)
    return chunk if 2 * chunk <= width else width
