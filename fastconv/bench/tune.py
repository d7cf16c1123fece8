"""``fastconv tune``: the planner's thresholds measured on this machine.

Each threshold of :data:`fastconv.kernels.tuned.TUNABLE` in turn (one pass of coordinate
descent, starting from ``kernels/tuning.py``'s defaults): the workloads are planned once per
candidate value, on every executor asked, and timed interleaved (``harness.measure``, the
minimum of bursts). A candidate's score is the geometric mean over workloads and executors of
its time against the value in force; the best is kept when it is at least :data:`MARGIN`
faster, else the value in force stays (a figure within the noise changes nothing). The result
is a :class:`~fastconv.kernels.tuned.Tuning` for this machine's key, which the CLI stores.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..kernels import tuned, tuning
from . import harness

#: The values tried for each threshold (besides the one in force).
CANDIDATES = {
    "WIDE_BELOW": (32, 64, 128),
    "GEMM_CHUNK_BYTES": (16384, 32768, 65536),
    "GRID_SLACK": (0.0, 0.1, 0.25),
    "PLAN_TASKS_PER_THREAD": (1, 2, 4),
    "PLAN_WINOGRAD_CHANNELS": (32, 64, 128),
    "PLAN_WINOGRAD_BLOCK_MAX": (32, 64, 128),
    "PLAN_SEPARABLE_WEIGHTS": (0.3, 0.6, 1.0),
    "PLAN_SEPARABLE_SCRATCH": (0.03125, 0.0625, 0.125),
    "PLAN_EXPAND_ROWS": (1, 2, 4),
    "PLAN_EXPAND_SCRATCH": (0.125, 0.25, 0.5),
}
#: A candidate replaces the value in force only when at least this much faster.
MARGIN = 0.03


@dataclass
class Workload:
    """A network to plan (an eval-mode torch module) and its input."""

    name: str
    module: object
    x: np.ndarray


def default_workloads() -> list[Workload]:
    """The reference CNNs of ``fastconv.bench.zoo`` at 224x224: MobileNet v1 at batch 1 and 8
    (the fused pairs, the wide tile), MobileNet v2 (the expand blocks), ResNet-18 (Winograd,
    chunked 3x3 panels)."""
    from . import zoo

    rng = np.random.default_rng(0)

    def image(batch):
        return rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)

    v1 = zoo.mobilenet_v1()
    return [Workload("MobileNet v1, batch 1", v1, image(1)),
            Workload("MobileNet v1, batch 8", v1, image(8)),
            Workload("MobileNet v2, batch 1", zoo.mobilenet_v2(), image(1)),
            Workload("ResNet-18, batch 1", zoo.resnet18(), image(1))]


def steps(workloads, backends, thresholds=tuned.TUNABLE) -> int:
    """How many (threshold, executor, workload) measurements :func:`tune` makes."""
    return len(thresholds) * len(backends) * len(workloads)


def tune(workloads: list[Workload], backends=("numba",), thresholds=tuned.TUNABLE,
         budget: float = 0.3, threads: int | None = None,
         progress: Callable[[str], None] | None = None) -> tuned.Tuning:
    """Measure ``thresholds`` on ``workloads`` (see the module docstring).

    Starts from the defaults and leaves the chosen values in force in this process. Each
    measurement calls ``progress`` with what it measured.

    Returns
    -------
    fastconv.kernels.tuned.Tuning
        The chosen values, for this machine, with each threshold's candidates and scores.
    """
    from ..network import Network

    unknown = [t for t in thresholds if t not in CANDIDATES]
    if unknown:
        raise ValueError(f"cannot tune {', '.join(unknown)}; tunable: {', '.join(CANDIDATES)}")
    tuned.apply("defaults")
    details = {}
    for name in thresholds:
        current = getattr(tuning, name)
        candidates = sorted({*CANDIDATES[name], current})
        ratios = {c: [] for c in candidates}
        for backend in backends:
            for w in workloads:
                nets = {}
                try:
                    for c in candidates:
                        setattr(tuning, name, c)
                        nets[c] = Network.from_torch(w.module, backend=backend, threads=threads)
                        nets[c](w.x)  # planned with the candidate in force
                finally:
                    setattr(tuning, name, current)
                timings = harness.measure(
                    {repr(c): (lambda net: lambda: net(w.x))(net) for c, net in nets.items()},
                    budget=budget, burst=3, min_repeats=5)
                base = timings[repr(current)].min
                for c in candidates:
                    ratios[c].append(timings[repr(c)].min / base)
                if progress:
                    progress(f"{name}: {w.name} on {backend}")
        score = {c: math.exp(sum(map(math.log, r)) / len(r)) for c, r in ratios.items()}
        best = min(candidates, key=score.get)
        chosen = best if score[best] <= 1 - MARGIN else current
        setattr(tuning, name, chosen)
        details[name] = dict(default=tuned.DEFAULTS[name], chosen=chosen,
                             scores={repr(c): round(s, 4) for c, s in score.items()})
    values = {name: getattr(tuning, name) for name in thresholds}
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    details["workloads"] = [w.name for w in workloads]
    details["backends"] = list(backends)
    return tuned.Tuning(tuned.MachineKey.here(), values, now, details)


def against_defaults(workloads: list[Workload], backends, values: dict, budget: float = 1.0,
                     threads: int | None = None,
                     progress: Callable[[str], None] | None = None) -> list[dict]:
    """Each workload planned with the defaults and with ``values`` over them, on each
    executor, timed interleaved with a pause (``profile.PLAN_SETTLE``) before each plan's calls:
    rows of ``workload``, ``backend``, ``defaults`` and ``tuned`` (seconds, the minimum).
    Leaves ``values`` in force."""
    from ..network import Network
    from .profile import PLAN_SETTLE

    rows = []
    for backend in backends:
        for w in workloads:
            nets = {}
            for label, setting in (("defaults", {}), ("tuned", values)):
                tuned.apply("defaults")
                for name, value in setting.items():
                    setattr(tuning, name, value)
                nets[label] = Network.from_torch(w.module, backend=backend, threads=threads)
                nets[label](w.x)
            timings = harness.measure(
                {label: (lambda net: lambda: net(w.x))(net) for label, net in nets.items()},
                budget=budget, burst=3, min_repeats=5, settle=PLAN_SETTLE)
            rows.append(dict(workload=w.name, backend=backend,
                             defaults=timings["defaults"].min, tuned=timings["tuned"].min))
            if progress:
                progress(f"defaults against tuned: {w.name} on {backend}")
    return rows
