"""The ``fastconv`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import config, models


class CliError(Exception):
    """A bad option or value: printed as one line, exit status 2."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_model_options(parser):
    parser.add_argument("model", help=f"one of {', '.join(sorted(models.MODELS))}")
    parser.add_argument("--alpha", type=_positive_float, default=1.0,
                        help="width multiplier (default 1.0)")
    parser.add_argument("--resolution", type=_positive_int, default=224,
                        help="input height and width (default 224)")


def _build_model(args, include_fc=True):
    try:
        return models.get_model(args.model, alpha=args.alpha, resolution=args.resolution,
                                include_fc=include_fc)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _threads(args):
    if args.threads is not None:
        config.set_num_threads(args.threads)
    return config.get_num_threads()


# --- bench ------------------------------------------------------------------------------------


def cmd_bench(args) -> int:
    """Time of each layer with every algorithm and backend, beside torch and a bare GEMM."""
    from rich.console import Console
    from rich.table import Table

    from . import dispatch, profile
    from .models import layer_names

    backends = args.backends or ["numba"]
    for backend in backends:
        try:
            dispatch.resolve_backend(backend)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    every = sorted({a for b in backends for a in dispatch.algorithms(b)})
    # "auto" is always timed; `--algorithms auto` times only it
    algorithms = every if args.algorithms is None else [a for a in args.algorithms
                                                         if a != "auto"]
    for algorithm in algorithms:
        if algorithm not in every:
            raise CliError(f"unknown algorithm {algorithm!r}; expected some of {every}")
    if not args.no_torch:
        from . import peers

        if peers.torch_available():
            import torch  # noqa: F401  (before fastconv's thread pool: see fastconv.config)
    net = _build_model(args, include_fc=False)
    threads = _threads(args)
    dtype = np.dtype(args.dtype)
    mode = getattr(args, "pass")
    console = Console(stderr=True)
    records = []
    columns = [profile.candidate_name(b, a) for b in backends for a in ["auto", *algorithms]
               if a == "auto" or a in dispatch.algorithms(b)]
    columns += ["torch"] + (["gemm"] if mode == "forward" else [])
    with console.status("") as status:
        for name, spec in zip(layer_names(net), net):
            status.update(f"timing {name} ({len(records) + 1}/{len(net)})")
            x, w = profile.layer_arrays(spec, args.batch, dtype)
            candidates = profile.layer_candidates(
                spec, x, w, algorithms=["auto", *algorithms], backends=backends, mode=mode,
                with_torch=not args.no_torch, threads=threads)
            timings = profile.measure(candidates, budget=args.budget,
                                      settle=0.05 if "torch" in candidates else 0.0)
            flops = spec.flops * args.batch * (2 if mode == "backward" else 1)
            records.append(dict(
                layer=name, kind=spec.kind, input=list(spec.input_shape(args.batch)),
                output=list(spec.output_shape(args.batch)), flops=flops,
                seconds={k: t.min for k, t in timings.items()},
                median_seconds={k: t.median for k, t in timings.items()},
                first_call_seconds={k: t.first_call for k, t in timings.items()}))

    table = Table(title=f"{args.model} {mode}, batch {args.batch}, {dtype.name}, {threads} "
                        "threads: min ms of interleaved repeats (GFLOP/s)", title_justify="left")
    ratios = [("torch", "auto")] + ([("auto", "gemm")] if mode == "forward" else [])
    ratios += [(profile.candidate_name(b, "auto"), "auto") for b in backends if b != "numba"]
    for head in ("layer", "input -> output", "MFLOP", *columns,
                 *[f"{a}/{b}" for a, b in ratios]):
        table.add_column(head, justify="left" if head in ("layer", "input -> output") else "right")
    totals = dict.fromkeys(columns, 0.0)
    for rec in records:
        cells = []
        for col in columns:
            sec = rec["seconds"].get(col)
            if sec is None:
                cells.append("")
                continue
            totals[col] += sec
            cells.append(f"{sec * 1e3:.3f} ({rec['flops'] / sec / 1e9:.0f})")
        secs = rec["seconds"]
        shape = ("x".join(map(str, rec["input"][1:])) + " -> "
                 + "x".join(map(str, rec["output"][1:])))
        table.add_row(rec["layer"], shape, f"{rec['flops'] / 1e6:.1f}", *cells,
                      *[_ratio(secs.get(a), secs.get(b)) for a, b in ratios])
    total_flops = sum(r["flops"] for r in records)
    table.add_section()
    table.add_row("total", "", f"{total_flops / 1e6:.1f}",
                  *[f"{totals[c] * 1e3:.2f} ({total_flops / totals[c] / 1e9:.0f})"
                    if totals[c] and all(c in r["seconds"] for r in records) else ""
                    for c in columns],
                  *[_ratio(totals.get(a) or None, totals.get(b) or None) for a, b in ratios])
    _console().print(table)
    if args.json:
        _write_json(args.json, dict(model=args.model, batch=args.batch, dtype=dtype.name,
                                    mode=mode, threads=threads, layers=records))
    return 0


