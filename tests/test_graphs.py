"""fastconv.Network on graphs: modules traced by torch.fx (residual additions, concatenation,
squeeze-and-excitation products) against torch, the residual fused into the convolution's
epilogue, and the refusals of what the plan does not serve."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc

from helpers import DTYPES, check_plan, needs_torch, torch

pytestmark = [needs_torch, pytest.mark.usefixtures("plan_backend")]

if torch is not None:
    from fastconv.bench import zoo
    from torch import nn


def _check(module, x, dtype):
    return check_plan(module, x, dtype)[0]


def _kernels(net):
    return {n.name: n.kernel for n in next(iter(net._plans.values())).plan.nodes}


def _choices(net):
    """Each plan node's choice (``selection.Choice``): its kind, members and tile."""
    return {n.name: n.choice for n in next(iter(net._plans.values())).plan.nodes}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("model, width, size, batch", [
    ("MobileNetV1", 0.25, (64, 67), 2), ("MobileNetV2", 0.5, (64, 67), 2),
    ("ResNet18", 0.25, (61, 64), 3), ("SqueezeExcitation", None, (16, 18), 2)])
def test_models_match_torch(model, width, size, batch, dtype):
    module = zoo.randomise(getattr(zoo, model)(*([] if width is None else [width])))
    x = np.random.default_rng(len(model)).standard_normal((batch, 3, *size))
    _check(module, x, dtype)


def test_resnet_residuals_are_fused_into_the_second_convolution():
    net = _check(zoo.randomise(zoo.ResNet18(0.25)),
                 np.random.default_rng(0).standard_normal((1, 3, 64, 64)), np.float64)
    choices = _choices(net)
    # the identity shortcut: conv2 adds the block's input, then the ReLU
    block_input = choices["layer layer1.0.conv1 (Conv2d)"].head.inputs[0]
    assert choices["layer layer1.0.conv2 (Conv2d)"].tail.attrs["residual"] == block_input
    # a downsampling block: the 1x1 shortcut comes after conv2 and adds conv2's output
    shortcut = choices["layer layer2.0.downsample.0 (Conv2d)"]
    assert shortcut.kind == "gemm" and shortcut.tail.attrs["residual"]
    assert not any(n.op == "add" for n in net.graph.nodes)
    fused = next(n for n in net.graph.nodes if n.name == "layer layer1.0.conv2 (Conv2d)")
    assert fused.act.kind == "clamp" and not fused.attrs["residual_after"]


def test_mobilenet_v2_residuals_ride_the_fused_separable_kernel():
    net = _check(zoo.randomise(zoo.MobileNetV2(0.5)),
                 np.random.default_rng(1).standard_normal((2, 3, 48, 48)), np.float32)
    fused = [c for c in _choices(net).values()
             if c.kind in ("separable", "expanded_separable") and c.tail.attrs.get("residual")]
    assert len(fused) == 10  # every block with a shortcut


