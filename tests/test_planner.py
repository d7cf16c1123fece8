"""The planner on its own, without torch: hand-built graphs through each rewrite of
``optimize`` (identities, batch norms folded, activations and residual additions fused), and
the arena's placement, which never lets two buffers live at the same step share memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv.network.graph import INPUT, RELU, RELU6, Activation, Graph, Node
from fastconv.network.arena import Buffer, place
from fastconv.network.rewrites import optimize
from fastconv.spec import ConvSpec, PoolSpec

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


def _affine(name, src, out, scale=1.0, shift=0.0, channels=4, act=None):
    attrs = dict(scale=np.full(channels, scale), shift=np.full(channels, shift))
    return Node("batchnorm", (src,), out, name, attrs | ({"act": act} if act else {}))


CLIP06 = Activation("clamp", 0.0, 6.0)


def test_hardswish_spelled_out_is_one_activation_of_the_convolution():
    """``x * Clip(x + 3, 0, 6) / 6`` (Add, Clip, Mul, Div, as older exporters write it)."""
    g = optimize(_graph([_conv("c1", INPUT, "x", 3, 4),
                         _affine("add3", "x", "a", shift=3.0),
                         Node("act", ("a",), "c", "clip", dict(act=CLIP06)),
                         Node("mul", ("x", "c"), "m", "mul"),
                         _affine("div6", "m", "y", scale=1 / 6)], "y"))
    (conv,) = g.nodes
    assert str(conv.act) == "hardswish" and g.output == "x"
    assert set(conv.attrs["fused"]) == {"add3", "clip", "mul", "div6"}


def test_hardsigmoid_spelled_out_is_one_activation():
    """An SE gate's ``Clip(y + 3, 0, 6) / 6`` after its 1x1 (the + 3 folded into the bias):
    the convolution's hard sigmoid; after another node, one activation node."""
    g = optimize(_graph([_conv("fc2", INPUT, "y", 3, 4, k=1),
                         _affine("add3", "y", "a", shift=3.0),
                         Node("act", ("a",), "c", "clip", dict(act=CLIP06)),
                         _affine("div6", "c", "g", scale=1 / 6)], "g"))
    (conv,) = g.nodes
    assert conv.act == Activation("hardsigmoid", alpha=1 / 6, beta=0.0)
    g = optimize(_graph([_conv("c1", INPUT, "x", 3, 4),
                         Node("act", ("x",), "r", "relu", dict(act=RELU)),
                         _affine("add3", "r", "a", shift=3.0),
                         Node("act", ("a",), "c", "clip", dict(act=CLIP06)),
                         _affine("div6", "c", "g", scale=1 / 6)], "g"))
    assert [n.op for n in g.nodes] == ["conv", "act"]
    act = g.nodes[1].act
    assert act.kind == "hardsigmoid" and np.isclose(act.alpha, 1 / 6) and np.isclose(act.beta,
                                                                                   0.5)


def test_an_affine_that_does_not_map_the_clamp_to_0_1_stays():
    for scale, shift, channels_differ in ((1 / 5, 0.0, False), (1 / 6, 0.1, False),
                                          (1 / 6, 0.0, True)):
        div = _affine("div", "c", "g", scale=scale, shift=shift)
        if channels_differ:
            div.attrs["scale"] = np.array([1 / 6, 1 / 6, 1 / 6, 1 / 5])
        g = optimize(_graph([_conv("c1", INPUT, "x", 3, 4),
                             Node("act", ("x",), "r", "relu", dict(act=RELU)),
                             _affine("add3", "r", "a", shift=3.0),
                             Node("act", ("a",), "c", "clip", dict(act=CLIP06)), div], "g"))
        assert [n.op for n in g.nodes] == ["conv", "batchnorm", "batchnorm"]


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
    end, static = place(buffers, batch, dtype, 0)
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


# --- the selection pass -----------------------------------------------------------------------

def _geometry(bits, l2):
    """An executor's geometry for ``bits``-wide vectors and an L2 of ``l2`` bytes: what the
    selection asks of it, the host never consulted."""
    from types import SimpleNamespace

    from fastconv.kernels.plan_tiles import TileGeometry

    g = TileGeometry(bits, l2)
    return SimpleNamespace(wide=g.wide, tile_shape=g.tile_shape, l2_bytes=lambda: g.l2)


GEOMETRIES = [(512, 2 << 20), (256, 512 << 10), (128, 256 << 10)]


def _select(nodes, output, shape, batch=1, bits=512, l2=2 << 20, threads=2):
    from fastconv.network.graph import infer_shapes
    from fastconv.network.selection import select

    graph = optimize(Graph(nodes, output, np.dtype(np.float32)))
    shapes = infer_shapes(graph, (batch, *shape))
    return select(graph, shapes, batch, threads, _geometry(bits, l2))


def _bn(name, src, out, c):
    return Node("batchnorm", (src,), out, name, dict(scale=np.ones(c), shift=np.zeros(c)))


def _relu(name, src, out, act=RELU):
    return Node("act", (src,), out, name, dict(act=act))


