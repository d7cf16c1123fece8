"""Whole networks in every engine we measure the plan against, from one torch module.

:func:`torch_model` builds MobileNet v1 (or its full-convolution twin) as the
``torch.nn.Sequential`` users have: convolutions, batch norms (random statistics) and ReLUs,
and the classifier. Each engine runs that same module: PyTorch itself; ONNX Runtime and
OpenVINO on its ``torch.onnx`` export; LiteRT (XNNPACK) on a Keras model with the same
weights, batch norms folded, converted by ``tf.lite.TFLiteConverter`` (only where
``tensorflow`` and ``ai_edge_litert`` are installed: no dependency of fastconv); fastconv's
per-call API layer by layer; and ``fastconv.Network``. Every engine is a zero-argument callable
on a fixed input, ready for :func:`fastconv.bench.harness.measure`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings

import numpy as np

from .. import models

ENGINES = ("plan", "plan-cython", "per-call", "torch", "onnxruntime", "openvino", "litert")


def torch_model(name: str = "mobilenet-v1", bn_relu: bool = True, classifier: bool = True,
                alpha: float = 1.0, resolution: int = 224, dtype="float32", seed: int = 0):
    """The model as an eval-mode ``torch.nn.Sequential``, He-scaled random weights.

    ``bn_relu`` puts a batch norm and a ReLU after every convolution (as MobileNet has);
    without it the network is its convolutions alone. ``classifier`` ends it with global
    average pooling, a flatten and the linear layer.
    """
    import torch
    from torch import nn

    specs = models.get_model(name, alpha=alpha, resolution=resolution, include_fc=False)
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for spec in specs:
        (top, _), (left, _) = spec.pads
        conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride,
                         (top, left), spec.dilation, spec.groups, bias=not bn_relu)
        nn.init.kaiming_normal_(conv.weight, generator=generator)
        layers.append(conv)
        if bn_relu:
            bn = nn.BatchNorm2d(spec.out_channels)
            bn.running_mean.uniform_(-0.1, 0.1, generator=generator)
            bn.running_var.uniform_(0.5, 1.5, generator=generator)
            layers += [bn, nn.ReLU()]
    if classifier:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(specs[-1].out_channels, 1000)]
    module = nn.Sequential(*layers).eval()
    return module.to({"float32": torch.float32, "float64": torch.float64}[np.dtype(dtype).name])


def available(engine: str, exported: bool = True) -> str | None:
    """Why ``engine`` cannot run here, or None. ONNX Runtime and OpenVINO need torch and onnx
    to export a torch module; with ``exported`` False they run a model file, and need only
    themselves."""
    needs = {"torch": ["torch"], "onnxruntime": ["torch", "onnx", "onnxruntime"],
             "openvino": ["torch", "onnx", "openvino"],
             "litert": ["torch", "tensorflow", "ai_edge_litert"], "plan": ["torch"],
             "plan-cython": ["torch", "fastconv.kernels.cython.plan"],
             "per-call": ["torch"]}[engine]
    if not exported and engine in ("onnxruntime", "openvino"):
        needs = [engine]
    if not exported and engine == "plan-cython":
        needs = needs[1:]
    import importlib.util

    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed" if missing else None


def onnx_bytes(module, x: np.ndarray) -> bytes:
    """The module exported by ``torch.onnx`` for inputs shaped like ``x``."""
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), buffer, dynamo=False,
                          input_names=["x"], output_names=["y"])
    return buffer.getvalue()


def engine(name: str, module, x: np.ndarray, threads: int, model_bytes: bytes | None = None):
    """A zero-argument callable running ``module``'s network on ``x`` in engine ``name``."""
    if name in ("plan", "plan-cython"):  # the plan on Numba (where installed), or on Cython
        from ..network import Network

        plan = Network.from_torch(module, backend="cython" if name == "plan-cython" else "auto",
                                  threads=threads)
        return lambda: plan(x)
    if name == "per-call":
        return _per_call(module, x)
    if name == "torch":
        import torch

        torch.set_num_threads(threads)
        xt = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                return module(xt)
        return run
    if name == "onnxruntime":
        session = ort_session(model_bytes or onnx_bytes(module, x), threads)
        feed = {session.get_inputs()[0].name: x}
        return lambda: session.run(None, feed)
    if name == "openvino":
        request = _openvino(model_bytes or onnx_bytes(module, x), threads)
        return lambda: request.infer({0: x})
    if name == "litert":
        return _litert(module, x, threads)
    raise ValueError(f"unknown engine {name!r}; expected one of {ENGINES}")


