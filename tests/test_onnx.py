"""Network.from_onnx: the reference CNNs exported by torch.onnx, checked against ONNX Runtime on
the same file (and against torch in float64, which ONNX Runtime's CPU kernels do not run);
one hand-built graph per operator (onnx.helper) against ONNX Runtime, at opset 11 and the
newest the installed onnx writes; and each refusal with its message."""

from __future__ import annotations

import io

import numpy as np
import pytest

import fastconv as fc
from fastconv.kernels import tuning

from helpers import assert_like_module, needs_torch, torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# every test on each executor (conftest's plan_backend)
pytestmark = pytest.mark.usefixtures("plan_backend")

if torch is not None:
    from fastconv.bench import zoo

NEWEST = onnx.defs.onnx_opset_version()


def _rng(seed):
    return np.random.default_rng(seed)


def _export(module, x, dynamic=True):
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.from_numpy(x),), buf, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}} if dynamic else None)
    return buf.getvalue()


def _ort(model, x):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _close(got, expected, rtol=2e-5):
    assert got.shape == expected.shape and got.dtype == expected.dtype
    scale = max(1.0, float(abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=rtol * scale)


# --- whole models --------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("model, width, size", [
    ("MobileNetV1", 0.25, (64, 67)), ("MobileNetV2", 0.5, (64, 67)), ("ResNet18", 0.25, (61, 64)),
    ("SqueezeExcitation", None, (16, 18))])
def test_exported_models_match_onnx_runtime(model, width, size):
    module = zoo.randomise(getattr(zoo, model)(*([] if width is None else [width])))
    x = _rng(0).standard_normal((2, 3, *size)).astype(np.float32)
    data = _export(module, x)
    net = fc.Network.from_onnx(data)
    exact = module.double()
    for batch in (1, 3):  # the batch is symbolic in the file
        xb = _rng(batch).standard_normal((batch, 3, *size)).astype(np.float32)
        with torch.no_grad():
            truth = exact(torch.from_numpy(xb.astype(np.float64))).numpy()
        # both engines drift from exact arithmetic in float32: the plan as far as ONNX
        # Runtime does at most (four times, or 2e-5 of the output's magnitude)
        scale = max(1.0, float(abs(truth).max()))
        drift = max(2e-5 * scale, 4 * float(abs(_ort(data, xb) - truth).max()))
        np.testing.assert_allclose(net(xb), truth, rtol=0, atol=drift)
    assert_like_module(net(x), module.float(), x)


@needs_torch
def test_a_float64_model_matches_torch():
    module = zoo.randomise(zoo.ResNet18(0.25)).double()
    x = _rng(1).standard_normal((2, 3, 40, 40))
    net = fc.Network.from_onnx(_export(module, x))
    assert net.dtype == np.float64
    assert_like_module(net(x), module, x)


@needs_torch
def test_a_path_and_a_model_proto(tmp_path):
    module = zoo.randomise(zoo.SqueezeExcitation())
    x = _rng(2).standard_normal((1, 3, 16, 18)).astype(np.float32)
    data = _export(module, x, dynamic=False)
    path = tmp_path / "se.onnx"
    path.write_bytes(data)
    expected = _ort(data, x)
    _close(fc.Network.from_onnx(path)(x), expected)
    _close(fc.Network.from_onnx(str(path))(x), expected)
    _close(fc.Network.from_onnx(onnx.load_from_string(data))(x), expected)


# --- one graph per operator ------------------------------------------------------------------


