"""``fastconv report``: the measurements behind BENCHMARKS.md, in one run, as Markdown.

Every figure in BENCHMARKS.md comes from here; regenerate the file whenever the kernels change:

    fastconv report --output BENCHMARKS.md
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from ..kernels import tuned
from .. import __version__, api, config, models, runtime, workspace
from ..spec import ConvSpec
from . import harness, machine, profile, sources
from .rows import markdown, plan_rows, profile_rows
from .rows import ms as _ms
from .rows import ratio as _ratio


# tracemalloc also counts the small objects of a call (shapes, views): up to this many bytes
_MEMORY_SLACK = 65536


def layer_table(result) -> str:
    """Per-layer Markdown table of a profile result, with its peers."""
    header, rows, total = profile_rows(result, arrow="→")
    bold = [head == "layer" or head == "ms" or head.endswith((" ms", " / fastconv"))
            for head in header]
    total = [f"**{cell}**" if strong and cell else cell for strong, cell in zip(bold, total)]
    return markdown(header, [*rows, total])


def totals_line(result) -> str:
    t = result["total"]
    parts = [f"fastconv {_ms(t['seconds'])} ms (median {_ms(t['seconds_median'])}, "
             f"{t['passes']} passes)"]
    for peer, info in result["peers"]["totals"].items():
        parts.append(f"{peer} {_ms(info['seconds'])} ms ({info['measured']}; {peer}/fastconv "
                     f"{_ratio(info['seconds'], t['seconds'])})")
    return "; ".join(parts)


def dilation_times(budget: float, threads: int):
    """Dilation 2 against 1, forward and backward, on a depthwise and a dense 3x3 layer.

    Returns
    -------
    list of (layer, call, seconds at dilation 1, seconds at dilation 2)
        ``call`` is "fastconv forward", "fastconv backward" and, with torch, the same for it.
    """
    from . import peers

    cases = [("depthwise 3x3, 128x56x56", ConvSpec(128, 128, 3, padding=1, groups=128,
                                                  input_size=56)),
             ("dense 3x3, 64x56x56", ConvSpec(64, 64, 3, padding=1, input_size=56))]
    records = []
    for name, spec in cases:
        times = {}
        for dilation in (1, 2):
            s = ConvSpec(spec.in_channels, spec.out_channels, 3, padding=dilation,
                         dilation=dilation, groups=spec.groups, input_size=spec.input_size)
            x, w = profile.layer_arrays(s, 1, np.float32)
            dy = np.ones(s.output_shape(1), np.float32)
            calls = {
                "fastconv forward": lambda s=s, x=x, w=w: api.conv2d(
                    x, w, None, s.stride, s.padding, s.dilation, s.groups),
                "fastconv backward": lambda s=s, x=x, w=w, dy=dy: api.conv2d_backward(
                    dy, x, w, s.stride, s.padding, s.dilation, s.groups, bias=False),
            }
            if peers.torch_available():
                runner = peers.TorchNet([s], [(w, None)], threads)
                xt, dyt = runner.to_input(x), runner.to_input(dy)
                calls["torch forward"] = lambda r=runner, xt=xt: r.forward(0, xt)
                calls["torch backward"] = lambda r=runner, xt=xt, dyt=dyt: r.backward(
                    0, dyt, xt, True)
            timings = harness.measure(calls, budget=budget, settle=0.05)
            for key, t in timings.items():
                times[(key, dilation)] = t.min
        for key in sorted({k for k, _ in times}):
            records.append((name, key, times[(key, 1)], times[(key, 2)]))
    return records


def layers_alone(budget: float, threads: int):
    """The per-layer floors, timed as ``fastconv bench mobilenet-v1`` does: each depthwise
    layer of MobileNet v1 (batch 1, float32) against PyTorch, each pointwise layer against a
    bare numpy GEMM of its shape, forward, interleaved.

    Returns
    -------
    list of dict
        ``layer``, ``kind``, ``fastconv`` and ``peer`` (the minimum seconds) and ``peer_name``
        ("torch" or "GEMM"); depthwise layers are left out when torch is missing.
    """
    from . import peers
    from ..models import layer_names

    records = []
    net = models.mobilenet_v1(include_fc=False)
    for name, spec in zip(layer_names(net), net):
        if spec.kind not in ("dw", "pw") or (spec.kind == "dw" and not peers.torch_available()):
            continue
        x, w = profile.layer_arrays(spec, 1, np.float32)
        with_torch = spec.kind == "dw"
        calls = profile.layer_candidates(spec, x, w, algorithms=["auto"], mode="forward",
                                         with_torch=with_torch, with_gemm=not with_torch,
                                         threads=threads)
        timings = harness.measure(calls, budget=budget, settle=0.05 if with_torch else 0.0)
        peer, peer_name = ("torch", "torch") if with_torch else ("gemm", "GEMM")
        records.append(dict(layer=name, kind=spec.kind, fastconv=timings["auto"].min,
                            peer=timings[peer].min, peer_name=peer_name))
    return records


def backend_rows(budget: float):
    """Numba against Cython ("auto" on each), per MobileNet v1 layer, forward and backward,
    on every thread and then on one: the second pair of ratios compares the compiled kernels
    alone, without their thread pools (Numba's TBB or OpenMP, Cython's OpenMP)."""
    from .. import dispatch
    from ..models import layer_names

    if "cython" not in dispatch.available_backends():
        return []
    net = models.mobilenet_v1(include_fc=False)
    threads = config.get_num_threads()
    rows, totals = [], np.zeros(8)
    for name, spec in zip(layer_names(net), net):
        x, w = profile.layer_arrays(spec, 1, np.float32)
        times = []
        for count in (threads, 1):
            config.set_num_threads(count)
            try:
                for mode in ("forward", "backward"):
                    calls = profile.layer_candidates(spec, x, w, algorithms=["auto"],
                                                     backends=("numba", "cython"), mode=mode,
                                                     with_torch=False, with_gemm=False)
                    t = harness.measure(calls, budget=budget)
                    times += [t["auto"].min, t["cython:auto"].min]
            finally:
                config.set_num_threads(threads)
        totals += times
        rows.append(_backend_row(name, times))
    rows.append(_backend_row("**total**", totals))
    return [[str(c) for c in row] for row in rows]


def _backend_row(name, times):
    """Numba, Cython and their ratio forward and backward, then the two ratios on one thread."""
    fwd, fwd_cy, bwd, bwd_cy, fwd1, fwd1_cy, bwd1, bwd1_cy = times
    return [name, _ms(fwd), _ms(fwd_cy), _ratio(fwd_cy, fwd), _ms(bwd), _ms(bwd_cy),
            _ratio(bwd_cy, bwd), _ratio(fwd1_cy, fwd1), _ratio(bwd1_cy, bwd1)]


def _in_fresh_interpreter(function: str, *args):
    """Run ``report.<function>(*args)`` in a new Python without torch and return its result.

    The Cython kernels' OpenMP runtime is whichever libgomp the process loaded first; once
    torch is imported (as the peers here are) that is torch's, whose threads spin after every
    parallel region and take the cores from the BLAS that follows. Each backend is compared
    as it runs on its own."""
    import json

    code = (f"import json; from fastconv.bench import report; "
            f"print(json.dumps(report.{function}(*{args!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_starts():
    """Import + first conv2d call in fresh interpreters: Numba with a warm and an empty cache,
    and the Cython AOT backend (nothing to compile).

    Returns
    -------
    list of (label, seconds)
        The first label is Numba's warm cache.
    """
    from .. import dispatch

    code = ("import time; t = time.perf_counter(); import numpy as np, fastconv as fc; "
            "x = np.ones((1, 8, 16, 16), np.float32); w = np.ones((8, 1, 3, 3), np.float32); "
            "fc.conv2d(x, w, padding=1, groups=8, backend='{backend}'); "
            "print(time.perf_counter() - t)")
    cases = [("numba, warm cache (second run)", "numba", {}, 2),
             ("numba, no cache (FASTCONV_CACHE=0: the kernels it calls are compiled)", "numba",
              {"FASTCONV_CACHE": "0"}, 1)]
    if "cython" in dispatch.available_backends():
        cases.append(("cython (AOT, nothing compiled)", "cython", {}, 2))
    rows = []
    for label, backend, env, runs in cases:
        seconds = []
        for _ in range(runs):
            out = subprocess.run([sys.executable, "-c", code.format(backend=backend)],
                                 capture_output=True, text=True, env={**os.environ, **env},
                                 check=True)
            seconds.append(float(out.stdout.strip()))
        rows.append((label, seconds[-1]))
    return rows


def memory_peaks():
    """A forward call's peak extra memory (tracemalloc) against the budget plus its output.

    Returns
    -------
    list of (call, peak bytes, budget + output bytes)
    """
    rows = []
    spec = ConvSpec(64, 64, 3, padding=1, input_size=112)
    x, w = profile.layer_arrays(spec, 1, np.float32)
    full = spec.in_channels * 9 * 112 * 112 * 4
    for budget in (full // 8, 256 << 20):
        with config.workspace_budget(budget):
            api.conv2d(x, w, padding=1)
            workspace.release()
            tracemalloc.start()
            y = api.conv2d(x, w, padding=1)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        limit = min(budget, full) + y.nbytes
        rows.append((f"im2col 3x3 64→64 at 112x112, budget {budget / 2**20:.1f} MiB", peak,
                     limit))
    return rows


def _within(peak, limit):
    return peak <= limit + _MEMORY_SLACK


def target_rows(results, layers, dilation, memory, cold):
    """The per-call API's performance targets, each with this run's figure and whether it is
    met.

    Parameters
    ----------
    results : dict
        Profile results keyed by ``(model, pass, batch)``, as :func:`run` measures them.
    layers : list of dict
        From :func:`layers_alone`.
    dilation, memory, cold : list
        From :func:`dilation_times`, :func:`memory_peaks` and :func:`cold_starts`.

    Returns
    -------
    list of [target, measured, met]
        ``met`` is "yes", "no" or "n/a" (a peer that is not installed).
    """
    def against(key, peer):
        """``(fastconv seconds, peer seconds)`` of a whole-network run, or None."""
        result = results.get(key)
        if result is None or peer not in result["peers"]["totals"]:
            return None
        return result["total"]["seconds"], result["peers"]["totals"][peer]["seconds"]

    def yes(ok):
        return "yes" if ok else "no"

    rows = []
    for key, target in ((("mobilenet-v1", "forward", 1), "1. MobileNet v1 1.0-224 forward, "
                         "batch 1: ≤ 1.0x ONNX Runtime's time"),
                        (("mobilenet-v1-full", "forward", 1), "2. The full-convolution twin "
                         "forward, batch 1: ≤ 1.0x ONNX Runtime's time")):
        pair = against(key, "onnxruntime")
        if pair is None:
            rows.append([target, "ONNX Runtime not measured", "n/a"])
        else:
            rows.append([target, f"{_ms(pair[0])} ms against {_ms(pair[1])}: "
                         f"{_ratio(*pair)}x", yes(pair[0] <= pair[1])])

    target = "3. MobileNet v1 forward + backward, batch 1 and 8: ≤ 0.7x PyTorch's time"
    pairs = {batch: against(("mobilenet-v1", "both", batch), "torch") for batch in (1, 8)}
    if None in pairs.values():
        rows.append([target, "PyTorch not measured", "n/a"])
    else:
        rows.append([target, "; ".join(f"batch {b}: {_ms(f)} ms against {_ms(t)}: "
                                       f"{_ratio(f, t)}x" for b, (f, t) in pairs.items()),
                     yes(all(f <= 0.7 * t for f, t in pairs.values()))])

    for kind, target, floor in (
            ("dw", "4. Every depthwise layer's forward ≥ 2x PyTorch's speed", 2.0),
            ("pw", "4. Every pointwise layer's forward ≥ 0.95x the speed of a bare BLAS "
             "GEMM of its shape", 0.95)):
        speeds = [(r["peer"] / r["fastconv"], r["layer"], r["peer_name"])
                  for r in layers if r["kind"] == kind]
        if not speeds:
            rows.append([target, "the peer was not measured", "n/a"])
            continue
        (low, low_layer, peer), (high, high_layer, _) = min(speeds), max(speeds)
        reaching = sum(speed >= floor for speed, _, _ in speeds)
        rows.append([target, f"{peer} / fastconv from {low:.2f} ({low_layer}) to {high:.2f} "
                     f"({high_layer}); {reaching} of {len(speeds)} layers ≥ {floor:g}",
                     yes(reaching == len(speeds))])

    ours = [(layer.split(",")[0], call.split()[1], t2 / t1)
            for layer, call, t1, t2 in dilation if call.startswith("fastconv")]
    rows.append(["5. Dilation 2 costs ≤ 1.25x the undilated layer, forward and backward, "
                 "dense and depthwise",
                 "; ".join(f"{layer} {call} {ratio:.2f}x" for layer, call, ratio in ours),
                 yes(bool(ours) and all(ratio <= 1.25 for _, _, ratio in ours))])
    rows.append(["6. A forward call's peak extra memory ≤ workspace budget + output",
                 "; ".join(f"{peak / 2**20:.2f} MiB against {limit / 2**20:.2f}"
                           for _, peak, limit in memory),
                 yes(all(_within(peak, limit) for _, peak, limit in memory))])
    warm = cold[0][1]  # Numba's warm cache comes first
    rows.append(["7. Cold start: import + first conv2d call on a warm cache < 1 s; a cold "
                 "compile's cost reported",
                 "; ".join(f"{label} {seconds:.2f} s" for label, seconds in cold),
                 yes(warm < 1.0)])
    return rows


NETWORK_RUNS = (("mobilenet-v1", "forward", 1), ("mobilenet-v1-full", "forward", 1),
                ("mobilenet-v1", "both", 1), ("mobilenet-v1", "both", 8),
                ("mobilenet-v1-full", "both", 1))
LAYER_TABLES = ((("mobilenet-v1", "forward", 1), "MobileNet v1 1.0-224, forward, batch 1"),
                (("mobilenet-v1-full", "forward", 1),
                 "Conv MobileNet (the full-convolution twin), forward, batch 1"),
                (("mobilenet-v1", "both", 1), "MobileNet v1, forward + backward, batch 1"),
                (("mobilenet-v1", "both", 8), "MobileNet v1, forward + backward, batch 8"))


def run(budget: float = 5.0, threads: int | None = None, progress=print) -> str:
    """Run every measurement and return BENCHMARKS.md's text."""
    from . import peers

    if peers.torch_available():
        import torch  # noqa: F401  (before our thread pool starts: see fastconv.runtime)
    threads = harness.use_threads(threads)
    started = time.time()
    progress("measuring the machine")
    peaks = machine.measure_machine(threads, seconds=1.0)
    compare = [p for p, ok in (("torch", peers.torch_available()),
                               ("onnxruntime", peers.onnxruntime_available())) if ok]
    results = {}
    for model, mode, batch in NETWORK_RUNS:
        progress(f"profiling {model}, {mode}, batch {batch}")
        result = profile.profile_network(
            models.get_model(model), batch=batch, mode=mode, budget=budget,
            compare=[p for p in compare if mode == "forward" or p == "torch"], machine=peaks)
        result["model"] = model
        results[(model, mode, batch)] = result
    plans = {}
    for case in PLAN_RUNS:
        model, bn_relu, batch = case
        progress(f"the plan: {model}{'' if bn_relu else ' (convolutions only)'}, batch {batch}")
        plans[case] = profile.profile_plan(model, batch=batch, bn_relu=bn_relu,
                                           engines=PLAN_ENGINES, budget=budget, threads=threads)
    graphs = {}
    if peers.torch_available() and peers.onnxruntime_available():
        for name in ONNX_MODELS:
            progress(f"the plan from ONNX: {name}")
            graphs[name] = profile.profile_model(sources.zoo_onnx(name), engines=ONNX_ENGINES,
                                                 budget=budget, threads=threads)
    families = {}
    if peers.torch_available() and peers.onnxruntime_available():
        for name, size in FAMILIES:
            progress(f"the CNN families from ONNX: {name} at {size}")
            families[name, size] = profile.profile_model(
                sources.zoo_onnx(name, size=size), engines=FAMILY_ENGINES, budget=budget,
                threads=threads)
    trainings = {}
    if peers.torch_available():
        for case in TRAINING_RUNS:
            progress("training steps: {} at {}, batch {}".format(*case))
            trainings[case] = training_run(*case, budget=budget)
    sections = [_head(peaks, threads), _plan_section(plans)]
    if graphs:
        sections.append(_onnx_section(graphs))
    if families:
        sections.append(_families_section(families))
    if trainings:
        sections.append(_training_section(trainings))
    sections.append(_networks_section(results))
    sections += [f"## {title}\n\n{totals_line(results[key])}\n\n{layer_table(results[key])}"
                 for key, title in LAYER_TABLES]
    sections.append(_separable_section(results))
    progress("layers alone")
    layers = layers_alone(min(budget, 1.0), threads)
    sections.append(_layers_alone_section(layers))
    progress("dilation")
    dilation = dilation_times(min(budget, 1.0), threads)
    sections.append("## Dilation 2 against dilation 1 (ms, batch 1)\n\n" + markdown(
        ["layer", "call", "dilation 1", "dilation 2", "ratio"],
        [[layer, call, _ms(t1), _ms(t2), _ratio(t2, t1)] for layer, call, t1, t2 in dilation]))
    progress("numba vs cython")
    rows = _in_fresh_interpreter("backend_rows", min(budget, 0.5))
    if rows:
        sections.append(_backends_section(rows))
    progress("cold start")
    cold = cold_starts()
    sections.append("## Cold start: import + first conv2d call, fresh interpreter (s)\n\n"
                    + markdown(["cache", "seconds"], [[label, f"{seconds:.2f}"]
                                                      for label, seconds in cold]))
    progress("memory")
    memory = memory_peaks()
    sections.append("## Peak extra memory of a forward call (MiB, tracemalloc)\n\n" + markdown(
        ["call", "peak", "workspace + output", "within"],
        [[call, f"{peak / 2**20:.2f}", f"{limit / 2**20:.2f}",
          "yes" if _within(peak, limit) else "NO"] for call, peak, limit in memory]))
    # after the whole networks, before their layer tables: the figures of every target
    sections.insert(2, "## Performance targets of the per-call API\n\nEach target with this "
                    "run's figure, from the tables below.\n\n" + markdown(
                        ["target", "measured", "met"],
                        target_rows(results, layers, dilation, memory, cold)))
    sections[0] = sections[0].replace("{elapsed}", f"{time.time() - started:.0f} s")
    return "\n\n".join(sections) + "\n"


