"""``Network.from_torch`` on a module that is not a Sequential: traced by ``torch.fx``.

Each fx node becomes one node of the graph: a ``call_module`` of a supported layer as
``torch_import.layer_node`` reads it, and the functions and methods torchvision's models call
between their layers (additions, products, concatenation on the channels, flatten, the
activations, global average pooling). A call the plan cannot serve is refused, naming the fx
node and its target, before anything runs.
"""

from __future__ import annotations

import math
import operator

from .graph import HARDSIGMOID, INPUT, RELU, RELU6, Activation, Graph, Node
from .torch_import import layer_node


def from_fx(module, dtype, training: bool = False) -> Graph:
    """The graph of ``module`` as ``torch.fx.symbolic_trace`` sees it.

    Raises
    ------
    TypeError
        A module fx cannot trace, or a call, method or layer the plan does not serve (naming
        the fx node's target).
    ValueError
        A supported call with arguments the plan does not serve.
    """
    import torch.fx

    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as exc:  # fx raises many kinds: say which module, keep the reason
        raise TypeError(f"Network.from_torch could not trace {type(module).__name__} with "
                        f"torch.fx ({type(exc).__name__}: {exc}); pass an nn.Sequential or a "
                        f"module torch.fx can trace") from None
    modules = dict(traced.named_modules())
    values: dict = {}  # fx node -> graph value, or ("batch",) for x.size(0)
    nodes: list[Node] = []
    output = None
    for fx_node in traced.graph.nodes:
        if fx_node.op == "placeholder":
            if values:
                raise TypeError(f"Network.from_torch plans modules of one input, but "
                                f"{type(module).__name__}.forward takes another: "
                                f"{fx_node.target!r}")
            values[fx_node] = INPUT
        elif fx_node.op == "output":
            result = fx_node.args[0]
            if not isinstance(result, torch.fx.Node) or not isinstance(values.get(result), str):
                raise TypeError(f"Network.from_torch plans modules of one output tensor, but "
                                f"{type(module).__name__}.forward returns {result!r}")
            output = values[result]
        else:
            values[fx_node] = _map(fx_node, modules, values, nodes, dtype, training)
    return Graph(nodes, output, dtype, source="torch.fx")


def _describe(fx_node) -> str:
    target = fx_node.target
    name = getattr(target, "__name__", None) or str(target)
    return f"fx node {fx_node.name!r} ({fx_node.op} {name})"


