"""Any ONNX model, planned per input shape: shapes folded, plan segments, and a fallback.

A model that is not one plan (``onnx_import.NotOneGraph``: an operator the plan has no kernel
for, several inputs or outputs, a reshape whose target the graph computes from the input's
shape) is planned when it first meets an input shape, as ONNX Runtime plans a session:

1. :func:`fold`: the shape subgraphs and everything else computed from constants alone become
   constants (``Shape`` and ``Size`` of a value whose shape is known, then every node whose
   inputs are all constants, run once by ``onnx.reference``), and every value's shape is
   inferred by ``onnx.shape_inference`` for the input shapes at hand;
2. :func:`partition`: each remaining node either reads into the plan (``onnx_import.Reader``)
   or runs in the fallback; a run of consecutive plan nodes is a segment, whatever (N, C, H,
   W) values of one batch it reads from outside and whoever reads its values after it: a
   :class:`~fastconv.network.network.Network` of several inputs and outputs (its own layout,
   arena and steps; NCHW only at its edges);
3. :class:`Program`: the segments and the fallback nodes in the graph's order. A fallback node
   runs through ``onnx.reference`` (the ``onnx`` package's own implementation of the
   specification), built once per node, or through a NumPy kernel of
   ``fallback_kernels`` where ``onnx.reference`` is wrong; its result must have the shape
   ONNX's shape inference gives it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .graph import INPUT, Graph
from .onnx_import import (_FLOATS, NotOneGraph, Reader, check_declared, declared_shapes,
                          model_inputs, plan_dims)

#: Operators whose output is not a function of their inputs: never folded.
NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Multinomial", "Bernoulli"}
#: Above this many elements, a constant is given to shape inference by its type alone.
_INFERENCE_DATA = 1 << 12
FALLBACK = "fallback: onnx.reference"


def _elem_dtype(elem_type: int):
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # an ONNX type without a NumPy twin (bfloat16, float8, strings)
        return None


def _label(node) -> str:
    return f"node '{node.name or node.output[0]}' ({node.op_type})"


def evaluator(node, opset_imports):
    """``onnx.reference``'s evaluator of one node, at the model's opsets (an evaluator made
    from a bare node takes the newest version of its operator)."""
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = list(dict.fromkeys([*(v for v in node.input if v), *outer_reads(node)]))
    graph = helper.make_graph([node], "node", [helper.make_value_info(v, onnx.TypeProto())
                                               for v in names],
                              [helper.make_value_info(v, onnx.TypeProto())
                               for v in node.output if v])
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=list(opset_imports)))


def _has_subgraph(node) -> bool:
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)


@dataclass
class Folded:
    """A model specialised to input shapes: what is left to run, and what is known."""

    nodes: list  # onnx.NodeProto, in the graph's order, each reading at least one non-constant
    constants: dict  # value -> ndarray
    shapes: dict  # value -> shape (None for an unknown dimension)
    dtypes: dict  # value -> numpy dtype (None when ONNX has no NumPy twin)


def fold(proto, opset: int, inputs: dict) -> Folded:
    """Fold ``proto`` for ``inputs`` (name -> (shape, dtype)): constants and shapes computed,
    every value's shape and type inferred. Nothing here runs a node that reads an input."""
    from onnx import numpy_helper

    graph = proto.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = list(graph.node)
    while True:
        shapes, dtypes = _infer(proto, opset, nodes, constants, inputs)
        _within_budget(nodes, shapes, dtypes)
        inlined = _inline_constant_ifs(nodes, constants)
        kept, changed = [], len(inlined) != len(nodes) or any(
            a is not b for a, b in zip(inlined, nodes))
        for node in inlined:
            folded = _fold_node(node, proto.opset_import, constants, shapes)
            if folded is None:
                kept.append(node)
            else:
                constants.update(folded)
                changed = True
        nodes = kept
        if not changed:
            break
    for name, value in constants.items():
        shapes[name], dtypes[name] = tuple(np.shape(value)), np.asarray(value).dtype
    return Folded(nodes, constants, shapes, dtypes)


