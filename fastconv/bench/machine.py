"""What the machine can do: its CPU, a theoretical FMA peak, and measured GEMM and memory speed.

The theoretical peak is ``cores x clock x FMA lanes per cycle x 2``; every input that cannot be
read from the system is an assumption, and is listed as one. The measured figures (numpy's
BLAS GEMM, a parallel streaming copy) are the ceilings a convolution can actually reach.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import config, runtime
from ..kernels import tuning
from ..kernels.plan_tiles import widest_vectors


@dataclass
class CPU:
    model: str
    vendor: str
    family: int | None
    cores: int
    clock_ghz: float | None
    clock_source: str
    flags: list[str]

    @property
    def vector_bits(self) -> int:
        return widest_vectors(self.flags)

    @property
    def extensions(self) -> list[str]:
        """The SIMD extensions that matter for these kernels, in the order they arrived."""
        wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                  "avx512_vnni", "avx512_bf16", "amx_tile")
        return [f for f in wanted if f in self.flags]


def read_cpu() -> CPU:
    """CPU model, vendor, cores, clock and flags, from /proc/cpuinfo where there is one."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    clock, source = None, "unknown"
    try:  # the maximum frequency, when the kernel exposes cpufreq (not in most VMs)
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as fh:
            clock, source = int(fh.read()) / 1e6, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        if "cpu MHz" in info:
            clock, source = float(info["cpu MHz"]) / 1e3, "/proc/cpuinfo 'cpu MHz' (current)"
    family = info.get("cpu family")
    return CPU(
        model=info.get("model name", platform.processor() or "unknown"),
        vendor=info.get("vendor_id", "unknown"),
        family=int(family) if family and family.isdigit() else None,
        cores=os.cpu_count() or 1,
        clock_ghz=clock,
        clock_source=source,
        flags=info.get("flags", "").split(),
    )


def fma_lanes_per_cycle(cpu: CPU) -> tuple[int, str]:
    """fp32 FMA lanes one core retires per cycle, and the assumption behind the number.

    Not readable from the system: it depends on how many FMA units the core has and how wide
    they are, which differs within one instruction set (Zen 4 runs AVX-512 on 256-bit units).
    """
    lanes = cpu.vector_bits // 32
    if cpu.vendor == "AuthenticAMD" and cpu.family is not None and cpu.family < 0x1A:
        return 2 * 8, ("AMD before Zen 5 (family 0x%x): 2 FMA units of 256 bits, whatever the "
                       "instruction width" % cpu.family)
    return 2 * lanes, f"2 FMA units of {cpu.vector_bits} bits per core"


@dataclass
class Machine:
    """Peaks of this machine, theoretical and measured (GFLOP/s, GB/s)."""

    cpu: CPU
    threads: int
    peak_gflops: dict[str, float]
    assumptions: list[str]
    gemm_gflops: dict[str, float] = field(default_factory=dict)
    bandwidth_gbs: float | None = None
    wake_us: float | None = None
    blas_spin_ms: float | None = None
    after_idle_us: tuple[float, float] | None = None
    #: What the measured peaks may not be, in words (a busy machine, a clock above the one
    #: assumed); printed beside every figure that divides by them.
    notes: list[str] = field(default_factory=list)

    def check_peaks(self) -> None:
        """Set each measured GEMM peak against the theoretical one, noting what is off: far
        below it, the machine was probably busy while it was measured; above it, the clock
        assumed is below the one the cores ran at."""
        for dtype, measured in self.gemm_gflops.items():
            theoretical = self.peak_gflops[dtype]
            if measured < BUSY_BELOW * theoretical:
                self.notes.append(
                    f"the {dtype} GEMM peak measured, {measured:.0f} GFLOP/s, is "
                    f"{measured / theoretical:.0%} of the theoretical {theoretical:.0f}: the "
                    "machine may have been busy while it was measured")
            elif measured > theoretical:
                self.notes.append(
                    f"the {dtype} GEMM peak measured, {measured:.0f} GFLOP/s, is above the "
                    f"theoretical {theoretical:.0f}: the cores ran faster than the clock "
                    "assumed")

    def settle_peak(self, dtype, fastest_gflops: float, seconds: float = 1.0) -> None:
        """Make the measured GEMM peak one a profile can stand on, given its fastest layer.

        A layer faster than the peak means the peak was measured while something else ran:
        the GEMM is measured again, and if the layer is still faster, the peak becomes the
        layer's speed and a note says so. No layer is then above 100% of the peak."""
        name = np.dtype(dtype).name
        if fastest_gflops <= self.gemm_gflops[name]:
            return
        first = self.gemm_gflops[name]
        again = _gemm_gflops(np.dtype(name), GEMM_SIZE, seconds)
        self.gemm_gflops[name] = max(first, again)
        if fastest_gflops > self.gemm_gflops[name]:
            self.notes.append(
                f"a layer ran at {fastest_gflops:.0f} GFLOP/s, above the {name} GEMM peak "
                f"measured twice ({first:.0f} and {again:.0f}): the machine was busy while "
                "it was measured, and the peak taken is that layer's")
            self.gemm_gflops[name] = fastest_gflops
        else:
            self.notes.append(
                f"the {name} GEMM peak was measured again ({first:.0f}, then {again:.0f} "
                f"GFLOP/s): a layer ran at {fastest_gflops:.0f}, above the first figure")

    def blas_spin_text(self) -> str:
        """The idle BLAS threads' spin, measured, and who chose it."""
        return describe_blas_spin(self.blas_spin_ms)

    def after_idle_text(self) -> str:
        """:func:`measure_after_idle_us`'s two figures, in words."""
        from .harness import SETTLE

        if self.after_idle_us is None:
            return "the cost of waking from idle not measured"
        warm, woken = self.after_idle_us
        return (f"a one-thread copy of {AFTER_IDLE_BYTES / 1e6:.1f} MB took {warm:.0f} µs back "
                f"to back and {woken:.0f} µs right after {SETTLE:g} s idle (the pause before "
                "each library's timed pass, whose first layer starts in that state)")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["cpu"].pop("flags")
        out["cpu"]["extensions"] = self.cpu.extensions
        return out