def _map(fx_node, modules, values, nodes, dtype, training):
    """Append the graph node of ``fx_node``; returns the value it makes."""
    import torch

    label = _describe(fx_node)
    out = f"v{len(nodes)}"

    def value(arg):
        if isinstance(arg, torch.fx.Node) and isinstance(values.get(arg), str):
            return values[arg]
        raise TypeError(f"{label}: expected a tensor the plan computes as argument, but got "
                        f"{arg!r}")

    def add(op, inputs, **attrs):
        nodes.append(Node(op, tuple(inputs), out, label, attrs))
        return out

    if fx_node.op == "call_module":
        layer = modules[fx_node.target]
        node = layer_node(layer, fx_node.target, dtype, value(fx_node.args[0]), out, training)
        nodes.append(node)
        return out
    if fx_node.op == "get_attr":
        raise TypeError(f"{label}: a tensor attribute used in forward is not supported by "
                        "Network.from_torch (layers only)")
    target, args, kwargs = fx_node.target, fx_node.args, fx_node.kwargs
    name = target if fx_node.op == "call_method" else getattr(target, "__name__", str(target))
    functional = torch.nn.functional
    if fx_node.op == "call_method" and name == "size":
        if args[1:] in ((0,), ()) and not kwargs and len(args) == 2:
            return ("batch",)
        raise TypeError(f"{label}: only x.size(0) is supported by Network.from_torch")
    if target in (operator.add, torch.add) or name in ("add", "__add__"):
        if kwargs.get("alpha", 1) != 1 or len(args) != 2:
            raise ValueError(f"{label}: only a + b is supported by Network.from_torch")
        return add("add", [value(args[0]), value(args[1])])
    if target in (operator.mul, torch.mul) or name in ("mul", "__mul__"):
        if len(args) != 2 or kwargs:
            raise ValueError(f"{label}: only a * b is supported by Network.from_torch")
        return add("mul", [value(args[0]), value(args[1])])
    if target is torch.cat:
        tensors = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if dim not in (1, -3):
            raise ValueError(f"{label}: torch.cat along dim={dim} is not supported by "
                             "Network.from_torch, only along the channels (dim=1)")
        return add("concat", [value(t) for t in tensors])
    if target is torch.flatten or name == "flatten":
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        if start != 1 or end != -1:
            raise ValueError(f"{label}: only flatten(x, 1) is supported by Network.from_torch, "
                             f"but got start_dim={start} and end_dim={end}")
        return add("flatten", [value(args[0])])
    if name in ("view", "reshape"):
        shape = args[1:] if len(args) > 2 or not isinstance(args[1], (tuple, list)) else args[1]
        if len(shape) == 2 and values.get(shape[0]) == ("batch",) and shape[1] == -1:
            return add("flatten", [value(args[0])])
        raise ValueError(f"{label}: only x.{name}(x.size(0), -1) is supported by "
                         "Network.from_torch")
    if target is functional.dropout and training:  # as the call says (training=True its default)
        p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
        if (args[2] if len(args) > 2 else kwargs.get("training", True)) and p > 0:
            return add("identity", [value(args[0])], dropout=float(p))
    if name == "contiguous" or target is functional.dropout:
        return value(args[0])
    if target in (functional.softmax, torch.softmax) or name == "softmax":
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        return add("softmax", [value(args[0])], dim=dim)
    if target is functional.adaptive_max_pool2d:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        if size in (1, (1, 1), [1, 1]) and not kwargs.get("return_indices", False):
            return add("gmp", [value(args[0])])
        _refuse(label, "only global max pooling (output size 1, no indices) is supported")
    if target in (functional.adaptive_avg_pool2d,) or name == "mean":
        return add("gap", [value(args[0])]) if _global_average(target, name, args, kwargs) \
            else _refuse(label, "only global average pooling (output size 1, or mean over "
                                "dims (2, 3) keeping them) is supported")
    act = _activation(target, name, args, kwargs, label)
    if act is not None:
        # torch.clamp passes the gradient at its bounds, ReLU and Hardtanh do not
        closed = target is torch.clamp or name in ("clamp", "clip")
        return add("act", [value(args[0])], act=act, **({"closed": True} if closed else {}))
    raise TypeError(f"{label} is not supported by Network.from_torch; it maps layers "
                    "(nn.Conv2d, nn.BatchNorm2d, ...), +, *, torch.cat(dim=1), flatten, "
                    "the activations and global average pooling")


def _refuse(label, why):
    raise ValueError(f"{label}: {why} by Network.from_torch")


def _global_average(target, name, args, kwargs) -> bool:
    import torch

    if target is torch.nn.functional.adaptive_avg_pool2d:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    return keep and dims is not None and sorted(d % 4 for d in dims) == [2, 3]


def _activation(target, name, args, kwargs, label):
    """The Activation of an activation call, or None if it is not one."""
    import torch

    F = torch.nn.functional
    if target in (F.relu, torch.relu) or name in ("relu", "relu_"):
        return RELU
    if target is F.relu6:
        return RELU6
    if target is F.hardtanh:
        lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        return Activation("clamp", float(lo), float(hi))
    if target is torch.clamp or name in ("clamp", "clip"):
        lo = args[1] if len(args) > 1 else kwargs.get("min")
        hi = args[2] if len(args) > 2 else kwargs.get("max")
        if not all(v is None or isinstance(v, (int, float)) for v in (lo, hi)):
            _refuse(label, "clamp with tensor bounds is not supported")
        return Activation("clamp", -math.inf if lo is None else float(lo),
                          math.inf if hi is None else float(hi))
    if target is F.leaky_relu:
        slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
        return Activation("leaky", alpha=float(slope))
    if target is F.hardsigmoid:
        return HARDSIGMOID
    if target is F.hardswish:
        return Activation("hardswish")
    if target in (torch.sigmoid, F.sigmoid) or name == "sigmoid":
        return Activation("sigmoid")
    if target in (torch.tanh, F.tanh) or name == "tanh":
        return Activation("tanh")
    if target is F.silu:
        return Activation("silu")
    if target is F.mish:
        return Activation("mish")
    if target is F.gelu:
        approximate = kwargs.get("approximate", "none")
        return Activation("gelu" if approximate == "none" else "gelu_tanh")
    return None