PLAN_RUNS = (("mobilenet-v1", True, 1), ("mobilenet-v1", False, 1), ("mobilenet-v1", True, 8),
             ("mobilenet-v1-full", True, 1))
PLAN_ENGINES = ("plan-cython", "per-call", "torch", "onnxruntime", "openvino", "litert")
_PEERS = ("onnxruntime", "openvino", "litert")


def _plan_label(case) -> str:
    model, bn_relu, batch = case
    return f"{model} {'+ BN + ReLU' if bn_relu else 'convolutions only'}, batch {batch}"


def _plan_section(plans) -> str:
    """fastconv.Network against every engine, its targets, and its nodes beside ONNX
    Runtime's."""
    rows = []
    for case, result in plans.items():
        e = result["engines"]
        cells = [_ms(e[name]["seconds"]) if name in e else "n/a"
                 for name in ("plan", *PLAN_ENGINES)]
        peers = {n: e[n]["seconds"] for n in _PEERS if n in e}
        fastest = min(peers, key=peers.get) if peers else None
        rows.append([_plan_label(case), *cells, fastest or "",
                     _ratio(e["plan"]["seconds"], peers[fastest]) if fastest else ""])
    missing = sorted({f"{n} ({why})" for r in plans.values() for n, why in r["missing"].items()})
    first = plans[PLAN_RUNS[0]]
    header, body, total = plan_rows(first)
    return (
        "## The network plan (fastconv.Network), whole networks (float32, ms)\n\n"
        "Every engine runs the same torch module (`fastconv.bench.engines.torch_model`: batch "
        "norms with random statistics, ReLU, the classifier): the plan from `from_torch`, "
        "fastconv's per-call API layer by layer (`per-call`), PyTorch, ONNX Runtime and "
        "OpenVINO (float32) on its ONNX export, LiteRT (XNNPACK) on a Keras model with the same "
        "weights. Interleaved rounds, a pause of "
        f"{first['settings']['settle']:g} s before each engine's burst of three calls; the "
        "minimum of the calls.\n\n"
        + _tables(markdown(["network", *("plan", *PLAN_ENGINES), "fastest engine",
                            "plan / fastest engine"], rows), missing,
                  "Targets of the plan", plan_target_rows(plans),
                  f"{_plan_label(PLAN_RUNS[0])}: the plan node by node, beside ONNX Runtime's "
                  "kernels (its profiler, in the same session)", [header, [*body, total]]))


