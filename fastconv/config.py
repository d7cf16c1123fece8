"""What a user sets: compile flags, the kernel cache, threads and the workspace budget.

Environment variables (read once, at import):

``FASTCONV_CACHE``
    ``0`` disables Numba's on-disk cache of compiled kernels (default on).
``FASTCONV_FASTMATH``
    ``0`` compiles kernels with strict IEEE semantics. The default allows only floating-point
    contraction (FMA) and reassociation (vectorised sums), which keep NaN and Inf propagation
    intact.
``FASTCONV_PARALLEL``
    ``0`` compiles kernels without ``prange`` parallelism (useful when the caller already runs
    one convolution per thread).
``FASTCONV_WORKSPACE_MB``
    Cap on temporary workspaces (im2col columns), in MiB; default 256.
``FASTCONV_SERIAL_BELOW``
    Elements read and written below which a memory-bound kernel (depthwise) runs on the
    calling thread (see :data:`SERIAL_BELOW`); ``0`` always uses every thread.
``FASTCONV_ISA``
    The widest vector instructions the plan's kernels may use: ``avx512``, ``avx2`` (with FMA)
    or ``sse2``; by default the widest this CPU has. A width the CPU lacks is never used (the
    widest it has below it is). It chooses among the Cython kernels, which carry every width;
    when numba is not imported yet it also sets the Numba kernels' target (``NUMBA_CPU_NAME``
    and ``NUMBA_CPU_FEATURES``, unless those are set), so that one machine tests another
    width's kernels and tiles.
``FASTCONV_TUNING``
    ``stored`` (default): the thresholds ``fastconv tune`` stored for this CPU, where it did;
    ``defaults``: ``kernels/tuning.py``'s; or the path of a tuning file. ``FASTCONV_TUNING_DIR``
    is where ``fastconv tune`` stores them (see :mod:`fastconv.kernels.tuned`).
``OPENBLAS_THREAD_TIMEOUT``
    Respected when set; otherwise, if fastconv is imported before numpy, numpy's OpenBLAS is
    loaded with ``fastconv.kernels.tuning.OPENBLAS_SPIN`` (see :mod:`fastconv.runtime`).
``NUMBA_THREADING_LAYER``
    Respected when set; otherwise fastconv asks Numba for a *thread-safe* layer, TBB (the
    ``tbb`` package, a dependency on Linux x86-64) or else OpenMP, so that kernels may be
    called from several Python threads at once.

How fastconv acts on these (loading the libraries, starting the pools) is
:mod:`fastconv.runtime`.
"""

from __future__ import annotations

import contextlib
import os
import sys

from . import runtime
from .kernels import tuned, tuning
from .kernels.plan_tiles import host_vector_bits

__all__ = [
    "CACHE",
    "ISA",
    "ISA_BITS",
    "FASTMATH",
    "PARALLEL",
    "SERIAL_BELOW",
    "get_workspace_budget",
    "set_workspace_budget",
    "workspace_budget",
    "get_plan_memory_budget",
    "set_plan_memory_budget",
    "plan_memory_budget",
    "get_num_threads",
    "set_num_threads",
]


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


CACHE: bool = _env_flag("FASTCONV_CACHE", True)


def kernel_cache_dir() -> str:
    """Where Numba caches fastconv's compiled kernels: a directory per version of the
    kernels' sources (``fastconv/kernels``), under the user's cache. Numba keys a cached
    function by its own file alone, not by the intrinsics and inlined helpers of other files
    it compiles in (the GEMM tiles' IR, the epilogues): after any change to those, a cache
    beside the sources would serve the old code. A new version of the sources gets a new,
    empty directory instead."""
    import hashlib

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as fh:
                digest.update(fh.read())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastconv", "numba", digest.hexdigest()[:16])


# before Numba is imported (it reads NUMBA_CACHE_DIR once); a user's own setting stands
if CACHE and "numba" not in sys.modules and not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = kernel_cache_dir()
# "contract" lets LLVM fuse multiply-add and "reassoc" lets it vectorise sums (the weight
# gradients' dot products); no "nnan"/"ninf", so NaN and Inf behave as in IEEE.
FASTMATH: set[str] | bool = ({"contract", "reassoc"} if _env_flag("FASTCONV_FASTMATH", True)
                             else False)
PARALLEL: bool = _env_flag("FASTCONV_PARALLEL", True)

#: The vector widths FASTCONV_ISA names, in bits, and the target Numba compiles each for
#: (a CPU whose features are that width's, listed so that the kernels can read the width).
ISA_WIDTHS: dict[str, int] = {"avx512": 512, "avx2": 256, "sse2": 128}
_NUMBA_TARGETS = {
    "avx512": ("skylake-avx512", "+avx512f,+avx512cd,+avx512bw,+avx512dq,+avx512vl,+avx2,+fma"),
    "avx2": ("haswell", "+avx2,+fma,-avx512f"),
    "sse2": ("x86-64", "+sse2,-avx,-avx2,-avx512f"),
}