def _graph(nodes, shape, inits=(), opset=NEWEST, dtype=TensorProto.FLOAT):
    """A model of ``nodes`` from input ``x`` to output ``y``, whose declared type is the one
    shape inference gives it (the checker wants the output's shape declared)."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("y", dtype, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.graph.output[0].CopyFrom(onnx.shape_inference.infer_shapes(model).graph.output[0])
    return model.SerializeToString()


def _w(seed, *shape):
    return _rng(seed).standard_normal(shape).astype(np.float32)


def _conv(name="conv", inputs=("x", "W", "B"), out="y", **attrs):
    return helper.make_node("Conv", list(inputs), [out], name, **attrs)


def _bias_relu(c):
    """A conv of c channels that keeps the size, then a ReLU."""
    return [_conv(out="c", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"])], [
        ("W", _w(1, c, 3, 3, 3)), ("B", _w(2, c))]


def _constant(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
        np.asarray(value, np.float32)))


OPERATORS = {
    "conv-asymmetric-pads-dilation": lambda: (
        [_conv(pads=[0, 1, 2, 1], strides=[2, 1], dilations=[1, 2])],
        [("W", _w(1, 4, 3, 3, 3)), ("B", _w(2, 4))]),
    "conv-groups-no-bias": lambda: (
        [_conv(inputs=("x", "W"), group=3, kernel_shape=[3, 2])], [("W", _w(3, 6, 1, 3, 2))]),
    "conv-same-upper-stride2": lambda: (
        [_conv(inputs=("x", "W"), auto_pad="SAME_UPPER", strides=[2, 2])],
        [("W", _w(4, 5, 3, 4, 4))]),
    "conv-same-lower": lambda: (
        [_conv(inputs=("x", "W"), auto_pad="SAME_LOWER", strides=[2, 1])],
        [("W", _w(5, 5, 3, 2, 2))]),
    "conv-valid": lambda: ([_conv(inputs=("x", "W"), auto_pad="VALID")],
                           [("W", _w(6, 2, 3, 3, 1))]),
    "batchnorm-alone": lambda: (
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                          epsilon=1e-3)],
        [("s", _w(7, 3)), ("b", _w(8, 3)), ("m", _w(9, 3)), ("v", 1 + _w(10, 3) ** 2)]),
    "conv-batchnorm-clip-inputs": lambda: (
        [_conv(out="c"), helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"],
                                          ["n"]),
         _constant("lo", 0.0), helper.make_node("Clip", ["n", "lo", "hi"], ["y"])],
        [("W", _w(1, 4, 3, 3, 3)), ("B", _w(2, 4)), ("s", _w(7, 4)), ("b", _w(8, 4)),
         ("m", _w(9, 4)), ("v", 1 + _w(10, 4) ** 2), ("hi", np.float32(1.5))]),
    "clip-max-only": lambda: ([helper.make_node("Clip", ["x", "", "hi"], ["y"])],
                              [("hi", np.float32(0.3))]),
    "clip-min-above-max": lambda: ([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                                   [("lo", np.float32(0.5)), ("hi", np.float32(-0.5))]),
    "activations": lambda: (
        [helper.make_node("LeakyRelu", ["x"], ["a"], alpha=0.3),
         helper.make_node("HardSigmoid", ["a"], ["b"], alpha=0.3, beta=0.4),
         helper.make_node("HardSwish", ["b"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"])],
        []),
    "relu-leaky-defaults": lambda: (
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("LeakyRelu", ["a"], ["b"]),
         helper.make_node("HardSigmoid", ["b"], ["y"])], []),
    "add-residual-and-relu": lambda: (
        [_conv(out="c", pads=[1, 1, 1, 1]), helper.make_node("Add", ["c", "x"], ["s"]),
         helper.make_node("Relu", ["s"], ["y"])], [("W", _w(1, 3, 3, 3, 3)), ("B", _w(2, 3))]),
    "add-mul-constants-per-channel-and-scalar": lambda: (
        [helper.make_node("Add", ["k", "x"], ["a"]), helper.make_node("Mul", ["a", "s"], ["b"]),
         helper.make_node("Mul", ["b", "two"], ["y"])],
        [("k", _w(3, 3, 1, 1)), ("s", _w(4, 1, 3, 1, 1)), ("two", np.float32(2.0))]),
    "squeeze-excitation-mul": lambda: (
        [helper.make_node("GlobalAveragePool", ["x"], ["g"]), _conv("fc", ("g", "W", "B"), "f"),
         helper.make_node("Sigmoid", ["f"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])],
        [("W", _w(1, 3, 3, 1, 1)), ("B", _w(2, 3))]),
    "add-broadcast-value": lambda: (
        [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
         helper.make_node("Add", ["x", "g"], ["y"])], []),
    "concat": lambda: (
        [*_bias_relu(5)[0], helper.make_node("Concat", ["r", "x", "c"], ["y"], axis=-3)],
        _bias_relu(5)[1]),
    "maxpool-every-attribute": lambda: (
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 1],
                          pads=[1, 0, 0, 1], dilations=[1, 2], ceil_mode=1)], []),
    "maxpool-same-upper": lambda: (
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                          auto_pad="SAME_UPPER")], []),
    "avgpool-exclude-pad-ceil": lambda: (
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                          pads=[1, 1, 1, 1], ceil_mode=1)], []),
    "avgpool-include-pad-asymmetric": lambda: (
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 3], strides=[1, 2],
                          pads=[1, 0, 0, 1], count_include_pad=1)], []),
    "avgpool-same-lower": lambda: (
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[1, 1],
                          auto_pad="SAME_LOWER")], []),
    "classifier-flatten-gemm": lambda: (
        [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
         helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("Gemm", ["f", "W", "C"], ["h"], alpha=0.5, beta=2.0, transB=1),
         helper.make_node("Relu", ["h"], ["y"])],
        [("W", _w(1, 7, 3)), ("C", _w(2, 7))]),
    "flatten-reshape-matmul": lambda: (
        [helper.make_node("Flatten", ["x"], ["f"], axis=1),
         helper.make_node("MatMul", ["f", "W"], ["m"]),
         helper.make_node("Reshape", ["m", "shape"], ["r"]),
         _conv("conv", ("r", "W2", "B2"), "c"), helper.make_node("Reshape", ["c", "flat"], ["y"])],
        [("W", _w(1, 3 * 7 * 9, 6)), ("shape", np.array([0, 6, 1, 1], np.int64)),
         ("W2", _w(2, 4, 6, 1, 1)), ("B2", _w(3, 4)), ("flat", np.array([-1, 4], np.int64))]),
    "gemm-no-trans-scalar-c": lambda: (
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W", "C"],
                                                                     ["y"])],
        [("W", _w(1, 189, 5)), ("C", np.float32(0.25))]),
    "identity-dropout": lambda: (
        [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Dropout", ["a"], ["b"]),
         helper.make_node("Relu", ["b"], ["y"])], []),
}


def _first_opset(op_type):
    return min(s.since_version for s in onnx.defs.get_all_schemas_with_history()
               if s.name == op_type and s.domain == "")


@pytest.mark.parametrize("newest", [False, True], ids=["oldest", "newest"])
@pytest.mark.parametrize("case", list(OPERATORS))
def test_each_operator_matches_onnx_runtime(case, newest):
    """At opset 11 (or the first that has every operator of the case: HardSwish came in
    14) and at the newest."""
    nodes, inits = OPERATORS[case]()
    opset = NEWEST if newest else max(11, *(_first_opset(n.op_type) for n in nodes))
    data = _graph(nodes, ["N", 3, 7, 9], inits, opset)
    net = fc.Network.from_onnx(data)
    for batch in (1, 2):
        x = _rng(batch).standard_normal((batch, 3, 7, 9)).astype(np.float32)
        _close(net(x), _ort(data, x))


def test_a_float64_graph():
    nodes, inits = OPERATORS["conv-asymmetric-pads-dilation"]()
    inits = [(k, np.asarray(v, np.float64)) for k, v in inits]
    data = _graph(nodes, [2, 3, 7, 9], inits, dtype=TensorProto.DOUBLE)
    x = _rng(3).standard_normal((2, 3, 7, 9))
    y = fc.Network.from_onnx(data)(x)
    w, b = dict(inits)["W"], dict(inits)["B"]
    expected = fc.conv2d(np.pad(x, ((0, 0), (0, 0), (0, 2), (1, 1))), w, b, stride=(2, 1),
                         dilation=(1, 2), backend="numpy")
    _close(y, expected, rtol=1e-12)


# --- refusals --------------------------------------------------------------------------------


def _softplus():
    return [helper.make_node("Softplus", ["x"], ["y"], name="odd_one")], []


def _conv_kernel_input():
    # the kernel computed by the graph (here, the input itself)
    return [_conv("c", ("x", "x"), "y")], []


# each a model the plan has no kernel for somewhere (and why, as fallback=False says it): the
# fallback runs those nodes through onnx.reference, and the result is ONNX Runtime's
NO_KERNEL = [
    (_softplus, r"node 'odd_one' \(Softplus\) is not supported by Network.from_onnx; "
                r"supported: Conv"),
    (_conv_kernel_input, r"node 'c' \(Conv\) is not supported: its kernel W \('x'\) must be "
                         r"a constant"),
    (lambda: ([helper.make_node("Concat", ["x", "x"], ["y"], axis=0, name="cat")], []),
     r"node 'cat' \(Concat\) is not supported: axis=0 on \[1, 3, 7, 9\]: the plan "
     r"concatenates .* along any axis but the batch"),
    (lambda: ([helper.make_node("Flatten", ["x"], ["y"], axis=2, name="fl")], []),
     r"node 'fl' \(Flatten\) is not supported: axis=2 .* keeps the batch"),
    (lambda: ([helper.make_node("Flatten", ["x"], ["f"]),
               helper.make_node("Gemm", ["f", "W"], ["y"], transA=1, name="g")],
              [("W", _w(1, 1, 5))]), r"node 'g' \(Gemm\) is not supported: transA=1"),
    (lambda: ([helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], name="mp"),
               helper.make_node("Relu", ["i"], ["j"])], []),
     r"node 'mp' \(MaxPool\) is not supported: its Indices output"),
    (lambda: ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2],
                                dilations=[2, 2], ceil_mode=1, name="ap")], []),
     r"node 'ap' \(AveragePool\) is not supported: dilations=\[2, 2\]: the plan's average "
     r"pooling is undilated"),
    (lambda: ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                pads=[2, 0, 2, 2], name="ap")], []),
     r"node 'ap' \(AveragePool\) is not supported: pads=\[2, 0, 2, 2\] over half the kernel"),
    (lambda: ([helper.make_node("BatchNormalization", ["x", "s", "s", "s", "s"], ["y", "m", "v"],
                                training_mode=1, name="bn")], [("s", np.ones(3, np.float32))]),
     r"node 'bn' \(BatchNormalization\) is not supported: training mode"),
    (lambda: ([helper.make_node("Reshape", ["x", "shape"], ["y"], name="rs")],
              [("shape", np.array([0, 7, 27], np.int64))]),
     r"node 'rs' \(Reshape\) is not supported: a reshape of \[1, 3, 7, 9\] to \['N', 7, "
     r"27\]: an output pixel's channels are not a constant step apart"),
    (lambda: ([helper.make_node("Add", ["x", "k"], ["y"], name="add")],
              [("k", _w(1, 2, 1, 1, 1))]),
     r"node 'add' \(Add\) is not supported: a constant of shape \[2, 1, 1, 1\] on "
     r"\[1, 3, 7, 9\]"),
    (lambda: ([helper.make_node("MatMul", ["x", "k"], ["y"], name="mm")], [("k", _w(1, 9, 4))]),
     r"node 'mm' \(MatMul\) is not supported: its input has shape \[1, 3, 7, 9\]"),
]


# judged by onnx.reference, the specification's own implementation, where ONNX Runtime departs
BEYOND_ONNX_RUNTIME = {
    "bn": "ONNX Runtime's CPU BatchNormalization does not normalise by the batch's statistics "
          "in training mode (checked by hand against NumPy: onnx.reference does)",
    "mp": "ONNX Runtime has no Relu for int64",
}


@pytest.mark.parametrize("make, message", NO_KERNEL)
def test_without_the_fallback_every_node_without_a_kernel_is_named(make, message):
    nodes, inits = make()
    with pytest.raises(ValueError, match=r"Network.from_onnx\(fallback=False\): the plan has "
                                         r"no kernel for \d nodes?: " + message):
        fc.Network.from_onnx(_graph(nodes, ["N", 3, 7, 9], inits), fallback=False)


@pytest.mark.parametrize("make, message", NO_KERNEL)
def test_the_fallback_runs_what_the_plan_has_no_kernel_for(make, message):
    nodes, inits = make()
    data = _graph(nodes, ["N", 3, 7, 9], inits)
    net = fc.Network.from_onnx(data)
    # a batch of 1 where the input is also the kernel, or transposed (transA)
    batch = 1 if nodes[-1].op_type in ("Conv", "Gemm") else 2
    x = _rng(4).standard_normal((batch, 3, 7, 9)).astype(np.float32)
    got = net(x)
    if nodes[0].name in BEYOND_ONNX_RUNTIME:
        from onnx.reference import ReferenceEvaluator

        expected = ReferenceEvaluator(onnx.load_from_string(data)).run(None, {"x": x})[0]
    else:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        expected = session.run(None, {"x": x})[0]
    _close(got, expected)
    shown = str(net)
    assert "fallback: onnx.reference" in shown and message.split(r" \(")[0].replace(
        "\\", "") in shown


def test_fallback_false_names_every_node_at_once():
    nodes = [helper.make_node("Softplus", ["x"], ["a"], name="one"),
             helper.make_node("Relu", ["a"], ["b"], name="planned"),
             helper.make_node("Softsign", ["b"], ["y"], name="two")]
    with pytest.raises(ValueError, match=r"no kernel for 2 nodes: node 'one' \(Softplus\) .*; "
                                         r"node 'two' \(Softsign\) is not supported"):
        fc.Network.from_onnx(_graph(nodes, ["N", 3, 7, 9]), fallback=False)


def test_a_node_the_specification_forbids_is_refused_even_with_the_fallback():
    nodes, inits = [_conv(inputs=("x", "W"), strides=[0, 1], name="c")], [("W", _w(4, 5, 3, 3, 3))]
    with pytest.raises(ValueError, match=r"node 'c' \(Conv\) is invalid: .*non-positive stride"):
        fc.Network.from_onnx(_graph(nodes, ["N", 3, 7, 9], inits))


def test_an_operator_of_another_domain_is_refused():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.example")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 7, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 7, 9])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", NEWEST),
                                                    helper.make_opsetid("com.example", 1)])
    with pytest.raises(ValueError, match=r"node 'r' \(Relu\) is not supported by "
                                         r"Network.from_onnx: operators of domain 'com.example'"):
        fc.Network.from_onnx(model)


def test_several_outputs_are_a_tuple_in_the_graph_order():
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], name="mp"),
             helper.make_node("Relu", ["x"], ["r"], name="r")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 7, 9])],
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["N", 3, 3, 4]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 3, 7, 9]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 3, 4])])
    data = helper.make_model(graph).SerializeToString()
    x = _rng(5).standard_normal((2, 3, 7, 9)).astype(np.float32)
    got = fc.Network.from_onnx(data)(x)
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert isinstance(got, tuple) and len(got) == 3
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)


def test_same_padding_with_a_stride_is_planned_per_input_size():
    nodes, inits = ([_conv(inputs=("x", "W"), auto_pad="SAME_UPPER", strides=[2, 2], name="c")],
                    [("W", _w(4, 5, 3, 3, 3))])
    data = _graph(nodes, ["N", 3, "H", "W"], inits)
    with pytest.raises(ValueError, match=r"node 'c' \(Conv\) is not supported: auto_pad="
                                         r"SAME_UPPER with stride 2 needs the input's size"):
        fc.Network.from_onnx(data, fallback=False)
    net = fc.Network.from_onnx(data)
    for shape in ((1, 3, 7, 9), (2, 3, 10, 5)):
        x = _rng(6).standard_normal(shape).astype(np.float32)
        _close(net(x), _ort(data, x))
        assert "1 plan segments, 0 fallback nodes" in str(net).split("planned for")[-1]
    fc.Network.from_onnx(_graph(nodes, ["N", 3, 7, 9], inits), fallback=False)  # one plan


@pytest.mark.parametrize("model, error, message", [
    (b"not a model", ValueError, r"Network.from_onnx: the model is not valid ONNX"),
    (3.5, TypeError, r"expects a path, bytes or an onnx.ModelProto, but got float"),
    ("/no/such/model.onnx", ValueError, r"no such file: '/no/such/model.onnx'"),
])
def test_what_is_not_a_model(model, error, message):
    with pytest.raises(error, match=message):
        fc.Network.from_onnx(model)


def test_graphs_the_plan_cannot_take():
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    with pytest.raises(ValueError, match=r"reads opsets 11 and later, but the model uses "
                                         r"opset 10"):
        fc.Network.from_onnx(_graph(relu, ["N", 3, 7, 9], opset=10))
    with pytest.raises(ValueError, match=r"no kernel for 1 node: node 'y' \(Relu\) reads "
                                         r"\['int32'\]: the plan computes on float32"):
        fc.Network.from_onnx(_graph(relu, ["N", 3, 7, 9], dtype=TensorProto.INT32),
                             fallback=False)
    with pytest.raises(ValueError, match=r"no kernel for 1 node: node 'y' \(Relu\) reads "
                                         r"\['x'\] from outside a plan segment, which takes "
                                         r"\(N, C, H, W\) inputs of one batch"):
        fc.Network.from_onnx(_graph(relu, ["N", 3]), fallback=False)
    for shape, dtype in (([2, 3, 7, 9], TensorProto.INT32), ([2, 3], TensorProto.FLOAT)):
        data = _graph(relu, ["N", *shape[1:]], dtype=dtype)
        x = _rng(7).integers(-5, 5, shape).astype(helper.tensor_dtype_to_np_dtype(dtype))
        np.testing.assert_array_equal(fc.Network.from_onnx(data)(x), np.maximum(x, 0))
    net = fc.Network.from_onnx(_graph(relu, ["N", 3, 7, 9]))
    with pytest.raises(ValueError, match=r"the model's input 'x' is \[N, 3, 7, 9\], but got "
                                         r"input of size \[1, 4, 7, 9\]"):
        net(np.zeros((1, 4, 7, 9), np.float32))
    net(np.zeros((5, 3, 7, 9), np.float32))  # any batch


@pytest.mark.parametrize("shape, attrs", [
    ((1, 1, 4, 4), dict(kernel_shape=[2, 2], strides=[1, 1])),
    ((2, 3, 7, 9), dict(kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 1])),
    ((1, 2, 5, 6), dict(kernel_shape=[2, 2], strides=[1, 1], storage_order=1)),
    ((2, 2, 7, 8), dict(kernel_shape=[3, 3], strides=[2, 1], ceil_mode=1, dilations=[1, 2])),
    ((1, 2, 7, 8), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="SAME_LOWER")),
])
def test_max_pool_indices_match_onnx_runtime(shape, attrs):
    """onnx.reference's indices are wrong where windows overlap: the fallback's own NumPy
    kernel gives ONNX Runtime's (the values and the indices, exactly)."""
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, shape)],
                              [helper.make_tensor_value_info("y", 1, None),
                               helper.make_tensor_value_info("i", 7, None)])
    data = helper.make_model(graph).SerializeToString()
    x = _rng(8).standard_normal(shape).astype(np.float32)
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = fc.Network.from_onnx(data)(x)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)


