"""The ``fastconv`` command."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import numpy as np

from . import config, models, runtime
from .kernels import tuned


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


def _shape(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W, got {text!r}") from None
    if len(dims) != 3 or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"expected three positive integers C,H,W, got "
                                         f"{text!r}")
    return dims


def _add_model_options(parser, files=False):
    if files:
        parser.add_argument("model", help=f"one of {', '.join(sorted(models.MODELS))}; or a "
                            "model file (.onnx); or package.module:function, a factory "
                            "returning a torch module")
        parser.add_argument("--input-shape", type=_shape, default=None, metavar="C,H,W",
                            help="the input's channels and size, for a model file that does "
                                 "not give them, or a factory (default 3,224,224)")
    else:
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
    from .bench import harness

    return harness.use_threads(args.threads)


# --- bench ------------------------------------------------------------------------------------


def cmd_bench(args) -> int:
    """Time of each layer with every algorithm and backend, beside torch and a bare GEMM."""
    from rich.console import Console

    from . import dispatch
    from .bench import harness, profile, rows
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
        from .bench import peers

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
            timings = harness.measure(candidates, budget=args.budget,
                                      settle=0.05 if "torch" in candidates else 0.0)
            flops = spec.flops * args.batch * (2 if mode == "backward" else 1)
            records.append(dict(
                layer=name, kind=spec.kind, input=list(spec.input_shape(args.batch)),
                output=list(spec.output_shape(args.batch)), flops=flops,
                seconds={k: t.min for k, t in timings.items()},
                median_seconds={k: t.median for k, t in timings.items()},
                first_call_seconds={k: t.first_call for k, t in timings.items()}))

    ratios = [("torch", "auto")] + ([("auto", "gemm")] if mode == "forward" else [])
    ratios += [(profile.candidate_name(b, "auto"), "auto") for b in backends if b != "numba"]
    header, body, total = rows.bench_rows(records, columns, ratios)
    table = rows.rich(f"{args.model} {mode}, batch {args.batch}, {dtype.name}, {threads} "
                      "threads: min ms of interleaved repeats (GFLOP/s)", header, body,
                      left=("layer", "input -> output"), total=total)
    _console().print(table)
    if args.json:
        _write_json(args.json, dict(model=args.model, batch=args.batch, dtype=dtype.name,
                                    mode=mode, threads=threads, layers=records))
    return 0


def _console():
    """Standard output; wide when it is not a terminal, so tables saved to files stay whole."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=240)


def _write_json(path, payload):
    try:
        with open(path, "w") as fh:
            json.dump(payload, fh, indent=1)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


# --- flops ------------------------------------------------------------------------------------


def cmd_flops(args) -> int:
    """Per-layer MACs, FLOPs, params, bytes and intensity, and separable vs full counts."""
    from . import flops
    from .bench import rows, sources

    if sources.is_model_source(args.model):
        return cmd_flops_model(args)
    _built_in_only(args)
    if args.model not in ("mobilenet-v1", "mobilenet-v1-full"):
        raise CliError(f"unknown model {args.model!r}; expected mobilenet-v1 or mobilenet-v1-full")
    full_conv = args.full_conv or args.model == "mobilenet-v1-full"
    try:
        separable = models.mobilenet_v1(alpha=args.alpha, resolution=args.resolution)
        full = models.mobilenet_v1(alpha=args.alpha, resolution=args.resolution, separable=False)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    net = full if full_conv else separable
    records = flops.layer_counts(net, batch=args.batch)
    total = flops.totals(records)
    comparison = flops.separable_vs_full(separable, full)
    if args.json:
        print(json.dumps(dict(model="mobilenet-v1-full" if full_conv else "mobilenet-v1",
                              alpha=args.alpha, resolution=args.resolution, batch=args.batch,
                              layers=records, total=total, separable_vs_full=comparison),
                         indent=1))
        return 0

    title = (f"{'Conv MobileNet (full 3x3 convolutions)' if full_conv else 'MobileNet v1'} "
             f"{args.alpha:g}-{args.resolution}, batch {args.batch}. MACs = multiply-adds; "
             "FLOPs = 2 x MACs; bytes = input + weights + output, moved once")
    header, body, last = rows.flops_rows(records, total)
    console = _console()
    console.print(rows.rich(title, header, body, left=("layer", "kind", "input", "output"),
                            total=last))
    header, body = rows.pair_rows(comparison)
    console.print(rows.rich("Separable vs full convolution: each depthwise + pointwise pair "
                            "against the 3x3 convolution it replaces", header, body,
                            left=("pair",)))
    sep_macs = sum(s.macs for s in separable) * args.batch
    full_macs = sum(s.macs for s in full) * args.batch
    console.print(
        f"whole net: {rows.human(sep_macs)} vs {rows.human(full_macs)} MACs, ratio "
        f"{comparison['macs_ratio']:.4f} ({1 / comparison['macs_ratio']:.2f}x fewer); params "
        f"ratio {comparison['params_ratio']:.4f} ({1 / comparison['params_ratio']:.2f}x fewer); "
        f"the pairs alone: {comparison['pairs_macs_ratio']:.4f} "
        f"({1 / comparison['pairs_macs_ratio']:.2f}x fewer MACs)")
    return 0


