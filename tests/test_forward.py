"""Forward correctness: every algorithm x dtype against the reference over one grid."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import dispatch, runtime
from fastconv.kernels.algorithms import supports

from helpers import (CASES, COMPILED_BACKENDS, DTYPES, KERNELS, F, assert_conv_close,
                     kernel_id, needs_torch, random_array, reference_conv, reference_grads,
                     spec_for, torch)

ALGORITHMS = KERNELS + [("numpy", "reference")]


def _arrays(rng, x_shape, w_shape, kwargs, dtype):
    kwargs = dict(kwargs)
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, (w_shape[0],), dtype) if kwargs.pop("bias", False) else None
    return x, w, b, kwargs


def _grid():
    for name, x_shape, w_shape, kwargs in CASES:
        x = np.empty(x_shape)
        w = np.empty(w_shape)
        spec = spec_for(x, w, None, **{k: v for k, v in kwargs.items() if k != "bias"})
        for backend, algorithm in ALGORITHMS:
            if supports(algorithm, spec) is None:
                yield pytest.param(backend, algorithm, x_shape, w_shape, kwargs,
                                   id=f"{kernel_id((backend, algorithm))}-{name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend, algorithm, x_shape, w_shape, kwargs", list(_grid()))
def test_grid_against_reference(backend, algorithm, x_shape, w_shape, kwargs, dtype):
    rng = np.random.default_rng(abs(hash((x_shape, w_shape))) % 2**32)
    x, w, b, kwargs = _arrays(rng, x_shape, w_shape, kwargs, dtype)
    y = fc.conv2d(x, w, b, **kwargs, algorithm=algorithm, backend=backend)
    assert_conv_close(y, *reference_conv(x, w, b, **kwargs), dtype)


def test_grid_covers_every_algorithm_on_most_cases():
    counts = {}
    for param in _grid():
        key = param.values[:2]
        counts[key] = counts.get(key, 0) + 1
    for backend in COMPILED_BACKENDS:
        assert counts[(backend, "direct")] == counts[(backend, "im2col")] == len(CASES)
        assert counts[(backend, "depthwise")] >= 14 and counts[(backend, "pointwise")] >= 6
    assert counts[("numpy", "reference")] == len(CASES)


@needs_torch
@pytest.mark.parametrize("name, x_shape, w_shape, kwargs", CASES, ids=[c[0] for c in CASES])
def test_reference_matches_torch(name, x_shape, w_shape, kwargs):
    rng = np.random.default_rng(1)
    x, w, b, kwargs = _arrays(rng, x_shape, w_shape, kwargs, np.float64)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                        None if b is None else torch.from_numpy(b), **kwargs).numpy()
    actual = fc.conv2d(x, w, b, **kwargs, backend="numpy")
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend, algorithm", KERNELS, ids=list(map(kernel_id, KERNELS)))
def test_kernels_match_torch_on_mobilenet_shapes(backend, algorithm, dtype):
    """The kernels against torch itself on layer shapes of MobileNet at a small resolution."""
    rng = np.random.default_rng(2)
    net = fc.models.mobilenet_v1(alpha=0.25, resolution=64, include_fc=False)
    tol = {np.float32: 2e-4, np.float64: 1e-10}[dtype]
    checked = 0
    for spec in net:
        if supports(algorithm, spec) is not None:
            continue
        x = random_array(rng, spec.input_shape(2), dtype)
        w = random_array(rng, spec.weight_shape, dtype)
        y = fc.conv2d(x, w, stride=spec.stride, padding=spec.padding, groups=spec.groups,
                      algorithm=algorithm, backend=backend)
        expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=spec.stride,
                            padding=spec.padding, groups=spec.groups).numpy()
        np.testing.assert_allclose(y, expected, rtol=tol, atol=tol * np.abs(expected).max())
        checked += 1
    assert checked > 0


def test_auto_picks_by_shape():
    select = dispatch.select
    assert select(fc.ConvSpec(8, 8, 3, groups=8, input_size=8))[1] == "depthwise"
    assert select(fc.ConvSpec(8, 16, 1, input_size=8))[1] == "pointwise"
    assert select(fc.ConvSpec(8, 16, 3, input_size=8))[1] in ("im2col", "direct")
    assert select(fc.ConvSpec(8, 16, 3, input_size=8), backend="numpy")[1] == "reference"
    # Winograd for a wide 3x3 layer with enough tiles (2x2 outputs each) per input channel
    wide = fc.ConvSpec(128, 128, 3, padding=1, input_size=56)  # 784 tiles
    assert select(wide)[1] == "winograd"
    if "cython" in dispatch.available_backends():
        assert select(wide, backend="cython")[1] == "im2col"  # no Winograd there
    deep = fc.ConvSpec(512, 512, 3, padding=1, input_size=14)  # 49 tiles per image
    assert select(deep)[1] == "im2col"
    assert select(deep, n_images=8)[1] == "winograd"
    assert select(fc.ConvSpec(64, 64, 3, padding=1, input_size=56))[1] == "im2col"
    assert select(fc.ConvSpec(128, 128, 3, stride=2, padding=1, input_size=56))[1] == "im2col"
    assert select(fc.ConvSpec(128, 128, 3, padding=1, groups=2, input_size=56))[1] == "im2col"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_auto_on_a_wide_layer_matches_the_reference(dtype):
    """A layer wide enough for "auto" to run Winograd (forward and input gradient) gives the
    reference's values, odd size and batch 2 included."""
    rng = np.random.default_rng(13)
    x = random_array(rng, (2, 96, 13, 15), dtype)
    w = random_array(rng, (8, 96, 3, 3), dtype)
    b = random_array(rng, (8,), dtype)
    spec = spec_for(x, w, b, padding=1)
    assert dispatch.select(spec, n_images=2)[1] == "winograd"
    y = fc.conv2d(x, w, b, padding=1)
    assert_conv_close(y, *reference_conv(x, w, b, padding=1), dtype)
    dy = random_array(rng, y.shape, dtype)
    grads = fc.conv2d_backward(dy, x, w, padding=1)
    for got, expected in zip(grads, reference_grads(dy, x, w, b, padding=1)):
        assert_conv_close(got, *expected, dtype)