class _Inverted(nn.Module if torch is not None else object):
    """MobileNet v2's inverted residual (expand, depthwise, project, the shortcut at stride 1)
    on channels that fill no vector, after a stem whose output a padded 3x3 layer reads too
    (so the block's input buffer has a border)."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Sequential(nn.Conv2d(8, 30, 1, bias=False), nn.BatchNorm2d(30),
                                    nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(30, 30, 3, stride, 1, groups=30, bias=False),
                                nn.BatchNorm2d(30), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(30, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.side = nn.Conv2d(8, 5, 3, stride, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.project(self.dw(self.expand(x)))
        if self.stride == 1:
            y = x + y
        return torch.cat([y, self.side(x)], 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("stride, batch, size, slab", [
    (1, 1, (13, 11), None), (2, 3, (12, 9), None), (1, 3, (7, 16), 1), (2, 2, (9, 5), 1)])
def test_expand_depthwise_and_project_run_fused(stride, batch, size, slab, dtype, monkeypatch):
    """The expand layer runs inside the fused depthwise and pointwise kernel (the plan names
    all three), its rows in a slab in cache: odd sizes, tasks whose rows span images, and
    (``slab`` 1) a slab of one output row per step, whose rows move up each step."""
    from fastconv.kernels import tuning

    if slab is not None:
        monkeypatch.setattr(tuning, "PLAN_EXPAND_SCRATCH", 0.0)
    torch.manual_seed(stride + batch)
    module = zoo.randomise(_Inverted(stride), size=size)
    net = _check(module, np.random.default_rng(stride).standard_normal((batch, 3, *size)),
                 dtype)
    block = next(n for n in next(iter(net._plans.values())).plan.nodes if n.layers == 3)
    assert block.name == ("layer expand.0 (Conv2d) + layer dw.0 (Conv2d) + layer project.0 "
                          "(Conv2d)")
    assert block.choice.kind == "expanded_separable"
    assert block.kernel.startswith(f"pointwise 1x1 + depthwise 3x3/{stride} + pointwise 1x1")
    assert bool(block.choice.tail.attrs.get("residual")) == (stride == 1)
    if slab is not None:  # no room in the cache: one output row per step
        assert block.choice.rows_per_step == 1


class _WinogradResidual(nn.Module if torch is not None else object):
    """A 3x3 layer wide enough for Winograd adding a residual before its activation (or
    after it); the residual is read with padding by that layer too, so its buffer has a
    border."""

    def __init__(self, after):
        super().__init__()
        self.after = after
        self.stem = nn.Conv2d(3, 72, 3, padding=1)
        self.conv = nn.Conv2d(72, 72, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(72)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.bn(self.conv(x))
        return torch.relu(y) + x if self.after else torch.relu(y + x)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("after, batch, size", [(False, 2, (9, 7)), (True, 1, (10, 13)),
                                                (False, 3, (6, 6))])
def test_winograd_adds_a_residual_in_its_output_transform(after, batch, size, dtype):
    """ResNet's second convolution: Winograd with the shortcut added in the output transform,
    before or after the activation, on tiles cut by odd sizes."""
    torch.manual_seed(batch)
    module = zoo.randomise(_WinogradResidual(after), size=size)
    net = _check(module, np.random.default_rng(batch).standard_normal((batch, 3, *size)),
                 dtype)
    assert _choices(net)["layer conv (Conv2d)"].kind == "winograd"
    assert (_kernels(net)["layer conv (Conv2d)"]
            == "conv 3x3/1 + residual as Winograd F(2x2, 3x3) (register tiles)")
    conv = next(n for n in net.graph.nodes if n.name == "layer conv (Conv2d)")
    assert bool(conv.attrs["residual_after"]) == after


class _TwoReaders(nn.Module if torch is not None else object):
    """An expand layer whose output a second layer reads too, and one before a dilated
    depthwise layer: neither can run inside the pair after it."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(4, 12, 1)
        self.dw = nn.Conv2d(12, 12, 3, 1, 1, groups=12)
        self.project = nn.Conv2d(12, 4, 1)
        self.side = nn.Conv2d(12, 4, 1)
        self.expand2 = nn.Conv2d(4, 12, 1)
        self.dilated = nn.Conv2d(12, 12, 3, 1, 2, dilation=2, groups=12)
        self.project2 = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        e = torch.relu(self.expand(x))
        y = self.project(self.dw(e)) + self.side(e)
        return self.project2(self.dilated(self.expand2(y)))


def test_an_expand_layer_runs_apart_where_it_cannot_fuse():
    net = _check(_TwoReaders().eval(), np.random.default_rng(3).standard_normal((2, 4, 10, 9)),
                 np.float64)
    plan = next(iter(net._plans.values())).plan
    assert all(n.layers < 3 for n in plan.nodes)
    assert sum(n.layers == 2 for n in plan.nodes) == 2  # the two pairs still fuse