def test_several_inputs_in_order_or_by_name():
    """Two inputs: a convolution of one plus the other (one plan segment of two inputs), and
    a constant listed as an input (an initializer)."""
    nodes = [_conv(inputs=("x", "W"), out="c", pads=[1, 1, 1, 1], name="c"),
             helper.make_node("Add", ["c", "z"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="r")]
    w = _w(9, 4, 3, 3, 3)
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 7, 9]),
                     helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 7, 9]),
                     helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W")])
    data = helper.make_model(graph).SerializeToString()
    net = fc.Network.from_onnx(data)
    x = _rng(10).standard_normal((2, 3, 7, 9)).astype(np.float32)
    z = _rng(11).standard_normal((2, 4, 7, 9)).astype(np.float32)
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "z": z})[0]
    _close(net(x, z), expected)
    _close(net({"z": z, "x": x}), expected)
    # one plan segment of two inputs: the convolution, the addition, the ReLU
    assert "1 plan segments, 0 fallback nodes" in str(net)
    assert "plan segment 'x', 'z' -> 'y'" in str(net)
    with pytest.raises(TypeError, match=r"the model takes 2 inputs \['x', 'z'\], but got 1"):
        net(x)
    with pytest.raises(ValueError, match=r"the model's input 'z' is \[N, 4, 7, 9\], but got "
                                         r"input of size \[2, 3, 7, 9\]"):
        net(x, x)
    with pytest.raises(TypeError, match=r"input 'z': Input type \(float64\)"):
        net(x, z.astype(np.float64))