def _infer(proto, opset, nodes, constants, inputs):
    """Every value's shape and dtype by ``onnx.shape_inference`` over the nodes left, the
    inputs' shapes given; small constants with their data (a Reshape's target, a Resize's
    scales), large ones by their type."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    used = {v for n in nodes for v in n.input} | {o.name for o in graph.output}
    initializers, typed = [], []
    for name in used & set(constants):
        value = np.asarray(constants[name])
        if value.size <= _INFERENCE_DATA:
            initializers.append(numpy_helper.from_array(value, name))
        else:
            typed.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
    given = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtype), shape)
             for name, (shape, dtype) in inputs.items()]
    outputs = [helper.make_value_info(o.name, onnx.TypeProto()) for o in graph.output]
    model = helper.make_model(
        helper.make_graph(nodes, "folded", given + typed, outputs, initializers),
        ir_version=proto.ir_version)
    del model.opset_import[:]
    model.opset_import.extend(proto.opset_import)
    model.functions.extend(proto.functions)
    shapes, dtypes = {}, {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
        infos = [*inferred.value_info, *inferred.output]
    except Exception:  # what inference cannot say is left unknown: those nodes fall back
        infos = []
    for info in [*given, *typed, *infos]:
        tensor = info.type.tensor_type
        if not info.type.HasField("tensor_type"):
            continue
        if tensor.elem_type:
            dtypes[info.name] = _elem_dtype(tensor.elem_type)
        if tensor.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                      for d in tensor.shape.dim)
    return shapes, dtypes


def _within_budget(nodes, shapes, dtypes) -> None:
    """Refuse a node whose output, at the shapes inferred, would exceed the plan's memory
    budget (``config.get_plan_memory_budget``), before it is folded or run."""
    import math

    from .. import config

    budget = config.get_plan_memory_budget()
    for node in nodes:
        for name in node.output:
            shape = shapes.get(name)
            if not name or shape is None or None in shape:
                continue
            dtype = dtypes.get(name)
            nbytes = math.prod(shape) * (dtype.itemsize if dtype is not None else 1)
            if nbytes > budget:
                raise ValueError(f"{_label(node)}: its output {name!r} of shape {list(shape)} "
                                 f"takes {nbytes / 2**20:.1f} MiB, over the plan's memory "
                                 f"budget of {budget / 2**20:.1f} MiB "
                                 "(fastconv.config.set_plan_memory_budget, or "
                                 "FASTCONV_PLAN_MEMORY_MB)")


def _inline_constant_ifs(nodes, constants) -> list:
    """The nodes, each ``If`` whose condition is a constant replaced by its branch's nodes
    (their initializers become constants, their outputs the If's, through Identity)."""
    from onnx import helper, numpy_helper

    out = []
    for node in nodes:
        if node.op_type != "If" or node.input[0] not in constants:
            out.append(node)
            continue
        branches = {a.name: a.g for a in node.attribute}
        branch = branches["then_branch" if np.asarray(constants[node.input[0]]).reshape(-1)[0]
                          else "else_branch"]
        for tensor in branch.initializer:
            constants[tensor.name] = numpy_helper.to_array(tensor)
        out += _inline_constant_ifs(list(branch.node), constants)
        out += [helper.make_node("Identity", [inner.name], [outer])
                for inner, outer in zip(branch.output, node.output) if outer]
    return out


def outer_reads(node) -> list[str]:
    """The values of the enclosing graph that ``node``'s subgraphs read (besides its inputs)."""
    found = []
    for attr in node.attribute:
        for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
            known = ({i.name for i in graph.input} | {t.name for t in graph.initializer})
            for inner in graph.node:
                found += [v for v in [*inner.input, *outer_reads(inner)]
                          if v and v not in known and v not in found]
                known |= set(inner.output)
    return found


def _fold_node(node, opset_imports, constants, shapes):
    """The node's outputs as constants, or None when it must run."""
    if node.op_type in NOT_FOLDED or _has_subgraph(node) or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in ("Shape", "Size"):
        shape = (np.shape(constants[node.input[0]]) if node.input[0] in constants
                 else shapes.get(node.input[0]))
        if shape is None or None in shape:
            return None
        if node.op_type == "Size":
            return {node.output[0]: np.array(int(np.prod(shape)), np.int64)}
        attrs = {a.name: a.i for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return {node.output[0]: np.array(shape[start:end] if end else shape[start:0],
                                         np.int64).reshape(-1)}
    present = [v for v in node.input if v]
    if not all(v in constants for v in present):
        return None
    try:
        results = evaluator(node, opset_imports).run(None, {v: constants[v] for v in present})
    except Exception:  # left to run, where its error names the node
        return None
    return {name: np.asarray(value) for name, value in zip(node.output, results) if name}


# --- the segments --------------------------------------------------------------------------


@dataclass
class Segment:
    """Consecutive plan nodes: the values they read from outside (``entries``, (N, C, H, W)
    of one batch and dtype) and those read after them (``exits``)."""

    nodes: list
    entries: list
    dtype: object = None
    exits: list = field(default_factory=list)
    net: object = None  # its Network, once planned
    # exit -> the index of the plan's output that gives it, or the entry it equals
    gives: dict = field(default_factory=dict)

    def key(self, shapes) -> tuple:
        """Its Network's plan key: the first entry's shape, the others' (an (N, C, L) value
        as the plan's (N, C, 1, L))."""
        return (planned(shapes[self.entries[0]]), tuple(planned(shapes[e])
                                                        for e in self.entries[1:]))


def planned(shape) -> tuple:
    """An ONNX shape (N, C, H, W) or (N, C, L) as the plan's (N, C, H, W)."""
    return (shape[0], *plan_dims(shape))


def as_planned(x: np.ndarray) -> np.ndarray:
    """An (N, C, L) array as the plan's (N, C, 1, L) (a view); (N, C, H, W) as it is."""
    return x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]) if x.ndim == 3 else x


