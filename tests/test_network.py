"""fastconv.Network against torch: every supported layer, MobileNet v1 and its full-convolution
twin, the refusals, and what a call may and may not do (threads, aliasing, allocations)."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

import fastconv as fc
from fastconv.models import FullyConnected

from helpers import DTYPES, F, assert_like_module, check_plan, needs_torch, torch

pytestmark = [needs_torch, pytest.mark.usefixtures("plan_backend")]

nn = torch.nn if torch is not None else None
if torch is not None:
    from fastconv.bench import zoo

    class _Chain(nn.Module):
        """Modules one after the other, as a module of its own (traced, not read layer by
        layer as a Sequential is)."""

        def __init__(self, *layers):
            super().__init__()
            self.layers = nn.ModuleList(layers)

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    class _PartialPanels(nn.Module):
        """Output channels whose last panel ends on a whole vector short of the panel: 48
        with 512-bit vectors (panels of 32 and 64 floats, or of 16 and 32 doubles), 40 with
        256- and 128-bit ones (panels of 16 and 24, or of 8 and 12 floats) and for doubles at
        512 bits; under activations applied past the registers, a residual after the
        activation and one before it."""

        def __init__(self):
            super().__init__()
            c = nn.Conv2d
            self.a, self.b, self.c, self.d = c(3, 48, 3, padding=1), c(48, 40, 1), \
                c(40, 48, 1), c(48, 48, 1)

        def forward(self, x):
            y = nn.functional.silu(self.a(x))
            z = nn.functional.hardswish(self.b(y))
            w = y + torch.tanh(self.c(z))
            return torch.sigmoid(self.d(w) + w)


def _rng(seed):
    return np.random.default_rng(seed)


def _randomise(module, seed=0):
    """Batch norms with statistics and affines far from the identity, so folding shows."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.5, generator=g)
                m.bias.data.uniform_(-0.5, 0.5, generator=g)
    return module.eval()


_check = check_plan


# --- every layer -----------------------------------------------------------------------------


