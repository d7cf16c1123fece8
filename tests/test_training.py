"""Training a whole network: ``Network.from_torch(module, training=True)`` and
``fastconv.torch.Planned`` against torch autograd (outputs, the input's gradient, every
parameter's, the running statistics), optimizer steps side by side, dropout's mask, a real
data set, and the refusals."""

from __future__ import annotations

import copy
import json
import re
import textwrap

import numpy as np
import pytest
from helpers import needs_torch, torch

import fastconv as fc
from fastconv import cli
from fastconv.network.training import TrainingNetwork

pytestmark = needs_torch

if torch is not None:
    from fastconv.torch import Planned

    nn = torch.nn
    F = torch.nn.functional

    class Residual(nn.Module):
        """A residual block, a concatenation, squeeze-and-excitation, the functional
        activations and a view: what torch.fx traces into the graph's joins."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.a = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
            self.bn_a = nn.BatchNorm2d(8, affine=False)
            self.b = nn.Conv2d(8, 4, 1)
            self.squeeze = nn.Conv2d(12, 4, 1)
            self.excite = nn.Conv2d(4, 12, 1)
            self.pool = nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True)
            self.average = nn.AvgPool2d(3, 2, 1, ceil_mode=True)  # the padding counted
            self.fc = nn.Linear(12, 6)

        def forward(self, x):
            x = F.relu(self.bn(self.stem(x)))
            y = torch.clamp(self.bn_a(self.a(x)), -0.5, 1.0) + x
            y = torch.cat([y, F.gelu(self.b(y))], dim=1)
            gate = torch.sigmoid(self.excite(F.silu(self.squeeze(F.adaptive_avg_pool2d(y, 1)))))
            y = self.average(self.pool(y * gate))
            y = torch.tanh(y).mean((2, 3), keepdim=True)
            return F.softmax(self.fc(y.view(y.size(0), -1)), dim=1)

    def sequential():
        """Every layer the training graph reads, in a Sequential."""
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),
            nn.BatchNorm2d(8, momentum=None), nn.ReLU6(),
            nn.MaxPool2d(3, 2, 1, dilation=1, ceil_mode=True), nn.Conv2d(8, 12, (1, 3)),
            nn.BatchNorm2d(12, track_running_stats=False), nn.LeakyReLU(0.2),
            nn.AvgPool2d(3, 1, 1, ceil_mode=True, count_include_pad=False), nn.Hardswish(),
            nn.Conv2d(12, 12, 3, padding=1, groups=3), nn.SiLU(), nn.Mish(), nn.Sigmoid(),
            nn.AvgPool2d(2, divisor_override=3), nn.GELU(approximate="tanh"),
            nn.Hardtanh(-0.3, 0.4),
            nn.Dropout(0.0), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(12, 5), nn.Tanh(),
            nn.Linear(5, 4))


MODULES = {"sequential": lambda: sequential(), "residual": lambda: Residual()}


@pytest.fixture(autouse=True, params=["plan", "per-call"])
def conv_path(request, monkeypatch):
    """Every test twice: each convolution the rule lets on the plan's kernels there
    (whatever its channels), and every batch norm on its images as rows (whatever their
    size), or neither; and the arrays of the last steps reused whatever their size."""
    from fastconv.kernels import tuning
    from fastconv.network import training

    on_plan = request.param == "plan"
    monkeypatch.setattr(tuning, "TRAIN_PLAN_MIN_CHANNELS", 1 if on_plan else 1 << 30)
    monkeypatch.setattr(tuning, "TRAIN_PLAN_MIN_PIXELS", 1 if on_plan else 1 << 30)
    monkeypatch.setattr(tuning, "TRAIN_PLAN_WEIGHT_PER_OUTPUT", 1 << 30 if on_plan else 0)
    monkeypatch.setattr(tuning, "TRAIN_ROWS_BELOW", 1 << 30 if on_plan else 0)
    monkeypatch.setattr(training._Reused, "SMALLEST", 0)  # every array reused when it can be
    return request.param
TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}


def _torch_step(module, x, g):
    xt = torch.from_numpy(x.copy()).requires_grad_()
    y = module(xt)
    y.backward(torch.from_numpy(g))
    return y.detach().numpy(), xt.grad.numpy()


def _close(actual, expected, dtype, what):
    scale = max(1.0, float(np.abs(expected).max(initial=0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE[dtype] * scale,
                               err_msg=what)


def _backend(name):
    if name not in fc.dispatch.available_backends():
        pytest.skip(f"the {name} kernels are not built")
    return name


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", list(MODULES))
def test_against_torch_autograd(which, dtype, backend):
    """Outputs, input gradient, every parameter's gradient and the running statistics equal
    torch's, over two steps (the second reads the statistics the first updated: momentum
    None averages them), on odd, non-square inputs."""
    torch.manual_seed(0)
    module = MODULES[which]().to(torch.float64 if dtype == np.float64 else torch.float32)
    ours = fc.Network.from_torch(module, training=True, backend=_backend(backend))
    rng = np.random.default_rng(1)
    for shape in ((3, 3, 17, 13), (2, 3, 11, 15)):
        x = rng.standard_normal(shape).astype(dtype)
        y = ours.forward(x)
        g = rng.standard_normal(y.shape).astype(dtype)
        gx = ours.backward(g)
        module.zero_grad()
        y_ref, gx_ref = _torch_step(module, x, g)
        assert y.dtype == gx.dtype == dtype
        _close(y, y_ref, dtype, "output")
        _close(gx, gx_ref, dtype, "input gradient")
        for name, p in module.named_parameters():
            assert ours.grads[name].shape == p.shape
            _close(ours.grads[name], p.grad.numpy(), dtype, name)
        for name, b in module.named_buffers():
            _close(ours.buffers[name], b.numpy(), dtype, name)
    assert any(np.abs(g).max() > 0 for g in ours.grads.values())


@pytest.mark.parametrize("conv", [
    dict(kernel_size=2, stride=2), dict(kernel_size=1, stride=2),
    dict(kernel_size=3, stride=(2, 1), padding=(2, 0), dilation=(1, 2)),
    dict(kernel_size=3, stride=2, padding=1, groups=2), dict(kernel_size=5, padding=4),
    dict(kernel_size=(3, 1), stride=3, padding=(1, 0), bias=False)])
@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_convolution_geometries_against_torch(conv, backend):
    """Each convolution's output, input gradient and parameter gradients on the plan's
    kernels of either executor (or the per-call ones where the plan rewrites the input
    gradient) equal torch's
    for strides, dilations, groups, pads and kernels as large as their stride."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(4, 6, **conv)).double()
    ours = fc.Network.from_torch(module, training=True, backend=_backend(backend))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 9, 8))
    y = ours.forward(x)
    g = rng.standard_normal(y.shape)
    gx = ours.backward(g)
    y_ref, gx_ref = _torch_step(module, x, g)
    _close(y, y_ref, np.float64, "output")
    _close(gx, gx_ref, np.float64, "input gradient")
    for name, p in module.named_parameters():
        _close(ours.grads[name], p.grad.numpy(), np.float64, name)