class _AddAfterReLU(nn.Module if torch is not None else object):
    """act(conv(x)) + x: the residual is added after the activation; a ReLU after that is a
    node of its own."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.other = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x)) + x
        z = self.other(x) + y  # the later producer takes the earlier one as its residual
        return torch.relu(z) + torch.nn.functional.adaptive_avg_pool2d(z, 1)


def test_residual_after_the_activation_and_broadcast_additions():
    net = _check(_AddAfterReLU().eval(), np.random.default_rng(2).standard_normal((2, 4, 7, 9)),
                 np.float64)
    conv = next(n for n in net.graph.nodes if n.name == "layer conv (Conv2d)")
    assert conv.attrs["residual"] == "input" and conv.attrs["residual_after"]
    kernels = _kernels(net)
    assert "(N, C, 1, 1) over the pixels" in kernels["fx node 'add_2' (call_function add)"]


class _Concat(nn.Module if torch is not None else object):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 5, 1), nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        y = torch.cat([self.a(x), torch.relu(self.b(x)), x], 1)
        return torch.nn.functional.relu6(y).view(y.size(0), -1)


def test_concatenation_and_view_flatten():
    _check(_Concat().eval(), np.random.default_rng(3).standard_normal((3, 3, 5, 6)), np.float32)


class _Fire(nn.Module if torch is not None else object):
    """SqueezeNet's fire module and more: five branches meet in one concatenation, read with
    padding by a 3x3 convolution; a depthwise branch, a Winograd branch and a value read
    twice are copied, the GEMM-tile branches written in place."""

    def __init__(self, c=64):
        super().__init__()
        self.squeeze = nn.Conv2d(3, c, 1)
        self.expand1 = nn.Conv2d(c, 8, 1)
        self.expand3 = nn.Conv2d(c, 7, 3, padding=1)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.separable = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c),
                                       nn.Conv2d(c, 9, 1), nn.ReLU())
        self.after = nn.Conv2d(8 + 7 + c + 9 + c, 5, 3, padding=1)

    def forward(self, x):
        s = torch.relu(self.squeeze(x))
        y = torch.cat([self.expand1(s), torch.relu(self.expand3(s)), self.dw(s),
                       self.separable(s), s], 1)
        return self.after(y)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_concatenation_inputs_are_written_in_place(dtype):
    net = _check(_Fire().eval(), np.random.default_rng(5).standard_normal((2, 3, 40, 43)),
                 dtype)
    kernels = _kernels(net)
    assert _choices(net)["layer expand3 (Conv2d)"].kind == "winograd"
    concat = next(k for k in kernels.values() if k.startswith("concat"))
    # expand1 and the fused separable pair in place; expand3 (Winograd), dw and s copied
    assert concat == ("concat of 5 (2 written in place by their producers, 3 copied into "
                      "channel slices)")


class _Branches(nn.Module if torch is not None else object):
    def __init__(self, body):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.body = body

    def forward(self, x):
        return self.body(self, self.conv(x))


@pytest.mark.parametrize("body, error, message", [
    (lambda m, x: torch.log_softmax(x, 1), TypeError,
     r"fx node 'log_softmax' \(call_function log_softmax\) is not supported by "
     r"Network.from_torch"),
    (lambda m, x: torch.cat([x, x], 2), ValueError,
     r"fx node 'cat' \(call_function cat\): torch.cat along dim=2 is not supported"),
    (lambda m, x: torch.flatten(x), ValueError, r"only flatten\(x, 1\) is supported"),
    (lambda m, x: x + 1, TypeError, r"fx node 'add' \(call_function add\): expected a tensor"),
    (lambda m, x: x.view(-1), ValueError, r"only x.view\(x.size\(0\), -1\) is supported"),
    (lambda m, x: torch.add(x, x, alpha=2), ValueError, r"only a \+ b is supported"),
    (lambda m, x: (x, x), TypeError, r"plans modules of one output tensor"),
    (lambda m, x: x.mean(1), ValueError, r"only global average pooling"),
])
def test_fx_refusals_name_the_node(body, error, message):
    with pytest.raises(error, match=message):
        fc.Network.from_torch(_Branches(body).eval())


class _TwoInputs(nn.Module if torch is not None else object):
    def forward(self, x, y):
        return x + y


class _Untraceable(nn.Module if torch is not None else object):
    def forward(self, x):
        return x if x.sum() > 0 else -x


@pytest.mark.parametrize("module, message", [
    (lambda: _TwoInputs(), r"plans modules of one input, but _TwoInputs.forward takes another"),
    (lambda: _Untraceable(), r"could not trace _Untraceable with torch.fx"),
])
def test_modules_the_plan_cannot_take(module, message):
    with pytest.raises(TypeError, match=message):
        fc.Network.from_torch(module().eval())


class _Mismatch(nn.Module if torch is not None else object):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 3), nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def test_shapes_that_do_not_fit_are_refused_at_the_call():
    net = fc.Network.from_torch(_Mismatch().eval())
    with pytest.raises(ValueError, match=r"fx node 'cat' \(call_function cat\): Sizes of "
                                         r"tensors must match except in dimension 1; got "
                                         r"\[1, 2, 3, 4\], \[1, 2, 5, 6\]"):
        net(np.zeros((1, 3, 5, 6), np.float32))
    with pytest.raises(ValueError, match=r"expected input\[1, 4, 5, 6\] to have 3 channels"):
        net(np.zeros((1, 4, 5, 6), np.float32))


def test_a_single_layer_module():
    _check(nn.Conv2d(3, 4, 3, 2, 1).eval(), np.random.default_rng(4).standard_normal(
        (2, 3, 9, 8)), np.float32)


@needs_torch
def test_conv_transpose_from_torch():
    """nn.ConvTranspose2d whose kernel is its stride (a U-Net's up-convolution), in a
    Sequential and traced, against torch; another one is refused naming the layer."""
    torch.manual_seed(0)
    up = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                             torch.nn.ConvTranspose2d(8, 4, 2, 2), torch.nn.BatchNorm2d(4),
                             torch.nn.ReLU()).eval()
    up[2].running_mean.uniform_(-1, 1)
    x = torch.randn(2, 3, 5, 7)
    traced = _Traced(up).eval()
    with torch.no_grad():
        expected, relu = up(x).numpy(), traced(x).numpy()
    np.testing.assert_allclose(fc.Network.from_torch(up)(x.numpy()), expected, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(fc.Network.from_torch(traced)(x.numpy()), relu, rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match=r"layer 0 \(ConvTranspose2d\): padding='same'.*is "
                                         r"not supported by Network.from_torch"):
        layer = torch.nn.ConvTranspose2d(3, 4, 3, 2)
        layer.padding = "same"
        fc.Network.from_torch(torch.nn.Sequential(layer).eval())


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("args", [
    dict(kernel_size=3, stride=2, padding=1, output_padding=1),  # the usual 2x up
    dict(kernel_size=4, stride=2, padding=1),  # a DCGAN's / a segmentation head's
    dict(kernel_size=(3, 2), stride=(1, 3), padding=(2, 0), dilation=(2, 1)),
    dict(kernel_size=2, stride=3, groups=2),  # phases without taps: the bias alone
    dict(kernel_size=5, stride=2, padding=2, output_padding=1, groups=4, bias=False),
    dict(kernel_size=1, stride=1, padding=0),
])
def test_any_conv_transpose_runs_as_one_convolution_per_phase(args, dtype):
    """nn.ConvTranspose2d of any stride, padding, output padding, dilation and groups (a
    batch norm after it folded, a ReLU fused) against torch, odd sizes, batch 2."""
    torch.manual_seed(1)
    c_in, c_out = 4, 8
    up = torch.nn.Sequential(torch.nn.Conv2d(3, c_in, 3, padding=1),
                             torch.nn.ConvTranspose2d(c_in, c_out, **args),
                             torch.nn.BatchNorm2d(c_out), torch.nn.ReLU()).eval()
    up[2].running_mean.uniform_(-1, 1)
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 7))
    net, _ = check_plan(up, x, dtype)
    pointwise = args == dict(kernel_size=1, stride=1, padding=0)  # a 1x1 convolution
    assert ("convolutions, one per output phase" in str(net)) != pointwise


class _Traced(torch.nn.Module if torch is not None else object):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.relu(self.inner(x))


class _Gates(torch.nn.Module if torch is not None else object):
    """SiLU and HardSwish as their exporters spell them: x * sigmoid(x), x * hardsigmoid(x)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        y = y * torch.sigmoid(y)
        z = self.b(y)
        return z * torch.nn.functional.hardsigmoid(z)


@needs_torch
def test_gated_activations_fuse_into_the_epilogue():
    torch.manual_seed(1)
    module = _Gates().eval()
    x = torch.randn(2, 3, 6, 7)
    with torch.no_grad():
        expected = module(x).numpy()
    plan = fc.Network.from_torch(module)
    np.testing.assert_allclose(plan(x.numpy()), expected, rtol=1e-5, atol=1e-5)
    shown = str(plan)
    assert "epilogue silu" in shown and "epilogue hardswish" in shown
    assert [n.op for n in plan.graph.nodes] == ["conv", "conv"]
