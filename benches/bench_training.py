"""Whole training steps (forward, cross entropy, backward, SGD with momentum) of the zoo's
networks: fastconv.torch.Planned (the whole network in fastconv), the per-call layers
(each Conv2d a fastconv.torch.Conv2d) and torch (``fastconv.bench.training``), at the
sizes issue "training on the plan" sets its targets at.

    pytest benches/bench_training.py --benchmark-only
    pytest benches/bench_training.py --benchmark-only -k "mobilenet_v1 and batch8"

pytest-benchmark runs one benchmark after another, not interleaved;
``fastconv profile fastconv.bench.zoo:mobilenet_v1 --train --batch 8`` interleaves the
engines with a pause before each, and gives the per-node table beside torch's profiler.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastconv.bench import training

# (zoo network, input size, batch)
CASES = [("mobilenet_v1", 224, 8), ("mobilenet_v1", 224, 32), ("resnet18", 224, 8),
         ("mobilenet_v2", 32, 128), ("resnet18", 32, 128)]


def _label(case):
    name, size, batch = case
    return f"{name}-{size}-batch{batch}"


@pytest.fixture(scope="module", params=CASES, ids=_label)
def case(request):
    torch = pytest.importorskip("torch")
    from fastconv.bench import zoo

    name, size, batch = request.param
    torch.manual_seed(0)
    module = getattr(zoo, name)()
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    return request.param, module, x


@pytest.mark.parametrize("engine", training.ENGINES)
def test_training_step(benchmark, case, engine):
    params, module, x = case
    step = training.trainer(engine, module, x)
    step()
    benchmark.group = _label(params)
    benchmark.pedantic(step, rounds=3, iterations=1)


# One convolution's passes in a training step, on the plan's kernels (one-node plans
# converting NCHW to NHWC and back, ``network.training._PlannedConv``) and on the per-call
# ones: what ``tuning.TRAIN_PLAN_MIN_CHANNELS``, ``TRAIN_PLAN_MIN_PIXELS``,
# ``TRAIN_PLAN_WEIGHT_PER_OUTPUT`` and the rule beside them were chosen from.
#     pytest benches/bench_training.py --benchmark-only -k convolution
# (batch, in, out, size, kernel, stride, groups): the target networks' kinds of layer
LAYERS = [(8, 3, 32, 224, 3, 2, 1), (128, 3, 64, 32, 7, 2, 1), (8, 3, 64, 224, 7, 2, 1),
          (128, 16, 16, 32, 3, 1, 1), (8, 64, 64, 56, 3, 1, 1), (8, 256, 256, 14, 3, 1, 1),
          (128, 64, 64, 8, 3, 1, 1), (128, 256, 256, 2, 3, 1, 1), (128, 256, 512, 2, 3, 2, 1),
          (8, 512, 512, 7, 3, 1, 1), (8, 256, 512, 14, 3, 2, 1), (8, 32, 64, 112, 1, 1, 1),
          (8, 512, 512, 14, 1, 1, 1), (8, 64, 64, 112, 3, 2, 64)]


def _layer_label(layer):
    n, c, o, size, k, s, g = layer
    return f"n{n}-{c}to{o}-{size}px-{k}x{k}s{s}" + (f"g{g}" if g > 1 else "")


@pytest.mark.parametrize("path", ["plan", "per-call"])
@pytest.mark.parametrize("which", ["forward", "input", "weight"])
@pytest.mark.parametrize("layer", LAYERS, ids=_layer_label)
def test_training_convolution(benchmark, layer, which, path):
    from fastconv import api
    from fastconv.network.training import _PlannedConv
    from fastconv.spec import ConvSpec

    n, c, o, size, k, s, g = layer
    spec = ConvSpec(c, o, k, s, k // 2, groups=g, bias=False, input_size=(size, size))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.input_shape(n)).astype(np.float32)
    w = rng.standard_normal(spec.weight_shape).astype(np.float32)
    gy = rng.standard_normal(spec.output_shape(n)).astype(np.float32)
    geometry = dict(stride=s, padding=k // 2, groups=g)
    if path == "plan":
        if which == "weight" and g > 1:
            pytest.skip("the weight gradient as a convolution takes layers without groups")
        planned = _PlannedConv("layer", spec, False, np.dtype(np.float32), "auto")
        run = {"forward": lambda: (planned.load(w, None), planned.forward_net(x)),
               "input": lambda: (planned.load(w, None), planned.input_grad(gy)),
               "weight": lambda: planned.weight_grad(x, gy)}[which]
    else:
        run = {"forward": lambda: api.conv2d(x, w, **geometry),
               "input": lambda: api.conv2d_input_grad(x.shape, w, gy, **geometry),
               "weight": lambda: api.conv2d_weight_grad(x, w.shape, gy, **geometry)}[which]
    run()
    benchmark.group = f"{_layer_label(layer)} {which}"
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


# A batch norm's forward and backward (with the ReLU after it) on its images as rows or plane
# by plane: what ``tuning.TRAIN_ROWS_BELOW`` was chosen from.
#     pytest benches/bench_training.py --benchmark-only -k batch_norm
NORMS = [(128, 576, 1), (128, 384, 2), (128, 256, 3), (128, 192, 4), (128, 144, 8),
         (8, 512, 7), (8, 256, 14), (128, 96, 16)]


@pytest.mark.parametrize("rows", [True, False], ids=["rows", "planes"])
@pytest.mark.parametrize("shape", NORMS, ids=lambda s: f"n{s[0]}-{s[1]}x{s[2]}x{s[2]}")
def test_training_batch_norm(benchmark, monkeypatch, shape, rows):
    import torch

    from fastconv.kernels import tuning
    from fastconv.network.training import TrainingNetwork

    n, c, size = shape
    monkeypatch.setattr(tuning, "TRAIN_ROWS_BELOW", 1 << 30 if rows else 0)
    module = torch.nn.Sequential(torch.nn.BatchNorm2d(c), torch.nn.ReLU()).train()
    network = TrainingNetwork(module)
    x = np.random.default_rng(0).standard_normal((n, c, size, size)).astype(np.float32)
    ones = np.ones_like(x)

    def step():
        network.forward(x)
        network.backward(ones)
    step()
    benchmark.group = f"batch norm n{n} {c}x{size}x{size}"
    benchmark.pedantic(step, rounds=20, iterations=1, warmup_rounds=2)