def plan_target_rows(plans) -> list[list[str]]:
    """The network plan's performance targets, each with this run's figures and whether it
    is met ("n/a" where a peer did not run).

    Parameters
    ----------
    plans : dict
        :func:`fastconv.bench.profile.profile_plan` results keyed by ``(model, bn_relu,
        batch)``, as :func:`run` measures them.
    """
    def seconds(case, engine):
        result = plans.get(case)
        if result is None or engine not in result["engines"]:
            return None
        return result["engines"][engine]["seconds"]

    def judged(target, case, peers, limit):
        ours = seconds(case, "plan")
        theirs = {p: seconds(case, p) for p in peers if seconds(case, p) is not None}
        if ours is None or not theirs:
            return [target, "the peers were not measured", "n/a"]
        best = min(theirs, key=theirs.get)
        ratio = ours / theirs[best]
        return [target, f"{_ms(ours)} ms against {best} {_ms(theirs[best])}: {ratio:.2f}x",
                "yes" if ratio <= limit else "no"]

    rows = [
        judged("1. MobileNet v1 + BN + ReLU, batch 1: ≤ 0.9x the fastest of ONNX Runtime, "
               "OpenVINO and LiteRT", ("mobilenet-v1", True, 1), _PEERS, 0.9),
        judged("2. MobileNet v1 convolutions only, batch 1: ≤ 0.9x ONNX Runtime",
               ("mobilenet-v1", False, 1), ("onnxruntime",), 0.9),
        judged("3. The full-convolution twin + BN + ReLU, batch 1: ≤ 1.0x ONNX Runtime",
               ("mobilenet-v1-full", True, 1), ("onnxruntime",), 1.0),
        judged("4. MobileNet v1 + BN + ReLU, batch 8: ≤ 0.9x ONNX Runtime",
               ("mobilenet-v1", True, 8), ("onnxruntime",), 0.9),
    ]
    pairs = [(case, seconds(case, "plan"), seconds(case, "per-call")) for case in plans]
    pairs = [(c, p, q) for c, p, q in pairs if p is not None and q is not None]
    target = "5. The plan is never slower than the same network as per-call fc.conv2d"
    if not pairs:
        rows.append([target, "the per-call API was not measured", "n/a"])
    else:
        worst = max(p / q for _, p, q in pairs)
        rows.append([target, "; ".join(f"{_plan_label(c)}: {p / q:.2f}x" for c, p, q in pairs),
                     "yes" if worst <= 1.0 else "no"])
    for number, batch in ((6, 1), (7, 8)):
        case = ("mobilenet-v1", True, batch)
        ours, numba = seconds(case, "plan-cython"), seconds(case, "plan")
        target = (f"{number}. MobileNet v1 + BN + ReLU, batch {batch}, on the Cython plan: "
                  "≤ 1.1x the plan on Numba")
        if ours is None or numba is None:
            rows.append([target, "the Cython plan was not measured", "n/a"])
        else:
            rows.append([target, f"{_ms(ours)} ms against {_ms(numba)}: {ours / numba:.2f}x",
                         "yes" if ours <= 1.1 * numba else "no"])
    return rows


