"""The libraries we measure against, each optional: PyTorch, ONNX Runtime and a bare BLAS GEMM.

Every factory takes the layer and its arrays and returns a zero-argument callable (or None when
the peer is not installed), so the timing harness can interleave it with fastconv's calls.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Callable

import numpy as np

from ..spec import ConvSpec


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_conv2d(spec: ConvSpec, x: np.ndarray, weight: np.ndarray, bias=None,
                 threads: int | None = None) -> Callable[[], object] | None:
    """``torch.nn.functional.conv2d`` on CPU tensors sharing the arrays' memory."""
    if not torch_available():
        return None
    import torch
    import torch.nn.functional as F

    if threads is not None:
        torch.set_num_threads(threads)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    wt = torch.from_numpy(np.ascontiguousarray(weight))
    bt = None if bias is None else torch.from_numpy(np.ascontiguousarray(bias))
    (ph, _), (pw, _) = spec.pads
    padding = spec.padding if isinstance(spec.padding, str) else (ph, pw)

    def run():
        with torch.no_grad():
            return F.conv2d(xt, wt, bt, spec.stride, padding, spec.dilation, spec.groups)

    return run


def gemm_shape(spec: ConvSpec) -> tuple[int, int, int] | None:
    """``(M, K, N)`` of the GEMM an im2col convolution of one image and one group performs."""
    kh, kw = spec.kernel_size
    ho, wo = spec.output_size
    return (spec.out_channels_per_group, spec.in_channels_per_group * kh * kw, ho * wo)


def numpy_gemm(spec: ConvSpec, batch: int, dtype) -> Callable[[], object] | None:
    """A bare ``numpy.matmul`` doing the GEMMs of the layer (one per image and group): the
    floor an im2col or 1x1 convolution cannot beat. None for depthwise layers, whose "GEMM" is
    a dot product of length kH*kW per output and no measure of anything."""
    if spec.kind == "dw":
        return None
    m, k, n = gemm_shape(spec)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((spec.groups, m, k)).astype(dtype)
    b = rng.standard_normal((batch, spec.groups, k, n)).astype(dtype)

    def run():
        return np.matmul(a, b)  # allocates its output, as a convolution does

    return run


# --- whole networks (see fastconv.bench.profile.chain_pass) ---------------------------------------


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class TorchNet:
    """PyTorch's calls for each layer: ``F.conv2d`` forward and the same
    ``aten.convolution_backward`` autograd runs, asking only for the gradients needed."""

    name = "torch"

    def __init__(self, net, params, threads=None):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.torch = torch
        self.net = net
        self.params = [(torch.from_numpy(np.ascontiguousarray(w)),
                        None if b is None else torch.from_numpy(b)) for w, b in params]

    def to_input(self, x):
        return self.torch.from_numpy(np.ascontiguousarray(x))

    def spatial(self, x):
        return tuple(x.shape[2:])

    def pool(self, x):
        return x.mean(dim=(2, 3), keepdim=True)

    def unpool(self, grad, shape):
        return (grad / (shape[2] * shape[3])).expand(shape)

    def output_grad(self, y):
        return self.torch.ones_like(y)

    def forward(self, i, x):
        import torch.nn.functional as F

        spec, (w, b) = self.net[i], self.params[i]
        with self.torch.no_grad():
            return F.conv2d(x, w, b, spec.stride, spec.padding, spec.dilation, spec.groups)

    def backward(self, i, dy, x, input_grad):
        spec, (w, b) = self.net[i], self.params[i]
        (top, _), (left, _) = spec.pads
        with self.torch.no_grad():
            grads = self.torch.ops.aten.convolution_backward(
                dy.contiguous(), x, w, None if b is None else [spec.out_channels],
                list(spec.stride), [top, left], list(spec.dilation), False, [0, 0],
                spec.groups, [input_grad, True, b is not None])
        return grads[0]


