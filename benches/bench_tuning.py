"""Re-measure the tuned thresholds of ``fastconv/kernels/tuning.py``: each benchmark group is
one layer, and its members the candidate values of one threshold (the kernels read them at
call time, so no recompilation is needed).

    pytest benches/bench_tuning.py --benchmark-only                 # all of them
    pytest benches/bench_tuning.py -k flat_below --benchmark-only   # one threshold

Compare the members of a group: the value whose minimum is lowest is the one to keep.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import config, runtime
from fastconv.bench import profile
from fastconv.kernels import tuning
from fastconv.kernels.numba import im2col, pointwise
from fastconv.models import layer_names

NET = fc.models.mobilenet_v1(include_fc=True)
NAMED = list(zip(layer_names(NET), NET))
DEPTHWISE = [(n, s) for n, s in NAMED if s.kind == "dw"]
TWIN_3X3 = [(n, s) for n, s in zip(layer_names(fc.models.mobilenet_v1(separable=False)),
                                   fc.models.mobilenet_v1(separable=False))
            if s.kind == "conv" and s.stride == (1, 1)]


def _forward(spec, batch=1, algorithm="auto"):
    x, w = profile.layer_arrays(spec, batch, np.float32)
    return lambda: fc.conv2d(x, w, None, spec.stride, spec.padding, spec.dilation, spec.groups,
                             algorithm=algorithm)


def _weight_gradient(spec, batch):
    x, w = profile.layer_arrays(spec, batch, np.float32)
    dy = np.ones(spec.output_shape(batch), np.float32)
    return lambda: fc.conv2d_backward(dy, x, w, spec.stride, spec.padding, spec.dilation,
                                      spec.groups, bias=False, needs=("weight",))


def _run(benchmark, group, call):
    call()  # compile or load the cache outside the timed region
    benchmark.group = group
    benchmark(call)


@pytest.mark.parametrize("value", [16, 32, 64])
@pytest.mark.parametrize("layer, spec", DEPTHWISE, ids=[n for n, _ in DEPTHWISE])
def test_flat_below(benchmark, monkeypatch, layer, spec, value):
    monkeypatch.setattr(tuning, "FLAT_BELOW", value)
    _run(benchmark, f"FLAT_BELOW {layer} {spec.input_size}", _forward(spec))


@pytest.mark.parametrize("value", [0, 50_000, 450_000, 10**12])
@pytest.mark.parametrize("layer, spec", DEPTHWISE, ids=[n for n, _ in DEPTHWISE])
def test_serial_below(benchmark, monkeypatch, layer, spec, value):
    layer_kind = runtime.numba_threading_layer()
    monkeypatch.setitem(config.SERIAL_BELOW, layer_kind, value)
    _run(benchmark, f"SERIAL_BELOW ({layer_kind}) {layer} {spec.input_size}", _forward(spec))


@pytest.mark.parametrize("value", [250_000, 1_000_000, 4_000_000, 10**15])
@pytest.mark.parametrize("batch", [1, 8])
def test_gradient_chunk(benchmark, monkeypatch, batch, value):
    """SMALL_GEMM on MobileNet's first layer (32 filters of 27 taps); 10**15 never chunks."""
    monkeypatch.setattr(tuning, "SMALL_GEMM", value)
    _run(benchmark, f"SMALL_GEMM conv1 weight gradient, batch {batch}",
         _weight_gradient(NET[0], batch))


SMALL_IMAGES = ([(n, s) for n, s in NAMED[-4:] if s.is_pointwise]
                + [("resnet layer4 3x3", fc.ConvSpec(512, 512, 3, padding=1, input_size=(7, 7)))])


@pytest.mark.parametrize("batched", [True, False], ids=["side by side", "per image"])
@pytest.mark.parametrize("which", ["forward", "weight"])
@pytest.mark.parametrize("layer, spec", SMALL_IMAGES, ids=[n for n, _ in SMALL_IMAGES])
def test_small_images(benchmark, monkeypatch, layer, spec, which, batched):
    """A batch of small images' forward (im2col) and weight gradient: one GEMM over the
    images side by side, or one per image (tiling.batch_small_images decides)."""
    for module in (im2col, pointwise):
        monkeypatch.setattr(module, "batch_small_images", lambda spec, n: batched)
    call = (_forward(spec, 8, "im2col") if which == "forward" else _weight_gradient(spec, 8))
    _run(benchmark, f"batch_small_images {which} {layer} {spec.input_size}, batch 8", call)


@pytest.mark.parametrize("algorithm", ["im2col", "winograd"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("layer, spec", TWIN_3X3, ids=[n for n, _ in TWIN_3X3])
def test_winograd(benchmark, layer, spec, batch, algorithm):
    """WINOGRAD_MIN_CHANNELS and WINOGRAD_TILES_PER_CHANNEL: where Winograd overtakes im2col
    on the full-convolution twin's 3x3 stride-1 layers."""
    _run(benchmark, f"winograd {layer} {spec.in_channels}x{spec.input_size}, batch {batch}",
         _forward(spec, batch, algorithm))