def _console():
    """Standard output; wide when it is not a terminal, so tables saved to files stay whole."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=240)


def _ratio(a, b) -> str:
    return "" if a is None or b is None else f"{a / b:.2f}"


def _write_json(path, payload):
    try:
        with open(path, "w") as fh:
            json.dump(payload, fh, indent=1)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


# --- flops ------------------------------------------------------------------------------------


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def cmd_flops(args) -> int:
    """Per-layer MACs, FLOPs, params, bytes and intensity, and separable vs full counts."""
    from rich.table import Table

    from . import flops

    if args.model not in ("mobilenet-v1", "mobilenet-v1-full"):
        raise CliError(f"unknown model {args.model!r}; expected mobilenet-v1 or mobilenet-v1-full")
    full_conv = args.full_conv or args.model == "mobilenet-v1-full"
    try:
        separable = models.mobilenet_v1(alpha=args.alpha, resolution=args.resolution)
        full = models.mobilenet_v1(alpha=args.alpha, resolution=args.resolution, separable=False)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    net = full if full_conv else separable
    rows = flops.layer_counts(net, batch=args.batch)
    total = flops.totals(rows)
    comparison = flops.separable_vs_full(separable, full)
    if args.json:
        print(json.dumps(dict(model="mobilenet-v1-full" if full_conv else "mobilenet-v1",
                              alpha=args.alpha, resolution=args.resolution, batch=args.batch,
                              layers=rows, total=total, separable_vs_full=comparison),
                         indent=1))
        return 0

    title = (f"{'Conv MobileNet (full 3x3 convolutions)' if full_conv else 'MobileNet v1'} "
             f"{args.alpha:g}-{args.resolution}, batch {args.batch}. MACs = multiply-adds; "
             "FLOPs = 2 x MACs; bytes = input + weights + output, moved once")
    table = Table(title=title, title_justify="left")
    for head in ("layer", "kind", "input", "output", "MACs", "FLOPs", "params", "bytes f32",
                 "FLOP/B f32", "FLOP/B f64"):
        table.add_column(head, justify="left" if head in ("layer", "kind", "input", "output")
                         else "right")
    for r in rows:
        table.add_row(r["name"], r["kind"], "x".join(map(str, r["input"][1:])),
                      "x".join(map(str, r["output"][1:])), _human(r["macs"]), _human(r["flops"]),
                      _human(r["params"]), _human(r["bytes_float32"]),
                      f"{r['intensity_float32']:.1f}", f"{r['intensity_float64']:.1f}")
    table.add_section()
    table.add_row("total", "", "", "", _human(total["macs"]), _human(total["flops"]),
                  _human(total["params"]), _human(total["bytes"]), f"{total['intensity']:.1f}",
                  f"{total['flops'] / sum(r['bytes_float64'] for r in rows):.1f}")
    console = _console()
    console.print(table)

    pairs = Table(title="Separable vs full convolution: each depthwise + pointwise pair against "
                        "the 3x3 convolution it replaces", title_justify="left")
    for head in ("pair", "MACs separable", "MACs full", "ratio (counted)",
                 "1/N + 1/D_K^2 (predicted)"):
        pairs.add_column(head, justify="left" if head == "pair" else "right")
    for p in comparison["pairs"]:
        pairs.add_row(p["layers"], _human(p["macs_separable"]), _human(p["macs_full"]),
                      f"{p['ratio']:.4f}", f"{p['prediction']:.4f}")
    console.print(pairs)
    sep_macs = sum(s.macs for s in separable) * args.batch
    full_macs = sum(s.macs for s in full) * args.batch
    console.print(
        f"whole net: {_human(sep_macs)} vs {_human(full_macs)} MACs, ratio "
        f"{comparison['macs_ratio']:.4f} ({1 / comparison['macs_ratio']:.2f}x fewer); params "
        f"ratio {comparison['params_ratio']:.4f} ({1 / comparison['params_ratio']:.2f}x fewer); "
        f"the pairs alone: {comparison['pairs_macs_ratio']:.4f} "
        f"({1 / comparison['pairs_macs_ratio']:.2f}x fewer MACs)")
    return 0


# --- profile ----------------------------------------------------------------------------------

PEERS = ("torch", "onnxruntime")


def _writable_file(path):
    """Fail before the run, not after it, when an output file cannot be written."""
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def _writable_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise CliError(f"cannot write into {path}: permission denied")


def _profile_table(result, title):
    from rich.table import Table

    peers = list(result["peers"]["totals"])
    table = Table(title=title, title_justify="left")
    heads = ["layer", "kind", "input -> output", "MFLOP", "ms", "ms median", "GFLOP/s",
             "% peak", "FLOP/B", "% roofline", "% FLOPs", "% time"]
    heads += [f"{p} ms" for p in peers] + [f"{p}/fastconv" for p in peers]
    for head in heads:
        table.add_column(head, justify="left" if head in ("layer", "kind", "input -> output")
                         else "right")
    has_machine = result["machine"] is not None
    for r in result["layers"]:
        shape = ("x".join(map(str, r["input"][1:])) + " -> "
                 + "x".join(map(str, r["output"][1:])))
        row = [r["name"], r["kind"], shape, f"{r['flops'] / 1e6:.1f}",
               f"{r['seconds'] * 1e3:.3f}", f"{r['seconds_median'] * 1e3:.3f}",
               f"{r['gflops']:.1f}",
               f"{r['percent_of_peak']:.0f}" if has_machine else "",
               f"{r['intensity']:.1f}",
               f"{r['percent_of_roofline']:.0f}" if has_machine else "",
               f"{100 * r['flops_share']:.1f}", f"{100 * r['time_share']:.1f}"]
        row += [f"{r['peers'][p]['seconds'] * 1e3:.3f}" if p in r["peers"] else ""
                for p in peers]
        row += [_ratio(r["peers"][p]["seconds"], r["seconds"]) if p in r["peers"] else ""
                for p in peers]
        table.add_row(*row)
    t = result["total"]
    table.add_section()
    totals = result["peers"]["totals"]
    table.add_row("total", "", "", f"{t['flops'] / 1e6:.1f}", f"{t['seconds'] * 1e3:.2f}",
                  f"{t['seconds_median'] * 1e3:.2f}", f"{t['gflops']:.1f}",
                  f"{t['percent_of_peak']:.0f}" if has_machine else "",
                  f"{t['flops'] / t['bytes']:.1f}", "", "100.0", "100.0",
                  *[f"{totals[p]['seconds'] * 1e3:.2f}" for p in peers],
                  *[_ratio(totals[p]["seconds"], t["seconds"]) for p in peers])
    return table


def _write_csv(path, result):
    import csv

    peers = list(result["peers"]["totals"])
    fields = ["name", "kind", "input", "output", "algorithm", "macs", "flops", "bytes",
              "intensity", "seconds", "seconds_median", "first_call_seconds", "gflops",
              "percent_of_peak", "roofline_gflops", "percent_of_roofline", "flops_share",
              "time_share"] + [f"{p}_seconds" for p in peers]
    try:
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fields, extrasaction="ignore")
            writer.writeheader()
            for r in result["layers"]:
                row = dict(r, input="x".join(map(str, r["input"])),
                           output="x".join(map(str, r["output"])))
                for p in peers:
                    row[f"{p}_seconds"] = r["peers"].get(p, {}).get("seconds", "")
                writer.writerow(row)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def cmd_profile(args) -> int:
    """Profile a network: per-layer wall time against FLOPs, the machine's peak and peers."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    compare = [] if not args.compare else [p for p in args.compare.split(",") if p]
    for peer in compare:
        if peer not in PEERS:
            raise CliError(f"unknown peer {peer!r} for --compare; expected some of "
                           f"{','.join(PEERS)}")
    for path in (args.json, args.csv):
        if path:
            _writable_file(path)
    if args.plot:
        _writable_dir(args.plot)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib: pip install 'fastconv[plot]'") from None
    if "torch" in compare or "onnxruntime" in compare:
        # before fastconv starts its thread pool, so each library keeps its own OpenMP
        # runtime and wait policy (see fastconv.config)
        from . import peers as peer_module

        if peer_module.torch_available():
            import torch  # noqa: F401
    _build_model(args)  # a bad model name or option fails here, before anything runs
    from . import dispatch, machine, profile

    try:
        backend = dispatch.resolve_backend(args.backend)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.algorithm != "auto" and args.algorithm not in dispatch.algorithms(backend):
        raise CliError(f"unknown algorithm {args.algorithm!r} for backend {backend!r}; "
                       f"expected auto or one of {dispatch.algorithms(backend)}")
    threads = _threads(args)
    console = _console()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    with progress:
        task = progress.add_task("measuring the machine's peak", total=1.0)
        peaks = machine.measure_machine(threads, dtypes=(args.dtype,), seconds=0.5)
        results = {}
        models_to_run = [args.model]
        if args.plot and args.model in ("mobilenet-v1", "mobilenet-v1-full"):
            models_to_run.append("mobilenet-v1-full" if args.model == "mobilenet-v1"
                                 else "mobilenet-v1")
        for name in models_to_run:
            layers = models.get_model(name, alpha=args.alpha, resolution=args.resolution)
            progress.update(task, description=f"profiling {name}", completed=0.0)
            try:
                result = profile.profile_network(
                    layers, batch=args.batch, dtype=args.dtype, algorithm=args.algorithm,
                    backend=args.backend, mode=getattr(args, "pass"), budget=args.budget,
                    compare=compare if name == args.model else (), machine=peaks,
                    progress=lambda f: progress.update(task, completed=f))
            except ValueError as exc:
                raise CliError(str(exc)) from None
            result.update(model=name, alpha=args.alpha, resolution=args.resolution)
            results[name] = result
    result = results[args.model]
    t = result["total"]
    mode = getattr(args, "pass")
    console.print(_profile_table(
        result, f"{args.model} {args.alpha:g}-{args.resolution}, {mode}, batch {args.batch}, "
                f"{args.dtype}, {threads} threads: min of {t['passes']} interleaved passes"))
    m = result["machine"]
    console.print(
        f"machine: {m['cpu']['model']}, {threads} threads, {'/'.join(m['cpu']['extensions'])}; "
        f"measured GEMM {m['gemm_gflops'][args.dtype]:.0f} GFLOP/s ({args.dtype}), stream "
        f"{m['bandwidth_gbs']:.0f} GB/s, starting Numba's thread pool "
        f"({config.numba_threading_layer()}) {m['wake_us']:.0f} µs per parallel kernel call "
        f"(median), {peaks.blas_spin_text()}; {peaks.after_idle_text()}; theoretical FMA peak "
        f"{m['peak_gflops'][args.dtype]:.0f} GFLOP/s ({'; '.join(m['assumptions'])})")
    console.print(f"fastconv: {t['seconds'] * 1e3:.2f} ms per pass (median "
                  f"{t['seconds_median'] * 1e3:.2f}), {t['gflops']:.1f} GFLOP/s = "
                  f"{t['percent_of_peak']:.0f}% of the measured GEMM peak; first pass "
                  f"{t['first_pass_seconds']:.2f} s (compilation or cache loading "
                  f"{t['compile_seconds']:.2f} s, not in the timings)")
    for peer, info in result["peers"]["totals"].items():
        note = f"; {info['note']}" if "note" in info else ""
        console.print(f"{peer}: {info['seconds'] * 1e3:.2f} ms ({info['measured']}{note}); "
                      f"{peer}/fastconv = {info['seconds'] / t['seconds']:.2f}")
    for peer, why in result["peers"]["missing"].items():
        console.print(f"{peer}: not measured ({why})")
    if len(results) == 2:
        sep, full = results["mobilenet-v1"], results["mobilenet-v1-full"]
        console.print(
            f"separable vs full: {full['total']['macs'] / sep['total']['macs']:.2f}x fewer "
            f"MACs, {full['total']['seconds'] / sep['total']['seconds']:.2f}x less time")
    if args.json:
        _write_json(args.json, result if len(results) == 1 else
                    dict(result, twin=results[models_to_run[1]]))
    if args.csv:
        _write_csv(args.csv, result)
    if args.plot:
        from . import plots

        twin = results[models_to_run[1]] if len(results) == 2 else None
        for path in plots.write_all(result, args.plot, twin):
            console.print(f"wrote {path}")
    return 0