ONNX_MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet18")  # factories of fastconv.bench.zoo
ONNX_ENGINES = ("onnxruntime", "openvino")
# the ratio to ONNX Runtime on the same file that each model's target allows
ONNX_LIMITS = {"mobilenet_v1": 0.9, "mobilenet_v2": 1.0, "resnet18": 1.0}


def onnx_target_rows(graphs) -> list[list[str]]:
    """Each ONNX model's target (the plan from ``from_onnx`` against ONNX Runtime on the
    same file) with this run's figures; "n/a" where ONNX Runtime did not run.

    Parameters
    ----------
    graphs : dict
        :func:`fastconv.bench.profile.profile_model` results keyed by model name.
    """
    rows = []
    for name, limit in ONNX_LIMITS.items():
        target = f"{name} from ONNX, batch 1: ≤ {limit:.1f}x ONNX Runtime"
        engines = graphs.get(name, {}).get("engines", {})
        if "plan" not in engines or "onnxruntime" not in engines:
            rows.append([target, "not measured", "n/a"])
            continue
        ours, theirs = engines["plan"]["seconds"], engines["onnxruntime"]["seconds"]
        rows.append([target, f"{_ms(ours)} ms against {_ms(theirs)}: {ours / theirs:.2f}x",
                     "yes" if ours / theirs <= limit else "no"])
    return rows


