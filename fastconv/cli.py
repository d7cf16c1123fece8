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
                        "threads: min ms of interleaved repeats", title_justify="left")
    for head in ("layer", "input -> output", "MFLOP", *columns, "auto GFLOP/s", "torch/auto",
                 "auto/gemm"):
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
            cells.append(f"{sec * 1e3:.3f}")
        secs = rec["seconds"]
        shape = "x".join(map(str, rec["input"][1:])) + " -> " + "x".join(map(str, rec["output"][1:]))
        table.add_row(rec["layer"], shape, f"{rec['flops'] / 1e6:.1f}", *cells,
                      f"{rec['flops'] / secs['auto'] / 1e9:.1f}",
                      _ratio(secs.get("torch"), secs["auto"]), _ratio(secs["auto"], secs.get("gemm")))
    total_flops = sum(r["flops"] for r in records)
    table.add_section()
    table.add_row("total", "", f"{total_flops / 1e6:.1f}",
                  *[f"{totals[c] * 1e3:.2f}" if totals[c] else "" for c in columns],
                  f"{total_flops / totals['auto'] / 1e9:.1f}",
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