@pytest.mark.parametrize("kernel, c_in, c_out, size, bias, bn, relu", [
    ((2, 2), 8, 5, (7, 9), True, False, True), ((2, 2), 16, 16, (5, 4), False, True, False),
    ((3, 3), 4, 20, (3, 5), True, True, True), ((2, 3), 5, 8, (4, 6), True, False, False),
    ((2, 2), 12, 1, (6, 7), True, True, True), ((3, 2), 5, 4, (4, 3), False, False, False)])
def test_conv_transpose_whose_kernel_is_its_stride_runs_on_the_plan(kernel, c_in, c_out, size,
                                                                   bias, bn, relu):
    """One pointwise GEMM per output phase (a batch norm after it folded, a ReLU fused); with
    fewer output channels, one GEMM of every phase's and a depth-to-space."""
    rng = _rng(12)
    inits = [("W", rng.standard_normal((c_in, c_out, *kernel)).astype(np.float32))]
    inputs = ["x", "W"]
    if bias:
        inits.append(("B", rng.standard_normal(c_out).astype(np.float32)))
        inputs.append("B")
    nodes = [helper.make_node("ConvTranspose", inputs, ["t"], strides=list(kernel), name="ct")]
    last = "t"
    if bn:
        nodes.append(helper.make_node("BatchNormalization", ["t", "s", "b", "m", "v"], ["n"]))
        inits += [("s", rng.uniform(0.5, 1.5, c_out).astype(np.float32)),
                  ("b", rng.standard_normal(c_out).astype(np.float32)),
                  ("m", rng.standard_normal(c_out).astype(np.float32)),
                  ("v", rng.uniform(0.5, 2, c_out).astype(np.float32))]
        last = "n"
    nodes.append(helper.make_node("Relu" if relu else "Identity", [last], ["y"]))
    data = _graph(nodes, ["N", c_in, *size], inits)
    net = fc.Network.from_onnx(data, fallback=False)
    for batch in (1, 3):
        x = rng.standard_normal((batch, c_in, *size)).astype(np.float32)
        _close(net(x), _ort(data, x))
    shuffled = c_out < tuning.PLAN_DECONV_SHUFFLE_BELOW
    assert ("depth to space" in str(net)) == shuffled
    assert ("transposed conv" in str(net)) != shuffled and ("fused" in str(net)) == (bn or relu)


@pytest.mark.parametrize("block, mode, channels", [(2, "DCR", 8), (3, "DCR", 18), (2, "CRD", 8)])
def test_depth_to_space(block, mode, channels):
    """DepthToSpace of mode DCR on the plan (after a convolution, so that a tap's channels come
    from its tiles), into a concatenation's slice; CRD in the fallback; both as ONNX Runtime."""
    rng = _rng(13)
    w = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=block, mode=mode),
             helper.make_node("Resize", ["x", "", "s"], ["u"], mode="nearest"),
             helper.make_node("Concat", ["u", "d"], ["y"], axis=1)]
    inits = [("W", w), ("s", np.array([1, 1, block, block], np.float32))]
    data = _graph(nodes, ["N", 3, 5, 6], inits)
    net = fc.Network.from_onnx(data)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    _close(net(x), _ort(data, x))
    assert ("depth to space" in str(net)) == (mode == "DCR")
    if mode == "DCR":
        assert "depth to space 2x2 into its concatenation's slice" in str(net) or block != 2
    else:
        with pytest.raises(ValueError, match=r"node 'd' \(DepthToSpace\) is not supported: mode "
                                             r"'CRD': the plan's depth-to-space is mode 'DCR'"):
            fc.Network.from_onnx(data, fallback=False)


