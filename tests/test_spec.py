"""ConvSpec: normalisation, geometry and counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fastconv as fc
from fastconv import ConvSpec, receptive_field
from fastconv.spec import PoolSpec

from helpers import F, needs_torch, torch


def test_normalises_ints_pairs_and_strings():
    spec = ConvSpec(4, 8, 3, stride=[2], padding=(1, 2), groups=2, input_size=9)
    assert spec.kernel_size == (3, 3)
    assert spec.stride == (2, 2)
    assert spec.padding == (1, 2)
    assert spec.pads == ((1, 1), (2, 2))
    assert spec.input_size == (9, 9)
    assert spec.weight_shape == (8, 2, 3, 3)
    assert ConvSpec(np.int64(3), 4, np.int32(3)).in_channels == 3


@pytest.mark.parametrize("kernel, dilation, expected", [
    (3, 1, ((1, 1), (1, 1))),
    ((4, 2), 1, ((1, 2), (0, 1))),       # odd total padding: the extra row/column at the end
    ((2, 3), (3, 2), ((1, 2), (2, 2))),
    (1, 5, ((0, 0), (0, 0))),
])
def test_same_padding_puts_the_odd_row_at_the_end(kernel, dilation, expected):
    spec = ConvSpec(2, 2, kernel, padding="same", dilation=dilation, input_size=(7, 8))
    assert spec.pads == expected
    assert spec.output_size == (7, 8)


@needs_torch
@pytest.mark.parametrize("size, kernel, stride, padding, dilation", [
    ((7, 8), (4, 2), 1, "same", 1), ((9, 8), (2, 4), 1, "same", (2, 3)),
    ((10, 11), 3, (3, 2), (2, 1), (1, 3)), ((5, 6), 5, 1, "valid", 1), ((13, 13), 3, 4, 0, 2),
])
def test_output_size_and_same_padding_match_torch(size, kernel, stride, padding, dilation):
    spec = ConvSpec(2, 3, kernel, stride=stride, padding=padding, dilation=dilation,
                    input_size=size)
    x = torch.zeros((1, 2, *size))
    x[0, 0, 0, 0] = 1.0  # the top-left pixel: where it lands tells the top/left padding
    w = torch.zeros(spec.weight_shape)
    w[0, 0, -1, -1] = 1.0
    y = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    assert tuple(y.shape[2:]) == spec.output_size
    ours = fc.conv2d(x.numpy(), w.numpy(), stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_array_equal(ours, y.numpy())


def test_counts_of_a_known_layer():
    spec = ConvSpec(32, 64, 3, stride=2, padding=1, bias=True, input_size=112)
    assert spec.output_size == (56, 56)
    assert spec.macs == 64 * 56 * 56 * 32 * 9
    assert spec.flops == 2 * spec.macs
    assert spec.params == 64 * 32 * 9 + 64
    elements = 32 * 112 * 112 + (64 * 32 * 9 + 64) + 64 * 56 * 56
    assert spec.bytes() == 4 * elements
    assert spec.bytes(np.float64, batch=2) == 8 * (2 * 32 * 112 * 112 + 64 * 32 * 9 + 64
                                                   + 2 * 64 * 56 * 56)


def test_grouped_and_depthwise_counts():
    dw = ConvSpec(32, 64, 3, padding=1, groups=32, input_size=14)
    assert dw.is_depthwise and dw.kind == "dw"
    assert dw.macs == 64 * 14 * 14 * 1 * 9
    assert dw.params == 64 * 9
    assert ConvSpec(8, 16, 1, input_size=5).kind == "pw"
    assert ConvSpec(8, 16, 1, groups=2, input_size=5).kind == "conv"
    assert ConvSpec(1, 16, 3, input_size=5).kind == "conv"  # one channel: a dense conv


def test_specs_are_values():
    a = ConvSpec(3, 4, 3, padding=1, input_size=8)
    b = ConvSpec(3, 4, (3, 3), padding=(1, 1), input_size=(8, 8))
    assert a == b and hash(a) == hash(b)
    assert a.with_input_size(16) == ConvSpec(3, 4, 3, padding=1, input_size=16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.stride = (2, 2)


def test_without_padding_is_the_same_convolution_on_the_padded_input():
    spec = ConvSpec(2, 2, (4, 3), padding="same", dilation=(1, 2), input_size=(7, 9))
    bare = spec.without_padding()
    assert bare.pads == ((0, 0), (0, 0))
    assert bare.input_size == (7 + 3, 9 + 4)
    assert bare.output_size == spec.output_size == (7, 9)


@pytest.mark.parametrize("layers, expected", [
    ([ConvSpec(1, 1, 3)] * 3, ((7, 7), (1, 1))),
    ([ConvSpec(1, 1, 3, stride=2), ConvSpec(1, 1, 3)], ((7, 7), (2, 2))),
    ([ConvSpec(1, 1, 3, dilation=2), ConvSpec(1, 1, (3, 1), dilation=4)], ((13, 5), (1, 1))),
    ([ConvSpec(1, 1, 1, stride=2)] * 3, ((1, 1), (8, 8))),
])
def test_receptive_field(layers, expected):
    assert receptive_field(layers) == expected


def test_receptive_field_by_impulse():
    """Count the input pixels that reach one output pixel, by differentiating numerically."""
    layers = [ConvSpec(1, 1, 3, stride=2, padding=1), ConvSpec(1, 1, 3, dilation=2, padding=2),
              ConvSpec(1, 1, (1, 3), stride=(1, 2), padding=(0, 1))]
    size = 40
    ones = [np.ones(s.weight_shape) for s in layers]

    def forward(x):
        for spec, w in zip(layers, ones):
            x = fc.conv2d(x, w, stride=spec.stride, padding=spec.padding,
                          dilation=spec.dilation, backend="numpy")
        return x

    base = np.zeros((1, 1, size, size))
    centre = tuple(n // 2 for n in forward(base).shape[2:])
    reach = np.zeros((size, size), bool)
    for i in range(size):
        for j in range(size):
            impulse = base.copy()
            impulse[0, 0, i, j] = 1.0
            reach[i, j] = forward(impulse)[(0, 0, *centre)] != 0
    rows, cols = np.nonzero(reach)
    field = receptive_field(layers)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == field.size


@pytest.mark.parametrize("size, kernel, stride, padding, dilation", [
    ((1, 1), 3, 1, 1, 1), ((2, 2), 3, 2, 1, 1), ((1, 5), 3, 1, 1, 1), ((1, 1), 3, 1, 2, 2),
    ((2, 3), 7, 2, 3, 1), ((3, 3), 5, 1, 2, 1), ((4, 4), 3, 2, 1, 1)])
def test_live_window_gives_the_same_output(size, kernel, stride, padding, dilation):
    """The taps some output reads inside the input, with their padding, give the whole
    kernel's output (NumPy reference, float64); None where every tap is read."""
    from fastconv.kernels import reference

    spec = ConvSpec(2, 3, kernel, stride=stride, padding=padding, dilation=dilation, bias=False,
                    input_size=size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.input_shape(2))
    w = rng.standard_normal(spec.weight_shape)
    live = spec.live_window()
    if size in ((3, 3), (4, 4)):
        assert live is None
        return
    (h0, h1), (w0, w1), pads = live
    assert (h1 - h0, w1 - w0) != spec.kernel_size
    trimmed = ConvSpec(2, 3, (h1 - h0, w1 - w0), stride=stride, padding=pads,
                       dilation=dilation, bias=False, input_size=size)
    np.testing.assert_allclose(reference.forward(x, w[:, :, h0:h1, w0:w1], None, trimmed),
                               reference.forward(x, w, None, spec), rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("size, kernel, stride, padding, dilation", [
    ((8, 7), 3, 2, 1, 1), ((9, 9), 1, 2, 0, 1), ((10, 6), 2, 2, 0, 1), ((11, 12), 3, 3, 2, 2),
    ((5, 5), 3, 1, 1, 1), ((7, 9), (3, 1), (2, 3), (0, 1), (1, 1)), ((9, 8), 5, 1, 3, 2),
    ((6, 7), (3, 2), 1, (2, 0), (1, 3))])
def test_unread_tail_gives_the_input_gradient(size, kernel, stride, padding, dilation):
    """The transposed convolution of the output's gradient under ``unread_tail`` as output
    padding has the input's size, and is the input's gradient (torch autograd); for stride 1,
    so is the convolution by the flipped kernel under ``input_gradient_pads``."""
    spec = ConvSpec(2, 3, kernel, stride=stride, padding=padding, dilation=dilation, bias=False,
                    input_size=size)
    assert all(0 <= t < s for t, s in zip(spec.unread_tail, spec.stride))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal(spec.input_shape(2))).requires_grad_()
    w = torch.from_numpy(rng.standard_normal(spec.weight_shape))
    g = torch.from_numpy(rng.standard_normal(spec.output_shape(2)))
    F.conv2d(x, w, None, stride, padding, dilation).backward(g)
    gx = F.conv_transpose2d(g, w, None, spec.stride, spec.padding, spec.unread_tail, 1,
                            spec.dilation)
    np.testing.assert_allclose(gx.numpy(), x.grad.numpy(), rtol=1e-12, atol=1e-12)
    pads = spec.input_gradient_pads()  # stride 1: a convolution by the flipped kernel
    assert (pads is not None) == (spec.stride == (1, 1))
    if pads is not None:
        flipped = w.transpose(0, 1).flip(2, 3)
        padded = F.pad(g, [p for pair in pads[::-1] for p in pair])
        np.testing.assert_allclose(F.conv2d(padded, flipped, None, 1, 0, dilation).numpy(),
                                   x.grad.numpy(), rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("size, kernel, stride, padding, dilation", [
    ((8, 7), 3, 2, 1, 1), ((9, 9), 1, 2, 0, 1), ((10, 6), 2, 2, 0, 1), ((11, 12), 3, 3, 2, 2),
    ((5, 5), 3, 1, 1, 1), ((7, 9), (3, 1), (2, 3), (0, 1), (1, 1)),
    ((9, 8), 3, 2, ((1, 0), (2, 1)), 1)])
def test_weight_gradient_as_conv_gives_torchs(size, kernel, stride, padding, dilation):
    """The convolution ``weight_gradient_as_conv`` describes (NumPy reference), of the
    cropped input by the output's gradient, is the weights' gradient (torch autograd)."""
    from fastconv.kernels import reference

    spec = ConvSpec(2, 3, kernel, stride=stride, padding=padding, dilation=dilation, bias=False,
                    input_size=size)
    as_conv, (crop_h, crop_w) = spec.weight_gradient_as_conv()
    batch = 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.input_shape(batch))
    w = torch.from_numpy(rng.standard_normal(spec.weight_shape)).requires_grad_()
    g = rng.standard_normal(spec.output_shape(batch))
    pads = [p for pair in spec.pads[::-1] for p in pair]  # F.pad's (left, right, top, bottom)
    F.conv2d(F.pad(torch.from_numpy(x), pads), w, None, stride, 0, dilation).backward(
        torch.from_numpy(g))
    kernel_of_gradient = dataclasses.replace(as_conv, in_channels=batch, out_channels=3)
    h, wd = size
    gw = reference.forward(np.ascontiguousarray(x.transpose(1, 0, 2, 3)[:, :, :h - crop_h,
                                                                         :wd - crop_w]),
                           np.ascontiguousarray(g.transpose(1, 0, 2, 3)), None,
                           kernel_of_gradient)
    np.testing.assert_allclose(gw.transpose(1, 0, 2, 3), w.grad.numpy(), rtol=1e-12,
                               atol=1e-12)
    with pytest.raises(ValueError, match="groups=1, but got 2"):
        ConvSpec(2, 2, 3, groups=2, input_size=size).weight_gradient_as_conv()


