"""Emission: each selected node's steps, one kernel call each, its arguments a record of
``step_args`` filled by name. :func:`emit` dispatches on the choice's kind (``EMITTERS``), and
each emitter returns the label ``print(plan)`` and the profile show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels.epilogue import ACTIVATIONS, BINARY_OPS
from .arena import Buffer, Ref
from ..spec import resize_taps, transposed_phases
from .graph import CONCAT_AXES, Node, conv_spec, deconv_axes, deconv_geometry, pool_spec
from .selection import Choice, parallel_tasks
from .step_args import (Affine, AvgPool, Binary, Conv, CopyChannels, Depthwise, Depthwise3x3,
                        ExpandedSeparable, Flatten, Gather, GlobalAverage, MaxPool, Resize,
                        Separable, Softmax, SqueezeExcite, Winograd, ZeroBorder)


@dataclass
class Step:
    """One kernel call: the executor's kernel of the record's kind (``step_args``), called with
    the record's fields once the ``Ref`` among them are arena views."""

    node: str
    args: tuple  # a record of step_args

    @property
    def kind(self) -> str:
        return self.args.kind


class PackedWeights:
    """A plan's weights in its kernels' layouts, by key: each made on first use by the
    function given with it, which :meth:`refresh` runs again to re-pack in place (the steps
    keep the arrays) after the graph's weights were changed in place."""

    def __init__(self):
        self._made: dict = {}  # key -> (value, make)

    def once(self, key, make):
        """The value of ``key``, made by ``make()`` if it is not yet."""
        entry = self._made.get(key)
        if entry is None:
            entry = self._made[key] = (make(), make)
        return entry[0]

    def refresh(self) -> None:
        """Every value made again from the graph's weights, into its own arrays."""
        for value, make in self._made.values():
            _copy_into(value, make())


def _copy_into(value, fresh) -> None:
    if isinstance(value, np.ndarray):
        value[...] = fresh
    elif isinstance(value, tuple):
        for part, new in zip(value, fresh):
            _copy_into(part, new)
    elif value != fresh:  # a panel's width or count: the weights' shapes are the plan's
        raise ValueError(f"re-packed weights changed their layout ({value} to {fresh})")


@dataclass
class Context:
    """What the emitters share for one shape plan: the values' shapes, the buffers and which
    value is in which, the packed weights (filled on first use), the batch, threads and
    dtype, the executor (its tiles' geometry), the concatenation slots."""

    shapes: dict
    buffers: list
    buffer_of: dict
    packed: PackedWeights
    batch: int
    threads: int
    dtype: np.dtype
    kernels: object
    # value -> where in the concatenation's buffer it is written: (axis, first channel, row
    # or column)
    slots: dict

    def new_scratch(self, elements: int) -> Ref:
        """A scratch buffer of ``elements`` per task, for the step being planned."""
        self.buffers.append(Buffer(1, 1, elements, count=self.tasks))
        return Ref(len(self.buffers) - 1, rows=True)

    @property
    def tasks(self) -> int:
        return parallel_tasks(self.threads)

    def buffer(self, value) -> Buffer:
        return self.buffers[self.buffer_of[value]]

    def border(self, value) -> np.ndarray:
        """The geometry a kernel zeroes ``value``'s border from (``nhwc.layout``'s
        ``zero_border_share``): (N, Hb, Wb, C, top, bottom, left, right)."""
        buf = self.buffer(value)
        return np.array([*buf.dims(self.batch), *buf.border], np.int64)

    def pixels(self, value, n, h, w) -> np.ndarray:
        """Element offsets of ``value``'s pixels (n, h, w) (arrays), channel 0 of its own
        channels: in a concatenation's buffer, where its slice starts (its first channel, or
        its rows or columns)."""
        axis, first = self.slots.get(value, ("channels", 0))
        if axis == "height":
            h = h + first
        elif axis == "width":
            w = w + first
        at = self.buffer(value).pixel(n, h, w) + self.channel(value)
        return np.asarray(at).reshape(-1).astype(np.int64)

    def channel(self, value) -> int:
        """``value``'s first channel in its buffer: where its slice of a concatenation of the
        channels starts, else 0."""
        axis, first = self.slots.get(value, ("channels", 0))
        return first if axis == "channels" else 0

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



# --- emission: each kind of choice's steps, appended in order; each returns its label -----------


def _windows(ctx: Context, node: Node):
    """The node's input, output, its output's shape, and where each image starts in the
    input's and the output's buffers."""
    src, dst = node.inputs[0], node.output
    return src, dst, ctx.shapes[dst], ctx.origin(src), ctx.origin(dst)


def _emit_affine(ctx: Context, choice: Choice, steps: list) -> str:
    node = choice.head
    src, dst, s, (top, left), (o_top, o_left) = _windows(ctx, node)
    scale = np.broadcast_to(node.attrs.get("scale", 1.0), (s.channels,))  # per channel
    shift = np.broadcast_to(node.attrs.get("shift", 0.0), (s.channels,))
    steps.append(Step("", Affine(
        x=ctx.ref(src), top=top, left=left, scale=scale.astype(ctx.dtype),
        shift=shift.astype(ctx.dtype), has_affine=node.op == "batchnorm", out=ctx.ref(dst),
        out_top=o_top, out_left=o_left, height=s.height, width=s.width,
        **ctx.epilogue(node), tasks=ctx.tasks)))
    return "affine" if node.op == "batchnorm" else str(node.act)