# --- property test --------------------------------------------------------------------------


@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    cin_g = 1 if depthwise else draw(st.integers(1, 3))
    cout_g = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if stride == (1, 1) and draw(st.booleans()):
        padding = draw(st.sampled_from(["same", "valid"]))
        pads = [0, 0] if padding == "valid" else [d * (k - 1) for k, d in zip(kernel, dilation)]
    else:
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        pads = [2 * p for p in padding]
    # big enough for the dilated kernel after padding
    size = [max(1, d * (k - 1) + 1 - p) + draw(st.integers(0, 6))
            for k, d, p in zip(kernel, dilation, pads)]
    return dict(
        x_shape=(draw(st.integers(0, 2)), groups * cin_g, *size),
        w_shape=(groups * cout_g, cin_g, *kernel),
        kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    bias=draw(st.booleans())),
        dtype=draw(st.sampled_from(DTYPES)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_problems())
# a tap whose every position falls in the padding, at column stride 2 (once wrote into the
# column before its span)
@example(dict(x_shape=(2, 1, 1, 1), w_shape=(1, 1, 1, 3),
              kwargs=dict(stride=(1, 2), padding=(0, 2), dilation=(1, 2), groups=1, bias=False),
              dtype=np.float32, seed=0))
def test_property_all_algorithms_agree_with_reference(problem):
    rng = np.random.default_rng(problem["seed"])
    dtype = problem["dtype"]
    x, w, b, kwargs = _arrays(rng, problem["x_shape"], problem["w_shape"], problem["kwargs"],
                              dtype)
    expected, scale = reference_conv(x, w, b, **kwargs)
    spec = spec_for(x, w, b, **kwargs)
    for backend, algorithm in KERNELS:
        if supports(algorithm, spec) is None:
            y = fc.conv2d(x, w, b, **kwargs, algorithm=algorithm, backend=backend)
            assert_conv_close(y, expected, scale, dtype)


# --- conv1d, separable, unbatched -------------------------------------------------------------


