"""Training a torch module's network: the forward and backward of its whole graph.

``Network.from_torch(module, training=True)`` gives a :class:`TrainingNetwork`: the module's
graph read once (``torch_import``, with batch norms and dropout kept as layers), its parameters
and running statistics as arrays named as torch names them. :meth:`~TrainingNetwork.forward`
computes the output in training mode (batch norms on batch statistics, their running
statistics updated as torch updates them, dropout with the network's own generator) and keeps
what the backward needs; :meth:`~TrainingNetwork.backward` gives the input's gradient and
every parameter's (:attr:`~TrainingNetwork.grads`).

Each node runs on its own in NCHW. A convolution without groups and larger than 1x1 runs on
the plan's kernels where its channels, pixels and weights per output pay (``_on_plan``), as
one-node plans (:class:`_PlannedConv`: NHWC register tiles, the activations converted at
their edges): its forward, its input's gradient (a convolution by the flipped kernel, or a
transposed convolution) and its weights' gradient (a convolution of the input by the
output's gradient); the others through :func:`fastconv.conv2d` and
:func:`fastconv.conv2d_backward`. Batch norms, clamps and pooling run on Numba's kernels
(``kernels/numba/training.py``; a batch norm of small planes takes its images as rows), the
other layers in NumPy (one room per operation below, forward and backward side by side).
Large outputs and gradients are written into arrays reused from step to step
(:class:`_Reused`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
from scipy import special

from .. import api
from ..kernels import tuning
from ..kernels.numba.training import (avg_pool_backward, avg_pool_forward,
                                      batch_norm_backward_sums, batch_norm_backward_sums_rows,
                                      batch_norm_input_gradient, batch_norm_input_gradient_rows,
                                      batch_norm_statistics, batch_norm_statistics_rows,
                                      channel_affine, channel_affine_rows, channels_view,
                                      clamp_backward, clamp_forward, image_rows,
                                      max_pool_backward, max_pool_forward)
from ..runtime import get_num_threads
from ..spec import ConvSpec, swap_group_channels
from .graph import INPUT, Graph, Node, Shape, conv_spec, infer_shapes, pool_spec


@dataclass
class _Tape:
    """What a forward keeps for its backward: each node's (by its output) and the shapes."""

    kept: dict
    input_shape: tuple
    output_shape: tuple


@dataclass(frozen=True)
class _BatchNorm:
    """A batch norm layer's settings, as its torch layer has them."""

    eps: float
    momentum: float | None
    affine: bool
    track: bool


class _Reused:
    """Large arrays handed out again from step to step: one that nothing but this pool holds
    any more (no tape, no caller, no view) serves the next request of its shape and dtype.
    A step then writes into memory it wrote before, where a new array of many pages would be
    faulted in from the system, page by page, at every step."""

    SMALLEST = 1 << 20  # bytes; smaller arrays come from NumPy's own allocator

    def __init__(self):
        self._arrays: dict = {}  # (shape, dtype) -> the arrays handed out
        self._input_shape = None  # the network's input the arrays were made for

    def empty(self, shape, dtype) -> np.ndarray:
        shape, dtype = tuple(shape), np.dtype(dtype)
        if math.prod(shape) * dtype.itemsize < self.SMALLEST:
            return np.empty(shape, dtype)
        arrays = self._arrays.setdefault((shape, dtype), [])
        for array, count in zip(arrays, _references(arrays)):
            if count <= _HELD_BY_THE_LIST_ALONE:
                return array
        arrays.append(np.empty(shape, dtype))
        return arrays[-1]

    def serve(self, input_shape) -> None:
        """A step on an input of ``input_shape``: another shape's arrays are let go."""
        if input_shape != self._input_shape:
            self._arrays.clear()
            self._input_shape = input_shape


def _references(arrays: list) -> list[int]:
    """Each array's reference count, as this function sees it."""
    return [sys.getrefcount(array) for array in arrays]


# what _references counts for an array that only its list holds (measured, not assumed: the
# interpreter's own references differ between versions)
_HELD_BY_THE_LIST_ALONE = _references([np.empty(0)])[0]


