"""Figures of a profile (``fastconv profile --plot DIR``); needs the ``plot`` extra (matplotlib).

Each function takes the dict :func:`fastconv.bench.profile.profile_network` returns (or
:func:`~fastconv.bench.profile.profile_model`'s, its nodes as the layers) and writes one PNG.
"""

from __future__ import annotations

import os

KIND_COLOURS = {"conv": "tab:red", "dw": "tab:blue", "pw": "tab:green", "fc": "tab:purple",
                "other": "tab:gray"}
KIND_NAMES = {"conv": "full conv", "dw": "depthwise", "pw": "pointwise (1x1)",
              "fc": "fully connected", "other": "pools, additions, layout"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(result, what):
    s = result["settings"]
    return (f"{result.get('model', 'network')}: {what}\n{s['mode']}, batch {s['batch']}, "
            f"{s['dtype']}, {s['threads']} threads")


def roofline(result, path):
    """Each layer at (arithmetic intensity, achieved GFLOP/s) under the machine's roofline."""
    plt = _pyplot()
    machine = result["machine"]
    dtype = result["settings"]["dtype"]
    peak = machine["gemm_gflops"][dtype]
    theoretical = machine["peak_gflops"][dtype]
    bandwidth = machine["bandwidth_gbs"]
    layers = [r for r in result["layers"] if r["flops"]]  # what has no FLOPs has no place
    xs = [r["intensity"] for r in layers]
    lo, hi = min(xs + [0.1]) / 2, max(xs + [peak / bandwidth]) * 4
    fig, ax = plt.subplots(figsize=(8, 5.5))
    grid = [lo * (hi / lo) ** (k / 200) for k in range(201)]
    ax.plot(grid, [min(peak, x * bandwidth) for x in grid], "k-",
            label=f"roofline: {bandwidth:.0f} GB/s, GEMM {peak:.0f} GFLOP/s")
    ax.axhline(theoretical, color="gray", ls="--",
               label=f"theoretical FMA peak {theoretical:.0f} GFLOP/s")
    for kind in KIND_COLOURS:
        pts = [(r["intensity"], r["gflops"]) for r in layers if r["kind"] == kind]
        if pts:
            ax.scatter(*zip(*pts), color=KIND_COLOURS[kind], label=KIND_NAMES[kind], zorder=3)
    for names, (x, y) in _label_groups(layers):
        ax.annotate(names, (x, y), fontsize=6, xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP/byte)",
           ylabel="achieved GFLOP/s", title=_title(result, "roofline"))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


#: Points closer than this on both log axes (in decades) share one label.
LABEL_NEAR = 0.1


def _label_groups(layers):
    """One label per cluster of nearby points (on the log-log axes), each naming its layers
    in order, runs of one kind's consecutive layers shortened (``pw11–pw23``): MobileNet's
    five identical 14x14 blocks would otherwise print their names on top of each other."""
    import math

    groups = []  # [x, y, [names]]
    for r in layers:
        x, y = math.log10(r["intensity"]), math.log10(max(r["gflops"], 1e-12))
        for g in groups:
            if abs(g[0] - x) < LABEL_NEAR and abs(g[1] - y) < LABEL_NEAR:
                g[2].append(r["name"])
                break
        else:
            groups.append([x, y, [r["name"]]])
    return [(_name_runs(names), (10 ** x, 10 ** y)) for x, y, names in groups]


def _name_runs(names):
    """``["pw11", "pw13", "pw15", "pw5"]`` -> ``"pw11–pw15, pw5"``: names of one prefix whose
    numbers rise with one step, as one run."""
    import re

    parts, run = [], []

    def close():
        if len(run) > 2:
            parts.append(f"{run[0][2]}–{run[-1][2]}")
        else:
            parts.extend(name for *_, name in run)
        run.clear()

    for name in names:
        m = re.fullmatch(r"(\D*)(\d+)", name)
        key = (m.group(1), int(m.group(2))) if m else (name, None)
        if (run and m and run[-1][0] == key[0] and run[-1][1] is not None
                and (len(run) < 2 or key[1] - run[-1][1] == run[-1][1] - run[-2][1])
                and key[1] > run[-1][1]):
            run.append((*key, name))
            continue
        close()
        run.append((*key, name))
    close()
    return ", ".join(parts)