#: The CNN families users run on CPUs (``fastconv.bench.zoo``), at the size each runs at.
FAMILIES = (("mobilenet_v3_large", 224), ("mobilenet_v3_small", 224), ("efficientnet_b0", 224),
            ("yolov8n", 320), ("yolov8n", 640), ("dbnet", 640), ("unet", 256))
FAMILY_ENGINES = ("plan-cython", "onnxruntime", "openvino")


def _fallback_nodes(result) -> int:
    return sum(1 for r in result["nodes"] if r["kernel"].startswith("fallback"))


def family_target_rows(families) -> list[list[str]]:
    """Each family's target (its ONNX export at batch 1, on each executor: at most ONNX
    Runtime's time on the same file, with no node in the fallback) with this run's figures;
    "n/a" where ONNX Runtime did not run.

    Parameters
    ----------
    families : dict
        :func:`fastconv.bench.profile.profile_model` results keyed by (model, size).
    """
    rows = []
    for (name, size), result in families.items():
        e, fallback = result["engines"], _fallback_nodes(result)
        for executor, key in (("Numba", "plan"), ("Cython", "plan-cython")):
            target = (f"{name} at {size}, the plan on {executor}: ≤ 1.0x ONNX Runtime, no node "
                      "in the fallback")
            if key not in e or "onnxruntime" not in e:
                rows.append([target, "not measured", "n/a"])
                continue
            ours, theirs = e[key]["seconds"], e["onnxruntime"]["seconds"]
            rows.append([target, f"{_ms(ours)} ms against {_ms(theirs)}: "
                         f"{ours / theirs:.2f}x, {fallback} fallback nodes",
                         "yes" if ours <= theirs and not fallback else "no"])
    return rows


