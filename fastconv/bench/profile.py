"""Per-layer and whole-network profiles: fastconv's calls and its peers', layer by layer on
real activations, timed by :mod:`fastconv.bench.harness`."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .. import api, dispatch
from ..kernels.algorithms import serves
from ..spec import ConvSpec
from . import peers
from . import harness
from .harness import SETTLE, Timing, pause


def layer_arrays(spec: ConvSpec, batch: int, dtype, seed: int = 0):
    """Random input and weight arrays for a layer (the values do not change the timing)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.input_shape(batch)).astype(dtype)
    w = (rng.standard_normal(spec.weight_shape) / np.sqrt(np.prod(spec.weight_shape[1:])))
    return x, w.astype(dtype)


def candidate_name(backend: str, algorithm: str) -> str:
    """How a benchmark names a call: the algorithm, prefixed by its backend unless Numba."""
    return algorithm if backend == "numba" else f"{backend}:{algorithm}"


def layer_candidates(spec: ConvSpec, x, weight, *, algorithms: Iterable[str] | None = None,
                     backends: Iterable[str] = ("numba",), mode: str = "forward",
                     with_torch: bool = True, with_gemm: bool = True,
                     threads: int | None = None):
    """The calls a benchmark of one layer compares.

    Parameters
    ----------
    spec : ConvSpec
    x, weight : ndarray
    algorithms : iterable of str, optional
        Default: every algorithm of each backend (and "auto" when listed).
    backends : iterable of str
    mode : {"forward", "backward"}
        Backward computes the input and weight gradients.
    with_torch, with_gemm : bool
        Add ``"torch"`` (and, forward, ``"gemm"``: a bare numpy.matmul of the layer's GEMM).

    Returns
    -------
    dict of name -> zero-argument callable
        Names from :func:`candidate_name`; an algorithm that cannot serve the layer is left
        out.
    """
    out = {}
    dy = np.ones(spec.output_shape(x.shape[0]), x.dtype) if mode == "backward" else None

    def call(backend, algorithm):
        if mode == "backward":
            return lambda: api.conv2d_backward(
                dy, x, weight, spec.stride, spec.padding, spec.dilation, spec.groups,
                bias=False, needs=("input", "weight"), algorithm=algorithm, backend=backend)
        return lambda: api.conv2d(x, weight, None, spec.stride, spec.padding, spec.dilation,
                                  spec.groups, algorithm=algorithm, backend=backend)

    for backend in backends:
        names = dispatch.algorithms(backend) if algorithms is None else list(algorithms)
        for algorithm in names:
            if algorithm == "auto" or (algorithm in dispatch.algorithms(backend) and
                                       serves(algorithm, spec)):
                out[candidate_name(backend, algorithm)] = call(backend, algorithm)
    if with_torch and peers.torch_available():
        if mode == "backward":
            runner = peers.TorchNet([spec], [(weight, None)], threads)
            xt, dyt = runner.to_input(x), runner.to_input(dy)
            out["torch"] = lambda: runner.backward(0, dyt, xt, True)
        else:
            out["torch"] = peers.torch_conv2d(spec, x, weight, threads=threads)
    if with_gemm and mode == "forward":
        gemm_call = peers.numpy_gemm(spec, x.shape[0], x.dtype)
        if gemm_call is not None:
            out["gemm"] = gemm_call
    return out


# --- networks ---------------------------------------------------------------------------------

MODES = ("forward", "backward", "both")
# the peers that run the whole network in one session (forward only), and their names
WHOLE = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def network_weights(net, dtype, seed: int = 0):
    """He-scaled random weights (and zero biases) for each layer, so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    params = []
    for spec in net:
        fan_in = np.prod(spec.weight_shape[1:])
        w = (rng.standard_normal(spec.weight_shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
        b = np.zeros(spec.out_channels, dtype) if spec.bias else None
        params.append((w, b))
    return params


def _layer_algorithm(spec: ConvSpec, algorithm: str, backend: str) -> str:
    """The requested algorithm where it can serve the layer, otherwise "auto"."""
    if algorithm == "auto":
        return "auto"
    resolved = "numba" if backend == "auto" else backend
    if algorithm not in dispatch.algorithms(resolved):
        raise ValueError(f"unknown algorithm {algorithm!r} for backend {resolved!r}")
    return algorithm if serves(algorithm, spec) else "auto"


class _WallClock:
    """Seconds between start() and stop(), by the host's clock."""

    def start(self):
        self._t = time.perf_counter()

    def stop(self) -> float:
        return time.perf_counter() - self._t