@pytest.mark.parametrize("pool", [dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=2, stride=1, dilation=2, ceil_mode=True)])
def test_max_pooling_of_ties_infinities_and_nans_as_torch(pool):
    """Max pooling's output and gradient where values tie (the first wins), are infinite or
    NaN (the last NaN wins), as torch's; the gradient shows which tap won."""
    module = nn.Sequential(nn.MaxPool2d(**pool))  # no parameters: float32
    ours = fc.Network.from_torch(module, training=True)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float32)  # ties everywhere
    x[0, 0, 2, 3] = x[0, 0, 2, 4] = np.nan
    x[0, 1, 4:7, 2:5] = -np.inf
    x[1, 0, 0, 0] = x[1, 2, 5, 5] = np.inf
    x[1, 1] = -np.inf
    y = ours.forward(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = ours.backward(g)
    y_ref, gx_ref = _torch_step(module, x, g)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(gx, gx_ref, rtol=0, atol=1e-6)


def test_arrays_are_reused_only_when_nothing_holds_them():
    """A step writes into the arrays of the step before that nothing holds any more; an
    output the caller keeps (or a view of it) is never written again."""
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.MaxPool2d(2)).double()
    ours = fc.Network.from_torch(module, training=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9))
    kept = ours.forward(x)
    ours.backward(np.ones_like(kept))
    view = ours.forward(x + 1)[0]
    ours.backward(np.ones(kept.shape))
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(kept, expected, rtol=0, atol=1e-12)  # not overwritten
    assert not np.shares_memory(view, kept)
    dropped = ours.forward(x + 1)
    address = dropped.ctypes.data
    del dropped
    ours.backward(np.ones(kept.shape))
    again = ours.forward(x + 2)
    assert again.ctypes.data == address  # the dropped output's memory, written again
    assert not np.shares_memory(again, view)
    np.testing.assert_allclose(view, module(torch.from_numpy(x + 1)).detach().numpy()[0],
                               rtol=0, atol=1e-12)