@dataclass
class Fallback:
    """One node run by ``onnx.reference``."""

    node: object
    evaluator: object = None
    shape: str = ""
    why: str = ""  # why the plan has no kernel for it
    reads: list = field(default_factory=list)  # its inputs, and what its subgraphs read


def _unreadable(node, folded: Folded, opset, all_nodes, outputs) -> str:
    """Why the plan has no kernel for ``node``, or "" when it has one."""
    activations = [v for v in node.input if v and v not in folded.constants]
    dtypes = {folded.dtypes.get(v) for v in activations}
    if not activations or len(dtypes) != 1 or next(iter(dtypes)) not in _FLOATS.values():
        return (f"{_label(node)} reads {[str(d) for d in dtypes]}: the plan computes on "
                "float32 or float64")
    if any(folded.shapes.get(v) is None or None in folded.shapes[v] for v in activations):
        return f"{_label(node)}: its input's shape is not known before it runs"
    # the constants are folded already (a Constant node reads into them no more)
    reader = Reader(opset, all_nodes, outputs, folded.constants, folded.shapes,
                    next(iter(dtypes)))
    reader.values = {v: f"probe:{v}" for v in activations}
    try:
        reader.read(node)
    except NotOneGraph as exc:
        return str(exc)
    return ""


def partition(folded: Folded, opset: int, outputs: list[str]) -> list:
    """The nodes left after folding as segments and fallback nodes, in an order that runs.

    Raises
    ------
    ValueError
        A node the ONNX specification forbids (from ``Reader.read``), naming it.
    """
    nodes = folded.nodes
    why = {id(n): _unreadable(n, folded, opset, nodes, outputs) for n in nodes}
    readers: dict[str, list] = {}
    for node in nodes:
        for v in [*node.input, *outer_reads(node)]:
            readers.setdefault(v, []).append(node)

    def group(run: list) -> list:
        items, current = [], None
        for node in run:
            if why[id(node)]:
                current = None
                items.append(Fallback(node, why=why[id(node)]))
                continue
            reads = list(dict.fromkeys(v for v in node.input if v and v not in folded.constants))
            dtype = folded.dtypes[reads[0]]
            if current is not None:
                outside = [v for v in reads if v not in _produced(current)]
                if dtype == current.dtype and all(_enters(v, current.entries[0]) for v in outside):
                    current.nodes.append(node)
                    current.entries += [v for v in outside if v not in current.entries]
                    continue
            current = None
            if all(_enters(v, reads[0]) for v in reads):
                current = Segment([node], reads, dtype)
                items.append(current)
            else:  # a 2-D value from outside, or inputs of two batches: the fallback's
                items.append(Fallback(node, why=(
                    f"{_label(node)} reads {reads} from outside a plan segment, which takes "
                    "(N, C, H, W) inputs of one batch")))
        return items

    def _enters(value, first) -> bool:
        shape, lead = folded.shapes[value], folded.shapes[first]
        return (plan_dims(shape) is not None and plan_dims(lead) is not None
                and shape[0] == lead[0])

    items = group(nodes)
    for item in items:
        if isinstance(item, Segment):
            inside = {id(n) for n in item.nodes}
            item.exits = [v for n in item.nodes for v in n.output if v and (
                v in outputs or any(id(r) not in inside for r in readers.get(v, [])))]
    return [i for i in items if not (isinstance(i, Segment) and not i.exits)]