def share_by_kind(result, path):
    """Share of the FLOPs beside share of the time, by layer kind."""
    plt = _pyplot()
    kinds = [k for k in KIND_COLOURS if any(r["kind"] == k for r in result["layers"])]
    flops = [100 * sum(r["flops_share"] for r in result["layers"] if r["kind"] == k)
             for k in kinds]
    times = [100 * sum(r["time_share"] for r in result["layers"] if r["kind"] == k)
             for k in kinds]
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = range(len(kinds))
    ax.bar([x - 0.2 for x in xs], flops, 0.4, color="lightgray", hatch="//", edgecolor="gray")
    ax.bar([x + 0.2 for x in xs], times, 0.4, color=[KIND_COLOURS[k] for k in kinds])
    for x, f, t in zip(xs, flops, times):
        ax.text(x - 0.2, f, f"{f:.1f}%", ha="center", va="bottom", fontsize=8)
        ax.text(x + 0.2, t, f"{t:.1f}%", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [KIND_NAMES[k] for k in kinds])
    ax.set(ylabel="%", title=_title(result, "where the FLOPs are and where the time goes"))
    ax.legend(handles=[
        Patch(facecolor="lightgray", hatch="//", edgecolor="gray",
              label="share of FLOPs (left bar)"),
        Patch(facecolor="white", edgecolor="black",
              label="share of time (right bar, in the kind's colour)")])
    return _save(fig, path)


def time_vs_flops(result, path):
    """Wall time against FLOPs, layer by layer."""
    plt = _pyplot()
    layers = result["layers"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs = range(len(layers))
    ax.bar(xs, [1e3 * r["seconds"] for r in layers],
           color=[KIND_COLOURS[r["kind"]] for r in layers])
    ax.set_xticks(list(xs), [r["name"] for r in layers], rotation=90, fontsize=7)
    ax.set_ylabel("ms (bars)")
    twin = ax.twinx()
    line, = twin.plot(xs, [r["flops"] / 1e6 for r in layers], "ko-", ms=3, label="MFLOP")
    twin.set_ylabel("MFLOP (line)")
    ax.set_title(_title(result, "wall time (bars, by kind) and FLOPs (line) per layer"))
    from matplotlib.patches import Patch

    kinds = [k for k in KIND_COLOURS if any(r["kind"] == k for r in layers)]
    twin.legend(handles=[Patch(color=KIND_COLOURS[k], label=f"ms, {KIND_NAMES[k]}")
                         for k in kinds] + [line], fontsize=8, loc="upper right")
    return _save(fig, path)


def separable_vs_full(separable, full, path):
    """Theoretical MAC ratio beside the measured time ratio, pair by pair and for the nets."""
    plt = _pyplot()
    seps, fulls = separable["layers"], full["layers"]
    labels, mac_ratio, time_ratio = [], [], []
    j = 0
    i = 0
    while i < len(seps) and j < len(fulls):
        if seps[i]["kind"] == "dw" and i + 1 < len(seps):
            pair = seps[i], seps[i + 1]
            labels.append(f"{pair[0]['name']}+{pair[1]['name']}\nvs {fulls[j]['name']}")
            mac_ratio.append(fulls[j]["macs"] / (pair[0]["macs"] + pair[1]["macs"]))
            time_ratio.append(fulls[j]["seconds"] / (pair[0]["seconds"] + pair[1]["seconds"]))
            i += 2
        else:
            i += 1
        j += 1
    labels.append("whole net")
    mac_ratio.append(full["total"]["macs"] / separable["total"]["macs"])
    time_ratio.append(full["total"]["seconds"] / separable["total"]["seconds"])
    fig, ax = plt.subplots(figsize=(12, 5))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], mac_ratio, 0.4, label="MACs: full / separable (theory)",
           color="tab:gray")
    ax.bar([x + 0.2 for x in xs], time_ratio, 0.4, label="time: full / separable (measured)",
           color="tab:orange")
    ax.axhline(1, color="k", lw=0.5)
    ax.set_xticks(list(xs), labels, rotation=90, fontsize=7)
    ax.set(ylabel="ratio (higher: the separable net wins by more)",
           title=_title(separable, "separable vs full convolution: fewer MACs, less time?"))
    ax.set_ylim(0, max(mac_ratio + time_ratio) * 1.3)  # room above the bars for the legend
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    return _save(fig, path)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_all(result, directory, twin=None):
    """Write every figure into ``directory``; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = [share_by_kind(result, os.path.join(directory, "share_by_kind.png")),
             time_vs_flops(result, os.path.join(directory, "time_vs_flops.png"))]
    if result.get("machine"):
        paths.insert(0, roofline(result, os.path.join(directory, "roofline.png")))
    if twin is not None:
        separable, full = ((result, twin) if result["model"] == "mobilenet-v1"
                           else (twin, result))
        paths.append(separable_vs_full(separable, full,
                                       os.path.join(directory, "separable_vs_full.png")))
    return paths