def test_conv1d_full_convolution_worked_example():
    # the full convolution of (1, 2, 3, 4) with (1, 0, 2) is (1, 2, 5, 8, 6, 8): a correlation
    # with the flipped kernel and padding len(w) - 1
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, 0.0, 2.0]]])
    spec = fc.ConvSpec(1, 1, (1, 3), padding=(0, 2), input_size=(1, 4))
    for backend, algorithm in KERNELS:
        if supports(algorithm, spec) is not None:
            continue
        y = fc.conv1d(x, w[..., ::-1], padding=2, algorithm=algorithm, backend=backend)
        np.testing.assert_allclose(y[0, 0], [1, 2, 5, 8, 6, 8], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.convolve([1, 2, 3, 4], [1, 0, 2]), [1, 2, 5, 8, 6, 8])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kwargs", [
    dict(), dict(stride=2, padding=1, bias=True), dict(padding="same", dilation=2),
    dict(padding=(3,), dilation=(2,), groups=2), dict(padding="valid", stride=(3,)),
])
def test_conv1d_against_conv2d_of_height_one(kwargs, dtype):
    rng = np.random.default_rng(3)
    x, w, b, kwargs = _arrays(rng, (2, 4, 17), (6, 4 // kwargs.get("groups", 1), 3), kwargs,
                              dtype)
    y = fc.conv1d(x, w, b, **kwargs)
    two_d = {}
    for key, value in kwargs.items():  # the same call as a 2-D convolution of height 1
        if key == "groups" or isinstance(value, str):
            two_d[key] = value
        else:
            value = value[0] if isinstance(value, tuple) else value
            two_d[key] = (0, value) if key == "padding" else (1, value)
    expected, scale = reference_conv(x[:, :, None], w[:, :, None], b, **two_d)
    assert_conv_close(y, expected[:, :, 0], scale[:, :, 0], dtype)
    # unbatched input gives an unbatched output
    assert_conv_close(fc.conv1d(x[1], w, b, **kwargs), expected[1, :, 0], scale[1, :, 0], dtype)


@needs_torch
def test_conv1d_matches_torch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 15))
    w = rng.standard_normal((6, 2, 4))
    for kwargs in (dict(padding="same", dilation=2, groups=2), dict(stride=3, padding=2, groups=2)):
        expected = F.conv1d(torch.from_numpy(x), torch.from_numpy(w), **kwargs).numpy()
        np.testing.assert_allclose(fc.conv1d(x, w, **kwargs), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("multiplier, kwargs", [
    (1, dict(padding=1)), (2, dict(stride=2, padding=1, bias=True)),
    (1, dict(padding="same", dilation=2, bias=True)),
])
def test_separable_is_depthwise_then_pointwise(multiplier, kwargs, dtype):
    rng = np.random.default_rng(5)
    c_in, c_out = 3, 5
    x = random_array(rng, (2, c_in, 9, 8), dtype)
    dw = random_array(rng, (c_in * multiplier, 1, 3, 3), dtype)
    pw = random_array(rng, (c_out, c_in * multiplier, 1, 1), dtype)
    kwargs = dict(kwargs)
    b = random_array(rng, (c_out,), dtype) if kwargs.pop("bias", False) else None
    y = fc.separable_conv2d(x, dw, pw, b, **kwargs)
    hidden = fc.conv2d(x.astype(np.float64), dw.astype(np.float64), groups=c_in, **kwargs,
                       backend="numpy")
    hidden_scale = fc.conv2d(np.abs(x).astype(np.float64), np.abs(dw).astype(np.float64),
                             groups=c_in, **kwargs, backend="numpy")
    expected, _ = reference_conv(hidden, pw.astype(np.float64), b)
    scale, _ = reference_conv(hidden_scale, np.abs(pw).astype(np.float64),
                              None if b is None else np.abs(b))
    assert_conv_close(y, expected, scale, dtype)


def test_unbatched_input_gives_unbatched_output():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 8, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    y = fc.conv2d(x, w, padding=1)
    assert y.shape == (4, 8, 7)
    np.testing.assert_allclose(y, fc.conv2d(x[None], w, padding=1)[0], rtol=1e-12)


# --- layouts ----------------------------------------------------------------------------------


def _layouts(a):
    """The same values in awkward memory layouts (name, array)."""
    fortran = np.asfortranarray(a)
    flipped = np.flip(np.ascontiguousarray(np.flip(a)))  # negative strides on every axis
    spaced = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)[..., ::2]  # non-contiguous
    spaced[...] = a
    readonly = a.copy()
    readonly.flags.writeable = False
    swapped = a.astype(a.dtype.newbyteorder(">"))  # non-native byte order
    return [("fortran", fortran), ("negative strides", flipped), ("non-contiguous", spaced),
            ("read-only", readonly), ("big-endian", swapped)]


