"""The planner: what runs, in which layout, in which memory.

Two phases. :func:`optimize` rewrites the imported graph once: identities dropped, each batch
norm folded into the convolution before it (or kept as a per-channel affine), each activation
fused into the epilogue of the node that produces its input. :func:`plan_shape` then plans one
input shape: every value's shape, the kernel of every node, the zero border each activation
needs for the padding of the convolutions that read it, and one arena of buffers placed by
liveness, so that a call allocates only its output.

Activations are NHWC in the arena (``fastconv.kernels.numba.nhwc``): a convolution reads its
input's vector of channels per pixel, its padding from the border, and writes its output's
interior; the network's input and output are converted at the edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..kernels import tuning
from ..kernels.epilogue import ACTIVATIONS
from ..kernels.plan_tiles import l2_bytes
from .step_args import (Affine, AvgPool, Binary, Conv, CopyChannels, Depthwise, Depthwise3x3,
                        ExpandedSeparable, Flatten, FromNchw, GlobalAverage, MaxPool, Separable,
                        Winograd, ZeroBorder)
from .graph import INPUT, Graph, Node, Shape, conv_spec, infer_shapes, pool_spec

_ALIGN = 64  # bytes: each buffer starts on a cache line


# --- phase 1: the graph, once -------------------------------------------------------------------


def optimize(graph: Graph) -> Graph:
    """Identities removed, batch norms folded, activations and residual additions fused (a
    new graph)."""
    graph = graph.copy()
    for node in [n for n in graph.nodes if n.op == "identity"]:
        graph.nodes.remove(node)
        graph.replace_value(node.output, node.inputs[0])
    for node in [n for n in graph.nodes if n.op == "batchnorm"]:
        producer = _sole_producer(graph, node)
        if producer is not None and producer.op == "conv" and _fresh(producer):
            _fold(producer, node, graph.dtype)
            _absorb(graph, producer, node)
    _fuse_activations(graph)
    for node in [n for n in graph.nodes if n.op == "add"]:
        _fuse_residual(graph, node)
    _fuse_activations(graph)  # a ReLU after a residual addition
    return graph


def _fuse_activations(graph: Graph) -> None:
    for node in [n for n in graph.nodes if n.op == "act"]:
        producer = _sole_producer(graph, node)
        if producer is None or producer.op not in ("conv", "linear", "batchnorm", "add", "mul",
                                                   "act"):
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
                or producer.attrs["spec"].kind == "dw" or graph.output == value
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
        elif producer.op in ("gap", "unflatten", "linear", "flatten"):
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
    if producer is None or graph.output == value or len(graph.consumers(value)) != 1:
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
    fused.append(node.name)


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


# --- phase 2: one input shape -----------------------------------------------------------------


@dataclass
class Buffer:
    """An NHWC buffer of the arena: (N, H + top + bottom, W + left + right, C)."""

    height: int
    width: int
    channels: int
    border: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # top, bottom, left, right
    offset: int = 0
    first: int = 0  # the step that writes it
    last: int = 0  # the last step that reads it
    count: int | None = None  # a step's scratch: this many rows (one per task), not the batch

    def dims(self, batch: int) -> tuple[int, int, int, int]:
        top, bottom, left, right = self.border
        rows = batch if self.count is None else self.count
        return (rows, self.height + top + bottom, self.width + left + right, self.channels)

    def size(self, batch: int) -> int:
        return int(np.prod(self.dims(batch)))

    def pixel(self, n, h, w):
        """Element offsets of pixels (n, h, w) (arrays allowed), channel 0."""
        _, rows, cols, channels = self.dims(1)
        top, _, left, _ = self.border
        return ((n * rows + top + h) * cols + left + w) * channels


@dataclass
class Step:
    """One kernel call: the executor's kernel of the record's kind (``step_args``), called with
    the record's fields once the ``Ref`` among them are arena views."""

    node: str
    args: tuple  # a record of step_args

    @property
    def kind(self) -> str:
        return self.args.kind


@dataclass(frozen=True)
class Ref:
    """An argument that is a buffer of the arena, as 4-D, flat, or (``rows``) one row per
    task of a scratch buffer."""

    buffer: int
    flat: bool = False
    rows: bool = False


@dataclass
class NodePlan:
    """How one node runs, for ``print(plan)`` and the profile."""

    name: str
    op: str
    kernel: str
    input: str
    output: str
    macs: int
    fused: list[str]
    layers: int = 1  # the graph's convolution and linear nodes it runs (more when fused)
    params: int = 0  # weights, biases and affine constants, after batch norms are folded
    bytes: int = 0  # what it reads and writes once: its inputs, parameters and output


@dataclass
class ShapePlan:
    """Everything one input shape needs: the buffers, the steps, the edges."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dtype: np.dtype
    buffers: list[Buffer]
    steps: list[Step]
    input_buffer: int
    output_buffer: int
    output_flat: bool
    arena_elements: int
    nodes: list[NodePlan]
    static_borders: list[int]  # buffers whose border is zeroed once, when the arena is made
    threads: int

    @property
    def arena_bytes(self) -> int:
        return self.arena_elements * self.dtype.itemsize


def arena_views(plan: ShapePlan) -> list[tuple[np.ndarray, np.ndarray]]:
    """A new arena for ``plan``: one zeroed allocation, its start on a cache line; per
    buffer, its 4-D view and its flat one. Zeroed, the borders no other buffer overlaps
    stay zero from then on (``ShapePlan.static_borders``)."""
    batch = plan.input_shape[0]
    memory = np.zeros(plan.arena_elements + 16, plan.dtype)
    shift = (-memory.ctypes.data % 64) // plan.dtype.itemsize
    memory = memory[shift:shift + plan.arena_elements]
    views = []
    for b in plan.buffers:
        flat = memory[b.offset:b.offset + b.size(batch)]
        views.append((flat.reshape(b.dims(batch)), flat))
    return views


def bind(views: list, arg):
    """A step's argument, a ``Ref`` as its view of the arena (4-D, flat, or a row per
    task), anything else as it is."""
    if isinstance(arg, Ref):
        four_d, flat = views[arg.buffer]
        if arg.rows:
            return flat.reshape(four_d.shape[0], -1)
        return flat if arg.flat else four_d
    return arg


def bound_steps(plan: ShapePlan, views: list):
    """``(step, args)`` for each step of ``plan`` that a call runs, its arguments bound to
    ``views``: a ``zero_border`` step is left out where the buffer's border is static."""
    static = set(plan.static_borders)
    for step in plan.steps:
        if step.kind == "zero_border" and step.args.buf.buffer in static:
            continue
        yield step, [bind(views, a) for a in step.args]


