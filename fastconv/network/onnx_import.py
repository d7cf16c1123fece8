"""``Network.from_onnx``: an ONNX model as a graph.

The model is read with the ``onnx`` package, checked (``onnx.checker``) and its shapes
inferred (``onnx.shape_inference``) before anything else. Each operator follows the ONNX
operator specification (opsets 11 to the newest the installed ``onnx`` knows), not only the
form ``torch.onnx`` writes: every attribute the plan does not serve, and every operator it
does not know, is refused when the model is read, naming the operator type, the node and why.
Weights (initializers and ``Constant`` nodes) are copied.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..spec import (RESIZE_COORDINATES, RESIZE_ROUNDING, ConvSpec, PoolSpec, pool_output_size,
                    pool_reads_only_padding, same_pads)
from .graph import CONCAT_AXES, INPUT, RELU, Activation, Graph, Node, channel_steps

MIN_OPSET = 11
SUPPORTED = ("Conv", "ConvTranspose", "BatchNormalization", "Relu", "Clip", "LeakyRelu",
             "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "Mish", "Gelu", "Exp", "Softmax",
             "PRelu",
             "Mul", "Add", "Sub",
             "Div", "Concat",
             "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
             "Resize",
             "DepthToSpace", "Split", "Slice", "Flatten", "Reshape", "Transpose", "Squeeze",
             "Unsqueeze", "Gemm", "MatMul",
             "Identity", "Dropout", "Constant")
_FLOATS = {1: np.float32, 11: np.float64}  # TensorProto.FLOAT, DOUBLE


class _Refused(ValueError):
    """A node the plan has no kernel for (becomes :class:`NotOneGraph`, naming the node)."""


class _Invalid(_Refused):
    """A node the ONNX specification forbids (zero strides, negative pads, ...): refused
    whatever runs it."""


def load(model):
    """An ``onnx.ModelProto`` from a path, bytes or a ModelProto, checked and with its shapes
    inferred."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        if not os.path.exists(model):
            raise ValueError(f"Network.from_onnx: no such file: {os.fspath(model)!r}")
        proto = onnx.load(os.fspath(model))
    elif isinstance(model, (bytes, bytearray, memoryview)):
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as exc:  # protobuf's DecodeError, among others
            raise ValueError(f"Network.from_onnx: the model is not valid ONNX: the bytes do "
                             f"not parse ({type(exc).__name__})") from None
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        raise TypeError(f"Network.from_onnx expects a path, bytes or an onnx.ModelProto, but "
                        f"got {type(model).__name__}")
    try:
        # the checker wants the outputs' shapes declared, as the IR does not (ONNX Runtime
        # runs a model whose outputs declare only their type): it checks a copy that says
        # "some shape" where the model says none
        checked = onnx.ModelProto()
        checked.CopyFrom(proto)
        for output in checked.graph.output:
            tensor = output.type.tensor_type
            if output.type.HasField("tensor_type") and not tensor.HasField("shape"):
                tensor.shape.SetInParent()
        onnx.checker.check_model(checked)
        # not strict: an operator shape inference does not know is refused by name later
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True)
    except Exception as exc:  # the checker's and shape inference's errors
        raise ValueError(f"Network.from_onnx: the model is not valid ONNX: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    return proto


def opset_of(proto) -> int:
    """The model's default-domain opset, refused below :data:`MIN_OPSET`."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < MIN_OPSET:
        raise ValueError(f"Network.from_onnx reads opsets {MIN_OPSET} and later, but the model "
                         f"uses opset {opset}")
    return opset


def check_declared(name: str, declared, shape) -> None:
    """Refuse an input of ``shape`` where the model declares ``declared`` (its dimensions,
    None where symbolic; the batch is free): the message names the input and both shapes."""
    if declared is None:
        return
    if len(declared) != len(shape) or any(d is not None and d != n for d, n in zip(
            declared[1:], shape[1:])):
        shown = ", ".join(["N", *("?" if d is None else str(d) for d in declared[1:])])
        raise ValueError(f"the model's input {name!r} is [{shown}], but got input of size "
                         f"{list(shape)}")


class NotOneGraph(ValueError):
    """The model is valid but is not one plan: a node the plan has no kernel for, several
    inputs or outputs, an input that is not a float (N, C, H, W), or a shape left to compute
    from the input's (``Network.from_onnx`` then plans it per input shape, with a fallback)."""


def declared_shapes(onnx_graph) -> dict:
    """Value name -> its shape as the model declares it (None for a symbolic dimension)."""
    shapes = {}
    for info in [*onnx_graph.value_info, *onnx_graph.input, *onnx_graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                      for d in tensor.shape.dim)
    return shapes


def model_inputs(onnx_graph) -> list:
    """The graph's inputs a caller gives: those without an initializer (an initializer
    listed as an input is a constant in practice, as ONNX Runtime folds it)."""
    constants = {t.name for t in onnx_graph.initializer}
    return [i for i in onnx_graph.input if i.name not in constants]


def one_graph(proto, opset) -> Graph:
    """The whole model as one :class:`Graph`, or :class:`NotOneGraph`."""
    from onnx import numpy_helper

    onnx_graph = proto.graph
    constants = {t.name: numpy_helper.to_array(t) for t in onnx_graph.initializer}
    shapes = declared_shapes(onnx_graph)
    inputs = model_inputs(onnx_graph)
    if len(inputs) != 1 or len(onnx_graph.output) != 1:
        raise NotOneGraph(f"Network.from_onnx plans graphs of one input and one output as one "
                          f"plan, but this one has inputs {[i.name for i in inputs]} and "
                          f"outputs {[o.name for o in onnx_graph.output]}")
    source = inputs[0]
    kind = source.type.tensor_type.elem_type
    if kind not in _FLOATS:
        raise NotOneGraph(f"Network.from_onnx: input {source.name!r} must be float32 or "
                          f"float64 to be one plan, but has ONNX element type {kind}")
    if len(shapes.get(source.name, ())) != 4:
        raise NotOneGraph(f"Network.from_onnx expects a 4-D input (N, C, H, W) for one plan, "
                          f"but {source.name!r} has shape {_shown(shapes, source.name)}")
    reader = Reader(opset, onnx_graph.node, [o.name for o in onnx_graph.output], constants,
                    shapes, np.dtype(_FLOATS[kind]))
    reader.values = {source.name: INPUT}
    for node in onnx_graph.node:
        reader.read(node)
    output = onnx_graph.output[0].name
    if len(shapes.get(output, ())) == 3:  # the plan's (N, C, 1, L): reshaped by a Program
        raise NotOneGraph(f"Network.from_onnx: the output {output!r} has shape "
                          f"{_shown(shapes, output)}, which a plan gives as (N, C, 1, L)")
    if output not in reader.values:
        raise NotOneGraph(f"Network.from_onnx: the output {output!r} is a constant, not "
                          "computed from the input")
    return Graph(reader.nodes, reader.values[output], reader.dtype, source="onnx",
                 input_name=source.name, declared=shapes[source.name][1:])


def _shown(shapes, name) -> str:
    dims = shapes.get(name)
    return "unknown" if dims is None else str(["N" if d is None else d for d in dims])


def plan_dims(shape):
    """The plan's (C, H, W) of an ONNX shape (N, C, H, W), or of (N, C, L) as (N, C, 1, L);
    None for another rank or a size past the batch not known."""
    if shape is None or len(shape) not in (3, 4) or None in shape[1:]:
        return None
    return tuple(shape[1:]) if len(shape) == 4 else (shape[1], 1, shape[2])


class Reader:
    """Reads ONNX nodes into :class:`Node` s, one at a time (:meth:`read`).

    Parameters
    ----------
    opset : int
    all_nodes : sequence of onnx.NodeProto
        The whole graph's (to know whether an optional output is read).
    outputs : list of str
        The graph's outputs.
    constants : dict
        Value name -> ndarray: the initializers, and whatever is folded; ``Constant`` nodes
        add to it.
    shapes : dict
        Value name -> shape (None for an unknown dimension).
    dtype : numpy.dtype
        The activations' (weights are cast to it).

    ``values`` maps an ONNX value to the graph's value that holds it: the caller sets the
    entry (``{name: INPUT}``), and each node read adds its output.
    """

    def __init__(self, opset, all_nodes, outputs, constants, shapes, dtype):
        self.opset = opset
        self.all_nodes = all_nodes
        self.outputs = outputs
        self.constants = constants
        self.shapes = shapes
        self.dtype = np.dtype(dtype)
        self.values: dict[str, str] = {}
        self.nodes: list[Node] = []

    def read(self, node) -> None:
        """Add ``node`` to the graph, or raise :class:`NotOneGraph` (a node the plan has no
        kernel for) or ValueError (a node the ONNX specification forbids), naming it."""
        label = f"node '{node.name or node.output[0]}' ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            raise NotOneGraph(f"{label} is not supported by Network.from_onnx: operators of "
                              f"domain {node.domain!r} are not read, only the default one")
        if node.op_type not in SUPPORTED:
            raise NotOneGraph(f"{label} is not supported by Network.from_onnx; supported: "
                              f"{', '.join(SUPPORTED)}")
        try:
            getattr(self, f"_{node.op_type}")(node, label)
        except _Invalid as exc:
            raise ValueError(f"{label} is invalid: {exc}") from None
        except _Refused as exc:
            raise NotOneGraph(f"{label} is not supported: {exc}") from None

    def _emit(self, node, label, op, inputs, **attrs) -> None:
        out = f"onnx:{node.output[0]}"
        self.nodes.append(Node(op, tuple(inputs), out, label, attrs))
        self.values[node.output[0]] = out

    def _alias(self, node, value) -> None:
        self.values[node.output[0]] = value

    # --- reading a node's inputs and attributes -------------------------------------------

    @staticmethod
    def _attrs(node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def _value(self, name):
        if name not in self.values:
            raise _Refused(f"its input {name!r} is not computed from the graph's input (a "
                           "constant where the plan needs an activation)")
        return self.values[name]

    def _constant(self, name, what):
        if name not in self.constants:
            raise _Refused(f"its {what} ({name!r}) must be a constant (an initializer or a "
                           "Constant node), but it is computed by the graph")
        return self.constants[name]

    def _is_constant(self, name) -> bool:
        return name in self.constants

    def _shown(self, name) -> str:
        return _shown(self.shapes, name)

    def _rank(self, name):
        dims = self.shapes.get(name)
        return None if dims is None else len(dims)

    def _plan_dims(self, name):
        """The plan's (C, H, W) of ONNX value ``name``, (N, C, H, W) or (N, C, L) (as (N, C,
        1, L)), or None (another rank, or a size not known)."""
        return plan_dims(self.shapes.get(name))

    def _plan_axis(self, name, axis) -> int | None:
        """ONNX ``axis`` of value ``name`` as the plan's axis of (N, C, H, W) (an (N, C, L)
        value's L is W), or None where its rank is not 3 or 4 or the axis is out of it."""
        rank = self._rank(name)
        if rank not in (3, 4) or not -rank <= int(axis) < rank:
            return None
        axis = int(axis) % rank
        return axis if rank == 4 else (0, 1, 3)[axis]

    def _used(self, node, index) -> bool:
        """Whether the node's optional output ``index`` is read by anything."""
        if len(node.output) <= index or not node.output[index]:
            return False
        name = node.output[index]
        return any(name in n.input for n in self.all_nodes) or name in self.outputs

    @staticmethod
    def _refuse_unknown(attrs, known):
        extra = sorted(set(attrs) - set(known))
        if extra:
            raise _Refused(f"attribute {extra[0]!r} is not handled")

    def _float(self, values):
        return np.asarray(values, dtype=np.float64)

    # --- spatial geometry -----------------------------------------------------------------

    def _pads(self, node, attrs, kernel, strides, dilations, label):
        """``((top, bottom), (left, right))`` from ``pads`` or ``auto_pad``."""
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if len(pads) != 4:
                raise _Refused(f"pads={pads}: only 2-D (4 pads) is supported")
            return ((pads[0], pads[2]), (pads[1], pads[3]))
        if auto == "VALID":
            return ((0, 0), (0, 0))
        if auto not in ("SAME_UPPER", "SAME_LOWER"):
            raise _Refused(f"auto_pad={auto!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, "
                           "VALID")
        size = self.shapes.get(node.input[0], (None,) * 4)[2:]
        for n, s in zip(size, strides):
            if s != 1 and n is None:
                raise _Refused(f"auto_pad={auto} with stride {s} needs the input's size, but "
                               f"the model leaves it symbolic ({self._shown(node.input[0])})")
        return same_pads(size, kernel, strides, dilations, upper=auto == "SAME_UPPER")

    # --- operators ------------------------------------------------------------------------

    def _Constant(self, node, label):
        from onnx import numpy_helper

        attrs = {a.name: a for a in node.attribute}
        if "value" in attrs:
            value = numpy_helper.to_array(attrs["value"].t)
        elif set(attrs) & {"value_float", "value_floats", "value_int", "value_ints"}:
            value = np.asarray(self._attrs(node)[next(iter(attrs))])
        else:
            raise _Refused(f"a Constant of {sorted(attrs)} is not handled")
        self.constants[node.output[0]] = value

    def _Identity(self, node, label):
        if self._is_constant(node.input[0]):
            self.constants[node.output[0]] = self.constants[node.input[0]]
        else:
            self._alias(node, self._value(node.input[0]))

    def _Dropout(self, node, label):
        if self._used(node, 1):
            raise _Refused("its mask output is read: a plan runs inference only")
        if len(node.input) > 2 and node.input[2]:
            training = self._constant(node.input[2], "training_mode")
            if bool(np.asarray(training).reshape(-1)[0]):
                raise _Refused("training_mode is true: a plan runs inference only")
        self._alias(node, self._value(node.input[0]))

    def _Conv(self, node, label):
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("auto_pad", "dilations", "group", "kernel_shape", "pads",
                                     "strides"))
        weight = self._constant(node.input[1], "kernel W")
        if weight.ndim != 4:
            raise _Refused(f"only 2-D convolutions are supported, but W has shape "
                           f"{list(weight.shape)}")
        kernel = tuple(attrs.get("kernel_shape", weight.shape[2:]))
        if kernel != tuple(weight.shape[2:]):
            raise _Refused(f"kernel_shape={list(kernel)} does not match W of shape "
                           f"{list(weight.shape)}")
        strides = tuple(attrs.get("strides", (1, 1)))
        dilations = tuple(attrs.get("dilations", (1, 1)))
        group = attrs.get("group", 1)
        pads = self._pads(node, attrs, kernel, strides, dilations, label)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = np.array(self._constant(node.input[2], "bias B"), self.dtype).reshape(-1)
        try:
            spec = ConvSpec(weight.shape[1] * group, weight.shape[0], kernel, strides, pads,
                            dilations, group, bias is not None)
        except (TypeError, ValueError) as exc:
            raise _Invalid(str(exc)) from None
        self._emit(node, label, "conv", [self._value(node.input[0])], spec=spec,
                   weight=np.array(weight, self.dtype), bias=bias)

    def _ConvTranspose(self, node, label):
        """A transposed convolution whose kernel equals its stride (the 2x2 stride-2
        upsampling of U-Nets and text detectors): each input pixel writes its own kh x kw
        output pixels, a pointwise GEMM per output phase. Others run in the fallback."""
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("auto_pad", "dilations", "group", "kernel_shape",
                                     "output_padding", "output_shape", "pads", "strides"))
        weight = self._constant(node.input[1], "kernel W")
        if weight.ndim != 4:
            raise _Refused(f"only 2-D transposed convolutions are supported, but W has shape "
                           f"{list(weight.shape)}")
        kernel = tuple(int(k) for k in attrs.get("kernel_shape", weight.shape[2:]))
        strides = tuple(int(s) for s in attrs.get("strides", (1, 1)))
        if min(*strides, *kernel) < 1 or min(attrs.get("dilations", (1, 1))) < 1 or attrs.get(
                "group", 1) < 1 or kernel != tuple(weight.shape[2:]):
            raise _Invalid(f"kernel_shape={list(kernel)}, strides={list(strides)}, dilations="
                           f"{list(attrs.get('dilations', (1, 1)))} and group="
                           f"{attrs.get('group', 1)} do not fit W of shape "
                           f"{list(weight.shape)}")
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        dilations = tuple(int(d) for d in attrs.get("dilations", (1, 1)))
        extra = tuple(int(p) for p in attrs.get("output_padding", (0, 0)))
        groups = int(attrs.get("group", 1))
        size = self.shapes.get(node.input[0], (None,) * 4)[2:]
        if any(p < 0 or p >= max(s, d) for p, s, d in zip(extra, strides, dilations)):
            raise _Invalid(f"output_padding={list(extra)} must be below the stride or the "
                           f"dilation ({list(strides)}, {list(dilations)})")
        if weight.shape[0] % groups:
            raise _Invalid(f"W of shape {list(weight.shape)} does not split into {groups} groups")
        if auto in ("SAME_UPPER", "SAME_LOWER"):  # the output is the input times the stride
            if None in size:
                raise _Refused("auto_pad SAME needs the input's size known")
            pads = []
            for n, k, s, d, p in zip(size, kernel, strides, dilations, extra):
                total = max(0, s * (n - 1) + p + (k - 1) * d + 1 - n * s)
                pads.append((total // 2, total - total // 2) if auto == "SAME_UPPER"
                            else (total - total // 2, total // 2))
        else:
            flat = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])] if auto in (
                "NOTSET", "") else [0] * 4
            if min(flat) < 0:
                raise _Invalid(f"pads={flat} must not be negative")
            pads = [(flat[0], flat[2]), (flat[1], flat[3])]
        wanted = attrs.get("output_shape")
        if wanted is not None:  # the pads it takes: the specification's split of their total
            if None in size:
                raise _Refused("output_shape needs the input's size known")
            pads, grown = [], []
            for n, k, s, d, p, o in zip(size, kernel, strides, dilations, extra,
                                        list(wanted)[-2:]):
                total = s * (n - 1) + p + (k - 1) * d + 1 - int(o)
                grown.append(p + max(0, -total))  # a larger output: rows the input misses
                total = max(0, total)
                pads.append((total // 2, total - total // 2) if auto == "SAME_UPPER"
                            else (total - total // 2, total // 2))
            extra = tuple(grown)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = np.array(self._constant(node.input[2], "bias B"), self.dtype).reshape(-1)
        c_in_group, c_out_group, kh, kw = weight.shape[0] // groups, weight.shape[1], *kernel
        # as a grouped convolution's (C_out, C_in / groups, kh, kw), so that a batch norm
        # folds alike
        ours = np.transpose(np.reshape(weight, (groups, c_in_group, c_out_group, kh, kw)),
                            (0, 2, 1, 3, 4)).reshape(groups * c_out_group, c_in_group, kh, kw)
        self._emit(node, label, "deconv", [self._value(node.input[0])],
                   weight=np.ascontiguousarray(ours, self.dtype), bias=bias, stride=strides,
                   pads=tuple(pads), dilation=dilations, output_padding=extra, groups=groups)

    def _BatchNormalization(self, node, label):
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("epsilon", "momentum", "training_mode", "spatial"))
        if attrs.get("training_mode", 0) or any(self._used(node, i) for i in (1, 2)):
            raise _Refused("training mode (or its running statistics read): a plan runs "
                           "inference only")
        scale, shift, mean, var = (self._float(self._constant(node.input[i], what)).reshape(-1)
                                   for i, what in ((1, "scale"), (2, "B"), (3, "mean"),
                                                   (4, "var")))
        factor = scale / np.sqrt(var + attrs.get("epsilon", 1e-5))
        self._emit(node, label, "batchnorm", [self._value(node.input[0])], scale=factor,
                   shift=shift - mean * factor)

    def _act(self, node, label, act):
        self._emit(node, label, "act", [self._value(node.input[0])], act=act)

    def _Relu(self, node, label):
        self._act(node, label, RELU)

    def _Clip(self, node, label):
        self._refuse_unknown(self._attrs(node), ())  # from opset 11, min and max are inputs
        bounds = []
        for i, default in ((1, -math.inf), (2, math.inf)):
            name = node.input[i] if len(node.input) > i else ""
            bounds.append(default if not name else float(np.asarray(
                self._constant(name, "min" if i == 1 else "max")).reshape(-1)[0]))
        lo, hi = bounds
        # ONNX: min > max gives max everywhere, as clamping to [lo, lo] would not
        self._act(node, label, Activation("clamp", min(lo, hi), hi) if lo > hi
                  else Activation("clamp", lo, hi))

    def _LeakyRelu(self, node, label):
        self._act(node, label, Activation("leaky", alpha=float(self._attrs(node).get(
            "alpha", 0.01))))

    def _HardSigmoid(self, node, label):
        attrs = self._attrs(node)
        self._act(node, label, Activation("hardsigmoid", alpha=float(attrs.get("alpha", 0.2)),
                                          beta=float(attrs.get("beta", 0.5))))

    def _HardSwish(self, node, label):
        self._act(node, label, Activation("hardswish"))

    def _Sigmoid(self, node, label):
        self._act(node, label, Activation("sigmoid"))

    def _Exp(self, node, label):
        self._act(node, label, Activation("exp"))

    def _Softmax(self, node, label):
        """Over the channels of (N, C, H, W) or the features of (N, F): axis 1 from opset
        13; before, axis 1 means every element but the batch's, the channels alone only where
        an image is one pixel."""
        rank = self._rank(node.input[0])
        axis = self._attrs(node).get("axis", -1 if self.opset >= 13 else 1)
        shape = self.shapes.get(node.input[0])
        pixel = shape is not None and all(d == 1 for d in shape[2:])
        if rank not in (2, 3, 4) or axis % rank != 1 or (self.opset < 13 and not pixel):
            raise _Refused(f"axis={axis} of {self._shown(node.input[0])} at opset "
                           f"{self.opset}: the plan's softmax is over the channels of "
                           "(N, C, H, W) or (N, C, L), or the features of (N, F)")
        self._emit(node, label, "softmax", [self._value(node.input[0])])

    def _Tanh(self, node, label):
        self._act(node, label, Activation("tanh"))

    def _Mish(self, node, label):
        self._act(node, label, Activation("mish"))

    def _Gelu(self, node, label):
        approximate = self._attrs(node).get("approximate", b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
        if approximate not in ("none", "tanh"):
            raise _Invalid(f"approximate must be 'none' or 'tanh', but got {approximate!r}")
        self._act(node, label, Activation("gelu" if approximate == "none" else "gelu_tanh"))

    def _binary(self, node, label, op):
        """``a op b``, ``op`` add, mul, sub or div: of two activations of one shape (or one
        of them (N, C, 1, 1) or (N, C, 1), broadcast over the other's pixels), or of an
        activation and a constant (:meth:`_with_constant`)."""
        a, b = node.input[0], node.input[1]
        if self._is_constant(a) and self._is_constant(b):
            raise _Refused("both inputs are constants (fold them before exporting)")
        if self._is_constant(a) or self._is_constant(b):
            first = self._is_constant(a)
            value, constant = (b, a) if first else (a, b)
            return self._with_constant(node, label, op, value, self.constants[constant], first)
        sa, sb = self.shapes.get(a), self.shapes.get(b)
        swapped = self._broadcasts(a, b)
        if (sa is not None and sb is not None and tuple(sa[1:]) != tuple(sb[1:])
                and not swapped and not self._broadcasts(b, a)):
            raise _Refused(f"{self._shown(a)} and {self._shown(b)}: the plan's element-wise "
                           "steps take two activations of one shape, or one of a pixel per "
                           "image against the other")
        full, small = (b, a) if swapped else (a, b)
        if op in ("add", "mul"):
            return self._emit(node, label, op, [self._value(full), self._value(small)])
        operation = {"sub": "sub_from", "div": "div_into"}[op] if swapped else op
        self._emit(node, label, "elementwise", [self._value(full), self._value(small)],
                   operation=operation)

    def _broadcasts(self, a, b) -> bool:
        """Whether ``a`` is the side of one pixel per image and ``b`` the full one, both (N,
        C, H, W) or both (N, C, L) of the same channels."""
        sa, sb = self.shapes.get(a), self.shapes.get(b)
        return (sa is not None and sb is not None and len(sa) == len(sb) in (3, 4)
                and sa[1] == sb[1] and all(d == 1 for d in sa[2:])
                and not all(d == 1 for d in sb[2:]))

    def _per_channel(self, value, c) -> np.ndarray | None:
        """Constant ``c`` as one number or one per channel of ``value`` (flattened): what
        broadcasts as a per-channel affine without changing ``value``'s shape; None for any
        other constant."""
        rank = self._rank(value)
        shape = c.shape
        if rank is None or len(shape) > rank:
            return None
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        channels = self.shapes[value][1] if rank >= 2 else None
        if c.size == 1 or (rank >= 2 and padded[0] == 1 and all(d == 1 for d in padded[2:])
                           and channels in (None, padded[1])):
            return c.reshape(-1)  # (C, 1, 1), (1, C, 1, 1), (C, 1) on (N, C, L), (1, F) ...
        return None

    def _with_constant(self, node, label, op, value, constant, constant_first):
        """``value op c`` (``c op value`` when ``constant_first``): a per-channel affine
        (which folds into a convolution before it) where ``c`` is one number or one per
        channel, but for ``c / value``; an element-wise step with ``c`` broadcast to
        ``value``'s shape where ``c`` varies over its pixels."""
        c = self._float(constant)
        per = self._per_channel(value, c)
        dims = self._plan_dims(value)
        if op == "prelu" and per is not None and dims is not None:  # one slope per channel
            return self._emit(node, label, "elementwise", [self._value(value)], operation=op,
                              constant=np.ascontiguousarray(np.broadcast_to(
                                  per, (dims[0],)).reshape(dims[0], 1, 1), self.dtype))
        if per is not None and not (op == "div" and constant_first):
            ones, zeros = np.ones_like(per), np.zeros_like(per)
            with np.errstate(divide="ignore"):
                scale, shift = {"add": (ones, per), "mul": (per, zeros),
                                "sub": (-ones, per) if constant_first else (ones, -per),
                                "div": (1 / per, zeros)}[op]
            return self._emit(node, label, "batchnorm", [self._value(value)], scale=scale,
                              shift=shift)
        shape = self.shapes.get(value)
        padded = None if shape is None or c.ndim > len(shape) else (
            (1,) * (len(shape) - c.ndim) + c.shape)
        if dims is None or padded is None or padded[0] != 1 or any(
                p not in (1, d) for p, d in zip(padded[1:], shape[1:])):
            raise _Refused(f"a constant of shape {list(c.shape)} on {self._shown(value)}: the "
                           "plan takes constants that broadcast to the activation's shape of "
                           "(N, C, H, W) or (N, C, L), one image's")
        full = np.broadcast_to(c.reshape(padded[1:]), tuple(shape[1:])).reshape(dims)
        operation = {"sub": "sub_from", "div": "div_into"}.get(op, op) if constant_first else op
        self._emit(node, label, "elementwise", [self._value(value)], operation=operation,
                   constant=np.ascontiguousarray(full, self.dtype))

    def _PRelu(self, node, label):
        """``x`` where ``x >= 0``, ``slope * x`` elsewhere: one slope, a LeakyRelu; one per
        channel, or any that broadcasts to ``x``'s shape, an element-wise step with it."""
        slope = self._float(self._constant(node.input[1], "slope"))
        if slope.size == 1:
            return self._act(node, label, Activation("leaky", alpha=float(slope.reshape(-1)[0])))
        self._with_constant(node, label, "prelu", node.input[0], slope, False)

    def _Add(self, node, label):
        self._binary(node, label, "add")

    def _Mul(self, node, label):
        self._binary(node, label, "mul")

    def _Sub(self, node, label):
        self._binary(node, label, "sub")

    def _Div(self, node, label):
        self._binary(node, label, "div")

    def _Concat(self, node, label):
        """Along the channels of (N, C, H, W) or (N, C, L) (written in place where the
        producers can), or along their pixels' rows or columns (copied)."""
        axis = self._attrs(node)["axis"]
        first = node.input[0]
        where = self._plan_axis(first, axis)
        if where in (None, 0) or any(self._rank(v) != self._rank(first) for v in node.input):
            raise _Refused(f"axis={axis} on {self._shown(first)}: the plan concatenates (N, C, "
                           "H, W) or (N, C, L) along any axis but the batch")
        self._emit(node, label, "concat", [self._value(v) for v in node.input],
                   axis=CONCAT_AXES[where - 1])

    def _pool(self, node, label, kind):
        attrs = self._attrs(node)
        known = ["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides"]
        known += ["storage_order"] if kind == "max" else ["count_include_pad"]
        self._refuse_unknown(attrs, known)
        if kind == "max" and (attrs.get("storage_order", 0) or self._used(node, 1)):
            raise _Refused("its Indices output (or storage_order) is not supported")
        kernel = tuple(attrs["kernel_shape"])
        if len(kernel) != 2:
            raise _Refused(f"kernel_shape={list(kernel)}: only 2-D pooling is supported")
        strides = tuple(attrs.get("strides", (1, 1)))
        dilations = tuple(attrs.get("dilations", (1, 1)))
        if kind == "avg" and dilations != (1, 1):
            # the average pool's kernels read the window undilated: refused, never a wrong
            # answer (opset 19's dilated average counts its taps inside the padded input)
            raise _Refused(f"dilations={list(dilations)}: the plan's average pooling is "
                           "undilated")
        for what, values in (("kernel_shape", kernel), ("strides", strides),
                             ("dilations", dilations)):
            if min(values) < 1:
                raise _Invalid(f"{what}={list(values)}: each must be positive")
        pads = self._pads(node, attrs, kernel, strides, dilations, label)
        shown = [p for pair in zip(*pads) for p in pair]
        for (lo, hi), k, d in zip(pads, kernel, dilations):
            if min(lo, hi) < 0 or max(lo, hi) >= d * (k - 1) + 1:
                # a window wholly in the padding pools nothing (ONNX Runtime refuses it too)
                raise _Invalid(f"pads={shown}: each must be at least 0 and less than the "
                               f"kernel {list(kernel)}")
        size = self.shapes.get(node.input[0], (None,) * 4)[2:]
        if len(size) == 2 and None not in size:
            ceil = bool(attrs.get("ceil_mode", 0))
            if min(pool_output_size(size, kernel, strides, pads, dilations, ceil)) < 1:
                raise _Invalid(f"kernel_shape={list(kernel)} with pads={shown} and dilations="
                               f"{list(dilations)} leaves no window in the input of size "
                               f"{list(size)}")
            if pool_reads_only_padding(size, kernel, strides, pads, dilations, ceil):
                # its value is no one's: -inf in PyTorch, the lowest float in ONNX Runtime
                raise _Invalid(f"kernel_shape={list(kernel)} with pads={shown}, strides="
                               f"{list(strides)} and dilations={list(dilations)} has a "
                               f"window that reads only padding in the input of size "
                               f"{list(size)}")
        for (lo, hi), k, d in zip(pads, kernel, dilations):
            if max(lo, hi) > (d * (k - 1) + 1) // 2:  # valid ONNX, beyond the plan's windows
                raise _Refused(f"pads={shown} over half the kernel {list(kernel)}")
        try:
            spec = PoolSpec(kind, 1, kernel, strides, pads, dilations,
                            bool(attrs.get("ceil_mode", 0)),
                            bool(attrs.get("count_include_pad", 0)))
        except (TypeError, ValueError) as exc:
            raise _Invalid(str(exc)) from None
        self._emit(node, label, f"{kind}pool", [self._value(node.input[0])], pool=spec)

    def _MaxPool(self, node, label):
        self._pool(node, label, "max")

    def _AveragePool(self, node, label):
        self._pool(node, label, "avg")

    def _GlobalAveragePool(self, node, label):
        self._global(node, label, "gap")

    def _GlobalMaxPool(self, node, label):
        self._global(node, label, "gmp")

    def _global(self, node, label, op):
        if self._rank(node.input[0]) != 4:
            raise _Refused(f"the plan pools the pixels of (N, C, H, W), not "
                           f"{self._shown(node.input[0])}")
        self._emit(node, label, op, [self._value(node.input[0])])

    def _ReduceMean(self, node, label):
        """The mean over the pixels of (N, C, H, W), dims kept: a global average pool (as
        torch.onnx's dynamo exporter writes adaptive_avg_pool2d(x, 1))."""
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("axes", "keepdims", "noop_with_empty_axes"))
        axes = attrs.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self._constant(node.input[1], "axes")
        rank = self._rank(node.input[0])
        if axes is None or rank != 4 or sorted(int(a) % 4 for a in np.reshape(axes, -1)) != [
                2, 3] or not attrs.get("keepdims", 1):
            shown = None if axes is None else [int(a) for a in np.reshape(axes, -1)]
            raise _Refused(f"the mean over axes {shown} of {self._shown(node.input[0])}: only "
                           "over the pixels of (N, C, H, W), dims kept")
        self._emit(node, label, "gap", [self._value(node.input[0])])

    def _Resize(self, node, label):
        """A resize to the same size (any mode but a crop) is the identity; a nearest
        upsampling by integer factors, whose coordinates map output pixel o to input pixel
        floor(o / s) (asymmetric with floor, as torch writes it, or half-pixel with either
        rounding, which agree there), repeats each pixel; any other nearest or linear resize
        of the pixels reads its input through per-axis tables (``spec.resize_taps``). Cubic,
        a crop, an antialiased reduction run in the fallback."""
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("mode", "coordinate_transformation_mode", "nearest_mode",
                                     "cubic_coeff_a", "exclude_outside", "extrapolation_value",
                                     "antialias", "axes", "keep_aspect_ratio_policy"))
        text = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        mode = text.get("mode", "nearest")
        coordinates = text.get("coordinate_transformation_mode", "half_pixel")
        rounding = text.get("nearest_mode", "round_prefer_floor")
        before, after = self.shapes.get(node.input[0]), self.shapes.get(node.output[0])
        if (before is None or after is None or None in before[1:] or None in after[1:]
                or after[0] != before[0] or coordinates == "tf_crop_and_resize"):
            raise _Refused(f"a resize of {self._shown(node.input[0])} to "
                           f"{self._shown(node.output[0])} ({coordinates}): the plan needs "
                           "both sizes known, and no crop")
        if tuple(after) == tuple(before):
            return self._alias(node, self._value(node.input[0]))
        factors = [1] + [a // b if b and a % b == 0 else 0 for a, b in zip(after[1:],
                                                                       before[1:])]
        scales = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        exact = not scales or [float(v) for v in np.reshape(self._constant(
            scales, "scales"), -1)] == [float(f) for f in factors]
        mapped = ((coordinates == "asymmetric" and rounding == "floor") or (
            coordinates in ("half_pixel", "pytorch_half_pixel")
            and rounding in ("round_prefer_floor", "round_prefer_ceil")))
        if (mode == "nearest" and len(before) == 4 and factors[:2] == [1, 1]
                and 0 not in factors and exact and mapped):  # each pixel repeated
            return self._emit(node, label, "upsample", [self._value(node.input[0])],
                              factors=(factors[2], factors[3]))
        given = ([float(v) for v in np.reshape(self._constant(scales, "scales"), -1)]
                 if scales else None)
        axes = text.get("axes")
        if given is not None and axes is not None:  # the scales of the axes named
            full = [1.0] * len(before)
            for axis, value in zip(axes, given):
                full[axis % len(before)] = value
            given = full
        downscaled = any(a < b for a, b in zip(after[2:], before[2:]))
        if (mode not in ("nearest", "linear") or len(before) != 4 or after[1] != before[1]
                or coordinates not in RESIZE_COORDINATES or rounding not in RESIZE_ROUNDING
                or (given is not None and given[:2] != [1.0, 1.0])
                or (text.get("antialias", 0) and downscaled)
                or text.get("keep_aspect_ratio_policy", "stretch") != "stretch"):
            raise _Refused(f"a {mode} resize of {self._shown(node.input[0])} to "
                           f"{self._shown(node.output[0])} ({coordinates}, {rounding}): the "
                           "plan resizes the pixels of (N, C, H, W), nearest or linear, by "
                           f"{', '.join(RESIZE_COORDINATES)}, without antialiasing a "
                           "reduction")
        self._emit(node, label, "resize", [self._value(node.input[0])],
                   size=(after[2], after[3]), mode=mode, coordinates=coordinates,
                   rounding=rounding, scales=None if given is None else tuple(given[2:]))

    def _channel_slices(self, node, label, parts) -> None:
        """``parts``: (output, first channel, channels) of the node's input, each a slice."""
        value = self._value(node.input[0])
        for i, (output, c0, count) in enumerate(parts):
            if not output:
                continue
            if count < 1:
                raise _Refused(f"output {i} would have {count} channels")
            name = f"onnx:{output}"
            self.nodes.append(Node("slice", (value,), name,
                                   label if len(parts) == 1 else f"{label}[{i}]",
                                   dict(c0=c0, channels=count)))
            self.values[output] = name

    def _Split(self, node, label):
        """A split of (N, C, H, W) or (N, C, L) along the channels: each part a slice (copied
        once, or straight into the concatenation that reads it)."""
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("axis", "split", "num_outputs"))
        shape = self.shapes.get(node.input[0])
        axis = attrs.get("axis", 0)
        if self._plan_axis(node.input[0], axis) != 1 or shape[1] is None:
            raise _Refused(f"axis={axis} on {self._shown(node.input[0])}: only the channels of "
                           "(N, C, H, W) or (N, C, L) are split on the plan")
        channels, parts = shape[1], len(node.output)
        if len(node.input) > 1 and node.input[1]:
            sizes = [int(v) for v in np.reshape(self._constant(node.input[1], "split"), -1)]
        elif "split" in attrs:
            sizes = [int(v) for v in attrs["split"]]
        else:  # equal parts; from opset 18 the last may be smaller
            size = -(-channels // parts)
            sizes = [size] * (parts - 1) + [channels - size * (parts - 1)]
        if len(sizes) != parts or sum(sizes) != channels or min(sizes) < 0:
            raise _Invalid(f"split={sizes} does not cut {channels} channels into {parts} "
                           "outputs")
        starts = np.cumsum([0, *sizes[:-1]])
        self._channel_slices(node, label, [(o, int(c0), n) for o, c0, n in
                                           zip(node.output, starts, sizes)])

    def _Slice(self, node, label):
        """A slice of (N, C, H, W) or (N, C, L) along the channels (step 1), or along the
        pixels (any positive steps: YOLOv5's Focus takes every other row and column)."""
        starts, ends = (np.reshape(self._constant(node.input[i], what), -1)
                        for i, what in ((1, "starts"), (2, "ends")))
        axes = [int(a) for a in (np.reshape(self._constant(node.input[3], "axes"), -1)
                                 if len(node.input) > 3 and node.input[3]
                                 else np.arange(len(starts)))]
        steps = [int(s) for s in (np.reshape(self._constant(node.input[4], "steps"), -1)
                                  if len(node.input) > 4 and node.input[4]
                                  else np.ones(len(starts), np.int64))]
        sizes = self._plan_dims(node.input[0])
        planned = [self._plan_axis(node.input[0], a) for a in axes]
        dims = set(planned)
        if (sizes is None or None in dims or len(dims) != len(axes) or 0 in dims
                or min(steps) < 1 or (1 in dims and (len(dims) > 1 or steps != [1]))):
            raise _Refused(f"a slice of {self._shown(node.input[0])} on axes {axes} by steps "
                           f"{steps}: the plan slices the channels of (N, C, H, W) or (N, C, "
                           "L) (step 1) or their pixels (positive steps)")
        kept = {d: range(n) for d, n in zip((1, 2, 3), sizes)}
        for a, s, e, step in zip(planned, starts, ends, steps):
            kept[a] = kept[a][slice(int(max(min(s, 2**62), -2**62)),
                                    int(max(min(e, 2**62), -2**62)), step)]
        if 1 in dims:
            return self._channel_slices(node, label, [(node.output[0], kept[1].start,
                                                       len(kept[1]))])
        if not len(kept[2]) or not len(kept[3]):
            raise _Refused(f"it leaves no pixel of {self._shown(node.input[0])}")
        self._emit(node, label, "pixel_slice", [self._value(node.input[0])],
                   rows=(kept[2].start, kept[2].step, len(kept[2])),
                   cols=(kept[3].start, kept[3].step, len(kept[3])))

    def _DepthToSpace(self, node, label):
        attrs = self._attrs(node)
        block = attrs.get("blocksize")
        mode = attrs.get("mode", b"DCR")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if block is None or block < 1:
            raise _Invalid(f"blocksize must be a positive integer, but got {block}")
        if mode != "DCR":
            raise _Refused(f"mode {mode!r}: the plan's depth-to-space is mode 'DCR' (channel "
                           "(i * blocksize + j) * C + c to channel c of output pixel (i, j))")
        self._emit(node, label, "depth_to_space", [self._value(node.input[0])],
                   block=(block, block))

    def _Flatten(self, node, label):
        axis = self._attrs(node).get("axis", 1)
        rank = self._rank(node.input[0])
        if rank is None or axis % rank != 1:
            raise _Refused(f"axis={axis} on {self._shown(node.input[0])}: only axis 1 is "
                           "supported (the plan keeps the batch as the first dimension)")
        if rank == 2:
            self._alias(node, self._value(node.input[0]))
        else:
            self._emit(node, label, "flatten", [self._value(node.input[0])])

    def _Reshape(self, node, label):
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("allowzero",))
        target = [int(v) for v in np.asarray(self._constant(node.input[1], "shape")).reshape(-1)]
        source = self.shapes.get(node.input[0])
        out = self.shapes.get(node.output[0])
        if source is None or out is None or None in source[1:] or None in out[1:]:
            raise _Refused(f"reshape of {self._shown(node.input[0])} to {target}: the plan "
                           "needs the sizes past the batch known")
        rest = [source[i] if t == 0 and i < len(source) else t
                for i, t in enumerate(target[1:], 1)]
        keeps_batch = (target[0] == 0 or (source[0] is not None and target[0] == source[0])
                       or (target[0] == -1 and math.prod(rest) == math.prod(source[1:])))
        if keeps_batch and len(out) == 2 and out[1] == math.prod(source[1:]):
            return self._Flatten(node, label) if len(source) in (3, 4) else self._alias(
                node, self._value(node.input[0]))
        if keeps_batch and len(source) == 2 and len(out) == 4 and out[2:] == (1, 1):
            return self._emit(node, label, "unflatten", [self._value(node.input[0])])
        if (keeps_batch and len(source) in (3, 4) and len(out) in (3, 4)
                and math.prod(out[1:]) == math.prod(source[1:])):
            return self._rearrange(node, label, np.arange(math.prod(source[1:])).reshape(
                out[1:]), "a reshape")
        raise _Refused(f"reshape of {self._shown(node.input[0])} to {target} (giving "
                       f"{self._shown(node.output[0])}): only (N, C, H, W) to (N, C*H*W), "
                       "(N, F) to (N, F, 1, 1), and between (N, C, H, W) and (N, C, L) shapes "
                       "of the batch kept are supported")

    def _Transpose(self, node, label):
        """A permutation of the axes of (N, C, H, W) or (N, C, L) but the batch's."""
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("perm",))
        shape, rank = self.shapes.get(node.input[0]), self._rank(node.input[0])
        if shape is None or None in shape[1:]:
            raise _Refused(f"a transpose of {self._shown(node.input[0])}: the plan needs the "
                           "sizes past the batch known")
        perm = [int(p) for p in attrs.get("perm", range(rank - 1, -1, -1))]
        if sorted(perm) != list(range(rank)):
            raise _Invalid(f"perm={perm} is not a permutation of the {rank} axes of "
                           f"{self._shown(node.input[0])}")
        if perm[0] != 0:
            raise _Refused(f"perm={perm} moves the batch: the plan keeps it first")
        order = np.arange(math.prod(shape[1:])).reshape(shape[1:]).transpose(
            [p - 1 for p in perm[1:]])
        self._rearrange(node, label, order, f"a transpose by {perm}")

    def _Squeeze(self, node, label):
        self._same_order(node, label, "a squeeze")

    def _Unsqueeze(self, node, label):
        self._same_order(node, label, "an unsqueeze")

    def _same_order(self, node, label, what):
        """Squeeze or Unsqueeze: the same elements in the same order, of the shape inferred
        for the output, its axes (an attribute before opset 13, an input from it) never the
        batch."""
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("axes",))
        axes = attrs.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = np.reshape(self._constant(node.input[1], "axes"), -1)
        source, out = self.shapes.get(node.input[0]), self.shapes.get(node.output[0])
        if source is None or out is None or None in source[1:] or None in out[1:]:
            raise _Refused(f"{what} of {self._shown(node.input[0])}: the plan needs the sizes "
                           "past the batch known")
        rank = len(out) if node.op_type == "Unsqueeze" else len(source)
        if (axes is None and source[0] in (None, 1)) or (axes is not None and any(
                int(a) % rank == 0 for a in axes)):
            raise _Refused(f"{what} of {self._shown(node.input[0])} on axes "
                           f"{None if axes is None else [int(a) for a in axes]}: the plan "
                           "keeps the batch first")
        self._rearrange(node, label, np.arange(math.prod(source[1:])).reshape(out[1:]), what)

    def _rearrange(self, node, label, order, what):
        """An ONNX value's elements in a new shape or order, the batch kept: ``order`` holds,
        for each element of one image of the output (in ONNX's shape), its index in one image
        of the input. Nothing where the plan's layout stays (the value aliased); else a gather
        in which each output pixel reads its channels a constant step apart; or refused."""
        src = node.input[0]
        before, after = self._plan_dims(src), plan_dims((None, *order.shape))
        if before is None or after is None:
            raise _Refused(f"{what} of {self._shown(src)} to {['N', *order.shape]}: the plan "
                           "holds (N, C, H, W) and (N, C, L) values")
        flat = order.reshape(-1)
        if before == after and np.array_equal(flat, np.arange(flat.size)):
            return self._alias(node, self._value(src))
        index = order.reshape(after[0], -1)  # (C', pixels)
        steps = channel_steps(np.stack(np.unravel_index(index, before)))
        if steps is None:
            raise _Refused(f"{what} of {self._shown(src)} to {['N', *order.shape]}: an "
                           "output pixel's channels are not a constant step apart in the "
                           "input")
        self._emit(node, label, "gather", [self._value(src)], from_shape=before, shape=after,
                   source=steps[0], delta=steps[1])

    def _linear(self, node, label, value, weight, bias):
        if self._rank(value) not in (2, None):
            raise _Refused(f"its input has shape {self._shown(value)}: only (N, F) is "
                           "supported")
        self._emit(node, label, "linear", [self._value(value)],
                   weight=np.ascontiguousarray(weight, self.dtype),
                   bias=None if bias is None else np.ascontiguousarray(bias, self.dtype))

    def _Gemm(self, node, label):
        attrs = self._attrs(node)
        self._refuse_unknown(attrs, ("alpha", "beta", "transA", "transB"))
        if attrs.get("transA", 0):
            raise _Refused("transA=1: the plan's activations keep the batch as their first "
                           "dimension")
        b = self._float(self._constant(node.input[1], "B"))
        weight = (b if attrs.get("transB", 0) else b.T) * attrs.get("alpha", 1.0)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = self._float(self._constant(node.input[2], "C")) * attrs.get("beta", 1.0)
            if c.size not in (1, weight.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
                raise _Refused(f"C of shape {list(c.shape)}: only a bias per output "
                               f"({weight.shape[0]}) or one number is supported")
            bias = np.broadcast_to(c.reshape(-1), (weight.shape[0],))
        self._linear(node, label, node.input[0], weight, bias)

    def _MatMul(self, node, label):
        b = self._float(self._constant(node.input[1], "B"))
        if b.ndim != 2:
            raise _Refused(f"B of shape {list(b.shape)}: only a 2-D matrix is supported")
        self._linear(node, label, node.input[0], b.T, None)