def _layers(case):
    """Sequentials that between them use every supported layer and setting."""
    c = nn.Conv2d
    return {
        "conv-bn-relu": lambda: nn.Sequential(c(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                              nn.ReLU()),
        "conv-bias-dilation-groups": lambda: nn.Sequential(
            c(4, 6, (3, 2), (1, 2), (2, 1), (2, 1), groups=2), nn.ReLU6()),
        # a kernel row's taps become one tap: here below a row dilation and a stride
        "row-taps-dilated": lambda: nn.Sequential(c(3, 5, (3, 2), (2, 1), (2, 1), (2, 1)),
                                                  c(5, 7, (2, 5), padding=(1, 2))),
        "same-valid-even-kernels": lambda: nn.Sequential(c(3, 5, 4, padding="same"),
                                                         c(5, 7, 2, padding="valid"),
                                                         nn.Hardtanh(-0.3, 0.4)),
        "depthwise": lambda: nn.Sequential(c(6, 6, 3, 1, 1, groups=6, bias=False),
                                           nn.BatchNorm2d(6), nn.ReLU6(),
                                           c(6, 6, 3, 2, 1, groups=6), nn.ReLU(),
                                           c(6, 6, 3, 1, 2, 2, groups=6)),
        "depthwise-multiplier-5x5": lambda: nn.Sequential(c(3, 6, 5, 2, 2, groups=3),
                                                          c(6, 6, (1, 3), padding=(0, 1),
                                                            groups=6)),
        # whole register blocks of channels and a part of one (61: whole vectors, a half
        # vector and single channels past it, at every width); rows not a multiple of the
        # outputs a step takes; a stride equal to the dilation (a tap's column is the next
        # output's) and not
        "depthwise-kxk": lambda: nn.Sequential(
            c(40, 40, 5, 1, 2, groups=40), nn.SiLU(), c(40, 40, 7, 2, 3, groups=40), nn.ReLU6(),
            c(40, 40, 9, 1, 8, 2, groups=40, bias=False), c(40, 40, (1, 5), padding=(0, 2),
                                                            groups=40), nn.Hardswish(),
            c(40, 61, 1), c(61, 61, 5, 2, 2, groups=61), nn.ReLU(),
            c(61, 61, 5, 2, 4, 2, groups=61)),
        # one step each: an SE block per image, over tasks that split an image's rows (a
        # module of modules, traced)
        "softmax": lambda: nn.Sequential(c(3, 6, 3, padding=1), nn.Softmax(dim=1),
                                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
                                         nn.Softmax(dim=-1)),
        "global-max": lambda: nn.Sequential(c(3, 8, 3, padding=1), nn.ReLU(),
                                            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                            nn.Linear(8, 5)),
        "transcendental": lambda: nn.Sequential(
            c(3, 8, 3, padding=1), nn.Tanh(), c(8, 8, 1), nn.Mish(), c(8, 8, 3, groups=8),
            nn.GELU(), c(8, 24, 1), nn.GELU(approximate="tanh"), nn.BatchNorm2d(24), nn.Mish(),
            nn.BatchNorm2d(24), nn.Tanh()),
        "squeeze-excite": lambda: _Chain(
            c(3, 24, 3, padding=1), zoo.SqueezeExcite(24, 8, nn.ReLU(), nn.Hardsigmoid()),
            c(24, 40, 3, 2, 1), zoo.SqueezeExcite(40, 10, nn.SiLU(), nn.Sigmoid())),
        "pointwise-strided-padded": lambda: nn.Sequential(c(5, 9, 1), c(9, 4, 1, 2, 1),
                                                          nn.BatchNorm2d(4, affine=False)),
        "pools": lambda: nn.Sequential(c(3, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1),
                                       nn.MaxPool2d(2, 1, 0, 2, ceil_mode=True),
                                       nn.AvgPool2d(3, 2, 1, ceil_mode=True),
                                       nn.AvgPool2d(2, 1, 1, count_include_pad=False)),
        "avg-divisor": lambda: nn.Sequential(nn.AvgPool2d(3, 2, 1, divisor_override=5),
                                             nn.BatchNorm2d(3), nn.ReLU()),
        "classifier": lambda: nn.Sequential(c(3, 16, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                            nn.Flatten(), nn.Dropout(0.5), nn.Identity(),
                                            nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 7)),
        "flatten-pixels": lambda: nn.Sequential(c(3, 4, 3, 2, 1), nn.Flatten(),
                                                nn.Linear(4 * 9 * 8, 5, bias=False)),
        "nested": lambda: nn.Sequential(nn.Sequential(c(3, 4, 3), nn.Sequential(nn.ReLU())),
                                        nn.Sequential(), nn.Identity()),
        "partial-panels": lambda: _PartialPanels(),
        # an output row of more channels than the NCHW conversion's runs of pixels hold
        "many-channels-out": lambda: nn.Sequential(c(3, 200, 1), nn.ReLU()),
        # 16 channels: whole vectors at every width (the tile's epilogue in registers); 8:
        # half of one at 512 bits in float32 (the epilogue on the stored rows)
        "activations": lambda: nn.Sequential(c(3, 16, 3, padding=1), nn.LeakyReLU(0.2),
                                             c(16, 16, 1), nn.Hardsigmoid(), c(16, 8, 1),
                                             nn.Hardswish(), c(8, 8, 3, groups=8),
                                             nn.Hardsigmoid(), nn.BatchNorm2d(8), nn.Sigmoid(),
                                             nn.ReLU(), nn.LeakyReLU()),
    }[case]()


CASES = ["conv-bn-relu", "conv-bias-dilation-groups", "row-taps-dilated",
         "same-valid-even-kernels", "depthwise", "depthwise-multiplier-5x5", "depthwise-kxk",
         "softmax", "global-max", "transcendental", "squeeze-excite", "pointwise-strided-padded",
         "pools", "avg-divisor", "classifier", "flatten-pixels", "nested", "activations",
         "partial-panels", "many-channels-out"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", CASES)
def test_every_layer_matches_torch(case, batch, dtype):
    torch.manual_seed(CASES.index(case))
    module = _randomise(_layers(case), seed=CASES.index(case))
    channels = {"conv-bias-dilation-groups": 4, "depthwise": 6, "depthwise-kxk": 40,
                "pointwise-strided-padded": 5}.get(case, 3)
    x = _rng(batch).standard_normal((batch, channels, 17, 15))
    _check(module, x, dtype)


def test_batch_norm_folds_and_activations_fuse():
    module = _randomise(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.ReLU6(), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.ReLU()))
    net = fc.Network.from_torch(module)
    ops = [node.op for node in net.graph.nodes]
    assert ops == ["conv", "maxpool", "batchnorm"]  # the second norm follows a pool
    conv = net.graph.nodes[0]
    assert str(conv.act) == "relu6" and len(conv.attrs["fused"]) == 3
    assert str(net.graph.nodes[2].act) == "relu"
    text = str(net)
    assert "fused: layer 1 (BatchNorm2d), layer 2 (ReLU), layer 3 (ReLU6)" in text
    net, _ = _check(module, _rng(0).standard_normal((2, 3, 9, 9)), np.float32)
    assert "planned for input [2, 3, 9, 9]: NHWC activations in one arena" in str(net)


# --- whole networks -----------------------------------------------------------------------


def mobilenet_v1(separable=True, alpha=1.0, classifier=True):
    """MobileNet v1 as torchvision-style modules: conv, batch norm, ReLU6."""
    def block(i, o, k, s, g):
        return [nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o),
                nn.ReLU6()]

    width = [int(c * alpha) for c in (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512,
                                      1024, 1024)]
    strides = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
    layers = block(3, width[0], 3, 2, 1)
    for c_in, c_out, s in zip(width, width[1:], strides):
        if separable:
            layers += block(c_in, c_in, 3, s, c_in) + block(c_in, c_out, 1, 1, 1)
        else:
            layers += block(c_in, c_out, 3, s, 1)
    if classifier:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width[-1], 1000)]
    return zoo.randomise(nn.Sequential(*layers))  # statistics of a batch: no collapse


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_mobilenet_v1_with_its_classifier(dtype):
    torch.manual_seed(0)
    x = _rng(1).standard_normal((2, 3, 96, 96))
    _check(mobilenet_v1(), x, dtype)