@pytest.mark.parametrize("attrs, how, target, planned", [
    (dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
     "scales", [1, 1, 2, 2], True),
    (dict(mode="nearest", coordinate_transformation_mode="half_pixel"), "scales", [1, 1, 3, 2],
     True),
    (dict(mode="nearest", coordinate_transformation_mode="pytorch_half_pixel",
          nearest_mode="round_prefer_ceil"), "sizes", [2, 3, 14, 27], True),
    (dict(mode="linear", coordinate_transformation_mode="align_corners"), "sizes",
     [2, 3, 7, 9], True),  # the same size: the identity
    (dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="floor"),
     "scales", [1, 1, 2, 2], True),  # not a repetition: the resize's tables
    (dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
     "scales", [1, 1, 2.5, 2], True),
    (dict(mode="nearest", coordinate_transformation_mode="align_corners",
          nearest_mode="ceil"), "sizes", [2, 3, 4, 13], True),
    (dict(mode="nearest", coordinate_transformation_mode="half_pixel",
          nearest_mode="round_prefer_ceil"), "scales", [1, 1, 0.6, 1.7], True),
    (dict(mode="linear", coordinate_transformation_mode="half_pixel"), "scales", [1, 1, 2, 2],
     True),
    (dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"), "sizes",
     [2, 3, 1, 20], True),
    (dict(mode="linear", coordinate_transformation_mode="align_corners"), "sizes",
     [2, 3, 15, 4], True),
    (dict(mode="linear", coordinate_transformation_mode="asymmetric"), "scales",
     [1, 1, 1.5, 0.75], True),
    (dict(mode="linear", coordinate_transformation_mode="half_pixel"), "scales",
     [1, 1, 0.5, 0.5], True),
    (dict(mode="linear", coordinate_transformation_mode="half_pixel", antialias=1), "scales",
     [1, 1, 0.5, 0.5], False),  # an antialiased reduction: the fallback's
    (dict(mode="cubic"), "scales", [1, 1, 2, 2], False),
])
def test_resize(attrs, how, target, planned):
    """A nearest upsampling by integer factors (written into the concatenation after it), a
    resize to the same size, any other nearest or linear resize through its tables (every
    coordinate transformation and rounding), and the others in the fallback: each as ONNX
    Runtime."""
    values = np.asarray(target, np.float32 if how == "scales" else np.int64)
    inputs = ["x", "", "t"] if how == "scales" else ["x", "", "", "t"]
    nodes = [helper.make_node("Resize", inputs, ["r"], name="rs", **attrs),
             helper.make_node("Relu", ["r"], ["q"]),
             helper.make_node("Concat", ["r", "q"], ["y"], axis=1)]
    data = _graph(nodes, ["N", 3, 7, 9], [("t", values)])
    net = fc.Network.from_onnx(data)
    x = _rng(13).standard_normal((2, 3, 7, 9)).astype(np.float32)
    _close(net(x), _ort(data, x))
    assert ("node 'rs' (Resize): fallback" not in str(net)) == planned


@pytest.mark.parametrize("how", ["split-input", "split-attribute", "split-equal", "slice"])
def test_split_and_slice_on_the_channels_run_on_the_plan(how):
    """Each part a copy of its channels (into the concatenation that reads it alone), read by
    a padded convolution (whose border the copy's step zeroes) and by the concatenation."""
    rng = _rng(14)
    inits = [("W", rng.standard_normal((8, 3, 1, 1)).astype(np.float32)),
             ("W2", rng.standard_normal((5, 5, 3, 3)).astype(np.float32))]
    opset = NEWEST
    if how == "slice":
        cut = [helper.make_node("Slice", ["c", "s0", "e0", "ax"], ["a"], name="cut0"),
               helper.make_node("Slice", ["c", "s1", "e1", "ax"], ["b"], name="cut1")]
        inits += [("s0", np.array([0])), ("e0", np.array([3])), ("s1", np.array([-5])),
                  ("e1", np.array([2**40])), ("ax", np.array([1]))]
    elif how == "split-input":
        cut = [helper.make_node("Split", ["c", "sizes"], ["a", "b"], axis=1, name="cut")]
        inits.append(("sizes", np.array([3, 5])))
    elif how == "split-attribute":
        cut = [helper.make_node("Split", ["c"], ["a", "b"], axis=1, split=[3, 5], name="cut")]
        opset = 12
    else:  # opset 18's equal parts: 4 and 4
        cut = [helper.make_node("Split", ["c"], ["a", "b"], axis=1, num_outputs=2, name="cut")]
        opset = 18
        inits[1] = ("W2", rng.standard_normal((5, 4, 3, 3)).astype(np.float32))
    nodes = [_conv("c1", ("x", "W"), "c"), *cut,
             _conv("c2", ("b", "W2"), "d", pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["a", "d", "b"], ["y"], axis=1)]
    data = _graph(nodes, ["N", 3, 7, 9], inits, opset=opset)
    net = fc.Network.from_onnx(data, fallback=False)
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    _close(net(x), _ort(data, x))
    assert "into its concatenation's slice" in str(net)


def test_a_model_planned_in_segments_pickles():
    import pickle

    nodes = [_conv(inputs=("x", "W"), out="c", pads=[1, 1, 1, 1], name="c"),
             helper.make_node("Softplus", ["c"], ["y"], name="soft")]
    data = _graph(nodes, ["N", 3, 7, 9], [("W", _w(15, 4, 3, 3, 3))])
    net = fc.Network.from_onnx(data, threads=1)
    x = _rng(16).standard_normal((2, 3, 7, 9)).astype(np.float32)
    again = pickle.loads(pickle.dumps(net))
    assert isinstance(again, fc.Network) and again.threads == 1
    np.testing.assert_array_equal(again(x), net(x))
    _close(net(x), _ort(data, x))


@pytest.mark.parametrize("op, attrs", [("Tanh", {}), ("Mish", {}), ("Gelu", {}),
                                       ("Gelu", dict(approximate="tanh"))])
def test_transcendental_activations_fuse_into_the_convolution(op, attrs):
    """Tanh, Mish (opset 18) and Gelu (opset 20, erf or its tanh form) as ONNX Runtime, each
    run in the convolution's epilogue."""
    rng = _rng(15)
    nodes = [_conv("c", ("x", "W", "B"), "c", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["y"], name="act", **attrs)]
    inits = [("W", rng.standard_normal((6, 3, 3, 3)).astype(np.float32)),
             ("B", rng.standard_normal(6).astype(np.float32))]
    data = _graph(nodes, ["N", 3, 9, 8], inits, opset=max(20, NEWEST))
    net = fc.Network.from_onnx(data, fallback=False)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    _close(net(x), _ort(data, x))
    assert [n.op for n in net.graph.nodes] == ["conv"]
    with pytest.raises(ValueError, match=r"node 'act' \(Gelu\) is invalid: approximate must be "
                                         r"'none' or 'tanh', but got 'erf'"):
        bad = [nodes[0], helper.make_node("Gelu", ["c"], ["y"], name="act", approximate="erf")]
        fc.Network.from_onnx(_graph(bad, ["N", 3, 9, 8], inits, opset=max(20, NEWEST)))