# --- report -----------------------------------------------------------------------------------


def cmd_report(args) -> int:
    """Run the measurements behind BENCHMARKS.md and write it."""
    if args.output:
        _writable_file(args.output)
    from . import report

    text = report.run(budget=args.budget, threads=args.threads,
                      progress=lambda msg: print(f"fastconv report: {msg}", file=sys.stderr))
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        print(text)
    return 0


# --- info -------------------------------------------------------------------------------------


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cmd_info(args) -> int:
    """Versions, CPU, threads, threading layer, backends and BLAS."""
    import numba
    import numpy

    from . import __version__, dispatch, machine

    cpu = machine.read_cpu()
    threads = config.get_num_threads()  # starts Numba's pool
    lines = [f"fastconv {__version__}"]
    lines.append("versions: " + ", ".join(
        f"{d} {_version(d) or 'not installed'}"
        for d in ("numpy", "numba", "llvmlite", "scipy", "rich", "torch", "onnxruntime",
                  "onnx", "matplotlib", "numba-cuda")))
    lines.append(f"cpu: {cpu.model} ({cpu.vendor}, family {cpu.family}), {cpu.cores} logical "
                 f"cores, clock {cpu.clock_ghz or 'unknown'} GHz ({cpu.clock_source})")
    lines.append(f"vector extensions: {' '.join(cpu.extensions) or 'none found'}; "
                 f"vector width {cpu.vector_bits} bits")
    peak, assumptions = machine.theoretical_peak(cpu, threads)
    lines.append(f"theoretical fp32 FMA peak with {threads} threads: {peak['float32']:.0f} "
                 f"GFLOP/s ({'; '.join(assumptions)})")
    lines.append(f"threads: numba {threads} (NUMBA_NUM_THREADS {numba.config.NUMBA_NUM_THREADS})"
                 f", threading layer {numba.threading_layer()}, OpenMP runtime "
                 f"{_openmp_runtime() or 'none loaded'}")
    blas = numpy.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    lines.append(f"BLAS (numpy): {blas.get('name', '?')} {blas.get('version', '')} "
                 f"({blas.get('openblas configuration', '').strip()}); "
                 + machine.describe_blas_spin(machine.measure_blas_spin_ms()))
    for backend in dispatch.BACKENDS:
        try:
            dispatch.resolve_backend(backend)
            state = "available: " + ", ".join(dispatch.algorithms(backend))
        except ValueError as exc:
            state = "not available (" + str(exc).split(": ", 1)[-1] + ")"
        lines.append(f"backend {backend}: {state}")
    lines.append(f"kernel cache: {'on' if config.CACHE else 'off'}; workspace budget "
                 f"{config.get_workspace_budget() / (1 << 20):.0f} MiB")
    for line in lines:
        print(line)
    return 0


