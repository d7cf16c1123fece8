"""The selection pass: how each node of an optimised graph runs, decided once per input shape
and kept as data (:class:`Choice`).

A choice names the node's kernel kind (:data:`KINDS`), the graph nodes it runs (a depthwise
and pointwise pair, or an expand layer before them, run as one kernel), and what its kernel
was sized to: the GEMM tile (wide or narrow, ``mr`` x ``nr``), the rows a fused pair's step
takes, Winograd's block. The buffers, borders and concatenation slots, the emission of the
steps, ``print(plan)`` and the profile all read the choices; nothing downstream decides again.
Every threshold is ``kernels/tuning.py``'s (or ``fastconv tune``'s) in force.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..kernels import tuning
from .graph import Graph, Node, conv_spec, deconv_geometry, is_shuffle_deconv

#: The kinds of kernel a node runs on.
KINDS = ("gemm", "transpose_gemm", "transpose_conv", "winograd", "depthwise_3x3", "depthwise",
         "separable", "expanded_separable", "linear", "affine", "binary", "concat", "max_pool",
         "avg_pool", "global_average", "global_max", "softmax", "squeeze_excite", "flatten",
         "nearest_upsample", "resize", "channel_slice", "pixel_slice", "depth_to_space",
         "gather", "alias")

#: The kinds whose output may be written straight into a concatenation's channel slice: the
#: GEMM tiles, pixel by pixel through a table of offsets, and the nearest upsampling.
WRITES_PER_PIXEL = {"gemm", "transpose_gemm", "transpose_conv", "separable",
                    "expanded_separable", "nearest_upsample", "channel_slice", "pixel_slice",
                    "depth_to_space", "gather"}
#: The kinds that read their input through its border (its padding); a fused expand block
#: pads its expanded rows in its own slab.
PADS_ITS_INPUT = {"gemm", "winograd", "depthwise_3x3", "depthwise", "separable"}

# the op of a node that is not a convolution -> its kind
_BY_OP = {"deconv": "transpose_gemm", "upsample": "nearest_upsample", "resize": "resize",
          "depth_to_space": "depth_to_space", "slice": "channel_slice",
          "pixel_slice": "pixel_slice", "batchnorm": "affine",
          "act": "affine", "add": "binary", "mul": "binary", "elementwise": "binary",
          "gather": "gather",
          "concat": "concat", "maxpool": "max_pool", "avgpool": "avg_pool",
          "gap": "global_average", "gmp": "global_max", "softmax": "softmax",
          "flatten": "flatten", "linear": "linear"}


@dataclass(frozen=True)
class Choice:
    """How one plan node runs.

    ``members`` are the graph nodes it runs, in order (one, or a fused block's expand,
    depthwise and project layers); ``wide``, ``mr`` and ``nr`` its GEMM tile (the project
    layer's in a fused block), ``expand_wide`` the expand layer's; ``rows_per_step`` the
    output rows a fused block's step takes, ``slab_height`` the expanded input rows a step of
    the expanded block holds; ``block`` Winograd's tiles per block.
    """

    kind: str
    members: tuple[Node, ...]
    wide: bool = False
    mr: int = 0
    nr: int = 0
    expand_wide: bool = False
    rows_per_step: int = 0
    slab_height: int = 0
    block: int = 0

    @property
    def head(self) -> Node:
        """The node whose input it reads."""
        return self.members[0]

    @property
    def tail(self) -> Node:
        """The node whose output it writes."""
        return self.members[-1]

    @property
    def name(self) -> str:
        return " + ".join(m.name for m in self.members)

    @property
    def fused(self) -> list[str]:
        """The graph's nodes run inside it: what was fused into each member, and the members
        after the first."""
        names = []
        for i, m in enumerate(self.members):
            names += ([m.name] if i else []) + list(m.attrs.get("fused", []))
        return names


def select(graph: Graph, shapes: dict, batch: int, threads: int, kernels) -> list[Choice]:
    """Every node's :class:`Choice`, in the order the plan runs them (a fused block where its
    depthwise layer stands). ``kernels`` is the executor, whose tiles' geometry sizes the
    GEMMs."""
    dtype = graph.dtype
    tasks = parallel_tasks(threads)
    separable = _separable_pairs(graph, shapes, dtype, kernels)
    expansions = _expansions(graph, shapes, separable, batch, threads, dtype, kernels)
    excites = _squeeze_excites(graph, shapes)
    inside = {n.name for n in (*separable.values(), *expansions.values())}
    inside |= {n.name for block in excites.values() for n in block}
    choices = []
    for node in graph.nodes:
        if node.name in inside:
            continue  # runs in its block's choice
        if _aliases(node, shapes):
            choices.append(Choice("alias", (node,)))
        elif node.name in expansions:
            choices.append(_expanded(node, expansions[node.name], separable[node.name], shapes,
                                     batch, tasks, dtype, kernels))
        elif node.name in excites:
            choices.append(Choice("squeeze_excite", (node, *excites[node.name])))
        elif node.name in separable:
            choices.append(_separable(node, separable[node.name], shapes, batch, tasks, dtype,
                                      kernels))
        elif node.op == "conv":
            choices.append(_conv(node, shapes, batch, tasks, dtype, kernels))
        elif node.op in _BY_OP:
            wide = False
            if node.op == "linear":
                out_features, in_features = node.attrs["weight"].shape
                wide = kernels.wide(batch, in_features, out_features, 1, dtype, tasks)
            elif node.op == "deconv":  # a GEMM per output phase, of its phase's taps
                s_in, weight = shapes[node.inputs[0]], node.attrs["weight"]
                geometry = deconv_geometry(node)
                groups, stride = geometry["groups"], geometry["stride"]
                taps = max(1, weight.shape[2] // stride[0]) * max(1, weight.shape[3] // stride[1])
                wide = kernels.wide(batch * s_in.height * s_in.width, taps * weight.shape[1],
                                    weight.shape[0] // groups, groups, dtype, tasks)
                kind = "transpose_gemm" if is_shuffle_deconv(node) else "transpose_conv"
                choices.append(_tiled(Choice(kind, (node,), wide), dtype, kernels))
                continue
            choices.append(_tiled(Choice(_BY_OP[node.op], (node,), wide), dtype, kernels))
        else:
            raise ValueError(f"{node.name}: no kernel for {node.op!r}")
    return choices


def _tiled(choice: Choice, dtype, kernels) -> Choice:
    """``choice`` with the shape of its tile (for a kind that has one)."""
    if choice.kind not in ("gemm", "transpose_gemm", "transpose_conv", "winograd", "linear",
                           "separable", "expanded_separable"):
        return choice
    mr, nr = kernels.tile_shape(dtype, choice.wide)
    return replace(choice, mr=mr, nr=nr)


def _conv(node: Node, shapes: dict, batch: int, tasks: int, dtype, kernels) -> Choice:
    spec = conv_spec(node, shapes[node.inputs[0]])
    if spec.kind == "dw":
        square = spec.kernel_size == (3, 3) and spec.out_channels == spec.in_channels
        return Choice("depthwise_3x3" if square else "depthwise", (node,))
    if _winograd(node, spec, batch):
        ho, wo = spec.output_size
        c, o = spec.in_channels, spec.out_channels
        tiles = batch * ((ho + 1) // 2) * ((wo + 1) // 2)
        block = max(4, min(tuning.PLAN_WINOGRAD_BLOCK_MAX,
                           kernels.l2_bytes() // (16 * (c + o) * np.dtype(dtype).itemsize),
                           -(-tiles // tasks)))  # every task gets a block
        return _tiled(Choice("winograd", (node,), kernels.wide(block, c, o, 1, dtype, 1),
                             block=block), dtype, kernels)
    kh, kw = spec.kernel_size
    pixels = batch * spec.output_size[0] * spec.output_size[1]
    wide = kernels.wide(pixels, kh * kw * spec.in_channels_per_group,
                        spec.out_channels_per_group, spec.groups, dtype, tasks)
    return _tiled(Choice("gemm", (node,), wide), dtype, kernels)


def _separable(dw: Node, pw: Node, shapes: dict, batch: int, tasks: int, dtype,
               kernels) -> Choice:
    """A fused pair: each step takes a few depthwise rows, within
    ``tuning.PLAN_SEPARABLE_SCRATCH`` of the L2 cache, into the task's scratch."""
    spec = conv_spec(dw, shapes[dw.inputs[0]])
    ho, wo = spec.output_size
    channels = spec.in_channels
    out_channels = conv_spec(pw, shapes[dw.output]).out_channels
    row_bytes = wo * channels * np.dtype(dtype).itemsize
    per_step = max(1, min(-(-batch * ho // tasks),
                          int(tuning.PLAN_SEPARABLE_SCRATCH * kernels.l2_bytes()) // row_bytes))
    wide = kernels.wide(per_step * wo, channels, out_channels, 1, dtype, 1)
    return _tiled(Choice("separable", (dw, pw), wide, rows_per_step=per_step), dtype, kernels)


def _expanded(dw: Node, expand: Node, pw: Node, shapes: dict, batch: int, tasks: int, dtype,
              kernels) -> Choice:
    """An expand layer inside a fused pair: each step's slab of expanded rows and its
    depthwise rows within ``tuning.PLAN_EXPAND_SCRATCH`` of the L2 cache."""
    e_spec = conv_spec(expand, shapes[expand.inputs[0]])
    spec = conv_spec(dw, shapes[expand.output])
    height, width = e_spec.output_size
    c_in, expanded = e_spec.in_channels, e_spec.out_channels
    out_channels = conv_spec(pw, shapes[dw.output]).out_channels
    stride = spec.stride[0]
    ho, wo = spec.output_size
    size = np.dtype(dtype).itemsize
    slab_row, dw_row = (width + 2) * expanded * size, wo * expanded * size
    budget = int(tuning.PLAN_EXPAND_SCRATCH * kernels.l2_bytes())
    per_step = max(1, min(-(-batch * ho // tasks),
                          (budget - 2 * slab_row) // (stride * slab_row + dw_row)))
    capacity = (per_step - 1) * stride + 3  # the slab's rows: a step's input rows
    expand_wide = kernels.wide(capacity * width, c_in, expanded, 1, dtype, 1)
    wide = kernels.wide(per_step * wo, expanded, out_channels, 1, dtype, 1)
    return _tiled(Choice("expanded_separable", (expand, dw, pw), wide, expand_wide=expand_wide,
                         rows_per_step=per_step, slab_height=capacity), dtype, kernels)


def parallel_tasks(threads: int) -> int:
    """Parallel chunks per kernel: a few per thread, so that a thread that wakes late still
    finds work left (``tuning.PLAN_TASKS_PER_THREAD``)."""
    return threads * tuning.PLAN_TASKS_PER_THREAD


def _aliases(node: Node, shapes) -> bool:
    """A flatten of 1x1 pixels, or an unflatten, changes only the shape: the same buffer
    (an NHWC buffer of one pixel per image is (N, C) in memory)."""
    source = shapes[node.inputs[0]]
    return node.op == "unflatten" or (node.op == "flatten" and source.height * source.width
                                      == 1)


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


def _squeeze_excites(graph: Graph, shapes: dict) -> dict[str, tuple[Node, Node, Node]]:
    """Squeeze-and-excitation blocks run as one step (``nhwc.squeeze_excite``): global
    average name -> the 1x1 convolution reading it, the 1x1 after that, and the product of
    the average's input by the second's output (the gate). Each value inside is read only by
    the next node, and the product fuses no activation or residual of its own."""
    found = {}
    for gap in graph.nodes:
        if gap.op != "gap" or shapes[gap.inputs[0]].flat:
            continue
        chain = [gap]
        while len(chain) < 4:
            value = chain[-1].output
            readers = graph.consumers(value)
            if value in graph.outputs or len(readers) != 1:
                break
            node = readers[0]
            if len(chain) < 3:
                if node.op != "conv" or node.attrs.get("residual"):
                    break
                spec = conv_spec(node, shapes[value])
                if (spec.kernel_size, spec.stride, spec.groups, spec.pads) != (
                        (1, 1), (1, 1), 1, ((0, 0), (0, 0))):
                    break
            elif (node.op != "mul" or sorted(node.inputs) != sorted((gap.inputs[0], value))
                  or node.act.kind != "none" or node.attrs.get("residual")):
                break
            chain.append(node)
        if len(chain) == 4:
            found[gap.name] = tuple(chain[1:])
    return found


def _separable_pairs(graph: Graph, shapes: dict, dtype, kernels) -> dict[str, Node]:
    """Depthwise 3x3 layers (one filter per channel) whose output only a pointwise layer
    (1x1, stride 1, no padding, no groups) reads: depthwise name -> pointwise node. Each
    pair runs as one kernel when the pointwise weights stay in the L2 cache beside the
    depthwise rows (``tuning.PLAN_SEPARABLE_WEIGHTS``)."""
    pairs = {}
    for node in graph.nodes:
        if node.op != "conv" or node.output in graph.outputs:
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
                and weights <= tuning.PLAN_SEPARABLE_WEIGHTS * kernels.l2_bytes()):
            pairs[node.name] = pw
    return pairs


def _expansions(graph: Graph, shapes: dict, separable: dict, batch: int, threads: int,
                dtype, kernels) -> dict[str, Node]:
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
                or graph.consumers(expand.output) != [dw] or expand.output in graph.outputs):
            continue
        spec = conv_spec(expand, shapes[expand.inputs[0]])
        dw_spec = conv_spec(dw, shapes[dw.inputs[0]])
        (sh, sw), ho = dw_spec.stride, dw_spec.output_size[0]
        weights = (spec.in_channels + project.attrs["weight"].shape[0]) * spec.out_channels
        if (spec.kernel_size == (1, 1) and spec.stride == (1, 1) and spec.groups == 1
                and spec.pads == ((0, 0), (0, 0)) and dw_spec.pads == ((1, 1), (1, 1))
                and dw_spec.dilation == (1, 1) and sh == sw and sh in (1, 2)
                and batch * ho >= tuning.PLAN_EXPAND_ROWS * parallel_tasks(threads)
                and weights * size <= tuning.PLAN_SEPARABLE_WEIGHTS * kernels.l2_bytes()):
            found[dw_name] = expand
    return found