def _built_in_only(args):
    """Refuse what only a model file or factory takes, for a built-in model."""
    if args.input_shape is not None:
        raise CliError("--input-shape is for a model file or factory; a built-in model takes "
                       "--resolution")


def _open_model(args, backend="auto"):
    from .bench import sources

    for option in ("full_conv", "convs_only"):
        if getattr(args, option, False):
            raise CliError(f"--{option.replace('_', '-')} is for the built-in MobileNet, not "
                           f"{args.model!r}")
    try:
        return sources.open_model(args.model, args.input_shape, args.batch,
                                  getattr(args, "threads", None), backend)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_flops_onnx(args) -> int:
    """``fastconv flops MODEL.onnx``: every node counted by its rule, nothing planned or run."""
    from .bench import rows, sources

    for option in ("full_conv", "convs_only"):
        if getattr(args, option, False):
            raise CliError(f"--{option.replace('_', '-')} is for the built-in MobileNet, not "
                           f"{args.model!r}")
    try:
        counts = sources.count_onnx(args.model, args.input_shape, args.batch)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    name = os.path.basename(args.model)
    if args.json:
        print(json.dumps(dict(model=name, **counts), indent=1))
        return 0
    header, body, total = rows.onnx_count_rows(counts)
    console = _console()
    console.print(rows.rich(
        f"{name}, inputs {counts['inputs']}: every node, counted without running it. MACs = "
        "multiply-adds of the convolutions, matrix products and recurrent layers (FLOPs = 2 x "
        "MACs); other ops = the element-wise, normalisation, pooling, reduction and resize "
        "nodes' arithmetic, one per element by each kind's rule (README, 'Counting')",
        header, body, left=("node", "category", "input -> output"), total=total))
    console.print(f"{counts['folded']} nodes folded into constants for this shape (not run per "
                  "call, not counted)")
    for row in counts["nodes"]:
        if not row["counted"]:
            console.print(f"not counted: {row['name']}: {row['why']}")
    return 0


def cmd_flops_model(args) -> int:
    """``fastconv flops MODEL.onnx`` (or a factory): the plan's nodes counted, nothing run."""
    from .bench import rows

    if args.model.endswith(".onnx") or os.path.isfile(args.model):
        return cmd_flops_onnx(args)
    source = _open_model(args)
    counts = source.network.counts(source.input_shape)
    if args.json:
        print(json.dumps(dict(model=source.name, input_shape=list(source.input_shape),
                              dtype=source.dtype.name, nodes=counts), indent=1))
        return 0
    header, body, total = rows.count_rows(counts)
    _console().print(rows.rich(
        f"{source.name}, input {list(source.input_shape)}, {source.dtype.name}, as "
        "fastconv.Network plans it (batch norms folded, activations and additions fused). "
        "MACs = multiply-adds of the convolutions and linear layers; FLOPs = 2 x MACs; "
        "bytes = inputs + parameters + output, moved once", header, body,
        left=("node", "kernel", "input -> output"), total=total))
    return 0


# --- profile ----------------------------------------------------------------------------------

PEERS = ("torch", "onnxruntime", "openvino")
PLAN_ENGINES = ("plan-cython", "per-call", "torch", "onnxruntime", "openvino", "litert")


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
    from .bench import rows

    header, body, total = rows.profile_rows(result)
    return rows.rich(title, header, body, left=rows.PROFILE_LEFT, total=total)