def _produced(segment: Segment) -> set:
    return {v for n in segment.nodes for v in n.output}


class _PassThrough:
    """An evaluator for nodes that return their input: Identity, and Dropout at inference
    (its mask all true), whatever the rank or type."""

    def __init__(self, outputs: int):
        self.outputs = outputs

    def run(self, _, feeds):
        x = next(iter(feeds.values()))
        return [x, np.ones(np.shape(x), bool)][:self.outputs]


def _passes_through(node, constants):
    if node.op_type == "Identity" and node.input[0]:
        return _PassThrough(1)
    if node.op_type != "Dropout":
        return None
    training = node.input[2] if len(node.input) > 2 else ""
    if training and (training not in constants or bool(np.asarray(constants[training]).any())):
        return None  # in training mode, dropped at random: onnx.reference's
    return _PassThrough(len(node.output))


# --- the program ---------------------------------------------------------------------------


class Program:
    """One input shape's plan of a model: segments and fallback nodes, run in order.

    Parameters
    ----------
    proto : onnx.ModelProto
    opset : int
    inputs : dict
        Input name -> (shape, dtype), in the graph's order.
    make_network : callable
        Graph -> Network (the backend and threads the model was planned with).
    """

    def __init__(self, proto, opset, inputs: dict, make_network):
        self.inputs = inputs
        self.outputs = [o.name for o in proto.graph.output]
        folded = fold(proto, opset, inputs)
        self.folded = folded
        self.items = partition(folded, opset, self.outputs)
        for item in self.items:
            if isinstance(item, Segment):
                self._plan_segment(item, folded, opset, make_network)
        for k, item in enumerate(self.items):
            if isinstance(item, Fallback):
                self.items[k] = self._fallback(item.node, proto.opset_import, item.why)
                self.items[k].reads = list(dict.fromkeys([*(v for v in item.node.input if v),
                                                          *outer_reads(item.node)]))
        # the constants the run reads: the nodes' inputs and the outputs
        needed = {v for i in self.items for v in self._reads(i)} | set(self.outputs)
        self.constants = {v: folded.constants[v] for v in needed if v in folded.constants}
        missing = [o for o in self.outputs if o not in self.constants and o not in inputs
                   and not any(o in self._writes(i) for i in self.items)]
        if missing:
            raise ValueError(f"Network.from_onnx: the outputs {missing} are computed by no node")
        # when a value is last read, so that the run lets it go
        self.last_read: dict[str, int] = {}
        for k, item in enumerate(self.items):
            for v in self._reads(item):
                self.last_read[v] = k

    def _plan_segment(self, segment: Segment, folded: Folded, opset, make_network) -> None:
        """Its nodes as one Graph of several inputs and outputs, and the Network of it; each
        exit either a plan output or (through identities) one of its entries."""
        from .graph import infer_shapes

        reader = Reader(opset, folded.nodes, self.outputs, dict(folded.constants),
                        folded.shapes, segment.dtype)
        names = [INPUT, *(f"in{k}" for k in range(1, len(segment.entries)))]
        reader.values = dict(zip(segment.entries, names))
        for node in segment.nodes:
            reader.read(node)
        inputs = dict(zip(names, segment.entries))
        outputs = []
        for exit_value in segment.exits:
            value = reader.values[exit_value]
            if value in inputs:
                segment.gives[exit_value] = inputs[value]
            else:
                if value not in outputs:
                    outputs.append(value)
                segment.gives[exit_value] = outputs.index(value)
        if not outputs:
            return  # nothing but identities
        graph = Graph(reader.nodes, outputs[0], segment.dtype, source="onnx",
                      input_name=segment.entries[0], extra_inputs=tuple(names[1:]),
                      extra_outputs=tuple(outputs[1:]))
        segment.net = make_network(graph)
        first, extra = segment.key(folded.shapes)
        shapes = infer_shapes(segment.net.graph, first, dict(zip(names[1:], extra)))
        for exit_value, given in segment.gives.items():
            if isinstance(given, int):
                expected = folded.shapes.get(exit_value)
                got = shapes[segment.net.graph.outputs[given]].batched(first[0])
                if expected is None or None in expected:
                    continue
                if (planned(expected) if len(expected) == 3 else tuple(expected)) != got:
                    raise AssertionError(f"the plan of {_label(segment.nodes[-1])} gives "
                                         f"{list(got)}, ONNX {list(expected)}")

    def _fallback(self, node, opset_imports, why: str) -> Fallback:
        shape = self.folded.shapes.get(node.output[0])
        shown = "?" if shape is None else str(["?" if d is None else d for d in shape])
        from .fallback_kernels import kernel_for

        opset = next((o.version for o in opset_imports if o.domain in ("", "ai.onnx")), 0)
        own = _passes_through(node, self.folded.constants) or kernel_for(node, opset)
        if own is not None:
            return Fallback(node, own, shown, why)
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"{_label(node)}: operators of domain {node.domain!r} have no "
                             "kernel here and no reference implementation in onnx")
        try:
            run = evaluator(node, opset_imports)
        except Exception as exc:
            raise ValueError(f"{_label(node)} has no kernel here, and onnx.reference cannot "
                             f"run it: {str(exc).strip().splitlines()[0]}") from None
        return Fallback(node, run, shown, why)

    @staticmethod
    def _reads(item) -> list[str]:
        return item.entries if isinstance(item, Segment) else item.reads

    @staticmethod
    def _writes(item) -> list[str]:
        return item.exits if isinstance(item, Segment) else [v for v in item.node.output if v]

    def _check_shape(self, node, name, value) -> None:
        """A fallback node's result has the shape ONNX's shape inference gives it, or it is
        refused (never a wrong answer from a reference implementation's corner)."""
        expected = self.folded.shapes.get(name)
        if expected is not None and (len(expected) != value.ndim or any(
                e is not None and e != n for e, n in zip(expected, value.shape))):
            raise ValueError(f"{_label(node)} (run by onnx.reference) gives {name!r} of shape "
                             f"{list(value.shape)}, but the ONNX specification's shape is "
                             f"{['?' if e is None else e for e in expected]}: refused")

    def run(self, feeds: dict, clock=None) -> list:
        """The outputs for ``feeds`` (input name -> array), in the graph's order. With a
        ``clock``, the segments' steps and each fallback node are timed into it."""
        values = dict(self.constants)
        values.update(feeds)
        for k, item in enumerate(self.items):
            if isinstance(item, Segment):
                outs = [] if item.net is None else item.net._run_segment(
                    [as_planned(values[e]) for e in item.entries], clock)
                for exit_value, given in item.gives.items():
                    value = outs[given] if isinstance(given, int) else values[given]
                    shape = self.folded.shapes.get(exit_value)
                    if shape is not None and len(shape) != value.ndim:
                        value = value.reshape(shape)  # the plan's (N, C, 1, L) as (N, C, L)
                    values[exit_value] = value
            else:
                start = time.perf_counter()
                node = item.node
                try:
                    results = item.evaluator.run(None, {v: values[v] for v in item.reads})
                except Exception as exc:  # onnx.reference's own errors, in its words
                    raise ValueError(f"{_label(node)} (run by onnx.reference) failed: "
                                     f"{type(exc).__name__}: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc) else ''}"
                                     ) from exc
                for name, value in zip(node.output, results):
                    if name:
                        values[name] = value = np.asarray(value)
                        self._check_shape(node, name, value)
                if clock is not None:
                    clock.add(_label(node), time.perf_counter() - start)
            for v in self._reads(item):  # let go of what no later item reads
                if self.last_read.get(v) == k and v not in self.outputs and v not in feeds:
                    values.pop(v, None)
        return [np.array(values[o], copy=True) if (o in self.constants or o in feeds)
                else values[o] for o in self.outputs]

    # --- what it is -------------------------------------------------------------------------

    def node_plans(self, batch: int) -> list:
        """Per plan node and fallback node, in order: ``planner.NodePlan`` rows."""
        from .onnx_counts import node_counts
        from .planner import NodePlan

        rows = []
        for item in self.items:
            if isinstance(item, Segment):
                if item.net is not None:
                    rows += item.net._planned(*item.key(self.folded.shapes)).plan.nodes
            else:
                node = item.node
                entry = next((v for v in node.input if v and v not in self.constants), None)
                shown = self.folded.shapes.get(entry) if entry else None
                macs, _ = node_counts(node, self.folded)
                rows.append(NodePlan(_label(node), node.op_type, FALLBACK,
                                     "?" if shown is None else str(list(shown)), item.shape,
                                     macs, [], 0))
        return rows

    def describe(self) -> list[str]:
        lines = []
        for item in self.items:
            if isinstance(item, Segment):
                what = (f"plan segment {_names(item.entries)} -> {_names(item.exits)}: "
                        f"{len(item.nodes)} nodes")
                lines.append(f"  {what}" + (" (aliases)" if item.net is None else ""))
                if item.net is not None:
                    plan = item.net._planned(*item.key(self.folded.shapes)).plan
                    lines += [f"    {n.name}: {n.kernel}, {n.input} -> {n.output}"
                              for n in plan.nodes]
            else:
                reason = item.why.removeprefix(_label(item.node)).lstrip(" :")
                lines.append(f"  {_label(item.node)}: {FALLBACK} -> {item.shape}"
                             + (f" ({reason})" if reason else ""))
        return lines

    @property
    def fallback_nodes(self) -> list[str]:
        return [_label(i.node) for i in self.items if isinstance(i, Fallback)]

    @property
    def fallback_reasons(self) -> list[str]:
        return [i.why for i in self.items if isinstance(i, Fallback)]

    @property
    def arena_bytes(self) -> int:
        return sum(i.net._planned(*i.key(self.folded.shapes)).plan.arena_bytes
                   for i in self.items if isinstance(i, Segment) and i.net is not None)


