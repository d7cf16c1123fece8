"""Every node of an ONNX model counted, for given input shapes, without running it.

The model is folded for those shapes (``onnx_program.fold``: shape subgraphs and constant-only
nodes become constants, every value's shape is inferred; nothing that reads an input runs),
then each node left is counted by its operator's rule (:data:`RULES`):

- **MACs** (multiply-adds; FLOPs = 2 x MACs), exactly, for the operators that multiply
  matrices: ``Conv`` (N x C_out x H_out x W_out x C_in / groups x kernel area),
  ``ConvTranspose`` (N x C_in x H_in x W_in x C_out / groups x kernel area), ``MatMul`` and
  ``Gemm`` (every batch x M x K x N), their integer and QLinear twins, and the recurrent
  layers (per step and direction: gates x hidden x (input + hidden); LSTM 4 gates, GRU 3, RNN
  1).
- **other ops**, by a rule per kind, labelled apart from the MACs: element-wise operators one
  per output element; ``BatchNormalization`` 2 per element (scale, shift); the other
  normalisations 5 (mean, variance, normalise, scale, shift); ``Softmax`` and
  ``LogSoftmax`` 3 (exponential, sum, divide); pooling one per window element read (output
  elements x window area); global pooling and reductions one per input element; ``Resize``
  one per tap of each output element (linear 2 per resized axis, cubic 4, nearest none: it
  copies).
- **data movement** (reshape, transpose, concatenate, split, slice, gather, cast, pad...):
  no arithmetic, listed as such.

A node no rule covers, or whose shapes shape inference cannot say, is listed as not counted,
by name: never a silent zero.
"""

from __future__ import annotations

import math

import numpy as np

from .onnx_program import fold

ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal",
    "Floor", "Ceil", "Round", "Sign", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh",
    "HardSigmoid", "HardSwish", "Erf", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish",
    "Gelu", "ThresholdedRelu", "Min", "Max", "Sum", "Mean", "Where", "Equal", "Less",
    "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Mod", "IsNaN",
    "IsInf", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
    "Atanh", "BitShift", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "Shrink",
}
NORMALISATION = {"BatchNormalization": 2, "InstanceNormalization": 5,
                 "LayerNormalization": 5, "GroupNormalization": 5, "LpNormalization": 3,
                 "MeanVarianceNormalization": 5, "Softmax": 3, "LogSoftmax": 3, "Hardmax": 1}
POOLING = {"MaxPool", "AveragePool", "LpPool", "QLinearAveragePool"}
REDUCTION = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "ReduceMean", "ReduceSum",
             "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
             "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "CumSum", "TopK"}
DATA_MOVEMENT = {
    "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND",
    "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout", "Cast", "CastLike", "Shape",
    "Size", "Expand", "Pad", "Tile", "ConstantOfShape", "Constant", "Range", "DepthToSpace",
    "SpaceToDepth", "ScatterElements", "ScatterND", "NonZero", "OneHot", "Trilu",
    "ReverseSequence", "Compress", "EyeLike",
}
CONVOLUTION = {"Conv", "ConvInteger", "QLinearConv"}
MATMUL = {"MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"}
RECURRENT = {"LSTM": 4, "GRU": 3, "RNN": 1}
#: The category of every operator counted, for the documentation and the tests.
RULES = {**{op: "elementwise" for op in ELEMENTWISE},
         **{op: "normalisation" for op in NORMALISATION}, **{op: "pooling" for op in POOLING},
         **{op: "reduction" for op in REDUCTION}, **{op: "data movement" for op in
                                                       DATA_MOVEMENT},
         **{op: "convolution" for op in CONVOLUTION}, "ConvTranspose": "convolution",
         **{op: "matrix product" for op in MATMUL}, **{op: "recurrent" for op in RECURRENT},
         "Resize": "resize", "Upsample": "resize"}


class _Uncounted(Exception):
    pass


