"""How the toolchain's tables format their cells and rows: one place, so the terminal tables
(rich) and BENCHMARKS.md's (Markdown) show the same figures the same way."""

from __future__ import annotations

import re

from typing import Sequence


def ms(seconds: float, digits: int = 2) -> str:
    """Seconds as milliseconds."""
    return f"{seconds * 1e3:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` to two decimals, or an empty cell when either is missing."""
    return "" if a is None or b is None else f"{a / b:.2f}"


def shape(dims: Sequence[int]) -> str:
    """``(3, 224, 224)`` as ``3x224x224``."""
    return "x".join(map(str, dims))


def transition(record: dict, arrow: str = "->") -> str:
    """A record's per-image input and output shapes (its ``input`` and ``output``, batch first)."""
    return f"{shape(record['input'][1:])} {arrow} {shape(record['output'][1:])}"


def human(n: float) -> str:
    """A count with a unit prefix (k, M, G)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (a cell's line breaks as ``<br>``, which keep it one table row)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("\n", "<br>") for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


def rich(title: str, header: Sequence[str], rows: Sequence[Sequence[object]],
         left: Sequence[str] = (), total: Sequence[object] | None = None):
    """A ``rich`` table: the columns named in ``left`` left-aligned, the others right; an
    optional ``total`` row in a section of its own."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for head in header:
        table.add_column(head, justify="left" if head in left else "right")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    if total is not None:
        table.add_section()
        table.add_row(*[str(c) for c in total])
    return table


PROFILE_LEFT = ("layer", "kind", "input -> output")


def profile_rows(result: dict, arrow: str = "->", digits: int = 3):
    """The per-layer table of a profile (:func:`fastconv.bench.profile.profile_network`'s
    result): ``(header, rows, total)``, one row per layer, its peers' times and their ratios
    to fastconv's."""
    peers = list(result["peers"]["totals"])
    has_machine = result["machine"] is not None
    header = ["layer", "kind", f"input {arrow} output", "MFLOP", "ms", "ms median", "GFLOP/s",
              "% peak", "FLOP/B", "% roofline", "% FLOPs", "% time",
              *[f"{p} ms" for p in peers], *[f"{p} / fastconv" for p in peers]]
    rows = []
    for r in result["layers"]:
        row = [r["name"], r["kind"], transition(r, arrow), f"{r['flops'] / 1e6:.1f}",
               ms(r["seconds"], digits), ms(r["seconds_median"], digits), f"{r['gflops']:.1f}",
               f"{r['percent_of_peak']:.0f}" if has_machine else "", f"{r['intensity']:.1f}",
               f"{r['percent_of_roofline']:.0f}" if has_machine else "",
               f"{100 * r['flops_share']:.1f}", f"{100 * r['time_share']:.1f}"]
        row += [ms(r["peers"][p]["seconds"], digits) if p in r["peers"] else "" for p in peers]
        row += [ratio(r["peers"][p]["seconds"], r["seconds"]) if p in r["peers"] else ""
                for p in peers]
        rows.append(row)
    t, totals = result["total"], result["peers"]["totals"]
    total = ["total", "", "", f"{t['flops'] / 1e6:.1f}", ms(t["seconds"]),
             ms(t["seconds_median"]), f"{t['gflops']:.1f}",
             f"{t['percent_of_peak']:.0f}" if has_machine else "",
             f"{t['flops'] / t['bytes']:.1f}", "", "100.0", "100.0",
             *[ms(totals[p]["seconds"]) for p in peers],
             *[ratio(totals[p]["seconds"], t["seconds"]) for p in peers]]
    return header, rows, total


def bench_rows(records: Sequence[dict], columns: Sequence[str],
               ratios: Sequence[tuple[str, str]]):
    """The table of ``fastconv bench``: ``(header, rows, total)``; a cell is a candidate's
    minimum milliseconds and its GFLOP/s, and each pair ``(a, b)`` of ``ratios`` a column of
    a's time over b's."""
    header = ["layer", "input -> output", "MFLOP", *columns, *[f"{a}/{b}" for a, b in ratios]]
    totals = dict.fromkeys(columns, 0.0)
    rows = []
    for rec in records:
        secs = rec["seconds"]
        cells = []
        for col in columns:
            if col not in secs:
                cells.append("")
                continue
            totals[col] += secs[col]
            cells.append(f"{ms(secs[col], 3)} ({rec['flops'] / secs[col] / 1e9:.0f})")
        rows.append([rec["layer"], transition(rec), f"{rec['flops'] / 1e6:.1f}", *cells,
                     *[ratio(secs.get(a), secs.get(b)) for a, b in ratios]])
    flops = sum(r["flops"] for r in records)
    complete = {c: totals[c] > 0 and all(c in r["seconds"] for r in records) for c in columns}
    total = ["total", "", f"{flops / 1e6:.1f}",
             *[f"{ms(totals[c])} ({flops / totals[c] / 1e9:.0f})" if complete[c] else ""
               for c in columns],
             *[ratio(totals.get(a) or None, totals.get(b) or None) for a, b in ratios]]
    return header, rows, total


