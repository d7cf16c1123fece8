"""The planner: what runs, in which layout, in which memory.

Two phases. ``rewrites.optimize`` rewrites the imported graph once. :func:`plan_shape` then
plans one input shape, stage by stage, each stage a module: every value's shape
(``graph.infer_shapes``); the kernel of every node (``selection.select``); the buffers, the
concatenation slots and the zero border each activation needs for the padding of the
convolutions that read it (here); the steps (``emission.emit``); and one arena of buffers
placed by liveness (``arena``), so that a call allocates only its output.

Activations are NHWC in the arena (``fastconv.kernels.numba.nhwc``): a convolution reads its
input's vector of channels per pixel, its padding from the border, and writes its output's
interior; the network's input and output are converted at the edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .arena import Buffer, Ref, liveness, place
from .emission import Context, Step, emit
from ..spec import transposed_phases
from .graph import (CONCAT_AXES, INPUT, Graph, Node, Shape, conv_spec, deconv_axes,
                    infer_shapes)
from .selection import PADS_ITS_INPUT, WRITES_PER_PIXEL, Choice, select
from .step_args import FromNchw


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
    choice: Choice | None = None  # how it runs (selection.Choice): its kind, tile, members


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
    # a segment's more inputs (their shapes; the steps named "input <k>" convert them) and
    # more outputs: (buffer, shape, flat) each
    extra_inputs: list = field(default_factory=list)
    extra_outputs: list = field(default_factory=list)

    @property
    def arena_bytes(self) -> int:
        return self.arena_elements * self.dtype.itemsize


def plan_shape(graph: Graph, packed: dict, input_shape: tuple[int, ...], threads: int,
               kernels, extra_shapes: dict | None = None) -> ShapePlan:
    """Plan ``graph`` for inputs of ``input_shape``.

    Parameters
    ----------
    graph : Graph
        Rewritten (``rewrites.optimize``).
    packed : PackedWeights
        The weights in their kernels' layouts, packed on first use (shared by every shape
        plan).
    input_shape : (N, C, H, W)
    threads : int
    kernels : module
        The executor (``fastconv.network.executor.Executor``): its tiles' geometry; the
        steps name its kernels.
    """
    batch = input_shape[0]
    extra_shapes = {name: tuple(extra_shapes[name]) for name in graph.extra_inputs}
    shapes = infer_shapes(graph, input_shape, extra_shapes)
    choices = select(graph, shapes, batch, threads, kernels)
    buffers, buffer_of, slots = _buffers(graph, shapes, choices)
    _within_budget(graph, shapes, choices, buffers, buffer_of, input_shape)
    steps: list[Step] = []
    nodes: list[NodePlan] = []
    ctx = Context(shapes, buffers, buffer_of, packed, batch, threads, graph.dtype, kernels,
                  slots=slots)
    for k, value in enumerate((INPUT, *graph.extra_inputs)):  # first, each input's conversion
        buf = buffers[buffer_of[value]]
        steps.append(Step("input" if k == 0 else f"input {k}", FromNchw(
            x=None, out=Ref(buffer_of[value]), top=buf.border[0], left=buf.border[2],
            border=ctx.border(value), tasks=ctx.tasks)))
    for choice in choices:
        if choice.kind == "alias":
            continue
        first = len(steps)
        kernel = emit(ctx, choice, steps)
        for step in steps[first:]:
            step.node = choice.name + (" border" if step.kind == "zero_border" else "")
        members, head = choice.members, choice.head
        params = sum(_params(m) for m in members)
        macs = sum(_macs(m, shapes[m.inputs[0]], shapes[m.output]) for m in members)
        nodes.append(NodePlan(choice.name, "conv" if len(members) > 1 else head.op, kernel,
                              str(shapes[head.inputs[0]]), str(shapes[choice.tail.output]),
                              macs * batch, choice.fused, len(members), params,
                              _traffic(list(members), shapes, batch, params, graph.dtype),
                              choice))
    liveness(graph, steps, buffers, buffer_of)
    arena, static = place(buffers, batch, graph.dtype, buffer_of[graph.output])
    out = shapes[graph.output]
    return ShapePlan(tuple(input_shape), out.batched(batch), graph.dtype, buffers, steps, 0,
                     buffer_of[graph.output], out.flat, arena, nodes, static, threads,
                     [extra_shapes[v] for v in graph.extra_inputs],
                     [(buffer_of[v], shapes[v].batched(batch), shapes[v].flat)
                      for v in graph.extra_outputs])


def _buffers(graph: Graph, shapes: dict, choices: list[Choice]):
    """The buffers of the arena (not yet placed): the input's, and each choice's output's
    unless it aliases its input or is written into a concatenation's slice; each with the
    border its readers' padding needs. Returns them, value -> buffer, and the concatenation
    slots (``_concat_slots``)."""
    buffer_of: dict[str, int] = {}
    buffers: list[Buffer] = []

    def new_buffer(value: str) -> None:
        s = shapes[value]
        buffers.append(Buffer(s.height, s.width, s.channels))
        buffer_of[value] = len(buffers) - 1

    chosen = {m.name: c for c in choices for m in c.members}
    slots = _concat_slots(graph, shapes, chosen)
    for value in (INPUT, *graph.extra_inputs):
        new_buffer(value)
    for node in graph.nodes:
        choice = chosen[node.name]
        if choice.kind == "alias":
            buffer_of[node.output] = buffer_of[node.inputs[0]]
        elif node is choice.tail and node.output not in slots:
            new_buffer(node.output)  # a fused block's inner values are never stored
        if node.op == "concat":  # its slotted inputs are written straight into its buffer
            for value in node.inputs:
                if value in slots:
                    buffer_of[value] = buffer_of[node.output]
    for choice in choices:  # the padding each reader needs, on its input's border
        if choice.kind == "transpose_conv":  # the zeros its phases read around the input
            node = choice.head
            s_in = shapes[node.inputs[0]]
            (_, top, bottom, _), (_, left, right, _) = (
                transposed_phases(n, *axis) for n, axis in zip((s_in.height, s_in.width),
                                                               deconv_axes(node)))
            border = buffers[buffer_of[node.inputs[0]]].border
            for i, pad in enumerate((top, bottom, left, right)):
                border[i] = max(border[i], pad)
        if choice.kind in PADS_ITS_INPUT:  # an expanded input is padded in the slab
            node = choice.head
            spec = conv_spec(node, shapes[node.inputs[0]])
            (top, bottom), (left, right) = spec.pads
            if choice.kind == "winograd":  # a last tile half outside the output reads a row more
                bottom += spec.output_size[0] % 2
                right += spec.output_size[1] % 2
            border = buffers[buffer_of[node.inputs[0]]].border
            for i, pad in enumerate((top, bottom, left, right)):
                border[i] = max(border[i], pad)
    return buffers, buffer_of, slots


#: Bytes of tables per output pixel of a kind that addresses its pixels through them (its
#: input's first element, its output's, a residual's: int64 each).
_TABLE_BYTES = {"gemm": 24, "transpose_gemm": 24, "transpose_conv": 24, "separable": 24,
                "expanded_separable": 32, "max_pool": 8,
                "avg_pool": 8}


def _within_budget(graph: Graph, shapes: dict, choices: list[Choice], buffers: list[Buffer],
                   buffer_of: dict, input_shape) -> None:
    """Refuse a shape whose plan would take more than ``config.get_plan_memory_budget()``:
    every buffer (the arena holds at most their sum), the tables, the packed weights and the
    output, counted before anything of that size is allocated.

    Raises
    ------
    ValueError
        Naming the node that needs the most, the sizes and the budget.
    """
    from .. import config

    budget = config.get_plan_memory_budget()
    batch, itemsize = input_shape[0], np.dtype(graph.dtype).itemsize
    need, total = {}, 0
    for choice in choices:
        if choice.kind == "alias":
            continue
        out = shapes[choice.tail.output]
        pixels = batch * out.height * out.width
        own = _TABLE_BYTES.get(choice.kind, 0) * pixels + itemsize * sum(
            _params(m) for m in choice.members)
        if choice.tail.output in buffer_of:
            own += buffers[buffer_of[choice.tail.output]].size(batch) * itemsize
        need[choice.name] = own
        total += own
    total += sum(buffers[buffer_of[v]].size(batch) for v in (INPUT, *graph.extra_inputs)
                 ) * itemsize  # the inputs'
    total += sum(math.prod(shapes[v].batched(batch)) for v in graph.outputs) * itemsize
    if total > budget:
        worst = max(need, key=need.get) if need else "the input"
        raise ValueError(
            f"{worst}: planning input {list(input_shape)} needs {_bytes(total)} (this node "
            f"{_bytes(need.get(worst, 0))}, its output "
            f"{_output_of(choices, worst, shapes, batch) if need else '?'}), over the plan's "
            f"memory budget of {_bytes(budget)} (fastconv.config.set_plan_memory_budget, or "
            "FASTCONV_PLAN_MEMORY_MB)")


def _output_of(choices, name, shapes, batch) -> list:
    choice = next(c for c in choices if c.name == name)
    return list(shapes[choice.tail.output].batched(batch))


def _bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _params(node: Node) -> int:
    names = ("weight", "bias") if node.op in ("conv", "deconv", "linear") else ("scale",
                                                                                "shift")
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


def _macs(node: Node, s_in: Shape, s_out: Shape) -> int:
    if node.op == "conv":
        return conv_spec(node, s_in).macs
    if node.op == "linear":
        return node.attrs["weight"].size
    if node.op == "deconv":  # every input pixel times every tap's (C_in, C_out)
        return node.attrs["weight"].size * s_in.height * s_in.width
    return 0


def _concat_slots(graph: Graph, shapes: dict, chosen: dict) -> dict:
    """The inputs of concatenations that their producers write straight into the
    concatenation's buffer: value -> (axis, its first channel, row or column there). A
    producer qualifies when the concatenation is its output's only reader and it addresses
    its output pixels through a table: along the channels, a kind of ``WRITES_PER_PIXEL``
    (the GEMM tiles, the copies, the gathers); along the rows or columns, a gather."""
    slots = {}
    for node in graph.nodes:
        if node.op != "concat":
            continue
        axis = node.attrs.get("axis", "channels")
        at = 0
        for value in node.inputs:
            producer = graph.producer(value)
            kind = None if producer is None else chosen[producer.name].kind
            if (producer is not None and value not in graph.outputs
                    and node.inputs.count(value) == 1 and graph.consumers(value) == [node]
                    and chosen[producer.name].tail is producer
                    and (kind in WRITES_PER_PIXEL if axis == "channels" else kind == "gather")):
                slots[value] = (axis, at)
            at += shapes[value].batched(1)[1 + CONCAT_AXES.index(axis)]
    return slots