def _torch_layers(net, params):
    """The network as ``torch.nn`` modules (global average pool before a 1x1-input layer)."""
    import torch

    modules, size = [], None
    for spec, (w, b) in zip(net, params):
        if size is not None and size != tuple(spec.input_size):
            modules.append(torch.nn.AdaptiveAvgPool2d(1))
        (top, _), (left, _) = spec.pads
        conv = torch.nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size,
                               spec.stride, spec.padding if isinstance(spec.padding, str)
                               else (top, left), spec.dilation, spec.groups, bias=b is not None)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w))
            if b is not None:
                conv.bias.copy_(torch.from_numpy(b))
        modules.append(conv)
        size = spec.output_size
    return torch.nn.Sequential(*modules).eval()


def _ort_session(model, example, threads, profiled=False):
    """An ONNX Runtime session of a torch module, exported with ``torch.onnx``.

    Its thread pool spins after a run, as ONNX Runtime's does by default. ``profiled`` turns
    on ONNX Runtime's profiler, which records every node's kernel time."""
    from . import engines

    return engines.ort_session(engines.onnx_bytes(model, example), threads, profiled)


class OnnxRuntimeNet:
    """The network in one ONNX Runtime session, as its users run it (forward only: ONNX
    Runtime does not train).

    :meth:`run` is one pass of the session whose time is the whole network's figure.
    :meth:`run_profiled` is one pass of an identical session with ONNX Runtime's profiler on,
    and :meth:`layer_times` reads each layer's time from it: the kernel time the profiler
    recorded for the layer's Conv node, inside the running session. A session per layer would
    add a session run and waking its threads to every layer, and so misplace where ONNX Runtime
    gains its time. The profiler slows the session a little, hence the second session.
    """

    name = "onnxruntime"

    def __init__(self, net, params, x0, threads=None):
        model = _torch_layers(net, params).to(_torch_dtype(x0.dtype))
        self.layers, self.x0 = len(net), x0
        self._session = _ort_session(model, x0, threads)
        self._profiled = _ort_session(model, x0, threads, profiled=True)
        self._layer_times = None

    def run(self):
        """One forward pass of the whole network."""
        return self._session.run(None, {"x": self.x0})[0]

    def run_profiled(self):
        """One forward pass of the profiled session."""
        return self._profiled.run(None, {"x": self.x0})[0]

    def layer_times(self) -> list[list[float]]:
        """Seconds per layer of every :meth:`run_profiled` pass, in order (this ends the
        profiling: later passes are not recorded)."""
        if self._layer_times is None:
            path = self._profiled.end_profiling()
            try:
                with open(path) as file:
                    events = json.load(file)
            finally:
                os.remove(path)
            self._layer_times = layer_times_from_profile(events, self.layers)
        return self._layer_times


class OpenVinoNet:
    """The network compiled by OpenVINO for the CPU, float32 and the latency hint, as
    :class:`OnnxRuntimeNet` runs it: :meth:`run` is the whole network's figure, and a second
    compiled model with OpenVINO's per-node counters on times the layers."""

    name = "openvino"

    def __init__(self, net, params, x0, threads=None):
        from . import engines

        ov = import_openvino()

        model = _torch_layers(net, params).to(_torch_dtype(x0.dtype))
        onnx = engines.onnx_bytes(model, x0)
        self.layers, self.x0 = len(net), x0
        self._request = openvino_request(ov, onnx, threads, profiled=False)
        self._profiled = openvino_request(ov, onnx, threads, profiled=True)
        self._passes: list[list[float]] = []

    def run(self):
        return self._request.infer({0: self.x0})

    def run_profiled(self):
        out = self._profiled.infer({0: self.x0})
        convs = [p.real_time.total_seconds() for p in self._profiled.get_profiling_info()
                 if p.node_type in ("Convolution", "GroupConvolution")
                 and str(p.status).endswith("EXECUTED")]
        if len(convs) != self.layers:
            raise RuntimeError(f"OpenVINO's profile has {len(convs)} convolutions for a network "
                               f"of {self.layers} layers")
        self._passes.append(convs)
        return out

    def layer_times(self) -> list[list[float]]:
        """Seconds per layer of every :meth:`run_profiled` pass, in order."""
        return self._passes


