"""Timing harness: interleaved, compile excluded, min and median of repeats.

The machine is shared and noisy, so peers are timed in the same process, round-robin (one call
of each per round), and compared by the minimum (and median) of their repeats. The first call
of each candidate is timed on its own: for a Numba kernel it includes compilation (or loading
it from the cache) and is reported separately, never mixed into the repeats.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from . import api, dispatch, peers
from .spec import ConvSpec


@dataclass
class Timing:
    """Wall times of one candidate, in seconds."""

    first_call: float
    times: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure(candidates: dict[str, Callable[[], object]], *, min_repeats: int = 5,
            max_repeats: int = 1000, budget: float = 0.3, burst: int = 3) -> dict[str, Timing]:
    """Time zero-argument callables round-robin until each has used ``budget`` seconds.

    Each round calls every candidate ``burst`` times in a row. Thread pools spin for a while
    after a parallel region (PyTorch's OpenMP threads, OpenBLAS's): the first call after
    another library's steals cores from those spinners, the next ones run as that library
    runs in a program of its own. The minimum therefore measures each library undisturbed,
    while interleaving still exposes all of them to the same machine state.

    Parameters
    ----------
    candidates : dict of name -> callable
        Each is called once untimed-for-statistics first (its time is ``first_call``).
    min_repeats, max_repeats : int
        Bounds on the number of rounds.
    budget : float
        Rounds stop (once ``min_repeats`` is reached) when the timed calls of all candidates
        together have taken ``budget`` seconds per candidate. Every candidate gets the same
        number of calls, interleaved.
    burst : int
        Consecutive calls of one candidate per round.

    Returns
    -------
    dict of name -> Timing
    """
    timings = {}
    for name, fn in candidates.items():
        start = time.perf_counter()
        fn()
        timings[name] = Timing(time.perf_counter() - start)
    spent = 0.0
    for round_ in range(max_repeats):
        if round_ >= min_repeats and spent >= budget * len(candidates):
            break
        for name, fn in candidates.items():
            for _ in range(burst):
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
                timings[name].times.append(elapsed)
                spent += elapsed
    return timings


def layer_arrays(spec: ConvSpec, batch: int, dtype, seed: int = 0):
    """Random input and weight arrays for a layer (the values do not change the timing)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.input_shape(batch)).astype(dtype)
    w = (rng.standard_normal(spec.weight_shape) / np.sqrt(np.prod(spec.weight_shape[1:])))
    return x, w.astype(dtype)


def forward_candidates(spec: ConvSpec, x, weight, *, algorithms: Iterable[str] | None = None,
                       backend: str = "numba", with_torch: bool = True,
                       with_gemm: bool = True, threads: int | None = None):
    """The calls a forward benchmark of one layer compares.

    Returns a dict ``name -> callable``: one entry per fastconv algorithm that can serve the
    layer (``"auto"`` always), then ``"torch"`` and ``"gemm"`` (a bare numpy.matmul of the
    layer's GEMM) when available.
    """
    names = dispatch.algorithms(backend) if algorithms is None else list(algorithms)
    out = {}

    def call(algorithm):
        return lambda: api.conv2d(x, weight, None, spec.stride, spec.padding, spec.dilation,
                                  spec.groups, algorithm=algorithm, backend=backend)

    for algorithm in names:
        if algorithm == "auto" or dispatch.load(backend, algorithm).supports(spec) is None:
            out[algorithm] = call(algorithm)
    if with_torch:
        torch_call = peers.torch_conv2d(spec, x, weight, threads=threads)
        if torch_call is not None:
            out["torch"] = torch_call
    if with_gemm:
        gemm_call = peers.numpy_gemm(spec, x.shape[0], x.dtype)
        if gemm_call is not None:
            out["gemm"] = gemm_call
    return out