ACTIVATIONS = ["ReLU", "ReLU6", "Hardtanh", "LeakyReLU", "Hardsigmoid", "Hardswish",
               "Sigmoid", "SiLU", "Tanh", "Mish", "GELU", "GELU_tanh"]


def _activation(name):
    return nn.GELU(approximate="tanh") if name == "GELU_tanh" else getattr(nn, name)()


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradients_by_finite_differences(name):
    """Each activation's gradient against central differences (float64), away from the
    kinks; and against torch's (whose float64 Hardsigmoid gradient is float32's 1/6)."""
    module = nn.Sequential(nn.Conv2d(3, 3, 1), _activation(name)).double()  # float64
    with torch.no_grad():  # the identity: the network is the activation, value by value
        module[0].weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
        module[0].bias.zero_()
    ours = fc.Network.from_torch(module, training=True)
    x = np.random.default_rng(10).uniform(-4, 4, (2, 3, 5, 7))
    kinks = np.array([-3.0, -1.0, 0.0, 1.0, 3.0, 6.0])
    x = np.where(np.abs(x[..., None] - kinks).min(-1) < 1e-3, 0.5, x)  # no difference across
    g = np.random.default_rng(11).standard_normal(x.shape)
    ours.forward(x)
    gx = ours.backward(g)
    h = 1e-6
    up, down = (fc.Network.from_torch(module, training=True).forward(x + s * h)
                for s in (1, -1))
    np.testing.assert_allclose(gx, g * (up - down) / (2 * h), rtol=1e-6, atol=1e-8)
    _, gx_ref = _torch_step(module, x, g)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-7 if name == "Hardsigmoid" else 1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("clamp", ["relu", "hardtanh", "torch.clamp"])
@pytest.mark.parametrize("after_batch_norm", [False, True])
def test_a_nan_through_a_clamp_as_torch(clamp, after_batch_norm):
    """ReLU passes a NaN's gradient, Hardtanh and torch.clamp do not, as torch's vectorised
    kernels (alone, and fused after a batch norm)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 1)
            self.norm = nn.BatchNorm2d(3) if after_batch_norm else nn.Identity()

        def forward(self, x):
            y = self.norm(self.conv(x))
            if clamp == "relu":
                return F.relu(y)
            return F.hardtanh(y, -0.5, 0.5) if clamp == "hardtanh" else torch.clamp(y, -0.5, 0.5)

    torch.manual_seed(0)
    module = Net().double()
    x = np.random.default_rng(15).standard_normal((2, 2, 8, 8))  # torch's vectorised kernels
    x[1, 0, 2, 3] = np.nan
    g = np.random.default_rng(16).standard_normal((2, 3, 8, 8))
    ours = fc.Network.from_torch(module, training=True)
    y = ours.forward(x)
    gx = ours.backward(g)
    y_ref, gx_ref = _torch_step(module, x, g)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-12, atol=1e-12)
    for name, p in module.named_parameters():
        np.testing.assert_allclose(ours.grads[name], p.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("values", ["far from zero", "an infinity"])
def test_batch_norm_statistics_as_torch(values):
    """The sums of one pass keep a far-off mean's variance to float64's digits; a channel of
    an infinity gets torch's infinite mean and NaN variance."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()).double()
    rng = np.random.default_rng(25)
    x = 1e4 + 1e-3 * rng.standard_normal((3, 4, 2, 3))
    x[:, 1] -= 2e4  # a mean of -1e4
    if values == "an infinity":
        x[1, 2, 1, 1] = np.inf
    g = rng.standard_normal(x.shape)
    ours = fc.Network.from_torch(copy.deepcopy(module), training=True)
    y, gx = ours.forward(x), ours.backward(g)
    y_ref, gx_ref = _torch_step(module, x, g)
    tolerance = dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(y, y_ref, **tolerance)
    np.testing.assert_allclose(gx, gx_ref, **tolerance)
    for name, b in module.named_buffers():
        np.testing.assert_allclose(ours.buffers[name], b.numpy(), **tolerance)


