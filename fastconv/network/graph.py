"""The network as the importers leave it: nodes in topological order, each reading named
values and writing one.

Every value is an activation of shape (N, C, H, W) or, after a flatten or a linear layer,
(N, F); an ONNX value of shape (N, C, L) is the plan's (N, C, 1, L). The graph holds no input size: :func:`infer_shapes` derives every value's shape from
the input's, with the geometry from :class:`~fastconv.spec.ConvSpec` and
:class:`~fastconv.spec.PoolSpec`, and its errors name the node and the shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..spec import ConvSpec, PoolSpec, transposed_phases

INPUT = "input"


@dataclass(frozen=True)
class Activation:
    """An element-wise activation: a kind of ``fastconv.kernels.epilogue.ACTIVATIONS`` and its
    constants."""

    kind: str = "none"
    lo: float = -math.inf
    hi: float = math.inf
    alpha: float = 0.0
    beta: float = 0.0

    @property
    def is_clamp(self) -> bool:
        return self.kind == "clamp"

    def then(self, other: "Activation") -> "Activation | None":
        """This activation followed by ``other`` as one, or None if they do not compose."""
        if self.kind == "none":
            return other
        if other.kind == "none":
            return self
        if self.is_clamp and other.is_clamp:
            lo, hi = max(self.lo, other.lo), min(self.hi, other.hi)
            return Activation("clamp", lo, max(lo, hi))
        return None

    def __str__(self) -> str:
        if self.kind == "clamp":
            if self.lo == 0 and self.hi == math.inf:
                return "relu"
            if self.lo == 0 and self.hi == 6:
                return "relu6"
            return f"clamp({self.lo:g}, {self.hi:g})"
        if self.kind in ("leaky", "hardsigmoid"):
            return f"{self.kind}({self.alpha:g}" + (f", {self.beta:g})" if self.kind ==
                                                     "hardsigmoid" else ")")
        return self.kind


NONE = Activation()
RELU = Activation("clamp", 0.0, math.inf)
RELU6 = Activation("clamp", 0.0, 6.0)
HARDSIGMOID = Activation("hardsigmoid", alpha=1 / 6, beta=0.5)  # torch's
SILU = Activation("silu")
HARDSWISH = Activation("hardswish")


@dataclass
class Node:
    """One operation.

    ``op`` is one of ``conv`` (attrs: ``spec`` without input size, ``weight`` OIHW, ``bias``),
    ``deconv`` (a transposed convolution: ``weight`` as a grouped convolution's (C_out,
    C_in / groups, kh, kw), ``bias``, ``stride``, and :func:`deconv_geometry`'s ``pads``,
    ``dilation``, ``output_padding``, ``groups``),
    ``upsample`` (nearest, by integer ``factors`` (sh, sw): each pixel repeated sh x sw times),
    ``resize`` (ONNX's Resize, nearest or linear, to ``size`` (H', W'): ``mode``,
    ``coordinates``, ``rounding``, and the ``scales`` (sh, sw) its coordinates divide by, or
    None for H' / H and W' / W),
    ``depth_to_space`` (ONNX's DepthToSpace, mode DCR, of a ``block`` (bh, bw): input channel
    ``(i * bw + j) * C + c`` of pixel (h, w) to channel c of pixel (h * bh + i, w * bw + j)),
    ``slice`` (``channels`` channels from ``c0``: a Split's part, a Slice on the channels),
    ``pixel_slice`` (a Slice of the pixels: ``rows`` and ``cols`` (first, step, count)),
    ``linear`` (``weight`` (out, in), ``bias``), ``batchnorm`` (``scale``, ``shift``: the
    inference-time affine, per channel; in a training graph, its ``channels`` alone),
    ``act``, ``add`` and ``mul`` (two values of one shape, or the second (N, C, 1, 1) against
    the first (N, C, H, W): broadcast over the pixels), ``elementwise`` (``operation``, a
    name of ``kernels.epilogue.BINARY_OPS``, of its input and a second value as ``add``'s, or
    its input and a ``constant`` of its shape, (C, H, W), or of one number per channel, (C, 1,
    1)), ``gather`` (a Reshape or Transpose of an ONNX value, from (C, H, W) ``from_shape`` to
    ``shape``: output pixel p's channel c reads input element ``source[:,
    p] + c * delta`` in (c, h, w) coordinates), ``concat`` (along the channels, or the
    ``axis`` "height" or "width"), ``maxpool`` / ``avgpool`` (``pool``: a PoolSpec
    without input size), ``gap`` (global average pool, to (N, C, 1, 1)), ``gmp`` (global max
    pool), ``softmax`` (over the channels, or an (N, F) value's features), ``flatten`` (to (N,
    F), in NCHW order), ``unflatten`` ((N, F) to (N, F, 1, 1)) and ``identity``. Nodes that
    compute may carry a fused ``act`` (an :class:`Activation`, applied last) and, for
    ``conv``, a ``residual``: a value added before the activation (``residual_after`` False)
    or after it. A torch layer's node names the layer (``module``, for its parameters); in a
    training graph, an ``identity`` may be a dropout (its probability ``dropout``), and an
    ``act`` of ``torch.clamp`` is ``closed`` (its gradient passes at the bounds).
    """

    op: str
    inputs: tuple[str, ...]
    output: str
    name: str
    attrs: dict = field(default_factory=dict)

    @property
    def act(self) -> Activation:
        return self.attrs.get("act", NONE)


@dataclass
class Graph:
    """Nodes in topological order; ``output`` names the network's result."""

    nodes: list[Node]
    output: str
    dtype: np.dtype
    source: str = ""
    # the input as a model file declares it: its name and (C, H, W), None where symbolic
    input_name: str = ""
    declared: tuple | None = None
    # a plan segment of an ONNX model may read more values than INPUT, and write more than
    # ``output``: these (each (N, C, H, W) at its edge)
    extra_inputs: tuple = ()
    extra_outputs: tuple = ()

    @property
    def outputs(self) -> tuple:
        """Every value the graph gives, ``output`` first."""
        return (self.output, *self.extra_outputs)

    def producer(self, value: str) -> Node | None:
        for node in self.nodes:
            if node.output == value:
                return node
        return None

    def consumers(self, value: str) -> list[Node]:
        found = [n for n in self.nodes if value in n.inputs]
        found += [n for n in self.nodes if n.attrs.get("residual") == value and n not in found]
        return found

    def replace_value(self, old: str, new: str) -> None:
        """Every read of ``old`` now reads ``new``."""
        for node in self.nodes:
            node.inputs = tuple(new if v == old else v for v in node.inputs)
            if node.attrs.get("residual") == old:
                node.attrs["residual"] = new
        if self.output == old:
            self.output = new
        self.extra_outputs = tuple(new if v == old else v for v in self.extra_outputs)

    def copy(self) -> "Graph":
        return replace(self, nodes=[replace(n, attrs=dict(n.attrs)) for n in self.nodes])


