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

from ..spec import ConvSpec, PoolSpec
from .graph import INPUT, RELU, Activation, Graph, Node

MIN_OPSET = 11
SUPPORTED = ("Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "HardSigmoid",
             "HardSwish", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "AveragePool",
             "GlobalAveragePool", "Flatten", "Reshape", "Gemm", "MatMul", "Identity", "Dropout",
             "Constant")
_FLOATS = {1: np.float32, 11: np.float64}  # TensorProto.FLOAT, DOUBLE


class _Refused(ValueError):
    """A node the plan cannot serve (becomes the ValueError naming the node)."""


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
        onnx.checker.check_model(proto)
        # not strict: an operator shape inference does not know is refused by name later
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True)
    except Exception as exc:  # the checker's and shape inference's errors
        raise ValueError(f"Network.from_onnx: the model is not valid ONNX: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    return proto


def from_onnx(model) -> Graph:
    """The graph of an ONNX model (see the module docstring).

    Raises
    ------
    TypeError
        Not a path, bytes or ModelProto; an input that is not float32 or float64.
    ValueError
        An invalid model, an opset outside the range, a graph of other than one 4-D input
        and one output, or a node the plan cannot serve (naming it and why).
    """
    proto = load(model)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < MIN_OPSET:
        raise ValueError(f"Network.from_onnx reads opsets {MIN_OPSET} and later, but the model "
                         f"uses opset {opset}")
    return _Reader(proto, opset).graph()


class _Reader:
    def __init__(self, proto, opset):
        from onnx import numpy_helper

        self.opset = opset
        self.onnx = proto.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in self.onnx.initializer}
        self.shapes = {}
        for info in [*self.onnx.value_info, *self.onnx.input, *self.onnx.output]:
            dims = info.type.tensor_type.shape.dim
            if info.type.tensor_type.HasField("shape"):
                self.shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                               for d in dims)
        inputs = [i for i in self.onnx.input if i.name not in self.constants]
        if len(inputs) != 1 or len(self.onnx.output) != 1:
            raise ValueError(f"Network.from_onnx plans graphs of one input and one output, but "
                             f"this one has inputs {[i.name for i in inputs]} and outputs "
                             f"{[o.name for o in self.onnx.output]}")
        source = inputs[0]
        kind = source.type.tensor_type.elem_type
        if kind not in _FLOATS:
            raise TypeError(f"Network.from_onnx: input {source.name!r} must be float32 or "
                            f"float64, but has ONNX element type {kind}")
        self.dtype = np.dtype(_FLOATS[kind])
        if len(self.shapes.get(source.name, ())) != 4:
            raise ValueError(f"Network.from_onnx expects a 4-D input (N, C, H, W), but "
                             f"{source.name!r} has shape {self._shown(source.name)}")
        self.values = {source.name: INPUT}
        self.nodes: list[Node] = []

    # --- the walk -----------------------------------------------------------------------

    def graph(self) -> Graph:
        for index, node in enumerate(self.onnx.node):
            label = f"node '{node.name or node.output[0]}' ({node.op_type})"
            if node.domain not in ("", "ai.onnx"):
                raise ValueError(f"{label} is not supported by Network.from_onnx: operators of "
                                 f"domain {node.domain!r} are not read, only the default one")
            if node.op_type not in SUPPORTED:
                raise ValueError(f"{label} is not supported by Network.from_onnx; supported: "
                                 f"{', '.join(SUPPORTED)}")
            try:
                getattr(self, f"_{node.op_type}")(node, label, index)
            except _Refused as exc:
                raise ValueError(f"{label} is not supported: {exc}") from None
        output = self.onnx.output[0].name
        if output not in self.values:
            raise ValueError(f"Network.from_onnx: the output {output!r} is a constant, not "
                             "computed from the input")
        name = next(i.name for i in self.onnx.input if i.name not in self.constants)
        return Graph(self.nodes, self.values[output], self.dtype, source="onnx",
                     input_name=name, declared=self.shapes[name][1:])

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
        dims = self.shapes.get(name)
        return "unknown" if dims is None else str(["N" if d is None else d for d in dims])

    def _rank(self, name):
        dims = self.shapes.get(name)
        return None if dims is None else len(dims)

    def _used(self, node, index) -> bool:
        """Whether the node's optional output ``index`` is read by anything."""
        if len(node.output) <= index or not node.output[index]:
            return False
        name = node.output[index]
        return any(name in n.input for n in self.onnx.node) or any(
            o.name == name for o in self.onnx.output)

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
        out = []
        for n, k, s, d in zip(size, kernel, strides, dilations):
            if s == 1:
                total = d * (k - 1)  # whatever the input's size
            elif n is None:
                raise _Refused(f"auto_pad={auto} with stride {s} needs the input's size, but "
                               f"the model leaves it symbolic ({self._shown(node.input[0])})")
            else:
                total = max(0, (-(-n // s) - 1) * s + d * (k - 1) + 1 - n)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else
                       (total - small, small))
        return tuple(out)

    # --- operators ------------------------------------------------------------------------

    def _Constant(self, node, label, index):
        from onnx import numpy_helper

        attrs = {a.name: a for a in node.attribute}
        if "value" in attrs:
            value = numpy_helper.to_array(attrs["value"].t)
        elif set(attrs) & {"value_float", "value_floats", "value_int", "value_ints"}:
            value = np.asarray(self._attrs(node)[next(iter(attrs))])
        else:
            raise _Refused(f"a Constant of {sorted(attrs)} is not handled")
        self.constants[node.output[0]] = value

    def _Identity(self, node, label, index):
        if self._is_constant(node.input[0]):
            self.constants[node.output[0]] = self.constants[node.input[0]]
        else:
            self._alias(node, self._value(node.input[0]))

    def _Dropout(self, node, label, index):
        if self._used(node, 1):
            raise _Refused("its mask output is read: a plan runs inference only")
        if len(node.input) > 2 and node.input[2]:
            training = self._constant(node.input[2], "training_mode")
            if bool(np.asarray(training).reshape(-1)[0]):
                raise _Refused("training_mode is true: a plan runs inference only")
        self._alias(node, self._value(node.input[0]))

    def _Conv(self, node, label, index):
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
            raise _Refused(str(exc)) from None
        self._emit(node, label, "conv", [self._value(node.input[0])], spec=spec,
                   weight=np.array(weight, self.dtype), bias=bias)

    def _BatchNormalization(self, node, label, index):
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

    def _Relu(self, node, label, index):
        self._act(node, label, RELU)

    def _Clip(self, node, label, index):
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

    def _LeakyRelu(self, node, label, index):
        self._act(node, label, Activation("leaky", alpha=float(self._attrs(node).get(
            "alpha", 0.01))))

    def _HardSigmoid(self, node, label, index):
        attrs = self._attrs(node)
        self._act(node, label, Activation("hardsigmoid", alpha=float(attrs.get("alpha", 0.2)),
                                          beta=float(attrs.get("beta", 0.5))))

    def _HardSwish(self, node, label, index):
        self._act(node, label, Activation("hardswish"))

    def _Sigmoid(self, node, label, index):
        self._act(node, label, Activation("sigmoid"))

    def _binary(self, node, label, op):
        a, b = node.input[0], node.input[1]
        if self._is_constant(a) and self._is_constant(b):
            raise _Refused("both inputs are constants (fold them before exporting)")
        if self._is_constant(a):
            a, b = b, a
        if self._is_constant(b):
            return self._affine(node, label, op, a, self.constants[b])
        full, small = (a, b)
        if self._broadcasts(a, b):
            full, small = b, a
        self._emit(node, label, op, [self._value(full), self._value(small)])

    def _broadcasts(self, a, b) -> bool:
        """Whether ``a`` is the side of one pixel per image and ``b`` the full one."""
        sa, sb = self.shapes.get(a), self.shapes.get(b)
        return (sa is not None and sb is not None and len(sa) == len(sb) == 4
                and sa[2:] == (1, 1) and sb[2:] != (1, 1))

    def _affine(self, node, label, op, value, constant):
        """``x + c`` or ``x * c`` with ``c`` one number or one per channel: a per-channel
        affine (which folds into a convolution before it)."""
        rank = self._rank(value)
        c = self._float(constant)
        shape = c.shape
        if c.size == 1:
            c = c.reshape(-1)
        elif rank is not None and len(shape) <= rank and (
                (len(shape) >= 3 and shape[-2:] == (1, 1) and math.prod(shape[:-3]) == 1)
                or (rank == 2 and len(shape) <= 2 and math.prod(shape[:-1]) == 1)):
            c = c.reshape(-1)  # (C, 1, 1), (1, C, 1, 1), or (F,), (1, F) on (N, F)
        else:
            raise _Refused(f"a constant of shape {list(shape)} on {self._shown(value)}: only "
                           "one number, or one per channel, is supported")
        ones = np.ones_like(c)
        scale, shift = (c, 0 * c) if op == "mul" else (ones, c)
        self._emit(node, label, "batchnorm", [self._value(value)], scale=scale, shift=shift)

    def _Add(self, node, label, index):
        self._binary(node, label, "add")

    def _Mul(self, node, label, index):
        self._binary(node, label, "mul")

    def _Concat(self, node, label, index):
        axis = self._attrs(node)["axis"]
        rank = self._rank(node.input[0])
        if rank != 4 or axis % 4 != 1:
            raise _Refused(f"axis={axis} on {self._shown(node.input[0])}: only the channels "
                           "of 4-D tensors (axis 1) are supported")
        self._emit(node, label, "concat", [self._value(v) for v in node.input])

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
        pads = self._pads(node, attrs, kernel, strides, dilations, label)
        try:
            spec = PoolSpec(kind, 1, kernel, strides, pads, dilations,
                            bool(attrs.get("ceil_mode", 0)),
                            bool(attrs.get("count_include_pad", 0)))
        except (TypeError, ValueError) as exc:
            raise _Refused(str(exc)) from None
        self._emit(node, label, f"{kind}pool", [self._value(node.input[0])], pool=spec)

    def _MaxPool(self, node, label, index):
        self._pool(node, label, "max")

    def _AveragePool(self, node, label, index):
        self._pool(node, label, "avg")

    def _GlobalAveragePool(self, node, label, index):
        self._emit(node, label, "gap", [self._value(node.input[0])])

    def _Flatten(self, node, label, index):
        axis = self._attrs(node).get("axis", 1)
        rank = self._rank(node.input[0])
        if rank is None or axis % rank != 1:
            raise _Refused(f"axis={axis} on {self._shown(node.input[0])}: only axis 1 is "
                           "supported (the plan keeps the batch as the first dimension)")
        if rank == 2:
            self._alias(node, self._value(node.input[0]))
        else:
            self._emit(node, label, "flatten", [self._value(node.input[0])])

    def _Reshape(self, node, label, index):
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
            return self._Flatten(node, label, index) if len(source) == 4 else self._alias(
                node, self._value(node.input[0]))
        if keeps_batch and len(source) == 2 and len(out) == 4 and out[2:] == (1, 1):
            return self._emit(node, label, "unflatten", [self._value(node.input[0])])
        raise _Refused(f"reshape of {self._shown(node.input[0])} to {target} (giving "
                       f"{self._shown(node.output[0])}): only (N, C, H, W) to (N, C*H*W) and "
                       "(N, F) to (N, F, 1, 1) are supported")

    def _linear(self, node, label, value, weight, bias):
        if self._rank(value) not in (2, None):
            raise _Refused(f"its input has shape {self._shown(value)}: only (N, F) is "
                           "supported")
        self._emit(node, label, "linear", [self._value(value)],
                   weight=np.ascontiguousarray(weight, self.dtype),
                   bias=None if bias is None else np.ascontiguousarray(bias, self.dtype))

    def _Gemm(self, node, label, index):
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

    def _MatMul(self, node, label, index):
        b = self._float(self._constant(node.input[1], "B"))
        if b.ndim != 2:
            raise _Refused(f"B of shape {list(b.shape)}: only a 2-D matrix is supported")
        self._linear(node, label, node.input[0], b.T, None)