def _emit_binary(ctx: Context, choice: Choice, steps: list) -> str:
    """Two values (or a value and a constant of its shape) added, multiplied, subtracted or
    divided, the activation after."""
    node = choice.head
    src, dst, s, (top, left), (o_top, o_left) = _windows(ctx, node)
    operation = node.attrs.get("operation", node.op)
    if "constant" in node.attrs:  # NHWC, repeated for each image of the batch, made once
        constant = node.attrs["constant"]
        pixels = constant.shape[1:] == (s.height, s.width)  # else one number per channel
        other = ctx.packed.once((node.name, "constant", ctx.batch), lambda: np.ascontiguousarray(
            np.broadcast_to(constant.transpose(1, 2, 0).astype(ctx.dtype),
                            (ctx.batch, *constant.shape[1:], s.channels))))
        b_top = b_left = 0
        what = f"{operation} of a constant" + ("" if pixels else " per channel")
    else:
        value = node.inputs[1]
        other, (b_top, b_left) = ctx.ref(value), ctx.origin(value)
        pixels = ctx.shapes[value] == ctx.shapes[src]
        what = operation if pixels else f"{operation} (N, C, 1, 1) over the pixels"
    steps.append(Step("", Binary(
        a=ctx.ref(src), a_top=top, a_left=left, b=other, b_top=b_top, b_left=b_left,
        b_pixels=pixels, op=BINARY_OPS[operation], out=ctx.ref(dst), out_top=o_top,
        out_left=o_left, height=s.height, width=s.width, **ctx.epilogue(node),
        tasks=ctx.tasks)))
    return what


def _emit_concat(ctx: Context, choice: Choice, steps: list) -> str:
    """Each input not written in place by its producer copied into its slice of the
    channels, or into its rows or columns for a concatenation of the pixels."""
    node = choice.head
    _, dst, s, _, (o_top, o_left) = _windows(ctx, node)
    axis = node.attrs.get("axis", "channels")
    at, copies = 0, 0
    for value in node.inputs:
        part = ctx.shapes[value]
        if value not in ctx.slots:
            v_top, v_left = ctx.origin(value)
            steps.append(Step("", CopyChannels(
                x=ctx.ref(value), top=v_top, left=v_left, x_c0=0, count=part.channels,
                out=ctx.ref(dst), out_top=o_top + (at if axis == "height" else 0),
                out_left=o_left + (at if axis == "width" else 0),
                c0=at if axis == "channels" else 0, height=part.height, width=part.width,
                sh=1, sw=1, phase_step=0, row_step=1, col_step=1, tasks=ctx.tasks)))
            copies += 1
        at += part.batched(1)[1 + CONCAT_AXES.index(axis)]
    written = len(node.inputs) - copies
    along = "channel slices" if axis == "channels" else f"its {axis}"
    return (f"concat of {len(node.inputs)} ({written} written in place by their producers, "
            f"{copies} copied into {along})")


def _copy(ctx: Context, choice: Choice, steps: list, what: str, **changes) -> str:
    """A copy step (``CopyChannels``) of the node's input into its output, or into its
    concatenation's slice when that is its only reader: every channel of the whole window,
    each pixel once, unless ``changes`` say otherwise; returns ``what``, and where it goes."""
    node = choice.head
    src, dst, s, (top, left), (o_top, o_left) = _windows(ctx, node)
    args = dict(x=ctx.ref(src), top=top, left=left, x_c0=0, count=s.channels, out=ctx.ref(dst),
                out_top=o_top, out_left=o_left, c0=ctx.channel(dst), height=s.height,
                width=s.width, sh=1, sw=1, phase_step=0, row_step=1, col_step=1,
                tasks=ctx.tasks)
    steps.append(Step("", CopyChannels(**{**args, **changes})))
    return what + (" into its concatenation's slice" if dst in ctx.slots else "")


def _emit_nearest_upsample(ctx: Context, choice: Choice, steps: list) -> str:
    """A nearest upsampling by integer factors: each input pixel's channels repeated into
    its sh x sw output pixels (the upsampled value never stored apart when a concatenation
    reads it alone)."""
    s_in = ctx.shapes[choice.head.inputs[0]]
    sh, sw = choice.head.attrs["factors"]
    return _copy(ctx, choice, steps, f"nearest upsampling x{sh}x{sw}", height=s_in.height,
                 width=s_in.width, sh=sh, sw=sw)