def _write_csv(path, result):
    from .bench import rows

    peers = list(result["peers"]["totals"])
    fields = ["name", "kind", "input", "output", "algorithm", "macs", "flops", "bytes",
              "intensity", "seconds", "seconds_median", "first_call_seconds", "gflops",
              "percent_of_peak", "roofline_gflops", "percent_of_roofline", "flops_share",
              "time_share"] + [f"{p}_seconds" for p in peers]
    records = []
    for r in result["layers"]:
        row = dict(r, input=rows.shape(r["input"]), output=rows.shape(r["output"]))
        for p in peers:
            row[f"{p}_seconds"] = r["peers"].get(p, {}).get("seconds", "")
        records.append(row)
    _write_rows(path, fields, records)


def _write_rows(path, fields, records):
    """``records`` (dicts) as CSV columns ``fields``; a file that cannot be written is the
    command's error."""
    import csv

    try:
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def _print_machine_notes(console, machine_dict):
    """What the measured peaks may not be (``Machine.notes``), one line each."""
    for note in machine_dict.get("notes", ()):
        console.print(f"[bold yellow]note:[/] {note}")


def _print_profile(console, args, results, peaks, threads):
    """The profile's table and what it measured, for the terminal."""
    result = results[args.model]
    t, m = result["total"], result["machine"]
    console.print(_profile_table(
        result, f"{args.model} {args.alpha:g}-{args.resolution}, {getattr(args, 'pass')}, batch "
                f"{args.batch}, {args.dtype}, {threads} threads: min of {t['passes']} "
                "interleaved passes"))
    console.print(
        f"machine: {m['cpu']['model']}, {threads} threads, {'/'.join(m['cpu']['extensions'])}; "
        f"measured GEMM {m['gemm_gflops'][args.dtype]:.0f} GFLOP/s ({args.dtype}), stream "
        f"{m['bandwidth_gbs']:.0f} GB/s, starting Numba's thread pool "
        f"({runtime.numba_threading_layer()}) {m['wake_us']:.0f} µs per parallel kernel call "
        f"(median), {peaks.blas_spin_text()}; {peaks.after_idle_text()}; theoretical FMA peak "
        f"{m['peak_gflops'][args.dtype]:.0f} GFLOP/s ({'; '.join(m['assumptions'])})")
    _print_machine_notes(console, m)
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


def cmd_profile_plan(args) -> int:
    """``fastconv profile MODEL --plan``: fastconv.Network beside the engines."""
    from rich.console import Console

    engines = [e for e in (args.compare or "per-call,torch,onnxruntime").split(",") if e]
    for engine in engines:
        if engine not in PLAN_ENGINES:
            raise CliError(f"unknown engine {engine!r} for --compare with --plan; expected some "
                           f"of {','.join(PLAN_ENGINES)}")
    if getattr(args, "pass") != "forward":
        raise CliError("--plan profiles inference: --pass must be forward")
    if args.json:
        _writable_file(args.json)
    import torch  # noqa: F401  (before fastconv's thread pool: see fastconv.runtime)

    from .bench import profile, rows

    _build_model(args)  # a bad model name or option fails here
    threads = _threads(args)
    with Console(stderr=True).status("timing the plan and the engines"):
        result = profile.profile_plan(args.model, batch=args.batch, bn_relu=not args.convs_only,
                                      alpha=args.alpha, resolution=args.resolution,
                                      dtype=args.dtype, engines=engines, budget=args.budget,
                                      threads=threads)
    console = _console()
    what = "convolutions only" if args.convs_only else "batch norm and ReLU after every convolution"
    title = (f"{args.model} {args.alpha:g}-{args.resolution} ({what}), batch {args.batch}, "
             f"{args.dtype}, {threads} threads: fastconv.Network node by node")
    header, body, total = rows.plan_rows(result)
    console.print(rows.rich(title, header, body, left=("node", "kernel", "input -> output"),
                            total=total))
    header, body = rows.engine_rows(result)
    console.print(rows.rich("Whole network, interleaved with a pause of "
                            f"{result['settings']['settle']:g} s before each engine's calls",
                            header, body, left=("engine",)))
    plan = result["plan"]
    if plan is not None:
        console.print(f"plan: {_nodes_against_call(plan)}, arena "
                      f"{plan['arena_bytes'] / 2**20:.1f} MiB")
    if args.json:
        _write_json(args.json, result)
    return 0