def test_global_max_pool():
    """GlobalMaxPool on the plan (NaN where a channel has one), as ONNX Runtime."""
    nodes = [_conv("c", ("x", "W", "B"), "c"), helper.make_node("GlobalMaxPool", ["c"], ["y"])]
    rng = _rng(16)
    inits = [("W", rng.standard_normal((5, 3, 3, 3)).astype(np.float32)),
             ("B", rng.standard_normal(5).astype(np.float32))]
    data = _graph(nodes, ["N", 3, 7, 6], inits)
    net = fc.Network.from_onnx(data, fallback=False)
    x = rng.standard_normal((3, 3, 7, 6)).astype(np.float32)
    _close(net(x), _ort(data, x))
    assert "global max" in str(net)


@pytest.mark.parametrize("opset, size, planned", [(NEWEST, (7, 6), True), (11, (7, 6), False),
                                                  (11, (1, 1), True)])
def test_softmax_over_the_channels(opset, size, planned):
    """Softmax on axis 1 (a segmentation head's classes), then Exp: on the plan from opset
    13; before, axis 1 spans every element of an image, the channels alone for one pixel."""
    rng = _rng(17)
    nodes = [_conv("c", ("x", "W", "B"), "c"),
             helper.make_node("Softmax", ["c"], ["s"], axis=1, name="sm"),
             helper.make_node("Exp", ["s"], ["y"])]
    inits = [("W", rng.standard_normal((5, 3, 1, 1)).astype(np.float32) * 4),
             ("B", rng.standard_normal(5).astype(np.float32))]
    data = _graph(nodes, ["N", 3, *size], inits, opset=opset)
    net = fc.Network.from_onnx(data)
    x = rng.standard_normal((2, 3, *size)).astype(np.float32)
    _close(net(x), _ort(data, x))
    assert ("node 'sm' (Softmax): fallback" not in str(net)) == planned


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    dict(kernel_shape=[4, 3], strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[3, 2], strides=[3, 2], auto_pad="SAME_LOWER", group=2),
    dict(kernel_shape=[3, 3], strides=[2, 2], output_shape=[12, 15]),
    dict(kernel_shape=[2, 2], strides=[3, 3], group=4),  # phases without a tap
])
def test_any_conv_transpose_runs_on_the_plan(attrs):
    """ConvTranspose of any strides, pads, output_padding, dilations, group, auto_pad and
    output_shape: one convolution per output phase, as ONNX Runtime."""
    rng = _rng(18)
    groups = attrs.get("group", 1)
    w = rng.standard_normal((4, 8 // groups, *attrs["kernel_shape"])).astype(np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "W", "B"], ["t"], name="ct", **attrs),
             helper.make_node("Relu", ["t"], ["y"])]
    data = _graph(nodes, ["N", 4, 6, 7], [("W", w), ("B", rng.standard_normal(8).astype(
        np.float32))])
    net = fc.Network.from_onnx(data, fallback=False)
    for batch in (1, 2):
        x = rng.standard_normal((batch, 4, 6, 7)).astype(np.float32)
        _close(net(x), _ort(data, x))
    assert "one per output phase" in str(net)
    with pytest.raises(ValueError, match=r"node 'ct' \(ConvTranspose\) is invalid: "
                                         r"output_padding=\[2, 2\] must be below the stride"):
        bad = [helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], name="ct",
                                kernel_shape=[3, 3], strides=[2, 2], output_padding=[2, 2])]
        fc.Network.from_onnx(_graph(bad, ["N", 4, 6, 7], [("W", w[:, :, :3, :3]), (
            "B", np.zeros(8, np.float32))]) if groups == 1 else _graph(
            bad, ["N", 4, 6, 7], [("W", rng.standard_normal((4, 8, 3, 3)).astype(np.float32)),
                                  ("B", np.zeros(8, np.float32))]))


def _slice(name, out, starts, ends, axes, steps, inits):
    inits += [(f"{name}_s", np.array(starts)), (f"{name}_e", np.array(ends)),
              (f"{name}_a", np.array(axes)), (f"{name}_t", np.array(steps))]
    return helper.make_node("Slice", ["x", f"{name}_s", f"{name}_e", f"{name}_a", f"{name}_t"],
                            [out], name=name)


def test_yolov5_focus_runs_on_the_plan():
    """YOLOv5's Focus: four Slices of every other row and column, concatenated on the
    channels (each written straight into its slice), then a convolution; and other strided
    slices of the pixels, as ONNX Runtime."""
    rng = _rng(19)
    inits = [("W", rng.standard_normal((6, 12, 3, 3)).astype(np.float32))]
    parts = [_slice(f"s{k}", f"p{k}", [dy, dx], [2**40, 2**40], [2, 3], [2, 2], inits)
             for k, (dy, dx) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)])]
    nodes = [*parts, helper.make_node("Concat", [f"p{k}" for k in range(4)], ["f"], axis=1),
             _conv("c", ("f", "W"), "y", pads=[1, 1, 1, 1])]
    data = _graph(nodes, ["N", 3, 10, 14], inits)
    net = fc.Network.from_onnx(data, fallback=False)
    x = rng.standard_normal((2, 3, 10, 14)).astype(np.float32)
    _close(net(x), _ort(data, x))
    assert str(net).count("every 2 x 2 into its concatenation's slice") == 4
    x = rng.standard_normal((2, 3, 10, 13)).astype(np.float32)
    inits = []
    other = [_slice("o", "y", [-8, 1], [-1, 12], [-2, 3], [3, 4], inits)]
    data = _graph(other, ["N", 3, 10, 13], inits)
    _close(fc.Network.from_onnx(data, fallback=False)(x), _ort(data, x))
    backwards = [_slice("b", "y", [5], [0], [2], [-1], [])]
    with pytest.raises(ValueError, match=r"node 'b' \(Slice\) is not supported: a slice of "
                                         r"\[1, 3, 10, 13\] on axes \[2\] by steps \[-1\]"):
        fc.Network.from_onnx(_graph(backwards, ["N", 3, 10, 13], [
            ("b_s", np.array([5])), ("b_e", np.array([0])), ("b_a", np.array([2])),
            ("b_t", np.array([-1]))]), fallback=False)


