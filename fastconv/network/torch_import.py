"""``Network.from_torch``: a torch module as a graph.

A ``torch.nn.Sequential`` (nested ones too) is read layer by layer; any other module is traced
by ``torch.fx`` (a module with residual additions, concatenations, squeeze-and-excitation
products), each fx node mapped to one node of the graph. The parameters are copied: changing
the module afterwards does not change the plan. A node of a layer with parameters names it
(``attrs["module"]``, its qualified name in the module), so that a training graph
(``training=True``: batch norms kept as layers, dropout kept) finds the parameters by the names
torch gives them.
"""

from __future__ import annotations

import numpy as np

from ..spec import ConvSpec, PoolSpec, swap_group_channels
from .graph import HARDSIGMOID, INPUT, RELU, RELU6, Activation, Graph, Node

SUPPORTED = ("Conv2d", "ConvTranspose2d", "BatchNorm2d", "ReLU", "ReLU6", "Hardtanh",
             "LeakyReLU", "Hardsigmoid", "Hardswish", "Sigmoid", "SiLU", "Tanh", "Mish", "GELU",
             "Identity", "Dropout", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
             "AdaptiveMaxPool2d", "Softmax", "Flatten", "Linear")


def _layers(module, prefix=""):
    """``(name, layer)`` of a Sequential, nested Sequentials opened in place."""
    import torch

    for key, layer in module.named_children():
        name = f"{prefix}{key}"
        if type(layer) is torch.nn.Sequential:
            yield from _layers(layer, f"{name}.")
        else:
            yield name, layer


def _numpy(tensor, dtype):
    return np.array(tensor.detach().cpu().numpy(), dtype=dtype, copy=True)


def _dtype(module) -> np.dtype:
    import torch

    dtypes = {p.dtype for p in module.parameters()} | {b.dtype for b in module.buffers()
                                                        if b.is_floating_point()}
    if not dtypes:
        return np.dtype(np.float32)
    if len(dtypes) > 1 or dtypes - {torch.float32, torch.float64}:
        raise TypeError(f"Network.from_torch needs a module whose parameters are all float32 "
                        f"or all float64, but got {sorted(str(d) for d in dtypes)}")
    return np.dtype(np.float64 if dtypes == {torch.float64} else np.float32)