def flops_rows(records: Sequence[dict], total: dict):
    """The table of ``fastconv flops``: ``(header, rows, total)`` from
    :func:`fastconv.flops.layer_counts` and :func:`fastconv.flops.totals`."""
    header = ["layer", "kind", "input", "output", "MACs", "FLOPs", "params", "bytes f32",
              "FLOP/B f32", "FLOP/B f64"]
    rows = [[r["name"], r["kind"], shape(r["input"][1:]), shape(r["output"][1:]),
             human(r["macs"]), human(r["flops"]), human(r["params"]), human(r["bytes_float32"]),
             f"{r['intensity_float32']:.1f}", f"{r['intensity_float64']:.1f}"] for r in records]
    bytes64 = sum(r["bytes_float64"] for r in records)
    last = ["total", "", "", "", human(total["macs"]), human(total["flops"]),
            human(total["params"]), human(total["bytes"]), f"{total['intensity']:.1f}",
            f"{total['flops'] / bytes64:.1f}"]
    return header, rows, last


def pair_rows(comparison: dict):
    """Each depthwise + pointwise pair against the full convolution it replaces
    (:func:`fastconv.flops.separable_vs_full`): ``(header, rows)``."""
    header = ["pair", "MACs separable", "MACs full", "ratio (counted)",
              "1/N + 1/D_K^2 (predicted)"]
    rows = [[p["layers"], human(p["macs_separable"]), human(p["macs_full"]), f"{p['ratio']:.4f}",
             f"{p['prediction']:.4f}"] for p in comparison["pairs"]]
    return header, rows


def plan_rows(result: dict, digits: int = 3):
    """The plan's per-node table (``fastconv profile --plan``): ``(header, rows, total)``;
    ONNX Runtime's kernels for the same nodes where it ran."""
    nodes = result["nodes"]
    with_ort = any("onnxruntime" in r for r in nodes)
    header = ["node", "kernel", "input -> output", "MFLOP", "ms", "GFLOP/s"]
    if with_ort:
        header += ["onnxruntime ms", "onnxruntime / plan"]
    rows = []
    for r in nodes:
        row = [_covering(r), r["kernel"], _shapes(r), f"{r['flops'] / 1e6:.1f}",
               ms(r["seconds"], digits), f"{r['gflops']:.1f}"]
        if with_ort:
            row += _ort_cells(r, digits)
        rows.append(row)
    flops = sum(r["flops"] for r in nodes)
    total_s = sum(r["seconds"] for r in nodes)
    total = ["sum of nodes", "", "", f"{flops / 1e6:.1f}", ms(total_s),
             f"{flops / total_s / 1e9:.1f}" if total_s else ""]
    if with_ort:
        total += _ort_total(nodes)
    return header, rows, total


def _shapes(r: dict) -> str:
    return f"{r['input']} -> {r['output']}" if r["input"] else ""


def _ort_cells(r: dict, digits: int) -> list[str]:
    """A plan node's ONNX Runtime columns: its kernels' time and their ratio to the node's."""
    ort = r.get("onnxruntime")
    return ["", ""] if ort is None else [ms(ort["seconds"], digits),
                                         ratio(ort["seconds"], r["seconds"])]


def _ort_total(nodes: Sequence[dict], digits: int = 2) -> list[str]:
    """ONNX Runtime's columns summed over the nodes it has a kernel for, against theirs."""
    ort_s = sum(r["onnxruntime"]["seconds"] for r in nodes if "onnxruntime" in r)
    matched = sum(r["seconds"] for r in nodes if "onnxruntime" in r)
    return [ms(ort_s, digits), ratio(ort_s, matched)]


