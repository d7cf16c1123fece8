"""The timing harness: interleaved, compile excluded, min and median of repeats.

The machine is shared and noisy, so peers are timed in the same process, round-robin (one call
of each per round), and compared by the minimum (and median) of their repeats. The first call
of each candidate is timed on its own: for a Numba kernel it includes compilation (or loading
it from the cache) and is reported separately, never mixed into the repeats.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

# Seconds the harness pauses before each library's timed call: PyTorch's OpenMP threads,
# ONNX Runtime's pool and OpenBLAS's workers spin after their work, and on two cores the next
# library would otherwise run against them.
SETTLE = 0.1


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


def use_threads(threads: int | None) -> int:
    """The thread count a measurement runs on: ``threads``, set for fastconv's kernels, or
    the current setting when None."""
    from .. import config

    if threads is not None:
        config.set_num_threads(threads)
    return config.get_num_threads()


def pause(seconds: float) -> None:
    """Busy-wait ``seconds`` on the calling thread, for the other libraries' pools to go idle.

    Not a sleep: a core left idle for tens of milliseconds is slow for the next few
    milliseconds (its clock and the hypervisor's scheduling ramp up again), and every call in
    the next burst would be timed on a cold machine instead of in the steady state of a busy
    program. A cold core costs fastconv's sleeping pool more than PyTorch's threads, which
    spin between calls."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def measure(candidates: dict[str, Callable[[], object]], *, min_repeats: int = 5,
            max_repeats: int = 1000, budget: float = 0.3, burst: int = 3,
            settle: float = 0.0, wall_factor: float = 4.0) -> dict[str, Timing]:
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
    settle : float
        Seconds of :func:`pause` before each candidate's burst, so that the previous
        library's spinning threads are idle (see :func:`time_networks`).
    wall_factor : float
        Rounds also stop (once ``min_repeats`` is reached) after ``wall_factor * budget``
        seconds of wall time per candidate, pauses included: a layer of 0.1 ms would
        otherwise pause for ``max_repeats`` rounds before its calls add up to ``budget``.

    Returns
    -------
    dict of name -> Timing
    """
    timings = {}
    for name, fn in candidates.items():
        start = time.perf_counter()
        fn()
        timings[name] = Timing(time.perf_counter() - start)
    spent, started = 0.0, time.perf_counter()
    wall_limit = wall_factor * budget * len(candidates)
    for round_ in range(max_repeats):
        if round_ >= min_repeats and (spent >= budget * len(candidates)
                                      or time.perf_counter() - started >= wall_limit):
            break
        for name, fn in candidates.items():
            if settle:
                pause(settle)
            for _ in range(burst):
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
                timings[name].times.append(elapsed)
                spent += elapsed
    return timings