def cmd_profile_model(args) -> int:
    """``fastconv profile MODEL.onnx`` (or a factory): the plan node by node against FLOPs,
    the machine's peak and roofline, and ONNX Runtime's kernels; the whole model in each
    engine."""
    from rich.console import Console

    from .bench import profile, rows

    engines = [e for e in (args.compare or "onnxruntime").split(",") if e]
    for engine in engines:
        if engine not in profile.MODEL_ENGINES:
            raise CliError(f"unknown engine {engine!r} for --compare; expected some of "
                           f"{','.join(profile.MODEL_ENGINES)}")
    if getattr(args, "pass") != "forward":
        raise CliError("a model file or factory is profiled for inference: --pass must be "
                       "forward")
    for path in (args.json, args.csv):
        if path:
            _writable_file(path)
    if args.plot:
        _writable_dir(args.plot)
    from .bench import peers as peer_module

    if peer_module.torch_available():
        import torch  # noqa: F401  (before fastconv's thread pool: see fastconv.runtime)
    from .bench import machine

    threads = _threads(args)
    source = _open_model(args, args.backend)
    with Console(stderr=True).status("measuring the machine, then the plan and the engines"):
        peaks = machine.measure_machine(threads, dtypes=(source.dtype.name,), seconds=0.5)
        result = profile.profile_model(source, engines=engines, budget=args.budget,
                                       threads=threads, machine=peaks)
    console = _console()
    header, body, total = rows.model_rows(result)
    console.print(rows.rich(
        f"{source.name}, input {list(source.input_shape)}, {source.dtype.name}, {threads} "
        f"threads: fastconv.Network on {result['plan']['backend']} node by node (the min of "
        "its profiled calls)", header,
        body, left=("node", "kernel", "input -> output"), total=total))
    header, body = rows.engine_rows(result)
    console.print(rows.rich("Whole model, interleaved with a pause of "
                            f"{result['settings']['settle']:g} s before each engine's calls",
                            header, body, left=("engine",)))
    plan, m = result["plan"], result["machine"]
    console.print(
        f"plan: {rows.human(plan['macs'])} MACs, {rows.human(plan['params'])} params; "
        f"{_nodes_against_call(plan)}, arena {plan['arena_bytes'] / 2**20:.1f} MiB")
    console.print(
        f"machine: {m['cpu']['model']}, {threads} threads, {'/'.join(m['cpu']['extensions'])}; "
        f"% peak is of the measured GEMM, {m['gemm_gflops'][source.dtype.name]:.0f} GFLOP/s; "
        f"the roofline adds the measured stream, {m['bandwidth_gbs']:.0f} GB/s; the plan's "
        f"tuning: {tuned.IN_FORCE.describe()}")
    _print_machine_notes(console, m)
    if args.json:
        _write_json(args.json, result)
    if args.csv:
        _write_model_csv(args.csv, result)
    if args.plot:
        from .bench import plots

        for path in plots.write_all(dict(result, layers=result["nodes"]), args.plot):
            console.print(f"wrote {path}")
    return 0