@dataclass(frozen=True)
class Shape:
    """A value's shape without the batch: (C, H, W), or (F,) when ``flat``."""

    channels: int
    height: int = 1
    width: int = 1
    flat: bool = False

    def batched(self, n: int) -> tuple[int, ...]:
        if self.flat:
            return (n, self.channels)
        return (n, self.channels, self.height, self.width)

    def __str__(self) -> str:
        return (str(list(self.batched(1))[1:]) if self.flat
                else f"[{self.channels}, {self.height}, {self.width}]")


#: The axes a concatenation may join, in the order of (C, H, W).
CONCAT_AXES = ("channels", "height", "width")


def broadcasts(small: Shape, full: Shape) -> bool:
    """Whether ``small`` (N, C, 1, 1) broadcasts over the pixels of ``full`` (N, C, H, W)."""
    return (not small.flat and not full.flat and small.channels == full.channels
            and (small.height, small.width) == (1, 1))


def channel_steps(coords: np.ndarray):
    """A gather's ``source`` and ``delta`` from ``coords`` (3, C, P), the (c, h, w) input
    element of each output channel and pixel: where every pixel's channels are a constant
    step apart, ``coords[:, c, p] = source[:, p] + c * delta`` with ``delta`` not negative;
    None otherwise."""
    channels = coords.shape[1]
    delta = coords[:, 1, 0] - coords[:, 0, 0] if channels > 1 else np.zeros(3, np.int64)
    steps = coords[:, :1, :] + delta[:, None, None] * np.arange(channels)[None, :, None]
    if delta.min() < 0 or not np.array_equal(coords, steps):
        return None
    return np.ascontiguousarray(coords[:, 0, :], np.int64), tuple(int(d) for d in delta)