def _isa() -> str | None:
    value = os.environ.get("FASTCONV_ISA", "").strip().lower()
    if value in ("", "auto", "native"):
        return None
    if value not in ISA_WIDTHS:
        raise ValueError(f"FASTCONV_ISA must be one of {', '.join(ISA_WIDTHS)} (or auto), but "
                         f"got {os.environ['FASTCONV_ISA']!r}")
    return value


#: FASTCONV_ISA: the widest instruction set the plan's kernels may use (None: the CPU's).
ISA: str | None = _isa()
#: Its vector width in bits (512 when unset: whatever the CPU has).
ISA_BITS: int = ISA_WIDTHS[ISA] if ISA else 512
_HOST_BITS = host_vector_bits()
if (ISA and "numba" not in sys.modules and not (os.environ.get("NUMBA_CPU_NAME")
                                                or os.environ.get("NUMBA_CPU_FEATURES"))
        and ISA_BITS < _HOST_BITS):  # never a width the CPU lacks
    os.environ["NUMBA_CPU_NAME"], os.environ["NUMBA_CPU_FEATURES"] = _NUMBA_TARGETS[ISA]

# The tuning the planner reads (kernels/tuning.py's defaults, or what fastconv tune stored for
# this CPU), put in force once: kernels.tuned.IN_FORCE says which.
tuned.apply(vector_bits=min(ISA_BITS, _HOST_BITS))

_serial_env = os.environ.get("FASTCONV_SERIAL_BELOW")
#: Elements read and written below which a memory-bound kernel runs on the calling thread,
#: by thread pool (``"tbb"``, ``"omp"``: the Cython kernels', and Numba's without TBB);
#: ``FASTCONV_SERIAL_BELOW`` sets both, else ``tuning.SERIAL_BELOW``.
SERIAL_BELOW: dict[str, int] = {layer: int(_serial_env or default)
                                for layer, default in tuning.SERIAL_BELOW.items()}

_MIB = 1 << 20
_workspace_bytes: int = int(float(os.environ.get("FASTCONV_WORKSPACE_MB", "256")) * _MIB)


def get_workspace_budget() -> int:
    """Largest temporary workspace (in bytes) one convolution call may allocate."""
    return _workspace_bytes


def set_workspace_budget(nbytes: int) -> None:
    """Set the workspace budget in bytes.

    Algorithms that need a workspace (im2col's column matrix, a strided 1x1's subsampled
    input) tile their work so that it never exceeds this budget. The floor is one column of
    the column matrix (``in_channels * kH * kW`` elements).

    Parameters
    ----------
    nbytes : int
        Positive number of bytes.
    """
    global _workspace_bytes
    if isinstance(nbytes, bool) or int(nbytes) != nbytes or nbytes <= 0:
        raise ValueError(f"workspace budget must be a positive number of bytes, got {nbytes!r}")
    _workspace_bytes = int(nbytes)


@contextlib.contextmanager
def _for_a_while(get, set_, value):
    """``set_(value)`` inside the block, the previous value restored after it."""
    previous = get()
    set_(value)
    try:
        yield
    finally:
        set_(previous)


def workspace_budget(nbytes: int):
    """Context manager that sets the workspace budget and restores the previous one."""
    return _for_a_while(get_workspace_budget, set_workspace_budget, nbytes)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # a system that does not say
        return 8 << 30


_plan_env = os.environ.get("FASTCONV_PLAN_MEMORY_MB", "").strip()
_plan_bytes: int = (int(float(_plan_env) * _MIB) if _plan_env
                    else _physical_memory() // 2)


def get_plan_memory_budget() -> int:
    """Most memory (in bytes) a network plan may take for one input shape: its arena, its
    tables, its packed weights and its output (and, for an ONNX model planned in segments,
    any one value the fallback computes). Default: half the machine's memory;
    ``FASTCONV_PLAN_MEMORY_MB`` sets it."""
    return _plan_bytes


def set_plan_memory_budget(nbytes: int) -> None:
    """Set the plan memory budget in bytes (see :func:`get_plan_memory_budget`): a shape
    whose plan would exceed it is refused when it is planned, with a ValueError naming the
    node, the sizes and the budget, before anything of that size is allocated."""
    global _plan_bytes
    if isinstance(nbytes, bool) or int(nbytes) != nbytes or nbytes <= 0:
        raise ValueError(f"plan memory budget must be a positive number of bytes, got "
                         f"{nbytes!r}")
    _plan_bytes = int(nbytes)


def plan_memory_budget(nbytes: int):
    """Context manager that sets the plan memory budget and restores the previous one."""
    return _for_a_while(get_plan_memory_budget, set_plan_memory_budget, nbytes)


def get_num_threads() -> int:
    """Threads the Numba kernels use, as set for the calling thread."""
    return runtime.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads the Numba kernels use (at most ``NUMBA_NUM_THREADS``), for the calling
    thread. BLAS keeps its own setting."""
    runtime.set_num_threads(n)