def count(proto, opset: int, inputs: dict) -> dict:
    """Count every node of ``proto`` for ``inputs`` (name -> (shape, dtype)).

    Returns
    -------
    dict
        ``nodes``: per node left after folding, in order, ``name``, ``op``, ``category``,
        ``input`` and ``output`` (shapes), ``macs``, ``flops`` (2 x MACs), ``other_ops``,
        ``params`` (the elements of its floating-point constant inputs), ``counted`` (False, with
        ``why``, for a node no rule covers); ``folded``: how many nodes became constants;
        and the totals ``macs``, ``flops``, ``other_ops``, ``params``, ``not_counted`` (the
        names of the nodes not counted).
    """
    folded = fold(proto, opset, inputs)
    rows = []
    for node in folded.nodes:
        name = f"node '{node.name or node.output[0]}' ({node.op_type})"
        reads = [v for v in node.input if v and v not in folded.constants]
        shape_in = folded.shapes.get(reads[0]) if reads else None
        shape_out = folded.shapes.get(node.output[0])
        row = dict(name=name, op=node.op_type, category=RULES.get(node.op_type, "not counted"),
                   input=_shown(shape_in), output=_shown(shape_out), macs=0, other_ops=0,
                   params=_params(node, folded), counted=True, why="")
        try:
            row["macs"], row["other_ops"] = _count(node, folded)
        except _Uncounted as exc:
            row.update(counted=False, why=str(exc), category="not counted")
        row["flops"] = 2 * row["macs"]
        rows.append(row)
    return dict(nodes=rows, folded=len(proto.graph.node) - len(folded.nodes),
                macs=sum(r["macs"] for r in rows), flops=sum(r["flops"] for r in rows),
                other_ops=sum(r["other_ops"] for r in rows),
                params=sum(r["params"] for r in rows),
                not_counted=[r["name"] for r in rows if not r["counted"]])


def _params(node, folded) -> int:
    """The elements of a computing node's floating-point constant inputs (its weights, biases
    and scales; a reshape's target is no parameter)."""
    if RULES.get(node.op_type) in (None, "data movement", "resize"):
        return 0
    return int(sum(np.size(folded.constants[v]) for v in node.input if v in folded.constants
                   and np.issubdtype(np.asarray(folded.constants[v]).dtype, np.floating)))


def _shown(shape) -> str:
    return "?" if shape is None else str(["?" if d is None else d for d in shape])


def _known(folded, value, what) -> tuple:
    shape = folded.constants[value].shape if value in folded.constants else \
        folded.shapes.get(value)
    if shape is None or None in shape:
        raise _Uncounted(f"the shape of its {what} ({value!r}) is not known without running "
                         "the model")
    return tuple(int(d) for d in shape)


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def node_counts(node, folded) -> tuple[int, int]:
    """(MACs, other ops) of one node of a folded model; (0, 0) where no rule covers it."""
    try:
        return _count(node, folded)
    except _Uncounted:
        return 0, 0


def _count(node, folded) -> tuple[int, int]:
    """(MACs, other ops) of one node."""
    op = node.op_type
    if op not in RULES:
        raise _Uncounted(f"no counting rule for {op}")
    category = RULES[op]
    if category == "data movement":
        return 0, 0
    out = _known(folded, node.output[0], "output")
    elements = math.prod(out)
    if category == "elementwise":
        return 0, elements
    if category == "normalisation":
        return 0, NORMALISATION[op] * elements
    if category == "pooling":
        kernel = _attr(node, "kernel_shape")
        return 0, elements * math.prod(kernel)
    if category == "reduction":
        return 0, math.prod(_known(folded, node.input[0], "input"))
    if category == "resize":
        mode = _attr(node, "mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        before = _known(folded, node.input[0], "input")
        resized = sum(a != b for a, b in zip(before, out))
        taps = {"nearest": 0, "linear": 2, "bilinear": 2, "cubic": 4}.get(mode, 0)
        return 0, elements * taps ** resized if taps else 0
    if category == "convolution":
        weight = node.input[3] if op == "QLinearConv" else node.input[1]
        w = _known(folded, weight, "weight")
        if op == "ConvTranspose":
            x = _known(folded, node.input[0], "input")
            return math.prod(x) * (w[1] * math.prod(w[2:])), 0
        return elements * (w[1] * math.prod(w[2:])), 0
    if category == "matrix product":
        a = _known(folded, node.input[0], "A")
        return elements * (a[0] if op == "Gemm" and _attr(node, "transA", 0) else a[-1]), 0
    if category == "recurrent":
        x = _known(folded, node.input[0], "X")
        hidden = int(_attr(node, "hidden_size"))
        directions = 2 if _attr(node, "direction", b"forward") in (b"bidirectional",
                                                                     "bidirectional") else 1
        steps, batch, features = (x[1], x[0], x[2]) if _attr(node, "layout", 0) else x
        return (directions * steps * batch * RECURRENT[op] * hidden * (features + hidden),
                directions * steps * batch * RECURRENT[op] * hidden)
    raise _Uncounted(f"no counting rule for {op}")  # pragma: no cover