def gather_coords(node: Node) -> np.ndarray:
    """A gather node's input element (c, h, w) of each output channel and pixel: (3, C, P)."""
    channels = node.attrs["shape"][0]
    return (node.attrs["source"][:, None, :]
            + np.asarray(node.attrs["delta"])[:, None, None] * np.arange(channels)[None, :, None])


def _shown(shape: Shape, batch: int) -> str:
    return str(list(shape.batched(batch)))


def deconv_geometry(node: Node) -> dict:
    """A transposed convolution's ``stride``, ``pads`` ((top, bottom), (left, right)),
    ``dilation``, ``output_padding`` and ``groups`` (defaults: none of them)."""
    a = node.attrs
    return dict(stride=tuple(a["stride"]),
                pads=tuple(map(tuple, a.get("pads", ((0, 0), (0, 0))))),
                dilation=tuple(a.get("dilation", (1, 1))),
                output_padding=tuple(a.get("output_padding", (0, 0))), groups=a.get("groups", 1))


def deconv_axes(node: Node) -> list[tuple]:
    """Each axis's ``spec.transposed_phases`` arguments but its size: (kernel, stride, pads,
    dilation, output_padding)."""
    g = deconv_geometry(node)
    kernel = node.attrs["weight"].shape[2:]
    return [(kernel[i], g["stride"][i], g["pads"][i], g["dilation"][i], g["output_padding"][i])
            for i in (0, 1)]


def is_shuffle_deconv(node: Node) -> bool:
    """A transposed convolution whose kernel is its stride, without pads, dilation, output
    padding or groups: each input pixel writes its own kh x kw output pixels."""
    g = deconv_geometry(node)
    return (tuple(node.attrs["weight"].shape[2:]) == g["stride"]
            and g["pads"] == ((0, 0), (0, 0)) and g["dilation"] == (1, 1)
            and g["output_padding"] == (0, 0) and g["groups"] == 1)


def conv_spec(node: Node, shape: Shape) -> ConvSpec:
    """The node's ConvSpec for an input of ``shape``."""
    return node.attrs["spec"].with_input_size(shape.height, shape.width)


def pool_spec(node: Node, shape: Shape) -> PoolSpec:
    """The node's PoolSpec for an input of ``shape``."""
    pool = node.attrs["pool"]
    return replace(pool, channels=shape.channels, padding=pool.pads,
                   input_size=(shape.height, shape.width))


def infer_shapes(graph: Graph, input_shape: tuple[int, ...],
                 extra_shapes: dict | None = None) -> dict[str, Shape]:
    """Every value's shape for an input of ``input_shape`` (N, C, H, W) (and the graph's
    extra inputs of ``extra_shapes``, name -> (N, C, H, W), of the same batch).

    Raises
    ------
    ValueError
        A node that cannot take the shape its input has, naming the node and the shapes.
    """
    batch = input_shape[0]
    shapes = {INPUT: Shape(*input_shape[1:])}
    for name, shape in (extra_shapes or {}).items():
        shapes[name] = Shape(*shape[1:])
    for node in graph.nodes:
        shape = shapes[node.inputs[0]]
        shapes[node.output] = _node_shape(node, shape, shapes, batch)
        residual = node.attrs.get("residual")
        if residual is not None and shapes[residual] != shapes[node.output]:
            raise ValueError(f"{node.name}: the size of tensor a "
                             f"({_shown(shapes[node.output], batch)}) must match the size of "
                             f"tensor b ({_shown(shapes[residual], batch)})")
    return shapes