def _yolo_head(batch_dim="N", classes=3, bins=4):
    """A YOLOv8-style head, as its export writes it: two scales' box and class maps joined on
    the channels, flattened to (N, C, L), joined along L, split into the box distribution and
    the classes; the distribution's softmax over ``bins`` bins (a Reshape and a Transpose),
    its expectation (a 1x1 convolution of weights 0 .. bins - 1), back to (N, 4, L); the
    boxes from anchors and strides (Slice, Sub, Div, Add, Mul by constants of (1, 2, L) and
    (1, L)); the classes' sigmoid; all joined on the channels."""
    rng = _rng(21)
    box = 4 * bins
    inits = [("W1", rng.standard_normal((box + classes, 3, 3, 3)).astype(np.float32)),
             ("W2", rng.standard_normal((box + classes, 3, 3, 3)).astype(np.float32)),
             ("dfl", np.arange(bins, dtype=np.float32).reshape(1, bins, 1, 1)),
             ("flat", np.array([0, box + classes, -1])), ("sizes", np.array([box, classes])),
             ("bins", np.array([0, 4, bins, -1])), ("four", np.array([0, 4, -1])),
             ("s0", np.array([0])), ("e0", np.array([2])), ("s1", np.array([2])),
             ("e1", np.array([4])), ("ax", np.array([1])), ("two", np.float32(2.0))]
    # input 3 x 8 x 6: the scales are 8 x 6 (stride 1) and 4 x 3 (stride 2): L = 48 + 12
    length = 8 * 6 + 4 * 3
    inits += [("anchors", rng.uniform(0, 8, (1, 2, length)).astype(np.float32)),
              ("strides", np.repeat([[1.0, 2.0]], [48, 12]).astype(np.float32)[None, :])]
    nodes = [_conv("p1", ("x", "W1"), "p1", pads=[1, 1, 1, 1]),
             _conv("p2", ("x", "W2"), "p2", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Reshape", ["p1", "flat"], ["f1"], name="flat1"),
             helper.make_node("Reshape", ["p2", "flat"], ["f2"], name="flat2"),
             helper.make_node("Concat", ["f1", "f2"], ["f"], axis=2, name="join"),
             helper.make_node("Split", ["f", "sizes"], ["d", "k"], axis=1, name="split"),
             helper.make_node("Reshape", ["d", "bins"], ["d4"], name="unflat"),
             helper.make_node("Transpose", ["d4"], ["dt"], perm=[0, 2, 1, 3], name="swap"),
             helper.make_node("Softmax", ["dt"], ["sm"], axis=1, name="softmax"),
             _conv("dfl", ("sm", "dfl"), "e"),
             helper.make_node("Reshape", ["e", "four"], ["dist"], name="dist"),
             helper.make_node("Slice", ["dist", "s0", "e0", "ax"], ["lt"], name="lt"),
             helper.make_node("Slice", ["dist", "s1", "e1", "ax"], ["rb"], name="rb"),
             helper.make_node("Sub", ["rb", "lt"], ["wh"], name="sub"),
             helper.make_node("Div", ["wh", "two"], ["half"], name="div"),
             helper.make_node("Add", ["anchors", "half"], ["c"], name="centre"),
             helper.make_node("Mul", ["c", "strides"], ["xy"], name="scale_xy"),
             helper.make_node("Add", ["lt", "rb"], ["size"], name="add"),
             helper.make_node("Mul", ["size", "strides"], ["wh2"], name="scale_wh"),
             helper.make_node("Sigmoid", ["k"], ["score"], name="score"),
             helper.make_node("Concat", ["xy", "wh2", "score"], ["y"], axis=1, name="out")]
    return _graph(nodes, [batch_dim, 3, 8, 6], inits)


def test_a_yolov8_head_runs_on_the_plan():
    """Every node of the head on the plan, the (N, C, L) values as (N, C, 1, L): the
    reshapes and the transpose as gathers, the joins along L as copies, the box arithmetic as
    element-wise steps with its constants; as ONNX Runtime, for two batch sizes."""
    data = _yolo_head()
    net = fc.Network.from_onnx(data, fallback=False)
    for batch in (1, 3):
        x = _rng(22).standard_normal((batch, 3, 8, 6)).astype(np.float32)
        got = net(x)
        assert got.shape == (batch, 4 + 3, 60)
        _close(got, _ort(data, x))
    shown = str(net)
    assert "0 fallback nodes" in shown and "fallback: onnx.reference" not in shown
    for what in ("node 'flat1' (Reshape): gather, each pixel's channels 1 apart in the input "
                 "into its concatenation's slice",
                 "node 'unflat' (Reshape): gather, each pixel's channels 1 apart",
                 "node 'dist' (Reshape): gather, each pixel's channels 60 apart",
                 "(Concat): concat of 2 (2 written in place by their producers, 0 copied into "
                 "its width)", "(Sub): sub", "(Add): add of a constant",
                 "(Mul): mul of a constant", "softmax over 4 channels"):
        assert what in shown, what
    # the Reshape to (N, 4, 4, L) and the Transpose after it: one gather
    assert "node 'swap' (Transpose)" not in shown


@pytest.mark.parametrize("perm, shape", [([0, 2, 1, 3], (2, 5, 3, 4)), ([0, 3, 1, 2], (2, 5, 3, 4)),
                                         ([0, 1, 3, 2], (1, 4, 3, 5)), ([0, 2, 1], (2, 6, 5))])
def test_a_transpose_that_keeps_the_batch(perm, shape):
    """A transpose of (N, C, H, W) or (N, C, L) after a convolution and before another: a
    gather on the plan, as ONNX Runtime; one that moves the batch runs in the fallback."""
    rng = _rng(23)
    rank = len(shape)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=perm, name="t"),
             helper.make_node("Sigmoid", ["t"], ["y"])]
    data = _graph(nodes, ["N", *shape[1:]], [])
    net = fc.Network.from_onnx(data, fallback=False)
    x = rng.standard_normal(shape).astype(np.float32)
    _close(net(x), _ort(data, x))
    assert "gather" in str(net) or perm == list(range(rank))
    moved = _graph([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, *range(2, rank)],
                                     name="t"), helper.make_node("Relu", ["t"], ["y"])],
                   list(shape), [])
    with pytest.raises(ValueError, match=r"node 't' \(Transpose\) is not supported: perm=\[1, "
                                         r"0.*moves the batch: the plan keeps it first"):
        fc.Network.from_onnx(moved, fallback=False)
    _close(fc.Network.from_onnx(moved)(x), _ort(moved, x))


@pytest.mark.parametrize("target, planned", [
    ([0, 6, -1], True),           # the pixels into one row: (N, C, L)
    ([0, 3, 2, 20], True),        # the channels into the rows: each pixel's channels a step apart
    ([0, 2, 3, 20], True),
    ([0, 120], True),             # a flatten, (N, C * H * W)
    ([0, 1, 6, 20], True),        # every channel into a row of its own
    ([0, 12, 10], False),         # half a row of pixels per channel: no constant step
])
def test_a_reshape_between_images_of_the_batch_kept(target, planned):
    """A reshape of (N, 6, 4, 5) keeping the batch: a gather on the plan where each output
    pixel's channels are a constant step apart in the input, else the fallback (named); as
    ONNX Runtime either way."""
    rng = _rng(24)
    nodes = [_conv("c", ("x", "W"), "c"),
             helper.make_node("Reshape", ["c", "shape"], ["r"], name="rs"),
             helper.make_node("Relu", ["r"], ["y"])]
    inits = [("W", rng.standard_normal((6, 3, 1, 1)).astype(np.float32)),
             ("shape", np.array(target))]
    data = _graph(nodes, [2, 3, 4, 5], inits)
    net = fc.Network.from_onnx(data)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    _close(net(x), _ort(data, x))
    assert ("node 'rs' (Reshape): fallback" not in str(net)) == planned
    if not planned:
        with pytest.raises(ValueError, match=r"node 'rs' \(Reshape\) is not supported: a "
                                             r"reshape of \[1, 6, 4, 5\] to \['N', 12, 10\]: an "
                                             r"output pixel's channels are not a constant step"):
            fc.Network.from_onnx(data, fallback=False)