def plan_shape(graph: Graph, packed: dict, input_shape: tuple[int, ...], threads: int,
               kernels) -> ShapePlan:
    """Plan ``graph`` for inputs of ``input_shape``.

    Parameters
    ----------
    graph : Graph
        Optimised (:func:`optimize`).
    packed : dict
        Node name -> weights in their kernel's layout, filled on first use (shared by every
        shape plan).
    input_shape : (N, C, H, W)
    threads : int
    kernels : module
        The executor (``fastconv.network.executor.Executor``): its tiles' geometry; the
        steps name its kernels.
    """
    batch = input_shape[0]
    shapes = infer_shapes(graph, input_shape)
    buffer_of: dict[str, int] = {}
    buffers: list[Buffer] = []

    def new_buffer(value: str) -> int:
        s = shapes[value]
        buffers.append(Buffer(s.height, s.width, s.channels))
        buffer_of[value] = len(buffers) - 1
        return buffer_of[value]

    separable = _separable_pairs(graph, shapes, graph.dtype)
    expansions = _expansions(graph, shapes, separable, batch, threads, graph.dtype)
    fused_pointwise = {pw.name for pw in separable.values()}
    fused_expand = {e.name for e in expansions.values()}
    slots = _concat_slots(graph, shapes, batch, fused_pointwise)
    new_buffer(INPUT)
    for node in graph.nodes:
        if _aliases(node, shapes):
            buffer_of[node.output] = buffer_of[node.inputs[0]]
        elif (node.name not in separable and node.name not in fused_expand
              and node.output not in slots):
            new_buffer(node.output)  # a fused depthwise's or expand's output is never stored
        if node.op == "concat":  # its slotted inputs are written straight into its buffer
            for value in node.inputs:
                if value in slots:
                    buffer_of[value] = buffer_of[node.output]
    for node in graph.nodes:  # the padding each reader needs, on its input's border
        if (node.op == "conv" and node.name not in fused_pointwise
                and node.name not in expansions):  # an expanded input is padded in the slab
            spec = conv_spec(node, shapes[node.inputs[0]])
            (top, bottom), (left, right) = spec.pads
            if _winograd(node, spec, batch):  # a last tile half outside the output reads a row more
                bottom += spec.output_size[0] % 2
                right += spec.output_size[1] % 2
            border = buffers[buffer_of[node.inputs[0]]].border
            for i, pad in enumerate((top, bottom, left, right)):
                border[i] = max(border[i], pad)

    steps: list[Step] = []
    nodes: list[NodePlan] = []
    ctx = _Context(shapes, buffers, buffer_of, packed, batch, threads, graph.dtype, kernels,
                   slots=slots)
    steps.append(Step("input", FromNchw(
        x=None, out=Ref(0), top=buffers[0].border[0], left=buffers[0].border[2],
        border=ctx.border(INPUT), tasks=ctx.tasks)))
    for node in graph.nodes:
        if _aliases(node, shapes) or node.name in fused_pointwise or node.name in fused_expand:
            continue
        first = len(steps)
        pointwise = separable.get(node.name)
        expand = expansions.get(node.name)
        if expand is not None:
            kernel = _expanded_steps(ctx, expand, node, pointwise, steps)
            name, output = f"{expand.name} + {node.name} + {pointwise.name}", pointwise.output
            fused = [*expand.attrs.get("fused", []), node.name, *node.attrs.get("fused", []),
                     pointwise.name, *pointwise.attrs.get("fused", [])]
            members = [expand, node, pointwise]
            macs = (_macs(expand, shapes[expand.inputs[0]], shapes[expand.output])
                    + _macs(node, shapes[node.inputs[0]], shapes[node.output])
                    + _macs(pointwise, shapes[node.output], shapes[output]))
            node = expand  # the row names the block by its input
        elif pointwise is None:
            kernel = _steps(ctx, node, steps)
            name, output, fused = node.name, node.output, [*node.attrs.get("fused", [])]
            macs = _macs(node, shapes[node.inputs[0]], shapes[node.output])
            members = [node]
        else:
            kernel = _separable_steps(ctx, node, pointwise, steps)
            name, output = f"{node.name} + {pointwise.name}", pointwise.output
            fused = [*node.attrs.get("fused", []), pointwise.name,
                     *pointwise.attrs.get("fused", [])]
            macs = (_macs(node, shapes[node.inputs[0]], shapes[node.output])
                    + _macs(pointwise, shapes[node.output], shapes[output]))
            members = [node, pointwise]
        for step in steps[first:]:
            step.node = name + (" border" if step.kind == "zero_border" else "")
        params = sum(_params(m) for m in members)
        nodes.append(NodePlan(name, "conv" if len(members) > 1 else node.op, kernel,
                              str(shapes[node.inputs[0]]), str(shapes[output]), macs * batch,
                              fused, len(members), params,
                              _traffic(members, shapes, batch, params, graph.dtype)))
    _liveness(graph, steps, buffers, buffer_of)
    arena, static = _place(buffers, batch, graph.dtype, buffer_of[graph.output])
    out = shapes[graph.output]
    return ShapePlan(tuple(input_shape), out.batched(batch), graph.dtype, buffers, steps, 0,
                     buffer_of[graph.output], out.flat, arena, nodes, static, threads)