def _emit_resize(ctx: Context, choice: Choice, steps: list) -> str:
    """ONNX's Resize, nearest or linear, through each axis's table of the input rows and
    columns every output pixel reads (``spec.resize_taps``)."""
    node = choice.head
    src, dst, s, (top, left), (o_top, o_left) = _windows(ctx, node)
    s_in, a = ctx.shapes[src], node.attrs
    scales = a["scales"] or (s.height / s_in.height, s.width / s_in.width)
    tables = [resize_taps(length, resized, scale, a["mode"], a["coordinates"], a["rounding"])
              for length, resized, scale in ((s_in.height, s.height, scales[0]),
                                             (s_in.width, s.width, scales[1]))]
    (rows0, rows1, row_w), (cols0, cols1, col_w) = tables
    steps.append(Step("", Resize(
        x=ctx.ref(src), top=top, left=left, height=s_in.height, width=s_in.width,
        out=ctx.ref(dst), out_top=o_top, out_left=o_left, rows0=rows0, rows1=rows1,
        row_w=row_w.astype(ctx.dtype), cols0=cols0, cols1=cols1, col_w=col_w.astype(ctx.dtype),
        tasks=ctx.tasks)))
    how = a["mode"] if a["mode"] == "linear" else f"nearest ({a['rounding']})"
    return (f"resize {s_in.height}x{s_in.width} -> {s.height}x{s.width}, {how}, "
            f"{a['coordinates']}")