def _node_shape(node: Node, shape: Shape, shapes: dict, batch: int) -> Shape:
    op, a = node.op, node.attrs
    if op == "conv":
        spec = a["spec"]
        if shape.flat:
            raise ValueError(f"{node.name} expects a 4-D input (N, C, H, W), but got input of "
                             f"size {_shown(shape, batch)}")
        if shape.channels != spec.in_channels:
            raise ValueError(
                f"{node.name}: given groups={spec.groups}, weight of size "
                f"{list(spec.weight_shape)}, expected input{_shown(shape, batch)} to have "
                f"{spec.in_channels} channels, but got {shape.channels} channels instead")
        try:
            out = conv_spec(node, shape).output_size
        except ValueError as exc:
            raise ValueError(f"{node.name} on input of size {_shown(shape, batch)}: {exc}") \
                from None
        return Shape(spec.out_channels, *out)
    if op == "deconv":
        geometry = deconv_geometry(node)
        c_out, c_in = a["weight"].shape[0], a["weight"].shape[1] * geometry["groups"]
        if shape.flat or shape.channels != c_in:
            raise ValueError(f"{node.name}: expected input of {c_in} channels (N, C, H, W), but "
                             f"got input of size {_shown(shape, batch)}")
        sizes = [transposed_phases(n, *axis)[0] for n, axis in zip(
            (shape.height, shape.width), deconv_axes(node))]
        if min(sizes) < 1:
            raise ValueError(f"{node.name} on input of size {_shown(shape, batch)}: the output "
                             f"would be {sizes[0]} x {sizes[1]}")
        return Shape(c_out, *sizes)
    if op == "slice":
        if shape.flat or a["c0"] + a["channels"] > shape.channels:
            raise ValueError(f"{node.name}: channels {a['c0']} to {a['c0'] + a['channels']} of "
                             f"input of size {_shown(shape, batch)}")
        return Shape(a["channels"], shape.height, shape.width)
    if op == "upsample":
        if shape.flat:
            raise ValueError(f"{node.name} expects a 4-D input, but got input of size "
                             f"{_shown(shape, batch)}")
        sh, sw = a["factors"]
        return Shape(shape.channels, shape.height * sh, shape.width * sw)
    if op == "resize":
        if shape.flat:
            raise ValueError(f"{node.name} expects a 4-D input, but got input of size "
                             f"{_shown(shape, batch)}")
        return Shape(shape.channels, *a["size"])
    if op == "depth_to_space":
        bh, bw = a["block"]
        if shape.flat or shape.channels % (bh * bw):
            raise ValueError(f"{node.name}: the channels of input of size {_shown(shape, batch)} "
                             f"are not a multiple of the block's {bh} x {bw}")
        return Shape(shape.channels // (bh * bw), shape.height * bh, shape.width * bw)
    if op == "linear":
        features = a["weight"].shape[1]
        if not shape.flat and (shape.height, shape.width) != (1, 1):
            raise ValueError(f"{node.name} expects (N, {features}) input, but got input of "
                             f"size {_shown(shape, batch)}: flatten it first")
        if shape.channels != features:
            raise ValueError(f"{node.name}: mat1 and mat2 shapes cannot be multiplied "
                             f"({batch}x{shape.channels} and {features}x{a['weight'].shape[0]})")
        return Shape(a["weight"].shape[0], flat=True)
    if op in ("maxpool", "avgpool"):
        if shape.flat:
            raise ValueError(f"{node.name} expects a 4-D input, but got input of size "
                             f"{_shown(shape, batch)}")
        try:
            spec = pool_spec(node, shape)
        except ValueError as exc:
            raise ValueError(f"{node.name} on input of size {_shown(shape, batch)}: {exc}") \
                from None
        return Shape(shape.channels, *spec.output_size)
    if op == "batchnorm":  # per channel, or per feature of (N, F); or one for all
        channels = a["scale"].shape[0] if "scale" in a else a["channels"]
        if channels not in (1, shape.channels):
            raise ValueError(f"{node.name} expects {channels} channels, but got input of size "
                             f"{_shown(shape, batch)}")
        return shape
    if op == "pixel_slice":  # rows and cols: (first, step, count) each
        if shape.flat or a["rows"][0] + (a["rows"][2] - 1) * a["rows"][1] >= shape.height or (
                a["cols"][0] + (a["cols"][2] - 1) * a["cols"][1] >= shape.width):
            raise ValueError(f"{node.name}: rows {a['rows']} and columns {a['cols']} (first, "
                             f"step, count) of input of size {_shown(shape, batch)}")
        return Shape(shape.channels, a["rows"][2], a["cols"][2])
    if op == "softmax":  # over the channels, or the features of (N, F)
        dim = a.get("dim", 1)
        if dim not in ((1, -1) if shape.flat else (1, -3)):
            raise ValueError(f"{node.name}: dim={dim} of input of size {_shown(shape, batch)}: "
                             "the plan's softmax is over the channels (or an (N, F) input's "
                             "features)")
        return shape
    if op in ("gap", "gmp"):
        if shape.flat:
            raise ValueError(f"{node.name} expects a 4-D input, but got input of size "
                             f"{_shown(shape, batch)}")
        return Shape(shape.channels, 1, 1)
    if op == "flatten":
        return shape if shape.flat else Shape(shape.channels * shape.height * shape.width,
                                              flat=True)
    if op in ("add", "mul"):
        other = shapes[node.inputs[1]]
        if other != shape and not (broadcasts(other, shape)):
            raise ValueError(f"{node.name}: the size of tensor a ({_shown(shape, batch)}) must "
                             f"match the size of tensor b ({_shown(other, batch)})")
        return shape
    if op == "concat":  # along the channels, or the rows or columns of the pixels
        parts = [shapes[v] for v in node.inputs]
        axis = CONCAT_AXES.index(a.get("axis", "channels"))
        kept = [[p.channels, p.height, p.width] for p in parts]
        for k in kept:
            k[axis] = 0
        if any(p.flat for p in parts) or len({tuple(k) for k in kept}) != 1:
            raise ValueError(f"{node.name}: Sizes of tensors must match except in dimension "
                             f"{axis + 1}; got {', '.join(_shown(p, batch) for p in parts)}")
        dims = [shape.channels, shape.height, shape.width]
        dims[axis] = sum(p.batched(1)[axis + 1] for p in parts)
        return Shape(*dims)
    if op == "elementwise":  # with a constant of the output's shape, or a second value
        if "constant" in a:  # of the output's shape, or one number per channel
            if a["constant"].shape not in ((shape.channels, shape.height, shape.width),
                                           (shape.channels, 1, 1)):
                raise ValueError(f"{node.name}: a constant of size {list(a['constant'].shape)} "
                                 f"on input of size {_shown(shape, batch)}")
            return shape
        other = shapes[node.inputs[1]]
        if other != shape and not broadcasts(other, shape):
            raise ValueError(f"{node.name}: the size of tensor a ({_shown(shape, batch)}) must "
                             f"match the size of tensor b ({_shown(other, batch)})")
        return shape
    if op == "gather":
        if shape.flat or (shape.channels, shape.height, shape.width) != a["from_shape"]:
            raise ValueError(f"{node.name} rearranges input of size "
                             f"{[batch, *a['from_shape']]}, but got input of size "
                             f"{_shown(shape, batch)}")
        return Shape(*a["shape"])
    if op == "unflatten":
        if not shape.flat and (shape.height, shape.width) != (1, 1):
            raise ValueError(f"{node.name} expects (N, F) input, but got input of size "
                             f"{_shown(shape, batch)}")
        return Shape(shape.channels, 1, 1)
    if op in ("act", "identity"):
        return shape
    raise ValueError(f"{node.name}: unknown operation {op!r}")
