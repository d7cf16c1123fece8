"""Backward: finite differences, the reference over the forward's grid, torch autograd."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import fastconv as fc
from fastconv import dispatch
from fastconv.kernels import tiling, tuning
from fastconv.kernels.algorithms import reads_whole_input, supports
from fastconv.kernels.depthwise_paths import is_channel_scale

from helpers import (CASES, COMPILED_BACKENDS, DTYPES, KERNELS, F, assert_conv_close,
                     kernel_id, needs_torch, random_array, reference_conv, reference_grads,
                     spec_for, torch)
from test_forward import LAYOUT_CASES, _arrays, _layouts, conv_problems



def _supported(algorithm, spec, backend="numba"):
    return supports(algorithm, spec) is None


def _grad_problem(rng, x_shape, w_shape, kwargs, dtype):
    x, w, b, kwargs = _arrays(rng, x_shape, w_shape, kwargs, dtype)
    out_shape = fc.conv2d(x, w, b, **kwargs, backend="numpy").shape
    return x, w, b, kwargs, random_array(rng, out_shape, dtype)


# --- finite differences ---------------------------------------------------------------------

FD_CASES = [
    ("3x3 stride2 pad1 bias", (2, 3, 6, 5), (4, 3, 3, 3), dict(stride=2, padding=1, bias=True)),
    ("groups dilation", (1, 4, 7, 6), (4, 2, 2, 3), dict(groups=2, dilation=(2, 1), padding=1,
                                                         bias=True)),
    ("dw 3x3 s2 multiplier", (1, 2, 7, 7), (4, 1, 3, 3), dict(groups=2, stride=2, padding=1,
                                                              bias=True)),
    ("dw 3x3 dilation2 same", (2, 2, 6, 7), (2, 1, 3, 3), dict(groups=2, padding="same",
                                                               dilation=2, bias=True)),
    ("1x1", (2, 3, 4, 5), (2, 3, 1, 1), dict(bias=True)),
    ("1x1 strided", (1, 3, 5, 5), (2, 3, 1, 1), dict(stride=2, padding=1, bias=True)),
]


def _fd_cases():
    for name, x_shape, w_shape, kwargs in FD_CASES:
        spec = spec_for(np.empty(x_shape), np.empty(w_shape), None,
                        **{k: v for k, v in kwargs.items() if k != "bias"})
        for backend, algorithm in KERNELS:
            if _supported(algorithm, spec, backend):
                yield pytest.param(backend, algorithm, x_shape, w_shape, kwargs,
                                   id=f"{kernel_id((backend, algorithm))}-{name}")


@pytest.mark.parametrize("backend, algorithm, x_shape, w_shape, kwargs", list(_fd_cases()))
def test_central_finite_differences(backend, algorithm, x_shape, w_shape, kwargs):
    """d/dt sum(R * conv(x + t e)) by central differences, for every entry of x, w and b.

    The loss is linear in each argument, so the difference quotient is exact up to rounding."""
    rng = np.random.default_rng(20)
    x, w, b, kwargs, probe = _grad_problem(rng, x_shape, w_shape, kwargs, np.float64)

    def loss(x_, w_, b_):
        return float(np.sum(probe * fc.conv2d(x_, w_, b_, **kwargs, algorithm=algorithm,
                                              backend=backend)))

    grads = fc.conv2d_backward(probe, x, w, **kwargs, algorithm=algorithm, backend=backend)
    h = 1e-3
    for which, (array, grad) in enumerate(zip((x, w, b), grads)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            args = [x, w, b]
            plus, minus = array.copy(), array.copy()
            plus[index] += h
            minus[index] -= h
            args[which] = plus
            up = loss(*args)
            args[which] = minus
            numeric[index] = (up - loss(*args)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-9,
                                   err_msg=["grad_input", "grad_weight", "grad_bias"][which])


# --- the grid -------------------------------------------------------------------------------


def _grid():
    for name, x_shape, w_shape, kwargs in CASES:
        spec = spec_for(np.empty(x_shape), np.empty(w_shape), None,
                        **{k: v for k, v in kwargs.items() if k != "bias"})
        for backend, algorithm in KERNELS + [("numpy", "reference")]:
            if _supported(algorithm, spec, backend):
                yield pytest.param(backend, algorithm, x_shape, w_shape, kwargs,
                                   id=f"{kernel_id((backend, algorithm))}-{name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend, algorithm, x_shape, w_shape, kwargs", list(_grid()))
def test_grid_against_reference(backend, algorithm, x_shape, w_shape, kwargs, dtype):
    rng = np.random.default_rng(abs(hash((x_shape, w_shape, "grad"))) % 2**32)
    x, w, b, kwargs, dy = _grad_problem(rng, x_shape, w_shape, kwargs, dtype)
    grads = fc.conv2d_backward(dy, x, w, **kwargs, algorithm=algorithm, backend=backend,
                               bias=b is not None)
    expected = reference_grads(dy, x, w, b, **kwargs)
    for got, (value, scale) in zip(grads[:2], expected[:2]):
        assert_conv_close(got, value, scale, dtype)
    if b is None:
        assert grads[2] is None
    else:
        assert_conv_close(grads[2], *expected[2], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("budget", [None, 20000], ids=["one tile", "tiles"])
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_im2col_weight_gradient_in_chunks_of_pixels(monkeypatch, backend, budget, dtype):
    # A small gradient over many pixels is summed chunk by chunk (tiling.gradient_chunk). A low
    # threshold sends this small layer there: chunks of 36 pixels, a ragged last one, and
    # with the budget a last tile too short to split.
    monkeypatch.setattr(tuning, "SMALL_GEMM", 2000)
    rng = np.random.default_rng(7)
    x, w, b, kwargs, dy = _grad_problem(rng, (3, 4, 13, 11), (6, 2, 3, 3),
                                        dict(groups=2, stride=2, padding=1), dtype)
    assert tiling.gradient_chunk(3, 18, 126) == 36
    with fc.config.workspace_budget(budget or fc.config.get_workspace_budget()):
        _, grad_weight, _ = fc.conv2d_backward(dy, x, w, **kwargs, algorithm="im2col",
                                               backend=backend, needs=("weight",))
    assert_conv_close(grad_weight, *reference_grads(dy, x, w, None, **kwargs)[1], dtype)


SMALL_IMAGES = [  # batches whose weight outweighs an image (tiling.batch_small_images), or
    # whose one output pixel reads the whole input (algorithms.reads_whole_input)
    ("1x1 one pixel", "pointwise", (5, 8, 1, 1), (6, 8, 1, 1), dict(bias=True)),
    ("1x1 one pixel one image", "pointwise", (1, 8, 1, 1), (6, 8, 1, 1), {}),
    ("1x1 one pixel groups", "pointwise", (4, 8, 1, 1), (6, 4, 1, 1), dict(groups=2)),
    ("1x1 one pixel strided", "pointwise", (3, 8, 1, 1), (6, 8, 1, 1), dict(stride=2)),
    ("1x1 three pixels", "pointwise", (4, 8, 1, 3), (6, 8, 1, 1), {}),  # the weight's gradient
    ("1x1 strided", "pointwise", (5, 8, 2, 2), (6, 8, 1, 1), dict(stride=2)),
    ("3x3 pad1 on 2x2", "im2col", (4, 8, 2, 2), (6, 8, 3, 3), dict(padding=1, bias=True)),
    ("2x2 stride2 groups", "im2col", (3, 8, 2, 3), (6, 4, 2, 2), dict(stride=2, groups=2)),
    ("kernel the input's size", "im2col", (4, 3, 2, 3), (5, 3, 2, 3), dict(bias=True)),
    ("kernel the input's size groups", "im2col", (3, 4, 3, 2), (6, 2, 3, 2),
     dict(stride=2, groups=2)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("name, algorithm, x_shape, w_shape, kwargs", SMALL_IMAGES,
                         ids=[c[0] for c in SMALL_IMAGES])
def test_small_images_side_by_side(name, algorithm, x_shape, w_shape, kwargs, backend, dtype):
    """A batch of small images runs one GEMM over them side by side (one pixel each, or one
    pixel reading the whole image: the batch's own matrix), forward and backward, in one tile
    or in tiles that split an image."""
    rng = np.random.default_rng(23)
    x, w, b, kwargs, dy = _grad_problem(rng, x_shape, w_shape, kwargs, dtype)
    spec = spec_for(x, w, b, **kwargs)
    assert reads_whole_input(spec) or tiling.batch_small_images(spec, x.shape[0])
    expected = reference_grads(dy, x, w, b, **kwargs)
    rows = spec.in_channels * spec.kernel_size[0] * spec.kernel_size[1]
    pixels = spec.output_size[0] * spec.output_size[1]
    # the whole batch in one tile; tiles of an image and a half, but for one-pixel images
    split = (pixels + pixels // 2 + 1) * (rows + spec.out_channels) * x.itemsize
    for budget in (None, split):
        with fc.config.workspace_budget(budget or fc.config.get_workspace_budget()):
            y = fc.conv2d(x, w, b, **kwargs, algorithm=algorithm, backend=backend)
            grads = fc.conv2d_backward(dy, x, w, **kwargs, algorithm=algorithm,
                                       backend=backend, bias=b is not None)
        assert_conv_close(y, *reference_conv(x, w, b, **kwargs), dtype)
        for got, (value, scale) in zip(grads, expected[:2 if b is None else 3]):
            assert_conv_close(got, value, scale, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("x_shape, w_shape, bias", [
    ((5, 6, 1, 1), (6, 1, 1, 1), True),  # a 3x3 layer's live tap on 1x1 images
    ((3, 4, 3, 2), (8, 1, 1, 1), False),  # multiplier 2, planes of six pixels
    ((0, 4, 2, 2), (4, 1, 1, 1), True),  # no images
], ids=["one pixel", "multiplier 2", "no images"])
def test_depthwise_1x1_is_a_scale_per_channel(x_shape, w_shape, bias, backend, dtype):
    rng = np.random.default_rng(24)
    kwargs = dict(groups=x_shape[1], bias=bias)
    x, w, b, kwargs, dy = _grad_problem(rng, x_shape, w_shape, kwargs, dtype)
    assert is_channel_scale(spec_for(x, w, b, **kwargs))
    y = fc.conv2d(x, w, b, **kwargs, algorithm="depthwise", backend=backend)
    grads = fc.conv2d_backward(dy, x, w, **kwargs, algorithm="depthwise", backend=backend,
                               bias=bias)
    assert_conv_close(y, *reference_conv(x, w, b, **kwargs), dtype)
    expected = reference_grads(dy, x, w, b, **kwargs)[:3 if bias else 2]
    for got, (value, scale) in zip(grads, expected):
        assert_conv_close(got, value, scale, dtype)


def test_reads_whole_input():
    def spec(kernel, size, **kwargs):
        return fc.ConvSpec(4, 6, kernel, input_size=size, **kwargs)
    assert reads_whole_input(spec(1, (1, 1), stride=2, dilation=3))
    assert reads_whole_input(spec((2, 3), (2, 3), groups=2))
    assert not reads_whole_input(spec(1, (1, 2)))  # two output pixels
    assert not reads_whole_input(spec(3, (1, 1), padding=1))  # one pixel, of padding mostly
    assert not reads_whole_input(spec(1, (2, 2), stride=2))  # one pixel of four read
    assert not reads_whole_input(spec(2, (3, 3), dilation=2))  # every other pixel read


def test_gradient_chunks_only_split_small_gradients_over_long_products():
    assert tiling.gradient_chunk(32, 27, 12544) == 1156  # MobileNet's first layer
    assert tiling.gradient_chunk(32, 27, 2000) == 2000  # too short to split
    assert tiling.gradient_chunk(64, 32, 12544) == 12544  # a gradient of 2048 values


@needs_torch
@pytest.mark.parametrize("name, x_shape, w_shape, kwargs", CASES, ids=[c[0] for c in CASES])
def test_reference_gradients_match_torch_autograd(name, x_shape, w_shape, kwargs):
    rng = np.random.default_rng(21)
    x, w, b, kwargs, dy = _grad_problem(rng, x_shape, w_shape, kwargs, np.float64)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    F.conv2d(xt, wt, bt, **kwargs).backward(torch.from_numpy(dy))
    gi, gw, gb = fc.conv2d_backward(dy, x, w, **kwargs, bias=b is not None, backend="numpy")
    np.testing.assert_allclose(gi, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    if b is not None:
        np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend, algorithm", KERNELS, ids=list(map(kernel_id, KERNELS)))
def test_gradients_match_torch_on_mobilenet_shapes(backend, algorithm, dtype):
    rng = np.random.default_rng(22)
    tol = {np.float32: 3e-4, np.float64: 1e-10}[dtype]
    checked = 0
    for spec in fc.models.mobilenet_v1(alpha=0.25, resolution=64, include_fc=False):
        if not _supported(algorithm, spec, backend):
            continue
        x = random_array(rng, spec.input_shape(2), dtype)
        w = random_array(rng, spec.weight_shape, dtype)
        xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        y = F.conv2d(xt, wt, None, spec.stride, spec.padding, spec.dilation, spec.groups)
        dy = random_array(rng, tuple(y.shape), dtype)
        y.backward(torch.from_numpy(dy))
        gi, gw, gb = fc.conv2d_backward(dy, x, w, spec.stride, spec.padding, spec.dilation,
                                        spec.groups, bias=False, algorithm=algorithm,
                                        backend=backend)
        assert gb is None
        for ours, theirs in ((gi, xt.grad.numpy()), (gw, wt.grad.numpy())):
            np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * np.abs(theirs).max())
        checked += 1
    assert checked > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_problems())
def test_property_gradients_agree_with_reference(problem):
    rng = np.random.default_rng(problem["seed"])
    dtype = problem["dtype"]
    x, w, b, kwargs, dy = _grad_problem(rng, problem["x_shape"], problem["w_shape"],
                                        problem["kwargs"], dtype)
    expected = reference_grads(dy, x, w, b, **kwargs)
    spec = spec_for(x, w, b, **kwargs)
    for backend, algorithm in KERNELS:
        if _supported(algorithm, spec, backend):
            grads = fc.conv2d_backward(dy, x, w, **kwargs, bias=b is not None,
                                       algorithm=algorithm, backend=backend)
            for got, (value, scale) in zip(grads, expected):
                if got is not None:
                    assert_conv_close(got, value, scale, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algorithm", sorted(LAYOUT_CASES))
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_awkward_layouts(backend, algorithm, dtype):
    _, x_shape, w_shape, kwargs = LAYOUT_CASES[algorithm]
    rng = np.random.default_rng(23)
    x, w, b, kwargs, dy = _grad_problem(rng, x_shape, w_shape, kwargs, dtype)
    kwargs = dict(kwargs, algorithm=algorithm, backend=backend)
    expected = fc.conv2d_backward(dy, x, w, **kwargs)
    for (name, x2), (_, w2), (_, dy2) in zip(_layouts(x), _layouts(w), _layouts(dy)):
        got = fc.conv2d_backward(dy2, x2, w2, **kwargs)
        for g, e in zip(got, expected):
            assert g.dtype == np.dtype(dtype), name
            np.testing.assert_array_equal(g, e, err_msg=name)


# --- needs, zero gradients, torch.nn.grad ----------------------------------------------------


@pytest.mark.parametrize("needs", [(), ("input",), ("weight",), ("bias",), ("input", "bias"),
                                   "weight", ("input", "weight", "bias")])
def test_needs_returns_exactly_what_was_asked(needs):
    rng = np.random.default_rng(24)
    x, w, b, kwargs, dy = _grad_problem(rng, (2, 3, 6, 6), (4, 3, 3, 3), dict(padding=1),
                                        np.float64)
    full = fc.conv2d_backward(dy, x, w, padding=1)
    got = fc.conv2d_backward(dy, x, w, padding=1, needs=needs)
    asked = {needs} if isinstance(needs, str) else set(needs)
    for name, g, f in zip(("input", "weight", "bias"), got, full):
        if name in asked:
            np.testing.assert_array_equal(g, f)
        else:
            assert g is None
    assert fc.conv2d_backward(dy, x, w, padding=1, bias=False)[2] is None


@pytest.mark.parametrize("backend, algorithm", KERNELS + [("numpy", "reference")],
                         ids=list(map(kernel_id, KERNELS + [("numpy", "reference")])))
def test_pixels_no_output_reads_get_exactly_zero(backend, algorithm):
    # stride 3 on 8 columns: a 2-wide kernel reads columns 0-1, 3-4, 6-7 and never 2 or 5
    x = np.ones((1, 1, 4, 8))
    w = np.ones((1, 1, 1, 2)) if algorithm != "pointwise" else np.ones((1, 1, 1, 1))
    if not _supported(algorithm, spec_for(x, w, stride=(1, 3)), backend):
        pytest.skip(f"{algorithm} does not serve a {w.shape[2:]} kernel at stride (1, 3)")
    y = fc.conv2d(x, w, stride=(1, 3), algorithm=algorithm, backend=backend)
    gi, _, _ = fc.conv2d_backward(np.ones_like(y), x, w, stride=(1, 3), algorithm=algorithm,
                                  backend=backend)
    unread = [2, 5] if w.shape[-1] == 2 else [1, 2, 4, 5, 7]
    assert np.all(gi[..., unread] == 0.0) and np.all(gi[..., 0] == 1.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_batch_zero_gives_zero_gradients(dtype):
    x = np.zeros((0, 4, 6, 6), dtype)
    w = np.ones((4, 1, 3, 3), dtype)
    dy = np.zeros((0, 4, 6, 6), dtype)
    gi, gw, gb = fc.conv2d_backward(dy, x, w, padding=1, groups=4)
    assert gi.shape == x.shape and gi.dtype == dtype
    assert np.array_equal(gw, np.zeros_like(w)) and np.array_equal(gb, np.zeros(4, dtype))


@needs_torch
@pytest.mark.parametrize("input_size", [(2, 4, 7, 7), (2, 4, 8, 8)])
@pytest.mark.parametrize("algorithm", ["direct", "im2col", "depthwise"])
def test_input_grad_resolves_the_input_size_like_torch(input_size, algorithm):
    """Stride 2 maps 7x7 and 8x8 inputs to the same 4x4 output; input_size says which."""
    rng = np.random.default_rng(25)
    groups = 4 if algorithm == "depthwise" else 2
    w = rng.standard_normal((4, 4 // groups, 3, 3))
    dy = rng.standard_normal((2, 4, 4, 4))
    ours = fc.conv2d_input_grad(input_size, w, dy, stride=2, padding=1, groups=groups,
                                algorithm=algorithm)
    theirs = torch.nn.grad.conv2d_input(input_size, torch.from_numpy(w), torch.from_numpy(dy),
                                        stride=2, padding=1, groups=groups).numpy()
    assert ours.shape == input_size
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("algorithm", ["direct", "im2col", "depthwise"])
def test_weight_grad_matches_torch_nn_grad(algorithm):
    rng = np.random.default_rng(26)
    groups = 4 if algorithm == "depthwise" else 2
    x = rng.standard_normal((2, 4, 9, 8))
    w_size = (8, 4 // groups, 3, 3)
    dy = rng.standard_normal((2, 8, 5, 4))
    ours = fc.conv2d_weight_grad(x, w_size, dy, stride=2, padding=1, groups=groups,
                                 algorithm=algorithm)
    theirs = torch.nn.grad.conv2d_weight(torch.from_numpy(x), w_size, torch.from_numpy(dy),
                                         stride=2, padding=1, groups=groups).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


@needs_torch
def test_separable_and_conv1d_backward_match_torch():
    rng = np.random.default_rng(27)
    x = rng.standard_normal((2, 3, 9, 8))
    dw = rng.standard_normal((6, 1, 3, 3))
    pw = rng.standard_normal((5, 6, 1, 1))
    b = rng.standard_normal(5)
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, dw, pw, b)]
    hidden = F.conv2d(tensors[0], tensors[1], stride=2, padding=1, groups=3)
    y = F.conv2d(hidden, tensors[2], tensors[3])
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.from_numpy(dy))
    ours = fc.separable_conv2d_backward(dy, x, dw, pw, stride=2, padding=1)
    for g, t in zip(ours, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-10)
    only = fc.separable_conv2d_backward(dy, x, dw, pw, stride=2, padding=1,
                                        needs=("pointwise_weight",))
    assert only[0] is None and only[1] is None and only[3] is None
    np.testing.assert_array_equal(only[2], ours[2])

    x1 = rng.standard_normal((2, 4, 20))
    w1 = rng.standard_normal((6, 2, 3))
    xt, wt = torch.tensor(x1, requires_grad=True), torch.tensor(w1, requires_grad=True)
    y1 = F.conv1d(xt, wt, stride=2, padding=2, dilation=2, groups=2)
    dy1 = rng.standard_normal(tuple(y1.shape))
    y1.backward(torch.from_numpy(dy1))
    gi, gw, gb = fc.conv1d_backward(dy1, x1, w1, stride=2, padding=2, dilation=2, groups=2,
                                    bias=False)
    np.testing.assert_allclose(gi, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    # unbatched
    gi0, gw0, _ = fc.conv1d_backward(dy1[0], x1[0], w1, stride=2, padding=2, dilation=2,
                                     groups=2)
    np.testing.assert_allclose(gi0, gi[0], rtol=1e-12)


# --- the torch adapter ---------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("algorithm", dispatch.algorithms("numba"))
def test_torch_adapter_passes_gradcheck(algorithm):
    import fastconv.torch as fct

    groups = {"depthwise": 3}.get(algorithm, 1)
    kernel = 1 if algorithm == "pointwise" else 3
    gen = torch.Generator().manual_seed(28)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 3 // groups, kernel, kernel, dtype=torch.float64, generator=gen,
                    requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    stride = 1 if algorithm in ("pointwise", "winograd") else 2
    assert torch.autograd.gradcheck(
        lambda x_, w_, b_: fct.conv2d(x_, w_, b_, stride, 1, 1, groups, algorithm=algorithm),
        (x, w, b))


@needs_torch
def test_torch_module_is_a_drop_in_conv2d():
    import fastconv.torch as fct

    torch.manual_seed(29)
    ours = fct.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
    theirs = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 10, 9)
    a, b = ours(x), theirs(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="padding_mode='zeros' only"):
        fct.Conv2d(4, 8, 3, padding_mode="reflect")


# --- bad input -----------------------------------------------------------------------------

X = np.zeros((1, 3, 8, 8))
W = np.zeros((4, 3, 3, 3))
DY = np.zeros((1, 4, 6, 6))

BAD = [
    (lambda: fc.conv2d_backward(np.zeros((1, 4, 7, 6)), X, W), ValueError,
     "Expected grad_output of size [1, 4, 6, 6] for input of size [1, 3, 8, 8] and weight of "
     "size [4, 3, 3, 3], but got grad_output of size [1, 4, 7, 6]"),
    (lambda: fc.conv2d_backward(DY[0], X, W), ValueError, "but got grad_output of size [4, 6, 6]"),
    (lambda: fc.conv2d_backward(DY.astype(np.float32), X, W), TypeError,
     "Input type (float64) and grad_output type (float32) should be the same"),
    (lambda: fc.conv2d_backward(DY, X, np.zeros((4, 2, 3, 3))), ValueError,
     "expected input[1, 3, 8, 8] to have 2 channels, but got 3 channels instead"),
    (lambda: fc.conv2d_backward(DY.tolist(), X, W), TypeError,
     "argument 'grad_output' must be a numpy.ndarray"),
    (lambda: fc.conv2d_backward(DY, X, W, needs=("input", "bias_grad")), ValueError,
     "needs must be a subset of ('input', 'weight', 'bias'), but got ['bias_grad', 'input']"),
    (lambda: fc.conv2d_backward(DY, X, W, needs=3), TypeError, "needs must be a collection"),
    (lambda: fc.conv2d_backward(DY, X, W, algorithm="pointwise"), ValueError,
     "pointwise needs a 1x1 kernel"),
    (lambda: fc.conv2d_input_grad((8, 8), W, DY), ValueError,
     "Expected 3D (unbatched) or 4D (batched) input to conv2d_input_grad, but got input of "
     "size: [8, 8]"),
    (lambda: fc.conv2d_input_grad((1, 3, 9, 9), W, DY), ValueError,
     "Expected grad_output of size [1, 4, 7, 7]"),
    (lambda: fc.conv2d_input_grad((1, 3, 8.5, 8), W, DY), TypeError,
     "input_size must be a sequence of ints"),
    (lambda: fc.conv2d_weight_grad(X, (4, 3, 3), DY), ValueError,
     "Expected 4D weight for conv2d_weight_grad, but got weight of size [4, 3, 3]"),
    (lambda: fc.conv2d_weight_grad(X, (4, 3, 5, 5), DY), ValueError,
     "Expected grad_output of size [1, 4, 4, 4]"),
    (lambda: fc.separable_conv2d_backward(DY, X, np.zeros((3, 1, 3, 3)), np.zeros((4, 3, 1, 1)),
                                          needs=("weight",)), ValueError,
     "needs must be a subset of ('input', 'depthwise_weight', 'pointwise_weight', 'bias')"),
]


@pytest.mark.parametrize("call, kind, fragment", BAD)
def test_bad_input(call, kind, fragment):
    with pytest.raises(kind, match=re.escape(fragment)):
        call()


@pytest.mark.parametrize("call", [
    lambda: fc.conv2d_backward(np.ma.masked_array(DY), X, W, needs=("input", "weight")),
    lambda: fc.conv2d_backward(DY, X, W, stride=True, needs=("input", "weight")),
    lambda: fc.conv2d_backward(DY, X, W, groups=1.0, needs=("input", "weight")),
    lambda: fc.conv2d_backward(DY, X, W.astype(np.float32), needs=("input", "weight")),
], ids=["masked grad_output", "bool stride", "float groups", "mixed dtypes"])
def test_a_validated_backward_does_not_admit_an_equal_bad_one(call):
    """Valid backward calls are remembered by their arrays' types, shapes and dtypes and their
    arguments; a bad call equal to a remembered one under ``==`` must still be refused."""
    first = fc.conv2d_backward(DY, X, W, needs=("input", "weight"))
    again = fc.conv2d_backward(DY, X, W, needs=("input", "weight"))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError):
        call()