def theoretical_peak(cpu: CPU, threads: int) -> tuple[dict[str, float], list[str]]:
    """``threads x clock x FMA lanes x 2`` per dtype, with the assumptions it rests on."""
    lanes, why = fma_lanes_per_cycle(cpu)
    assumptions = [why]
    clock = cpu.clock_ghz
    if clock is None:
        clock = 2.0
        assumptions.append("clock unknown: 2.0 GHz assumed")
    else:
        assumptions.append(f"clock {clock:.2f} GHz from {cpu.clock_source}; turbo may exceed it")
    flops32 = threads * clock * lanes * 2
    return {"float32": flops32, "float64": flops32 / 2}, assumptions


#: The side of the square GEMM that measures the peak (numpy's BLAS, on all its threads).
GEMM_SIZE = 2048
#: A measured GEMM peak below this share of the theoretical one is noted as suspect.
BUSY_BELOW = 0.35


def _gemm_gflops(dtype, size: int, seconds: float, rounds: int = 3) -> float:
    """numpy's GEMM of ``size`` x ``size`` matrices: the fastest call in ``rounds`` rounds of
    ``seconds / rounds`` each (warmed up, a short pause between rounds, so that one busy
    moment of the machine does not decide the figure)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    a @ b
    best = float("inf")
    for r in range(rounds):
        if r:
            time.sleep(0.05)
        a @ b  # the threads awake again
        deadline = time.perf_counter() + seconds / rounds
        while True:
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
            if time.perf_counter() >= deadline:
                break
    return 2 * size**3 / best / 1e9


def _stream_gbs(megabytes: int, seconds: float) -> float:
    """Bytes read plus written per second by a parallel copy much larger than the caches."""
    from ..kernels.numba._common import parallel_copy as copy

    src = np.ones(megabytes * (1 << 20) // 8)
    dst = np.empty_like(src)
    copy(src, dst)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        copy(src, dst)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def _wake_us(seconds: float) -> float:
    """Microseconds a parallel kernel call pays to start the thread pool: the median call of a
    parallel region with almost no work, less the median such call on the calling thread
    alone. Between calls OpenMP's pool sleeps (see ``runtime.polite_openmp``), so every
    parallel call pays this before its other threads start; a kernel shorter than a few times
    this gains little from them. On TBB the calling thread does not wait for its workers and
    this is near zero. The median, not the fastest call: the wake-up's cost varies
    widely from call to call (on a virtual machine, with how the host schedules the idle
    core), and now and then one is almost free."""
    from ..kernels.numba._common import parallel_copy as copy

    src = np.ones(64)
    dst = np.empty_like(src)
    copy(src, dst)  # compiled or loaded before the timing

    def median():
        times, deadline = [], time.perf_counter() + seconds / 2
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            copy(src, dst)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    threads = config.get_num_threads()
    parallel = median()
    config.set_num_threads(1)
    try:
        serial = median()
    finally:
        config.set_num_threads(threads)
    return max(0.0, parallel - serial) * 1e6


BLAS_SPIN_WINDOW = 0.05  # seconds


def measure_blas_spin_ms(window: float = BLAS_SPIN_WINDOW) -> float:
    """Milliseconds of CPU this process burns in the ``window`` seconds after a GEMM on
    numpy's BLAS threads, while the calling thread sleeps: OpenBLAS's idle workers spinning
    (see ``tuning.OPENBLAS_SPIN``), time a parallel kernel right after a GEMM would share its
    cores with."""
    a = np.ones((512, 512), np.float32)
    a @ a  # large enough for every BLAS thread
    start = time.process_time()
    time.sleep(window)
    return (time.process_time() - start) * 1e3


def describe_blas_spin(busy_ms: float) -> str:
    """:func:`measure_blas_spin_ms`'s figure, and who chose the spin
    (``runtime.OPENBLAS_IDLE_SPIN``)."""
    who = {"fastconv": f"OPENBLAS_THREAD_TIMEOUT={tuning.OPENBLAS_SPIN}, set by fastconv",
           "environment": "OPENBLAS_THREAD_TIMEOUT from the environment",
           "numpy first": "OpenBLAS's default: numpy was imported before fastconv"}
    return (f"idle BLAS threads busy {busy_ms:.0f} ms of CPU in the "
            f"{BLAS_SPIN_WINDOW * 1e3:.0f} ms after a GEMM "
            f"({who.get(runtime.OPENBLAS_IDLE_SPIN, runtime.OPENBLAS_IDLE_SPIN)})")


AFTER_IDLE_BYTES = 32 * 112 * 112 * 4  # what MobileNet's first layer writes (float32)


def measure_after_idle_us(repeats: int = 7) -> tuple[float, float]:
    """Microseconds of a one-thread copy of :data:`AFTER_IDLE_BYTES`, back to back and right
    after the profiler's pause (``harness.SETTLE`` seconds) asleep (medians of ``repeats``).

    The profiler pauses before each library's pass. Idle that long, a core may drop into a
    deep sleep state or (on a virtual machine) be lent to another guest, and come back with
    cold caches or a low clock; the first layer of the next pass runs on it. The copy is
    memory traffic of the first layer's size, on one thread, so no thread pool's wake-up is in
    the figure.
    """
    from .harness import SETTLE

    src = np.ones(AFTER_IDLE_BYTES // 4, np.float32)
    dst = np.empty_like(src)

    def copy():
        start = time.perf_counter()
        np.copyto(dst, src)
        return time.perf_counter() - start

    warm, woken = [], []
    for _ in range(repeats):
        copy()
        warm.append(copy())
        time.sleep(SETTLE)
        woken.append(copy())
    return float(np.median(warm)) * 1e6, float(np.median(woken)) * 1e6


def measure_machine(threads: int | None = None, dtypes=("float32", "float64"),
                    seconds: float = 0.5, quick: bool = False) -> Machine:
    """The theoretical peak, the measured GEMM and streaming speed, the cost of starting
    the thread pool, how long BLAS's idle threads spin, and what waking from idle costs.

    Parameters
    ----------
    threads : int, optional
        Threads the kernels use (default: Numba's setting).
    dtypes : sequence of str
        GEMM dtypes to measure.
    seconds : float
        Time spent on each measurement.
    quick : bool
        Small matrices and a small copy (for tests).
    """
    threads = threads or config.get_num_threads()
    cpu = read_cpu()
    peak, assumptions = theoretical_peak(cpu, threads)
    size = 256 if quick else GEMM_SIZE
    gemm = {d: _gemm_gflops(np.dtype(d), size, seconds) for d in dtypes}
    bandwidth = _stream_gbs(16 if quick else 512, seconds)
    wake = _wake_us(seconds) if threads > 1 else 0.0
    result = Machine(cpu, threads, peak, assumptions, gemm, bandwidth, wake,
                     measure_blas_spin_ms(), measure_after_idle_us(repeats=2 if quick else 7))
    if not quick:
        result.check_peaks()
    return result
