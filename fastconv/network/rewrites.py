"""The graph rewrites, made once per network before any shape is planned (as XNNPACK's
``xnn_subgraph_optimize`` passes): identities dropped, each batch norm folded into the
convolution before it (or kept as a per-channel affine), the hard sigmoid spelled out
(``Clip(x + 3, 0, 6) / 6``) made one activation, the gated activations spelled out (``x *
sigmoid(x)``, ``x * hardsigmoid(x)``, ``x * Clip(x + 3, 0, 6) / 6``) made one activation,
each activation fused into the epilogue of the node producing its input, a residual addition
into the convolution whose epilogue can add it, and a transposed convolution of few output
channels split into a pointwise convolution and a depth-to-space copy.
"""

from __future__ import annotations

import math

import numpy as np

from ..kernels import tuning
from ..spec import ConvSpec
from .graph import (HARDSWISH, SILU, Activation, Graph, Node, channel_steps, gather_coords,
                    is_shuffle_deconv)


def optimize(graph: Graph) -> Graph:
    """Identities removed, batch norms folded, activations and residual additions fused (a
    new graph)."""
    graph = graph.copy()
    for node in [n for n in graph.nodes if n.op == "identity"]:
        graph.nodes.remove(node)
        graph.replace_value(node.output, node.inputs[0])
    for node in [n for n in graph.nodes if n.op == "batchnorm"]:
        producer = _sole_producer(graph, node)
        if producer is not None and producer.op in ("conv", "deconv") and _fresh(producer):
            _fold(producer, node, graph.dtype)
            _absorb(graph, producer, node)
    _fuse_activations(graph)  # a Clip into the affine (x + 3) before it
    for node in [n for n in graph.nodes if n.op == "batchnorm"]:
        _hard_sigmoid(graph, node)
    for node in [n for n in graph.nodes if n.op == "mul"]:
        _fuse_gate(graph, node)
    _fuse_activations(graph)
    for node in [n for n in graph.nodes if n.op == "add"]:
        _fuse_residual(graph, node)
    _fuse_activations(graph)  # a ReLU after a residual addition
    for node in [n for n in graph.nodes if n.op == "gather"]:
        _compose_gathers(graph, node)
    for node in [n for n in graph.nodes if n.op == "deconv"]:
        if (is_shuffle_deconv(node)
                and node.attrs["weight"].shape[0] < tuning.PLAN_DECONV_SHUFFLE_BELOW):
            _deconv_as_shuffle(graph, node)
    return graph


def _compose_gathers(graph: Graph, node: Node) -> None:
    """A gather of a gather that nothing else reads (a Reshape, then a Transpose) as one,
    where each output pixel's channels stay a constant step apart in the first's input."""
    first = _sole_producer(graph, node)
    if first is None or first.op != "gather":
        return
    c, h, w = gather_coords(node)  # in the first's output
    width = first.attrs["shape"][2]
    pixel = h * width + w
    inner = first.attrs["source"][:, pixel] + np.asarray(first.attrs["delta"])[:, None, None] * c
    steps = channel_steps(inner)
    if steps is None:
        return
    first.attrs.update(shape=node.attrs["shape"], source=steps[0], delta=steps[1])
    _absorb(graph, first, node)


def _deconv_as_shuffle(graph: Graph, node: Node) -> None:
    """A transposed convolution (kernel = stride) of few output channels as a pointwise
    convolution to each tap's output channels side by side (``kh * kw * C_out``, tap (i, j)'s
    at ``(i * kw + j) * C_out``; the bias repeated, the activation kept), then a depth-to-space
    copy that moves each tap's channels to its output pixel."""
    weight = node.attrs["weight"]  # (C_out, C_in, kh, kw)
    c_out, c_in, kh, kw = weight.shape
    taps = np.ascontiguousarray(weight.transpose(2, 3, 0, 1).reshape(kh * kw * c_out, c_in,
                                                                     1, 1))
    bias = node.attrs["bias"]
    bias = None if bias is None else np.tile(bias, kh * kw)
    inner = f"{node.output} (taps)" if (kh, kw) != (1, 1) else node.output
    attrs = {k: v for k, v in node.attrs.items() if k not in (
        "stride", "pads", "dilation", "output_padding", "groups")}
    conv = Node("conv", node.inputs, inner, node.name, dict(
        attrs, spec=ConvSpec(c_in, kh * kw * c_out, 1, bias=bias is not None), weight=taps,
        bias=bias))
    shuffle = [Node("depth_to_space", (inner,), node.output, f"{node.name} (depth to space)",
                    dict(block=(kh, kw)))] if inner != node.output else []  # 1x1: the conv
    at = graph.nodes.index(node)
    graph.nodes[at:at + 1] = [conv, *shuffle]