def test_mobilenet_v1_at_224():
    torch.manual_seed(1)
    _check(mobilenet_v1(), _rng(2).standard_normal((1, 3, 224, 224)), np.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("stride, dilation, batch", [(1, 1, 3), (2, 1, 2), (1, 2, 1), (2, 2, 3)])
def test_depthwise_and_pointwise_run_fused(stride, dilation, batch, dtype):
    """A depthwise 3x3 and the pointwise layer after it run as one kernel (the plan names
    both), on odd sizes, with batch norms, ReLU6 and ReLU, and the next block's padding."""
    module = _randomise(nn.Sequential(
        nn.Conv2d(3, 24, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(24, 24, 3, stride, dilation, dilation=dilation, groups=24, bias=False),
        nn.BatchNorm2d(24), nn.ReLU6(), nn.Conv2d(24, 40, 1), nn.ReLU(),
        nn.Conv2d(40, 40, 3, 1, 1, groups=40), nn.Conv2d(40, 8, 1, bias=False)))
    x = _rng(stride + dilation).standard_normal((batch, 3, 13, 11))
    net, _ = _check(module, x, dtype)
    names = [n.name for n in next(iter(net._plans.values())).plan.nodes]
    assert names == ["layer 0 (Conv2d)", "layer 2 (Conv2d) + layer 5 (Conv2d)",
                     "layer 7 (Conv2d) + layer 8 (Conv2d)"]


def test_a_pointwise_layer_with_padding_or_stride_runs_apart():
    module = _randomise(nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8),
                                      nn.Conv2d(8, 16, 1, padding=1),
                                      nn.Conv2d(16, 16, 3, 1, 1, groups=16),
                                      nn.Conv2d(16, 16, 1, stride=2)))
    net, _ = _check(module, _rng(4).standard_normal((2, 8, 9, 10)), np.float64)
    assert all("+" not in n.name for n in next(iter(net._plans.values())).plan.nodes)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_full_convolution_twin(dtype):
    torch.manual_seed(2)
    module = mobilenet_v1(separable=False, alpha=0.25)
    _check(module, _rng(3).standard_normal((2, 3, 64, 64)), dtype)