def cmd_profile_train(args) -> int:
    """``fastconv profile package.module:function --train``: a training network's forward
    and backward node by node, and whole training steps beside torch's (and the per-call
    layers'), with torch's profiler per operator."""
    from rich.console import Console

    from .bench import rows, training

    engines = [e for e in (args.compare or ",".join(training.ENGINES)).split(",") if e]
    for engine in engines:
        if engine not in training.ENGINES:
            raise CliError(f"unknown engine {engine!r} for --compare with --train; expected "
                           f"some of {','.join(training.ENGINES)}")
    if ":" not in args.model or os.path.isfile(args.model):
        raise CliError(f"--train needs a torch module: a factory package.module:function "
                       f"(e.g. fastconv.bench.zoo:mobilenet_v1), but got {args.model!r}")
    if getattr(args, "pass") != "forward" or args.plan or args.convs_only or args.csv \
            or args.plot:
        raise CliError("--train times forward and backward of the whole network: --pass, "
                       "--plan, --convs-only, --csv and --plot do not apply")
    if args.json:
        _writable_file(args.json)
    import torch

    from .bench import sources
    from .network.training import TrainingNetwork

    try:
        module = sources.factory_module(args.model).to(getattr(torch, args.dtype)).train()
        network = TrainingNetwork(module, backend=args.backend)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    shape = (args.batch, *(args.input_shape or (3, 224, 224)))
    x = np.random.default_rng(0).standard_normal(shape).astype(args.dtype)
    threads = _threads(args)
    with Console(stderr=True).status("timing the training network, then whole steps"):
        try:
            profiled = network.profile(x, budget=args.budget / 2)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        steps = training.compare_steps(module, x, engines, budget=args.budget / 2)
        operators = training.torch_operators(module, x) if "torch" in engines else []
    console = _console()
    result = dict(profiled.to_dict(), model=args.model, input=list(shape), steps=steps,
                  torch_operators=operators, threads=threads)
    header = ["node", "op", "output", "fwd GFLOP", "fwd ms", "fwd GFLOP/s", "bwd ms",
              "bwd GFLOP/s"]
    body = []
    for r in result["nodes"]:
        (ff, fb), (sf, sb) = r["flops"], r["seconds"]
        body.append([r["name"], r["op"], rows.shape(r["output"][1:]),
                     f"{ff / 1e9:.3f}" if ff else "", rows.ms(sf, 3),
                     f"{ff / sf / 1e9:.1f}" if ff and sf else "", rows.ms(sb, 3),
                     f"{fb / sb / 1e9:.1f}" if fb and sb else ""])
    total = ["total", "", "", f"{sum(r['flops'][0] for r in result['nodes']) / 1e9:.3f}",
             rows.ms(sum(r["seconds"][0] for r in result["nodes"]), 2), "",
             rows.ms(sum(r["seconds"][1] for r in result["nodes"]), 2), ""]
    console.print(rows.rich(
        f"{args.model}, input {list(shape)}, {args.dtype}, {threads} threads: the training "
        "network node by node (the min of its profiled calls; backward: the input's and the "
        "parameters' gradients)",
        header, body, left=("node", "op", "output"), total=total))
    console.print(rows.rich(
        "Whole training steps (forward, cross entropy, backward, SGD), interleaved with a pause "
        f"of {training.PLAN_SETTLE:g} s before each engine's step",
        ["engine", "min ms", "median ms", "vs torch"],
        [[e, rows.ms(v["seconds"]), rows.ms(v["seconds_median"]),
          "" if v["ratio"] is None else f"{v['ratio']:.2f}"] for e, v in steps.items()],
        left=("engine",)))
    if operators:
        console.print(rows.rich(
            "torch's profiler, one training step: the operators by their own time",
            ["operator", "calls", "ms"],
            [[o["operator"], str(o["calls"]), rows.ms(o["seconds"])] for o in operators],
            left=("operator",)))
    if args.json:
        _write_json(args.json, result)
    return 0


def _nodes_against_call(plan: dict) -> str:
    """How far a call's node times fall short of the whole call: the medians of the profiled
    calls, back to back (the node table's sum adds each node's best time, which no one call
    reached)."""
    nodes, whole = plan["sum_of_nodes_median"], plan["seconds_median"]
    return (f"a call's nodes sum to {nodes * 1e3:.2f} ms against the whole call's "
            f"{whole * 1e3:.2f} ms (medians, back to back: {100 * (nodes / whole - 1):+.1f}%, "
            "the Python between the steps)")


def _write_model_csv(path, result):
    fields = ["name", "op", "kernel", "input", "output", "macs", "flops", "params", "bytes",
              "intensity", "seconds", "seconds_median", "gflops", "percent_of_peak",
              "roofline_gflops", "percent_of_roofline", "flops_share", "time_share",
              "onnxruntime_seconds"]
    _write_rows(path, fields, [dict(r, onnxruntime_seconds=r.get("onnxruntime", {}).get(
        "seconds", "")) for r in result["nodes"]])


