"""The network plan's kernels on their own, against NumPy: the GEMM tiles (every epilogue,
both tile shapes, ragged pixels and channels, groups, taps) and the 3x3 depthwise row."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from scipy import special

from fastconv.kernels import tuning
from fastconv.kernels.epilogue import ACTIVATIONS
from fastconv.kernels.numba.microkernel import depthwise_block, tile_shape
from fastconv.kernels.numba.nhwc.conv import conv, pack, schedule
from fastconv.kernels.numba.nhwc.depthwise import depthwise, depthwise_3x3
from fastconv.kernels.plan_tiles import TileGeometry
from fastconv.network.step_args import (Conv, Depthwise, Depthwise3x3, Separable,
                                        Winograd)

from helpers import DTYPES

NO_BORDER = np.zeros(8, np.int64)  # an output with no border to zero

ACT = {  # name -> (lo, hi, alpha, beta), NumPy's version
    "none": ((0, 0, 0, 0), lambda y: y),
    "clamp": ((-0.5, 0.7, 0, 0), lambda y: np.clip(y, -0.5, 0.7)),
    "leaky": ((0, 0, 0.1, 0), lambda y: np.where(y < 0, 0.1 * y, y)),
    "hardsigmoid": ((0, 0, 0.2, 0.5), lambda y: np.clip(0.2 * y + 0.5, 0, 1)),
    "hardswish": ((0, 0, 0, 0), lambda y: y * np.clip(y / 6 + 0.5, 0, 1)),
    "sigmoid": ((0, 0, 0, 0), lambda y: 1 / (1 + np.exp(-y))),
    "silu": ((0, 0, 0, 0), lambda y: y / (1 + np.exp(-y))),
    "tanh": ((0, 0, 0, 0), np.tanh),
    "mish": ((0, 0, 0, 0), lambda y: y * np.tanh(np.logaddexp(0, y))),
    "gelu": ((0, 0, 0, 0), lambda y: y * special.erfc(-y / np.sqrt(2)) / 2),
    # y (1 + tanh(u)) / 2, without 1 + tanh(u)'s cancellation in the negative tail
    "gelu_tanh": ((0, 0, 0, 0), lambda y: y / (1 + np.exp(-2 * np.sqrt(2 / np.pi) * (
        y + 0.044715 * y ** 3)))),
}


def _conv_problem(rng, dtype, n, c, h, w, o, k, stride, pad, dilation, groups):
    """A bordered NHWC input, its tables, and the expected NHWC output (before epilogue)."""
    x = rng.standard_normal((n, h + 2 * pad, w + 2 * pad, c)).astype(dtype)
    x[:, :pad] = x[:, h + pad:] = 0
    x[:, :, :pad] = x[:, :, w + pad:] = 0
    weight = rng.standard_normal((o, c // groups, k, k)).astype(dtype)
    ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    nn, oh, ow = np.meshgrid(np.arange(n), np.arange(ho), np.arange(wo), indexing="ij")
    rows = (((nn * (h + 2 * pad) + oh * stride) * (w + 2 * pad) + ow * stride) * c).ravel()
    taps = np.array([(i * dilation * (w + 2 * pad) + j * dilation) * c for i in range(k)
                     for j in range(k)], np.int64)
    expected = np.zeros((n, ho, wo, o))
    cg, og = c // groups, o // groups
    for i in range(k):
        for j in range(k):
            patch = x[:, i * dilation:i * dilation + stride * (ho - 1) + 1:stride,
                      j * dilation:j * dilation + stride * (wo - 1) + 1:stride]
            for g in range(groups):
                expected[..., g * og:(g + 1) * og] += (
                    patch[..., g * cg:(g + 1) * cg].astype(np.float64)
                    @ weight[g * og:(g + 1) * og, :, i, j].T.astype(np.float64))
    out_rows = (((nn * ho + oh) * wo + ow) * o).ravel()
    return x, weight, rows.astype(np.int64), taps, out_rows.astype(np.int64), expected


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("is_wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("act", list(ACT))
@pytest.mark.parametrize("res_mode", [0, 1, 2])
@pytest.mark.parametrize("shape", [
    (2, 3, 11, 9, 10, 3, 2, 1, 1, 1),    # few channels, a narrow ragged panel
    (1, 16, 7, 7, 40, 1, 1, 0, 1, 1),    # pointwise: the wide tile, ragged
    (3, 8, 9, 13, 12, 3, 1, 2, 2, 2),    # groups and dilation
    (1, 5, 6, 6, 100, 2, 1, 0, 1, 1),    # an even kernel, two wide panels
    (1, 32, 4, 5, 33, 1, 1, 0, 1, 1),    # 20 pixels: a full tile, then 4, 4 (or 2), ...
])
def test_conv_tiles_match_numpy(shape, res_mode, act, is_wide, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((shape, res_mode, act)).encode()))
    n, c, h, w, o, k, stride, pad, dilation, groups = shape
    x, weight, rows, taps, out_rows, expected = _conv_problem(rng, dtype, *shape)
    bias = rng.standard_normal(o).astype(dtype)
    residual = rng.standard_normal(expected.size).astype(dtype)
    packed, panel = pack(weight, groups, dtype, is_wide)
    (lo, hi, alpha, beta), numpy_act = ACT[act]
    out = np.full(expected.size, np.nan, dtype)
    grid = schedule(len(rows), k * k * (c // groups), o // groups, groups, dtype, 2, is_wide)
    mr, nr = tile_shape(dtype, is_wide)
    f = np.dtype(dtype).type
    conv(*Conv(x=x.ravel(), rows=rows, taps=taps, c_in=c // groups, groups=groups, w=packed,
               panel=panel, out=out, out_rows=out_rows, out_per_group=o // groups, bias=bias,
               has_bias=True, kind=ACTIVATIONS[act], lo=f(lo), hi=f(hi), alpha=f(alpha),
               beta=f(beta), res=residual, res_rows=out_rows, res_mode=res_mode, wide=is_wide,
               mr=mr, nr=nr, **grid._asdict(), out_border=NO_BORDER))
    y = expected.ravel() + np.tile(bias, len(rows))
    if res_mode == 1:
        y = y + residual
    y = numpy_act(y)
    if res_mode == 2:
        y = y + residual
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(out, y, rtol=tol, atol=tol)


def test_clamp_keeps_nan():
    rng = np.random.default_rng(0)
    x, weight, rows, taps, out_rows, expected = _conv_problem(rng, np.float32, 1, 4, 3, 3, 8, 1,
                                                              1, 0, 1, 1)
    x[0, 1, 1, 2] = np.nan
    packed, panel = pack(weight, 1, np.float32, False)
    out = np.zeros(expected.size, np.float32)
    f = np.float32
    mr, nr = tile_shape(f)
    conv(*Conv(x=x.ravel(), rows=rows, taps=taps, c_in=4, groups=1, w=packed, panel=panel,
               out=out, out_rows=out_rows, out_per_group=8, bias=np.zeros(1, f), has_bias=False,
               kind=ACTIVATIONS["clamp"], lo=f(0), hi=f(math.inf), alpha=f(0), beta=f(0),
               res=out, res_rows=out_rows, res_mode=0, wide=False, mr=mr, nr=nr,
               **schedule(9, 4, 8, 1, f, 2, False)._asdict(), out_border=NO_BORDER))
    assert np.isnan(out.reshape(9, 8)[4]).all() and not np.isnan(out.reshape(9, 8)[3]).any()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("channels", [5, 16, 37, 64])
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
def test_depthwise_row_matches_numpy(channels, stride, dilation, dtype):
    rng = np.random.default_rng(channels + 10 * stride + 100 * dilation)
    n, h, w, pad = 2, 9, 10, dilation
    x = np.zeros((n, h + 2 * pad + 2, w + 2 * pad + 2, channels), dtype)  # a wider border
    x[:, 1 + pad:1 + pad + h, 1 + pad:1 + pad + w] = rng.standard_normal((n, h, w, channels))
    weight = rng.standard_normal((9, channels)).astype(dtype)
    bias = rng.standard_normal(channels).astype(dtype)
    ho = (h + 2 * pad - 2 * dilation - 1) // stride + 1
    wo = (w + 2 * pad - 2 * dilation - 1) // stride + 1
    out = np.full((n, ho + 1, wo + 3, channels), np.nan, dtype)
    f = np.dtype(dtype).type
    border = np.array([*out.shape, 1, 0, 2, 1], np.int64)  # zeroed by the kernel
    depthwise_3x3(*Depthwise3x3(
        x=x, top=1, left=1, w=weight, bias=bias, out=out, out_top=1, out_left=2, ho=ho, wo=wo,
        sh=stride, sw=stride, dh=dilation, dw=dilation, kind=ACTIVATIONS["clamp"], lo=f(0),
        hi=f(6), alpha=f(0), beta=f(0), block=depthwise_block(dtype), out_border=border,
        tasks=2))
    expected = np.broadcast_to(bias, (n, ho, wo, channels)).astype(np.float64)
    for t in range(9):
        i, j = divmod(t, 3)
        expected = expected + weight[t] * x[:, 1 + i * dilation:1 + i * dilation + stride *
                                            (ho - 1) + 1:stride, 1 + j * dilation:1 + j *
                                            dilation + stride * (wo - 1) + 1:stride]
    np.testing.assert_allclose(out[:, 1:, 2:2 + wo], np.clip(expected, 0, 6),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    assert (out[:, 0] == 0).all() and (out[:, :, -1] == 0).all() and (out[:, :, :2] == 0).all()


def test_generic_depthwise_with_a_multiplier():
    rng = np.random.default_rng(3)
    x = np.zeros((1, 9, 9, 3))
    x[:, 2:7, 2:7] = rng.standard_normal((1, 5, 5, 3))
    weight = rng.standard_normal((25, 6))
    bias = np.zeros(6)
    out = np.zeros((1, 3, 3, 6))
    depthwise(*Depthwise(x=x, top=0, left=0, w=weight, kh=5, kw=5, multiplier=2, bias=bias,
                         out=out, out_top=0, out_left=0, ho=3, wo=3, sh=2, sw=2, dh=1, dw=1,
                         kind=0, lo=0.0, hi=0.0, alpha=0.0, beta=0.0, block=8,
                         tasks=2))
    expected = np.zeros((1, 3, 3, 6))
    for c in range(6):
        for i in range(5):
            for j in range(5):
                expected[0, :, :, c] += weight[i * 5 + j, c] * x[0, i:i + 5:2, j:j + 5:2, c // 2]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tasks", [1, 2, 3, 7])
def test_zero_border_zeroes_the_border_only(tasks):
    from fastconv.kernels.numba.nhwc.layout import zero_border

    buf = np.full((2, 7, 6, 3), np.nan)
    zero_border(buf.reshape(-1), np.array([*buf.shape, 2, 1, 1, 3], np.int64), tasks)
    inside = np.zeros(buf.shape, bool)
    inside[:, 2:6, 1:3] = True
    assert np.isnan(buf[inside]).all() and (buf[~inside] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("is_wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("stride, rows_per_step, tasks", [(1, 1, 2), (2, 3, 2), (1, 4, 3)])
def test_separable_matches_numpy(stride, rows_per_step, tasks, is_wide, dtype):
    """The depthwise 3x3 (ReLU6) and the pointwise (bias, ReLU) fused, over images and steps
    that end mid-image, the output's border zeroed."""
    from fastconv.kernels.numba.nhwc.separable import separable

    rng = np.random.default_rng(stride + 10 * rows_per_step)
    n, c, h, w, o = 2, 20, 9, 7, 40
    x = np.zeros((n, h + 2, w + 2, c), dtype)
    x[:, 1:1 + h, 1:1 + w] = rng.standard_normal((n, h, w, c))
    dw_w = rng.standard_normal((9, c)).astype(dtype)
    dw_b = rng.standard_normal(c).astype(dtype)
    pw_w = rng.standard_normal((o, c, 1, 1)).astype(dtype)
    pw_b = rng.standard_normal(o).astype(dtype)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    mid = np.broadcast_to(dw_b, (n, ho, wo, c)).astype(np.float64)
    for t in range(9):
        i, j = divmod(t, 3)
        mid = mid + dw_w[t] * x[:, i:i + stride * (ho - 1) + 1:stride,
                                j:j + stride * (wo - 1) + 1:stride]
    expected = np.maximum(np.clip(mid, 0, 6) @ pw_w[:, :, 0, 0].T.astype(np.float64) + pw_b, 0)
    out = np.full((n, ho + 1, wo + 1, o), np.nan, dtype)  # border: top 1, right 1
    nn, oh, ow = np.meshgrid(np.arange(n), np.arange(ho), np.arange(wo), indexing="ij")
    out_rows = (((nn * (ho + 1) + 1 + oh) * (wo + 1) + ow) * o).ravel().astype(np.int64)
    packed, panel = pack(pw_w, 1, dtype, is_wide)
    mr, nr = tile_shape(dtype, is_wide)
    f = np.dtype(dtype).type
    scratch = np.full((tasks, rows_per_step * wo * c), np.nan, dtype)
    flat = out.reshape(-1)
    clamp = ACTIVATIONS["clamp"]
    separable(*Separable(
        x=x, top=0, left=0, dw_w=dw_w, dw_bias=dw_b, dw_kind=clamp, dw_lo=f(0), dw_hi=f(6),
        dw_alpha=f(0), dw_beta=f(0), sh=stride, sw=stride, dh=1, dw=1, ho=ho, wo=wo,
        block=depthwise_block(dtype), w=packed, panel=panel, panels=-(-o // nr), out=flat,
        out_rows=out_rows, out_channels=o, bias=pw_b, has_bias=True, kind=clamp, lo=f(0),
        hi=f(np.inf), alpha=f(0), beta=f(0), res=flat, res_rows=out_rows, res_mode=0,
        wide=is_wide, mr=mr, nr=nr, scratch=scratch,
        s_rows=np.arange(out_rows.size, dtype=np.int64) * c, taps=np.zeros(1, np.int64),
        rows_per_step=rows_per_step, out_border=np.array([*out.shape, 1, 0, 0, 1], np.int64),
        tasks=tasks))
    np.testing.assert_allclose(out[:, 1:, :wo], expected,
                               rtol=1e-4 if dtype == np.float32 else 1e-11, atol=1e-4)
    assert (out[:, 0] == 0).all() and (out[:, :, wo] == 0).all()


#: Each vector width's tiles beside a core's L2 cache of a machine that has it (a Xeon with
#: AVX-512, a Zen 3 with AVX2, an SSE-only machine): the geometry is a function of both, never
#: of the host the tests run on.
GEOMETRIES = [TileGeometry(512, 2 << 20), TileGeometry(256, 512 << 10),
              TileGeometry(256, 1280 << 10), TileGeometry(128, 256 << 10)]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=repr)