def test_from_specs_runs_mobilenet_as_the_profiler_does():
    """GAP before the classifier, the classifier a linear layer with (N, F) output; checked
    against the per-call API on the same weights."""
    specs = fc.models.mobilenet_v1(alpha=0.25, resolution=64)
    rng = _rng(4)
    weights = [rng.standard_normal(s.weight_shape) * np.sqrt(2 / np.prod(s.weight_shape[1:]))
               for s in specs]
    biases = [rng.standard_normal(s.out_channels) if s.bias else None for s in specs]
    net = fc.Network.from_specs(specs, weights, biases, activation="relu6")
    x = rng.standard_normal((2, 3, 64, 64))
    y = x
    for spec, w, b in zip(specs, weights, biases):
        if isinstance(spec, FullyConnected):
            y = y.mean(axis=(2, 3)) @ w[:, :, 0, 0].T + b
        else:
            y = np.clip(fc.conv2d(y, w, b, spec.stride, spec.padding, spec.dilation,
                                  spec.groups, backend="numpy"), 0, 6)
    got = net(x)
    assert got.shape == (2, 1000) == net.output_shape(x.shape)
    np.testing.assert_allclose(got, y, rtol=1e-10, atol=1e-10)


# --- what a call may and may not do -----------------------------------------------------------


@pytest.fixture
def small(plan_backend):  # planned anew on each executor
    torch.manual_seed(3)
    module = mobilenet_v1(alpha=0.25)
    return module, fc.Network.from_torch(module)


def _reference(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def test_a_second_call_equals_the_first_and_owns_its_output(small):
    module, net = small
    x = _rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32)
    first = net(x)
    keep = first.copy()
    first[...] = np.nan  # the caller's to change: the plan keeps no reference to it
    second = net(x)
    np.testing.assert_array_equal(second, keep)
    assert second.base is None and first.base is None


def test_nan_and_infinity_propagate_as_in_torch(small):
    """The clamps of ReLU6 and the plan's additions keep a NaN a NaN, as torch does."""
    module, net = small
    x = _rng(8).standard_normal((2, 3, 64, 64)).astype(np.float32)
    x[0, 1, 10:14, 20:24] = np.nan
    x[1, 0, 30, 30] = np.inf
    got, expected = net(x), _reference(module, x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got[0]).all() and not np.isnan(got[1]).all()  # the first image is all NaN
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-3, atol=1e-3)


def test_awkward_layouts_give_the_same_result(small):
    module, net = small
    x = _rng(6).standard_normal((2, 3, 64, 64)).astype(np.float32)
    expected = net(x)
    fortran = np.asfortranarray(x)
    flipped = x[:, :, ::-1, ::-1].copy()[:, :, ::-1, ::-1]
    readonly = x.copy()
    readonly.flags.writeable = False
    swapped = x.astype(x.dtype.newbyteorder(">"))
    strided = np.repeat(x, 2, axis=3)[..., ::2]
    for variant in (fortran, flipped, readonly, swapped, strided):
        np.testing.assert_array_equal(net(variant), expected)