class _CudaClock:
    """Seconds between start() and stop() by CUDA events, after synchronising; the host's
    clock (around a synchronised call) where events do not time (numba-cuda's simulator)."""

    def __init__(self):
        from numba import cuda

        self.cuda = cuda
        self.begin, self.end = cuda.event(), cuda.event()

    def start(self):
        self.cuda.synchronize()
        self._t = time.perf_counter()
        self.begin.record()

    def stop(self) -> float:
        self.end.record()
        self.end.synchronize()
        wall = time.perf_counter() - self._t
        elapsed = self.begin.elapsed_time(self.end)  # milliseconds; negative when simulated
        return elapsed / 1e3 if elapsed >= 0 else wall


class FastconvNet:
    """fastconv's calls for each layer of a network (see :func:`chain_pass`). With the CUDA
    backend the activations stay on the device and layers are timed by CUDA events."""

    name = "fastconv"

    def __init__(self, net, params, algorithm="auto", backend="auto"):
        self.net, self.backend = net, backend
        self.algorithms = [_layer_algorithm(s, algorithm, backend) for s in net]
        self.cuda = backend == "cuda"
        if self.cuda:
            from ..kernels.cuda._common import to_device

            params = [(to_device(w), to_device(b)) for w, b in params]
            self.clock = _CudaClock()
        self.params = params

    def to_input(self, x):
        if self.cuda:
            from ..kernels.cuda._common import to_device

            return to_device(x)
        return x

    def spatial(self, x):
        return tuple(x.shape[2:])

    def pool(self, x):
        if self.cuda:  # glue, not timed: through the host
            from ..kernels.cuda._common import to_device

            return to_device(x.copy_to_host().mean(axis=(2, 3), keepdims=True))
        return x.mean(axis=(2, 3), keepdims=True)

    def unpool(self, grad, shape):
        if self.cuda:
            from ..kernels.cuda._common import to_device

            host = grad.copy_to_host()
            return to_device(np.ascontiguousarray(np.broadcast_to(host / (shape[2] * shape[3]),
                                                                  shape)))
        return np.broadcast_to(grad / (shape[2] * shape[3]), shape)

    def output_grad(self, y):
        if self.cuda:
            from ..kernels.cuda._common import to_device

            return to_device(np.ones(y.shape, y.dtype))
        return np.ones_like(y)

    def forward(self, i, x):
        spec, (w, b) = self.net[i], self.params[i]
        return api.conv2d(x, w, b, spec.stride, spec.padding, spec.dilation, spec.groups,
                          algorithm=self.algorithms[i], backend=self.backend)

    def backward(self, i, dy, x, input_grad):
        spec, (w, b) = self.net[i], self.params[i]
        needs = ("input", "weight", "bias") if input_grad else ("weight", "bias")
        return api.conv2d_backward(dy, x, w, spec.stride, spec.padding, spec.dilation,
                                   spec.groups, bias=b is not None, needs=needs,
                                   algorithm=self.algorithms[i], backend=self.backend)[0]


def chain_pass(runner, net, x0, backward: bool):
    """One pass of a network through ``runner``, layer by layer on real activations.

    Returns per-layer forward and backward wall times (seconds; backward None when not run).
    A layer whose input is 1x1 after a larger output (the classifier) gets the global average
    pool first; it is glue, not timed. The first layer's input gradient is not computed (no one
    trains the image), as in autograd.
    """
    fwd = [0.0] * len(net)
    bwd = [0.0] * len(net) if backward else None
    inputs, pooled_from = [], []
    clock = getattr(runner, "clock", None) or _WallClock()
    x = runner.to_input(x0)
    for i, spec in enumerate(net):
        pooled_from.append(None)
        if runner.spatial(x) != tuple(spec.input_size):
            pooled_from[i] = tuple(x.shape)
            x = runner.pool(x)
        inputs.append(x)
        clock.start()
        x = runner.forward(i, x)
        fwd[i] = clock.stop()
    if backward:
        dy = runner.output_grad(x)
        for i in reversed(range(len(net))):
            clock.start()
            dx = runner.backward(i, dy, inputs[i], input_grad=i > 0)
            bwd[i] = clock.stop()
            dy = dx if pooled_from[i] is None or dx is None else runner.unpool(dx, pooled_from[i])
    return fwd, bwd