def engine_rows(result: dict):
    """Each engine's whole-network time beside the plan's: ``(header, rows)``."""
    engines = result["engines"]
    plan = engines.get("plan", {}).get("seconds")
    header = ["engine", "ms (min)", "ms (median)", "GFLOP/s", "plan / engine"]
    rows = [[name, ms(e["seconds"]), ms(e["seconds_median"]), f"{e['gflops']:.0f}",
             ratio(plan, e["seconds"])] for name, e in engines.items()]
    rows += [[name, f"not measured: {why}", "", "", ""]
             for name, why in result["missing"].items()]
    return header, rows


def count_rows(counts: Sequence[dict]):
    """``fastconv flops MODEL.onnx``: per plan node, what it computes and moves: ``(header,
    rows, total)``."""
    header = ["node", "kernel", "input -> output", "MACs", "FLOPs", "params", "bytes",
              "FLOP/byte"]
    rows = [[r["name"], r["kernel"], _shapes(r), human(r["macs"]), human(r["flops"]),
             human(r["params"]), human(r["bytes"]),
             f"{r['flops'] / r['bytes']:.1f}" if r["bytes"] and r["flops"] else ""]
            for r in counts]
    macs, params, nbytes = (sum(r[k] for r in counts) for k in ("macs", "params", "bytes"))
    total = ["total", "", "", human(macs), human(2 * macs), human(params), human(nbytes),
             f"{2 * macs / nbytes:.1f}" if nbytes else ""]
    return header, rows, total


def onnx_count_rows(counts: dict):
    """``fastconv flops MODEL.onnx``: every ONNX node counted (``network.onnx_counts``):
    ``(header, rows, total)``."""
    header = ["node", "category", "input -> output", "MACs", "FLOPs", "other ops", "params"]
    rows = [[r["name"], r["category"] if r["counted"] else f"not counted: {r['why']}",
             f"{r['input']} -> {r['output']}", human(r["macs"]), human(r["flops"]),
             human(r["other_ops"]), human(r["params"])] for r in counts["nodes"]]
    total = ["total", f"{len(counts['not_counted'])} not counted", "", human(counts["macs"]),
             human(counts["flops"]), human(counts["other_ops"]), human(counts["params"])]
    return header, rows, total


def _covering(row: dict) -> str:
    """A plan node's name and, below it, the operators of the graph's nodes fused into it
    (the type in a label's last parentheses: "node '/x/Sigmoid' (Sigmoid)" -> Sigmoid)."""
    fused = row.get("fused") or []
    if not fused:
        return row["name"]
    types = [m.group(1) if (m := re.search(r"\(([^()]*)\)$", label)) else label
             for label in fused]
    return f"{row['name']}\n+ fused: {', '.join(types)}"


def model_rows(result: dict, digits: int = 3):
    """The node table of :func:`fastconv.bench.profile.profile_model`: ``(header, rows,
    total)``; the % columns where the machine was measured, ONNX Runtime's kernels for the
    same nodes where it ran."""
    nodes = result["nodes"]
    with_peak = result.get("machine") is not None
    with_ort = any("onnxruntime" in r for r in nodes)
    header = ["node", "kernel", "input -> output", "MFLOP", "params", "bytes", "FLOP/byte",
              "ms", "ms median", "GFLOP/s"]
    if with_peak:
        header += ["% peak", "% roofline"]
    header += ["% time"]
    if with_ort:
        header += ["onnxruntime ms", "onnxruntime / plan"]
    rows = []
    for r in nodes:
        row = [_covering(r), r["kernel"], _shapes(r), f"{r['flops'] / 1e6:.1f}",
               human(r["params"]), human(r["bytes"]),
               f"{r['intensity']:.1f}" if r["flops"] else "", ms(r["seconds"], digits),
               ms(r["seconds_median"], digits), f"{r['gflops']:.1f}" if r["flops"] else ""]
        if with_peak:
            row += ([f"{r['percent_of_peak']:.0f}", f"{r['percent_of_roofline']:.0f}"]
                    if "percent_of_peak" in r else ["", ""])
        row += [f"{100 * r['time_share']:.1f}"]
        if with_ort:
            row += _ort_cells(r, digits)
        rows.append(row)
    plan = result["plan"]
    total_s = plan["sum_of_nodes"]
    total = ["sum of nodes", "", "", f"{plan['flops'] / 1e6:.1f}", human(plan["params"]),
             human(plan["bytes"]), "", ms(total_s, digits), "",
             f"{plan['flops'] / total_s / 1e9:.1f}"]
    if with_peak:
        total += ["", ""]
    total += ["100.0"]
    if with_ort:
        total += _ort_total(nodes, digits)
    return header, rows, total
