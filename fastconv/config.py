"""Run-time configuration in one place: compile flags, cache, threads, workspace budget.

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
    calling thread; by default 50000 for Numba's kernels on TBB and 450000 for OpenMP ones
    (see :data:`SERIAL_BELOW`). ``0`` always uses every thread.
``OPENBLAS_THREAD_TIMEOUT``
    Respected when set; otherwise, if fastconv is imported before numpy, numpy's OpenBLAS is
    loaded with ``16`` (see :data:`OPENBLAS_SPIN`).
``NUMBA_THREADING_LAYER``
    Respected when set; otherwise fastconv asks Numba for a *thread-safe* layer, TBB (the
    ``tbb`` package, a dependency on Linux x86-64) or else OpenMP, so that kernels may be
    called from several Python threads at once.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = [
    "CACHE",
    "FASTMATH",
    "PARALLEL",
    "get_workspace_budget",
    "set_workspace_budget",
    "workspace_budget",
    "get_num_threads",
    "set_num_threads",
    "run_sized",
    "jit",
]


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


CACHE: bool = _env_flag("FASTCONV_CACHE", True)
# "contract" lets LLVM fuse multiply-add and "reassoc" lets it vectorise sums (the weight
# gradients' dot products); no "nnan"/"ninf", so NaN and Inf behave as in IEEE.
FASTMATH: set[str] | bool = ({"contract", "reassoc"} if _env_flag("FASTCONV_FASTMATH", True)
                             else False)
PARALLEL: bool = _env_flag("FASTCONV_PARALLEL", True)

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
def workspace_budget(nbytes: int):
    """Context manager that sets the workspace budget and restores the previous one."""
    previous = get_workspace_budget()
    set_workspace_budget(nbytes)
    try:
        yield
    finally:
        set_workspace_budget(previous)


# OpenBLAS's idle workers spin, busy and without yielding, for 2**OPENBLAS_THREAD_TIMEOUT
# cycles after each BLAS call: 2**28 by default, about 0.1 s. Numba's worker then shares a core
# with a spinner in every parallel kernel that follows a GEMM, so on two cores MobileNet's
# depthwise layers ran 1.15-1.54x slower than with the workers asleep (measured here). 2**16
# cycles, tens of microseconds, still keeps the workers awake between a layer's GEMMs.
OPENBLAS_SPIN = 16


@contextlib.contextmanager
def _brief_openblas_spin():
    """Let an OpenBLAS that loads inside this block spin ``2**OPENBLAS_SPIN`` cycles when idle.

    OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` once, when it loads; the variable is set only
    for that and restored afterwards, and a value the user set wins. Yields whether fastconv
    set it."""
    ours = not os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    if ours:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(OPENBLAS_SPIN)
    try:
        yield ours
    finally:
        if ours:
            del os.environ["OPENBLAS_THREAD_TIMEOUT"]


def _load_numpy() -> str:
    """Import numpy (and its OpenBLAS) inside :func:`_brief_openblas_spin` unless it is
    already loaded; returns who chose the spin of numpy's OpenBLAS workers (see
    :data:`OPENBLAS_IDLE_SPIN`)."""
    if "numpy" in sys.modules:
        return "environment" if os.environ.get("OPENBLAS_THREAD_TIMEOUT") else "numpy first"
    with _brief_openblas_spin() as ours:
        import numpy  # noqa: F401

    return "fastconv" if ours else "environment"


#: Who set how long numpy's OpenBLAS workers spin when idle: ``"fastconv"`` (2**OPENBLAS_SPIN
#: cycles), ``"environment"`` (the user's ``OPENBLAS_THREAD_TIMEOUT``), or ``"numpy first"``
#: (numpy was imported before fastconv, with OpenBLAS's default of about 0.1 s).
OPENBLAS_IDLE_SPIN: str = _load_numpy()

_numba_configured = False


def _configure_numba():
    global _numba_configured
    import numba

    if _numba_configured:
        return numba
    _numba_configured = True
    requested = os.environ.get("NUMBA_THREADING_LAYER")
    if not requested:
        # the default may pick "workqueue", which aborts when two Python threads enter a
        # parallel region together; "threadsafe" means TBB, else OpenMP.
        numba.config.THREADING_LAYER = "threadsafe"
    if requested in (None, "", "tbb", "default", "safe", "threadsafe", "forksafe"):
        _load_pip_tbb()
    _start_threads_politely(numba)
    return numba


def _load_pip_tbb() -> None:
    """Load the TBB library of the ``tbb`` wheel, if installed, so that Numba finds it.

    Numba prefers TBB: a parallel call starts on the calling thread at once and the workers
    join as they wake, where OpenMP's passive pool makes every call wait for its sleeping
    worker (``Machine.wake_us``). But pip puts ``libtbb.so.12`` in ``<prefix>/lib``, which the
    dynamic loader does not search (numba/numba#6108); loaded here by its path, Numba's later
    load by name finds it in the process."""
    import ctypes

    for library in pip_tbb_libraries():
        try:
            ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
            return
        except OSError:  # a broken or foreign build: Numba falls back to OpenMP
            continue


def pip_tbb_libraries() -> list[str]:
    """The ``tbb`` wheel's ``libtbb.so.12`` in this environment and in the user's site, where
    they exist."""
    import site

    paths = (os.path.join(prefix, "lib", "libtbb.so.12")
             for prefix in (sys.prefix, site.getuserbase()))
    return [path for path in paths if os.path.exists(path)]


def numba_threading_layer() -> str:
    """The threading layer Numba's parallel kernels run on: ``"tbb"``, ``"omp"``, or the one
    ``NUMBA_THREADING_LAYER`` forced."""
    global _numba_layer
    if _numba_layer is None:
        _numba_layer = _configure_numba().threading_layer()
    return _numba_layer


_numba_layer: str | None = None


@contextlib.contextmanager
def _polite_openmp():
    """Load an OpenMP runtime with the passive wait policy, bound to its own libgomp.

    GNU OpenMP threads spin after a parallel region; on a small machine they then take the
    cores from OpenBLAS's threads in the GEMM that follows (measured here: MobileNet v1, whose
    depthwise and pointwise layers alternate, took 112 ms instead of 19 ms). libgomp reads the
    policy once, when it loads, so it is set only while a library loads and is restored
    afterwards; a policy the user set wins. PyTorch ships its own libgomp and loads it into
    the global symbol scope: RTLD_DEEPBIND makes what loads here bind to its own instead of
    that copy, whose threads are already started and spinning.
    """
    polite = not (os.environ.get("OMP_WAIT_POLICY") or os.environ.get("GOMP_SPINCOUNT"))
    if polite:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | getattr(os, "RTLD_DEEPBIND", 0))
    try:
        yield
    finally:
        sys.setdlopenflags(flags)
        if polite:
            del os.environ["OMP_WAIT_POLICY"]


def _start_threads_politely(numba):
    """Start Numba's thread pool inside :func:`_polite_openmp`."""
    from numba.np.ufunc import parallel

    with _polite_openmp():
        parallel._launch_threads()


def import_extension(name: str):
    """Import a compiled (OpenMP) extension module inside :func:`_polite_openmp`, and inside
    :func:`_brief_openblas_spin` for the BLAS it links (scipy's OpenBLAS, if not yet loaded)."""
    import importlib

    with _polite_openmp(), _brief_openblas_spin():
        return importlib.import_module(name)


def get_num_threads() -> int:
    """Threads used by the Numba kernels."""
    return _configure_numba().get_num_threads()


def pool_size() -> int:
    """Threads in Numba's pool (``NUMBA_NUM_THREADS``), the most a kernel can use; cheaper to
    read than :func:`get_num_threads`, which asks Numba's compiled runtime."""
    return _configure_numba().config.NUMBA_NUM_THREADS


def set_num_threads(n: int) -> None:
    """Set the threads used by the Numba kernels (at most ``NUMBA_NUM_THREADS``)."""
    _configure_numba().set_num_threads(int(n))


# Below this many elements read and written, a memory-bound kernel runs on the calling thread,
# by thread pool. OpenMP's pool sleeps between calls (see _polite_openmp) and a parallel call
# waits tens of microseconds for it here, more than a second thread saves on a 14x14 or 28x28
# depthwise layer. TBB's calling thread starts at once; its workers join as they wake, and a
# second thread paid off from about 50000 elements in a sweep of depthwise layers here.
_serial_env = os.environ.get("FASTCONV_SERIAL_BELOW")
SERIAL_BELOW: dict[str, int] = {
    "omp": int(_serial_env or 450_000),  # the Cython kernels, and Numba's without TBB
    "tbb": int(_serial_env or 50_000),
}


def run_sized(elements: int, kernel, *args):
    """``kernel(*args)``, on the calling thread alone if the call reads and writes fewer than
    :data:`SERIAL_BELOW` array elements (for Numba's threading layer), else on every thread.

    Numba's thread count is per calling thread, so this is safe with several Python threads.
    """
    layer = numba_threading_layer()
    if elements >= SERIAL_BELOW.get(layer, SERIAL_BELOW["omp"]):
        return kernel(*args)
    numba = _configure_numba()
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(previous)


def jit(parallel: bool = False, inline: bool = False):
    """The decorator every Numba kernel is compiled with.

    Parameters
    ----------
    parallel : bool
        Compile ``prange`` loops as parallel regions (unless ``FASTCONV_PARALLEL=0``).
        A parallel kernel must never call BLAS: that would nest two thread pools.
    inline : bool
        Inline the function into its callers (Numba IR inlining). For helpers with a loop
        that run once per row or plane: LLVM does not inline a separately compiled Numba
        function, and on 14x14 layers a call per row cost im2col more than its copies.
    """
    numba = _configure_numba()
    return numba.njit(
        inline="always" if inline else "never",
        parallel=parallel and PARALLEL,
        cache=CACHE,
        fastmath=FASTMATH,
        error_model="numpy",  # no ZeroDivisionError checks in the inner loops
        nogil=True,
        boundscheck=False,
    )