class TrainingNetwork:
    """A torch module's network in training mode: forward, backward, parameters, gradients.

    Build one with ``Network.from_torch(module, training=True)``; ``fastconv.torch.Planned``
    wraps one as a ``torch.nn.Module``. A network serves one call at a time (a forward keeps
    its tape for the next backward); concurrent calls take one network each.

    Parameters
    ----------
    module : torch.nn.Module
        In training mode, float32 or float64; the layers and calls ``Network.from_torch``
        reads, except ``ConvTranspose2d``.
    share : bool, default False
        The arrays of :attr:`parameters` and :attr:`buffers` are views of the module's
        tensors (an optimizer's updates of the module are seen, and the running statistics
        are the module's), instead of copies.
    backend : {"auto", "numba", "cython"}
        The convolutions' kernels (:func:`fastconv.conv2d`'s ``backend``).
    seed : int, optional
        Seeds the dropout layers' generator.

    Attributes
    ----------
    parameters : dict of str to ndarray
        Every parameter, by its torch name; change them in place between steps.
    buffers : dict of str to ndarray
        The batch norms' running statistics (``running_mean``, ``running_var``,
        ``num_batches_tracked``), by their torch names.
    grads : dict of str to ndarray
        Every parameter's gradient from the last :meth:`backward` (zero where the output does
        not depend on it).
    """

    def __init__(self, module, *, share: bool = False, backend: str = "auto",
                 seed: int | None = None):
        from .network import check_backend
        from .torch_import import SUPPORTED, from_torch

        check_backend(backend)
        graph = from_torch(module, training=True)
        for node in graph.nodes:
            if node.op not in _OPERATIONS:
                served = [k for k in SUPPORTED if k not in _NOT_TRAINED]
                raise TypeError(f"{node.name} is not supported by Network.from_torch("
                                f"training=True) yet; it serves {', '.join(served)}")
        self.graph: Graph = graph
        self.dtype = graph.dtype
        self.backend = backend
        tensors = dict(module.named_parameters(remove_duplicate=False))
        # a tied parameter is one array, its gradient summed over its uses, under its first name
        first: dict[int, str] = {}
        self._canonical = {name: first.setdefault(id(t), name) for name, t in tensors.items()}
        self.parameters: dict[str, np.ndarray] = {
            name: self._array(t, share) for name, t in tensors.items()
            if self._canonical[name] == name}
        self.buffers: dict[str, np.ndarray] = {
            name: self._array(b, share) for name, b in module.named_buffers()}
        self.grads: dict[str, np.ndarray] = {}
        self._norms = {node.output: self._batch_norm(module.get_submodule(node.attrs["module"]))
                       for node in graph.nodes if node.op == "batchnorm"}
        # a clamp (ReLU, ReLU6, Hardtanh) that alone reads a batch norm: one pass forward and
        # backward, its gradient's mask recomputed from the batch norm's input
        self._clamp_after: dict[str, Node] = {}
        for node in graph.nodes:
            readers = graph.consumers(node.output)
            if (node.op == "batchnorm" and node.output != graph.output and len(readers) == 1
                    and readers[0].op == "act" and readers[0].act.kind == "clamp"):
                self._clamp_after[node.output] = readers[0]
        self._fused_clamps = {act.output for act in self._clamp_after.values()}
        self._rng = np.random.default_rng(seed)
        self._tape: _Tape | None = None
        self._unwanted: frozenset = frozenset()  # values whose gradient backward skips
        self._geometries: dict = {}  # see _geometry
        self._reused = _Reused()  # the operations' large outputs and gradients

    def _array(self, tensor, share: bool) -> np.ndarray:
        if tensor.device.type != "cpu":
            raise ValueError(f"Network.from_torch(training=True) runs on the CPU, but the "
                             f"module has a tensor on {tensor.device}")
        array = tensor.detach().numpy()
        return array if share else np.array(array, copy=True)

    @staticmethod
    def _batch_norm(layer) -> _BatchNorm:
        return _BatchNorm(float(layer.eps), layer.momentum, layer.affine,
                          layer.track_running_stats)

    def __repr__(self) -> str:
        lines = [f"TrainingNetwork({len(self.graph.nodes)} nodes from {self.graph.source}, "
                 f"dtype={self.dtype}, {len(self.parameters)} parameters)"]
        lines += [f"  {node.name}: {node.op}" for node in self.graph.nodes]
        return "\n".join(lines)

    # --- the passes ---------------------------------------------------------------------

    def forward(self, x) -> np.ndarray:
        """The output for NCHW input ``x`` in training mode; keeps what :meth:`backward`
        needs, and updates the batch norms' running statistics.

        Raises
        ------
        TypeError
            ``x`` not an array of the network's dtype.
        ValueError
            ``x`` of a shape the first layer cannot take (naming the node and the shapes),
            or a batch norm given one value per channel.
        """
        y, self._tape = self.forward_taped(x)
        return y

    def forward_taped(self, x) -> tuple[np.ndarray, "_Tape"]:
        """:meth:`forward`, returning what the backward needs instead of keeping it: for a
        caller that keeps several forwards' tapes (as autograd does), each for
        :meth:`backward_taped`."""
        x = self._input(x)
        infer_shapes(self.graph, x.shape)  # every shape checked before anything runs
        return self._forward(x)

    def _forward(self, x, clock=None) -> tuple[np.ndarray, "_Tape"]:
        self._reused.serve(x.shape)
        values = {INPUT: x}
        tape = {}
        for node in self.graph.nodes:
            run = _OPERATIONS[node.op][0]
            start = clock.now() if clock is not None else 0.0
            values[node.output], tape[node.output] = run(
                self, node, [values[v] for v in node.inputs])
            if clock is not None:
                clock.add((node.output, "forward"), clock.now() - start)
        y = values[self.graph.output]
        return y, _Tape(tape, x.shape, y.shape)

    def backward(self, grad_output, input_grad: bool = True) -> np.ndarray | None:
        """The input's gradient for ``grad_output`` (the loss's gradient with respect to the
        last :meth:`forward`'s output), or None where ``input_grad`` is False (its
        computation skipped); every parameter's gradient into :attr:`grads`.

        Raises
        ------
        RuntimeError
            No forward to go back through (none yet, or its backward already ran).
        TypeError, ValueError
            ``grad_output`` not an array of the output's dtype and shape.
        """
        if self._tape is None:
            raise RuntimeError("TrainingNetwork.backward needs a forward first: each forward "
                               "is gone back through once")
        gx = self.backward_taped(self._tape, grad_output, input_grad)
        self._tape = None
        return gx

    def backward_taped(self, tape: "_Tape", grad_output,
                       input_grad: bool = True) -> np.ndarray | None:
        """:meth:`backward` through the forward whose ``tape`` :meth:`forward_taped` gave."""
        gy = _array_of(grad_output, "grad_output", self.dtype, "TrainingNetwork.backward")
        if gy.shape != tape.output_shape:
            raise ValueError(f"TrainingNetwork.backward: grad_output of size {list(gy.shape)} "
                             f"does not match the output's size {list(tape.output_shape)}")
        return self._backward(gy, tape, input_grad=input_grad)

    def _backward(self, gy, tape, clock=None, input_grad: bool = True) -> np.ndarray | None:
        self._unwanted = frozenset() if input_grad else frozenset((INPUT,))
        self.grads = {}  # the last step's, reused where nothing else holds them
        grads = {name: self._empty(p.shape, p.dtype) for name, p in self.parameters.items()}
        for g in grads.values():
            g.fill(0)
        pending = {self.graph.output: gy}
        for node in reversed(self.graph.nodes):
            g = pending.pop(node.output, None)
            if g is None:  # the output does not depend on this node
                continue
            back = _OPERATIONS[node.op][1]
            start = clock.now() if clock is not None else 0.0
            for value, gx in zip(node.inputs, back(self, node, g, tape.kept[node.output],
                                                   grads)):
                if gx is not None:
                    pending[value] = gx if value not in pending else np.add(
                        pending[value], gx, out=self._empty(gx.shape, gx.dtype))
            if clock is not None:
                clock.add((node.output, "backward"), clock.now() - start)
        self.grads = grads
        if not input_grad:
            return None
        gx = pending.get(INPUT)
        return np.zeros(tape.input_shape, self.dtype) if gx is None else gx

    def profile(self, x, budget: float = 1.0, min_repeats: int = 3) -> "TrainingProfile":
        """Time the forward and backward of every node on input ``x`` (a backward of ones
        after each forward, without the input's gradient, as in a training step), for about
        ``budget`` seconds; the whole steps are timed without the per-node clock. The running
        statistics and the dropout generator are left as they were (the steps timed are not
        training steps)."""
        from .network import timed_calls

        x = self._input(x)
        shapes = infer_shapes(self.graph, x.shape)
        saved = {name: b.copy() for name, b in self.buffers.items()}
        generator = self._rng.bit_generator.state
        ones = None

        def step(clock=None):
            nonlocal ones
            y, tape = self._forward(x, clock)
            ones = np.ones(y.shape, self.dtype) if ones is None else ones
            self._backward(ones, tape, clock, input_grad=False)

        try:
            whole, clock = timed_calls(step, budget, min_repeats)
        finally:
            for name, b in self.buffers.items():
                b[...] = saved[name]
            self._rng.bit_generator.state = generator
        batch = x.shape[0]
        rows = []
        for node in self.graph.nodes:
            shape = shapes[node.inputs[0]]
            macs = 0
            if node.op == "conv":
                macs = conv_spec(node, shape).macs * batch
            elif node.op == "linear":
                macs = batch * self._param(node, "weight").size
            seconds = [min(clock.times.get((node.output, p), [0.0])) for p in
                       ("forward", "backward")]
            fused = node.output in self._fused_clamps  # run by the batch norm before it
            # backward: the weights' gradient, and the input's but for the network's input,
            # each a forward's
            backward = 2 * macs if node.inputs[0] == INPUT else 4 * macs
            rows.append({"name": node.name, "op": "act (fused)" if fused else node.op,
                         "input": shapes[node.inputs[0]].batched(batch),
                         "output": shapes[node.output].batched(batch),
                         "flops": [2 * macs, backward], "seconds": seconds})
        return TrainingProfile(rows, whole, str(self.dtype))

    def _input(self, x) -> np.ndarray:
        x = _array_of(x, "input", self.dtype, "TrainingNetwork.forward", " (the module's)")
        if x.ndim != 4:
            raise ValueError(f"TrainingNetwork.forward expects 4-D input (N, C, H, W), but got "
                             f"input of size {list(x.shape)}")
        return np.ascontiguousarray(x)

    # --- what the operations read -------------------------------------------------------

    def _geometry(self, node: Node, shape: tuple, compute, *what):
        """What ``compute()`` gives for ``node`` on an input of ``shape`` (its taps, its
        windows, its plan for the taps and batch ``what``), kept: a training step asks for
        the same shapes step after step."""
        key = (node.output, shape[1:], *what)
        if key not in self._geometries:  # None is an answer too (no live window)
            self._geometries[key] = compute()
        return self._geometries[key]

    def _empty(self, shape, dtype) -> np.ndarray:
        """An array for an operation to write whole: a large one reused from earlier steps."""
        return self._reused.empty(shape, dtype)

    def _param(self, node: Node, name: str) -> np.ndarray | None:
        full = f"{node.attrs['module']}.{name}"
        canonical = self._canonical.get(full)
        return None if canonical is None else self.parameters[canonical]

    def _add_grad(self, grads: dict, node: Node, name: str, value, where=...) -> None:
        """``value`` added to the gradient of the node's parameter ``name`` (at ``where``)."""
        canonical = self._canonical.get(f"{node.attrs['module']}.{name}")
        if canonical is not None:
            grads[canonical][where] += value