LAYOUT_CASES = {
    "direct": ("groups2", (2, 4, 7, 7), (6, 2, 3, 3), dict(groups=2, padding=1, bias=True)),
    "im2col": ("stride2", (2, 3, 9, 8), (4, 3, 3, 3), dict(stride=2, padding=1, bias=True)),
    "depthwise": ("dw", (2, 4, 9, 8), (8, 1, 3, 3), dict(groups=4, padding=1, bias=True)),
    "pointwise": ("1x1", (2, 5, 6, 7), (3, 5, 1, 1), dict(bias=True)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", sorted(LAYOUT_CASES))
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_awkward_layouts_give_the_same_result(backend, algorithm, dtype):
    _, x_shape, w_shape, kwargs = LAYOUT_CASES[algorithm]
    rng = np.random.default_rng(7)
    x, w, b, kwargs = _arrays(rng, x_shape, w_shape, kwargs, dtype)
    expected = fc.conv2d(x, w, b, **kwargs, algorithm=algorithm, backend=backend)
    assert_conv_close(expected, *reference_conv(x, w, b, **kwargs), dtype)
    for (name, x2), (_, w2), (_, b2) in zip(_layouts(x), _layouts(w), _layouts(b)):
        for args in ((x2, w, b), (x, w2, b), (x, w, b2), (x2, w2, b2)):
            y = fc.conv2d(*args, **kwargs, algorithm=algorithm, backend=backend)
            assert y.dtype == np.dtype(dtype), name
            np.testing.assert_array_equal(y, expected, err_msg=name)
    assert x.flags.writeable  # inputs are never modified nor frozen


def test_inputs_are_not_modified():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 4, 6, 6))
    w = rng.standard_normal((4, 1, 3, 3))
    b = rng.standard_normal(4)
    copies = [a.copy() for a in (x, w, b)]
    for algorithm in ("direct", "im2col", "depthwise"):
        fc.conv2d(x, w, b, padding=1, groups=4, algorithm=algorithm)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


# --- NaN and Inf --------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("backend, algorithm", KERNELS, ids=list(map(kernel_id, KERNELS)))
def test_nan_and_inf_propagate_as_in_torch(backend, algorithm):
    rng = np.random.default_rng(9)
    kernel = 1 if algorithm == "pointwise" else 3
    groups = 4 if algorithm == "depthwise" else 1
    x = rng.standard_normal((1, 4, 6, 7))
    w = rng.standard_normal((4, 4 // groups, kernel, kernel))
    x[0, 1, 2, 3] = np.nan
    x[0, 2, 0, 0] = np.inf
    w_inf = w.copy()
    w_inf[1, 0, 0, 0] = -np.inf  # Inf times the zero padding is NaN in torch
    for weight in (w, w_inf):
        for padding in (0, 1):
            y = fc.conv2d(x, weight, padding=padding, groups=groups, algorithm=algorithm,
                          backend=backend)
            expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding=padding,
                                groups=groups).numpy()
            np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
            np.testing.assert_array_equal(np.isposinf(y), np.isposinf(expected))
            np.testing.assert_array_equal(np.isneginf(y), np.isneginf(expected))
            finite = np.isfinite(expected)
            np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-10, atol=1e-10)


# --- threads and workspace ------------------------------------------------------------------------


def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(10)
    problems = []
    for backend in COMPILED_BACKENDS:
        for algorithm, (_, x_shape, w_shape, kwargs) in sorted(LAYOUT_CASES.items()):
            x, w, b, kw = _arrays(rng, x_shape, w_shape, kwargs, np.float64)
            kw = dict(kw, algorithm=algorithm, backend=backend)
            problems.append((x, w, b, kw, fc.conv2d(x, w, b, **kw)))
    failures = []

    def worker():
        try:
            for _ in range(20):
                for x, w, b, kw, expected in problems:
                    y = fc.conv2d(x, w, b, **kw)
                    np.testing.assert_array_equal(y, expected)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]


def test_numba_runs_on_the_tbb_wheel_when_it_is_installed():
    # pip puts libtbb in <prefix>/lib, where the loader does not look; fastconv loads it
    installed = bool(runtime.pip_tbb_libraries())
    if not installed or os.environ.get("NUMBA_THREADING_LAYER", "") not in ("", "tbb"):
        pytest.skip("no tbb wheel in this environment, or another threading layer was asked for")
    assert runtime.numba_threading_layer() == "tbb"


_SPIN_PROBE = """
import os, {first}
import fastconv
from fastconv import runtime
from fastconv.bench import machine
print(runtime.OPENBLAS_IDLE_SPIN, machine.measure_blas_spin_ms(0.2),
      os.environ.get("OPENBLAS_THREAD_TIMEOUT"), sep="|")
"""