@pytest.mark.parametrize("bits, l2", GEOMETRIES)
def test_a_mobilenet_v1_block_is_a_fused_separable_pair(bits, l2):
    """conv 3x3/2 + BN + ReLU6, then depthwise 3x3 + BN + ReLU6 and pointwise 1x1 + BN +
    ReLU6: the first on the GEMM tiles, the pair as one kernel with its tile; the batch norms
    and activations inside their convolutions."""
    nodes = [_conv("conv1", INPUT, "a", 3, 32), _bn("bn1", "a", "b", 32),
             _relu("relu1", "b", "c", RELU6),
             _conv("dw2", "c", "d", 32, 32, groups=32), _bn("bn2", "d", "e", 32),
             _relu("relu2", "e", "f", RELU6),
             _conv("pw3", "f", "g", 32, 64, k=1), _bn("bn3", "g", "h", 64),
             _relu("relu3", "h", "i", RELU6)]
    first, pair = _select(nodes, "i", (3, 32, 32), bits=bits, l2=l2)
    assert (first.kind, first.fused) == ("gemm", ["bn1", "relu1"])
    assert pair.kind == "separable" and [m.name for m in pair.members] == ["dw2", "pw3"]
    assert pair.fused == ["bn2", "relu2", "pw3", "bn3", "relu3"]
    g = _geometry(bits, l2)
    assert (pair.mr, pair.nr) == g.tile_shape(np.float32, pair.wide)
    assert (first.mr, first.nr) == g.tile_shape(np.float32, first.wide)
    assert pair.rows_per_step >= 1


def test_a_mobilenet_v2_block_runs_as_one_expanded_kernel_and_takes_its_residual():
    """expand 1x1 + ReLU6, depthwise 3x3 + ReLU6, project 1x1, + the block's input."""
    nodes = [_conv("stem", INPUT, "x", 3, 16),
             _conv("expand", "x", "a", 16, 96, k=1), _relu("r1", "a", "b", RELU6),
             _conv("dw", "b", "c", 96, 96, groups=96), _relu("r2", "c", "d", RELU6),
             _conv("project", "d", "e", 96, 16, k=1), Node("add", ("e", "x"), "s", "add")]
    stem, block = _select(nodes, "s", (3, 28, 28))
    assert stem.kind == "gemm"
    assert block.kind == "expanded_separable"
    assert [m.name for m in block.members] == ["expand", "dw", "project"]
    assert block.tail.attrs["residual"] == "x" and block.fused[-1] == "add"
    assert block.rows_per_step >= 1 and block.nr > 0


def test_a_resnet_block_runs_on_winograd_with_the_residual_in_its_epilogue():
    nodes = [_conv("c1", INPUT, "a", 64, 64, seed=1), _relu("r1", "a", "b"),
             _conv("c2", "b", "c", 64, 64, seed=2), Node("add", ("c", INPUT), "s", "add"),
             _relu("r2", "s", "t")]
    c1, c2 = _select(nodes, "t", (64, 28, 28))
    assert c1.kind == c2.kind == "winograd" and c1.block >= 4
    assert c2.tail.attrs["residual"] == INPUT and c2.tail.act == RELU
    # fewer input channels than PLAN_WINOGRAD_CHANNELS: the GEMM tiles
    few = [_conv("c1", INPUT, "a", 16, 16), _relu("r1", "a", "b")]
    (choice,) = _select(few, "b", (16, 28, 28))
    assert choice.kind == "gemm"


def test_a_squeeze_excite_block_is_one_step_unless_a_value_inside_has_another_reader():
    """MobileNet v3's SE: average, 1x1 + ReLU, 1x1 + hard sigmoid, times the block's input."""
    def block(extra=()):
        return [_conv("dw", INPUT, "x", 16, 16, groups=16), Node("gap", ("x",), "g", "gap"),
                _conv("fc1", "g", "h", 16, 4, k=1), _relu("r", "h", "hr"),
                _conv("fc2", "hr", "s", 4, 16, k=1),
                Node("act", ("s",), "sg", "gate", dict(act=Activation(
                    "hardsigmoid", alpha=1 / 6, beta=0.5))),
                Node("mul", ("x", "sg"), "y", "scale"), *extra]
    dw, se = _select(block(), "y", (16, 14, 14))
    assert se.kind == "squeeze_excite"
    assert [m.name for m in se.members] == ["gap", "fc1", "fc2", "scale"]
    assert se.fused == ["fc1", "r", "fc2", "gate", "scale"]
    # the hidden value read twice: each node on its own
    shared = _select(block([Node("add", ("hr", "hr"), "z", "twice")]), "y", (16, 14, 14))
    assert "squeeze_excite" not in [c.kind for c in shared]


def test_every_other_node_has_its_kind_and_an_unknown_op_is_refused_in_words():
    nodes = [_conv("c1", INPUT, "a", 3, 8),
             Node("maxpool", ("a",), "b", "pool", dict(pool=PoolSpec("max", 8, 2, stride=2))),
             Node("gap", ("b",), "c", "gap"), Node("flatten", ("c",), "d", "flat"),
             Node("linear", ("d",), "e", "fc", dict(weight=np.ones((10, 8)), bias=None))]
    kinds = [c.kind for c in _select(nodes, "e", (3, 16, 16))]
    assert kinds == ["gemm", "max_pool", "global_average", "alias", "linear"]
    from fastconv.network.graph import Shape
    from fastconv.network.selection import select

    swirl = Graph([Node("swirl", (INPUT,), "a", "swirl")], "a", np.dtype(np.float32))
    shapes = {INPUT: Shape(3, 8, 8), "a": Shape(3, 8, 8)}
    with pytest.raises(ValueError, match="swirl: no kernel for 'swirl'"):
        select(swirl, shapes, 1, 2, _geometry(256, 1 << 20))


def test_every_kind_but_an_alias_has_its_emitter():
    from fastconv.network.emission import EMITTERS
    from fastconv.network.selection import KINDS

    assert set(EMITTERS) == set(KINDS) - {"alias"}
