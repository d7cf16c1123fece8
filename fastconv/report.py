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

from . import __version__, api, config, machine, models, profile, workspace
from .spec import ConvSpec


def _ms(seconds):
    return f"{seconds * 1e3:.2f}"


def _ratio(a, b):
    return f"{a / b:.2f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def layer_table(result) -> str:
    """Per-layer Markdown table of a profile result, with its peers."""
    peers = list(result["peers"]["totals"])
    header = ["layer", "kind", "input → output", "MFLOP", "ms", "GFLOP/s", "% peak",
              "% roofline", "% FLOPs", "% time", *[f"{p} ms" for p in peers],
              *[f"{p} / fastconv" for p in peers]]
    rows = []
    for r in result["layers"]:
        shape = "x".join(map(str, r["input"][1:])) + " → " + "x".join(map(str, r["output"][1:]))
        rows.append([r["name"], r["kind"], shape, f"{r['flops'] / 1e6:.1f}", _ms(r["seconds"]),
                     f"{r['gflops']:.1f}", f"{r.get('percent_of_peak', 0):.0f}",
                     f"{r.get('percent_of_roofline', 0):.0f}",
                     f"{100 * r['flops_share']:.1f}", f"{100 * r['time_share']:.1f}",
                     *[_ms(r["peers"][p]["seconds"]) if p in r["peers"] else "" for p in peers],
                     *[_ratio(r["peers"][p]["seconds"], r["seconds"]) if p in r["peers"] else ""
                       for p in peers]])
    t = result["total"]
    totals = result["peers"]["totals"]
    rows.append(["**total**", "", "", f"{t['flops'] / 1e6:.1f}", f"**{_ms(t['seconds'])}**",
                 f"{t['gflops']:.1f}", f"{t.get('percent_of_peak', 0):.0f}", "", "100", "100",
                 *[f"**{_ms(totals[p]['seconds'])}**" for p in peers],
                 *[f"**{_ratio(totals[p]['seconds'], t['seconds'])}**" for p in peers]])
    return _table(header, rows)


def totals_line(result) -> str:
    t = result["total"]
    parts = [f"fastconv {_ms(t['seconds'])} ms (median {_ms(t['seconds_median'])}, "
             f"{t['passes']} passes)"]
    for peer, info in result["peers"]["totals"].items():
        parts.append(f"{peer} {_ms(info['seconds'])} ms ({info['measured']}; {peer}/fastconv "
                     f"{_ratio(info['seconds'], t['seconds'])})")
    return "; ".join(parts)


def dilation_rows(budget: float, threads: int):
    """Dilation 2 against 1, forward and backward, on a depthwise and a dense 3x3 layer."""
    from . import peers

    cases = [("depthwise 3x3, 128x56x56", ConvSpec(128, 128, 3, padding=1, groups=128,
                                                  input_size=56)),
             ("dense 3x3, 64x56x56", ConvSpec(64, 64, 3, padding=1, input_size=56))]
    rows = []
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
            timings = profile.measure(calls, budget=budget, settle=0.05)
            for key, t in timings.items():
                times[(key, dilation)] = t.min
        for key in sorted({k for k, _ in times}):
            rows.append([name, key, _ms(times[(key, 1)]), _ms(times[(key, 2)]),
                         _ratio(times[(key, 2)], times[(key, 1)])])
    return rows


def backend_rows(budget: float):
    """Numba against Cython ("auto" on each), per MobileNet v1 layer, forward and backward,
    on every thread and then on one: the second pair of ratios compares the compiled kernels
    alone, without their thread pools (Numba's TBB or OpenMP, Cython's OpenMP)."""
    from . import dispatch
    from .models import layer_names

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
                    t = profile.measure(calls, budget=budget)
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
    parallel region and take the cores from the BLAS that follows (measured in this report's
    process: the first layer 36x slower). Each backend is compared as it runs on its own."""
    import json

    code = (f"import json; from fastconv import report; "
            f"print(json.dumps(report.{function}(*{args!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_start_rows():
    """Import + first conv2d call in fresh interpreters: Numba with a warm and an empty cache,
    and the Cython AOT backend (nothing to compile)."""
    from . import dispatch

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
        rows.append([label, f"{seconds[-1]:.2f}"])
    return rows


def memory_rows():
    """A forward call's peak extra memory (tracemalloc) against the budget plus its output."""
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
        rows.append([f"im2col 3x3 64→64 at 112x112, budget {budget / 2**20:.1f} MiB",
                     f"{peak / 2**20:.2f}", f"{limit / 2**20:.2f}",
                     "yes" if peak <= limit + 65536 else "NO"])
    return rows