#: (zoo network, input size, batch, the planned step's target as a fraction of torch's)
TRAINING_RUNS = (("mobilenet_v1", 224, 8, 0.5), ("mobilenet_v1", 224, 32, 0.5),
                 ("resnet18", 224, 8, 0.8), ("mobilenet_v2", 32, 128, 0.6),
                 ("resnet18", 32, 128, 0.6))


def training_run(name: str, size: int, batch: int, target: float, budget: float) -> dict:
    """One network's training steps on each engine (``fastconv.bench.training``), interleaved,
    and the training network's nodes (``TrainingNetwork.profile``)."""
    import torch

    from ..network.training import TrainingNetwork
    from . import training, zoo

    torch.manual_seed(0)
    module = getattr(zoo, name)().train()
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    steps = training.compare_steps(module, x, budget=budget)
    nodes = TrainingNetwork(module).profile(x, budget=budget / 2).to_dict()["nodes"]
    return {"steps": steps, "nodes": nodes, "target": target}


def training_target_rows(trainings) -> list[list[str]]:
    """Each training target (a whole step planned: at most the target's fraction of torch's
    step; and never slower than the per-call layers') with this run's figures.

    Parameters
    ----------
    trainings : dict
        :func:`training_run` results keyed by (network, size, batch, target).
    """
    rows = []
    for (name, size, batch, _), result in trainings.items():
        steps, target = result["steps"], result["target"]
        ours = steps["planned"]["seconds"]
        for peer, limit in (("torch", target), ("per-call", 1.0)):
            whose = "PyTorch's" if peer == "torch" else "the per-call layers'"
            label = f"{name} at {size}, batch {batch}: the planned step ≤ {limit:g}x {whose}"
            if peer not in steps:
                rows.append([label, "not measured", "n/a"])
                continue
            theirs = steps[peer]["seconds"]
            rows.append([label, f"{_ms(ours)} ms against {_ms(theirs)}: {ours / theirs:.2f}x",
                         "yes" if ours <= limit * theirs else "no"])
    return rows


def _training_section(trainings) -> str:
    """Whole training steps against torch's and the per-call layers', the targets, and the
    nodes of the network furthest behind torch."""
    rows = []
    for (name, size, batch, _), result in trainings.items():
        steps = result["steps"]
        rows.append([name, str(size), str(batch),
                     *[_ms(steps[e]["seconds"]) if e in steps else "n/a"
                       for e in ("planned", "per-call", "torch")],
                     _ratio(steps["planned"]["seconds"], steps["torch"]["seconds"])])

    def behind(key):
        steps = trainings[key]["steps"]
        return steps["planned"]["seconds"] / steps["torch"]["seconds"]

    slowest = max(trainings, key=behind)
    nodes = [[r["name"], r["op"], "x".join(map(str, r["output"][1:])), _ms(r["seconds"][0], 3),
              _ms(r["seconds"][1], 3)] for r in trainings[slowest]["nodes"]]
    return (
        "## Training steps (float32, ms)\n\n"
        "A whole training step (forward, cross entropy, backward, SGD with momentum) of the "
        "zoo's networks: `fastconv.torch.Planned` (the network in fastconv), the same module "
        "with its `Conv2d` layers as `fastconv.torch.Conv2d` (per-call), and torch; "
        "interleaved, as `fastconv profile fastconv.bench.zoo:NETWORK --train` measures "
        "them.\n\n"
        + markdown(["network", "size", "batch", "planned", "per-call", "torch",
                    "planned / torch"], rows)
        + "\n\n### Targets of the training steps\n\n"
        + markdown(["target", "measured", "met"], training_target_rows(trainings))
        + f"\n\n### {slowest[0]} at {slowest[1]}, batch {slowest[2]}: the training network "
        "node by node (ms)\n\n"
        + markdown(["node", "op", "output", "forward", "backward"], nodes))