@dataclass
class NetTimings:
    """Per-layer and whole-pass wall times of one runner over repeated passes."""

    first_forward: list[float]
    first_backward: list[float] | None
    forward: list[list[float]] = field(default_factory=list)  # [pass][layer]
    backward: list[list[float]] | None = None

    def layer_times(self, i: int, mode: str) -> list[float]:
        times = []
        for p in range(len(self.forward)):
            t = 0.0
            if mode in ("forward", "both"):
                t += self.forward[p][i]
            if mode in ("backward", "both"):
                t += self.backward[p][i]
            times.append(t)
        return times

    def pass_times(self, mode: str) -> list[float]:
        return [sum(self.layer_times(i, mode)[p] for i in range(len(self.forward[0])))
                for p in range(len(self.forward))]


def time_networks(runners, net, x0, *, mode="forward", budget=2.0, min_passes=3,
                  max_passes=200, progress=None, whole=None, settle=SETTLE):
    """Time every runner's passes round-robin (interleaved) until ``budget`` seconds.

    Between two libraries the harness pauses ``settle`` seconds (see :func:`pause`): PyTorch's
    OpenMP threads and ONNX Runtime's pool spin after their work, and on two cores the next
    library would run against them. After the pause each one runs as it does in a program
    of its own.

    Parameters
    ----------
    runners : sequence
        Objects with the interface of :class:`FastconvNet`.
    whole : dict of name -> session, optional
        Whole-network sessions timed in the same rounds, objects with the interface of
        :class:`fastconv.peers.OnnxRuntimeNet`: ``run()`` is timed, and ``run_profiled()``
        runs after it (its session's profiler times the layers).
    progress : callable, optional
        Called with the fraction of the budget used, after each round.

    Returns
    -------
    dict of name -> NetTimings, and dict of name -> Timing of ``whole``'s ``run()``.
    """
    backward = mode in ("backward", "both")
    whole = whole or {}
    if len(runners) + len(whole) == 1:
        settle = 0.0  # one library has no one to disturb
    timings = {}
    for runner in runners:  # warm-up: compiles, loads caches, records first calls
        fwd, bwd = chain_pass(runner, net, x0, backward and runner.name != "onnxruntime")
        timings[runner.name] = NetTimings(fwd, bwd)
    whole_timings = {}
    for name, session in whole.items():
        start = time.perf_counter()
        session.run()
        whole_timings[name] = Timing(time.perf_counter() - start)
        session.run_profiled()
    started = time.perf_counter()
    for round_ in range(max_passes):
        elapsed = time.perf_counter() - started
        if round_ >= min_passes and elapsed >= budget:
            break
        for runner in runners:
            with_backward = backward and runner.name != "onnxruntime"
            pause(settle)
            fwd, bwd = chain_pass(runner, net, x0, with_backward)
            t = timings[runner.name]
            t.forward.append(fwd)
            if with_backward:
                t.backward = (t.backward or []) + [bwd]
        for name, session in whole.items():
            pause(settle)
            start = time.perf_counter()
            session.run()
            whole_timings[name].times.append(time.perf_counter() - start)
            pause(settle)  # the two sessions have a thread pool each
            session.run_profiled()
        if progress is not None:
            progress(min(1.0, (time.perf_counter() - started) / budget))
    return timings, whole_timings