def test_a_batch_of_no_images_as_torch():
    """Empty outputs and gradients, zero parameter gradients; each batch norm counts the
    batch and keeps its statistics."""
    torch.manual_seed(0)
    module = sequential().double()
    ours = fc.Network.from_torch(copy.deepcopy(module), training=True)
    x = np.zeros((0, 3, 12, 13))
    y = ours.forward(x)
    gx = ours.backward(np.zeros(y.shape))
    y_ref, gx_ref = _torch_step(module, x, np.zeros(y.shape))
    assert y.shape == y_ref.shape == (0, 4) and gx.shape == gx_ref.shape == x.shape
    for name, p in module.named_parameters():
        np.testing.assert_array_equal(ours.grads[name], np.zeros(p.shape))
    for name, b in module.named_buffers():
        np.testing.assert_array_equal(ours.buffers[name], b.numpy())
    assert ours.buffers["1.num_batches_tracked"] == 1


def test_taps_reading_only_padding_as_torch():
    """On maps of one and two pixels a 3x3 layer's outer taps read only padding: the same
    outputs and gradients as torch's; and where such a tap's weight or the gradient is not
    finite, torch's NaNs (the whole kernel runs)."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                           nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(), nn.Linear(8, 2)).double()
    x = np.random.default_rng(17).standard_normal((4, 3, 2, 2))
    g = np.random.default_rng(18).standard_normal((4, 2))
    for case in ("finite", "an infinite weight", "a NaN gradient"):
        if case == "an infinite weight":
            with torch.no_grad():
                module[2].weight[0, 0, 0, 0] = np.inf  # a corner: read only padding
        if case == "a NaN gradient":
            g[1, 0] = np.nan
        ours = fc.Network.from_torch(module, training=True)
        y = ours.forward(x)
        gx = ours.backward(g)
        module.zero_grad()
        y_ref, gx_ref = _torch_step(module, x, g)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12, err_msg=case)
        np.testing.assert_allclose(gx, gx_ref, rtol=1e-12, atol=1e-12, err_msg=case)
        for name, p in module.named_parameters():
            np.testing.assert_allclose(ours.grads[name], p.grad.numpy(), rtol=1e-12,
                                       atol=1e-12, err_msg=f"{case}: {name}")
    assert np.isnan(y).any() and np.isnan(ours.grads["2.weight"]).any()


def test_backward_without_the_input_gradient():
    torch.manual_seed(0)
    ours = fc.Network.from_torch(Residual().double(), training=True)
    x = np.random.default_rng(13).standard_normal((2, 3, 8, 9))
    g = np.random.default_rng(14).standard_normal((2, 6))
    ours.forward(x)
    full = ours.backward(g)
    expected = {name: v.copy() for name, v in ours.grads.items()}
    ours.forward(x)
    assert ours.backward(g, input_grad=False) is None and full.shape == x.shape
    for name, v in ours.grads.items():
        np.testing.assert_array_equal(v, expected[name])


@pytest.mark.parametrize("layout", ["fortran", "negative strides", "read-only"])
def test_any_input_layout(layout):
    torch.manual_seed(0)
    module = sequential().double()
    x = np.random.default_rng(2).standard_normal((2, 3, 12, 13))
    if layout == "fortran":
        given = np.asfortranarray(x)
    elif layout == "negative strides":
        given = x[:, :, ::-1][:, :, ::-1]
    else:
        given = x.copy()
        given.flags.writeable = False
    ours = fc.Network.from_torch(copy.deepcopy(module), training=True)
    y = ours.forward(given)
    g = np.ones_like(y)
    gx = ours.backward(g)
    y_ref, gx_ref = _torch_step(module, x, g)
    _close(y, y_ref, np.float64, "output")
    _close(gx, gx_ref, np.float64, "input gradient")


def test_parameters_changed_in_place_are_read():
    torch.manual_seed(0)
    module = sequential().double()
    ours = fc.Network.from_torch(module, training=True)
    with torch.no_grad():
        module[0].weight.mul_(0.5)
        module[22].bias.add_(1.0)
    ours.parameters["0.weight"] *= 0.5
    ours.parameters["22.bias"] += 1.0
    x = np.random.default_rng(3).standard_normal((2, 3, 12, 13))
    y_ref, _ = _torch_step(module, x, np.zeros((2, 4)))
    _close(ours.forward(x), y_ref, np.float64, "output after the change")


def test_a_tied_layer_sums_its_gradients():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(F.relu(self.conv(x)))

    torch.manual_seed(0)
    module = Twice().double()
    ours = fc.Network.from_torch(module, training=True)
    x = np.random.default_rng(4).standard_normal((2, 4, 6, 7))
    g = np.random.default_rng(5).standard_normal((2, 4, 6, 7))
    ours.forward(x)
    gx = ours.backward(g)
    _, gx_ref = _torch_step(module, x, g)
    _close(gx, gx_ref, np.float64, "input gradient")
    _close(ours.grads["conv.weight"], module.conv.weight.grad.numpy(), np.float64, "weight")


def test_dropout_mask():
    """Each value kept with probability 1 - p and scaled by 1 / (1 - p), the gradient
    through the same mask; the network's own generator, seeded."""
    p = 0.3
    module = nn.Sequential(nn.Dropout(p))  # no parameters: float32
    x = np.ones((4, 8, 16, 16), np.float32)
    first = TrainingNetwork(module, seed=7)
    y = first.forward(x)
    kept = y != 0
    scale = np.float32(1 / (1 - p))
    assert set(np.unique(y)) == {0.0, scale}
    n = kept.size
    assert abs((1 - kept.mean()) - p) < 5 * np.sqrt(p * (1 - p) / n)
    g = np.random.default_rng(6).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(first.backward(g), np.where(kept, g * scale, 0))
    again = TrainingNetwork(module, seed=7).forward(x)
    np.testing.assert_array_equal(again, y)


