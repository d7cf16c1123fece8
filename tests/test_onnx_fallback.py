"""The fallback runs what the plan has no kernel for, as ONNX Runtime does: quantised
operators (DynamicQuantizeLinear, ConvInteger, MatMulInteger, QuantizeLinear, QLinearConv,
DequantizeLinear), recurrent layers (LSTM, GRU), and a CRNN quantised by ONNX Runtime's own
``quantize_dynamic``; each compared with ONNX Runtime on the same file."""

from __future__ import annotations

import io

import numpy as np
import pytest

from helpers import needs_torch, torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

import fastconv as fc  # noqa: E402

pytestmark = pytest.mark.usefixtures("plan_backend")


def _model(nodes, inputs, outputs, constants) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, elem, None)
                                                   for o, elem in outputs],
                              [numpy_helper.from_array(v, k) for k, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]).SerializeToString()


def _same_as_onnx_runtime(data, feeds, exact=True):
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = fc.Network.from_onnx(data)(*feeds.values())
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        if exact:
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def _rng():
    return np.random.default_rng(0)


def _input(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def test_dynamic_quantisation_and_conv_integer():
    x = _rng().standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = _rng().integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    data = _model([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
                   helper.make_node("ConvInteger", ["q", "w", "z"], ["c"], pads=[1, 1, 1, 1]),
                   helper.make_node("Cast", ["c"], ["cf"], to=1),
                   helper.make_node("Mul", ["cf", "s"], ["y"])],
                  [_input("x", 1, ["N", 3, 8, 8])], [("y", 1), ("q", 2)], {"w": w})
    _same_as_onnx_runtime(data, {"x": x})


def test_matmul_integer():
    a = _rng().standard_normal((2, 5)).astype(np.float32)
    b = _rng().integers(-50, 50, (5, 4)).astype(np.int8)
    data = _model([helper.make_node("DynamicQuantizeLinear", ["a"], ["q", "s", "z"]),
                   helper.make_node("MatMulInteger", ["q", "b", "z"], ["y"])],
                  [_input("a", 1, [2, 5])], [("y", 6)], {"b": b})
    _same_as_onnx_runtime(data, {"a": a})


def test_quantize_qlinear_conv_dequantize():
    x = _rng().standard_normal((2, 3, 8, 8)).astype(np.float32)
    constants = dict(sx=np.float32(0.05), zx=np.uint8(128), sw=np.float32(0.02),
                     zw=np.uint8(128), sy=np.float32(0.1), zy=np.uint8(120),
                     wq=_rng().integers(0, 255, (4, 3, 3, 3)).astype(np.uint8))
    data = _model([helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["q"]),
                   helper.make_node("QLinearConv", ["q", "sx", "zx", "wq", "sw", "zw", "sy",
                                                    "zy"], ["qc"], pads=[1, 1, 1, 1]),
                   helper.make_node("DequantizeLinear", ["qc", "sy", "zy"], ["y"])],
                  [_input("x", 1, ["N", 3, 8, 8])], [("y", 1)], constants)
    _same_as_onnx_runtime(data, {"x": x})


@pytest.mark.parametrize("op, gates", [("LSTM", 4), ("GRU", 3)])
def test_recurrent_layers(op, gates):
    seq = _rng().standard_normal((5, 2, 6)).astype(np.float32)
    constants = dict(W=_rng().standard_normal((2, gates * 7, 6)).astype(np.float32),
                     R=_rng().standard_normal((2, gates * 7, 7)).astype(np.float32),
                     B=_rng().standard_normal((2, 2 * gates * 7)).astype(np.float32))
    data = _model([helper.make_node(op, ["s", "W", "R", "B"], ["Y", "Yh"], hidden_size=7,
                                    direction="bidirectional")],
                  [_input("s", 1, [5, "N", 6])], [("Y", 1), ("Yh", 1)], constants)
    _same_as_onnx_runtime(data, {"s": seq}, exact=False)