def _emit_depth_to_space(ctx: Context, choice: Choice, steps: list) -> str:
    """Each input pixel's bh x bw groups of channels, each to its own output pixel."""
    s_in = ctx.shapes[choice.head.inputs[0]]
    bh, bw = choice.head.attrs["block"]
    return _copy(ctx, choice, steps, f"depth to space {bh}x{bw}", height=s_in.height,
                 width=s_in.width, sh=bh, sw=bw, phase_step=s_in.channels // (bh * bw))


def _emit_pixel_slice(ctx: Context, choice: Choice, steps: list) -> str:
    """A Slice of the pixels, every ``step``-th row and column from the first: the copy reads
    its input pixels ``step`` apart (YOLOv5's Focus: four such slices into one
    concatenation, no value apart)."""
    (h0, row_step, _), (w0, col_step, _) = choice.head.attrs["rows"], choice.head.attrs["cols"]
    top, left = ctx.origin(choice.head.inputs[0])
    return _copy(ctx, choice, steps, f"pixels from ({h0}, {w0}) every {row_step} x {col_step}",
                 top=top + h0, left=left + w0, row_step=row_step, col_step=col_step)


def _emit_channel_slice(ctx: Context, choice: Choice, steps: list) -> str:
    """Channels c0 .. c0 + count of a value (a Split's part, a Slice on the channels)."""
    c0, count = choice.head.attrs["c0"], ctx.shapes[choice.head.output].channels
    return _copy(ctx, choice, steps, f"channels {c0}..{c0 + count - 1}", x_c0=c0)


def _emit_gather(ctx: Context, choice: Choice, steps: list) -> str:
    """A Reshape or Transpose that moves values between the pixels and the channels: each
    output pixel's channels read from its first one's input element, ``delta`` apart (into
    its concatenation's slice when that is its only reader)."""
    node = choice.head
    src, dst = node.inputs[0], node.output
    s = ctx.shapes[dst]
    c, h, w = node.attrs["source"]
    dc, dh, dw = node.attrs["delta"]
    x_buf = ctx.buffer(src)
    cols, channels = x_buf.dims(1)[2], x_buf.channels
    n = np.arange(ctx.batch)[:, None]
    rows = (x_buf.pixel(n, h[None, :], w[None, :]) + c[None, :]).reshape(-1).astype(np.int64)
    q = np.arange(s.height * s.width)
    out_rows = ctx.pixels(dst, n, (q // s.width)[None, :], (q % s.width)[None, :])
    c_step = int(dc + (dh * cols + dw) * channels)
    steps.append(Step("", Gather(
        x=ctx.ref(src, True), rows=rows, c_step=c_step, out=ctx.ref(dst, True),
        out_rows=out_rows, channels=s.channels, tasks=ctx.tasks)))
    return (f"gather, each pixel's channels {c_step} apart in the input"
            + (" into its concatenation's slice" if dst in ctx.slots else ""))


def _emit_pool(ctx: Context, choice: Choice, steps: list) -> str:
    node = choice.head
    src, dst, _, (top, left), (o_top, o_left) = _windows(ctx, node)
    spec = pool_spec(node, ctx.shapes[src])
    (ph, pb), (pw, pr) = spec.pads
    (height, width), (ho, wo) = spec.input_size, spec.output_size
    geometry = dict(x=ctx.ref(src), top=top, left=left, height=height, width=width,
                    out=ctx.ref(dst), out_top=o_top, out_left=o_left, ho=ho, wo=wo,
                    kh=spec.kernel_size[0], kw=spec.kernel_size[1], sh=spec.stride[0],
                    sw=spec.stride[1], ph=ph, pw=pw, tasks=ctx.tasks)
    if choice.kind == "max_pool":
        steps.append(Step("", MaxPool(**geometry, dh=spec.dilation[0], dw=spec.dilation[1])))
    else:
        steps.append(Step("", AvgPool(**geometry, pad_bottom=pb, pad_right=pr,
                                      count_include_pad=spec.count_include_pad,
                                      divisor=spec.divisor_override or 0)))
    kh, kw = spec.kernel_size
    return f"{spec.kind} pool {kh}x{kw}/{spec.stride[0]}"


def _emit_global_average(ctx: Context, choice: Choice, steps: list) -> str:
    src, dst, _, (top, left), (o_top, o_left) = _windows(ctx, choice.head)
    s_in = ctx.shapes[src]
    maximum = choice.kind == "global_max"
    steps.append(Step("", GlobalAverage(
        x=ctx.ref(src), top=top, left=left, height=s_in.height, width=s_in.width,
        maximum=maximum, out=ctx.ref(dst), out_top=o_top, out_left=o_left, tasks=ctx.tasks)))
    return "global max" if maximum else "global average"


def _bias_or_zeros(node: Node, size: int, dtype) -> np.ndarray:
    bias = node.attrs["bias"]
    return np.zeros(size, dtype) if bias is None else bias


def _emit_softmax(ctx: Context, choice: Choice, steps: list) -> str:
    src, dst, s, (top, left), (o_top, o_left) = _windows(ctx, choice.head)
    steps.append(Step("", Softmax(
        x=ctx.ref(src), top=top, left=left, height=s.height, width=s.width, out=ctx.ref(dst),
        out_top=o_top, out_left=o_left, tasks=ctx.tasks)))
    return f"softmax over {s.channels} channels"


def _emit_squeeze_excite(ctx: Context, choice: Choice, steps: list) -> str:
    """A squeeze-and-excitation block as one step: each image's average, its two 1x1
    layers, and the input scaled by their gate."""
    gap, fc1, fc2, mul = choice.members
    src, dst = gap.inputs[0], mul.output
    s_in = ctx.shapes[src]
    channels, squeeze = s_in.channels, fc1.attrs["weight"].shape[0]
    # both (S, C): the second transposed, its loop along the channels
    weights = ctx.packed.once((gap.name, "squeeze_excite"), lambda: tuple(
        np.ascontiguousarray(w, ctx.dtype) for w in (
            fc1.attrs["weight"].reshape(squeeze, channels),
            fc2.attrs["weight"].reshape(channels, squeeze).T)))
    (top, left), (o_top, o_left) = ctx.origin(src), ctx.origin(dst)
    steps.append(Step("", SqueezeExcite(
        x=ctx.ref(src), top=top, left=left, height=s_in.height, width=s_in.width,
        w1=weights[0], b1=_bias_or_zeros(fc1, squeeze, ctx.dtype), **ctx.epilogue(fc1, "s_"),
        w2=weights[1], b2=_bias_or_zeros(fc2, channels, ctx.dtype), **ctx.epilogue(fc2),
        out=ctx.ref(dst),
        out_top=o_top, out_left=o_left, scratch=ctx.new_scratch(2 * channels + squeeze),
        tasks=ctx.tasks)))
    return (f"squeeze-excite {channels}->{squeeze}->{channels}, {fc1.act}, {fc2.act} "
            "(one step)")


def _emit_flatten(ctx: Context, choice: Choice, steps: list) -> str:
    """Pixels first, channels inside: to the NCHW order torch flattens in."""
    src, dst, _, (top, left), _ = _windows(ctx, choice.head)
    s_in = ctx.shapes[src]
    steps.append(Step("", Flatten(
        src=ctx.ref(src), top=top, left=left, out=ctx.ref(dst, True), channels=s_in.channels,
        height=s_in.height, width=s_in.width, tasks=ctx.tasks)))
    return "flatten (NCHW order)"


def _border_step(ctx: Context, value: str) -> Step | None:
    border = ctx.buffer(value).border
    if not any(border):
        return None
    return Step("", ZeroBorder(buf=ctx.ref(value, True), border=ctx.border(value),
                               tasks=ctx.tasks))


def _conv_label(spec) -> str:
    (kh, kw), (sh, _), (dh, dw) = spec.kernel_size, spec.stride, spec.dilation
    return f"{kh}x{kw}/{sh}" + (f" dilation {dh}" if max(dh, dw) > 1 else "")


def _emit_depthwise(ctx: Context, choice: Choice, steps: list) -> str:
    """A depthwise convolution: the 3x3 one (one filter per channel) with its vector rows and
    its output's border zeroed by it, any other after a border step."""
    node = choice.head
    src, dst = node.inputs[0], node.output
    spec = conv_spec(node, ctx.shapes[src])
    (ph, _), (pw, _) = spec.pads
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    ho, wo = spec.output_size
    weights, bias = _depthwise_weights(ctx, node, spec)
    top, left = ctx.origin(src, (ph, pw))
    o_top, o_left = ctx.origin(dst)
    common = dict(x=ctx.ref(src), top=top, left=left, w=weights, bias=bias, out=ctx.ref(dst),
                  out_top=o_top, out_left=o_left, ho=ho, wo=wo, sh=sh, sw=sw, dh=dh, dw=dw,
                  **ctx.epilogue(node), tasks=ctx.tasks)
    if choice.kind == "depthwise_3x3":
        steps.append(Step("", Depthwise3x3(**common, block=ctx.kernels.depthwise_block(
            ctx.dtype), out_border=ctx.border(dst))))
    else:
        kh, kw = spec.kernel_size
        steps.append(Step("", Depthwise(**common, kh=kh, kw=kw,
                                        multiplier=spec.out_channels // spec.in_channels,
                                        block=ctx.kernels.depthwise_block(ctx.dtype))))
    return f"depthwise {_conv_label(spec)} (NHWC, channels in vectors)"


def _emit_gemm(ctx: Context, choice: Choice, steps: list) -> str:
    """A convolution on the GEMM tiles: a table of its output pixels' first inputs, one of
    the kernel's taps."""
    k, node = ctx.kernels, choice.head
    src, dst = node.inputs[0], node.output
    spec = conv_spec(node, ctx.shapes[src])
    (ph, _), (pw, _) = spec.pads
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    kh, kw = spec.kernel_size
    ho, wo = spec.output_size
    n, oh, ow = np.meshgrid(np.arange(ctx.batch), np.arange(ho), np.arange(wo), indexing="ij")
    x_buf = ctx.buffer(src)
    rows = x_buf.pixel(n, oh * sh - ph, ow * sw - pw).reshape(-1).astype(np.int64)
    cols = x_buf.dims(1)[2]
    taps = np.array([(i * dh * cols + j * dw) * spec.in_channels for i in range(kh)
                     for j in range(kw)], np.int64)
    c_in = spec.in_channels_per_group
    grid = k.schedule(ctx.batch * ho * wo, kh * kw * c_in, spec.out_channels_per_group,
                      spec.groups, ctx.dtype, ctx.tasks, choice.wide, c_in)._asdict()
    if dw == 1 and spec.groups == 1 and kw > 1 and grid["chunk"] >= c_in:
        # a kernel row's taps are adjacent pixels, whose channels lie end to end in the input
        # as their weights do in the panel: one tap of kw * C channels per row, so that the
        # tiles' reductions are longer and their loops over the taps shorter
        taps, c_in = taps[::kw].copy(), kw * c_in
        grid["chunk"] = c_in
    steps.append(Step("", Conv(
        x=ctx.ref(src, True), rows=rows, taps=taps, c_in=c_in, groups=spec.groups,
        **_packed(ctx, node, spec.groups, choice.wide), out=ctx.ref(dst, True),
        out_rows=ctx.pixels(dst, n, oh, ow), out_per_group=spec.out_channels_per_group,
        **_bias(node.attrs["bias"], ctx.dtype), **ctx.epilogue(node),
        **_residual(ctx, node, n, oh, ow), **_tile(choice), **grid,
        out_border=ctx.border(dst))))
    kind = "pointwise" if spec.kernel_size == (1, 1) else "conv"
    groups = f", {spec.groups} groups" if spec.groups > 1 else ""
    return f"{kind} {_conv_label(spec)}{groups}{_plus_residual(node)} (register tiles)"


def _emit_transpose_gemm(ctx: Context, choice: Choice, steps: list) -> str:
    """A transposed convolution whose kernel is its stride: for each output phase (i, j), a
    pointwise GEMM of the input by the weights' tap (i, j), each input pixel writing output
    pixel (kh h + i, kw w + j) through the tiles' table: no scatter, no zero-stuffed input,
    every output pixel written once (the bias and the activation in the epilogue)."""
    k, node = ctx.kernels, choice.head
    src, dst = node.inputs[0], node.output
    s_in = ctx.shapes[src]
    weight = node.attrs["weight"]  # (C_out, C_in, kh, kw)
    c_out, c_in, kh, kw = weight.shape
    n, h, w = np.meshgrid(np.arange(ctx.batch), np.arange(s_in.height), np.arange(s_in.width),
                          indexing="ij")
    rows = ctx.buffer(src).pixel(n, h, w).reshape(-1).astype(np.int64)
    grid = k.schedule(rows.size, c_in, c_out, 1, ctx.dtype, ctx.tasks, choice.wide,
                      c_in)._asdict()
    for i in range(kh):
        for j in range(kw):
            packed = ctx.packed.once((node.name, i, j, choice.wide), lambda i=i, j=j: k.pack(
                np.ascontiguousarray(weight[:, :, i:i + 1, j:j + 1]), 1, ctx.dtype,
                choice.wide))
            out_rows = ctx.pixels(dst, n, h * kh + i, w * kw + j)
            steps.append(Step("", Conv(
                x=ctx.ref(src, True), rows=rows, taps=np.zeros(1, np.int64), c_in=c_in,
                groups=1, w=packed[0], panel=packed[1], out=ctx.ref(dst, True),
                out_rows=out_rows, out_per_group=c_out, **_bias(node.attrs["bias"], ctx.dtype),
                **ctx.epilogue(node), res=ctx.ref(dst, True), res_rows=out_rows, res_mode=0,
                **_tile(choice), **grid, out_border=ctx.border(dst))))
    return (f"transposed conv {kh}x{kw}/{kh}x{kw} as {kh * kw} pointwise GEMMs, one per "
            "output phase (register tiles)")


def _emit_transpose_conv(ctx: Context, choice: Choice, steps: list) -> str:
    """Any transposed convolution (strides, pads, dilations, output padding, groups) as one
    convolution per output phase on the GEMM tiles (``spec.transposed_phases``): the phase's
    output pixels read the input at their taps' offsets, its zeros in the input's border, and
    write their own pixels through the tiles' table (no col2im, no zero-stuffed input)."""
    k, node = ctx.kernels, choice.head
    src, dst = node.inputs[0], node.output
    s_in, weight = ctx.shapes[src], node.attrs["weight"]  # (C_out, C_in / groups, kh, kw)
    geometry = deconv_geometry(node)
    groups, (sh, sw) = geometry["groups"], geometry["stride"]
    c_out, c_group = weight.shape[0], weight.shape[1]
    rows_axis, cols_axis = (transposed_phases(n, *axis)[3] for n, axis in zip(
        (s_in.height, s_in.width), deconv_axes(node)))
    x_buf = ctx.buffer(src)
    cols = x_buf.dims(1)[2]
    for ph, count_h, taps_h in rows_axis:
        for pw, count_w, taps_w in cols_axis:
            pairs = [(i, oi, j, oj) for i, oi in taps_h for j, oj in taps_w]

            def phase_weights(taps_h=taps_h, taps_w=taps_w, pairs=pairs):
                sub = (weight[:, :, _progression(taps_h), _progression(taps_w)] if pairs
                       else np.zeros((c_out, c_group, 1, 1), weight.dtype))
                return k.pack(sub, groups, ctx.dtype, choice.wide)

            # no tap: a zero weight, the bias alone
            w, panel = ctx.packed.once((node.name, "phase", ph, pw, choice.wide), phase_weights)
            offsets = [(oi, oj) for _, oi, _, oj in pairs] or [(0, 0)]
            taps = np.array([(oi * cols + oj) * s_in.channels for oi, oj in offsets], np.int64)
            n, q, r = np.meshgrid(np.arange(ctx.batch), np.arange(count_h), np.arange(count_w),
                                  indexing="ij")
            at = (q, r) if pairs else (0 * q, 0 * r)  # a tapless phase reads pixel (0, 0)
            rows = x_buf.pixel(n, *at).reshape(-1).astype(np.int64)
            out_rows = ctx.pixels(dst, n, ph + q * sh, pw + r * sw)
            grid = k.schedule(rows.size, taps.size * c_group, c_out // groups, groups,
                              ctx.dtype, ctx.tasks, choice.wide, c_group)._asdict()
            steps.append(Step("", Conv(
                x=ctx.ref(src, True), rows=rows, taps=taps, c_in=c_group, groups=groups, w=w,
                panel=panel, out=ctx.ref(dst, True), out_rows=out_rows,
                out_per_group=c_out // groups, **_bias(node.attrs["bias"], ctx.dtype),
                **ctx.epilogue(node), res=ctx.ref(dst, True), res_rows=out_rows, res_mode=0,
                **_tile(choice), **grid, out_border=ctx.border(dst))))
    kh, kw = weight.shape[2:]
    return (f"transposed conv {kh}x{kw}/{sh}x{sw} as {len(rows_axis) * len(cols_axis)} "
            "convolutions, one per output phase (register tiles)")


def _progression(taps) -> slice:
    """A phase's taps ``(i, offset)``, every stride / gcd(stride, dilation)-th of the
    kernel, as the slice of their indices i (a view, where a list would copy)."""
    first, last = taps[0][0], taps[-1][0]
    step = taps[1][0] - first if len(taps) > 1 else 1
    return slice(first, last + 1, step)


def _tile(choice: Choice) -> dict:
    """The choice's GEMM tile as a kernel's ``wide, mr, nr``."""
    return dict(wide=choice.wide, mr=choice.mr, nr=choice.nr)


def _plus_residual(node: Node) -> str:
    return " + residual" if node.attrs.get("residual") else ""


def _depthwise_weights(ctx: Context, node: Node, spec) -> tuple[np.ndarray, np.ndarray]:
    """A depthwise layer's weights as (taps, C) and its bias (zeros where it has none)."""
    kh, kw = spec.kernel_size
    weights = ctx.packed.once(node.name, lambda: np.ascontiguousarray(
        node.attrs["weight"].reshape(spec.out_channels, kh * kw).T))
    bias = node.attrs["bias"]
    return weights, np.zeros(spec.out_channels, ctx.dtype) if bias is None else bias


def _packed(ctx: Context, node: Node, groups: int, is_wide: bool, prefix: str = "") -> dict:
    """A convolution's (or a linear layer's, as a 1x1's) weights in the panels of its tile
    (``kernels.pack``), packed once: the kernel's ``w`` and ``panel`` (``prefix``ed)."""
    weight = node.attrs["weight"]
    packed = ctx.packed.once((node.name, is_wide), lambda: ctx.kernels.pack(
        weight if weight.ndim == 4 else weight[:, :, None, None], groups, ctx.dtype, is_wide))
    return {f"{prefix}w": packed[0], f"{prefix}panel": packed[1]}


def _emit_separable(ctx: Context, choice: Choice, steps: list) -> str:
    """A depthwise 3x3 layer and the pointwise one after it as one kernel
    (``nhwc.separable``): a few depthwise rows at a time (``choice.rows_per_step``) into a
    task's scratch, in cache, and the pointwise tiles from there."""
    k = ctx.kernels
    dw_node, pw_node = choice.members
    src, dst = dw_node.inputs[0], pw_node.output
    spec = conv_spec(dw_node, ctx.shapes[src])
    pw_spec = conv_spec(pw_node, ctx.shapes[dw_node.output])
    (ph, _), (pw, _) = spec.pads
    ho, wo = spec.output_size
    channels, out_channels = spec.in_channels, pw_spec.out_channels
    weights, dw_bias = _depthwise_weights(ctx, dw_node, spec)
    per_step = choice.rows_per_step
    top, left = ctx.origin(src, (ph, pw))
    n, oh, ow = np.meshgrid(np.arange(ctx.batch), np.arange(ho), np.arange(wo), indexing="ij")
    out_rows = ctx.pixels(dst, n, oh, ow)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    steps.append(Step("", Separable(
        x=ctx.ref(src), top=top, left=left, dw_w=weights, dw_bias=dw_bias,
        **ctx.epilogue(dw_node, "dw_"), sh=sh, sw=sw, dh=dh, dw=dw, ho=ho, wo=wo,
        block=k.depthwise_block(ctx.dtype), **_packed(ctx, pw_node, 1, choice.wide),
        panels=-(-out_channels // choice.nr), out=ctx.ref(dst, True), out_rows=out_rows,
        out_channels=out_channels, **_bias(pw_node.attrs["bias"], ctx.dtype),
        **ctx.epilogue(pw_node), **_residual(ctx, pw_node, n, oh, ow), **_tile(choice),
        scratch=ctx.new_scratch(per_step * wo * channels),
        s_rows=np.arange(out_rows.size, dtype=np.int64) * channels, taps=np.zeros(1, np.int64),
        rows_per_step=per_step, out_border=ctx.border(dst), tasks=ctx.tasks)))
    return (f"depthwise 3x3/{sh}" + (f" dilation {dh}" if dh > 1 else "")
            + f" + pointwise 1x1{_plus_residual(pw_node)} (fused, register tiles)")


def _emit_expanded_separable(ctx: Context, choice: Choice, steps: list) -> str:
    """An expand, depthwise and project layer as one kernel
    (``nhwc.separable.expanded_separable``): the expanded rows into a slab in the task's
    scratch, the depthwise rows from there into another, the project tiles from that."""
    k = ctx.kernels
    expand, dw_node, pw_node = choice.members
    src, dst = expand.inputs[0], pw_node.output
    e_spec = conv_spec(expand, ctx.shapes[src])
    spec = conv_spec(dw_node, ctx.shapes[expand.output])
    pw_spec = conv_spec(pw_node, ctx.shapes[dw_node.output])
    height, width = e_spec.output_size
    c_in, expanded, out_channels = e_spec.in_channels, e_spec.out_channels, pw_spec.out_channels
    stride = spec.stride[0]
    ho, wo = spec.output_size
    per_step = choice.rows_per_step
    capacity = choice.slab_height
    e_mr, e_nr = k.tile_shape(ctx.dtype, choice.expand_wide)
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
        **_packed(ctx, expand, 1, choice.expand_wide, "e_"), e_panels=-(-expanded // e_nr),
        expanded=expanded, **_bias(expand.attrs["bias"], ctx.dtype, "e_"),
        **ctx.epilogue(expand, "e_"), e_wide=choice.expand_wide, e_mr=e_mr, e_nr=e_nr,
        slab=ctx.new_scratch(capacity * (width + 2) * expanded),
        slab_rows=slab_rows, dw_w=weights, dw_bias=dw_bias, **ctx.epilogue(dw_node, "dw_"),
        stride=stride, ho=ho, wo=wo, block=k.depthwise_block(ctx.dtype),
        **_packed(ctx, pw_node, 1, choice.wide), panels=-(-out_channels // choice.nr),
        out=ctx.ref(dst, True), out_rows=out_rows, out_channels=out_channels,
        **_bias(pw_node.attrs["bias"], ctx.dtype), **ctx.epilogue(pw_node),
        **_residual(ctx, pw_node, n, oh, ow), **_tile(choice),
        scratch=ctx.new_scratch(per_step * wo * expanded),
        s_rows=np.arange(out_rows.size, dtype=np.int64) * expanded, taps=np.zeros(1, np.int64),
        rows_per_step=per_step, out_border=ctx.border(dst), tasks=ctx.tasks)))
    return (f"pointwise 1x1 + depthwise 3x3/{stride} + pointwise 1x1"
            f"{_plus_residual(pw_node)} (fused, register tiles)")


def _emit_winograd(ctx: Context, choice: Choice, steps: list) -> str:
    """A 3x3 stride-1 convolution as Winograd F(2x2, 3x3), ``choice.block`` tiles at a
    time."""
    k, node = ctx.kernels, choice.head
    src, dst = node.inputs[0], node.output
    spec = conv_spec(node, ctx.shapes[src])
    (ph, _), (pw, _) = spec.pads
    ho, wo = spec.output_size
    c, o = spec.in_channels, spec.out_channels
    block, is_wide = choice.block, choice.wide
    packed = ctx.packed.once((node.name, "winograd", is_wide), lambda: k.winograd_filters(
        node.attrs["weight"], ctx.dtype, is_wide))
    bias = node.attrs["bias"]
    bias = np.zeros(o, ctx.dtype) if bias is None else bias
    top, left = ctx.origin(src, (ph, pw))
    o_top, o_left = ctx.origin(dst)
    residual, mode = _residual_source(node)
    r_top, r_left = ctx.origin(residual)
    tiles = np.arange(block, dtype=np.int64)
    w, panel, panels = packed
    steps.append(Step("", Winograd(
        x=ctx.ref(src), top=top, left=left, w=w, panel=panel, panels=panels, channels=c,
        bias=bias, out=ctx.ref(dst), out_top=o_top, out_left=o_left, ho=ho, wo=wo,
        **ctx.epilogue(node), res=ctx.ref(residual), res_top=r_top, res_left=r_left,
        res_channel=ctx.channel(residual), res_mode=mode,
        v=ctx.new_scratch(16 * block * c), m=ctx.new_scratch(16 * block * o), rows=tiles * c,
        m_rows=tiles * o, taps=np.zeros(1, np.int64), block=block, is_wide=is_wide,
        mr=choice.mr, nr=choice.nr, out_border=ctx.border(dst), tasks=ctx.tasks)))
    return f"conv 3x3/1{_plus_residual(node)} as Winograd F(2x2, 3x3) (register tiles)"


def _bias(bias, dtype, prefix: str = "") -> dict:
    """A kernel's ``bias`` and ``has_bias`` (``prefix``ed for a fused kernel's inner layer)."""
    return {f"{prefix}bias": np.zeros(1, dtype) if bias is None else bias,
            f"{prefix}has_bias": bias is not None}


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


def _emit_linear(ctx: Context, choice: Choice, steps: list) -> str:
    """A linear layer as a 1x1 convolution whose pixels are the batch."""
    node = choice.head
    src, dst = node.inputs[0], node.output
    weight = node.attrs["weight"]
    out_features, in_features = weight.shape
    is_wide = choice.wide
    images = np.arange(ctx.batch)
    rows = ctx.buffer(src).pixel(images, 0, 0).astype(np.int64)
    out_rows = ctx.buffer(dst).pixel(images, 0, 0).astype(np.int64)
    steps.append(Step("", Conv(  # as a 1x1 convolution of one pixel per image
        x=ctx.ref(src, True), rows=rows, taps=np.zeros(1, np.int64), c_in=in_features,
        groups=1, **_packed(ctx, node, 1, is_wide), out=ctx.ref(dst, True), out_rows=out_rows,
        out_per_group=out_features, **_bias(node.attrs["bias"], ctx.dtype),
        **ctx.epilogue(node), res=ctx.ref(dst, True), res_rows=out_rows, res_mode=0,
        **_tile(choice), **ctx.kernels.schedule(
            ctx.batch, in_features, out_features, 1, ctx.dtype, ctx.tasks, is_wide)._asdict(),
        out_border=ctx.border(dst))))
    return f"linear {weight.shape[1]}->{weight.shape[0]} (register tiles)"


#: Each kind of choice's emitter (``selection.KINDS`` but "alias", which runs nothing).
EMITTERS = {
    "gemm": _emit_gemm, "transpose_gemm": _emit_transpose_gemm,
    "transpose_conv": _emit_transpose_conv, "winograd": _emit_winograd,
    "depthwise_3x3": _emit_depthwise, "depthwise": _emit_depthwise, "separable": _emit_separable,
    "expanded_separable": _emit_expanded_separable, "linear": _emit_linear,
    "affine": _emit_affine, "binary": _emit_binary, "concat": _emit_concat,
    "max_pool": _emit_pool, "avg_pool": _emit_pool, "global_average": _emit_global_average,
    "global_max": _emit_global_average,
    "nearest_upsample": _emit_nearest_upsample, "channel_slice": _emit_channel_slice,
    "depth_to_space": _emit_depth_to_space, "squeeze_excite": _emit_squeeze_excite,
    "resize": _emit_resize, "softmax": _emit_softmax, "pixel_slice": _emit_pixel_slice,
    "flatten": _emit_flatten, "gather": _emit_gather,
}
#: The kinds whose kernels do not zero their output's border: a border step comes first.
_BORDER_FIRST = {"affine", "binary", "concat", "max_pool", "avg_pool", "global_average",
                 "global_max",
                 "flatten", "depthwise", "nearest_upsample", "channel_slice", "depth_to_space",
                 "squeeze_excite", "resize", "softmax", "pixel_slice", "gather"}


def emit(ctx: Context, choice: Choice, steps: list) -> str:
    """Append ``choice``'s steps to ``steps`` (a zero-border step first where its kernel does
    not zero its output's border); returns its kernel's label, for ``print(plan)`` and the
    profile."""
    if choice.kind in _BORDER_FIRST:
        border_step = _border_step(ctx, choice.tail.output)
        if border_step is not None:
            steps.append(border_step)
    return EMITTERS[choice.kind](ctx, choice, steps)