@pytest.mark.parametrize("op", ["Sub", "Div"])
@pytest.mark.parametrize("form", ["values", "broadcast", "constant-first", "pixels"])
def test_differences_and_quotients(op, form):
    """Sub and Div of two activations (one of them perhaps a pixel per image, on either
    side), of a constant by an activation, and by a constant that varies over the pixels:
    element-wise steps on the plan, exactly as ONNX Runtime divides."""
    rng = _rng(25)
    inits = [("W", rng.standard_normal((4, 3, 1, 1)).astype(np.float32)),
             ("K", rng.uniform(0.5, 2, (4, 1, 1)).astype(np.float32)),
             ("P", rng.uniform(0.5, 2, (1, 1, 5, 6)).astype(np.float32))]
    first = [_conv("c", ("x", "W"), "c"), helper.make_node("Clip", ["c", "lo", "hi"], ["s"])]
    inits += [("lo", np.float32(0.5)), ("hi", np.float32(3.0))]  # exact, away from zero
    if form == "values":
        ops = [helper.make_node(op, ["c", "s"], ["y"], name="op")]
    elif form == "broadcast":
        ops = [helper.make_node("GlobalAveragePool", ["s"], ["g"]),
               helper.make_node(op, ["g", "s"], ["y"], name="op")]
    elif form == "constant-first":
        ops = [helper.make_node(op, ["K", "s"], ["y"], name="op")]
    else:
        ops = [helper.make_node(op, ["c", "P"], ["y"], name="op")]
    data = _graph(first + ops, ["N", 3, 5, 6], inits)
    net = fc.Network.from_onnx(data, fallback=False)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    _close(net(x), _ort(data, x), rtol=1e-6)


def test_a_constant_that_would_grow_the_activation_is_refused():
    """A constant whose shape broadcasts the activation to more channels (or another batch)
    is not an element-wise step of the activation's shape: the fallback's, named."""
    inits = [("K", _w(26, 2, 4, 5, 6))]
    data = _graph([helper.make_node("Add", ["x", "K"], ["y"], name="grow")], ["N", 1, 5, 6],
                  inits)
    with pytest.raises(ValueError, match=r"node 'grow' \(Add\) is not supported: a constant of "
                                         r"shape \[2, 4, 5, 6\] on \[1, 1, 5, 6\]"):
        fc.Network.from_onnx(data, fallback=False)
    x = _rng(27).standard_normal((1, 1, 5, 6)).astype(np.float32)
    _close(fc.Network.from_onnx(data)(x), _ort(data, x))


@pytest.mark.parametrize("slope_shape", [(1,), (5, 1, 1), (1, 5, 1, 1), (5, 6, 7), (7,)])
def test_prelu(slope_shape):
    """PRelu after a convolution: one slope is a LeakyRelu in the convolution's epilogue; one
    per channel, or any that broadcasts to the activation's shape, an element-wise step; as
    ONNX Runtime (NaN and negative zero through as it gives them)."""
    rng = _rng(28)
    inits = [("W", rng.standard_normal((5, 3, 3, 3)).astype(np.float32)),
             ("slope", rng.uniform(-1, 1, slope_shape).astype(np.float32))]
    nodes = [_conv("c", ("x", "W"), "c", pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c", "slope"], ["y"], name="prelu")]
    data = _graph(nodes, ["N", 3, 6, 7], inits)
    net = fc.Network.from_onnx(data, fallback=False)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    x[0, :, 2, 3] = np.nan
    got, expected = net(x), _ort(data, x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    _close(np.nan_to_num(got), np.nan_to_num(expected))
    shown = str(net)
    if slope_shape == (1,):
        assert [n.op for n in net.graph.nodes] == ["conv"]
    else:
        assert "prelu of a constant" + (" per channel" if slope_shape[-2:] == (1, 1) else "") \
            in shown


@pytest.mark.parametrize("op", ["Exp", "Sigmoid", "Tanh", "HardSwish"])
def test_activations_at_the_ends_of_the_float_range(op):
    """Exp, Sigmoid, Tanh and HardSwish in the plan's float32 kernels, from far below exp's
    underflow to past its overflow, infinities and NaN: infinity where exp overflows, 0 below
    about 1.8e-38 (the smallest normal floats flushed), a few ulps between (up to 4e-6
    relative in the SSE2 kernels, whose exponent reduction has no FMA); HardSwish of -inf is
    NaN (-inf times a gate of 0), as ONNX Runtime and the specification give it."""
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="act")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 1, 400])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 400])])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    x = np.linspace(-120, 100, 3200, dtype=np.float32).reshape(1, 8, 1, 400)
    x[0, 0, 0, :3] = [np.inf, -np.inf, np.nan]
    got = fc.Network.from_onnx(data, fallback=False)(x)
    wide = x.astype(np.float64)
    with np.errstate(all="ignore"):
        expected = {"Exp": np.exp(wide), "Sigmoid": 1 / (1 + np.exp(-wide)),
                    "Tanh": np.tanh(wide),
                    "HardSwish": wide * np.clip(wide / 6 + 0.5, 0, 1)}[op].astype(np.float32)
    np.testing.assert_allclose(got, expected, rtol=5e-6, atol=1.8e-38)
    if op == "Exp":
        assert got[0, 0, 0, 0] == np.inf and np.isinf(got[x > 88.73]).all()
        assert np.isfinite(got[x < 88.72]).all() and got[0, 0, 0, 1] == 0


@pytest.mark.parametrize("axis", [2, 3])
def test_gathers_written_into_a_concatenation_of_the_pixels(axis):
    """Two transposes of (N, C, H, W) to (N, C, W, H), joined along the rows or the columns:
    each gather writes its pixels straight into the concatenation's buffer (padded for the
    convolution after it), as ONNX Runtime."""
    rng = _rng(29)
    inits = [("W1", rng.standard_normal((4, 3, 1, 1)).astype(np.float32)),
             ("W2", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             ("W3", rng.standard_normal((2, 4, 3, 3)).astype(np.float32))]
    nodes = [_conv("a", ("x", "W1"), "a"), _conv("b", ("x", "W2"), "b", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["a"], ["ta"], perm=[0, 1, 3, 2]),
             helper.make_node("Transpose", ["b"], ["tb"], perm=[0, 1, 3, 2]),
             helper.make_node("Concat", ["ta", "tb"], ["c"], axis=axis, name="join"),
             _conv("d", ("c", "W3"), "y", pads=[1, 1, 1, 1])]
    data = _graph(nodes, ["N", 3, 5, 7], inits)
    net = fc.Network.from_onnx(data, fallback=False)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    _close(net(x), _ort(data, x))
    along = {2: "height", 3: "width"}[axis]
    assert f"concat of 2 (2 written in place by their producers, 0 copied into its {along})" \
        in str(net)