def test_functional_dropout_in_training_is_kept():
    class Drop(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5, training=self.training)

    ours = fc.Network.from_torch(Drop(), training=True)
    assert [n.attrs.get("dropout") for n in ours.graph.nodes] == [0.5]
    y = ours.forward(np.ones((2, 3, 4, 4), np.float32))
    assert set(np.unique(y)) <= {0.0, 2.0} and 0 < (y == 0).mean() < 1


def test_planned_trains_as_torch_does():
    """SGD with momentum, side by side for several steps from one initialisation: the same
    parameters and running statistics; then eval() gives the inference plan, planned again
    after the parameters change."""
    torch.manual_seed(0)
    reference = Residual().double()
    ours = Planned(copy.deepcopy(reference))
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
                  for m in (reference, ours)]
    rng = np.random.default_rng(8)
    for _ in range(4):
        x = torch.from_numpy(rng.standard_normal((4, 3, 12, 13)))
        target = torch.from_numpy(rng.integers(0, 6, 4))
        for model, optimizer in zip((reference, ours), optimizers):
            optimizer.zero_grad()
            F.cross_entropy(model(x), target).backward()
            optimizer.step()
    ours_state = {k.removeprefix("module."): v for k, v in ours.state_dict().items()}
    for name, value in reference.state_dict().items():
        _close(ours_state[name].numpy(), value.numpy(), np.float64, name)
    reference.eval()
    ours.eval()
    x = torch.from_numpy(rng.standard_normal((2, 3, 12, 13)))
    with torch.no_grad():
        _close(ours(x).numpy(), reference(x).numpy(), np.float64, "eval output")
        for model in (reference, ours):
            next(model.parameters()).mul_(0.5)
        _close(ours(x).numpy(), reference(x).numpy(), np.float64, "eval after a change")
    batch_statistics = Planned(sequential().double()).eval()  # a layer the plan cannot fold
    _refuses(ValueError, "layer 8 (BatchNorm2d) keeps no running statistics",
             lambda: batch_statistics(x))