def cmd_profile(args) -> int:
    """Profile a network: per-layer wall time against FLOPs, the machine's peak and peers."""
    from .bench import sources

    if args.train:
        return cmd_profile_train(args)
    if sources.is_model_source(args.model):
        return cmd_profile_model(args)
    _built_in_only(args)
    if args.plan:
        return cmd_profile_plan(args)
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
    if set(compare) & {"torch", "onnxruntime", "openvino"}:
        # before fastconv starts its thread pool, so each library keeps its own OpenMP
        # runtime and wait policy (see fastconv.config)
        from .bench import peers as peer_module

        if peer_module.torch_available():
            import torch  # noqa: F401
    _build_model(args)  # a bad model name or option fails here, before anything runs
    from . import dispatch
    from .bench import machine, profile

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
    _print_profile(console, args, results, peaks, threads)
    if args.json:
        _write_json(args.json, result if len(results) == 1 else
                    dict(result, twin=results[models_to_run[1]]))
    if args.csv:
        _write_csv(args.csv, result)
    if args.plot:
        from .bench import plots

        twin = results[models_to_run[1]] if len(results) == 2 else None
        for path in plots.write_all(result, args.plot, twin):
            console.print(f"wrote {path}")
    return 0


# --- report -----------------------------------------------------------------------------------


def cmd_throughput(args) -> int:
    """``fastconv throughput MODEL``: images per second on one process and over Dask."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from .bench import sources, throughput

    try:
        import distributed
    except ImportError:
        raise CliError("throughput runs on Dask: pip install 'fastconv[dask]'") from None
    if args.scheduler and args.workers:
        raise CliError("--workers sizes a LocalCluster; with --scheduler the cluster is given")
    if args.json:
        _writable_file(args.json)
    if sources.is_model_source(args.model):
        source = _open_model(args, args.backend)
        net, shape = source.network, source.shape
    else:
        _built_in_only(args)
        from .bench import engines
        from .network import Network

        if engines.available("torch"):
            raise CliError(f"the built-in {args.model!r} is planned from torch: pip install "
                           "torch (or give a model file)")
        try:
            module = engines.torch_model(args.model, alpha=args.alpha,
                                         resolution=args.resolution)
            net = Network.from_torch(module, backend=args.backend, threads=args.threads)
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc)) from None
        shape = (args.batch, 3, args.resolution, args.resolution)
    sizes = [] if args.scheduler else (args.workers or [runtime.usable_cores()])
    console = Console(width=max(110, Console().width))
    records = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("images"))
    with Progress(*columns, console=console, transient=True) as progress:
        records.append(throughput.one_process(net, shape, args.images, progress))
        if args.scheduler:
            with distributed.Client(args.scheduler) as client:
                records.append(throughput.on_cluster(net, shape, args.images, client,
                                                     f"Dask at {args.scheduler}", progress))
        for workers in sizes:
            with throughput.local_cluster(workers, args.threads_per_worker) as cluster, \
                    distributed.Client(cluster) as client:
                label = (f"LocalCluster, {workers} worker{'s' if workers > 1 else ''} x "
                         f"{args.threads_per_worker} thread"
                         f"{'s' if args.threads_per_worker > 1 else ''}")
                records.append(throughput.on_cluster(net, shape, args.images, client, label,
                                                     progress))
    base = records[0]["images_per_second"]
    table = Table(title=f"{args.model}: images per second, batches of {shape[0]} "
                        f"({net.dtype.name}, plan on {net.backend}); "
                        f"{throughput.input_bytes(net, shape) / 1e3:.0f} kB of input per image")
    for column in ("engine", "plan threads", "images", "seconds", "images/s",
                   "vs one process"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for r in records:
        table.add_row(r["engine"], str(r["plan_threads"]), str(r["images"]),
                      f"{r['seconds']:.2f}", f"{r['images_per_second']:.1f}",
                      f"{r['images_per_second'] / base:.2f}x")
    console.print(table)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(model=args.model, input_shape=list(shape), backend=net.backend,
                           input_bytes=throughput.input_bytes(net, shape), runs=records), fh,
                      indent=2)
    return 0


def cmd_report(args) -> int:
    """Run the measurements behind BENCHMARKS.md and write it."""
    if args.output:
        _writable_file(args.output)
    from .bench import report

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

    from . import __version__, dispatch
    from .bench import machine

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
    lines.append("plan kernels: " + _plan_widths())
    lines.append(f"tuning: {tuned.IN_FORCE.describe()}")
    lines.append(f"kernel cache: {'on' if config.CACHE else 'off'}; workspace budget "
                 f"{config.get_workspace_budget() / (1 << 20):.0f} MiB")
    for line in lines:
        print(line)
    return 0


def cmd_tune(args) -> int:
    """``fastconv tune``: the planner's thresholds measured here, stored for this CPU."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn
    from rich.table import Table

    from . import dispatch
    from .bench import engines, tune

    if engines.available("torch"):
        raise CliError("fastconv tune plans torch models of fastconv.bench.zoo: pip install "
                       "torch")
    backends = args.backends or [b for b in ("numba", "cython")
                                 if b in dispatch.available_backends()]
    for backend in backends:
        if backend not in ("numba", "cython"):
            raise CliError(f"unknown backend {backend!r} for --backends; expected numba, cython")
        try:
            dispatch.resolve_backend(backend)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    thresholds = args.only or tuned.TUNABLE
    for name in thresholds:
        if name not in tuned.TUNABLE:
            raise CliError(f"unknown threshold {name!r} for --only; expected some of "
                           f"{', '.join(tuned.TUNABLE)}")
    console = _console()
    workloads = tune.default_workloads()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    compared = [] if args.dry_run else [(w, b) for w in workloads for b in backends]
    with progress:
        task = progress.add_task("tuning", total=tune.steps(workloads, backends, thresholds)
                                 + len(compared))
        advance = lambda what: progress.update(task, advance=1, description=what)  # noqa: E731
        result = tune.tune(workloads, backends, thresholds, budget=args.budget,
                           threads=_threads(args), progress=advance)
        rows = (tune.against_defaults(workloads, backends, result.values,
                                      threads=_threads(args), progress=advance)
                if compared else [])
    table = Table(title=f"fastconv tune on {result.key.describe()}: each value's time against "
                        "the default's (geometric mean over "
                        f"{', '.join(result.details['workloads'])}; on "
                        f"{', '.join(backends)})")
    for column in ("threshold", "default", "candidates: relative time", "chosen"):
        table.add_column(column)
    for name in thresholds:
        d = result.details[name]
        table.add_row(name, repr(d["default"]),
                      ", ".join(f"{c}: {s:.3f}" for c, s in d["scores"].items()),
                      repr(d["chosen"]))
    console.print(table)
    if rows:
        table = Table(title="The plan with the defaults and with this tuning, ms (the minimum "
                            "of interleaved calls, a pause before each plan's)")
        for column in ("network", "executor", "defaults", "tuned", "tuned / defaults"):
            table.add_column(column)
        for r in rows:
            table.add_row(r["workload"], r["backend"], f"{r['defaults'] * 1e3:.2f}",
                          f"{r['tuned'] * 1e3:.2f}", f"{r['tuned'] / r['defaults']:.2f}")
        console.print(table)
    if args.dry_run:
        console.print("not stored (--dry-run)")
        tuned.apply()
        return 0
    path = tuned.save(result)
    console.print(f"stored in {path}; the tuning in force now: {tuned.apply().describe()} "
                  "(FASTCONV_TUNING=defaults ignores a stored one)")
    return 0