@needs_torch
def test_a_crnn_quantised_by_onnx_runtime(tmp_path):
    """ONNX Runtime's quantize_dynamic on the CRNN's convolutions and matrix products (its
    LSTM quantised would be ONNX Runtime's own com.microsoft operator, which is refused by
    name: no ONNX implementation exists)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from fastconv.bench import zoo

    module = zoo.randomise(zoo.CRNN(), size=(32, 64))
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.randn(1, 3, 32, 64),), buf, opset_version=17, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "N", 3: "W"}})
    (tmp_path / "crnn.onnx").write_bytes(buf.getvalue())
    quantize_dynamic(tmp_path / "crnn.onnx", tmp_path / "q.onnx", weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["Conv", "MatMul"])
    data = (tmp_path / "q.onnx").read_bytes()
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} <= {
        n.op_type for n in onnx.load_from_string(data).graph.node}
    for shape in ((1, 3, 32, 64), (2, 3, 32, 100)):
        x = _rng().standard_normal(shape).astype(np.float32)
        _same_as_onnx_runtime(data, {"x": x}, exact=False)
    quantize_dynamic(tmp_path / "crnn.onnx", tmp_path / "ql.onnx", weight_type=QuantType.QUInt8)
    with pytest.raises(ValueError, match=r"\(DynamicQuantizeLSTM\) is not supported by "
                                         r"Network.from_onnx: operators of domain "
                                         r"'com.microsoft' have no kernel here"):
        fc.Network.from_onnx(tmp_path / "ql.onnx")


@pytest.mark.parametrize("elem, dtype", [(1, np.float32), (11, np.float64)])
def test_the_fallback_sigmoid_of_a_sequence(elem, dtype):
    """A detector head's Sigmoid of (N, C, L) scores, on the fallback's own NumPy kernel:
    as ONNX Runtime, at the ends of the range, infinities and NaN too."""
    x = _rng().standard_normal((2, 5, 37)).astype(dtype) * 30
    x[0, 0, :6] = [np.inf, -np.inf, np.nan, 100, -100, -1000]
    data = _model([helper.make_node("Sigmoid", ["x"], ["y"])],
                  [_input("x", elem, ["N", 5, 37])], [("y", elem)], {})
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    got = fc.Network.from_onnx(data)(x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert np.isnan(got[0, 0, 2]) and got[0, 0, 0] == 1 and got[0, 0, 1] == 0


@pytest.mark.parametrize("op, axis", [("Softmax", 1), ("LogSoftmax", 2), ("Softmax", -1)])
def test_softmax_before_opset_13_spans_every_dimension_from_its_axis(op, axis):
    """Opset 11's Softmax and LogSoftmax coerce the input to 2-D at the axis, as ONNX
    Runtime does (``onnx.reference`` knows only opset 13's, along the axis alone)."""
    x = _rng().standard_normal((2, 3, 4, 5)).astype(np.float32) * 3
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], axis=axis)], "g",
                              [_input("x", 1, [2, 3, 4, 5])],
                              [helper.make_tensor_value_info("y", 1, None)])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    data.ir_version = 7
    _same_as_onnx_runtime(data.SerializeToString(), {"x": x}, exact=False)


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 4], strides=[3, 1], pads=[1, 0, 0, 3], ceil_mode=1),
    dict(kernel_shape=[3, 4], strides=[3, 1], pads=[1, 0, 0, 3], ceil_mode=1,
         count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[2, 2, 2, 2], count_include_pad=1),
    dict(kernel_shape=[2, 3], strides=[2, 2], pads=[0, 2, 1, 2], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 3], auto_pad="SAME_UPPER", count_include_pad=1),
])
def test_an_average_pool_the_plan_refuses_is_averaged_as_onnx_runtime(attrs):
    """Pads beyond half the window (which the plan refuses): the fallback's NumPy kernel
    divides each window as ONNX Runtime does, the overhang of ceil_mode not counted, where
    ``onnx.reference`` gives other averages."""
    x = _rng().standard_normal((2, 3, 7, 5)).astype(np.float32)
    data = _model([helper.make_node("AveragePool", ["x"], ["y"], name="ap", **attrs)],
                  [_input("x", 1, ["N", 3, 7, 5])], [("y", 1)], {})
    _same_as_onnx_runtime(data, {"x": x}, exact=False)
    net = fc.Network.from_onnx(data)
    net(x)
    assert ("node 'ap' (AveragePool): fallback" in str(net)) == ("pads" in attrs)