def _names(values: list) -> str:
    return ", ".join(repr(v) for v in values)


@dataclass
class CompositePlan:
    """A program's rows as ``NetworkProfile`` reads a shape plan's."""

    input_shape: tuple
    dtype: np.dtype
    nodes: list
    arena_bytes: int = 0


# --- the public object ---------------------------------------------------------------------


def _network_class():
    from .network import Network

    return Network


class OnnxNetwork(_network_class()):
    """An ONNX model that is not one plan, planned per input shape (see the module
    docstring); made by :meth:`Network.from_onnx`, used as a :class:`Network`."""

    def __init__(self, proto, opset, backend="auto", threads=None, *, fallback=True, why=""):
        import threading

        self._settle(backend, threads)
        self.proto, self.opset, self.fallback = proto, opset, fallback
        declared = declared_shapes(proto.graph)
        self.inputs = []  # (name, dtype, declared shape)
        for info in model_inputs(proto.graph):
            dtype = _elem_dtype(info.type.tensor_type.elem_type)
            if not info.type.HasField("tensor_type") or dtype is None:
                raise TypeError(f"Network.from_onnx: input {info.name!r} is not a tensor of a "
                                f"type NumPy has (sequences, optionals, maps, bfloat16 and "
                                f"float8 are not read)")
            self.inputs.append((info.name, dtype, declared.get(info.name)))
        self.output_names = [o.name for o in proto.graph.output]
        self.dtype = self.inputs[0][1] if self.inputs else None
        local = {(f.domain, f.name) for f in proto.functions}
        foreign = [n for n in proto.graph.node if n.domain not in ("", "ai.onnx")
                   and (n.domain, n.op_type) not in local]
        if foreign:
            raise ValueError(f"{_label(foreign[0])} is not supported by Network.from_onnx: "
                             f"operators of domain {foreign[0].domain!r} have no kernel here "
                             f"and no reference implementation in onnx"
                             + (f" ({len(foreign) - 1} more such nodes)" if len(foreign) > 1
                                else ""))
        self._programs: dict = {}
        self._lock = threading.Lock()
        self._why = why
        if not fallback:
            self._refuse_fallback()

    @property
    def declared_input(self) -> tuple:
        """The first input's name and its dimensions past the batch, as declared."""
        name, _, declared = self.inputs[0]
        return name, None if declared is None else tuple(declared[1:])

    def _make_network(self, graph: Graph):
        net = _network_class()(graph, self._settings[0], self.threads)
        return net

    def _refuse_fallback(self) -> None:
        shapes = []
        for name, dtype, declared in self.inputs:
            if declared is None or None in declared[1:]:
                raise ValueError(f"Network.from_onnx(fallback=False): {self._why}")
            shapes.append((1, *declared[1:]))
        missing = self._program(tuple(shapes)).fallback_reasons
        if missing:
            raise ValueError(f"Network.from_onnx(fallback=False): the plan has no kernel for "
                             f"{len(missing)} node{'s' * (len(missing) > 1)}: "
                             + "; ".join(missing))

    # --- running ----------------------------------------------------------------------------

    def _feeds(self, args) -> dict:
        if len(args) == 1 and isinstance(args[0], dict):
            given = dict(args[0])
            unknown = sorted(set(given) - {n for n, _, _ in self.inputs})
            if unknown:
                raise ValueError(f"the model has no input {unknown[0]!r}; its inputs are "
                                 f"{[n for n, _, _ in self.inputs]}")
            args = tuple(given[n] if n in given else None for n, _, _ in self.inputs)
        if len(args) != len(self.inputs) or any(a is None for a in args):
            raise TypeError(f"the model takes {len(self.inputs)} input"
                            f"{'s' * (len(self.inputs) > 1)} "
                            f"{[n for n, _, _ in self.inputs]}, but got {len(args)}")
        feeds = {}
        for (name, dtype, declared), x in zip(self.inputs, args):
            if isinstance(x, np.ma.MaskedArray) or not isinstance(x, np.ndarray):
                raise TypeError(f"input {name!r} must be a numpy.ndarray, but got "
                                f"{type(x).__name__}")
            if x.dtype != dtype:
                raise TypeError(f"input {name!r}: Input type ({x.dtype}) and the model's type "
                                f"for it ({dtype}) should be the same")
            check_declared(name, declared, x.shape)
            feeds[name] = x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))
        return feeds

    def _program(self, key) -> Program:
        program = self._programs.get(key)
        if program is None:
            with self._lock:
                program = self._programs.get(key)
                if program is None:
                    inputs = {name: (shape, dtype) for (name, dtype, _), shape
                              in zip(self.inputs, key)}
                    program = self._programs[key] = Program(self.proto, self.opset, inputs,
                                                            self._make_network)
        return program

    def _run_feeds(self, feeds: dict, clock=None):
        key = tuple(tuple(int(n) for n in feeds[name].shape) for name, _, _ in self.inputs)
        outputs = self._program(key).run(feeds, clock)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __call__(self, *inputs):
        """Run the model on its inputs (in the graph's order, or one dict by name); returns
        one array, or a tuple of them in the graph's order when it has several outputs."""
        return self._run_feeds(self._feeds(inputs))

    def _key(self, input_shapes) -> tuple:
        shapes = [input_shapes] if len(self.inputs) == 1 else list(input_shapes)
        fake = [np.lib.stride_tricks.as_strided(np.zeros((), dtype), tuple(s), (0,) * len(s))
                for (_, dtype, _), s in zip(self.inputs, shapes)]
        feeds = self._feeds(tuple(fake))
        return tuple(tuple(feeds[n].shape) for n, _, _ in self.inputs)

    def output_shape(self, input_shape):
        """The output's shape (a list of them for several outputs) for inputs of these shapes
        (one shape, or one per input), without running the model."""
        program = self._program(self._key(input_shape))
        shapes = [program.folded.shapes.get(o) for o in self.output_names]
        if any(s is None or None in s for s in shapes):
            raise ValueError("the model's output shapes are not known without running it")
        return tuple(shapes[0]) if len(shapes) == 1 else [tuple(s) for s in shapes]

    def counts(self, input_shape) -> list[dict]:
        """Per node, what it computes (see :meth:`Network.counts`); fallback nodes count 0."""
        key = self._key(input_shape)
        return [dict(name=n.name, op=n.op, kernel=n.kernel, input=n.input, output=n.output,
                     fused=list(n.fused), layers=n.layers, macs=n.macs, flops=2 * n.macs,
                     params=n.params, bytes=n.bytes)
                for n in self._program(key).node_plans(key[0][0])]

    def profile(self, *inputs, budget: float = 1.0, min_repeats: int = 5):
        """Time every node, the fallback's too (see :meth:`Network.profile`)."""
        from .network import NetworkProfile, timed_calls

        feeds = self._feeds(inputs)
        key = tuple(feeds[n].shape for n, _, _ in self.inputs)
        if key[0][:1] == (0,):
            raise ValueError("profile needs at least one image, but got a batch of 0")
        program = self._program(key)
        self._run_feeds(feeds)  # compile, or load the cache
        whole, clock = timed_calls(lambda clock=None: program.run(feeds, clock), budget,
                                   min_repeats)
        plan = CompositePlan(key[0], self.dtype, program.node_plans(key[0][0]),
                             program.arena_bytes)
        return NetworkProfile(plan, clock.times, whole, self.threads, self.backend)

    # --- beyond one process -----------------------------------------------------------------

    def __reduce__(self):
        backend, threads = self._settings
        return _restore_onnx, (self.proto.SerializeToString(), self.opset, backend, threads,
                               self.fallback, self._why)

    def __dask_tokenize__(self):
        return (type(self).__name__, self._token, self._settings, self.threads)

    def with_threads(self, threads: int):
        return OnnxNetwork(self.proto, self.opset, self._settings[0], threads,
                           fallback=self.fallback, why=self._why)

    def map_blocks(self, x):
        if len(self.inputs) != 1 or len(self.output_names) != 1:
            raise ValueError("map_blocks maps a model of one input and one output, but this "
                             f"one has inputs {[n for n, _, _ in self.inputs]} and outputs "
                             f"{self.output_names}")
        return super().map_blocks(x)

    def __repr__(self) -> str:
        return (f"Network({len(self.proto.graph.node)} ONNX nodes, planned per input shape "
                f"with a fallback, backend={self.backend!r}, threads={self.threads}, "
                f"inputs={[n for n, _, _ in self.inputs]}, outputs={self.output_names})")

    def __str__(self) -> str:
        lines = [repr(self), f"  not one plan: {self._why}"]
        for key, program in self._programs.items():
            fallbacks = len(program.fallback_nodes)
            lines.append(f"planned for inputs {[list(s) for s in key]}: "
                         f"{sum(isinstance(i, Segment) for i in program.items)} plan segments, "
                         f"{fallbacks} fallback node{'s' * (fallbacks != 1)}, "
                         f"{len(program.folded.constants)} constants folded or given")
            lines += program.describe()
        if not self._programs:
            lines.append("not yet planned for an input shape (the first call plans it)")
        return "\n".join(lines)


def _restore_onnx(data, opset, backend, threads, fallback, why):
    import onnx

    return OnnxNetwork(onnx.load_from_string(data), opset, backend, threads, fallback=fallback,
                       why=why)