def _params(node: Node) -> int:
    names = ("weight", "bias") if node.op in ("conv", "linear") else ("scale", "shift")
    return sum(np.size(node.attrs[a]) for a in names if node.attrs.get(a) is not None)


def _traffic(members: list[Node], shapes: dict, batch: int, params: int, dtype) -> int:
    """Bytes a plan node moves at least once: the values it reads (a residual too), its
    parameters, and what it writes; a fused block's values between its layers stay in
    cache."""
    inside = {m.output for m in members[:-1]}
    reads = {v for m in members for v in (*m.inputs, m.attrs.get("residual"))
             if v is not None and v not in inside}
    elements = sum(int(np.prod(shapes[v].batched(batch))) for v in reads)
    elements += int(np.prod(shapes[members[-1].output].batched(batch))) + params
    return elements * np.dtype(dtype).itemsize


def _aliases(node: Node, shapes) -> bool:
    """A flatten of 1x1 pixels, or an unflatten, changes only the shape: the same buffer
    (an NHWC buffer of one pixel per image is (N, C) in memory)."""
    source = shapes[node.inputs[0]]
    return node.op == "unflatten" or (node.op == "flatten" and source.height * source.width
                                      == 1)


def _macs(node: Node, s_in: Shape, s_out: Shape) -> int:
    if node.op == "conv":
        return conv_spec(node, s_in).macs
    if node.op == "linear":
        return node.attrs["weight"].size
    return 0


@dataclass
class _Context:
    shapes: dict
    buffers: list
    buffer_of: dict
    packed: dict
    batch: int
    threads: int
    dtype: np.dtype
    kernels: object
    slots: dict  # value -> its first channel in the concatenation's buffer it is written into

    def new_scratch(self, elements: int) -> Ref:
        """A scratch buffer of ``elements`` per task, for the step being planned."""
        self.buffers.append(Buffer(1, 1, elements, count=self.tasks))
        return Ref(len(self.buffers) - 1, rows=True)

    @property
    def tasks(self) -> int:
        return _tasks(self.threads)

    def buffer(self, value) -> Buffer:
        return self.buffers[self.buffer_of[value]]

    def border(self, value) -> np.ndarray:
        """The geometry a kernel zeroes ``value``'s border from (``nhwc.layout``'s
        ``zero_border_share``): (N, Hb, Wb, C, top, bottom, left, right)."""
        buf = self.buffer(value)
        return np.array([*buf.dims(self.batch), *buf.border], np.int64)

    def pixels(self, value, n, h, w) -> np.ndarray:
        """Element offsets of ``value``'s pixels (n, h, w) (arrays), channel 0 of its own
        channels: in a concatenation's buffer, where its slice starts."""
        at = self.buffer(value).pixel(n, h, w) + self.slots.get(value, 0)
        return np.asarray(at).reshape(-1).astype(np.int64)

    def ref(self, value, flat=False) -> Ref:
        return Ref(self.buffer_of[value], flat)

    def origin(self, value, pads=(0, 0)) -> tuple[int, int]:
        """Where the padded input's pixel (0, 0) sits in ``value``'s buffer."""
        top, _, left, _ = self.buffer(value).border
        return top - pads[0], left - pads[1]

    def epilogue(self, node: Node, prefix: str = "") -> dict:
        """The node's activation as a kernel's ``kind, lo, hi, alpha, beta`` (``prefix``ed
        for a fused kernel's inner layer)."""
        act = node.act
        values = (ACTIVATIONS[act.kind], *(self.dtype.type(v) for v in
                                          (act.lo, act.hi, act.alpha, act.beta)))
        return {f"{prefix}{name}": v for name, v in zip(("kind", "lo", "hi", "alpha", "beta"),
                                                        values)}

    def tile(self, is_wide: bool, prefix: str = "") -> dict:
        """The GEMM tile's ``wide, mr, nr`` (``prefix``ed for an inner layer)."""
        mr, nr = self.kernels.tile_shape(self.dtype, is_wide)
        return {f"{prefix}wide": is_wide, f"{prefix}mr": mr, f"{prefix}nr": nr}


def _tasks(threads: int) -> int:
    """Parallel chunks per kernel: a few per thread, so that a thread that wakes late still
    finds work left (``tuning.PLAN_TASKS_PER_THREAD``)."""
    return threads * tuning.PLAN_TASKS_PER_THREAD


