"""The models ``fastconv profile`` and ``fastconv flops`` take besides the built-in ones: an
ONNX file, or a Python factory ``package.module:function`` that returns a torch module.

:func:`open_model` reads either into a :class:`ModelSource`: the planned
``fastconv.Network``, the input it runs on, and what the engines run (the ONNX file's bytes,
or the torch module and, on first need, its ``torch.onnx`` export).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

import numpy as np


def is_model_source(text: str) -> bool:
    """Whether ``text`` names an ONNX file or a ``module:function`` factory, not a built-in
    model."""
    return text.endswith(".onnx") or os.path.isfile(text) or ":" in text


@dataclass
class ModelSource:
    """A model to profile: its plan, its input, and what the engines run."""

    name: str
    kind: str  # "onnx" or "torch"
    network: object  # fastconv.Network
    input_shape: tuple[int, ...]
    module: object = None  # the torch module, for a factory
    onnx: bytes | None = None  # the model file, or the module's export once made

    @property
    def dtype(self) -> np.dtype:
        return self.network.dtype

    def input(self, seed: int = 0) -> np.ndarray:
        """A random input of the model's shape and dtype (the values do not change the
        timing)."""
        x = np.random.default_rng(seed).standard_normal(self.input_shape)
        return x.astype(self.dtype)

    def onnx_bytes(self, x: np.ndarray) -> bytes:
        """The ONNX model the engines run: the file, or the torch module's export."""
        if self.onnx is None:
            from .engines import onnx_bytes

            self.onnx = onnx_bytes(self.module, x)
        return self.onnx


def open_model(source: str, input_shape=None, batch: int = 1, threads: int | None = None,
               backend: str = "auto"):
    """Read ``source`` and plan it.

    Parameters
    ----------
    source : str
        A path to an ONNX file, or ``package.module:function``: a function of no arguments
        returning a ``torch.nn.Module`` (or the module itself), imported with the current
        directory on the path and put in eval mode.
    input_shape : (C, H, W), optional
        Required where the model does not say it: a factory's module (default (3, 224, 224)),
        an ONNX input with a symbolic channel count or size.
    batch : int
    threads : int, optional
    backend : {"auto", "numba", "cython"}
        The plan's executor.

    Raises
    ------
    ValueError
        The file or factory cannot be read, or the plan refuses the model (the message names
        the node), or the input's size is unknown.
    """
    from ..network import Network

    if ":" in source and not os.path.isfile(source):
        module = factory_module(source)
        shape = (batch, *(input_shape or (3, 224, 224)))
        try:
            network = Network.from_torch(module, backend=backend, threads=threads)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        network.output_shape(shape)  # an input that does not fit fails here, naming the layer
        return ModelSource(source, "torch", network, shape, module=module)
    if not os.path.isfile(source):
        raise ValueError(f"no such ONNX file: {source!r}")
    with open(source, "rb") as fh:
        data = fh.read()
    return onnx_source(os.path.basename(source), data, input_shape, batch, threads, backend)


def onnx_source(name: str, data: bytes, input_shape=None, batch: int = 1,
                threads: int | None = None, backend: str = "auto") -> ModelSource:
    """An ONNX model's bytes, planned: as :func:`open_model` reads a file.

    Raises
    ------
    ValueError
        The plan refuses the model (naming the node), or its input's size is unknown and
        ``input_shape`` does not give it.
    """
    from ..network import Network

    try:
        network = Network.from_onnx(data, backend=backend, threads=threads)
    except TypeError as exc:
        raise ValueError(f"{name}: {exc}") from None
    inputs = getattr(network, "inputs", None)
    if inputs is not None and len(inputs) != 1:
        raise ValueError(f"{name}: the model takes {len(inputs)} inputs "
                         f"{[i[0] for i in inputs]}; profiling feeds one")
    input_name, declared = network.declared_input
    shape = input_shape_of(input_name, declared, input_shape, batch)
    if input_shape is not None:
        network.counts(shape)  # a size the model does not declare fails here
    return ModelSource(name, "onnx", network, shape, onnx=data)


def input_shape_of(name: str, declared, input_shape, batch: int) -> tuple[int, ...]:
    """The input's shape: ``(batch, *input_shape)`` if given, else the declared one, whose
    sizes past the batch must be known."""
    if input_shape is not None:
        return (batch, *input_shape)
    declared = declared or (None, None, None)
    if any(d is None for d in declared):
        shown = ", ".join(["N", *["?" if d is None else str(d) for d in declared]])
        raise ValueError(f"the model's input {name!r} is [{shown}]: give its size with "
                         "--input-shape C,H,W")
    return (batch, *declared)


def count_onnx(path: str, input_shape=None, batch: int = 1) -> dict:
    """Every node of an ONNX file counted for its input's shape (``network.onnx_counts``),
    nothing planned or run; the model's other inputs must declare their shapes."""
    from onnx import helper

    from ..network import onnx_counts, onnx_import

    if not os.path.isfile(path):
        raise ValueError(f"no such ONNX file: {path!r}")
    proto = onnx_import.load(path)
    inputs = {}
    for i, info in enumerate(onnx_import.model_inputs(proto.graph)):
        dims = onnx_import.declared_shapes(proto.graph).get(info.name)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type))
        shape = input_shape_of(info.name, None if dims is None else dims[1:],
                               input_shape if i == 0 else None,
                               batch if not dims or dims[0] is None else dims[0])
        onnx_import.check_declared(info.name, dims, shape)
        inputs[info.name] = (shape, dtype)
    counts = onnx_counts.count(proto, onnx_import.opset_of(proto), inputs)
    counts["inputs"] = {k: list(v[0]) for k, v in inputs.items()}
    counts["input_shape"] = list(next(iter(inputs.values()))[0]) if inputs else []
    return counts


def zoo_onnx(name: str, batch: int = 1, size: int = 224) -> ModelSource:
    """A model of :mod:`fastconv.bench.zoo` (``mobilenet_v1``, ``mobilenet_v2``,
    ``resnet18``; random weights) exported by ``torch.onnx`` for ``size`` x ``size`` inputs
    and planned from the ONNX bytes, as a file is read."""
    from . import engines, zoo

    x = np.zeros((batch, 3, size, size), np.float32)
    data = engines.onnx_bytes(getattr(zoo, name)(), x)
    return onnx_source(f"{name}.onnx", data, batch=batch)


def factory_module(source: str):
    """The torch module ``package.module:function`` returns, in eval mode (``ValueError``
    where it cannot be read)."""
    module_name, _, attr = source.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected package.module:function, got {source!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        namespace = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} (from {source!r}): {exc}") from None
    try:
        obj = getattr(namespace, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    import torch

    model = obj if isinstance(obj, torch.nn.Module) else obj() if callable(obj) else obj
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{source} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()