def _peer_runners(names, net, params, x0, threads):
    """Build the requested peers; a peer that is missing or fails is reported, not fatal."""
    runners, whole, missing = [], {}, {}
    for name in names:
        try:
            if name == "torch":
                if not peers.torch_available():
                    raise ImportError("torch is not installed")
                runners.append(peers.TorchNet(net, params, threads))
            elif name == "onnxruntime":
                if not peers.onnxruntime_available():
                    raise ImportError("onnxruntime or onnx is not installed")
                if not peers.torch_available():
                    raise ImportError("the ONNX models are exported with torch.onnx, and torch "
                                      "is not installed")
                whole["onnxruntime"] = peers.OnnxRuntimeNet(net, params, x0, threads)
            elif name == "openvino":
                if not (peers.openvino_available() and peers.torch_available()):
                    raise ImportError("openvino, onnx and torch (to export the model) are "
                                      "needed")
                whole["openvino"] = peers.OpenVinoNet(net, params, x0, threads)
            else:
                raise ValueError(f"unknown peer {name!r}; expected torch, onnxruntime or "
                                 "openvino")
        except ValueError:
            raise
        except Exception as exc:  # a peer that cannot run is a finding, not a crash
            missing[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return runners, whole, missing


def timed_counts(flops, nbytes, times, total_flops, total_time, machine, dtype) -> dict:
    """The figures of a profile record: FLOPs, bytes, the minimum and median of ``times``,
    GFLOP/s, the shares of the whole's FLOPs and time, and (with a ``machine``) the
    percentages of its measured GEMM peak and of the roofline at this arithmetic intensity."""
    seconds = min(times)
    rec = dict(flops=flops, bytes=nbytes, intensity=flops / nbytes, seconds=seconds,
               seconds_median=statistics.median(times), gflops=flops / seconds / 1e9,
               flops_share=flops / total_flops, time_share=seconds / total_time)
    if machine is not None:
        peak = machine.gemm_gflops[np.dtype(dtype).name]
        roof = min(peak, rec["intensity"] * machine.bandwidth_gbs)
        rec.update(percent_of_peak=100 * rec["gflops"] / peak, roofline_gflops=roof,
                   percent_of_roofline=100 * rec["gflops"] / roof)
    return rec


def profile_network(net, *, batch=1, dtype="float32", algorithm="auto", backend="auto",
                    mode="forward", budget=2.0, compare=(), threads=None, machine=None,
                    names=None, progress=None, seed=0, settle=SETTLE):
    """Profile a network layer by layer: wall time against op counts, peaks and peers.

    Parameters
    ----------
    net : list of ConvSpec
    batch : int
    dtype : str
    algorithm, backend : str
        fastconv's choice (an algorithm that cannot serve a layer falls back to "auto" there).
    mode : {"forward", "backward", "both"}
    budget : float
        Seconds of interleaved timing passes (after one warm-up pass).
    compare : sequence of {"torch", "onnxruntime", "openvino"}
    threads : int, optional
    machine : fastconv.machine.Machine, optional
        Peaks to compare against (measured by the caller; None leaves the % columns out).
    names : list of str, optional
        Layer names (default :func:`fastconv.models.layer_names`).
    progress : callable, optional

    Returns
    -------
    dict
        JSON-ready: ``layers`` (one record per layer), ``total``, ``peers``, ``machine``,
        ``settings``.
    """
    from ..flops import pass_counts
    from ..models import layer_names

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, but got {mode!r}")
    threads = harness.use_threads(threads)
    dtype = np.dtype(dtype)
    names = layer_names(net) if names is None else names
    params = network_weights(net, dtype, seed)
    x0 = np.random.default_rng(seed + 1).standard_normal(net[0].input_shape(batch)).astype(dtype)
    ours = FastconvNet(net, params, algorithm, backend)
    runners, whole, missing = _peer_runners(compare, net, params, x0, threads)
    timings, whole_timings = time_networks([ours, *runners], net, x0, mode=mode, budget=budget,
                                           progress=progress, whole=whole, settle=settle)

    mine = timings["fastconv"]
    peer_layers = {runner.name: timings[runner.name] for runner in runners}
    for name, session in whole.items():  # its profiled passes, the first being the warm-up
        passes = session.layer_times()
        peer_layers[name] = NetTimings(passes[0], None, forward=passes[1:])
    counts = [pass_counts(spec, batch, dtype, mode, input_grad=i > 0)
              for i, spec in enumerate(net)]
    total_flops = sum(f for f, _ in counts)
    total_time = sum(min(mine.layer_times(i, mode)) for i in range(len(net)))
    if machine is not None:  # no layer above 100% of the peak beside it
        machine.settle_peak(dtype, max(f / min(mine.layer_times(i, mode)) / 1e9
                                       for i, (f, _) in enumerate(counts)))
    records = []
    for i, (name, spec) in enumerate(zip(names, net)):
        flops, nbytes = counts[i]
        times = mine.layer_times(i, mode)
        first = mine.first_forward[i] if mode != "backward" else 0.0
        if mine.first_backward and mode != "forward":
            first += mine.first_backward[i]
        rec = dict(name=name, kind=spec.kind, input=list(spec.input_shape(batch)),
                   output=list(spec.output_shape(batch)), algorithm=ours.algorithms[i],
                   macs=spec.macs * batch, first_call_seconds=first,
                   **timed_counts(flops, nbytes, times, total_flops, total_time, machine, dtype),
                   peers={})
        for peer, peer_timings in peer_layers.items():
            ptimes = peer_timings.layer_times(i, "forward" if peer in WHOLE else mode)
            rec["peers"][peer] = dict(seconds=min(ptimes),
                                      seconds_median=statistics.median(ptimes))
        records.append(rec)

    passes = mine.pass_times(mode)
    total = dict(macs=sum(s.macs for s in net) * batch, sum_of_layer_minima=total_time,
                 first_pass_seconds=sum(r["first_call_seconds"] for r in records),
                 passes=len(passes),
                 **timed_counts(total_flops, sum(b for _, b in counts), passes, total_flops,
                                min(passes), machine, dtype))
    total["compile_seconds"] = max(0.0, total["first_pass_seconds"] - total["seconds"])
    peer_totals = {}
    for runner in runners:
        ptimes = timings[runner.name].pass_times(
            "forward" if runner.name == "onnxruntime" else mode)
        peer_totals[runner.name] = dict(seconds=min(ptimes),
                                        seconds_median=statistics.median(ptimes),
                                        measured="layer by layer")
    for name, timing in whole_timings.items():
        peer_totals[name] = dict(seconds=timing.min, seconds_median=timing.median,
                                 measured="one session for the whole network; its layers "
                                          f"by {WHOLE[name]}'s profiler")
        if mode != "forward":
            peer_totals[name]["note"] = f"forward only: {WHOLE[name]} does not train"
    return dict(
        settings=dict(batch=batch, dtype=dtype.name, algorithm=algorithm, backend=backend,
                      mode=mode, threads=threads, budget=budget),
        machine=None if machine is None else machine.to_dict(),
        layers=records, total=total,
        peers=dict(totals=peer_totals, missing=missing),
    )


# --- the network plan -------------------------------------------------------------------------

PLAN_SETTLE = 0.25


def profile_plan(model="mobilenet-v1", *, batch=1, bn_relu=True, alpha=1.0, resolution=224,
                 dtype="float32", engines=("per-call", "torch", "onnxruntime"), budget=2.0,
                 threads=None, settle=PLAN_SETTLE, seed=0, progress=None):
    """``fastconv.Network`` on a model beside the engines: the whole network in each, and
    the plan's node table beside ONNX Runtime's kernels.

    Each engine runs the same torch module (:func:`fastconv.bench.engines.torch_model`), in
    interleaved rounds with a pause of ``settle`` seconds before each engine's burst of calls;
    a figure is the minimum (and median) over the calls.

    Returns
    -------
    dict
        JSON-ready: ``settings``, ``engines`` (name -> seconds, median; or the reason it did
        not run), ``nodes`` (the plan's profile rows, each with ONNX Runtime's time for the
        same layer where it ran one) and ``plan`` (its whole-call profile figures).
    """
    from . import engines as engine_module

    threads = harness.use_threads(threads)
    module = engine_module.torch_model(model, bn_relu, True, alpha, resolution, dtype, seed)
    x = np.random.default_rng(seed + 1).standard_normal((batch, 3, resolution, resolution))
    x = x.astype(dtype)
    onnx = None
    calls, missing = {}, {}
    # the plan last: OpenVINO forks a helper when it compiles, which Numba's started thread
    # pool warns about
    for name in (*[e for e in engines if e != "plan"], "plan"):
        why = engine_module.available(name)
        if why is not None:
            missing[name] = why
            continue
        try:
            if name in ("onnxruntime", "openvino") and onnx is None:
                onnx = engine_module.onnx_bytes(module, x)
            calls[name] = engine_module.engine(name, module, x, threads, onnx)
        except Exception as exc:  # an engine that cannot run is a finding, not a crash
            missing[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    timings = harness.measure(calls, budget=budget, settle=settle if len(calls) > 1 else 0.0,
                              burst=3, min_repeats=5)
    plan = calls["plan"].__closure__[0].cell_contents if "plan" in calls else None
    profile = plan.profile(x, budget=min(budget, 2.0)) if plan is not None else None
    rows = profile.rows if profile is not None else []
    if onnx is not None and "onnxruntime" in calls:
        _beside_ort(rows, engine_module.ort_node_times(onnx, x, threads))
    flops = 2 * sum(n.macs for n in profile.plan.nodes) if profile is not None else 0
    return dict(
        settings=dict(model=model, batch=batch, bn_relu=bn_relu, alpha=alpha,
                      resolution=resolution, dtype=np.dtype(dtype).name, threads=threads,
                      budget=budget, settle=settle),
        engines={name: dict(seconds=t.min, seconds_median=t.median,
                            first_call_seconds=t.first_call, gflops=flops / t.min / 1e9)
                 for name, t in timings.items()},
        missing=missing, nodes=rows,
        plan=None if profile is None else dict(
            seconds=profile.seconds, seconds_median=float(np.median(profile.whole)),
            sum_of_nodes=profile.sum_of_nodes,
            sum_of_nodes_median=profile.sum_of_nodes_median,
            arena_bytes=profile.plan.arena_bytes, flops=flops))


_ORT_COMPUTE = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul")


def _beside_ort(rows, ort_nodes):
    """Give each of the plan's convolution and linear rows the time of ONNX Runtime's
    matching kernels: both run the network's convolutions and its classifier in order, and a
    row the plan fused from two layers (``layers``) meets two of ONNX Runtime's."""
    ours = [r for r in rows if r["op"] in ("conv", "linear")]
    theirs = [t for t in ort_nodes if t[1] in _ORT_COMPUTE]
    if sum(r["layers"] for r in ours) != len(theirs):
        return
    at = 0
    for row in ours:
        matched = theirs[at:at + row["layers"]]
        at += row["layers"]
        row["onnxruntime"] = dict(node=" + ".join(t[0] for t in matched),
                                  op=" + ".join(t[1] for t in matched),
                                  seconds=sum(t[2] for t in matched))


# --- any model: an ONNX file or a torch factory -----------------------------------------------

MODEL_ENGINES = ("plan-cython", "torch", "onnxruntime", "openvino")


def profile_model(source, *, engines=("onnxruntime",), budget=2.0, threads=None,
                  settle=PLAN_SETTLE, machine=None, seed=0):
    """A model's plan node by node (MACs, FLOPs, params, bytes, time, GFLOP/s against the
    machine's peak and roofline, ONNX Runtime's kernels for the same nodes) and the whole
    model in each engine, interleaved with a pause of ``settle`` seconds before each.

    Parameters
    ----------
    source : fastconv.bench.sources.ModelSource
    engines : sequence of {"plan-cython", "torch", "onnxruntime", "openvino"}
        Beside the plan. ONNX Runtime and OpenVINO run the ONNX file (a factory's module
        exported by ``torch.onnx``); torch runs a factory's module; ``plan-cython`` is the
        same model planned on the Cython executor.
    budget : float
        Seconds of interleaved calls per engine.
    machine : fastconv.bench.machine.Machine, optional
        Its peaks give the % columns and the roofline.

    Returns
    -------
    dict
        JSON-ready: ``settings``, ``machine``, ``engines`` (name -> seconds, median, GFLOP/s),
        ``missing`` (engine -> why it did not run), ``nodes`` and ``plan`` (the whole call,
        the sum of its nodes, the arena, the totals).
    """
    from . import engines as engine_module

    for name in engines:
        if name not in MODEL_ENGINES:
            raise ValueError(f"unknown engine {name!r}; expected some of {MODEL_ENGINES}")
    threads = harness.use_threads(threads)
    x = source.input(seed)
    calls, missing = {}, {}
    for name in engines:
        why = engine_module.available(name, exported=source.kind == "torch")
        if why:
            missing[name] = why
        elif name == "torch" and source.module is None:
            missing[name] = "the model is an ONNX file"
        elif name == "plan-cython":
            from ..network import Network

            net = (Network.from_torch(source.module, backend="cython", threads=threads)
                   if source.module is not None else
                   Network.from_onnx(source.onnx, backend="cython", threads=threads))
            calls[name] = (lambda net: lambda: net(x))(net)
        else:
            try:
                model = source.onnx_bytes(x) if name != "torch" else None
                calls[name] = engine_module.engine(name, source.module, x, threads, model)
            except Exception as exc:  # an engine that cannot run is a finding, not a crash
                missing[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    calls["plan"] = lambda: source.network(x)  # last: OpenVINO forks when it compiles
    timings = harness.measure(calls, budget=budget, settle=settle if len(calls) > 1 else 0.0,
                              burst=3, min_repeats=5)
    profile = source.network.profile(x, budget=min(budget, 2.0))
    rows = profile.rows
    flops = sum(r["flops"] for r in rows)
    if machine is not None and flops:  # no node above 100% of the peak beside it
        machine.settle_peak(source.dtype, max(r["gflops"] for r in rows if r["flops"]))
    for r in rows:
        _node_figures(r, machine, source.dtype)
        r["flops_share"] = r["flops"] / flops if flops else 0.0
        r["time_share"] = r["seconds"] / profile.sum_of_nodes
    if "onnxruntime" in calls:
        ort_nodes = engine_module.ort_node_times(source.onnx, x, threads)
        if source.kind == "onnx":
            _beside_ort_by_name(rows, ort_nodes, source.onnx)
        else:
            _beside_ort(rows, ort_nodes)
    return dict(
        model=source.name,
        settings=dict(model=source.name, kind=source.kind, input_shape=list(x.shape),
                      batch=x.shape[0], dtype=source.dtype.name, threads=threads,
                      budget=budget, settle=settle, mode="forward"),
        machine=None if machine is None else machine.to_dict(),
        engines={name: dict(seconds=t.min, seconds_median=t.median,
                            first_call_seconds=t.first_call, gflops=flops / t.min / 1e9)
                 for name, t in timings.items()},
        missing=missing, nodes=rows,
        plan=dict(backend=profile.backend, seconds=profile.seconds,
                  seconds_median=float(np.median(profile.whole)),
                  sum_of_nodes=profile.sum_of_nodes,
                  sum_of_nodes_median=profile.sum_of_nodes_median,
                  arena_bytes=profile.plan.arena_bytes,
                  flops=flops, macs=flops // 2, params=sum(r["params"] for r in rows),
                  bytes=sum(r["bytes"] for r in rows)))


def _node_figures(row, machine, dtype):
    """A plan node's kind for the plots, arithmetic intensity, and, with a ``machine``, its
    share of the measured GEMM peak and of the roofline at that intensity."""
    kernel = row["kernel"]
    row["kind"] = ("dw" if kernel.startswith("depthwise") and "pointwise" not in kernel
                   else "pw" if kernel.startswith("pointwise") or "+ pointwise" in kernel
                   else "fc" if row["op"] == "linear" else "conv" if row["op"] == "conv"
                   else "other")
    row["intensity"] = row["flops"] / row["bytes"] if row["bytes"] else 0.0
    if machine is not None and row["flops"]:
        peak = machine.gemm_gflops[np.dtype(dtype).name]
        roof = min(peak, row["intensity"] * machine.bandwidth_gbs)
        row.update(percent_of_peak=100 * row["gflops"] / peak, roofline_gflops=roof,
                   percent_of_roofline=100 * row["gflops"] / roof)


def _beside_ort_by_name(rows, ort_nodes, model: bytes):
    """Give each plan row the time of ONNX Runtime's kernels that ran the same ONNX nodes.

    ONNX Runtime names a kernel after its node, or, once its NCHWc transformer has rewritten
    the node, after the value it writes (with ``_nchwc``), or, for a node its own fusions
    made, after the node it replaced (``.../Mul/QuickGeluFusion/``: SiLU's Sigmoid and Mul);
    each leads back to one node of the file, and the plan's row that ran that node (itself
    or fused into it) takes the kernel's time. Kernels that lead to no node of the file (its
    layout conversions) are left out."""
    import re

    import onnx

    graph = onnx.load_from_string(model).graph
    names = {n.name for n in graph.node}
    producer = {out: n.name for n in graph.node for out in n.output}
    quoted = re.compile(r"^node (['\"])(.*)\1 \(\w+\)$")
    fusion = re.compile(r"^(.*)/\w+Fusion/?$")
    row_of = {}
    for row in rows:
        for label in (row["name"].split(" + ") if row["layers"] > 1 else [row["name"]]) + \
                row["fused"]:
            match = quoted.match(label)
            if match:
                row_of[match.group(2)] = row
    for name, op, seconds in ort_nodes:
        base = name[:-len("_nchwc")] if name.endswith("_nchwc") else name
        fused = fusion.match(base)
        base = fused.group(1) if fused else base
        node = base if base in names else producer.get(base)
        row = row_of.get(node)
        if row is None:
            continue
        ort = row.setdefault("onnxruntime", dict(node="", op="", seconds=0.0))
        ort["node"] = f"{ort['node']} + {name}" if ort["node"] else name
        ort["op"] = f"{ort['op']} + {op}" if ort["op"] else op
        ort["seconds"] += seconds
