"""fastconv.Network against the engines on whole networks: MobileNet v1 (batch norm and ReLU
after every convolution, and the classifier) at batch 1 and 8, its convolutions alone, and the
full-convolution twin; every engine runs the same torch module
(``fastconv.bench.engines``). Then the reference CNNs of ``fastconv.bench.zoo`` (MobileNet v1
and v2, ResNet-18) exported to ONNX: the plan from ``from_onnx`` beside ONNX Runtime and
OpenVINO on the same file.

    pytest benches/bench_plan.py --benchmark-only
    pytest benches/bench_plan.py --benchmark-only -k "batch1 and not full"
    pytest benches/bench_plan.py --benchmark-only -k onnx      # the models from ONNX
    pytest benches/bench_plan.py --benchmark-only -k tasks     # PLAN_TASKS_PER_THREAD
    pytest benches/bench_plan.py --benchmark-only -k separable # PLAN_SEPARABLE_*
    pytest benches/bench_plan.py --benchmark-only -k expand    # PLAN_EXPAND_*
    pytest benches/bench_plan.py --benchmark-only -k family    # the CNN families from ONNX
    pytest benches/bench_plan.py --benchmark-only -k deconv    # PLAN_DECONV_SHUFFLE_BELOW

pytest-benchmark runs one benchmark after another, not interleaved; ``fastconv profile
mobilenet-v1 --plan`` and ``fastconv report`` interleave the engines with a pause between
them, which is how BENCHMARKS.md compares them.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv.bench import engines, report, sources
from fastconv.kernels import tuning

CASES = [("mobilenet-v1", True, 1), ("mobilenet-v1", True, 8), ("mobilenet-v1", False, 1),
         ("mobilenet-v1-full", True, 1)]
ENGINES = ("plan", "per-call", "torch", "onnxruntime", "openvino", "litert")


def _label(case):
    model, bn_relu, batch = case
    return f"{model}-{'bn-relu' if bn_relu else 'convs'}-batch{batch}"


@pytest.fixture(scope="module", params=CASES, ids=_label)
def case(request):
    model, bn_relu, batch = request.param
    if engines.available("torch"):
        pytest.skip("the models are torch modules")
    module = engines.torch_model(model, bn_relu)
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    return request.param, module, x


@pytest.mark.parametrize("name", ENGINES)
def test_network(benchmark, case, name):
    params, module, x = case
    why = engines.available(name)
    if why:
        pytest.skip(why)
    call = engines.engine(name, module, x, fc.config.get_num_threads())
    call()
    benchmark.group = _label(params)
    benchmark(call)


@pytest.mark.parametrize("tasks", [1, 2, 4])
def test_tasks(benchmark, monkeypatch, tasks):
    """PLAN_TASKS_PER_THREAD on MobileNet v1 at batch 1."""
    monkeypatch.setattr(tuning, "PLAN_TASKS_PER_THREAD", tasks)
    if engines.available("torch"):
        pytest.skip("the models are torch modules")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    call = engines.engine("plan", engines.torch_model(), x, fc.config.get_num_threads())
    call()
    benchmark.group = "PLAN_TASKS_PER_THREAD, mobilenet-v1 batch 1"
    benchmark(call)


@pytest.mark.parametrize("weights, scratch", [(0, 0.0625), (0.25, 0.0625), (0.6, 0.0625),
                                              (1.1, 0.0625), (0.6, 0.03), (0.6, 0.125)])
@pytest.mark.parametrize("batch", [1, 8])
def test_separable(benchmark, monkeypatch, batch, weights, scratch):
    """PLAN_SEPARABLE_WEIGHTS (0: no depthwise and pointwise pair fused) and
    PLAN_SEPARABLE_SCRATCH on MobileNet v1."""
    monkeypatch.setattr(tuning, "PLAN_SEPARABLE_WEIGHTS", weights)
    monkeypatch.setattr(tuning, "PLAN_SEPARABLE_SCRATCH", scratch)
    if engines.available("torch"):
        pytest.skip("the models are torch modules")
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    call = engines.engine("plan", engines.torch_model(), x, fc.config.get_num_threads())
    call()
    benchmark.group = f"PLAN_SEPARABLE_*, mobilenet-v1 batch {batch}"
    benchmark(call)


@pytest.fixture(scope="module", params=report.ONNX_MODELS)
def onnx_model(request):
    """A reference CNN exported to ONNX: the plan reads it with from_onnx, the engines run the
    same bytes."""
    why = engines.available("onnxruntime")
    if why:
        pytest.skip(why)
    return request.param, sources.zoo_onnx(request.param)


def _bench_onnx(benchmark, label, source, name):
    """The plan from the ONNX file, or engine ``name`` on the same bytes, batch 1."""
    x = source.input()
    if name == "plan":
        def call():
            return source.network(x)
    else:
        why = engines.available(name)
        if why:
            pytest.skip(why)
        call = engines.engine(name, None, x, fc.config.get_num_threads(), source.onnx)
    call()
    benchmark.group = f"{label}-onnx-batch1"
    benchmark(call)


@pytest.mark.parametrize("name", ("plan", *report.ONNX_ENGINES))
def test_onnx_model(benchmark, onnx_model, name):
    _bench_onnx(benchmark, *onnx_model, name)


@pytest.mark.parametrize("rows, scratch", [(2, 0.25), (8, 0.25), (32, 0.25), (2, 0.125),
                                           (2, 0.5), (10**9, 0.25)])
@pytest.mark.parametrize("batch", [1, 8])
def test_expand(benchmark, monkeypatch, batch, rows, scratch):
    """PLAN_EXPAND_ROWS (10**9: every expand layer apart) and PLAN_EXPAND_SCRATCH on
    MobileNet v2, planned from the torch module."""
    monkeypatch.setattr(tuning, "PLAN_EXPAND_ROWS", rows)
    monkeypatch.setattr(tuning, "PLAN_EXPAND_SCRATCH", scratch)
    why = engines.available("torch")
    if why:
        pytest.skip(why)
    from fastconv.bench import zoo

    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    call = engines.engine("plan", zoo.mobilenet_v2(), x, fc.config.get_num_threads())
    call()
    benchmark.group = f"PLAN_EXPAND_*, mobilenet_v2 batch {batch}"
    benchmark(call)


@pytest.fixture(scope="module", params=report.FAMILIES, ids=lambda f: f"{f[0]}-{f[1]}")
def family(request):
    why = engines.available("onnxruntime") or engines.available("torch")
    if why:
        pytest.skip(why)
    name, size = request.param
    return f"{name}-{size}", sources.zoo_onnx(name, size=size)


@pytest.mark.parametrize("name", ("plan", *report.ONNX_ENGINES))
def test_family(benchmark, family, name):
    """A family's ONNX export (``report.FAMILIES``), batch 1: the plan beside the engines on
    the same bytes."""
    _bench_onnx(benchmark, *family, name)


@pytest.mark.parametrize("below", [0, 10**9], ids=["per-phase", "depth-to-space"])
@pytest.mark.parametrize("c_out", [1, 4, 8, 12, 16])
def test_deconv(benchmark, monkeypatch, c_out, below):
    """PLAN_DECONV_SHUFFLE_BELOW: a 2x2 stride-2 transposed convolution (a text detector's
    head, 12 channels at 320 x 320) as a GEMM per output phase, or as one GEMM and a
    depth-to-space."""
    if engines.available("torch"):
        pytest.skip("the model is a torch module")
    import torch

    monkeypatch.setattr(tuning, "PLAN_DECONV_SHUFFLE_BELOW", below)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.ConvTranspose2d(12, c_out, 2, 2),
                                 torch.nn.Sigmoid()).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 320, 320)).astype(np.float32)
    net = fc.Network.from_torch(module)
    net(x)
    benchmark.group = f"PLAN_DECONV_SHUFFLE_BELOW, 12 -> {c_out} channels"
    benchmark(net, x)
