"""MobileNet v1's layers, forward and backward: every fastconv algorithm beside PyTorch and
ONNX Runtime (when installed) and a bare GEMM of the same shape.

One benchmark group per layer and pass; every candidate is called once before the timed
region (compilation, cache loading, session creation).

    pytest benches --benchmark-only
    pytest benches --benchmark-only --benchmark-autosave        # saves .benchmarks/...
    pytest benches --benchmark-only --benchmark-compare         # against the last saved run
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import dispatch, peers, profile
from fastconv.models import layer_names

NET = fc.models.mobilenet_v1(include_fc=False)
LAYERS = list(zip(layer_names(NET), NET))
ALGORITHMS = dispatch.algorithms("numba")


def _slow(algorithm, spec):
    # the generic kernels on layers they are not meant for take seconds (see `fastconv bench`)
    return (algorithm == "direct" and spec.kind != "conv") or (
        algorithm == "im2col" and spec.kind == "dw")


def _params(with_ort):
    for name, spec in LAYERS:
        candidates = [a for a in ["auto", *ALGORITHMS]
                      if a == "auto" or (dispatch.load("numba", a).supports(spec) is None
                                         and not _slow(a, spec))]
        candidates.append("torch")
        if with_ort:
            candidates.append("onnxruntime")
        for candidate in candidates:
            yield pytest.param(name, spec, candidate, id=f"{name}-{candidate}")


def _group(benchmark, pass_, layer, spec, flops):
    shape = "x".join(map(str, spec.input_shape()[1:]))
    benchmark.group = f"{pass_} {layer} {spec.kind} {shape}"
    benchmark.extra_info["flops"] = flops


@pytest.mark.parametrize("layer, spec, candidate", list(_params(with_ort=True)))
def test_forward(benchmark, layer, spec, candidate):
    x, w = profile.layer_arrays(spec, 1, np.float32)
    if candidate == "torch":
        if not peers.torch_available():
            pytest.skip("torch is not installed")
        call = peers.torch_conv2d(spec, x, w)
    elif candidate == "onnxruntime":
        if not (peers.onnxruntime_available() and peers.torch_available()):
            pytest.skip("onnxruntime (and torch, to export the model) are not installed")
        runner = peers.OnnxRuntimeNet([spec], [(w, None)], np.float32)
        call = lambda: runner.forward(0, x)  # noqa: E731
    else:
        call = profile.forward_candidates(spec, x, w, algorithms=[candidate], with_torch=False,
                                          with_gemm=False)[candidate]
    call()
    _group(benchmark, "forward", layer, spec, spec.flops)
    benchmark(call)


@pytest.mark.parametrize("layer, spec, candidate", [
    p for p in _params(with_ort=False) if p.values[2] != "onnxruntime"])
def test_backward(benchmark, layer, spec, candidate):
    """Input and weight gradients (what training a stack of these layers computes)."""
    x, w = profile.layer_arrays(spec, 1, np.float32)
    dy = np.ones(spec.output_shape(1), np.float32)
    if candidate == "torch":
        if not peers.torch_available():
            pytest.skip("torch is not installed")
        runner = peers.TorchNet([spec], [(w, None)])
        xt, dyt = runner.to_input(x), runner.to_input(dy)
        call = lambda: runner.backward(0, dyt, xt, input_grad=True)  # noqa: E731
    else:
        call = lambda: fc.conv2d_backward(  # noqa: E731
            dy, x, w, spec.stride, spec.padding, spec.dilation, spec.groups, bias=False,
            needs=("input", "weight"), algorithm=candidate)
    call()
    _group(benchmark, "backward", layer, spec, 2 * spec.flops)
    benchmark(call)


@pytest.mark.parametrize("layer, spec", [(n, s) for n, s in LAYERS if s.kind != "dw"],
                         ids=[n for n, s in LAYERS if s.kind != "dw"])
def test_forward_gemm_floor(benchmark, layer, spec):
    """A bare numpy.matmul of the layer's GEMM: the floor of an im2col or 1x1 convolution."""
    call = peers.numpy_gemm(spec, 1, np.float32)
    call()
    _group(benchmark, "forward", layer, spec, spec.flops)
    benchmark(call)