def _families_section(families) -> str:
    """The CNN families from their ONNX exports against the engines, their targets, and the
    nodes of the one furthest behind ONNX Runtime beside its kernels."""
    engines = ("plan", *FAMILY_ENGINES)
    rows = []
    for (name, size), result in families.items():
        e, plan = result["engines"], result["plan"]
        cells = [_ms(e[n]["seconds"]) if n in e else "n/a" for n in engines]
        rows.append([name, str(size), f"{plan['macs'] / 1e6:.0f}", *cells,
                     _ratio(e["plan"]["seconds"], e["onnxruntime"]["seconds"])
                     if "onnxruntime" in e else "", str(_fallback_nodes(result))])
    missing = sorted({f"{n} ({why})" for r in families.values()
                      for n, why in r["missing"].items()})

    def behind(key):
        e = families[key]["engines"]
        return e["plan"]["seconds"] / e["onnxruntime"]["seconds"] if "onnxruntime" in e else 0

    slowest = max(families, key=behind)
    header, body, total = plan_rows(families[slowest])
    return (
        "## The CNN families from ONNX files (float32, batch 1, ms)\n\n"
        "The families of `fastconv.bench.zoo` users run on CPUs (MobileNet v3, EfficientNet-B0, "
        "a YOLOv8n-style detector, a DBNet-style text detector, a U-Net; random weights), "
        "exported by `torch.onnx` at the size each runs at; the plan (on Numba, and on "
        "Cython) reads the file with `from_onnx`, ONNX Runtime and OpenVINO run the same "
        "file, interleaved. As `fastconv profile MODEL.onnx --compare "
        "plan-cython,onnxruntime,openvino` measures it.\n\n"
        + _tables(markdown(["model", "size", "MMACs", *engines, "plan / onnxruntime",
                            "fallback nodes"], rows), missing,
                  "Targets of the families", family_target_rows(families),
                  f"{slowest[0]} at {slowest[1]}: the plan node by node, beside ONNX Runtime's "
                  "kernels for the same ONNX nodes", [header, [*body, total]]))


def _onnx_section(graphs) -> str:
    """Models read from ONNX files against the engines running the same file, their targets,
    and the nodes of the one furthest behind ONNX Runtime beside its kernels."""
    rows = []
    for name, result in graphs.items():
        e, plan = result["engines"], result["plan"]
        cells = [_ms(e[n]["seconds"]) if n in e else "n/a" for n in ("plan", *ONNX_ENGINES)]
        rows.append([name, f"{plan['macs'] / 1e6:.0f}", f"{plan['params'] / 1e6:.2f}", *cells,
                     _ratio(e["plan"]["seconds"], e["onnxruntime"]["seconds"])
                     if "onnxruntime" in e else ""])
    missing = sorted({f"{n} ({why})" for r in graphs.values() for n, why in r["missing"].items()})

    def behind(name):
        e = graphs[name]["engines"]
        return e["plan"]["seconds"] / e["onnxruntime"]["seconds"] if "onnxruntime" in e else 0

    slowest = max(graphs, key=behind)
    header, body, total = plan_rows(graphs[slowest])
    first = next(iter(graphs.values()))
    return (
        "## Models from ONNX files (fastconv.Network.from_onnx, float32, batch 1, ms)\n\n"
        "The reference CNNs of `fastconv.bench.zoo` (MobileNet v1 with ReLU6 and its "
        "classifier, MobileNet v2, ResNet-18; random weights, batch norms with random "
        "statistics) exported by `torch.onnx` at 224x224; the plan reads the file with "
        "`from_onnx`, ONNX Runtime and OpenVINO run the same file. Interleaved, a pause of "
        f"{first['settings']['settle']:g} s before each engine's burst of three calls; the "
        "minimum of the calls. As `fastconv profile MODEL.onnx --compare onnxruntime,openvino` "
        "measures it.\n\n"
        + _tables(markdown(["model", "MMACs", "M params", "plan", *ONNX_ENGINES,
                            "plan / onnxruntime"], rows), missing,
                  "Targets of the ONNX models", onnx_target_rows(graphs),
                  f"{slowest}: the plan node by node, beside ONNX Runtime's kernels for the "
                  "same ONNX nodes (its profiler, in the same session)",
                  [header, [*body, total]]))


def _tables(engines: str, missing: list, targets_title: str, targets: list, nodes_title: str,
            nodes: list) -> str:
    """A plan section's tables: the engines, what was not measured, the targets, the nodes
    (``[header, rows]``)."""
    return (engines + ("\n\nNot measured: " + "; ".join(missing) + "." if missing else "")
            + f"\n\n### {targets_title}\n\n" + markdown(["target", "measured", "met"], targets)
            + f"\n\n### {nodes_title}\n\n" + markdown(*nodes))