def test_batch_zero_and_output_shape(small):
    module, net = small
    assert net.output_shape((0, 3, 64, 64)) == (0, 1000)
    out = net(np.zeros((0, 3, 64, 64), np.float32))
    assert out.shape == (0, 1000) and out.dtype == np.float32


def test_four_threads_share_one_plan(small):
    module, net = small
    inputs = [_rng(10 + i).standard_normal((1 + i % 2, 3, 64, 64)).astype(np.float32)
              for i in range(4)]
    expected = [_reference(module, x) for x in inputs]
    errors, barrier = [], threading.Barrier(4)

    def work(i):
        barrier.wait()
        for _ in range(5):
            got = net(inputs[i])
            scale = abs(expected[i]).max()
            if not np.allclose(got, expected[i], rtol=1e-4, atol=2e-4 * scale):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_call_allocates_only_its_output(small):
    module, net = small
    x = _rng(7).standard_normal((2, 3, 64, 64)).astype(np.float32)
    net(x)  # plans the shape, allocates the arena
    tracemalloc.start()
    y = net(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= y.nbytes + 16384


def test_weights_are_copied_when_planned():
    module = _randomise(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    net = fc.Network.from_torch(module)
    x = _rng(8).standard_normal((1, 3, 8, 8)).astype(np.float32)
    before = net(x)
    with torch.no_grad():
        module[0].weight.mul_(2)
        module[1].running_mean.add_(1)
    np.testing.assert_array_equal(net(x), before)


def test_threads_and_profile(small):
    module, _ = small
    net = fc.Network.from_torch(module, threads=1)
    x = _rng(9).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert_like_module(net(x), module, x)
    profile = net.profile(x, budget=0.05)
    names = [r["name"] for r in profile.rows]
    assert names[0] == "input" and names[-1] == "output"
    assert names[1:-1] == [n.name for n in profile.plan.nodes]
    # MobileNet's depthwise and pointwise layers run fused, as one node each
    assert "layer 3 (Conv2d) + layer 6 (Conv2d)" in names
    assert all(r["seconds"] > 0 for r in profile.rows)
    assert profile.sum_of_nodes > 0 and profile.seconds > 0
    conv = next(r for r in profile.rows if r["op"] == "conv")
    assert conv["flops"] > 0 and conv["gflops"] > 0
    assert "sum of nodes" in str(profile) and "whole call" in str(profile)
    assert profile.to_dict()["nodes"] == profile.rows


# --- refusals -----------------------------------------------------------------------------------


class MyBlock(nn.Module if nn is not None else object):
    def forward(self, x):
        return x


@pytest.mark.parametrize("make, error, message", [
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), MyBlock()).eval(), TypeError,
     r"layer 1 \(MyBlock\) is not supported by Network.from_torch; supported: Conv2d, "
     r"ConvTranspose2d, BatchNorm2d"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.LogSoftmax(1)).eval(), TypeError,
     r"layer 1 \(LogSoftmax\) is not supported"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3)).train(), ValueError,
     r"the module is in training mode: call .eval\(\) first"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")).eval(),
     ValueError, r"layer 0 \(Conv2d\): padding_mode='reflect' is not supported"),
    (lambda: nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)).eval(), ValueError,
     r"layer 0 \(BatchNorm2d\) keeps no running statistics"),
    (lambda: nn.Sequential(nn.AdaptiveAvgPool2d(2)).eval(), ValueError,
     r"layer 0 \(AdaptiveAvgPool2d\): output_size=2 is not supported"),
    (lambda: nn.Sequential(nn.Flatten(0)).eval(), ValueError,
     r"only Flatten\(start_dim=1, end_dim=-1\) is supported"),
    (lambda: nn.Sequential(nn.MaxPool2d(2, return_indices=True)).eval(), ValueError,
     r"return_indices=True is not supported"),
    (lambda: nn.Conv2d(3, 4, 3).train(), ValueError,
     r"the module is in training mode"),
    (lambda: "not a module", TypeError, r"expects a torch.nn.Module, but got str"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1).double()).eval(), TypeError,
     r"parameters are all float32 or all float64"),
])
def test_refusals_when_planning(make, error, message):
    with pytest.raises(error, match=message):
        fc.Network.from_torch(make())