@needs_torch
@pytest.mark.parametrize("kernel, stride, padding, ceil, include, override", [
    (3, 2, 1, True, True, None), (3, 2, 1, True, False, None), (2, 2, 0, False, True, 3),
    ((3, 2), (1, 2), (1, 0), True, True, None)])
def test_pool_taps_and_divisors_as_torch(kernel, stride, padding, ceil, include, override):
    """PoolSpec's tap table and divisors give torch's average pooling (and the table, each
    window's taps inside the input)."""
    spec = PoolSpec("avg", 2, kernel, stride, padding, ceil_mode=ceil, count_include_pad=include,
                    divisor_override=override, input_size=(7, 6))
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 6))
    taps = spec.tap_table()
    plane = x.reshape(2, -1)
    sums = np.where(taps >= 0, plane[:, np.maximum(taps, 0)], 0).sum(axis=-1)
    expected = F.avg_pool2d(torch.from_numpy(x), kernel, stride, padding, ceil, include,
                            override).numpy().reshape(2, -1)
    np.testing.assert_allclose(sums / spec.divisors(), expected, rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_swap_group_channels_gives_the_transposed_convolution(groups):
    """A convolution's weight with each group's channel axes swapped, as torch's
    ConvTranspose2d weight, gives that convolution's input gradient; swapped twice it is the
    weight again."""
    from fastconv.spec import swap_group_channels

    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 12 // groups, 3, 2))  # C_out 6, C_in 12
    swapped = swap_group_channels(w, groups)
    assert swapped.shape == (12, 6 // groups, 3, 2) and swapped.flags.c_contiguous
    np.testing.assert_array_equal(swap_group_channels(swapped, groups), w)
    x = torch.from_numpy(rng.standard_normal((2, 12, 7, 6))).requires_grad_()
    g = torch.from_numpy(rng.standard_normal((2, 6, 5, 5)))
    F.conv2d(x, torch.from_numpy(w), groups=groups).backward(g)
    # torch's transposed convolution takes the forward weight; ours, as a convolution's, the
    # swapped one: the same input gradient
    expected = F.conv_transpose2d(g, torch.from_numpy(w), groups=groups)
    np.testing.assert_allclose(expected.numpy(), x.grad.numpy(), rtol=1e-12, atol=1e-12)
    as_conv = F.conv2d(F.pad(g, (1, 1, 2, 2)), torch.from_numpy(
        swap_group_channels(w[:, :, ::-1, ::-1], groups)), groups=groups)
    np.testing.assert_allclose(as_conv.numpy(), x.grad.numpy(), rtol=1e-12, atol=1e-12)