def run(budget: float = 5.0, threads: int | None = None, progress=print) -> str:
    """Run every measurement and return BENCHMARKS.md's text."""
    from . import peers

    if peers.torch_available():
        import torch  # noqa: F401  (before our thread pool starts: see fastconv.config)
    if threads is not None:
        config.set_num_threads(threads)
    threads = config.get_num_threads()
    started = time.time()
    progress("measuring the machine")
    peaks = machine.measure_machine(threads, seconds=1.0)
    compare = [p for p, ok in (("torch", peers.torch_available()),
                               ("onnxruntime", peers.onnxruntime_available())) if ok]
    sections = []

    def profile_run(model, mode, batch, with_peers):
        progress(f"profiling {model}, {mode}, batch {batch}")
        result = profile.profile_network(
            models.get_model(model), batch=batch, mode=mode, budget=budget,
            compare=[p for p in compare if mode == "forward" or p == "torch"] if with_peers
            else (), machine=peaks)
        result["model"] = model
        return result

    results = {}
    for key in (("mobilenet-v1", "forward", 1), ("mobilenet-v1-full", "forward", 1),
                ("mobilenet-v1", "both", 1), ("mobilenet-v1", "both", 8),
                ("mobilenet-v1-full", "both", 1)):
        results[key] = profile_run(*key, with_peers=True)

    m = peaks
    head = [
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
        f"pool ({config.numba_threading_layer()}) {m.wake_us:.0f} µs per parallel kernel call "
        f"(median), {m.blas_spin_text()}. Theoretical fp32 FMA peak "
        f"{m.peak_gflops['float32']:.0f} GFLOP/s ({'; '.join(m.assumptions)}). '% peak' is of "
        "the measured GEMM; '% roofline' of min(GEMM peak, intensity x stream bandwidth).",
    ]
    sections.append("\n".join(head))

    def summary_rows():
        rows = []
        for (model, mode, batch), result in results.items():
            t = result["total"]
            tot = result["peers"]["totals"]
            rows.append([model, mode, batch, _ms(t["seconds"]),
                         _ms(tot["torch"]["seconds"]) if "torch" in tot else "n/a",
                         _ms(tot["onnxruntime"]["seconds"]) if "onnxruntime" in tot else "n/a",
                         _ratio(t["seconds"], tot["torch"]["seconds"]) if "torch" in tot
                         else "", _ratio(t["seconds"], tot["onnxruntime"]["seconds"])
                         if "onnxruntime" in tot else ""])
        return rows

    sections.append("## Whole networks (float32, ms per pass)\n\n" + _table(
        ["model", "pass", "batch", "fastconv", "torch", "onnxruntime", "fastconv / torch",
         "fastconv / onnxruntime"], summary_rows()) + "\n\n`both` = forward, then the input "
        "and weight gradients of every layer (not the image's); ONNX Runtime does not train.")
    for key, title in (((("mobilenet-v1", "forward", 1)), "MobileNet v1 1.0-224, forward, "
                        "batch 1"),
                       ((("mobilenet-v1-full", "forward", 1)), "Conv MobileNet (the full-"
                        "convolution twin), forward, batch 1"),
                       ((("mobilenet-v1", "both", 1)), "MobileNet v1, forward + backward, "
                        "batch 1"),
                       ((("mobilenet-v1", "both", 8)), "MobileNet v1, forward + backward, "
                        "batch 8")):
        r = results[key]
        sections.append(f"## {title}\n\n{totals_line(r)}\n\n{layer_table(r)}")
    sep, full = results[("mobilenet-v1", "forward", 1)], results[("mobilenet-v1-full",
                                                                    "forward", 1)]
    sections.append(
        "## Separable vs full convolution\n\n"
        f"MobileNet has {full['total']['macs'] / sep['total']['macs']:.2f}x fewer MACs than "
        f"its full-convolution twin; fastconv runs it "
        f"{full['total']['seconds'] / sep['total']['seconds']:.2f}x faster (forward, batch 1). "
        "The depthwise layers hold "
        f"{100 * sum(r['flops_share'] for r in sep['layers'] if r['kind'] == 'dw'):.1f}% of the "
        "FLOPs and "
        f"{100 * sum(r['time_share'] for r in sep['layers'] if r['kind'] == 'dw'):.1f}% of the "
        "time: they move a byte per two FLOPs, far left on the roofline.")
    progress("dilation")
    sections.append("## Dilation 2 against dilation 1 (ms, batch 1)\n\n" + _table(
        ["layer", "call", "dilation 1", "dilation 2", "ratio"],
        dilation_rows(min(budget, 1.0), threads)))
    progress("numba vs cython")
    rows = _in_fresh_interpreter("backend_rows", min(budget, 0.5))
    if rows:
        sections.append(
            "## Numba against Cython (AOT), MobileNet v1 layers, batch 1 (ms, `auto` on "
            "each; the last two columns on one thread, the kernels without their thread "
            f"pools: Numba's {config.numba_threading_layer()}, Cython's OpenMP)\n\n"
            + _table(["layer", "numba forward", "cython forward", "cython / numba",
                      "numba backward", "cython backward", "cython / numba",
                      "cython / numba forward, 1 thread",
                      "cython / numba backward, 1 thread"], rows))
    progress("cold start")
    sections.append("## Cold start: import + first conv2d call, fresh interpreter (s)\n\n"
                    + _table(["cache", "seconds"], cold_start_rows()))
    progress("memory")
    sections.append("## Peak extra memory of a forward call (MiB, tracemalloc)\n\n" + _table(
        ["call", "peak", "workspace + output", "within"], memory_rows()))
    sections[0] = sections[0].replace("{elapsed}", f"{time.time() - started:.0f} s")
    return "\n\n".join(sections) + "\n"


def _versions() -> str:
    from importlib import metadata

    out = []
    for dist in ("numpy", "numba", "torch", "onnxruntime"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)