def _plan_widths() -> str:
    """The vector width each executor's plan kernels run at, and who chose it."""
    from numba.core import config as numba_config

    from .kernels.numba.microkernel import vector_bits

    target = (f"NUMBA_CPU_NAME={numba_config.CPU_NAME}, NUMBA_CPU_FEATURES="
              f"{numba_config.CPU_FEATURES}" if numba_config.CPU_FEATURES is not None
              else "this CPU")
    parts = [f"numba {vector_bits()}-bit ({target})"]
    try:
        from .kernels.cython import plan

        parts.append(f"cython {plan.ISA}, {plan.VECTOR_BITS}-bit (the widest of avx512, avx2, "
                     "sse2 this CPU runs" + (f", FASTCONV_ISA={config.ISA}" if config.ISA else "")
                     + ")")
    except ImportError:
        parts.append("cython not built")
    return "; ".join(parts)


def _openmp_runtime():
    """The libgomp files mapped into this process (Numba's, and torch's if loaded)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libgomp" in line}
    except OSError:
        return None
    return ", ".join(sorted(paths)) or None


# --- entry point ------------------------------------------------------------------------------


def _model_engines():
    from .bench.profile import MODEL_ENGINES

    return MODEL_ENGINES


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, wrapping at spaces only: engine names such as ``per-call`` stay whole."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False,
                             break_long_words=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv", description="Compiled convolution kernels and where their time goes.",
        formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True,
                                parser_class=functools.partial(argparse.ArgumentParser,
                                                               formatter_class=_HelpFormatter))

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
    _add_model_options(count, files=True)
    count.add_argument("--full-conv", action="store_true",
                       help="the full-convolution twin (Conv MobileNet)")
    count.add_argument("--batch", type=_positive_int, default=1)
    count.add_argument("--json", action="store_true", help="print JSON instead of tables")
    count.set_defaults(run=cmd_flops)

    prof = sub.add_parser("profile", help="per-layer wall time against FLOPs, peak and peers")
    _add_model_options(prof, files=True)
    prof.add_argument("--batch", type=_positive_int, default=1)
    prof.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                      help="for a built-in model (a model file or factory runs in its own)")
    prof.add_argument("--threads", type=_positive_int, default=None)
    prof.add_argument("--backend", default="auto", help="auto, numba, numpy, cython or cuda")
    prof.add_argument("--algorithm", default="auto",
                      help="an algorithm for every layer it can serve (default auto)")
    prof.add_argument("--pass", choices=["forward", "backward", "both"], default="forward",
                      help="time the forward, the backward, or both (default forward)")
    prof.add_argument("--budget", type=_positive_float, default=5.0,
                      help="seconds of interleaved timing passes (default 5)")
    prof.add_argument("--compare", default="", metavar="PEERS",
                      help=f"peers, comma-separated: of {', '.join(PEERS)} (with --plan: of "
                           f"{', '.join(PLAN_ENGINES)}; default per-call, torch, onnxruntime; "
                           "for a model file or factory: of "
                           f"{', '.join(_model_engines())}; default onnxruntime)")
    prof.add_argument("--plan", action="store_true",
                      help="profile fastconv.Network (the network planned once) beside the "
                           "engines, node by node")
    prof.add_argument("--convs-only", action="store_true",
                      help="with --plan: the convolutions alone, no batch norm or ReLU")
    prof.add_argument("--train", action="store_true",
                      help="a factory's module in training: forward and backward node by "
                           "node, whole training steps beside torch's (--compare: of planned, "
                           "per-call, torch)")
    prof.add_argument("--json", metavar="FILE", help="write the records as JSON")
    prof.add_argument("--csv", metavar="FILE", help="write the per-layer records as CSV")
    prof.add_argument("--plot", metavar="DIR", help="write PNG figures into DIR (matplotlib)")
    prof.set_defaults(run=cmd_profile)

    tun = sub.add_parser("tune", help="measure the planner's thresholds on this machine and "
                                      "store them for this CPU")
    tun.add_argument("--budget", type=_positive_float, default=0.3,
                     help="seconds of interleaved timing per candidate and network (default "
                          "0.3)")
    tun.add_argument("--backends", type=lambda s: [b for b in s.split(",") if b],
                     default=None, help="executors to measure on, comma-separated: numba, "
                                        "cython (default every one installed)")
    tun.add_argument("--only", type=lambda s: [b for b in s.split(",") if b], default=None,
                     metavar="THRESHOLDS", help="measure these thresholds alone (names from "
                                                "kernels/tuning.py), the others at defaults")
    tun.add_argument("--threads", type=_positive_int, default=None)
    tun.add_argument("--dry-run", action="store_true", help="measure and print, store nothing")
    tun.set_defaults(run=cmd_tune)

    thr = sub.add_parser("throughput", help="images per second: one process, and over Dask")
    _add_model_options(thr, files=True)
    thr.add_argument("--images", type=_positive_int, default=256,
                     help="images per measurement (default 256)")
    thr.add_argument("--batch", type=_positive_int, default=8,
                     help="images per call, and per Dask block (default 8)")
    thr.add_argument("--scheduler", metavar="ADDRESS", default=None,
                     help="a running Dask scheduler (tcp://host:8786) instead of LocalClusters")
    thr.add_argument("--workers", type=lambda s: [_positive_int(v) for v in s.split(",")],
                     default=None, metavar="N[,N...]",
                     help="LocalCluster sizes to measure, each a fresh cluster of worker "
                          "processes (default: one per core)")
    thr.add_argument("--threads-per-worker", type=_positive_int, default=1,
                     help="Dask threads per LocalCluster worker (default 1)")
    thr.add_argument("--backend", choices=["auto", "numba", "cython"], default="auto")
    thr.add_argument("--threads", type=_positive_int, default=None,
                     help="the plan's threads on one process (default: the cores); on the "
                          "cluster each worker takes its share")
    thr.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    thr.set_defaults(run=cmd_throughput)

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