def test_a_nested_layer_is_named_by_its_path():
    module = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), MyBlock())).eval()
    with pytest.raises(TypeError, match=r"layer 0.1 \(MyBlock\) is not supported"):
        fc.Network.from_torch(module)


@pytest.mark.parametrize("x, error, message", [
    (np.zeros((1, 4, 16, 16), np.float32), ValueError,
     r"layer 0 \(Conv2d\): given groups=1, weight of size \[8, 3, 3, 3\], expected "
     r"input\[1, 4, 16, 16\] to have 3 channels, but got 4 channels instead"),
    (np.zeros((3, 16, 16), np.float32), ValueError,
     r"Network expects a batched 4-D input \(N, C, H, W\), but got input of size \[3, 16, 16\]"),
    (np.zeros((1, 3, 16, 16), np.float64), TypeError,
     r"Input type \(float64\) and the network's weight type \(float32\) should be the same"),
    (np.zeros((1, 3, 16, 16), np.int32), TypeError, r"Input type \(int32\)"),
    (np.zeros((1, 3, 1, 1), np.float32), ValueError,
     r"layer 0 \(Conv2d\) on input of size \[1, 3, 1, 1\]: .*Kernel size can't be greater"),
    ([[1.0]], TypeError, r"Network expects a numpy.ndarray input, but got list"),
])
def test_refusals_when_called(x, error, message):
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(),
                           nn.Linear(8 * 14 * 14, 2)).eval()
    net = fc.Network.from_torch(module)
    with pytest.raises(error, match=message):
        net(x)


def test_a_flattened_size_that_does_not_fit_the_linear_layer():
    net = fc.Network.from_torch(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(),
                                              nn.Linear(8 * 14 * 14, 2)).eval())
    with pytest.raises(ValueError, match=r"layer 2 \(Linear\): mat1 and mat2 shapes cannot be "
                                         r"multiplied \(1x648 and 1568x2\)"):
        net(np.zeros((1, 3, 11, 11), np.float32))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(backend="cuda"), ValueError,
     r"Network supports backend 'auto' or one of \['numba', 'cython'\]"),
    (dict(threads=0), ValueError, r"threads must be an int from 1 to"),
    (dict(threads=2.5), ValueError, r"threads must be an int"),
])
def test_refusals_of_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        fc.Network.from_torch(nn.Sequential(nn.ReLU()).eval(), **kwargs)


def test_from_specs_refusals():
    spec = fc.ConvSpec(3, 4, 3, input_size=8)
    with pytest.raises(ValueError, match=r"layer 0 \(conv\): expected weight of size "
                                         r"\[4, 3, 3, 3\], but got weight of size \[4, 3, 1, 1\]"):
        fc.Network.from_specs([spec], [np.zeros((4, 3, 1, 1))])
    with pytest.raises(ValueError, match=r"got 1 specs but 2 weights"):
        fc.Network.from_specs([spec], [np.zeros((4, 3, 3, 3))] * 2)
    with pytest.raises(ValueError, match=r"activation must be None, 'relu', 'relu6'"):
        fc.Network.from_specs([spec], [np.zeros((4, 3, 3, 3))], activation="gelu")
    with pytest.raises(TypeError, match=r"weights all float32 or all float64"):
        fc.Network.from_specs([spec], [np.zeros((4, 3, 3, 3), np.int64)])