def _hard_sigmoid(graph: Graph, scale: Node) -> None:
    """HardSigmoid and HardSwish spelled out, ``Clip(y, lo, hi) * s + t`` (``Clip(x + 3, 0, 6)
    / 6``) and ``x * Clip(y, lo, hi) * s``: a uniform affine ``scale`` (``s > 0``) after a
    clamp whose range it maps to [0, 1] is the hard sigmoid ``min(max(s y + t, 0), 1)`` of the
    clamp's input, run as the clamp's producer's activation; after a product, when its shift
    is 0, of the product's clamped factor. An affine node left holding only the hard sigmoid
    becomes one activation of its input, which ``_fuse_gate`` can then recognise."""
    uniform = _uniform(scale)
    producer = _sole_producer(graph, scale)
    if (uniform is None or producer is None or scale.act.kind != "none"
            or scale.attrs.get("residual") or uniform[0] <= 0):
        return
    s, t = uniform
    gated = producer
    if producer.op == "mul" and t == 0:  # x * Clip(..) * s: the factor takes the scale
        gated = next((graph.producer(v) for v in producer.inputs if graph.producer(v) is not None
                      and graph.producer(v).act.is_clamp and graph.consumers(v) == [producer]
                      and v not in graph.outputs), None)
    if gated is None or not gated.act.is_clamp:
        return
    lo, hi = gated.act.lo, gated.act.hi
    if not (math.isclose(s * lo + t, 0, abs_tol=1e-6) and math.isclose(s * hi + t, 1,
                                                                        rel_tol=1e-6)):
        return
    gated.attrs["act"] = Activation("hardsigmoid", alpha=s, beta=t)
    gated.attrs.setdefault("fused", []).append(scale.name)
    graph.nodes.remove(scale)
    graph.replace_value(scale.output, producer.output)
    affine = _uniform(gated) if gated.op == "batchnorm" else None
    if affine is not None:  # hardsigmoid(s (a x + b) + t): one activation of x
        a, b = affine
        gated.op = "act"
        gated.attrs = {"act": Activation("hardsigmoid", alpha=s * a, beta=s * b + t),
                       "fused": gated.attrs["fused"]}


def _uniform(node: Node) -> tuple[float, float] | None:
    """An affine node's scale and shift when they are one number for every channel."""
    scale = np.asarray(node.attrs.get("scale", 1.0), np.float64)
    shift = np.asarray(node.attrs.get("shift", 0.0), np.float64)
    if node.op != "batchnorm" or np.ptp(scale) or np.ptp(shift):
        return None
    return float(scale.reshape(-1)[0]), float(shift.reshape(-1)[0])


def _fuse_gate(graph: Graph, mul: Node) -> None:
    """``x * sigmoid(x)`` as SiLU, ``x * hardsigmoid(x)`` (torch's 1/6, 1/2) as HardSwish:
    one activation of ``x``, which the node producing ``x`` then runs in its epilogue."""
    for x, gate in (mul.inputs, mul.inputs[::-1]):
        node = graph.producer(gate)
        if (node is None or node.op != "act" or node.inputs[0] != x or gate in graph.outputs
                or graph.consumers(gate) != [mul] or mul.attrs.get("residual")):
            continue
        act = node.act
        if act.kind == "sigmoid":
            fused = SILU
        elif (act.kind == "hardsigmoid" and math.isclose(act.alpha, 1 / 6, rel_tol=1e-6)
              and math.isclose(act.beta, 0.5, rel_tol=1e-6)):
            fused = HARDSWISH
        else:
            continue
        graph.nodes.remove(node)
        mul.op, mul.inputs = "act", (x,)
        mul.attrs = {"act": fused, "fused": [node.name, *node.attrs.get("fused", [])]}
        return