def _head(m, threads) -> str:
    """The title, how the figures were taken, and the machine."""
    return "\n".join([
        "# fastconv benchmarks",
        "",
        "Generated by `fastconv report --output BENCHMARKS.md` "
        f"({datetime.date.today().isoformat()}, fastconv {__version__}, {{elapsed}}). Every "
        "number below comes from that one run; peers "
        "(PyTorch, ONNX Runtime) are timed in the same process, interleaved pass by pass with "
        "a pause between libraries so that none runs against another's spinning threads, and "
        "each figure is the minimum over the passes (medians are in `fastconv profile "
        "--json`). The machine is shared and noisy: expect ±20% between runs.",
        "",
        f"Machine: {m.cpu.model}, {threads} threads, {' '.join(m.cpu.extensions)}; Python "
        f"{platform.python_version()}, {_versions()}. Measured: numpy (OpenBLAS) sgemm "
        f"{m.gemm_gflops['float32']:.0f} GFLOP/s, dgemm {m.gemm_gflops['float64']:.0f} "
        f"GFLOP/s, parallel stream copy {m.bandwidth_gbs:.0f} GB/s, starting Numba's thread "
        f"pool ({runtime.numba_threading_layer()}) {m.wake_us:.0f} µs per parallel kernel call "
        f"(median), {m.blas_spin_text()}; {m.after_idle_text()}. Theoretical fp32 FMA peak "
        f"{m.peak_gflops['float32']:.0f} GFLOP/s ({'; '.join(m.assumptions)}). '% peak' is of "
        "the measured GEMM; '% roofline' of min(GEMM peak, intensity x stream bandwidth). "
        f"The planner's thresholds: {tuned.IN_FORCE.describe()}.",
        *(f"\nNote: {note}." for note in m.notes),
    ])


def _networks_section(results) -> str:
    """Every whole-network run, fastconv against its peers."""
    rows = []
    for (model, mode, batch), result in results.items():
        t, tot = result["total"], result["peers"]["totals"]
        mine = t["seconds"]
        peer = {p: tot[p]["seconds"] if p in tot else None for p in ("torch", "onnxruntime")}
        rows.append([model, mode, batch, _ms(mine),
                     *[_ms(v) if v else "n/a" for v in peer.values()],
                     *[_ratio(mine, v) if v else "" for v in peer.values()]])
    return ("## Whole networks (float32, ms per pass)\n\n" + markdown(
        ["model", "pass", "batch", "fastconv", "torch", "onnxruntime", "fastconv / torch",
         "fastconv / onnxruntime"], rows) + "\n\n`both` = forward, then the input and weight "
        "gradients of every layer (not the image's); ONNX Runtime does not train.")


def _separable_section(results) -> str:
    sep, full = results[("mobilenet-v1", "forward", 1)], results[("mobilenet-v1-full",
                                                                    "forward", 1)]
    dw_flops = sum(r["flops_share"] for r in sep["layers"] if r["kind"] == "dw")
    dw_time = sum(r["time_share"] for r in sep["layers"] if r["kind"] == "dw")
    return ("## Separable vs full convolution\n\n"
            f"MobileNet has {full['total']['macs'] / sep['total']['macs']:.2f}x fewer MACs than "
            f"its full-convolution twin; fastconv runs it "
            f"{full['total']['seconds'] / sep['total']['seconds']:.2f}x faster (forward, batch "
            f"1). The depthwise layers hold {100 * dw_flops:.1f}% of the FLOPs and "
            f"{100 * dw_time:.1f}% of the time: they move a byte per two FLOPs, far left on the "
            "roofline.")


def _layers_alone_section(layers) -> str:
    return ("## MobileNet v1 layers alone, forward, batch 1 (ms; as `fastconv bench "
            "mobilenet-v1` times them)\n\nEach depthwise layer against PyTorch, each pointwise "
            "layer against a bare numpy GEMM of its shape (`numpy.matmul`, allocating its "
            "output as a convolution does): the per-layer floors of the targets above.\n\n"
            + markdown(["layer", "kind", "fastconv", "peer", "peer ms", "peer / fastconv"],
                       [[r["layer"], r["kind"], f"{r['fastconv'] * 1e3:.3f}", r["peer_name"],
                         f"{r['peer'] * 1e3:.3f}", _ratio(r["peer"], r["fastconv"])]
                        for r in layers]))


def _backends_section(rows) -> str:
    return ("## Numba against Cython (AOT), MobileNet v1 layers, batch 1 (ms, `auto` on each; "
            "the last two columns on one thread, the kernels without their thread pools: "
            f"Numba's {runtime.numba_threading_layer()}, Cython's OpenMP)\n\n"
            + markdown(["layer", "numba forward", "cython forward", "cython / numba",
                        "numba backward", "cython backward", "cython / numba",
                        "cython / numba forward, 1 thread",
                        "cython / numba backward, 1 thread"], rows))


def _versions() -> str:
    from importlib import metadata

    out = []
    for dist in ("numpy", "numba", "torch", "onnxruntime"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)
