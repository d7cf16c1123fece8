"""Training steps timed side by side: a whole step (forward, cross entropy, backward, an SGD
step with momentum) of one torch module's copies, each trained by another engine, interleaved
with a pause before each engine's calls (``harness.pause`` of ``profile.PLAN_SETTLE``, as the
plan's comparisons take it); and torch's own profiler per operator.

The engines: ``planned`` (``fastconv.torch.Planned``: the whole network in fastconv),
``per-call`` (the module with each ``Conv2d`` a ``fastconv.torch.Conv2d``, the rest torch's),
``torch``.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from .harness import pause
from .profile import PLAN_SETTLE

ENGINES = ("planned", "per-call", "torch")


def _per_call(module):
    """``module`` with each ``nn.Conv2d`` a ``fastconv.torch.Conv2d`` of the same parameters."""
    import torch

    from ..torch import Conv2d

    for name, layer in list(module.named_children()):
        if type(layer) is torch.nn.Conv2d:
            ours = Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                          dtype=layer.weight.dtype)
            ours.load_state_dict(layer.state_dict())
            setattr(module, name, ours)
        else:
            _per_call(layer)
    return module


def trainer(engine: str, module, x: np.ndarray, seed: int = 0):
    """A function running one training step of ``engine`` on a copy of ``module`` (in training
    mode) with input ``x`` and random targets of the output's classes; torch on as many
    threads as fastconv."""
    import torch

    from .. import config
    from ..torch import Planned

    torch.set_num_threads(config.get_num_threads())

    model = copy.deepcopy(module).train()
    if engine == "planned":
        model = Planned(model)
    elif engine == "per-call":
        model = _per_call(model)
    elif engine != "torch":
        raise ValueError(f"unknown engine {engine!r}; expected one of {list(ENGINES)}")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    inputs = torch.from_numpy(x)
    with torch.no_grad():
        classes = copy.deepcopy(module).eval()(inputs).shape[1]
    targets = torch.from_numpy(np.random.default_rng(seed).integers(0, classes, len(x)))

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return step


def compare_steps(module, x: np.ndarray, engines=ENGINES, budget: float = 3.0,
                  min_repeats: int = 3) -> dict:
    """Each engine's training step, interleaved: a pause, then one step of each in turn,
    until ``budget`` seconds and ``min_repeats`` rounds. Returns ``{engine: {"seconds",
    "seconds_median", "ratio"}}`` (``ratio``: to torch's, where torch ran)."""
    steps = {engine: trainer(engine, module, x) for engine in engines}
    for step in steps.values():
        step()  # compiled, allocated, planned
    times = {engine: [] for engine in steps}
    end = time.perf_counter() + budget
    while min(len(t) for t in times.values()) < min_repeats or time.perf_counter() < end:
        for engine, step in steps.items():
            pause(PLAN_SETTLE)
            start = time.perf_counter()
            step()
            times[engine].append(time.perf_counter() - start)
    best = {engine: min(t) for engine, t in times.items()}
    return {engine: {"seconds": best[engine], "seconds_median": float(np.median(t)),
                     "ratio": best[engine] / best["torch"] if "torch" in best else None}
            for engine, t in times.items()}


def torch_operators(module, x: np.ndarray, top: int = 15) -> list[dict]:
    """torch's profiler on one training step of ``module`` (after one untimed step): the
    operators taking the most time of their own, forward and backward."""
    import torch

    step = trainer("torch", module, x)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    return [{"operator": e.key, "calls": e.count, "seconds": e.self_cpu_time_total * 1e-6}
            for e in events]
