"""MobileNet v1's layers, forward and backward: every fastconv algorithm on every built backend
(Numba, Cython) beside PyTorch and ONNX Runtime (when installed) and a bare GEMM of the same
shape.

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
from fastconv import dispatch
from fastconv.kernels.algorithms import serves
from fastconv.bench import peers, profile
from fastconv.models import layer_names

NET = fc.models.mobilenet_v1(include_fc=False)
LAYERS = list(zip(layer_names(NET), NET))
BACKENDS = [b for b in ("numba", "cython") if b in dispatch.available_backends()]
if "cuda" in dispatch.available_backends():  # a real device: the simulator would take hours
    from fastconv.kernels.cuda._common import simulated

    if not simulated():
        BACKENDS.append("cuda")


def _slow(algorithm, spec):
    # the generic kernels on layers they are not meant for take seconds (see `fastconv bench`)
    return (algorithm == "direct" and spec.kind != "conv") or (
        algorithm == "im2col" and spec.kind == "dw")


def _params(with_ort):
    for name, spec in LAYERS:
        candidates = []
        for backend in BACKENDS:
            for a in ["auto", *dispatch.algorithms(backend)]:
                if a == "auto" or (serves(a, spec) and not _slow(a, spec)):
                    candidates.append((backend, a))
        candidates.append(("torch", None))
        if with_ort:
            candidates.append(("onnxruntime", None))
        for backend, algorithm in candidates:
            label = backend if algorithm is None else profile.candidate_name(backend, algorithm)
            yield pytest.param(name, spec, backend, algorithm, id=f"{name}-{label}")


def _group(benchmark, pass_, layer, spec, flops):
    shape = "x".join(map(str, spec.input_shape()[1:]))
    benchmark.group = f"{pass_} {layer} {spec.kind} {shape}"
    benchmark.extra_info["flops"] = flops


def _call(spec, backend, algorithm, mode):
    x, w = profile.layer_arrays(spec, 1, np.float32)
    if backend == "torch" and not peers.torch_available():
        pytest.skip("torch is not installed")
    if backend == "onnxruntime":
        if not (peers.onnxruntime_available() and peers.torch_available()):
            pytest.skip("onnxruntime (and torch, to export the model) are not installed")
        return peers.OnnxRuntimeNet([spec], [(w, None)], x).run
    calls = profile.layer_candidates(
        spec, x, w, algorithms=[algorithm] if algorithm else [], backends=[backend]
        if algorithm else [], mode=mode, with_torch=backend == "torch", with_gemm=False)
    return calls["torch" if backend == "torch" else profile.candidate_name(backend, algorithm)]


@pytest.mark.parametrize("layer, spec, backend, algorithm", list(_params(with_ort=True)))
def test_forward(benchmark, layer, spec, backend, algorithm):
    call = _call(spec, backend, algorithm, "forward")
    call()  # compile, load the cache or build the session outside the timed region
    _group(benchmark, "forward", layer, spec, spec.flops)
    benchmark(call)


@pytest.mark.parametrize("layer, spec, backend, algorithm", list(_params(with_ort=False)))
def test_backward(benchmark, layer, spec, backend, algorithm):
    """Input and weight gradients (what training a stack of these layers computes)."""
    call = _call(spec, backend, algorithm, "backward")
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