def _steps(ctx: _Context, node: Node, steps: list) -> str:
    """Append the node's steps; returns its kernel's name."""
    op = node.op
    out_value = node.output
    if op == "conv":  # its kernels zero their output's border
        return _conv_steps(ctx, node, steps)
    if op == "linear":
        return _linear_steps(ctx, node, steps)
    border_step = _border_step(ctx, out_value)
    if border_step is not None:
        steps.append(border_step)
    src = node.inputs[0]
    s = ctx.shapes[out_value]
    top, left = ctx.origin(src)
    o_top, o_left = ctx.origin(out_value)
    if op in ("batchnorm", "act"):
        scale = np.broadcast_to(node.attrs.get("scale", 1.0), (s.channels,))  # per channel
        shift = np.broadcast_to(node.attrs.get("shift", 0.0), (s.channels,))
        steps.append(Step("", Affine(
            x=ctx.ref(src), top=top, left=left, scale=scale.astype(ctx.dtype),
            shift=shift.astype(ctx.dtype), has_affine=op == "batchnorm",
            out=ctx.ref(out_value), out_top=o_top, out_left=o_left, height=s.height,
            width=s.width, **ctx.epilogue(node), tasks=ctx.tasks)))
        return "affine" if op == "batchnorm" else str(node.act)
    if op in ("add", "mul"):
        other = node.inputs[1]
        b_top, b_left = ctx.origin(other)
        pixels = ctx.shapes[other] == ctx.shapes[src]
        steps.append(Step("", Binary(
            a=ctx.ref(src), a_top=top, a_left=left, b=ctx.ref(other), b_top=b_top,
            b_left=b_left, b_pixels=pixels, multiply=op == "mul", out=ctx.ref(out_value),
            out_top=o_top, out_left=o_left, height=s.height, width=s.width,
            **ctx.epilogue(node), tasks=ctx.tasks)))
        return op if pixels else f"{op} (N, C, 1, 1) over the pixels"
    if op == "concat":
        c0, copies = 0, 0
        for value in node.inputs:
            if value not in ctx.slots:
                v_top, v_left = ctx.origin(value)
                steps.append(Step("", CopyChannels(
                    x=ctx.ref(value), top=v_top, left=v_left, out=ctx.ref(out_value),
                    out_top=o_top, out_left=o_left, c0=c0, height=s.height, width=s.width,
                    tasks=ctx.tasks)))
                copies += 1
            c0 += ctx.shapes[value].channels
        written = len(node.inputs) - copies
        return (f"concat of {len(node.inputs)} ({written} written in place by their producers"
                f", {copies} copied into channel slices)")
    if op in ("maxpool", "avgpool"):
        spec = pool_spec(node, ctx.shapes[src])
        (ph, pb), (pw, pr) = spec.pads
        (height, width), (ho, wo) = spec.input_size, spec.output_size
        geometry = dict(x=ctx.ref(src), top=top, left=left, height=height, width=width,
                        out=ctx.ref(out_value), out_top=o_top, out_left=o_left, ho=ho, wo=wo,
                        kh=spec.kernel_size[0], kw=spec.kernel_size[1], sh=spec.stride[0],
                        sw=spec.stride[1], ph=ph, pw=pw, tasks=ctx.tasks)
        if op == "maxpool":
            steps.append(Step("", MaxPool(
                **geometry, dh=spec.dilation[0], dw=spec.dilation[1])))
        else:
            steps.append(Step("", AvgPool(
                **geometry, pad_bottom=pb, pad_right=pr,
                count_include_pad=spec.count_include_pad,
                divisor=spec.divisor_override or 0)))
        kh, kw = spec.kernel_size
        return f"{spec.kind} pool {kh}x{kw}/{spec.stride[0]}"
    if op == "gap":
        s_in = ctx.shapes[src]
        steps.append(Step("", GlobalAverage(
            x=ctx.ref(src), top=top, left=left, height=s_in.height, width=s_in.width,
            out=ctx.ref(out_value), out_top=o_top, out_left=o_left, tasks=ctx.tasks)))
        return "global average"
    if op == "flatten":  # pixels first, channels inside: to the NCHW order torch flattens in
        s_in = ctx.shapes[src]
        steps.append(Step("", Flatten(
            src=ctx.ref(src), top=top, left=left, out=ctx.ref(out_value, True),
            channels=s_in.channels, height=s_in.height, width=s_in.width, tasks=ctx.tasks)))
        return "flatten (NCHW order)"
    raise ValueError(f"{node.name}: no kernel for {op!r}")


def _border_step(ctx: _Context, value: str) -> Step | None:
    border = ctx.buffer(value).border
    if not any(border):
        return None
    return Step("", ZeroBorder(buf=ctx.ref(value, True),
                                                border=ctx.border(value), tasks=ctx.tasks))