class NumbaForkWarningHush:
    """Standard error closed for the instant of a fork from a thread other than the main one.

    Numba's TBB pool prints "Attempted to fork from a non-main thread..." (from C, in its
    ``pthread_atfork`` handler) whenever such a fork happens. OpenVINO's usage telemetry forks
    a sender process from a thread of its own, at a moment nobody chooses; that process runs no
    Numba code, so the warning says nothing here, yet it would be the one line a user reads
    between the tables. Python's fork hooks run before and after the C handlers: ``before``
    points file descriptor 2 at ``/dev/null``, ``after`` puts it back. Installed once per
    process (:meth:`install`); forks from the main thread are left alone."""

    _installed = False
    _saved = threading.local()

    @classmethod
    def install(cls) -> None:
        if not cls._installed:
            cls._installed = True
            os.register_at_fork(before=cls.before, after_in_parent=cls.after,
                                after_in_child=cls.after)

    @classmethod
    def before(cls) -> None:
        if threading.current_thread() is threading.main_thread():
            return
        sys.stderr.flush()
        cls._saved.fd = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    @classmethod
    def after(cls) -> None:
        fd = getattr(cls._saved, "fd", None)
        if fd is not None:
            cls._saved.fd = None
            os.dup2(fd, 2)
            os.close(fd)


def openvino_request(ov, onnx: bytes, threads, profiled: bool):
    """OpenVINO's compiled model of ``onnx`` for the CPU: float32 throughout, as the others
    compute (on a CPU with AMX or AVX512-BF16 it would otherwise run in bfloat16), the
    latency hint, ``threads``; with per-node counters when ``profiled``."""
    import tempfile

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
              "PERF_COUNT": profiled}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as fh:
            fh.write(onnx)
        return core.compile_model(core.read_model(path), "CPU", config).create_infer_request()


def import_openvino():
    """``openvino``, imported with :class:`NumbaForkWarningHush` installed first: importing it
    starts its telemetry, whose sender forks from a thread of its own."""
    NumbaForkWarningHush.install()
    import openvino

    return openvino


def openvino_available() -> bool:
    try:
        import onnx  # noqa: F401

        import_openvino()
    except ImportError:
        return False
    return True


_CONV_OPS = ("Conv", "FusedConv")


def layer_times_from_profile(events, layers: int) -> list[list[float]]:
    """Per-pass, per-layer seconds from ONNX Runtime's profile ``events`` (its JSON) of a
    chain of ``layers`` convolutions: the kernel times of the Conv nodes, in the order they
    ran, ``layers`` to a pass. The glue between them (the pool before the classifier, layout
    reorders) is left out, as it is from fastconv's layer times.

    Raises
    ------
    RuntimeError
        If the Conv nodes do not pair up with the layers, pass after pass.
    """
    convs = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
             and e.get("args", {}).get("op_name") in _CONV_OPS]
    if not convs or len(convs) % layers:
        raise RuntimeError(f"ONNX Runtime's profile has {len(convs)} Conv nodes, which is not a "
                           f"whole number of passes of {layers} layers")
    passes = [convs[start:start + layers] for start in range(0, len(convs), layers)]
    names = [e["name"] for e in passes[0]]
    if len(set(names)) != layers or any([e["name"] for e in p] != names for p in passes):
        raise RuntimeError("ONNX Runtime's Conv nodes do not run in the same order in every "
                           "pass, so they cannot be matched to the layers")
    return [[e["dur"] / 1e6 for e in p] for p in passes]  # microseconds


def _torch_dtype(dtype):
    import torch

    return {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}[np.dtype(dtype)]
