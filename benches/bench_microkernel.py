"""The network plan's own kernels against the libraries', on MobileNet v1's shapes.

The plan computes its GEMMs with register tiles of its own (``kernels/numba/microkernel.py``)
instead of BLAS; these benchmarks are what justifies that (and re-measure the tile settings of
``kernels/tuning.py``):

    pytest benches/bench_microkernel.py --benchmark-only
    pytest benches/bench_microkernel.py -k gemm --benchmark-only       # tiles against OpenBLAS
    pytest benches/bench_microkernel.py -k tile_shape --benchmark-only # narrow against wide
    pytest benches/bench_microkernel.py -k prefetch --benchmark-only   # GEMM_PREFETCH
    pytest benches/bench_microkernel.py -k depthwise --benchmark-only  # the 3x3 row
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastconv as fc
from fastconv.kernels import tuning
from fastconv.kernels.epilogue import CLAMP
from fastconv.kernels.numba.microkernel import depthwise_block, tile_shape
from fastconv.kernels.numba.nhwc import conv as conv_module
from fastconv.kernels.numba.nhwc.conv import conv, schedule, wide
from fastconv.kernels.numba.nhwc.depthwise import depthwise_3x3
from fastconv.models import layer_names
from fastconv.network.step_args import Conv, Depthwise3x3

NET = fc.models.mobilenet_v1(include_fc=False)
POINTWISE = [(n, s) for n, s in zip(layer_names(NET), NET) if s.kind == "pw"]
DEPTHWISE = [(n, s) for n, s in zip(layer_names(NET), NET) if s.kind == "dw"]
F = np.float32


def _gemm(spec, variant=None, kernel=conv, batch=1):
    """The pointwise layer's GEMM as the plan runs it: NHWC input, ReLU epilogue."""
    pixels = batch * spec.input_size[0] * spec.input_size[1]
    k, n = spec.in_channels, spec.out_channels
    rng = np.random.default_rng(0)
    x = rng.standard_normal(pixels * k).astype(F)
    weight = rng.standard_normal((n, k, 1, 1)).astype(F)
    threads = fc.config.get_num_threads()
    is_wide = wide(pixels, k, n, 1, F, threads) if variant is None else variant == "wide"
    mr, nr = tile_shape(F, is_wide)
    w = np.zeros((-(-n // nr) * nr, k), F)
    w[:n] = weight[:, :, 0, 0]
    packed = np.ascontiguousarray(w.reshape(-1, nr, k).transpose(0, 2, 1)).reshape(-1)
    rows = np.arange(pixels, dtype=np.int64) * k
    out_rows = np.arange(pixels, dtype=np.int64) * n
    out = np.empty(pixels * n, F)
    grid = schedule(pixels, k, n, 1, F, threads, is_wide)
    bias = np.zeros(n, F)
    taps = np.zeros(1, np.int64)
    border = np.array([pixels, 1, 1, n, 0, 0, 0, 0], np.int64)  # no border to zero
    args = Conv(x=x, rows=rows, taps=taps, c_in=k, groups=1, w=packed, panel=k * nr, out=out,
                out_rows=out_rows, out_per_group=n, bias=bias, has_bias=True, kind=CLAMP,
                lo=F(0), hi=F(np.inf), alpha=F(0), beta=F(0), res=out, res_rows=out_rows,
                res_mode=0, wide=is_wide, mr=mr, nr=nr, **grid._asdict(), out_border=border)
    return lambda: kernel(*args)


def _cython_gemm(spec):
    """The same GEMM on the Cython plan's tile (``kernels/cython/_plan_kernels_t.h``), as
    one step of a program, between a trivial input and output step."""
    from fastconv.kernels.cython import plan
    from fastconv.network import cython_executor as cy

    pixels, k, n = spec.input_size[0] * spec.input_size[1], spec.in_channels, spec.out_channels
    rng = np.random.default_rng(0)
    x = rng.standard_normal(pixels * k).astype(F)
    threads = cy.max_threads()
    is_wide = cy.wide(pixels, k, n, 1, F, threads)
    mr, nr = cy.tile_shape(F, is_wide)
    packed, panel = cy.pack(rng.standard_normal((n, k, 1, 1)).astype(F), 1, F, is_wide)
    rows, out_rows = np.arange(pixels, dtype=np.int64) * k, np.arange(pixels, dtype=np.int64) * n
    out = np.empty(pixels * n, F)
    step = plan.conv(*Conv(
        x=x, rows=rows, taps=np.zeros(1, np.int64), c_in=k, groups=1, w=packed, panel=panel,
        out=out, out_rows=out_rows, out_per_group=n, bias=np.zeros(n, F), has_bias=True,
        kind=CLAMP, lo=F(0), hi=F(np.inf), alpha=F(0), beta=F(0), res=out, res_rows=out_rows,
        res_mode=0, wide=is_wide, mr=mr, nr=nr,
        **cy.schedule(pixels, k, n, 1, F, threads, is_wide)._asdict(),
        out_border=np.array([pixels, 1, 1, n, 0, 0, 0, 0], np.int64)))
    one = np.zeros((1, 1, 1, 1), F)
    edge = np.array([1, 1, 1, 1, 0, 0, 0, 0], np.int64)
    program = plan.Program([plan.from_nchw(None, one, 0, 0, edge, 1), step,
                            plan.to_output(one, 0, 0, (1, 1, 1, 1), False, 1)], threads,
                           (1, 1, 1, 1), (1, 1, 1, 1), F)
    x0, y0 = np.zeros((1, 1, 1, 1), F), np.empty((1, 1, 1, 1), F)
    return lambda: program.run(x0, y0)


def _group(benchmark, name, layer, spec):
    benchmark.group = f"{name} {layer} {spec.in_channels}->{spec.out_channels} at " \
                      f"{spec.input_size[0]}x{spec.input_size[1]}"


@pytest.mark.parametrize("impl", ["tile", "cython-tile", "numpy"])
@pytest.mark.parametrize("layer, spec", POINTWISE, ids=[n for n, _ in POINTWISE])
def test_gemm(benchmark, layer, spec, impl):
    """The plan's tile, on Numba and on Cython (bias and ReLU included), against numpy's
    matmul (OpenBLAS, neither)."""
    if impl == "tile":
        call = _gemm(spec)
    elif impl == "cython-tile":
        pytest.importorskip("fastconv.kernels.cython.plan")
        call = _cython_gemm(spec)
    else:
        pixels = spec.input_size[0] * spec.input_size[1]
        rng = np.random.default_rng(0)
        a = rng.standard_normal((pixels, spec.in_channels)).astype(F)
        b = rng.standard_normal((spec.in_channels, spec.out_channels)).astype(F)
        out = np.empty((pixels, spec.out_channels), F)
        call = lambda: np.matmul(a, b, out=out)  # noqa: E731
    call()
    _group(benchmark, "gemm", layer, spec)
    benchmark(call)


@pytest.mark.parametrize("variant", ["narrow", "wide"])
@pytest.mark.parametrize("layer, spec", POINTWISE, ids=[n for n, _ in POINTWISE])
def test_tile_shape(benchmark, layer, spec, variant):
    """GEMM_TILE against GEMM_TILE_WIDE on every pointwise layer."""
    call = _gemm(spec, variant)
    call()
    _group(benchmark, "tile shape", layer, spec)
    benchmark(call)


@pytest.mark.parametrize("distance", [0, 256, 512, 1024, 2048])
@pytest.mark.parametrize("layer, spec", POINTWISE[::4], ids=[n for n, _ in POINTWISE[::4]])
def test_prefetch(benchmark, monkeypatch, layer, spec, distance):
    """GEMM_PREFETCH: the tile is compiled afresh for each distance (the cache holds one)."""
    monkeypatch.setattr(tuning, "GEMM_PREFETCH", distance)
    fresh = numba.njit(parallel=True, cache=False, nogil=True, boundscheck=False,
                       error_model="numpy")(conv_module.conv.py_func)
    call = _gemm(spec, kernel=fresh)
    call()
    _group(benchmark, "prefetch", layer, spec)
    benchmark(call)


@pytest.mark.parametrize("impl", ["plan", "per-call"])
@pytest.mark.parametrize("layer, spec", DEPTHWISE, ids=[n for n, _ in DEPTHWISE])
def test_depthwise(benchmark, layer, spec, impl):
    """The plan's 3x3 row (NHWC, bordered, ReLU) against the per-call depthwise (NCHW)."""
    (h, w), c = spec.input_size, spec.in_channels
    ho, wo = spec.output_size
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((c, 1, 3, 3)).astype(F)
    if impl == "plan":
        x = rng.standard_normal((1, h + 2, w + 2, c)).astype(F)
        out = np.empty((1, ho, wo, c), F)
        w9 = np.ascontiguousarray(weight.reshape(c, 9).T)
        s = spec.stride[0]
        block = depthwise_block(F)
        threads = fc.config.get_num_threads()
        border = np.array([1, ho, wo, c, 0, 0, 0, 0], np.int64)  # no border to zero
        args = Depthwise3x3(x=x, top=0, left=0, w=w9, bias=np.zeros(c, F), out=out, out_top=0,
                            out_left=0, ho=ho, wo=wo, sh=s, sw=s, dh=1, dw=1, kind=CLAMP,
                            lo=F(0), hi=F(np.inf), alpha=F(0), beta=F(0), block=block,
                            out_border=border, tasks=threads)
        call = lambda: depthwise_3x3(*args)  # noqa: E731
    else:
        x = rng.standard_normal((1, c, h, w)).astype(F)
        call = lambda: fc.conv2d(x, weight, None, spec.stride, 1, 1, c)  # noqa: E731
    call()
    benchmark.group = f"depthwise {layer} {c}x{h}x{w} stride {spec.stride[0]}"
    benchmark(call)