def _fuse_activations(graph: Graph) -> None:
    for node in [n for n in graph.nodes if n.op == "act"]:
        producer = _sole_producer(graph, node)
        if producer is None or producer.op not in ("conv", "deconv", "linear", "batchnorm",
                                                   "add", "mul", "elementwise", "act"):
            continue
        if producer.attrs.get("residual_after"):  # the addition comes after its activation
            continue
        act = producer.act.then(node.act)
        if act is not None:
            producer.attrs["act"] = act
            _absorb(graph, producer, node)


def _fuse_residual(graph: Graph, add: Node) -> None:
    """``conv(x) + r`` as the convolution's epilogue, when ``r`` is ready before the
    convolution runs (the later of the two producers takes the other as its residual) and
    the addition is the convolution's only reader. A depthwise convolution's kernels add no
    residual."""
    a, b = add.inputs
    if a == b or _pixelless(graph, a) or _pixelless(graph, b):
        return
    order = {n.output: i for i, n in enumerate(graph.nodes)}
    for value, other in sorted(((a, b), (b, a)), key=lambda pair: -order.get(pair[0], -1)):
        producer = graph.producer(value)
        if (producer is None or producer.op != "conv" or producer.attrs.get("residual")
                or producer.attrs["spec"].kind == "dw" or value in graph.outputs
                or len(graph.consumers(value)) != 1
                or order.get(other, -1) >= order[value]):
            continue
        after = producer.act.kind != "none"
        if after and add.act.kind != "none":  # act(act(conv) + r): two activations
            continue
        producer.attrs["residual"] = other
        producer.attrs["residual_after"] = after
        if not after:
            producer.attrs["act"] = add.act
        _absorb(graph, producer, add)
        producer.attrs["fused"] += add.attrs.get("fused", [])
        return


def _pixelless(graph: Graph, value: str, known: dict | None = None) -> bool:
    """Whether ``value`` is one pixel per image, whatever the input's size (a global
    average, what a linear layer or a 1x1 convolution makes of it): the side of an addition
    or product that broadcasts."""
    known = {} if known is None else known
    if value not in known:
        producer = graph.producer(value)
        if producer is None:
            known[value] = False
        elif producer.op in ("gap", "gmp", "unflatten", "linear", "flatten"):
            known[value] = True
        elif producer.op == "conv" and not (producer.attrs["spec"].kernel_size == (1, 1)
                                            and producer.attrs["spec"].pads == ((0, 0), (0, 0))):
            known[value] = False
        elif producer.op not in ("conv", "act", "batchnorm", "add", "mul", "identity"):
            known[value] = False
        else:
            known[value] = all(_pixelless(graph, v, known) for v in producer.inputs)
    return known[value]


def _sole_producer(graph: Graph, node: Node) -> Node | None:
    """The node producing ``node``'s input, if ``node`` is its only reader and the input is
    not the network's output."""
    value = node.inputs[0]
    producer = graph.producer(value)
    if producer is None or value in graph.outputs or len(graph.consumers(value)) != 1:
        return None
    return producer


def _fresh(node: Node) -> bool:
    """Nothing fused into it yet: a batch norm may still fold into it."""
    return node.act.kind == "none" and node.attrs.get("residual") is None


def _absorb(graph: Graph, producer: Node, node: Node) -> None:
    """``node`` is now part of ``producer``: its readers read ``producer``'s output."""
    graph.nodes.remove(node)
    graph.replace_value(node.output, producer.output)
    fused = producer.attrs.setdefault("fused", [])
    fused += [node.name, *node.attrs.get("fused", [])]  # and what it had fused itself


def _fold(conv: Node, bn: Node, dtype) -> None:
    """``bn(conv(x))`` as one convolution: weights scaled per output channel, bias shifted."""
    channels = conv.attrs["weight"].shape[0]
    scale = np.broadcast_to(bn.attrs["scale"], (channels,))  # one for all, or per channel
    shift = np.broadcast_to(bn.attrs["shift"], (channels,))
    weight = conv.attrs["weight"].astype(np.float64) * scale[:, None, None, None]
    bias = conv.attrs["bias"]
    bias = shift if bias is None else bias.astype(np.float64) * scale + shift
    conv.attrs["weight"] = weight.astype(dtype)
    conv.attrs["bias"] = bias.astype(dtype)
    conv.attrs["folded"] = bn.name