def test_two_forwards_then_their_backwards():
    """autograd may run two forwards before either backward: each keeps its own."""
    torch.manual_seed(0)
    reference = Residual().double()
    ours = Planned(copy.deepcopy(reference))
    rng = np.random.default_rng(9)
    xs = [torch.from_numpy(rng.standard_normal((2, 3, 8, 8))) for _ in range(2)]
    for model in (reference, ours):
        outputs = [model(x) for x in xs]
        (outputs[0].sum() + 2 * outputs[1].pow(2).sum()).backward()
    for (name, p), q in zip(reference.named_parameters(), ours.parameters()):
        _close(q.grad.numpy(), p.grad.numpy(), np.float64, name)


def test_digits_reach_torchs_accuracy():
    """A small CNN trained on scikit-learn's handwritten digits from torch's initialisation
    reaches torch's test accuracy, prediction for prediction (float64)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0)[:, None]
    labels = digits.target
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    reference = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4, 10)).double()
    ours = Planned(copy.deepcopy(reference))
    predictions = []
    for model in (reference, ours):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        model.train()
        for epoch in range(8):
            shuffled = np.random.default_rng(epoch).permutation(train)
            for start in range(0, len(shuffled), 32):
                batch = shuffled[start:start + 32]
                optimizer.zero_grad()
                F.cross_entropy(model(torch.from_numpy(images[batch])),
                                torch.from_numpy(labels[batch])).backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            predictions.append(model(torch.from_numpy(images[test])).argmax(1).numpy())
    accuracy = [(p == labels[test]).mean() for p in predictions]
    assert min(accuracy) >= 0.95, accuracy
    np.testing.assert_array_equal(predictions[1], predictions[0])


def test_profile_leaves_the_network_as_it_was():
    """Each node's forward and backward timed, the convolutions' and linear layers' FLOPs
    counted; the running statistics and the dropout generator as before."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8),
                           nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(8 * 5 * 6, 3))
    ours = TrainingNetwork(module, seed=1)
    x = np.random.default_rng(12).standard_normal((2, 3, 9, 11)).astype(np.float32)
    before = {name: b.copy() for name, b in ours.buffers.items()}
    result = ours.profile(x, budget=0.05)
    for name, b in ours.buffers.items():
        np.testing.assert_array_equal(b, before[name])
    np.testing.assert_array_equal(ours.forward(x), TrainingNetwork(module, seed=1).forward(x))
    rows = result.to_dict()["nodes"]
    assert [r["op"] for r in rows] == ["conv", "batchnorm", "act (fused)", "identity",
                                       "flatten", "linear"]
    conv_macs, linear_macs = 2 * 5 * 6 * 8 * 27, 2 * 8 * 5 * 6 * 3
    assert rows[0]["flops"] == [2 * conv_macs, 2 * conv_macs]  # no gradient of the input
    assert rows[5]["flops"] == [2 * linear_macs, 4 * linear_macs]
    assert rows[0]["output"] == (2, 8, 5, 6) and rows[5]["output"] == (2, 3)
    assert all(t > 0 for r in rows for t in r["seconds"]) and result.seconds > 0