def _conv_steps(ctx: _Context, node: Node, steps: list) -> str:
    k = ctx.kernels
    src, dst = node.inputs[0], node.output
    spec = conv_spec(node, ctx.shapes[src])
    (ph, _), (pw, _) = spec.pads
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    kh, kw = spec.kernel_size
    ho, wo = spec.output_size
    bias = node.attrs["bias"]
    label = f"{kh}x{kw}/{sh}" + (f" dilation {dh}" if max(dh, dw) > 1 else "")
    if spec.kind == "dw":
        weights, bias = _depthwise_weights(ctx, node, spec)
        top, left = ctx.origin(src, (ph, pw))
        o_top, o_left = ctx.origin(dst)
        if spec.kernel_size == (3, 3) and spec.out_channels == spec.in_channels:
            steps.append(Step("", Depthwise3x3(
                x=ctx.ref(src), top=top, left=left, w=weights, bias=bias, out=ctx.ref(dst),
                out_top=o_top, out_left=o_left, ho=ho, wo=wo, sh=sh, sw=sw, dh=dh, dw=dw,
                **ctx.epilogue(node), block=k.depthwise_block(ctx.dtype),
                out_border=ctx.border(dst), tasks=ctx.tasks)))
        else:
            border_step = _border_step(ctx, dst)
            if border_step is not None:
                steps.append(border_step)
            steps.append(Step("", Depthwise(
                x=ctx.ref(src), top=top, left=left, w=weights, kh=kh, kw=kw,
                multiplier=spec.out_channels // spec.in_channels, bias=bias, out=ctx.ref(dst),
                out_top=o_top, out_left=o_left, ho=ho, wo=wo, sh=sh, sw=sw, dh=dh, dw=dw,
                **ctx.epilogue(node), tasks=ctx.tasks)))
        return f"depthwise {label} (NHWC, channels in vectors)"
    if _winograd(node, spec, ctx.batch):
        return _winograd_steps(ctx, node, spec, steps)
    k_size = kh * kw * spec.in_channels_per_group
    pixels = ctx.batch * ho * wo
    is_wide = k.wide(pixels, k_size, spec.out_channels_per_group, spec.groups, ctx.dtype,
                     ctx.tasks)
    n, oh, ow = np.meshgrid(np.arange(ctx.batch), np.arange(ho), np.arange(wo), indexing="ij")
    x_buf = ctx.buffer(src)
    rows = x_buf.pixel(n, oh * sh - ph, ow * sw - pw).reshape(-1).astype(np.int64)
    cols = x_buf.dims(1)[2]
    taps = np.array([(i * dh * cols + j * dw) * spec.in_channels for i in range(kh)
                     for j in range(kw)], np.int64)
    c_in = spec.in_channels_per_group
    grid = _grid(k.schedule(pixels, k_size, spec.out_channels_per_group, spec.groups,
                            ctx.dtype, ctx.tasks, is_wide, c_in))
    if dw == 1 and spec.groups == 1 and kw > 1 and grid["chunk"] >= c_in:
        # a kernel row's taps are adjacent pixels, whose channels lie end to end in the input
        # as their weights do in the panel: one tap of kw * C channels per row, so that the
        # tiles' reductions are longer and their loops over the taps shorter
        taps, c_in = taps[::kw].copy(), kw * c_in
        grid["chunk"] = c_in
    out_rows = ctx.pixels(dst, n, oh, ow)
    steps.append(Step("", Conv(
        x=ctx.ref(src, True), rows=rows, taps=taps, c_in=c_in, groups=spec.groups,
        **_packed(ctx, node, spec.groups, is_wide), out=ctx.ref(dst, True), out_rows=out_rows,
        out_per_group=spec.out_channels_per_group, **_bias(bias, ctx.dtype),
        **ctx.epilogue(node), **_residual(ctx, node, n, oh, ow), **ctx.tile(is_wide),
        **grid, out_border=ctx.border(dst))))
    kind = "pointwise" if spec.kernel_size == (1, 1) else "conv"
    groups = f", {spec.groups} groups" if spec.groups > 1 else ""
    return f"{kind} {label}{groups}{_plus_residual(node)} (register tiles)"


def _plus_residual(node: Node) -> str:
    return " + residual" if node.attrs.get("residual") else ""


def _depthwise_weights(ctx: _Context, node: Node, spec) -> tuple[np.ndarray, np.ndarray]:
    """A depthwise layer's weights as (taps, C) and its bias (zeros where it has none)."""
    weights = ctx.packed.get(node.name)
    if weights is None:
        kh, kw = spec.kernel_size
        weights = ctx.packed[node.name] = np.ascontiguousarray(
            node.attrs["weight"].reshape(spec.out_channels, kh * kw).T)
    bias = node.attrs["bias"]
    return weights, np.zeros(spec.out_channels, ctx.dtype) if bias is None else bias


def _packed(ctx: _Context, node: Node, groups: int, is_wide: bool, prefix: str = "") -> dict:
    """A convolution's (or a linear layer's, as a 1x1's) weights in the panels of its tile
    (``kernels.pack``), packed once: the kernel's ``w`` and ``panel`` (``prefix``ed)."""
    packed = ctx.packed.get((node.name, is_wide))
    if packed is None:
        weight = node.attrs["weight"]
        packed = ctx.packed[node.name, is_wide] = ctx.kernels.pack(
            weight if weight.ndim == 4 else weight[:, :, None, None], groups, ctx.dtype,
            is_wide)
    return {f"{prefix}w": packed[0], f"{prefix}panel": packed[1]}


def _concat_slots(graph: Graph, shapes: dict, batch: int, fused_pointwise: set) -> dict:
    """The inputs of channel concatenations that their producers write straight into the
    concatenation's buffer: value -> its first channel there. A producer qualifies when it
    runs on the GEMM tiles (a convolution that is neither depthwise nor Winograd, or the
    pointwise half of a fused pair), whose output is addressed per pixel, and the
    concatenation is its output's only reader."""
    slots = {}
    for node in graph.nodes:
        if node.op != "concat":
            continue
        c0 = 0
        for value in node.inputs:
            producer = graph.producer(value)
            if (producer is not None and producer.op == "conv" and value != graph.output
                    and node.inputs.count(value) == 1 and graph.consumers(value) == [node]):
                spec = conv_spec(producer, shapes[producer.inputs[0]])
                if producer.name in fused_pointwise or not (
                        spec.kind == "dw" or _winograd(producer, spec, batch)):
                    slots[value] = c0
            c0 += shapes[value].channels
    return slots


def _separable_pairs(graph: Graph, shapes: dict, dtype) -> dict[str, Node]:
    """Depthwise 3x3 layers (one filter per channel) whose output only a pointwise layer
    (1x1, stride 1, no padding, no groups) reads: depthwise name -> pointwise node. Each
    pair runs as one kernel when the pointwise weights stay in the L2 cache beside the
    depthwise rows (``tuning.PLAN_SEPARABLE_WEIGHTS``)."""
    pairs = {}
    for node in graph.nodes:
        if node.op != "conv" or node.output == graph.output:
            continue
        spec = conv_spec(node, shapes[node.inputs[0]])
        readers = graph.consumers(node.output)
        if not (spec.kind == "dw" and spec.kernel_size == (3, 3)
                and spec.out_channels == spec.in_channels and len(readers) == 1):
            continue
        pw = readers[0]
        if pw.op != "conv" or pw.inputs[0] != node.output:
            continue
        pw_spec = conv_spec(pw, shapes[node.output])
        weights = pw_spec.in_channels * pw_spec.out_channels * np.dtype(dtype).itemsize
        if (pw_spec.kernel_size == (1, 1) and pw_spec.stride == (1, 1)
                and pw_spec.pads == ((0, 0), (0, 0)) and pw_spec.groups == 1
                and weights <= tuning.PLAN_SEPARABLE_WEIGHTS * l2_bytes()):
            pairs[node.name] = pw
    return pairs