def test_schedule_splits_pixels_on_a_tie_and_blocks_by_traffic(geometry):
    schedule, f = geometry.schedule, np.float32
    # many pixels: split the pixels; few pixels, many channels: split the panels
    assert schedule(12544, 288, 64, 1, f, 2, True)[:2] == (2, 1)
    assert schedule(49, 1024, 1024, 1, f, 2, False)[:2] == (1, 2)
    # a small input (49 pixels of 256 values: 49 KiB) fits half of any L2 cache whole: one
    # block per task
    tile_groups, unit_groups, block, _ = schedule(49, 256, 512, 1, f, 2, True)
    assert block >= -(-(-(-49 // geometry.tile_shape(f, True)[0])) // tile_groups)
    # a 3x3 panel larger than tuning.GEMM_CHUNK_ABOVE is used in equal chunks of channels,
    # each chunk's weights at most tuning.GEMM_CHUNK_BYTES; a smaller one whole
    nr = geometry.tile_shape(f, True)[1]
    c_in = 512
    while 9 * c_in * nr * 4 <= tuning.GEMM_CHUNK_ABOVE:
        c_in *= 2
    *_, chunk = schedule(196, 9 * c_in, 512, 1, f, 2, True, c_in)
    assert chunk < c_in and c_in % chunk == 0 and chunk * nr * 4 <= tuning.GEMM_CHUNK_BYTES
    assert schedule(196, 512, 512, 1, f, 2, True, 512)[3] == 512  # 1x1: whole


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=repr)
def test_the_wide_tile_serves_short_reductions_few_channels_and_large_inputs(geometry):
    wide, f = geometry.wide, np.float32
    narrow_nr = geometry.tile_shape(f)[1]
    assert not wide(12544, 27, narrow_nr, 1, f, 2)  # one narrow panel holds the channels
    assert wide(12544, 32, 64, 1, f, 2) and wide(3136, 64, 128, 1, f, 2)  # short reductions
    assert wide(3136, 512, 64, 1, f, 2)  # few output channels
    # long reductions and many channels: wide only when a thread's share of the input
    # (pixels / 2 threads x k values) outgrows half the L2 cache
    k = 128
    fits = geometry.l2 // 2 // (k * 4) * 2  # the most pixels whose share fits
    assert not wide(fits, k, 128, 1, f, 2) and not wide(fits // 4, k, 512, 1, f, 2)
    assert wide(fits + 2, k, 128, 1, f, 2)


def test_a_geometry_refuses_an_unknown_width_and_a_cache_of_no_size():
    with pytest.raises(ValueError, match="vector_bits must be one of .128, 256, 512., but got 384"):
        TileGeometry(384)
    with pytest.raises(ValueError, match="l2 must be a positive number of bytes, but got 0"):
        TileGeometry(256, 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("is_wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("shape, res_mode", [((2, 5, 9, 7, 6), 0), ((1, 16, 8, 8, 40), 1),
                                             ((2, 33, 11, 13, 70), 2), ((2, 5, 9, 7, 6), 1)])
def test_winograd_matches_numpy(shape, res_mode, is_wide, dtype):
    """F(2x2, 3x3), padding 1, odd sizes (a last tile half outside), a block smaller than
    the tiles, ReLU after the bias; a residual (in a bordered buffer, at a channel offset)
    added before the ReLU (``res_mode`` 1) or after it (2)."""
    from fastconv.kernels.numba.nhwc.winograd import pack_filters, winograd

    n, c, h, w, o = shape
    rng = np.random.default_rng(sum(shape))
    x = np.zeros((n, h + 3, w + 3, c), dtype)  # border: 1 before, 2 after (odd outputs)
    x[:, 1:1 + h, 1:1 + w] = rng.standard_normal((n, h, w, c))
    weight = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    expected = np.broadcast_to(bias, (n, h, w, o)).astype(np.float64)
    for i in range(3):
        for j in range(3):
            expected = expected + x[:, i:i + h, j:j + w].astype(np.float64) @ weight[:, :, i,
                                                                                       j].T
    # the residual: pixel (0, 0) at (1, 2) of its buffer, channel 0 at its channel 3
    res = np.full((n, h + 1, w + 2, o + 4), np.nan, dtype)
    res[:, 1:, 2:, 3:3 + o] = rng.standard_normal((n, h, w, o))
    added = res[:, 1:, 2:, 3:3 + o].astype(np.float64)
    expected = {0: np.maximum(expected, 0), 1: np.maximum(expected + added, 0),
                2: np.maximum(expected, 0) + added}[res_mode]
    packed, panel, panels = pack_filters(weight, dtype, is_wide)
    block, tasks = 5, 2
    v = np.zeros((tasks, 16 * block * c), dtype)
    m = np.zeros((tasks, 16 * block * o), dtype)
    out = np.full((n, h + 1, w + 1, o), np.nan, dtype)
    f = np.dtype(dtype).type
    tiles = np.arange(block, dtype=np.int64)
    mr, nr = tile_shape(dtype, is_wide)
    winograd(*Winograd(
        x=x, top=0, left=0, w=packed, panel=panel, panels=panels, channels=c, bias=bias,
        out=out, out_top=1, out_left=0, ho=h, wo=w, kind=ACTIVATIONS["clamp"], lo=f(0),
        hi=f(np.inf), alpha=f(0), beta=f(0), res=res, res_top=1, res_left=2, res_channel=3,
        res_mode=res_mode, v=v, m=m, rows=tiles * c, m_rows=tiles * o,
        taps=np.zeros(1, np.int64), block=block, is_wide=is_wide, mr=mr, nr=nr,
        out_border=np.array([*out.shape, 1, 0, 0, 1], np.int64), tasks=tasks))
    np.testing.assert_allclose(out[:, 1:, :w], expected,
                               rtol=1e-4 if dtype == np.float32 else 1e-11, atol=1e-4)
    assert (out[:, 0] == 0).all() and (out[:, :, w] == 0).all()  # the border, zeroed


def test_the_numba_width_is_numbas_target_and_never_wider_than_the_cpu(monkeypatch):
    """The tiles follow what Numba compiles for (NUMBA_CPU_FEATURES, as FASTCONV_ISA sets
    it), not the host; a target wider than the CPU is refused in words."""
    from numba.core import config as numba_config

    from fastconv.kernels.numba import microkernel
    from fastconv.kernels.plan_tiles import widest_vectors

    assert widest_vectors(["sse2", "avx", "avx2", "fma"]) == 256
    assert widest_vectors({"avx512f", "avx2"}) == 512 and widest_vectors([]) == 128
    monkeypatch.setattr(microkernel, "host_vector_bits", lambda: 256)
    monkeypatch.setattr(numba_config, "CPU_FEATURES", None)
    assert microkernel.vector_bits() == 256
    monkeypatch.setattr(numba_config, "CPU_FEATURES", "+sse2,-avx,-avx2")
    assert microkernel.vector_bits() == 128
    monkeypatch.setattr(numba_config, "CPU_FEATURES", "+avx2,+fma,-avx512f")
    assert microkernel.vector_bits() == 256
    monkeypatch.setattr(numba_config, "CPU_FEATURES", "+avx512f,+avx512bw")
    with pytest.raises(RuntimeError, match="NUMBA_CPU_FEATURES='.avx512f,.avx512bw' asks for "
                                           "512-bit vectors, but this CPU's widest are 256"):
        microkernel.vector_bits()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("act", ["sigmoid", "silu", "tanh", "mish", "gelu", "gelu_tanh"])
def test_the_transcendental_activations_over_their_range(act, dtype):
    """Each exp-based activation of the epilogue, on Numba and in C, against NumPy/SciPy in
    float64: from deep in the negative tail (GELU's erfc keeps its digits there) to beyond
    overflow, near 0 (tanh's polynomial), infinities and NaN."""
    from fastconv.kernels.epilogue import ACTIVATIONS
    from fastconv.kernels.numba.microkernel import activate_span
    from fastconv.runtime import jit

    values = np.concatenate([np.linspace(-30, 30, 601), [0, 1e-4, -1e-4, 1e-7, 0.6, 0.65,
                                                         -0.63, 88, 100, -100, 1e4, -1e4]])
    y = values.astype(dtype)
    expected = ACT[act][1](y.astype(np.float64))
    special_values = np.array([np.inf, -np.inf, np.nan], dtype)

    @jit()
    def run(v, kind):
        z = v.dtype.type(0)
        activate_span(v, 0, v.size, kind, z, z, z, z)

    got = {}
    numba_y = np.concatenate([y, special_values])
    run(numba_y, ACTIVATIONS[act])
    got["numba"] = numba_y
    plan = pytest.importorskip("fastconv.kernels.cython.plan")
    from fastconv.network.step_args import Affine

    c_x = np.concatenate([y, special_values]).reshape(1, 1, -1, 1)
    c_out = np.zeros_like(c_x)
    z = dtype(0)
    step = plan.affine(*Affine(x=c_x, top=0, left=0, scale=np.ones(1, dtype),
                               shift=np.zeros(1, dtype), has_affine=False, out=c_out, out_top=0,
                               out_left=0, height=1, width=c_x.shape[2], kind=ACTIVATIONS[act],
                               lo=z, hi=z, alpha=z, beta=z, tasks=2))
    src = plan.from_nchw(None, np.zeros((1, 1, 1, 1), dtype), 0, 0,
                         np.array([1, 1, 1, 1, 0, 0, 0, 0], np.int64), 1)
    sink = plan.to_output(np.zeros((1, 1, 1, 1), dtype), 0, 0, (1, 1, 1, 1), False, 1)
    plan.Program([src, step, sink], 2, (1, 1, 1, 1), (1, 1, 1, 1), dtype).run(
        np.zeros((1, 1, 1, 1), dtype), np.empty((1, 1, 1, 1), dtype))
    got["c"] = c_out.reshape(-1)
    tol = dict(rtol=1e-5, atol=1e-30) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-300)
    for name, result in got.items():
        np.testing.assert_allclose(result[:y.size], expected, **tol, err_msg=name)
        assert np.isnan(result[-1]), name  # NaN stays NaN
        with np.errstate(invalid="ignore", over="ignore"):
            at_inf = ACT[act][1](np.array([np.inf, -np.inf]))
        ok = np.isclose(result[-3:-1], at_inf, equal_nan=True) | np.isnan(at_inf)
        assert ok.all(), (name, result[-3:-1], at_inf)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("is_wide", [False, True])
def test_numba_pack_is_the_geometrys(dtype, is_wide):
    """The Numba executor's parallel packing gives ``TileGeometry.pack``'s panels (the
    Cython executor's), from weights of any layout and dtype, whole panels or not."""
    from fastconv.kernels.numba.microkernel import GEOMETRY

    rng = np.random.default_rng(0)
    for shape, groups in [((64, 64, 3, 3), 1), ((70, 3, 3, 3), 1), ((32, 1, 3, 3), 32),
                          ((24, 8, 1, 1), 3), ((5, 7, 2, 3), 1)]:
        w = rng.standard_normal(shape)
        for weight in (w.astype(dtype), np.asfortranarray(w.astype(dtype)), w[::-1], w):
            expected, panel = GEOMETRY.pack(weight.astype(dtype), groups, dtype, is_wide)
            packed, ours = pack(weight, groups, dtype, is_wide)
            assert ours == panel and packed.dtype == dtype and packed.ctypes.data % 64 == 0
            np.testing.assert_array_equal(packed, expected)
