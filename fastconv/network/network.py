"""``fastconv.Network``: a network planned once and run many times."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from .. import runtime
from ..spec import ConvSpec
from .graph import INPUT, NONE, RELU, RELU6, Activation, Graph, Node, infer_shapes
from .emission import PackedWeights
from .planner import ShapePlan, plan_shape
from .rewrites import optimize

BACKENDS = ("numba", "cython")

_ACTIVATIONS = {None: NONE, "none": NONE, "relu": RELU, "relu6": RELU6}


def check_backend(backend) -> None:
    """A network's ``backend`` argument: "auto" or one of :data:`BACKENDS` (TypeError,
    ValueError)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, but got {type(backend).__name__}")
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"Network supports backend 'auto' or one of {list(BACKENDS)}, "
                         f"but got {backend!r}")


class Network:
    """A network planned once: batch norms folded, activations fused into the kernels that
    produce their inputs, weights packed into the kernels' layouts, activations in NHWC with
    zero borders for the padding, and one arena of buffers per input shape.

    Build one with :meth:`from_torch`, :meth:`from_onnx` or :meth:`from_specs`; call it on
    NCHW arrays.

    Parameters
    ----------
    graph : fastconv.network.graph.Graph
    backend : {"auto", "numba", "cython"}
        The executor: Numba's JIT kernels, or the Cython kernels compiled at install, which
        run a call's every node in one OpenMP parallel region. ``"auto"`` takes Numba where
        it is installed, else Cython. The planner (folding, fusion, layout, packing, arena)
        is the same for both; ``print(plan)`` says which runs it.
    threads : int, optional
        Threads of every parallel loop in a call (default: Numba's thread count when the
        plan is made; on Cython, OpenMP's).

    Notes
    -----
    The weights are copied when the plan is made: changing the module or the arrays
    afterwards does not change the plan. Several Python threads may call one plan at once:
    each call takes an arena of its own (made on first need, then reused), and the result is
    a new array, never a view of the plan's buffers.
    """

    def __init__(self, graph: Graph, backend: str = "auto", threads: int | None = None):
        self._settle(backend, threads)
        self.source = graph
        self.graph = optimize(graph)
        self.dtype = graph.dtype
        self._packed = PackedWeights()
        self._plans: dict[tuple, _Planned] = {}
        self._lock = threading.Lock()

    def _settle(self, backend, threads) -> None:
        """The executor and the thread count, checked (a plan of any source)."""
        check_backend(backend)
        self.backend = _resolve(backend)
        if self.backend == "numba":
            from . import numba_executor as executor  # Numba loads here, not with fastconv

            default, most, pool = runtime.get_num_threads, runtime.pool_size(), "Numba's pool"
        else:
            from . import cython_executor as executor

            default, most = executor.max_threads, max(executor.max_threads(),
                                                      runtime.usable_cores())
            pool = "OpenMP's threads, or the cores"
        self._executor = executor
        self._settings = (backend, threads)  # as asked: a pickled plan resolves them anew
        self._token = uuid.uuid4().hex  # names the plan across processes (see __reduce__)
        if threads is None:
            threads = _dask_worker_share() or default()
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not (
                1 <= threads <= most):
            raise ValueError(f"threads must be an int from 1 to {most} ({pool}), but got "
                             f"{threads!r}")
        self.threads = int(threads)

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def from_torch(cls, module, backend: str = "auto", threads: int | None = None, *,
                   training: bool = False):
        """Plan an eval-mode torch module; or, with ``training``, a module in training mode
        (a :class:`~fastconv.network.training.TrainingNetwork`: ``forward``, ``backward``,
        ``parameters``, ``grads``).

        An ``nn.Sequential`` (nested ones too) is read layer by layer; any other module is
        traced by ``torch.fx``. The layers may be ``Conv2d`` (padding_mode "zeros"),
        ``ConvTranspose2d`` whose kernel is its stride, ``BatchNorm2d``, ``ReLU``, ``ReLU6``,
        ``Hardtanh``, ``LeakyReLU``, ``Hardsigmoid``, ``Hardswish``, ``Sigmoid``, ``SiLU``,
        ``Identity``, ``Dropout``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d(1)``,
        ``Flatten`` and ``Linear``; between them a traced module
        may add, multiply, concatenate on the channels, flatten, call the activations and
        average globally. The result equals the module's in eval mode, in its dtype
        (float32 or float64).

        Raises
        ------
        TypeError
            A layer or call not supported (naming it), a module torch.fx cannot trace, or
            parameters of mixed dtypes.
        ValueError
            A module in training mode ("call .eval() first"; with ``training``, one in eval
            mode), or a setting the plan does not serve.
        """
        if training:
            from .training import TrainingNetwork

            if threads is not None:
                raise ValueError("Network.from_torch(training=True) takes no threads: its "
                                 "convolutions run on fastconv's thread settings (config)")
            return TrainingNetwork(module, backend=backend)
        from .torch_import import from_torch

        return cls(from_torch(module), backend, threads)

    @classmethod
    def from_onnx(cls, model, backend: str = "auto", threads: int | None = None, *,
                  fallback: bool = True) -> "Network":
        """Plan an ONNX model: a path, its bytes, or an ``onnx.ModelProto``.

        The model is checked and its shapes inferred with the ``onnx`` package first
        (opsets 11 and later). Each operator follows the ONNX specification. These run on
        the plan's kernels (``onnx_import.SUPPORTED``; the README says with which
        attributes): Conv, ConvTranspose, BatchNormalization,
        Relu, Clip, LeakyRelu, HardSigmoid, HardSwish, Sigmoid, Tanh, Mish, Gelu, Mul and Add
        (of two activations, one perhaps (N, C, 1, 1), or of a constant per channel), Sub and
        Div by constants, Concat on the channels, MaxPool, AveragePool (undilated, pads up to
        half the kernel), GlobalAveragePool, GlobalMaxPool, ReduceMean over the pixels,
        Resize (nearest or linear), DepthToSpace (DCR), Split and Slice on the channels,
        Flatten and Reshape (to (N, F) or (N, F, 1, 1)), Gemm, MatMul of (N, F) by a constant
        matrix, Identity, Dropout and Constant.

        A model of one float (N, C, H, W) input and one output whose every node is one of
        those, with shapes known past the batch, is one plan. Any other model is planned per
        input shape, as ONNX Runtime plans a session: shape subgraphs and whatever else is
        computed from constants are folded; runs of plan nodes fed by one value are plan
        segments; every other node runs in a fallback between them, through the ``onnx``
        package's reference implementation (``onnx.reference``). ``print(plan)`` and
        ``plan.profile(x)`` name the fallback nodes. Such a plan takes its inputs in the
        graph's order (or a dict by name) and returns a tuple when the graph has several
        outputs.

        Parameters
        ----------
        model : str, os.PathLike, bytes or onnx.ModelProto
        backend : {"auto", "numba", "cython"}
        threads : int, optional
        fallback : bool, default True
            False: refuse a model with nodes the plan has no kernel for, naming every one
            of them (for the shapes the model declares, a symbolic batch taken as 1).

        Raises
        ------
        TypeError
            Not a path, bytes or ModelProto.
        ValueError
            An invalid model, an older opset, a node the ONNX specification forbids, or with
            ``fallback=False`` nodes the plan has no kernel for: the message names the
            operator type, the node and why.
        """
        from . import onnx_import

        proto = onnx_import.load(model)
        opset = onnx_import.opset_of(proto)
        try:
            graph = onnx_import.one_graph(proto, opset)
        except onnx_import.NotOneGraph as exc:
            from .onnx_program import OnnxNetwork

            return OnnxNetwork(proto, opset, backend, threads, fallback=fallback, why=str(exc))
        return cls(graph, backend, threads)

    @classmethod
    def from_specs(cls, specs, weights, biases=None, activation=None, backend: str = "auto",
                   threads: int | None = None) -> "Network":
        """Plan a chain of convolutions given as specs (``fastconv.models`` builds them).

        Parameters
        ----------
        specs : sequence of ConvSpec
            In order. A layer whose ``input_size`` is 1x1 after a larger output (MobileNet's
            classifier) follows a global average pool, as ``fastconv profile`` runs it; a
            ``models.FullyConnected`` is a linear layer, whose output is (N, F).
        weights : sequence of ndarray
            Each of its spec's ``weight_shape``, all float32 or all float64.
        biases : sequence of ndarray or None, optional
            Per layer (None for a layer without).
        activation : {None, "relu", "relu6"} or Activation
            Applied after every layer but a FullyConnected.
        """
        return cls(_specs_graph(specs, weights, biases, activation), backend, threads)

    # --- running ----------------------------------------------------------------------------

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """The shape of the result for an input of ``input_shape`` (N, C, H, W), without
        running anything; an input the plan would refuse is refused here, with the call's
        message."""
        shape = self._check_declared(self._check_shape(tuple(input_shape)))
        shapes = infer_shapes(self.graph, shape)
        return shapes[self.graph.output].batched(shape[0])

    @property
    def declared_input(self) -> tuple:
        """The input's name and (C, H, W) as a model file declares it (None where symbolic;
        None for the whole when nothing is declared)."""
        return self.graph.input_name, self.graph.declared

    # --- beyond one process -----------------------------------------------------------------

    def __reduce__(self):
        """A plan pickles as its imported graph (the weights with it) and its settings as
        given; the packed weights, arenas and compiled state are rebuilt where it is loaded,
        once per process (a plan loaded again there is the same object). Its thread count,
        if it was not given, is then that process's default: inside a Dask worker, the
        worker's share of the cores."""
        backend, threads = self._settings
        return _restore, (self._token, self.source, backend, threads)

    def __dask_tokenize__(self):
        """Dask names a plan by its token and settings, not by hashing its weights."""
        return (type(self).__name__, self._token, self._settings, self.threads)

    def with_threads(self, threads: int) -> "Network":
        """This plan with another thread count (the same graph, planned again once per
        process and count, then reused)."""
        backend, _ = self._settings
        return _restore(self._token, self.source, backend, threads)

    def map_blocks(self, x):
        """The plan over a Dask array, lazily.

        Parameters
        ----------
        x : dask.array.Array
            NCHW, in the plan's dtype, chunked along the batch as you like; the other axes
            are rechunked whole where they are not.

        Returns
        -------
        dask.array.Array
            The plan's output for every image, chunked as ``x`` along the batch, its shape
            and dtype known before anything runs. It computes on any Dask scheduler:
            threads, processes, or a ``dask.distributed.Client`` (the plan travels pickled,
            see :meth:`__reduce__`). Unless the plan was made with ``threads=``, each task
            runs it with its worker's share of the cores: the cores of the worker's machine
            over the Dask threads there (on a distributed cluster, as the client sees it when
            this is called; on the local schedulers, the cores over their pool), so that
            Dask's threads times the plan's never oversubscribe the cores.

        Raises
        ------
        TypeError
            Not a dask array, or not of the plan's dtype.
        ValueError
            An input the plan refuses (rank, channels, size): the plan's own message, here,
            before anything runs.
        """
        from . import dask_blocks  # dask loads here, never with fastconv

        return dask_blocks.map_blocks(self, x)

    def counts(self, input_shape) -> list[dict]:
        """What each node of the plan computes and moves for inputs of ``input_shape`` (N,
        C, H, W), without running anything.

        Returns
        -------
        list of dict
            Per node, in order: ``name``, ``op``, ``kernel``, ``input`` and ``output`` (shapes
            without the batch), ``fused`` (the graph's nodes it runs besides its own),
            ``layers``, ``macs`` (multiply-adds of its convolutions and linear layers, over
            the batch), ``flops`` (2 x MACs), ``params`` (after batch norms are folded) and
            ``bytes`` (its inputs, parameters and output, each moved once).
        """
        shape = self._check_declared(self._check_shape(tuple(input_shape)))
        if shape[0] == 0:
            raise ValueError("counts needs at least one image, but got a batch of 0")
        plan = self._planned(shape).plan
        return [dict(name=n.name, op=n.op, kernel=n.kernel, input=n.input, output=n.output,
                     fused=list(n.fused), layers=n.layers, macs=n.macs, flops=2 * n.macs,
                     params=n.params, bytes=n.bytes) for n in plan.nodes]

    def __call__(self, x) -> np.ndarray:
        """Run the network on ``x`` (N, C, H, W), in the plan's dtype and any memory layout;
        returns a new array, (N, C', H', W') or (N, F)."""
        return self._run(self._check_input(x))

    def _run(self, x, clock=None, out=None) -> np.ndarray:
        """:meth:`__call__` on a checked input, its steps timed into ``clock`` if given; into
        ``out`` if given (C-contiguous, of the output's shape and dtype)."""
        if x.shape[0] == 0:
            return np.empty(self.output_shape(x.shape), self.dtype)
        planned = self._planned(x.shape)
        arena = planned.acquire()
        previous = self._use_threads()
        try:
            return arena.run(x, clock, out=out)
        finally:
            self._use_threads(previous)
            planned.release(arena)

    def profile(self, x, budget: float = 1.0, min_repeats: int = 5) -> "NetworkProfile":
        """Time every node on input ``x``: repeated calls until ``budget`` seconds, each
        node's minimum (and median) kept, and the whole call's, timed without the per-node
        clock. The node times come from the plan's own steps, so their sum is the call's
        time less the Python between steps."""
        x = self._check_input(x)
        if x.shape[0] == 0:
            raise ValueError("profile needs at least one image, but got a batch of 0")
        planned = self._planned(x.shape)
        self(x)  # compile, or load the cache
        arena = planned.acquire()
        previous = self._use_threads()
        try:
            whole, clock = timed_calls(lambda clock=None: arena.run(x, clock), budget,
                                       min_repeats)
        finally:
            self._use_threads(previous)
            planned.release(arena)
        return NetworkProfile(planned.plan, clock.times, whole, self.threads, self.backend)

    # --- inside -----------------------------------------------------------------------------

    def _check_shape(self, shape: tuple) -> tuple[int, ...]:
        if len(shape) != 4:
            raise ValueError(f"Network expects a batched 4-D input (N, C, H, W), but got input "
                             f"of size {list(shape)}")
        return tuple(int(n) for n in shape)

    def _check_declared(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``shape``, if it fits the input a model file declares (its batch is free)."""
        if self.graph.declared is not None:
            from .onnx_import import check_declared

            check_declared(self.graph.input_name, (None, *self.graph.declared), shape)
        return shape

    def _check_input(self, x) -> np.ndarray:
        if isinstance(x, np.ma.MaskedArray) or not isinstance(x, np.ndarray):
            raise TypeError(f"Network expects a numpy.ndarray input, but got "
                            f"{type(x).__name__}")
        if x.dtype.type is not self.dtype.type:
            raise TypeError(f"Input type ({x.dtype}) and the network's weight type "
                            f"({self.dtype}) should be the same")
        self._check_declared(self._check_shape(x.shape))
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        return x

    def _use_threads(self, threads: int | None = None) -> int | None:
        """Numba's thread count for this call (it is per calling thread): the plan's, or
        ``threads`` to restore; returns the one it replaced. The Cython plan passes its count
        to its own parallel region."""
        if self.backend != "numba":
            return None
        previous = runtime.get_num_threads()
        runtime.set_num_threads(self.threads if threads is None else threads)
        return previous

    def _repack(self) -> None:
        """Pack the weights of ``self.graph`` again, in place, after they were changed in
        place (a training step's): every plan made runs on the new weights."""
        with self._lock:
            self._packed.refresh()

    def _planned(self, shape, extra: tuple = ()) -> "_Planned":
        key = (shape, *extra) if extra else shape
        planned = self._plans.get(key)
        if planned is None:
            with self._lock:
                planned = self._plans.get(key)
                if planned is None:
                    plan = plan_shape(self.graph, self._packed, shape, self.threads,
                                      self._executor,
                                      dict(zip(self.graph.extra_inputs, extra)))
                    planned = self._plans[key] = _Planned(plan, self._executor)
        return planned

    def _run_segment(self, xs: list, clock=None) -> list:
        """A plan segment of an ONNX model: its inputs (``INPUT``'s, then
        ``graph.extra_inputs``'), NCHW and checked; returns its outputs (``graph.outputs``)."""
        shapes = [tuple(int(n) for n in x.shape) for x in xs]
        if shapes[0][0] == 0:
            known = infer_shapes(self.graph, shapes[0], dict(zip(self.graph.extra_inputs,
                                                                 shapes[1:])))
            return [np.empty(known[v].batched(0), self.dtype) for v in self.graph.outputs]
        planned = self._planned(shapes[0], tuple(shapes[1:]))
        arena = planned.acquire()
        previous = self._use_threads()
        try:
            outs = arena.run(xs[0], clock, xs[1:])
        finally:
            self._use_threads(previous)
            planned.release(arena)
        return outs if isinstance(outs, list) else [outs]

    def __repr__(self) -> str:
        return (f"Network({len(self.graph.nodes)} nodes from {self.source.source or 'a graph'},"
                f" backend={self.backend!r}, threads={self.threads}, dtype={self.dtype.name})")

    def __str__(self) -> str:
        return describe(self)


_RESTORED: dict = {}  # (token, backend, threads) -> a plan loaded in this process
_RESTORED_MAX = 8
_RESTORED_LOCK = threading.Lock()


def _restore(token: str, graph: Graph, backend: str, threads: int | None) -> "Network":
    """The plan ``token`` names, with these settings: made once per process, then reused
    (Dask loads a plan again for every task)."""
    key = (token, backend, threads)
    with _RESTORED_LOCK:
        net = _RESTORED.get(key)
    if net is None:
        net = Network(graph, backend, threads)
        net._token = token
        with _RESTORED_LOCK:
            net = _RESTORED.setdefault(key, net)
            while len(_RESTORED) > _RESTORED_MAX:
                del _RESTORED[next(iter(_RESTORED))]
    return net


def _dask_worker_share() -> int | None:
    """Inside a ``dask.distributed`` worker's task, the cores that are its share: the
    ``OMP_NUM_THREADS`` the worker's nanny sets for its processes (Dask's own figure,
    ``distributed.nanny.pre-spawn-environ``), else the cores over the worker's threads.
    None elsewhere. Dask is never imported here: only asked, if already loaded."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        worker = distributed.get_worker()
    except ValueError:  # not in a worker's task
        return None
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, runtime.usable_cores() // max(1, worker.state.nthreads))


def _resolve(backend: str) -> str:
    """``"auto"``: Numba where it is installed, else the Cython kernels; a backend named
    must be there."""
    has_numba = importlib.util.find_spec("numba") is not None
    if backend == "numba" or (backend == "auto" and has_numba):
        if not has_numba:
            raise ValueError("backend 'numba' needs Numba: pip install numba")
        return "numba"
    if importlib.util.find_spec("fastconv.kernels.cython.plan") is None:
        raise ValueError(f"backend {backend!r} needs the Cython plan kernels, which were not "
                         "built: reinstall fastconv with a C compiler, Cython, NumPy and SciPy "
                         "(pip install --no-build-isolation -e .)")
    return "cython"


class _Planned:
    """A shape plan and its pool of arenas (one per concurrent call)."""

    def __init__(self, plan: ShapePlan, executor):
        from ..kernels import tuned

        self.plan, self._executor = plan, executor
        # the thresholds it was planned by (kernels/tuning.py's, or fastconv tune's)
        self.tuning = tuned.IN_FORCE.describe() if tuned.IN_FORCE else "defaults"
        self._free: list = []
        self._lock = threading.Lock()
        self.arenas = 0

    def acquire(self):
        with self._lock:
            if self._free:
                return self._free.pop()
            self.arenas += 1
        return self._executor.Arena(self.plan)

    def release(self, arena) -> None:
        with self._lock:
            self._free.append(arena)


def timed_calls(run, budget: float, min_repeats: int):
    """Call ``run()`` and ``run(clock)`` in turn until ``budget`` seconds and ``min_repeats``
    calls: the whole calls' seconds (timed without the per-node clock), and the clock."""
    whole, clock = [], _Clock()
    end = time.perf_counter() + budget
    while len(whole) < min_repeats or time.perf_counter() < end:
        start = time.perf_counter()
        run()
        whole.append(time.perf_counter() - start)
        clock.begin()
        run(clock)
    return whole, clock


class _Clock:
    """Seconds per node, a list per call."""

    def __init__(self):
        self.times: dict[str, list[float]] = {}
        self.now = time.perf_counter

    def begin(self):
        for times in self.times.values():
            times.append(0.0)

    def add(self, node: str, seconds: float):
        times = self.times.setdefault(node, [0.0])
        times[-1] += seconds


@dataclass
class NetworkProfile:
    """:meth:`Network.profile`'s result: one row per node, and the whole call."""

    plan: ShapePlan
    node_times: dict[str, list[float]]
    whole: list[float]
    threads: int
    backend: str
    rows: list[dict] = field(init=False)

    def __post_init__(self):
        self.rows = []
        names = ["input", *[n.name for n in self.plan.nodes], "output"]
        plans = {n.name: n for n in self.plan.nodes}
        for name in names:
            times = self.node_times.get(name)
            if not times:
                continue
            node = plans.get(name)
            seconds = min(times)
            flops = 2 * node.macs if node else 0
            self.rows.append(dict(
                name=name, op=node.op if node else "layout", kernel=node.kernel if node else
                ("NCHW -> NHWC" if name == "input" else "NHWC -> NCHW"),
                input=node.input if node else "", output=node.output if node else "",
                fused=node.fused if node else [], layers=node.layers if node else 0,
                macs=node.macs if node else 0, flops=flops,
                params=node.params if node else 0, bytes=node.bytes if node else 0,
                seconds=seconds,
                seconds_median=float(np.median(times)),
                gflops=flops / seconds / 1e9 if seconds > 0 and flops else 0.0))

    @property
    def seconds(self) -> float:
        """The whole call's minimum, timed without the per-node clock."""
        return min(self.whole)

    @property
    def sum_of_nodes(self) -> float:
        """The nodes' minima, summed: at most what any one call took (each node's best time
        may come from a different call)."""
        return sum(r["seconds"] for r in self.rows)

    @property
    def sum_of_nodes_median(self) -> float:
        """The median over the clocked calls of each call's node times, summed: beside the
        median whole call, what the node times leave out (the Python between the steps)."""
        return float(np.median(np.sum(list(self.node_times.values()), axis=0)))

    def to_dict(self) -> dict:
        return dict(input_shape=list(self.plan.input_shape), threads=self.threads,
                    backend=self.backend, seconds=self.seconds,
                    seconds_median=float(np.median(self.whole)),
                    sum_of_nodes=self.sum_of_nodes,
                    sum_of_nodes_median=self.sum_of_nodes_median, nodes=self.rows,
                    arena_bytes=self.plan.arena_bytes)

    def table(self):
        """The rows as a ``rich`` table."""
        from rich.table import Table

        flops = sum(r["flops"] for r in self.rows)
        table = Table(title=f"Network {list(self.plan.input_shape)}, {self.plan.dtype.name}, "
                            f"{self.threads} threads ({self.backend}): min of "
                            f"{len(self.whole)} calls", title_justify="left")
        for head in ("node", "kernel", "input -> output", "fused", "MFLOP", "ms", "ms median",
                     "GFLOP/s", "% time"):
            table.add_column(head, justify="left" if head in ("node", "kernel",
                                                               "input -> output", "fused")
                             else "right")
        total = self.sum_of_nodes
        for r in self.rows:
            table.add_row(r["name"], r["kernel"], f"{r['input']} -> {r['output']}"
                          if r["input"] else "", ", ".join(r["fused"]), f"{r['flops'] / 1e6:.1f}",
                          f"{r['seconds'] * 1e3:.3f}", f"{r['seconds_median'] * 1e3:.3f}",
                          f"{r['gflops']:.1f}", f"{100 * r['seconds'] / total:.1f}")
        table.add_section()
        table.add_row("sum of nodes", "", "", "", f"{flops / 1e6:.1f}", f"{total * 1e3:.3f}", "",
                      f"{flops / total / 1e9:.1f}", "100.0")
        table.add_row("whole call", "", "", "", "", f"{self.seconds * 1e3:.3f}",
                      f"{np.median(self.whole) * 1e3:.3f}", f"{flops / self.seconds / 1e9:.1f}",
                      f"{100 * self.seconds / total:.1f}")
        return table

    def __rich__(self):
        return self.table()

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=200, record=True)
        with console.capture() as capture:
            console.print(self.table())
        return capture.get()


def describe(net: Network) -> str:
    """``print(plan)``: the nodes, what is fused into them, their kernels and the arenas."""
    lines = [repr(net)]
    for node in net.graph.nodes:
        extra = []
        if node.attrs.get("fused"):
            extra.append("fused: " + ", ".join(node.attrs["fused"]))
        if node.act.kind != "none":
            extra.append(f"epilogue {node.act}")
        lines.append(f"  {node.name}: {node.op}" + (f" ({'; '.join(extra)})" if extra else ""))
    for shape, planned in net._plans.items():
        plan = planned.plan
        lines.append(f"planned for input {list(shape)}: NHWC activations in one arena of "
                     f"{plan.arena_bytes / 2**20:.2f} MiB ({len(plan.buffers)} buffers), "
                     f"output {list(plan.output_shape)}; tuning: {planned.tuning}")
        for node in plan.nodes:
            lines.append(f"  {node.name}: {node.kernel}, {node.input} -> {node.output}")
    if not net._plans:
        lines.append("not yet planned for an input shape (the first call plans it)")
    return "\n".join(lines)


def _specs_graph(specs, weights, biases, activation) -> Graph:
    from ..models import FullyConnected

    specs = list(specs)
    weights = list(weights)
    if not specs:
        raise ValueError("Network.from_specs needs at least one layer, but got no specs")
    if len(weights) != len(specs):
        raise ValueError(f"Network.from_specs got {len(specs)} specs but {len(weights)} weights")
    biases = [None] * len(specs) if biases is None else list(biases)
    if len(biases) != len(specs):
        raise ValueError(f"Network.from_specs got {len(specs)} specs but {len(biases)} biases")
    if isinstance(activation, Activation):
        act = activation
    elif activation in _ACTIVATIONS:
        act = _ACTIVATIONS[activation]
    else:
        raise ValueError(f"activation must be None, 'relu', 'relu6' or an Activation, but got "
                         f"{activation!r}")
    dtypes = {np.asarray(w).dtype for w in weights}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
        raise TypeError(f"Network.from_specs needs weights all float32 or all float64, but got "
                        f"{sorted(str(d) for d in dtypes)}")
    dtype = next(iter(dtypes))
    nodes, value, size = [], INPUT, None
    for i, (spec, w, b) in enumerate(zip(specs, weights, biases)):
        label = f"layer {i} ({spec.kind})"
        if not isinstance(spec, ConvSpec):
            raise TypeError(f"{label}: expected a ConvSpec, but got {type(spec).__name__}")
        w = np.array(w, dtype=dtype, copy=True)
        if w.shape != spec.weight_shape:
            raise ValueError(f"{label}: expected weight of size {list(spec.weight_shape)}, but "
                             f"got weight of size {list(w.shape)}")
        if b is not None:
            b = np.array(b, dtype=dtype, copy=True)
            if b.shape != (spec.out_channels,):
                raise ValueError(f"{label}: expected bias of size [{spec.out_channels}], but "
                                 f"got bias of size {list(b.shape)}")
        if (spec.input_size == (1, 1) and size is not None and size != (1, 1)):
            nodes.append(Node("gap", (value,), f"g{i}", f"pool before layer {i}"))
            value = f"g{i}"
        if isinstance(spec, FullyConnected):
            node = Node("linear", (value,), f"v{i}", label, dict(weight=w.reshape(w.shape[:2]),
                                                                 bias=b))
        else:
            plain = ConvSpec(spec.in_channels, spec.out_channels, spec.kernel_size,
                             spec.stride, spec.padding, spec.dilation, spec.groups, b is not None)
            node = Node("conv", (value,), f"v{i}", label, dict(spec=plain, weight=w, bias=b))
            if act.kind != "none":
                node.attrs["act"] = act
        nodes.append(node)
        value = node.output
        size = spec.output_size if spec.input_size is not None else None
    return Graph(nodes, value, np.dtype(dtype), source="specs")