def ort_session(model: bytes, threads: int | None, profiled: bool = False):
    """An ONNX Runtime session as its users run it (all graph optimisations, its own pool of
    ``threads``, or ONNX Runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profiled:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "fastconv_ort")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def ort_node_times(model: bytes, x: np.ndarray, threads: int, runs: int = 20) -> list[tuple]:
    """``(node, op, seconds)`` of every kernel ONNX Runtime ran, the minimum over ``runs``
    profiled runs of one session, in the order they ran."""
    session = ort_session(model, threads, profiled=True)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(runs):
        session.run(None, feed)
    path = session.end_profiling()
    try:
        with open(path) as fh:
            events = json.load(fh)
    finally:
        os.remove(path)
    nodes: dict[str, list] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            nodes.setdefault(e["name"][:-len("_kernel_time")], [e["args"]["op_name"], []])[
                1].append(e["dur"] / 1e6)
    return [(name, op, min(times)) for name, (op, times) in nodes.items()]


def _openvino(model: bytes, threads: int):
    from .peers import openvino_request, import_openvino

    return openvino_request(import_openvino(), model, threads, profiled=False)


def _per_call(module, x: np.ndarray):
    """The module layer by layer through fastconv's per-call API (``fc.conv2d``), the other
    layers in NumPy, as a user without the plan would write it."""
    import torch

    from .. import api

    steps = []
    for layer in module:
        if isinstance(layer, torch.nn.Conv2d):
            w = layer.weight.detach().numpy()
            b = None if layer.bias is None else layer.bias.detach().numpy()
            steps.append(lambda a, w=w, b=b, m=layer: api.conv2d(a, w, b, m.stride, m.padding,
                                                                 m.dilation, m.groups))
        elif isinstance(layer, torch.nn.BatchNorm2d):
            scale = (layer.weight / torch.sqrt(layer.running_var + layer.eps)).detach().numpy()
            shift = layer.bias.detach().numpy() - layer.running_mean.numpy() * scale
            steps.append(lambda a, s=scale[:, None, None], t=shift[:, None, None]: a * s + t)
        elif isinstance(layer, torch.nn.ReLU):
            steps.append(lambda a: np.maximum(a, 0))
        elif isinstance(layer, torch.nn.AdaptiveAvgPool2d):
            steps.append(lambda a: a.mean(axis=(2, 3)))
        elif isinstance(layer, torch.nn.Flatten):
            continue
        elif isinstance(layer, torch.nn.Linear):
            w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
            steps.append(lambda a, w=w, b=b: a @ w.T + b)
        else:
            raise TypeError(f"the per-call engine has no step for {type(layer).__name__}")

    def run():
        a = x
        for step in steps:
            a = step(a)
        return a
    return run


def _litert(module, x: np.ndarray, threads: int):
    """The module as a Keras model (NHWC, batch norms folded), converted to LiteRT and run by
    its interpreter (XNNPACK) on ``threads`` threads; the input is transposed to NHWC once,
    outside the timed call."""
    import tensorflow as tf
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from ..network.rewrites import optimize
    from ..network.torch_import import from_torch

    graph = optimize(from_torch(module))
    keras = tf.keras
    inputs = keras.Input(shape=(x.shape[2], x.shape[3], x.shape[1]), batch_size=x.shape[0])
    y = inputs
    for node in graph.nodes:
        y = _keras_layer(keras, node, y)
    model = keras.Model(inputs, y)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    interpreter = Interpreter(model_content=converter.convert(), num_threads=threads)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    del torch

    def run():
        interpreter.set_tensor(index, nhwc)
        interpreter.invoke()
        return interpreter.get_tensor(output)
    return run


def _keras_layer(keras, node, y):
    layers = keras.layers
    act = node.act
    if node.op == "conv":
        spec, w, b = node.attrs["spec"], node.attrs["weight"], node.attrs["bias"]
        (top, bottom), (left, right) = spec.pads
        if any((top, bottom, left, right)):
            y = layers.ZeroPadding2D(((top, bottom), (left, right)))(y)
        if spec.kind == "dw":
            layer = layers.DepthwiseConv2D(spec.kernel_size, spec.stride, "valid",
                                           dilation_rate=spec.dilation,
                                           use_bias=b is not None)
            y = layer(y)
            weights = [w.transpose(2, 3, 0, 1)]  # (kh, kw, C, 1)
        else:
            layer = layers.Conv2D(spec.out_channels, spec.kernel_size, spec.stride, "valid",
                                  dilation_rate=spec.dilation, groups=spec.groups,
                                  use_bias=b is not None)
            y = layer(y)
            weights = [w.transpose(2, 3, 1, 0)]
        layer.set_weights(weights + ([b] if b is not None else []))
    elif node.op == "gap":
        y = layers.GlobalAveragePooling2D()(y)
    elif node.op == "flatten":
        return y
    elif node.op == "linear":
        w, b = node.attrs["weight"], node.attrs["bias"]
        layer = layers.Dense(w.shape[0], use_bias=b is not None)
        y = layer(y)
        layer.set_weights([w.T] + ([b] if b is not None else []))
    else:
        raise TypeError(f"the LiteRT engine has no layer for {node.op!r}")
    if act.kind == "clamp" and act.lo == 0:
        y = layers.ReLU(max_value=None if act.hi == float("inf") else act.hi)(y)
    elif act.kind != "none":
        raise TypeError(f"the LiteRT engine has no activation {act}")
    return y