def from_torch(module, training: bool = False) -> Graph:
    """The graph of an eval-mode module, or (``training``) of a module in training mode.

    Raises
    ------
    TypeError
        A layer or call not supported (naming it), a module torch.fx cannot trace, or
        parameters of mixed dtypes.
    ValueError
        A module in the other mode than asked for, or a layer's setting the plan does not
        serve.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"Network.from_torch expects a torch.nn.Module, but got "
                        f"{type(module).__name__}")
    wanted, call = ("training", ".train()") if training else ("eval", ".eval()")
    for name, layer in module.named_modules():
        if layer.training != training:
            where = f"layer {name} ({type(layer).__name__}) is" if name else "the module is"
            raise ValueError(f"Network.from_torch{'(training=True)' if training else ''} "
                             f"needs a module in {wanted} mode, but {where} in "
                             f"{'eval' if training else 'training'} mode: call {call} first")
    dtype = _dtype(module)
    if type(module).__name__ in SUPPORTED and type(module).__module__.split(".")[0] == "torch":
        layers = [("0", module)]  # one layer alone
    elif type(module) is torch.nn.Sequential:
        layers = list(_layers(module))
    else:
        from .fx_import import from_fx

        return from_fx(module, dtype, training)
    nodes, value = [], INPUT
    for i, (name, layer) in enumerate(layers):
        node = layer_node(layer, name, dtype, value, f"v{i}", training)
        nodes.append(node)
        value = node.output
    return Graph(nodes, value, dtype, source="torch")


def layer_node(layer, name, dtype, value, output, training: bool = False) -> Node:
    """The node of one torch layer (its qualified ``name``) reading ``value``; for a training
    graph where ``training``."""
    label = f"layer {name} ({type(layer).__name__})"
    kind = type(layer).__name__
    if kind not in SUPPORTED or type(layer).__module__.split(".")[0] != "torch":
        raise TypeError(f"{label} is not supported by Network.from_torch; supported: "
                        f"{', '.join(SUPPORTED)}")
    node = _node(layer, kind, label, dtype, value, output, training)
    if any(True for _ in layer.parameters()) or kind == "BatchNorm2d":
        node.attrs["module"] = name
    return node


def _node(layer, kind, label, dtype, value, output, training) -> Node:
    def node(op, **attrs):
        return Node(op, (value,), output, label, attrs)

    if kind == "Conv2d":
        if layer.padding_mode != "zeros":
            raise ValueError(f"{label}: padding_mode={layer.padding_mode!r} is not supported "
                             "by Network.from_torch, only 'zeros'")
        spec = ConvSpec(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                        layer.padding, layer.dilation, layer.groups, layer.bias is not None)
        bias = None if layer.bias is None else _numpy(layer.bias, dtype)
        return node("conv", spec=spec, weight=_numpy(layer.weight, dtype), bias=bias)
    if kind == "ConvTranspose2d":
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(f"{label}: padding={layer.padding!r}, padding_mode="
                             f"{layer.padding_mode!r} is not supported by Network.from_torch, "
                             "only numbers and 'zeros'")
        bias = None if layer.bias is None else _numpy(layer.bias, dtype)
        g = layer.groups
        # torch's (C_in, C_out / groups, kh, kw) as a grouped convolution's (C_out, C_in / g)
        ours = swap_group_channels(_numpy(layer.weight, dtype), g)
        return node("deconv", weight=ours, bias=bias, stride=tuple(layer.stride),
                    pads=tuple((p, p) for p in layer.padding),
                    dilation=tuple(layer.dilation),
                    output_padding=tuple(layer.output_padding), groups=g)
    if kind == "BatchNorm2d":
        if training:  # the layer itself: batch statistics, and its running ones updated
            return node("batchnorm", channels=layer.num_features)
        if layer.running_mean is None or layer.running_var is None:
            raise ValueError(f"{label} keeps no running statistics (track_running_stats=False): "
                             "it normalises each batch by its own, which a plan cannot fold")
        mean = _numpy(layer.running_mean, np.float64)
        var = _numpy(layer.running_var, np.float64)
        scale = 1 / np.sqrt(var + layer.eps)
        if layer.weight is not None:
            scale = scale * _numpy(layer.weight, np.float64)
        shift = -mean * scale
        if layer.bias is not None:
            shift = shift + _numpy(layer.bias, np.float64)
        return node("batchnorm", scale=scale, shift=shift)
    if kind == "ReLU":
        return node("act", act=RELU)
    if kind == "ReLU6":
        return node("act", act=RELU6)
    if kind == "Hardtanh":
        return node("act", act=Activation("clamp", float(layer.min_val), float(layer.max_val)))
    if kind == "LeakyReLU":
        return node("act", act=Activation("leaky", alpha=float(layer.negative_slope)))
    if kind == "Hardsigmoid":  # torch's: relu6(x + 3) / 6
        return node("act", act=HARDSIGMOID)
    if kind in ("Hardswish", "Sigmoid", "SiLU", "Tanh", "Mish"):
        return node("act", act=Activation(kind.lower()))
    if kind == "Softmax":  # its dim checked against its input's shape
        return node("softmax", dim=layer.dim)
    if kind == "GELU":
        return node("act", act=Activation("gelu" if layer.approximate == "none" else "gelu_tanh"))
    if kind == "Dropout" and training and layer.p > 0:
        return node("identity", dropout=float(layer.p))
    if kind in ("Identity", "Dropout"):
        return node("identity")
    if kind == "MaxPool2d":
        if layer.return_indices:
            raise ValueError(f"{label}: return_indices=True is not supported by "
                             "Network.from_torch")
        return node("maxpool", pool=PoolSpec("max", 1, layer.kernel_size, layer.stride,
                                             layer.padding, layer.dilation, layer.ceil_mode))
    if kind == "AvgPool2d":
        return node("avgpool", pool=PoolSpec("avg", 1, layer.kernel_size, layer.stride,
                                             layer.padding, 1, layer.ceil_mode,
                                             layer.count_include_pad, layer.divisor_override))
    if kind in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
        size = layer.output_size
        average = kind == "AdaptiveAvgPool2d"
        if size not in (1, (1, 1), [1, 1]) or not average and layer.return_indices:
            raise ValueError(f"{label}: output_size={size}"
                             + ("" if average else f", return_indices={layer.return_indices}")
                             + " is not supported by Network.from_torch, only 1 (global "
                             f"{'average' if average else 'max'} pooling)")
        return node("gap" if average else "gmp")
    if kind == "Flatten":
        if layer.start_dim != 1 or layer.end_dim != -1:
            raise ValueError(f"{label}: only Flatten(start_dim=1, end_dim=-1) is supported by "
                             f"Network.from_torch, but got start_dim={layer.start_dim} and "
                             f"end_dim={layer.end_dim}")
        return node("flatten")
    # Linear
    bias = None if layer.bias is None else _numpy(layer.bias, dtype)
    return node("linear", weight=_numpy(layer.weight, dtype), bias=bias)

