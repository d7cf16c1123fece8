"""The ``fastconv`` command."""

from __future__ import annotations

import argparse
import json
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
    """Forward time of each layer with every algorithm, beside torch and a bare GEMM."""
    from rich.console import Console
    from rich.table import Table

    from . import dispatch, profile
    from .models import layer_names

    net = _build_model(args, include_fc=False)
    threads = _threads(args)
    algorithms = dispatch.algorithms("numba") if args.algorithms is None else args.algorithms
    for algorithm in algorithms:
        if algorithm not in dispatch.algorithms("numba"):
            raise CliError(f"unknown algorithm {algorithm!r}; expected some of "
                           f"{dispatch.algorithms('numba')}")
    dtype = np.dtype(args.dtype)
    console = Console(stderr=True)
    records = []
    columns = ["auto", *algorithms, "torch", "gemm"]
    with console.status("") as status:
        for name, spec in zip(layer_names(net), net):
            status.update(f"timing {name} ({len(records) + 1}/{len(net)})")
            x, w = profile.layer_arrays(spec, args.batch, dtype)
            candidates = profile.forward_candidates(
                spec, x, w, algorithms=["auto", *algorithms], with_torch=not args.no_torch,
                threads=threads)
            timings = profile.measure(candidates, budget=args.budget)
            records.append(dict(
                layer=name, kind=spec.kind, input=list(spec.input_shape(args.batch)),
                output=list(spec.output_shape(args.batch)), flops=spec.flops * args.batch,
                seconds={k: t.min for k, t in timings.items()},
                median_seconds={k: t.median for k, t in timings.items()},
                first_call_seconds={k: t.first_call for k, t in timings.items()}))

    table = Table(title=f"{args.model} forward, batch {args.batch}, {dtype.name}, {threads} "
                        "threads: min ms of interleaved repeats (GFLOP/s)", title_justify="left")
    for head in ("layer", "input -> output", "MFLOP", *columns, "torch/auto", "auto/gemm"):
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
        shape = "x".join(map(str, rec["input"][1:])) + " -> " + "x".join(map(str, rec["output"][1:]))
        table.add_row(rec["layer"], shape, f"{rec['flops'] / 1e6:.1f}", *cells,
                      _ratio(secs.get("torch"), secs["auto"]), _ratio(secs["auto"], secs.get("gemm")))
    total_flops = sum(r["flops"] for r in records)
    table.add_section()
    table.add_row("total", "", f"{total_flops / 1e6:.1f}",
                  *[f"{totals[c] * 1e3:.2f} ({total_flops / totals[c] / 1e9:.0f})"
                    if totals[c] and all(c in r["seconds"] for r in records) else ""
                    for c in columns],
                  _ratio(totals["torch"] or None, totals["auto"]), "")
    _console().print(table)
    if args.json:
        _write_json(args.json, dict(model=args.model, batch=args.batch, dtype=dtype.name,
                                    threads=threads, layers=records))
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
                       help="comma-separated subset of the Numba algorithms")
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