@dataclass
class TrainingProfile:
    """:meth:`TrainingNetwork.profile`'s result: per node, its ``flops`` and ``seconds``
    (fastest call) forward and backward; and the whole steps' seconds."""

    rows: list[dict]
    whole: list[float]
    dtype: str

    @property
    def seconds(self) -> float:
        """The fastest whole step (forward and backward)."""
        return min(self.whole)

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "seconds": self.seconds,
                "seconds_median": float(np.median(self.whole)), "nodes": self.rows}


def _array_of(array, name: str, dtype, where: str, whose: str = "") -> np.ndarray:
    """``array`` as a C-contiguous array, after checking it is a NumPy array of ``dtype``."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{where} expects a NumPy array as {name}, but got "
                        f"{type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{where} expects {name} of dtype {dtype}{whose}, but got {array.dtype}")
    return np.ascontiguousarray(array)


# Each operation: forward(net, node, inputs) -> (output, what backward keeps), and
# backward(net, node, grad, kept, grads) -> the inputs' gradients (None for none), adding its
# parameters' gradients into grads.

# --- convolution ---------------------------------------------------------------------------

def _live(net, node, x, finite: bool, *arrays):
    """The convolution's taps some output reads inside ``x`` (``ConvSpec.live_window``) and
    the padding they take, or the whole kernel and its padding: a tap that reads only padding
    adds weight times zero, nothing, unless a weight is not (``finite`` False: the forward
    checks the weights once) or one of ``arrays`` is not finite (torch's NaN)."""
    spec = node.attrs["spec"]
    full = (slice(None), slice(None)), spec.padding
    live = net._geometry(node, x.shape, lambda: conv_spec(node, Shape(*x.shape[1:]))
                         .live_window())
    if live is None or not finite or not all(np.isfinite(a).all() for a in arrays):
        return full
    (h0, h1), (w0, w1), padding = live
    return (slice(h0, h1), slice(w0, w1)), padding


class _PlannedConv:
    """A convolution of the training network on the plan's kernels, for one input shape and
    window of taps: its forward; its input's gradient, a convolution of the output's gradient
    by the flipped kernel (stride 1) or its transposed convolution (one convolution per output
    phase); and its weights' gradient, a convolution of the input by the output's gradient
    (``ConvSpec.weight_gradient_as_conv``: a GEMM reducing over the batch and the pixels).
    Each a one-node Network (NHWC, register tiles); their weights re-packed in place from the
    parameters, or from the gradient; their outputs written into the training network's
    reused arrays."""

    def __init__(self, name: str, spec: ConvSpec, has_bias: bool, dtype, backend: str,
                 empty=np.empty):
        g, (kh, kw) = spec.groups, spec.kernel_size
        self._name, self._spec, self._dtype, self._backend = name, spec, dtype, backend
        self._empty = empty  # the outputs' arrays (the training network's, reused)
        plain = ConvSpec(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride,
                         spec.padding, spec.dilation, g, has_bias)
        self.forward_net, self._conv = self._network("conv", dict(
            spec=plain, weight=np.zeros(spec.weight_shape, dtype),
            bias=np.zeros(spec.out_channels, dtype) if has_bias else None))
        # the input's gradient: for stride 1, a convolution by the kernel flipped (the
        # planner's choice of kernels, Winograd included); else the transposed convolution;
        # each by the weight transposed per group, (C_in, C_out / g)
        transposed = np.zeros((spec.in_channels, spec.out_channels // g, kh, kw), dtype)
        pads = spec.input_gradient_pads()
        self._flipped = pads is not None
        if self._flipped:
            self.input_grad_net, self._input_grad = self._network("conv", dict(
                spec=ConvSpec(spec.out_channels, spec.in_channels, spec.kernel_size, 1, pads,
                              spec.dilation, g, False), weight=transposed, bias=None))
        else:
            self.input_grad_net, self._input_grad = self._network("deconv", dict(
                weight=transposed, bias=None, stride=spec.stride, pads=spec.pads,
                dilation=spec.dilation, output_padding=spec.unread_tail, groups=g))
        self._weight_grads: dict = {}  # batch -> its plan, node and crop (the batch: channels)
        self._stale = True  # the input gradient's weights since the last load

    def _network(self, op: str, attrs: dict):
        """A one-node Network of ``op`` and the planned graph's node (whose arrays its
        packing reads), or None and None where the planner rewrote the node (a transposed
        convolution whose kernel is its stride, as a shuffle: the per-call kernels then)."""
        from .network import Network

        node = Node(op, (INPUT,), "out", self._name, attrs)
        net = Network(Graph([node], "out", self._dtype, source="training"), self._backend)
        planned = net.graph.nodes
        return (net, planned[0]) if [n.op for n in planned] == [op] else (None, None)

    def load(self, weight, bias) -> None:
        """The layer's weights (its live taps) and bias into the forward's packing."""
        self._conv.attrs["weight"][...] = weight
        if bias is not None:
            self._conv.attrs["bias"][...] = bias
        self.forward_net._repack()
        self._stale = True

    def input_grad(self, g) -> np.ndarray:
        """The input's gradient for the output's gradient ``g`` (NCHW)."""
        if self._stale:
            w = self._conv.attrs["weight"]
            self._input_grad.attrs["weight"][...] = swap_group_channels(
                w[..., ::-1, ::-1] if self._flipped else w, self._spec.groups)
            self.input_grad_net._repack()
            self._stale = False
        return self._run(self.input_grad_net, g)

    def weight_grad(self, x, g) -> np.ndarray:
        """The gradient of the live taps' weights for input ``x`` and the output's gradient
        ``g`` (NCHW; a layer without groups)."""
        batch = x.shape[0]
        if batch == 0:
            return np.zeros(self._spec.weight_shape, self._dtype)
        if batch not in self._weight_grads:
            spec, crop = self._spec.weight_gradient_as_conv()
            o, (kh, kw) = self._spec.out_channels, spec.kernel_size
            as_conv = ConvSpec(batch, o, spec.kernel_size, spec.stride, spec.padding,
                               spec.dilation, bias=False)
            net, node = self._network("conv", dict(
                spec=as_conv, weight=np.zeros((o, batch, kh, kw), self._dtype), bias=None))
            self._weight_grads[batch] = net, node, crop
        net, node, (crop_h, crop_w) = self._weight_grads[batch]
        node.attrs["weight"][...] = g.transpose(1, 0, 2, 3)
        net._repack()
        h, w = x.shape[2:]
        return self._run(net, x.transpose(1, 0, 2, 3)[:, :, :h - crop_h, :w - crop_w]
                         ).transpose(1, 0, 2, 3)

    def forward(self, x) -> np.ndarray:
        """The layer's output for ``x`` (NCHW), with the weights :meth:`load` gave."""
        return self._run(self.forward_net, x)

    def _run(self, net, x) -> np.ndarray:
        """``net`` on ``x`` (the training network's own array, of its dtype: not checked
        again), into a reused array."""
        if x.shape[0] == 0:
            return net._run(x)
        return net._run(x, out=self._empty(net._planned(x.shape).plan.output_shape,
                                            self._dtype))


def _on_plan(spec: ConvSpec, batch: int) -> bool:
    """Whether a convolution of a training network (its live taps) runs on the plan's
    kernels for a batch of ``batch`` images, or on the per-call ones
    (``tuning.TRAIN_PLAN_MIN_CHANNELS``, ``TRAIN_PLAN_MIN_PIXELS`` and
    ``TRAIN_PLAN_WEIGHT_PER_OUTPUT``)."""
    pixels = math.prod(spec.output_size)
    return (spec.groups == 1 and spec.kernel_size != (1, 1)
            and spec.in_channels >= tuning.TRAIN_PLAN_MIN_CHANNELS
            and pixels >= tuning.TRAIN_PLAN_MIN_PIXELS
            and math.prod(spec.weight_shape)
            <= tuning.TRAIN_PLAN_WEIGHT_PER_OUTPUT * batch * pixels * spec.out_channels)


def _planned(net, node, x, live_weight, padding) -> _PlannedConv | None:
    """The node's planned convolution for input ``x`` and the weights of its live taps (under
    that padding), or None where it runs on the per-call kernels."""
    spec = node.attrs["spec"]
    kernel, batch = live_weight.shape[2:], x.shape[0]

    def plan():
        trimmed = ConvSpec(spec.in_channels, spec.out_channels, kernel, spec.stride, padding,
                           spec.dilation, spec.groups, spec.bias, input_size=x.shape[2:])
        return (_PlannedConv(node.name, trimmed, spec.bias, net.dtype, net.backend, net._empty)
                if _on_plan(trimmed, batch) else None)

    return net._geometry(node, x.shape, plan, kernel, batch)


def _conv_forward(net, node, inputs):
    (x,) = inputs
    spec, weight, bias = node.attrs["spec"], net._param(node, "weight"), net._param(node, "bias")
    finite = bool(np.isfinite(weight).all())
    taps, padding = _live(net, node, x, finite)
    live_weight = weight[(..., *taps)]
    planned = _planned(net, node, x, live_weight, padding) if finite else None
    if planned is None:  # the per-call kernels; every tap for torch's NaNs
        y = api.conv2d(x, live_weight, bias, spec.stride, padding, spec.dilation, spec.groups,
                       backend=net.backend)
        return y, (x, None, finite)
    planned.load(live_weight, bias)
    return planned.forward(x), (x, planned, finite)


def _conv_backward(net, node, g, kept, grads):
    (x, planned, finite), spec = kept, node.attrs["spec"]
    weight = net._param(node, "weight")
    # a tap that reads only padding has the gradient zero (g times zeros) unless g is not finite
    taps, padding = _live(net, node, x, finite, g)
    live_weight = weight[(..., *taps)]
    wanted = node.inputs[0] not in net._unwanted
    if planned is not None and planned is _planned(net, node, x, live_weight, padding):
        g_taps = planned.weight_grad(x, g)
        gx = None
        if wanted and planned.input_grad_net is not None:
            gx = planned.input_grad(g)
        elif wanted:
            gx = api.conv2d_input_grad(x.shape, live_weight, g, spec.stride, padding,
                                       spec.dilation, spec.groups, backend=net.backend)
        gb = g.sum(axis=(0, 2, 3)) if spec.bias else None
    else:
        needs = ["weight"] + (["bias"] if spec.bias else []) + (["input"] if wanted else [])
        gx, g_taps, gb = api.conv2d_backward(g, x, live_weight, spec.stride, padding,
                                             spec.dilation, spec.groups, bias=spec.bias,
                                             needs=needs, backend=net.backend)
    net._add_grad(grads, node, "weight", g_taps, (..., *taps))
    if spec.bias:
        net._add_grad(grads, node, "bias", gb)
    return [gx]


# --- batch norm in training mode -----------------------------------------------------------

def _affine(net, node, channels):
    """A batch norm's weight and bias, float64: ones and zeros without an affine."""
    if not net._norms[node.output].affine:
        return np.ones(channels), np.zeros(channels)
    return (net._param(node, "weight").astype(np.float64),
            net._param(node, "bias").astype(np.float64))


def _clamp_after(net, node, dtype):
    """The bounds (``lo``, ``hi``, ``closed``) of the clamp fused after a batch norm (its
    forward applies it, its backward lets the gradient through where it does), or infinite
    bounds for none."""
    act = net._clamp_after.get(node.output)
    if act is None:
        return dtype.type(-np.inf), dtype.type(np.inf), False
    return dtype.type(act.act.lo), dtype.type(act.act.hi), act.attrs.get("closed", False)


def _batchnorm_forward(net, node, inputs):
    (x,) = inputs
    norm = net._norms[node.output]
    if x.ndim != 4:
        raise ValueError(f"{node.name}: expected 4D input (got {x.ndim}D input of size "
                         f"{list(x.shape)})")
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if count == 1:
        raise ValueError(f"{node.name}: expected more than 1 value per channel when training, "
                         f"got input size {list(x.shape)}")
    x = np.ascontiguousarray(x)
    channels, pixels = x.shape[1], x.shape[2] * x.shape[3]
    mean, var = np.empty(channels), np.empty(channels)  # var biased: the normalisation's
    rows = _small_planes(x)
    if rows:
        batch_norm_statistics_rows(image_rows(x), pixels, _blocks(channels), mean, var)
    else:
        batch_norm_statistics(channels_view(x), mean, var)
    inv_std = 1 / np.sqrt(var + norm.eps)
    weight, bias = _affine(net, node, channels)
    scale = (inv_std * weight).astype(x.dtype)
    shift = (bias - mean * inv_std * weight).astype(x.dtype)
    lo, hi, _ = _clamp_after(net, node, x.dtype)
    y = net._empty(x.shape, x.dtype)
    if rows:
        channel_affine_rows(image_rows(x), np.repeat(scale, pixels), np.repeat(shift, pixels),
                            lo, hi, image_rows(y))
    else:
        channel_affine(channels_view(x), scale, shift, lo, hi, channels_view(y))
    if norm.track:
        prefix = node.attrs["module"]
        batches = net.buffers[f"{prefix}.num_batches_tracked"]
        batches += 1  # an empty batch counts, and leaves the statistics as they are (torch's)
        factor = 1 / float(batches) if norm.momentum is None else norm.momentum
        for name, stat in (("running_mean", mean),
                           ("running_var", var * count / (count - 1))) if count else ():
            running = net.buffers[f"{prefix}.{name}"]
            running *= 1 - factor
            running += factor * stat.astype(running.dtype)
    return y, (x, mean, inv_std, scale, shift)


def _batchnorm_backward(net, node, g, kept, grads):
    x, mean, inv_std, scale, shift = kept
    channels, pixels = x.shape[1], x.shape[2] * x.shape[3]
    count = x.shape[0] * pixels
    lo, hi, closed = _clamp_after(net, node, x.dtype)
    sum_g, sum_g_hat = np.empty(channels), np.empty(channels)
    g = np.ascontiguousarray(g)
    rows = _small_planes(x)
    if rows:  # the per-channel arrays repeated per position
        scale, shift = np.repeat(scale, pixels), np.repeat(shift, pixels)
        batch_norm_backward_sums_rows(image_rows(g), image_rows(x), pixels,
                                      _blocks(channels), mean, inv_std, scale, shift, lo, hi,
                                      closed, sum_g, sum_g_hat)
    else:
        batch_norm_backward_sums(channels_view(g), channels_view(x), mean, inv_std, scale,
                                 shift, lo, hi, closed, sum_g, sum_g_hat)
    if net._norms[node.output].affine:
        net._add_grad(grads, node, "weight", sum_g_hat)
        net._add_grad(grads, node, "bias", sum_g)
    weight, _ = _affine(net, node, channels)
    # gx = a (g - mean(g) - x_hat mean(g x_hat)), x_hat = (x - mean) inv_std, a = weight inv_std
    a = weight * inv_std
    per_value = 1 / max(count, 1)  # an empty batch: no gradient, and no 0 / 0 on the way
    k = a * inv_std * sum_g_hat * per_value
    b = k * mean - a * sum_g * per_value
    a, k, b = a.astype(x.dtype), k.astype(x.dtype), b.astype(x.dtype)
    gx = net._empty(x.shape, x.dtype)
    if rows:
        batch_norm_input_gradient_rows(image_rows(g), image_rows(x), np.repeat(a, pixels),
                                       np.repeat(k, pixels), np.repeat(b, pixels), scale,
                                       shift, lo, hi, closed, image_rows(gx))
    else:
        batch_norm_input_gradient(channels_view(g), channels_view(x), a, k, b, scale, shift,
                                  lo, hi, closed, channels_view(gx))
    return [gx]


def _small_planes(x) -> bool:
    """Whether a batch norm takes ``x``'s images as rows (``tuning.TRAIN_ROWS_BELOW``)."""
    return 0 < x.shape[2] * x.shape[3] < tuning.TRAIN_ROWS_BELOW


def _blocks(channels: int) -> int:
    """How many runs of channels the row kernels' sums split into: a few per thread."""
    return min(channels, 4 * get_num_threads())


# --- activations ---------------------------------------------------------------------------

_SQRT_2_PI = math.sqrt(2 / math.pi)


def _act_forward(net, node, inputs):
    (x,) = inputs
    if node.output in net._fused_clamps:  # applied by the batch norm before it
        return x, None
    act = node.act
    kind, dtype = act.kind, x.dtype
    if kind == "clamp":
        x = np.ascontiguousarray(x)
        y = net._empty(x.shape, x.dtype)
        clamp_forward(x.reshape(-1), dtype.type(act.lo), dtype.type(act.hi), y.reshape(-1))
    elif kind == "leaky":
        y = np.where(x > 0, x, x * dtype.type(act.alpha))
    elif kind == "hardsigmoid":
        y = np.clip(x * dtype.type(act.alpha) + dtype.type(act.beta), 0, 1)
    elif kind == "hardswish":
        y = x * np.clip(x / 6 + dtype.type(0.5), 0, 1)
    elif kind == "sigmoid":
        y = special.expit(x)
    elif kind == "silu":
        y = x * special.expit(x)
    elif kind == "tanh":
        y = np.tanh(x)
    elif kind == "mish":
        y = x * np.tanh(np.logaddexp(0, x))
    elif kind == "gelu":
        y = x * (special.erf(x / dtype.type(math.sqrt(2))) + 1) / 2
    else:  # gelu_tanh
        y = x * (np.tanh(dtype.type(_SQRT_2_PI) * (x + dtype.type(0.044715) * x ** 3)) + 1) / 2
    y = y.astype(dtype, copy=False)
    return y, (x, y)


def _act_backward(net, node, g, kept, grads):
    if kept is None:  # fused into the batch norm before it, which masks the gradient
        return [g]
    x, y = kept
    act = node.act
    kind, one = act.kind, x.dtype.type(1)
    if kind == "clamp":  # where the input is inside the bounds (at them too, for torch.clamp)
        gx = net._empty(x.shape, x.dtype)
        clamp_backward(np.ascontiguousarray(g).reshape(-1), x.reshape(-1), x.dtype.type(act.lo),
                       x.dtype.type(act.hi), node.attrs.get("closed", False), gx.reshape(-1))
        return [gx]
    if kind == "leaky":
        d = np.where(x > 0, one, x.dtype.type(act.alpha))
    elif kind == "hardsigmoid":
        u = x * x.dtype.type(act.alpha) + x.dtype.type(act.beta)
        d = np.where((u > 0) & (u < 1), x.dtype.type(act.alpha), 0)
    elif kind == "hardswish":  # torch's: 0 below -3, x / 3 + 1/2 up to 3, then 1
        d = np.where(x < -3, 0, np.where(x <= 3, x / 3 + x.dtype.type(0.5), one))
    elif kind == "sigmoid":
        d = y * (one - y)
    elif kind == "silu":
        s = special.expit(x)
        d = s * (one + x * (one - s))
    elif kind == "tanh":
        d = one - y * y
    elif kind == "mish":
        t = np.tanh(np.logaddexp(0, x))
        d = t + x * (one - t * t) * special.expit(x)
    elif kind == "gelu":
        d = (special.erf(x / x.dtype.type(math.sqrt(2))) + one) / 2 + x * np.exp(
            -x * x / 2) / x.dtype.type(math.sqrt(2 * math.pi))
    else:  # gelu_tanh
        k, c = x.dtype.type(_SQRT_2_PI), x.dtype.type(0.044715)
        t = np.tanh(k * (x + c * x ** 3))
        d = (one + t) / 2 + x * (one - t * t) * k * (one + 3 * c * x * x) / 2
    return [(g * d).astype(g.dtype, copy=False)]


# --- pooling -------------------------------------------------------------------------------

def _pool_geometry(net, node, x):
    """The pooling's taps (``PoolSpec.tap_table``), output size and (average) divisors for
    an input of ``x``'s shape, worked out once per shape."""
    def geometry():
        spec = pool_spec(node, Shape(*x.shape[1:]))
        divisors = spec.divisors() if spec.kind == "avg" else None
        return spec.tap_table(), spec.output_size, divisors
    return net._geometry(node, x.shape, geometry)


def _maxpool_forward(net, node, inputs):
    x = np.ascontiguousarray(inputs[0])
    taps, size, _ = _pool_geometry(net, node, x)
    out = net._empty((*x.shape[:2], *size), x.dtype)
    index = net._empty(out.shape, np.int64)
    max_pool_forward(channels_view(x), taps, channels_view(out), channels_view(index))
    return out, (x.shape, index)


def _maxpool_backward(net, node, g, kept, grads):
    shape, index = kept
    gx = net._empty(shape, g.dtype)
    max_pool_backward(channels_view(np.ascontiguousarray(g)), channels_view(index),
                      channels_view(gx))
    return [gx]


def _avgpool_forward(net, node, inputs):
    x = np.ascontiguousarray(inputs[0])
    taps, size, divisors = _pool_geometry(net, node, x)
    out = net._empty((*x.shape[:2], *size), x.dtype)
    avg_pool_forward(channels_view(x), taps, divisors, channels_view(out))
    return out, (x.shape, taps, divisors)


def _avgpool_backward(net, node, g, kept, grads):
    shape, taps, divisors = kept
    gx = net._empty(shape, g.dtype)
    avg_pool_backward(channels_view(np.ascontiguousarray(g)), taps, divisors,
                      channels_view(gx))
    return [gx]


def _gap_forward(net, node, inputs):
    (x,) = inputs
    return x.mean(axis=(2, 3), keepdims=True), x.shape


def _gap_backward(net, node, g, shape, grads):
    h, w = shape[2:]
    return [np.broadcast_to(g / g.dtype.type(h * w), shape).copy()]


def _gmp_forward(net, node, inputs):
    (x,) = inputs
    flat = channels_view(x)
    first = flat.argmax(axis=-1)
    return np.take_along_axis(flat, first[..., None], -1)[..., None], (x.shape, first)


def _gmp_backward(net, node, g, kept, grads):
    shape, first = kept
    gx = np.zeros((*shape[:2], shape[2] * shape[3]), g.dtype)
    np.put_along_axis(gx, first[..., None], g.reshape(*shape[:2], 1), -1)
    return [gx.reshape(shape)]


# --- linear layers and reshapes ------------------------------------------------------------

def _linear_forward(net, node, inputs):
    (x,) = inputs
    y = x @ net._param(node, "weight").T
    bias = net._param(node, "bias")
    return (y if bias is None else y + bias), x


def _linear_backward(net, node, g, x, grads):
    net._add_grad(grads, node, "weight", g.T @ x)
    if net._param(node, "bias") is not None:
        net._add_grad(grads, node, "bias", g.sum(axis=0))
    return [g @ net._param(node, "weight")]


def _flatten_forward(net, node, inputs):
    (x,) = inputs
    return x.reshape(x.shape[0], math.prod(x.shape[1:])), x.shape  # -1 fails for 0 images


def _unflatten_forward(net, node, inputs):
    (x,) = inputs
    return x.reshape(*x.shape, 1, 1), x.shape


def _reshape_backward(net, node, g, shape, grads):
    return [g.reshape(shape)]


# --- element-wise and joins ----------------------------------------------------------------

def _reduced(g, shape):
    """``g`` summed over the axes where a broadcast operand of ``shape`` was repeated."""
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _add_forward(net, node, inputs):
    a, b = inputs
    return np.add(a, b, out=net._empty(np.broadcast_shapes(a.shape, b.shape),
                                       np.result_type(a, b))), (a.shape, b.shape)


def _add_backward(net, node, g, shapes, grads):
    return [_reduced(g, shape) for shape in shapes]


def _mul_forward(net, node, inputs):
    a, b = inputs
    return a * b, (a, b)


def _mul_backward(net, node, g, kept, grads):
    a, b = kept
    return [_reduced(g * b, a.shape), _reduced(g * a, b.shape)]


_AXES = {"height": 2, "width": 3}


def _concat_forward(net, node, inputs):
    axis = _AXES.get(node.attrs.get("axis"), 1)
    return np.concatenate(inputs, axis=axis), [x.shape[axis] for x in inputs]


def _concat_backward(net, node, g, sizes, grads):
    axis = _AXES.get(node.attrs.get("axis"), 1)
    return np.split(g, np.cumsum(sizes)[:-1], axis=axis)


def _softmax_forward(net, node, inputs):  # over the channels, or an (N, F) input's features
    (x,) = inputs
    e = np.exp(x - x.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    return y, y


def _softmax_backward(net, node, g, y, grads):
    return [y * (g - (g * y).sum(axis=1, keepdims=True))]


def _identity_forward(net, node, inputs):  # dropout, when the node carries its probability
    (x,) = inputs
    p = node.attrs.get("dropout", 0.0)
    if p == 0:
        return x, None
    keep = net._rng.random(x.shape) >= p
    scale = x.dtype.type(0 if p >= 1 else 1 / (1 - p))
    return np.where(keep, x * scale, x.dtype.type(0)), (keep, scale)


def _identity_backward(net, node, g, kept, grads):
    if kept is None:
        return [g]
    keep, scale = kept
    return [np.where(keep, g * scale, g.dtype.type(0))]


#: (forward, backward) of each operation a training graph may hold.
_OPERATIONS = {
    "conv": (_conv_forward, _conv_backward),
    "batchnorm": (_batchnorm_forward, _batchnorm_backward),
    "act": (_act_forward, _act_backward),
    "maxpool": (_maxpool_forward, _maxpool_backward),
    "avgpool": (_avgpool_forward, _avgpool_backward),
    "gap": (_gap_forward, _gap_backward),
    "gmp": (_gmp_forward, _gmp_backward),
    "linear": (_linear_forward, _linear_backward),
    "flatten": (_flatten_forward, _reshape_backward),
    "unflatten": (_unflatten_forward, _reshape_backward),
    "add": (_add_forward, _add_backward),
    "mul": (_mul_forward, _mul_backward),
    "concat": (_concat_forward, _concat_backward),
    "softmax": (_softmax_forward, _softmax_backward),
    "identity": (_identity_forward, _identity_backward),
}

#: The torch layers the importers read that a training graph does not serve yet.
_NOT_TRAINED = ("ConvTranspose2d",)
