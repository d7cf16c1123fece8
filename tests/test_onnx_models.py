"""The CNN families users bring as ONNX files (``fastconv.bench.zoo``: MobileNet v3 Small and
Large, the latter with HardSwish spelled as Add/Clip/Mul/Div; EfficientNet-B0; a YOLOv8n-style
detector; a DBNet-style text detector; U-Nets upsampling by ConvTranspose and bilinearly, with
align_corners both ways; a CRNN with an LSTM), exported by both of torch.onnx's exporters,
each planned by ``Network.from_onnx`` and checked against ONNX Runtime on every output at two
input sizes, one of them non-square.

The TorchScript exporter writes opsets 11 and 17 with the input's batch, height and width
symbolic (one plan serves both sizes: the shape subgraphs fold per size); the dynamo exporter
writes opset 18 (it writes no older opset correctly: its Split carries opset 18's
``num_outputs`` at 17) with static shapes, so it exports each size.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import warnings

import numpy as np
import pytest

from helpers import needs_torch, torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastconv as fc  # noqa: E402

pytestmark = [needs_torch, pytest.mark.usefixtures("plan_backend")]

if torch is not None:
    from fastconv.bench import zoo

    # name -> (builder, two input sizes: the second non-square, and not a multiple of 32 where
    # the network allows it; YOLOv8's and DBNet's upsampling x2 back onto a skip needs one)
    MODELS = {
        "mobilenet_v3_small": (lambda: zoo.MobileNetV3("small", 0.5),
                               [(1, 3, 64, 64), (2, 3, 61, 83)]),
        "mobilenet_v3_large_spelled": (lambda: zoo.MobileNetV3("large", 0.5, spelled=True),
                                       [(1, 3, 64, 64), (2, 3, 61, 83)]),
        "efficientnet_b0": (lambda: zoo.EfficientNetB0(0.25), [(1, 3, 64, 64), (2, 3, 61, 83)]),
        "yolov8n": (lambda: zoo.YOLOv8(0.25, classes=8), [(1, 3, 64, 64), (2, 3, 64, 96)]),
        "dbnet": (lambda: zoo.DBNet(0.25), [(1, 3, 64, 64), (1, 3, 64, 96)]),
        "unet_transpose": (lambda: zoo.UNet(0.125), [(1, 3, 64, 64), (2, 3, 45, 83)]),
        "unet_align_corners": (lambda: zoo.UNet(0.125, up="align_corners"),
                               [(1, 3, 64, 64), (2, 3, 45, 83)]),
        "unet_bilinear": (lambda: zoo.UNet(0.125, up="bilinear"),
                          [(1, 3, 64, 64), (2, 3, 45, 83)]),
        "crnn": (lambda: zoo.CRNN(), [(1, 3, 32, 64), (2, 3, 32, 100)]),
    }
else:
    MODELS = {}


@functools.lru_cache(maxsize=None)
def _module(name):
    make, shapes = MODELS[name]
    return zoo.randomise(make(), size=shapes[0][2:])


@functools.lru_cache(maxsize=None)
def _export(name, exporter, shape=None) -> bytes:
    module, buf = _module(name), io.BytesIO()
    x = torch.randn(*(shape or MODELS[name][1][0]))
    with warnings.catch_warnings(), open(os.devnull, "w") as quiet, \
            contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            if exporter == "dynamo-18":
                torch.onnx.export(module, (x,), buf, opset_version=18, dynamo=True,
                                  input_names=["x"])
            else:
                torch.onnx.export(module, (x,), buf, opset_version=int(exporter[-2:]),
                                  dynamo=False, input_names=["x"],
                                  dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
        finally:
            logging.disable(logging.NOTSET)
    return buf.getvalue()


def _check(data, net, shape):
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    got = net(x)
    got = got if isinstance(got, tuple) else (got,)
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=0, atol=3e-5 * max(1.0, float(np.abs(e).max())))


@pytest.mark.parametrize("exporter", ["torchscript-11", "torchscript-17", "dynamo-18"])
@pytest.mark.parametrize("name", list(MODELS))
def test_the_plan_matches_onnx_runtime(name, exporter):
    if exporter == "dynamo-18":
        for shape in MODELS[name][1]:
            data = _export(name, exporter, shape)
            _check(data, fc.Network.from_onnx(data), shape)
    else:
        data = _export(name, exporter)
        net = fc.Network.from_onnx(data)
        for shape in MODELS[name][1]:
            _check(data, net, shape)


def test_the_families_without_a_fallback_are_one_plan():
    """MobileNet v3 (HardSwish spelled out too) and EfficientNet-B0 have every node on the
    plan's kernels: one plan, as MobileNet v2 is."""
    for name in ("mobilenet_v3_small", "mobilenet_v3_large_spelled", "efficientnet_b0"):
        net = fc.Network.from_onnx(_export(name, "torchscript-17"))
        assert type(net) is fc.Network, name


def test_a_detector_runs_its_head_on_the_plan():
    """YOLOv8n's head (its values (N, C, L)) on the plan, as one segment: the flattening
    reshapes and the DFL's reshape and transpose as gathers (the transpose fused into the
    reshape before it), the DFL's softmax, the box arithmetic as element-wise steps; every
    node timed."""
    data = _export("yolov8n", "torchscript-17")
    net = fc.Network.from_onnx(data)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    profile = net.profile(x, budget=0.05, min_repeats=2)
    kernels = {r["name"]: r["kernel"] for r in profile.rows}
    fused = {r["name"]: r["fused"] for r in profile.rows}
    assert not any(k.startswith("fallback") for k in kernels.values())
    assert kernels["node '/Softmax' (Softmax)"] == "softmax over 16 channels"  # the DFL's
    transposed = [name for name, names in fused.items() if "node '/Transpose' (Transpose)" in
                  names]
    assert len(transposed) == 1 and kernels[transposed[0]].startswith("gather")
    assert kernels["node '/Sub' (Sub)"] == "sub"
    assert any("register tiles" in k for k in kernels.values())  # the convolutions: the plan's
    assert all(r["seconds"] > 0 for r in profile.rows)
    shown = str(net)
    assert "1 plan segments, 0 fallback nodes" in shown
    assert "nearest upsampling x2x2 into its concatenation's slice" in shown
    _check(data, net, (1, 3, 64, 64))


@pytest.mark.parametrize("name, fallback", [
    ("dbnet", set()), ("unet_transpose", set()), ("unet_align_corners", set()),
    ("yolov8n", set())])  # its head's values (N, 4 + classes, anchors) too
def test_what_runs_in_the_fallback(name, fallback):
    """The segments take several inputs and give several outputs: only operators without a
    kernel would be left to the fallback, and these models have none."""
    net = fc.Network.from_onnx(_export(name, "torchscript-17"))
    shape = MODELS[name][1][0]
    net(np.zeros(shape, np.float32))
    program = next(iter(net._programs.values()))
    assert {label.split("(")[-1].rstrip(")") for label in program.fallback_nodes} == fallback