def _separable_steps(ctx: _Context, dw_node: Node, pw_node: Node, steps: list) -> str:
    """A depthwise 3x3 layer and the pointwise one after it as one kernel
    (``nhwc.separable``): a few depthwise rows at a time into a task's scratch, in cache,
    and the pointwise tiles from there."""
    k = ctx.kernels
    src, dst = dw_node.inputs[0], pw_node.output
    spec = conv_spec(dw_node, ctx.shapes[src])
    pw_spec = conv_spec(pw_node, ctx.shapes[dw_node.output])
    (ph, _), (pw, _) = spec.pads
    ho, wo = spec.output_size
    channels, out_channels = spec.in_channels, pw_spec.out_channels
    weights, dw_bias = _depthwise_weights(ctx, dw_node, spec)
    rows = ctx.batch * ho
    row_bytes = wo * channels * ctx.dtype.itemsize
    per_step = max(1, min(-(-rows // ctx.tasks),
                          int(tuning.PLAN_SEPARABLE_SCRATCH * k.l2_bytes()) // row_bytes))
    pixels = per_step * wo
    is_wide = k.wide(pixels, channels, out_channels, 1, ctx.dtype, 1)
    tile = ctx.tile(is_wide)
    top, left = ctx.origin(src, (ph, pw))
    n, oh, ow = np.meshgrid(np.arange(ctx.batch), np.arange(ho), np.arange(wo), indexing="ij")
    out_rows = ctx.pixels(dst, n, oh, ow)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    steps.append(Step("", Separable(
        x=ctx.ref(src), top=top, left=left, dw_w=weights, dw_bias=dw_bias,
        **ctx.epilogue(dw_node, "dw_"), sh=sh, sw=sw, dh=dh, dw=dw, ho=ho, wo=wo,
        block=k.depthwise_block(ctx.dtype), **_packed(ctx, pw_node, 1, is_wide),
        panels=-(-out_channels // tile["nr"]), out=ctx.ref(dst, True), out_rows=out_rows,
        out_channels=out_channels, **_bias(pw_node.attrs["bias"], ctx.dtype),
        **ctx.epilogue(pw_node), **_residual(ctx, pw_node, n, oh, ow), **tile,
        scratch=ctx.new_scratch(pixels * channels),
        s_rows=np.arange(out_rows.size, dtype=np.int64) * channels, taps=np.zeros(1, np.int64),
        rows_per_step=per_step, out_border=ctx.border(dst), tasks=ctx.tasks)))
    return (f"depthwise 3x3/{sh}" + (f" dilation {dh}" if dh > 1 else "")
            + f" + pointwise 1x1{_plus_residual(pw_node)} (fused, register tiles)")


def _expansions(graph: Graph, shapes: dict, separable: dict, batch: int, threads: int,
                dtype) -> dict[str, Node]:
    """The 1x1 expand layers run inside a fused depthwise and pointwise pair
    (``nhwc.separable.expanded_separable``): depthwise name -> expand node.

    An expand layer qualifies when it is 1x1, stride 1, unpadded, without groups or a
    residual, not itself the pointwise half of a pair, and the pair's depthwise layer
    (padding 1, undilated, the same stride both ways) is its output's only reader; when each
    task gets ``tuning.PLAN_EXPAND_ROWS`` output rows or more (the rows at a share's edges
    are expanded twice); and when the two pointwise layers' weights fit where the pair's
    alone must (``tuning.PLAN_SEPARABLE_WEIGHTS``). Besides the expanded tensor's trip to
    memory, the block saves a parallel region."""
    size = np.dtype(dtype).itemsize
    found = {}
    by_name = {node.name: node for node in graph.nodes}
    projects = {pw.name for pw in separable.values()}
    for dw_name, project in separable.items():
        dw = by_name[dw_name]
        expand = graph.producer(dw.inputs[0])
        if (expand is None or expand.op != "conv" or expand.attrs.get("residual")
                or expand.name in projects  # MobileNet v1: already the pointwise of a pair
                or graph.consumers(expand.output) != [dw] or expand.output == graph.output):
            continue
        spec = conv_spec(expand, shapes[expand.inputs[0]])
        dw_spec = conv_spec(dw, shapes[dw.inputs[0]])
        (sh, sw), ho = dw_spec.stride, dw_spec.output_size[0]
        weights = (spec.in_channels + project.attrs["weight"].shape[0]) * spec.out_channels
        if (spec.kernel_size == (1, 1) and spec.stride == (1, 1) and spec.groups == 1
                and spec.pads == ((0, 0), (0, 0)) and dw_spec.pads == ((1, 1), (1, 1))
                and dw_spec.dilation == (1, 1) and sh == sw and sh in (1, 2)
                and batch * ho >= tuning.PLAN_EXPAND_ROWS * _tasks(threads)
                and weights * size <= tuning.PLAN_SEPARABLE_WEIGHTS * l2_bytes()):
            found[dw_name] = expand
    return found


def _expanded_steps(ctx: _Context, expand: Node, dw_node: Node, pw_node: Node,
                    steps: list) -> str:
    """An expand, depthwise and project layer as one kernel
    (``nhwc.separable.expanded_separable``): the expanded rows into a slab in the task's
    scratch, the depthwise rows from there into another, the project tiles from that."""
    k = ctx.kernels
    src, dst = expand.inputs[0], pw_node.output
    e_spec = conv_spec(expand, ctx.shapes[src])
    spec = conv_spec(dw_node, ctx.shapes[expand.output])
    pw_spec = conv_spec(pw_node, ctx.shapes[dw_node.output])
    height, width = e_spec.output_size
    c_in, expanded, out_channels = e_spec.in_channels, e_spec.out_channels, pw_spec.out_channels
    stride = spec.stride[0]
    ho, wo = spec.output_size
    size = ctx.dtype.itemsize
    # rows per step: the slab and the depthwise rows within PLAN_EXPAND_SCRATCH of the cache
    slab_row, dw_row = (width + 2) * expanded * size, wo * expanded * size
    budget = int(tuning.PLAN_EXPAND_SCRATCH * k.l2_bytes())
    per_step = max(1, min(-(-ctx.batch * ho // ctx.tasks),
                          (budget - 2 * slab_row) // (stride * slab_row + dw_row)))
    capacity = (per_step - 1) * stride + 3
    e_tile = ctx.tile(k.wide(capacity * width, c_in, expanded, 1, ctx.dtype, 1), "e_")
    tile = ctx.tile(k.wide(per_step * wo, expanded, out_channels, 1, ctx.dtype, 1))
    weights, dw_bias = _depthwise_weights(ctx, dw_node, spec)
    x_top, x_left = ctx.origin(src)
    cols = ctx.buffer(src).dims(1)[2]
    q = np.arange(capacity * width, dtype=np.int64)
    e_rows = (q // width * cols + q % width) * c_in
    slab_rows = (q // width * (width + 2) + 1 + q % width) * expanded
    n, oh, ow = np.meshgrid(np.arange(ctx.batch), np.arange(ho), np.arange(wo), indexing="ij")
    out_rows = ctx.pixels(dst, n, oh, ow)
    steps.append(Step("", ExpandedSeparable(
        x=ctx.ref(src), x_top=x_top, x_left=x_left, height=height, width=width, e_rows=e_rows,
        **_packed(ctx, expand, 1, e_tile["e_wide"], "e_"),
        e_panels=-(-expanded // e_tile["e_nr"]), expanded=expanded,
        **_bias(expand.attrs["bias"], ctx.dtype, "e_"), **ctx.epilogue(expand, "e_"),
        **e_tile, slab=ctx.new_scratch(capacity * (width + 2) * expanded),
        slab_rows=slab_rows, dw_w=weights, dw_bias=dw_bias, **ctx.epilogue(dw_node, "dw_"),
        stride=stride, ho=ho, wo=wo, block=k.depthwise_block(ctx.dtype),
        **_packed(ctx, pw_node, 1, tile["wide"]), panels=-(-out_channels // tile["nr"]),
        out=ctx.ref(dst, True), out_rows=out_rows, out_channels=out_channels,
        **_bias(pw_node.attrs["bias"], ctx.dtype), **ctx.epilogue(pw_node),
        **_residual(ctx, pw_node, n, oh, ow), **tile,
        scratch=ctx.new_scratch(per_step * wo * expanded),
        s_rows=np.arange(out_rows.size, dtype=np.int64) * expanded, taps=np.zeros(1, np.int64),
        rows_per_step=per_step, out_border=ctx.border(dst), tasks=ctx.tasks)))
    return (f"pointwise 1x1 + depthwise 3x3/{stride} + pointwise 1x1"
            f"{_plus_residual(pw_node)} (fused, register tiles)")


def _winograd(node: Node, spec, batch: int) -> bool:
    """Whether a convolution runs as Winograd F(2x2, 3x3): 3x3, stride 1, undilated, no
    groups, at least ``tuning.PLAN_WINOGRAD_CHANNELS`` input channels (below, the
    transforms cost more than the multiplies they save), and at least
    ``tuning.PLAN_WINOGRAD_TILES_PER_CHANNEL`` 2x2 output tiles (over the batch) per input
    channel: its transformed filters are 16/9 the weights, read on every call."""
    if not (spec.kernel_size == (3, 3) and spec.stride == (1, 1) and spec.dilation == (1, 1)
            and spec.groups == 1 and spec.in_channels >= tuning.PLAN_WINOGRAD_CHANNELS):
        return False
    tiles = batch * ((spec.output_size[0] + 1) // 2) * ((spec.output_size[1] + 1) // 2)
    return tiles >= tuning.PLAN_WINOGRAD_TILES_PER_CHANNEL * spec.in_channels


def _winograd_steps(ctx: _Context, node: Node, spec, steps: list) -> str:
    k = ctx.kernels
    src, dst = node.inputs[0], node.output
    (ph, _), (pw, _) = spec.pads
    ho, wo = spec.output_size
    c, o = spec.in_channels, spec.out_channels
    size = ctx.dtype.itemsize
    tiles = ctx.batch * ((ho + 1) // 2) * ((wo + 1) // 2)
    block = max(4, min(tuning.PLAN_WINOGRAD_BLOCK_MAX, k.l2_bytes() // (16 * (c + o) * size),
                       -(-tiles // ctx.tasks)))  # every task gets a block
    is_wide = k.wide(block, c, o, 1, ctx.dtype, 1)
    packed = ctx.packed.get((node.name, "winograd", is_wide))
    if packed is None:
        packed = ctx.packed[node.name, "winograd", is_wide] = k.winograd_filters(
            node.attrs["weight"], ctx.dtype, is_wide)
    bias = node.attrs["bias"]
    bias = np.zeros(o, ctx.dtype) if bias is None else bias
    top, left = ctx.origin(src, (ph, pw))
    o_top, o_left = ctx.origin(dst)
    residual, mode = _residual_source(node)
    r_top, r_left = ctx.origin(residual)
    tiles = np.arange(block, dtype=np.int64)
    w, panel, panels = packed
    mr, nr = k.tile_shape(ctx.dtype, is_wide)
    steps.append(Step("", Winograd(
        x=ctx.ref(src), top=top, left=left, w=w, panel=panel, panels=panels, channels=c,
        bias=bias, out=ctx.ref(dst), out_top=o_top, out_left=o_left, ho=ho, wo=wo,
        **ctx.epilogue(node), res=ctx.ref(residual), res_top=r_top, res_left=r_left,
        res_channel=ctx.slots.get(residual, 0), res_mode=mode,
        v=ctx.new_scratch(16 * block * c), m=ctx.new_scratch(16 * block * o), rows=tiles * c,
        m_rows=tiles * o, taps=np.zeros(1, np.int64), block=block, is_wide=is_wide, mr=mr,
        nr=nr, out_border=ctx.border(dst), tasks=ctx.tasks)))
    return f"conv 3x3/1{_plus_residual(node)} as Winograd F(2x2, 3x3) (register tiles)"


def _bias(bias, dtype, prefix: str = "") -> dict:
    """A kernel's ``bias`` and ``has_bias`` (``prefix``ed for a fused kernel's inner layer)."""
    return {f"{prefix}bias": np.zeros(1, dtype) if bias is None else bias,
            f"{prefix}has_bias": bias is not None}


def _grid(schedule: tuple) -> dict:
    """``plan_tiles.TileGeometry.schedule``'s answer by name."""
    return dict(zip(("tile_groups", "unit_groups", "block", "chunk"), schedule))


def _residual(ctx, node: Node, n, oh, ow) -> dict:
    """``res``, ``res_rows`` and ``res_mode`` of the GEMM tiles' epilogue: the residual's
    buffer (flat), its pixels ``(n, oh, ow)`` (arrays), and 1 (added before the activation)
    or 2 (after); or the output's own, unread (0), when the node adds none."""
    value, mode = _residual_source(node)
    rows = ctx.buffer(value).pixel(n, oh, ow).reshape(-1).astype(np.int64)
    return dict(res=ctx.ref(value, True), res_rows=rows, res_mode=mode)


def _residual_source(node: Node) -> tuple[str, int]:
    """The value a node's epilogue adds and when: 1 before the activation, 2 after; or its
    own output, unread (0), when it adds none."""
    value = node.attrs.get("residual")
    if value is None:
        return node.output, 0
    return value, 2 if node.attrs.get("residual_after") else 1


def _linear_steps(ctx: _Context, node: Node, steps: list) -> str:
    src, dst = node.inputs[0], node.output
    weight = node.attrs["weight"]
    out_features, in_features = weight.shape
    is_wide = ctx.kernels.wide(ctx.batch, in_features, out_features, 1, ctx.dtype, ctx.tasks)
    images = np.arange(ctx.batch)
    rows = ctx.buffer(src).pixel(images, 0, 0).astype(np.int64)
    out_rows = ctx.buffer(dst).pixel(images, 0, 0).astype(np.int64)
    steps.append(Step("", Conv(  # as a 1x1 convolution of one pixel per image
        x=ctx.ref(src, True), rows=rows, taps=np.zeros(1, np.int64), c_in=in_features,
        groups=1, **_packed(ctx, node, 1, is_wide), out=ctx.ref(dst, True), out_rows=out_rows,
        out_per_group=out_features, **_bias(node.attrs["bias"], ctx.dtype),
        **ctx.epilogue(node), res=ctx.ref(dst, True), res_rows=out_rows, res_mode=0,
        **ctx.tile(is_wide), **_grid(ctx.kernels.schedule(
            ctx.batch, in_features, out_features, 1, ctx.dtype, ctx.tasks, is_wide)),
        out_border=ctx.border(dst))))
    return f"linear {weight.shape[1]}->{weight.shape[0]} (register tiles)"


def _liveness(graph: Graph, steps: list, buffers: list, buffer_of: dict) -> None:
    """Each buffer's first (writing) and last (reading) step."""
    for b in buffers:
        b.first, b.last = math.inf, -1
    for i, step in enumerate(steps):
        for arg in step.args:
            if isinstance(arg, Ref):
                b = buffers[arg.buffer]
                b.first, b.last = min(b.first, i), max(b.last, i)
    buffers[buffer_of[graph.output]].last = len(steps)  # read by the output conversion
    for b in buffers:
        if b.last < 0:  # written by nothing and read by nothing: a value no step uses
            b.first = b.last = 0


def _place(buffers: list, batch: int, dtype, output: int) -> tuple[int, list[int]]:
    """Offsets in one arena: buffers that are live at the same step never overlap (largest
    first, each at the lowest offset that fits). Returns the arena's length and the buffers
    whose border no other buffer's memory touches (zeroed once, not every call)."""
    align = max(1, _ALIGN // np.dtype(dtype).itemsize)
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: -b.size(batch)):
        size = b.size(batch)
        clashes = sorted((p.offset, p.offset + p.size(batch)) for p in placed
                         if p.first <= b.last and b.first <= p.last)
        offset = 0
        for lo, hi in clashes:
            if offset + size <= lo:
                break
            offset = max(offset, -(-hi // align) * align)
        b.offset = offset
        placed.append(b)
    end = max((b.offset + b.size(batch) for b in buffers), default=0)
    static = []
    for i, b in enumerate(buffers):
        lo, hi = b.offset, b.offset + b.size(batch)
        if any(b.border) and not any(o is not b and o.offset < hi and lo < o.offset + o.size(
                batch) for o in buffers):
            static.append(i)
    return end, static