@pytest.mark.parametrize("name", ["numba_executor", "cython_executor"])
def test_each_executor_keeps_the_contract(name):
    """network.executor's contract: an Arena, its tiles' geometry and a kernel for every
    kind of step the planner emits, by name (and nothing else exported)."""
    import importlib

    from fastconv.network.executor import GEOMETRY, STEP_KINDS

    try:
        module = importlib.import_module(f"fastconv.network.{name}")
    except ImportError:
        pytest.skip("the Cython plan kernels are not built")
    assert sorted(module.__all__) == sorted(["Arena", *GEOMETRY, *STEP_KINDS])
    for attribute in module.__all__:
        assert callable(getattr(module, attribute)), attribute
    assert callable(module.Arena.run) and not hasattr(module.Arena, "output")


@pytest.mark.parametrize("name", ["numba_executor", "cython_executor"])
def test_each_kernel_takes_its_records_fields_in_order(name):
    """A field added to a step's record (network/step_args.py) and forgotten in a kernel, or
    the reverse, fails here: the Numba kernels' and the Cython steps' parameters are the
    records' fields, by name and in order."""
    import importlib
    import inspect

    from fastconv.network.step_args import RECORDS

    try:
        module = importlib.import_module(f"fastconv.network.{name}")
    except ImportError:
        pytest.skip("the Cython plan kernels are not built")
    for kind, record in RECORDS.items():
        kernel = getattr(module, kind)
        kernel = getattr(kernel, "py_func", kernel)  # a Numba dispatcher's Python function
        assert tuple(inspect.signature(kernel).parameters) == record._fields, kind


def test_a_softmax_over_another_dim_is_refused_in_words():
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softmax(dim=-1)).eval()
    with pytest.raises(ValueError, match=r"layer 1 \(Softmax\): dim=-1 of input of size "
                                         r"\[2, 4, 3, 3\]: the plan's softmax is over the "
                                         r"channels"):
        fc.Network.from_torch(module)(np.zeros((2, 3, 5, 5), np.float32))


def test_weights_changed_in_place_are_repacked():
    """``Network._repack`` after the plan's weights changed in place (a training step's):
    every packing (GEMM panels, Winograd filters, depthwise taps, a transposed convolution's
    phases, squeeze-and-excitation, a linear layer) runs the new weights, as torch does."""
    import copy

    from torch import nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.wide = nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)
            self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
            self.squeeze, self.excite = nn.Conv2d(64, 16, 1), nn.Conv2d(16, 64, 1)
            self.up = nn.ConvTranspose2d(64, 8, 3, stride=2, padding=1, output_padding=1)
            self.shuffle = nn.ConvTranspose2d(8, 8, 2, stride=2)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            x = self.dw(torch.relu(self.wide(torch.relu(self.stem(x)))))
            gate = self.excite(torch.relu(self.squeeze(F.adaptive_avg_pool2d(x, 1))))
            x = self.shuffle(self.up(x * F.hardsigmoid(gate)))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    module = Model().eval()
    net = fc.Network.from_torch(module)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    before = net(x)
    kernels = " ".join(n.kernel for n in net._planned(x.shape).plan.nodes)
    for kind in ("Winograd", "depthwise", "squeeze-excite", "output phase", "linear"):
        assert kind in kernels
    changed = copy.deepcopy(module)
    seen = set()
    with torch.no_grad():
        for p in changed.parameters():
            p.mul_(-0.5)
        for node in net.graph.nodes:  # every array once (a shuffle's are reshaped copies)
            for value in node.attrs.values():
                if isinstance(value, np.ndarray) and id(value) not in seen:
                    seen.add(id(value))
                    value *= -0.5
    net._repack()
    expected = changed(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(net(x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert not np.allclose(before, expected, rtol=1e-2)


def test_a_call_writes_into_the_array_given():
    """``Network._run(x, out=...)`` (the training network's convolutions) writes the output
    into ``out`` and returns it, the same values as a call."""
    from torch import nn

    torch.manual_seed(0)
    net = fc.Network.from_torch(nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU()).eval())
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6)).astype(np.float32)
    out = np.full((2, 5, 7, 6), np.nan, np.float32)
    assert net._run(x, out=out) is out
    np.testing.assert_array_equal(out, net(x))
