"""A model file is untrusted input: hostile and malformed ONNX models are refused in words
(naming the node) or run correctly (against ONNX Runtime), within the plan's memory budget,
and without allocating what they ask for first; a fuzz test over the attributes of the
convolution and pooling operators, at a small size."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

import fastconv as fc  # noqa: E402

pytestmark = pytest.mark.usefixtures("plan_backend")


def _model(nodes, shape=(1, 3, 8, 8), constants=None, dtype=1):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("y", dtype, None)],
                              [numpy_helper.from_array(v, k)
                               for k, v in (constants or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv(**attrs):
    return [helper.make_node("Conv", ["x", "W"], ["y"], name="c", **attrs)]


def _weights(shape=(4, 3, 3, 3), value=None):
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if value is not None:
        w.flat[0] = value
    return {"W": w}


def _ort(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("pad", [1 << 20, 1 << 40, (1 << 62)])
def test_huge_pads_are_refused_by_the_budget_before_allocating(pad):
    net = fc.Network.from_onnx(_model(_conv(pads=[pad] * 4), constants=_weights()))
    with pytest.raises(ValueError, match=r"node 'c' \(Conv\): planning input \[1, 3, 8, 8\] "
                                         r"needs .* over the plan's memory budget of"):
        net(np.ones((1, 3, 8, 8), np.float32))


def test_pads_within_the_budget_run_and_the_budget_is_configurable():
    model = _model(_conv(pads=[300] * 4), constants=_weights())
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with fc.config.plan_memory_budget(1 << 20):
        with pytest.raises(ValueError, match=r"memory budget of 1.0 MiB"):
            fc.Network.from_onnx(model)(x)
    got = fc.Network.from_onnx(model)(x)
    np.testing.assert_allclose(got, _ort(model, x), rtol=1e-5, atol=1e-5)


def test_a_huge_constant_is_refused_before_it_is_made():
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["z"], name="big"),
             helper.make_node("Add", ["x", "z"], ["y"])]
    model = _model(nodes, (1,), {"s": np.array([1 << 31, 1 << 31], np.int64)})
    with pytest.raises(ValueError, match=r"node 'big' \(ConstantOfShape\): its output 'z' of "
                                         r"shape \[2147483648, 2147483648\] takes .* over the "
                                         r"plan's memory budget"):
        fc.Network.from_onnx(model)(np.ones(1, np.float32))


@pytest.mark.parametrize("attrs, weights, message", [
    (dict(strides=[0, 1]), (4, 3, 3, 3), r"node 'c' \(Conv\) is invalid: .*stride"),
    (dict(dilations=[1 << 20, 1]), (4, 3, 3, 3), r"node 'c' \(Conv\)"),
    (dict(group=0), (4, 3, 3, 3), r"node 'c' \(Conv\) is invalid"),
    (dict(pads=[-1, 0, 0, 0]), (4, 3, 3, 3), r"node 'c' \(Conv\) is invalid: .*negative pad"),
    ({}, (4, 3, 1000, 9), r"node 'c' \(Conv\)"),  # a kernel larger than the input
])
def test_hostile_geometry_is_refused_in_words(attrs, weights, message):
    with pytest.raises(ValueError, match=message):
        fc.Network.from_onnx(_model(_conv(**attrs), constants=_weights(weights)))(
            np.ones((1, 3, 8, 8), np.float32))


def test_huge_strides_run():
    model = _model(_conv(strides=[1 << 40, 1 << 30], pads=[1, 1, 1, 1]), (2, 3, 8, 8),
                   _weights())
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    got = fc.Network.from_onnx(model)(x)
    np.testing.assert_allclose(got, _ort(model, x), rtol=1e-5, atol=1e-5)


def test_a_deep_chain_plans_and_runs():
    depth = 200
    nodes, constants, value = [], {}, "x"
    for i in range(depth):
        out = "y" if i == depth - 1 else f"v{i}"
        nodes += [helper.make_node("Conv", [value, f"W{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [out])]
        constants[f"W{i}"] = (np.random.default_rng(i).standard_normal((3, 3, 3, 3)) / 4
                              ).astype(np.float32)
        value = out
    model = _model(nodes, constants=constants)
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = _ort(model, x)
    np.testing.assert_allclose(fc.Network.from_onnx(model)(x), expected, rtol=1e-4,
                               atol=1e-4 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("where, value", [("weight", np.inf), ("weight", np.nan),
                                          ("input", np.inf), ("input", np.nan)])
def test_infinite_and_nan_values_propagate_as_the_specification_says(where, value):
    """As onnx.reference (and PyTorch) compute them: the padding is zeros, and an infinite
    weight times a zero of the padding is NaN (ONNX Runtime skips the padding's taps)."""
    from onnx.reference import ReferenceEvaluator

    model = _model(_conv(pads=[1, 1, 1, 1]), constants=_weights(
        value=value if where == "weight" else None))
    x = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    if where == "input":
        x[0, 1, 3, 4] = value
    with np.errstate(invalid="ignore"):
        expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = fc.Network.from_onnx(model)(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5)


_ints = st.integers


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(op=st.sampled_from(["Conv", "MaxPool", "AveragePool"]), kernel=st.tuples(
    _ints(1, 4), _ints(1, 4)), strides=st.tuples(_ints(0, 3), _ints(1, 3)),
    pads=st.tuples(_ints(-1, 4), _ints(0, 4), _ints(0, 4), _ints(0, 4)),
    dilations=st.tuples(_ints(1, 3), _ints(0, 3)), group=st.sampled_from([1, 3]),
    size=st.tuples(_ints(1, 9), _ints(1, 9)), ceil=st.booleans(),
    include_pad=st.booleans())
def test_fuzz_the_attributes(op, kernel, strides, pads, dilations, group, size, ceil,
                             include_pad):
    """Any attributes: refused in words, or the answer ONNX Runtime gives."""
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads))
    constants = {}
    if op == "Conv":
        attrs.update(dilations=list(dilations), group=group)
        constants = {"W": np.random.default_rng(5).standard_normal(
            (3, 3 // group, *kernel)).astype(np.float32)}
        inputs = ["x", "W"]
    else:
        inputs = ["x"]
        attrs["ceil_mode"] = int(ceil)
        if op == "MaxPool":
            attrs["dilations"] = list(dilations)
        else:
            attrs["count_include_pad"] = int(include_pad)
    model = _model([helper.make_node(op, inputs, ["y"], name="n", **attrs)], (1, 3, *size),
                   constants)
    x = np.random.default_rng(6).standard_normal((1, 3, *size)).astype(np.float32)
    try:
        expected = _ort(model, x)
    except Exception:  # ONNX Runtime refuses it: we refuse in words, or give the answer of
        # the specification's own implementation (ONNX Runtime refuses some valid models: a
        # pooling pad not below kernel_shape, even where the dilated window covers it)
        from onnx.reference import ReferenceEvaluator

        try:
            got = fc.Network.from_onnx(model)(x)
        except (ValueError, TypeError) as exc:
            assert "node 'n'" in str(exc) or "not valid ONNX" in str(exc), str(exc)
            return
        with np.errstate(all="ignore"):
            expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    try:
        got = fc.Network.from_onnx(model)(x)
    except (ValueError, TypeError) as exc:  # refused in words, naming the node
        assert "node 'n'" in str(exc) or "not valid ONNX" in str(exc), str(exc)
        return
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
