"""``fastconv.network.onnx_counts``: every node of an ONNX model counted without running it;
the matrix products checked against torch's own counter (``torch.utils.flop_counter``) on
the zoo's families, the LSTM against its formula, and a node no rule covers named."""

from __future__ import annotations

import io

import numpy as np
import pytest

from helpers import needs_torch, torch

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

from fastconv.network import onnx_counts, onnx_import  # noqa: E402


def _count(data, shapes):
    proto = onnx_import.load(data)
    return onnx_counts.count(proto, onnx_import.opset_of(proto),
                             {k: (v, np.dtype(np.float32)) for k, v in shapes.items()})


@needs_torch
@pytest.mark.parametrize("name, shape", [("UNet", (2, 3, 48, 80)), ("YOLOv8", (1, 3, 64, 96)),
                                         ("DBNet", (1, 3, 64, 96)),
                                         ("MobileNetV2", (1, 3, 64, 64))])
def test_the_matrix_products_are_torch_flop_counters(name, shape):
    from torch.utils.flop_counter import FlopCounterMode

    from fastconv.bench import zoo

    make = {"UNet": lambda: zoo.UNet(0.125), "YOLOv8": lambda: zoo.YOLOv8(0.25, classes=8),
            "DBNet": lambda: zoo.DBNet(0.25), "MobileNetV2": lambda: zoo.MobileNetV2(0.5)}
    module = zoo.randomise(make[name](), size=shape[2:])
    x = torch.randn(*shape)
    with FlopCounterMode(display=False) as counter:
        module(x)
    buf = io.BytesIO()
    torch.onnx.export(module, (x,), buf, opset_version=17, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    counts = _count(buf.getvalue(), {"x": shape})
    assert counts["flops"] == counter.get_total_flops() > 0
    assert counts["flops"] == 2 * counts["macs"] and counts["not_counted"] == []
    assert counts["folded"] > 0  # the shape subgraphs
    categories = {r["category"] for r in counts["nodes"]}
    assert "convolution" in categories and "not counted" not in categories


def _model(nodes, inputs, constants, outputs=("y",)):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, 1, None)
                                                   for o in outputs],
                              [numpy_helper.from_array(v, k) for k, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_each_rule():
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["t"], strides=[2, 2], name="up"),
        helper.make_node("Resize", ["t", "", "scales"], ["r"], mode="linear", name="rs"),
        helper.make_node("Softmax", ["r"], ["s"], axis=1, name="sm"),
        helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[3, 3], name="mp"),
        helper.make_node("Transpose", ["p"], ["q"], perm=[0, 2, 3, 1], name="tr"),
        helper.make_node("Reshape", ["q", "flat"], ["f"], name="re"),
        helper.make_node("Gemm", ["f", "w"], ["g"], transB=1, name="fc"),
        helper.make_node("Sigmoid", ["g"], ["y"], name="sig"),
    ]
    constants = dict(wt=rng.standard_normal((4, 2, 2, 2)).astype(np.float32),
                     scales=np.array([1, 1, 2, 2], np.float32),
                     flat=np.array([0, -1], np.int64),
                     w=rng.standard_normal((10, 2 * 26 * 30)).astype(np.float32))
    model = _model(nodes, [helper.make_tensor_value_info("x", 1, ["N", 4, 7, 8])], constants)
    counts = _count(model, {"x": (3, 4, 7, 8)})
    rows = {r["name"].split("'")[1]: r for r in counts["nodes"]}
    assert rows["up"]["macs"] == 3 * 4 * 7 * 8 * (2 * 2 * 2)  # each input pixel, every tap
    assert rows["up"]["output"] == "[3, 2, 14, 16]"
    assert rows["rs"]["other_ops"] == 3 * 2 * 28 * 32 * 4  # linear over two axes: 4 taps
    assert rows["sm"]["other_ops"] == 3 * 3 * 2 * 28 * 32
    assert rows["mp"]["other_ops"] == 3 * 2 * 26 * 30 * 9
    assert (rows["tr"]["category"], rows["tr"]["other_ops"]) == ("data movement", 0)
    assert rows["fc"]["macs"] == 3 * 10 * 2 * 26 * 30 and rows["fc"]["params"] == 10 * 1560
    assert rows["sig"]["other_ops"] == 3 * 10
    assert counts["macs"] == rows["up"]["macs"] + rows["fc"]["macs"]


def test_recurrent_layers_by_their_formula():
    rng = np.random.default_rng(1)
    constants = dict(W=rng.standard_normal((2, 4 * 7, 6)).astype(np.float32),
                     R=rng.standard_normal((2, 4 * 7, 7)).astype(np.float32))
    model = _model([helper.make_node("LSTM", ["s", "W", "R"], ["y"], hidden_size=7,
                                     direction="bidirectional")],
                   [helper.make_tensor_value_info("s", 1, [5, "N", 6])], constants)
    counts = _count(model, {"s": (5, 2, 6)})
    assert counts["macs"] == 2 * 5 * 2 * 4 * 7 * (6 + 7)  # directions, steps, batch, gates


def test_a_node_without_a_rule_is_named_never_zero():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"),
             helper.make_node("Einsum", ["a", "a"], ["y"], equation="nchw,nchw->nc", name="e")]
    model = _model(nodes, [helper.make_tensor_value_info("x", 1, ["N", 4, 7, 8])], {})
    counts = _count(model, {"x": (1, 4, 7, 8)})
    assert counts["not_counted"] == ["node 'e' (Einsum)"]
    row = counts["nodes"][-1]
    assert (row["category"], row["counted"], row["why"]) == ("not counted", False,
                                                              "no counting rule for Einsum")


def test_cli_flops_counts_a_model_the_plan_runs_in_segments(tmp_path, capsys):
    import json

    from fastconv import cli

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Resize", ["c", "", "scales"], ["r"], mode="nearest", name="up"),
             helper.make_node("Einsum", ["r", "r"], ["y"], equation="nchw,nchw->nc", name="e")]
    constants = dict(w=np.ones((5, 4, 3, 3), np.float32),
                     scales=np.array([1, 1, 2, 2], np.float32))
    path = tmp_path / "m.onnx"
    onnx.save(_model(nodes, [helper.make_tensor_value_info("x", 1, ["N", 4, 7, 8])],
                     constants), path)
    assert cli.main(["flops", str(path), "--batch", "2", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["macs"] == 2 * 5 * 7 * 8 * 4 * 9 and record["not_counted"] == [
        "node 'e' (Einsum)"]
    assert [r["category"] for r in record["nodes"]] == ["convolution", "resize", "not counted"]
    assert cli.main(["flops", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "not counted: node 'e' (Einsum): no counting rule for Einsum" in printed
