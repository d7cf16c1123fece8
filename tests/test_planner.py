"""The planner on its own, without torch: hand-built graphs through each rewrite of
``optimize`` (identities, batch norms folded, activations and residual additions fused), and
the arena's placement, which never lets two buffers live at the same step share memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv.network.graph import INPUT, RELU, RELU6, Activation, Graph, Node
from fastconv.network.planner import Buffer, _place, optimize
from fastconv.spec import ConvSpec

F = np.float64


def _conv(name, src, out, c_in, c_out, k=3, groups=1, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    spec = ConvSpec(c_in, c_out, k, padding=k // 2, groups=groups, bias=bias)
    return Node("conv", (src,), out, name, dict(
        spec=spec, weight=rng.standard_normal((c_out, c_in // groups, k, k)),
        bias=rng.standard_normal(c_out) if bias else None))


def _graph(nodes, output):
    return Graph(nodes, output, np.dtype(F))


def test_an_identity_is_dropped_and_its_readers_read_its_input():
    g = optimize(_graph([_conv("c1", INPUT, "a", 3, 4),
                         Node("identity", ("a",), "b", "id"),
                         _conv("c2", "b", "c", 4, 4)], "c"))
    assert [n.name for n in g.nodes] == ["c1", "c2"] and g.nodes[1].inputs == ("a",)


@pytest.mark.parametrize("bias", [True, False])
def test_a_batch_norm_folds_into_the_convolution_before_it(bias):
    conv = _conv("c1", INPUT, "a", 3, 4, bias=bias)
    scale, shift = np.array([0.5, 2.0, -1.0, 3.0]), np.array([0.1, -0.2, 0.3, 0.0])
    bn = Node("batchnorm", ("a",), "b", "bn1", dict(scale=scale, shift=shift))
    g = optimize(_graph([conv, bn], "b"))
    (folded,) = g.nodes
    assert folded.attrs["folded"] == "bn1" and folded.output == "a" and g.output == "a"
    np.testing.assert_allclose(folded.attrs["weight"],
                               conv.attrs["weight"] * scale[:, None, None, None])
    expected = shift + (conv.attrs["bias"] * scale if bias else 0)
    np.testing.assert_allclose(folded.attrs["bias"], expected)


def test_a_batch_norm_after_an_activation_or_a_shared_value_stays():
    conv = _conv("c1", INPUT, "a", 3, 4)
    bn = dict(scale=np.ones(4), shift=np.zeros(4))
    after_relu = optimize(_graph([conv, Node("act", ("a",), "r", "relu", dict(act=RELU)),
                                  Node("batchnorm", ("r",), "b", "bn", dict(bn))], "b"))
    assert [n.op for n in after_relu.nodes] == ["conv", "batchnorm"]
    shared = optimize(_graph([conv, Node("batchnorm", ("a",), "b", "bn", dict(bn)),
                              Node("add", ("a", "b"), "s", "add")], "s"))
    assert "batchnorm" in [n.op for n in shared.nodes]  # the conv's output has two readers


def test_activations_fuse_into_their_producer_and_compose():
    g = optimize(_graph([_conv("c1", INPUT, "a", 3, 4),
                         Node("act", ("a",), "r", "relu", dict(act=RELU)),
                         Node("act", ("r",), "r6", "relu6", dict(act=RELU6))], "r6"))
    (conv,) = g.nodes
    assert conv.act == Activation("clamp", 0.0, 6.0) and conv.attrs["fused"] == ["relu",
                                                                                 "relu6"]
    # a hard sigmoid after a ReLU does not compose: it stays a node
    g = optimize(_graph([_conv("c1", INPUT, "a", 3, 4),
                         Node("act", ("a",), "r", "relu", dict(act=RELU)),
                         Node("act", ("r",), "h", "hs", dict(act=Activation(
                             "hardsigmoid", alpha=0.2, beta=0.5)))], "h"))
    assert [n.op for n in g.nodes] == ["conv", "act"] and g.nodes[0].act == RELU


@pytest.mark.parametrize("relu_first", [False, True])
def test_a_residual_addition_fuses_into_the_later_convolution(relu_first):
    """ResNet's block: conv, conv, + x, ReLU; the addition before the ReLU (residual added
    before the activation) or after a ReLU of its own (added after it)."""
    nodes = [_conv("c1", INPUT, "a", 4, 4, seed=1), _conv("c2", "a", "b", 4, 4, seed=2)]
    if relu_first:
        nodes += [Node("act", ("b",), "br", "relu2", dict(act=RELU)),
                  Node("add", ("br", INPUT), "s", "add")]
    else:
        nodes += [Node("add", ("b", INPUT), "s", "add"),
                  Node("act", ("s",), "r", "relu", dict(act=RELU))]
    g = optimize(_graph(nodes, nodes[-1].output))
    assert [n.name for n in g.nodes] == ["c1", "c2"]
    c2 = g.nodes[1]
    assert c2.attrs["residual"] == INPUT and c2.act == RELU
    assert bool(c2.attrs.get("residual_after")) == relu_first


def test_a_depthwise_convolution_takes_no_residual():
    nodes = [_conv("dw", INPUT, "a", 4, 4, groups=4), Node("add", ("a", INPUT), "s", "add")]
    g = optimize(_graph(nodes, "s"))
    assert [n.op for n in g.nodes] == ["conv", "add"]


@st.composite
def _buffers(draw):
    count = draw(st.integers(1, 12))
    steps = draw(st.integers(1, 10))
    buffers = []
    for _ in range(count):
        first = draw(st.integers(0, steps))
        last = draw(st.integers(first, steps))
        border = draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
        b = Buffer(draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 17)),
                   border=border, count=draw(st.sampled_from([None, 1, 2])))
        b.first, b.last = first, last
        buffers.append(b)
    return buffers, draw(st.integers(0, 3)), draw(st.sampled_from([np.float32, np.float64]))


@settings(max_examples=200, deadline=None)
@given(_buffers())
def test_placement_never_overlaps_two_buffers_live_at_one_step(case):
    buffers, batch, dtype = case
    end, static = _place(buffers, batch, dtype, 0)
    align = 64 // np.dtype(dtype).itemsize
    for i, a in enumerate(buffers):
        assert a.offset % align == 0 and a.offset + a.size(batch) <= end
        for b in buffers[i + 1:]:
            live_together = a.first <= b.last and b.first <= a.last
            disjoint = (a.offset + a.size(batch) <= b.offset
                        or b.offset + b.size(batch) <= a.offset or not a.size(batch)
                        or not b.size(batch))
            assert disjoint or not live_together
    # a static border is one no other buffer's memory touches
    for i in static:
        lo, hi = buffers[i].offset, buffers[i].offset + buffers[i].size(batch)
        assert any(buffers[i].border) and all(
            o.offset + o.size(batch) <= lo or hi <= o.offset
            for j, o in enumerate(buffers) if j != i)
    assert end == max(b.offset + b.size(batch) for b in buffers)