def test_cli_profile_train(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinytrain.py").write_text(textwrap.dedent("""
        from torch import nn

        def build():
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "t.json"
    assert cli.main(["profile", "tinytrain:build", "--train", "--input-shape", "3,9,11",
                     "--batch", "2", "--budget", "0.1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["steps"]) == {"planned", "per-call", "torch"}
    assert result["steps"]["torch"]["ratio"] == 1.0
    assert result["input"] == [2, 3, 9, 11]
    assert [n["op"] for n in result["nodes"]][:3] == ["conv", "batchnorm", "act (fused)"]
    assert any(o["operator"].startswith("aten::") for o in result["torch_operators"])
    printed = capsys.readouterr().out
    assert "Whole training steps" in printed and "layer 0 (Conv2d)" in printed
    for argv, message in (
            (["profile", "tinytrain:build", "--train", "--compare", "onnxruntime"],
             "unknown engine 'onnxruntime' for --compare with --train"),
            (["profile", "mobilenet-v1", "--train"], "--train needs a torch module: a factory"),
            (["profile", "tinytrain:build", "--train", "--pass", "backward"],
             "--pass, --plan, --convs-only, --csv and --plot do not apply"),
            (["profile", "tinytrain:build", "--train", "--input-shape", "4,9,11"],
             "layer 0 (Conv2d)")):
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err


# --- refusals ------------------------------------------------------------------------------

def _refuses(error, pattern, call):
    with pytest.raises(error, match=re.escape(pattern)):
        call()


def test_refusals():
    torch.manual_seed(0)
    module = sequential().double()
    _refuses(ValueError, "Network.from_torch(training=True) needs a module in training mode, "
             "but the module is in eval mode: call .train() first",
             lambda: fc.Network.from_torch(copy.deepcopy(module).eval(), training=True))
    partly = copy.deepcopy(module)
    partly[1].eval()
    _refuses(ValueError, "but layer 1 (BatchNorm2d) is in eval mode: call .train() first",
             lambda: fc.Network.from_torch(partly, training=True))
    _refuses(TypeError, "layer 0 (ConvTranspose2d) is not supported by Network.from_torch("
             "training=True) yet", lambda: fc.Network.from_torch(
                 nn.Sequential(nn.ConvTranspose2d(3, 3, 2, 2)), training=True))
    _refuses(ValueError, "Network.from_torch(training=True) takes no threads",
             lambda: fc.Network.from_torch(module, threads=2, training=True))
    _refuses(ValueError, "Network supports backend 'auto' or one of ['numba', 'cython'], but "
             "got 'numpy'", lambda: fc.Network.from_torch(module, "numpy", training=True))
    ours = fc.Network.from_torch(module, training=True)
    _refuses(RuntimeError, "TrainingNetwork.backward needs a forward first",
             lambda: ours.backward(np.zeros((2, 4))))
    _refuses(TypeError, "expects input of dtype float64 (the module's), but got float32",
             lambda: ours.forward(np.zeros((2, 3, 8, 8), np.float32)))
    _refuses(TypeError, "expects a NumPy array as input, but got list",
             lambda: ours.forward([[1.0]]))
    _refuses(ValueError, "expects 4-D input (N, C, H, W), but got input of size [3, 8, 8]",
             lambda: ours.forward(np.zeros((3, 8, 8))))
    _refuses(ValueError, "layer 0 (Conv2d)", lambda: ours.forward(np.zeros((2, 5, 8, 8))))
    one_value = fc.Network.from_torch(nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8))
                                      .double(), training=True)
    _refuses(ValueError, "layer 1 (BatchNorm2d): expected more than 1 value per channel when "
             "training, got input size [1, 8, 1, 1]",
             lambda: one_value.forward(np.zeros((1, 3, 1, 1))))
    y = ours.forward(np.zeros((2, 3, 12, 13)))
    _refuses(ValueError, "grad_output of size [2, 5] does not match the output's size [2, 4]",
             lambda: ours.backward(np.zeros((2, 5))))
    _refuses(TypeError, "expects grad_output of dtype float64, but got float32",
             lambda: ours.backward(np.zeros(y.shape, np.float32)))
    ours.backward(np.zeros(y.shape))
    _refuses(RuntimeError, "each forward is gone back through once",
             lambda: ours.backward(np.zeros(y.shape)))