@pytest.mark.parametrize("first, timeout, chosen_by, spins", [
    ("fastconv", None, "fastconv", False),
    ("numpy", None, "numpy first", True),  # too late: OpenBLAS's default of about 0.1 s
    ("fastconv", "28", "environment", True),  # the user's value wins
])
def test_numpys_blas_threads_spin_briefly_when_fastconv_loads_numpy(first, timeout, chosen_by,
                                                                   spins):
    import subprocess
    import sys

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: OpenBLAS starts no worker threads")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    if timeout:
        env["OPENBLAS_THREAD_TIMEOUT"] = timeout
    out = subprocess.run([sys.executable, "-c", _SPIN_PROBE.format(first=first)], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    source, busy_ms, left_in_environment = out.strip().split("|")
    assert source == chosen_by
    # CPU burnt by the idle workers in the 200 ms after a GEMM
    assert (float(busy_ms) > 30) if spins else (float(busy_ms) < 20), busy_ms
    assert left_in_environment == (timeout or "None")  # set only while numpy loaded


def _convolve_in_child(queue, x, w, expected):
    y = fc.conv2d(x, w, padding=1, groups=x.shape[1], algorithm="depthwise", backend="numba")
    queue.put(float(np.abs(y - expected).max()))


def test_a_forked_process_can_convolve_after_the_parent_did():
    # GNU OpenMP's pool does not survive fork (Numba kills the child); TBB's does
    import multiprocessing

    if runtime.numba_threading_layer() != "tbb":
        pytest.skip("Numba's OpenMP layer is not fork-safe")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 64, 112, 112)).astype(np.float32)  # big enough for threads
    w = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    expected = fc.conv2d(x, w, padding=1, groups=64, algorithm="depthwise", backend="numba")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_convolve_in_child, args=(queue, x, w, expected))
    child.start()
    child.join(60)
    if child.is_alive():  # hung: do not leave it behind
        child.kill()
        child.join()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 0.0


@pytest.mark.parametrize("algorithm, w_shape, kwargs", [
    ("im2col", (8, 6, 3, 3), dict(stride=2, padding=1, dilation=2, bias=True)),
    ("im2col", (6, 3, 3, 2), dict(groups=2, padding=(1, 2))),
    ("pointwise", (5, 6, 1, 1), dict(stride=2, padding=1)),
    ("winograd", (5, 6, 3, 3), dict(padding=1, bias=True)),
])
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_workspace_budget_tiles_without_changing_the_result(backend, algorithm, w_shape,
                                                            kwargs):
    if algorithm not in dispatch.algorithms(backend):
        pytest.skip(f"no {algorithm} on {backend}")
    rng = np.random.default_rng(11)
    x, w, b, kwargs = _arrays(rng, (2, 6, 13, 11), w_shape, kwargs, np.float64)
    expected, scale = reference_conv(x, w, b, **kwargs)
    for budget in (1, 200, 1000, 4096):  # 1 byte: one column per tile
        with fc.config.workspace_budget(budget):
            y = fc.conv2d(x, w, b, **kwargs, algorithm=algorithm, backend=backend)
            # the backward tiles the same way
            gi, gw, _ = fc.conv2d_backward(np.ones_like(y), x, w, **kwargs, algorithm=algorithm,
                                           backend=backend)
            gi_ref, gw_ref, _ = fc.conv2d_backward(np.ones_like(y), x, w, **kwargs,
                                                   backend="numpy")
        assert_conv_close(y, expected, scale, np.float64)
        np.testing.assert_allclose(gi, gi_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gw, gw_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("algorithm", ["im2col", "winograd"])
def test_workspace_stays_within_budget(algorithm):
    import tracemalloc

    from fastconv import workspace

    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 32, 64, 64)).astype(np.float32)
    w = rng.standard_normal((16, 32, 3, 3)).astype(np.float32)
    full_columns = 32 * 9 * 64 * 64 * 4  # 4.7 MB (Winograd's V and M: 3.1 MB)
    budget = full_columns // 10
    fc.conv2d(x, w, padding=1, algorithm=algorithm)  # compile outside the measurement
    with fc.config.workspace_budget(budget):
        workspace.release()
        tracemalloc.start()
        y = fc.conv2d(x, w, padding=1, algorithm=algorithm)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= budget + y.nbytes + 64 * 1024, (peak, budget, y.nbytes)