def _openmp_runtime():
    """The libgomp files mapped into this process (Numba's, and torch's if loaded)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libgomp" in line}
    except OSError:
        return None
    return ", ".join(sorted(paths)) or None


# --- entry point ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv", description="Compiled convolution kernels and where their time goes.")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="forward time per layer: every algorithm, torch, GEMM")
    _add_model_options(bench)
    bench.add_argument("--batch", type=_positive_int, default=1)
    bench.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench.add_argument("--threads", type=_positive_int, default=None)
    bench.add_argument("--algorithms", type=lambda s: s.split(","), default=None,
                       help="comma-separated subset of the algorithms")
    bench.add_argument("--backends", type=lambda s: s.split(","), default=None,
                       help="comma-separated backends to compare (default numba)")
    bench.add_argument("--pass", choices=["forward", "backward"], default="forward",
                       help="time the forward, or the input and weight gradients")
    bench.add_argument("--budget", type=_positive_float, default=0.3,
                       help="seconds of timed calls per candidate and layer (default 0.3)")
    bench.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    bench.add_argument("--json", metavar="FILE", help="also write the records as JSON")
    bench.set_defaults(run=cmd_bench)

    count = sub.add_parser("flops", help="MACs, FLOPs, params, bytes per layer; separable vs full")
    _add_model_options(count)
    count.add_argument("--full-conv", action="store_true",
                       help="the full-convolution twin (Conv MobileNet)")
    count.add_argument("--batch", type=_positive_int, default=1)
    count.add_argument("--json", action="store_true", help="print JSON instead of tables")
    count.set_defaults(run=cmd_flops)

    prof = sub.add_parser("profile", help="per-layer wall time against FLOPs, peak and peers")
    _add_model_options(prof)
    prof.add_argument("--batch", type=_positive_int, default=1)
    prof.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    prof.add_argument("--threads", type=_positive_int, default=None)
    prof.add_argument("--backend", default="auto", help="auto, numba, numpy, cython or cuda")
    prof.add_argument("--algorithm", default="auto",
                      help="an algorithm for every layer it can serve (default auto)")
    prof.add_argument("--pass", choices=["forward", "backward", "both"], default="forward",
                      help="time the forward, the backward, or both (default forward)")
    prof.add_argument("--budget", type=_positive_float, default=5.0,
                      help="seconds of interleaved timing passes (default 5)")
    prof.add_argument("--compare", default="", metavar="PEERS",
                      help="comma-separated peers: torch,onnxruntime")
    prof.add_argument("--json", metavar="FILE", help="write the records as JSON")
    prof.add_argument("--csv", metavar="FILE", help="write the per-layer records as CSV")
    prof.add_argument("--plot", metavar="DIR", help="write PNG figures into DIR (matplotlib)")
    prof.set_defaults(run=cmd_profile)

    rep = sub.add_parser("report", help="run the measurements behind BENCHMARKS.md")
    rep.add_argument("--output", metavar="FILE", help="write the Markdown here (default: print)")
    rep.add_argument("--budget", type=_positive_float, default=8.0,
                     help="seconds of timing passes per profile (default 8)")
    rep.add_argument("--threads", type=_positive_int, default=None)
    rep.set_defaults(run=cmd_report)

    info = sub.add_parser("info", help="versions, CPU, threads, backends, BLAS")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CliError as exc:
        print(f"fastconv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
