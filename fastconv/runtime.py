"""Process plumbing: how fastconv loads BLAS, OpenMP and TBB, starts Numba's thread pool,
counts threads, and compiles its Numba kernels.

What a user sets lives in :mod:`fastconv.config`; this module reads those settings and does the
work behind them. It is imported first, by ``fastconv/__init__``: numpy's OpenBLAS reads its
idle-spin setting once, when it loads (see :data:`OPENBLAS_IDLE_SPIN`).
"""

from __future__ import annotations

import contextlib
import os
import sys

from .kernels import tuning

__all__ = ["OPENBLAS_IDLE_SPIN", "get_num_threads", "set_num_threads", "pool_size",
           "numba_threading_layer", "pip_tbb_libraries", "import_extension", "run_sized",
           "jit"]


@contextlib.contextmanager
def _brief_openblas_spin():
    """Let an OpenBLAS that loads inside this block spin ``2**OPENBLAS_SPIN`` cycles when idle.

    OpenBLAS's idle workers spin, busy and without yielding, for 2**OPENBLAS_THREAD_TIMEOUT
    cycles after each BLAS call (about 0.1 s by default); Numba's worker would then share a
    core with a spinner in every parallel kernel that follows a GEMM. OpenBLAS reads the
    variable once, when it loads; it is set only for that and restored afterwards, and a value
    the user set wins. Yields whether fastconv set it."""
    ours = not os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    if ours:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(tuning.OPENBLAS_SPIN)
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


#: Who set how long numpy's OpenBLAS workers spin when idle: ``"fastconv"``
#: (2**tuning.OPENBLAS_SPIN cycles), ``"environment"`` (the user's
#: ``OPENBLAS_THREAD_TIMEOUT``), or ``"numpy first"`` (numpy was imported before fastconv,
#: with OpenBLAS's default of about 0.1 s).
OPENBLAS_IDLE_SPIN: str = _load_numpy()

_numba_configured = False
_numba_layer: str | None = None


def _configure_numba():
    """Numba, with a thread-safe threading layer chosen and its pool started (once)."""
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
    _start_threads_politely()
    return numba


def _load_pip_tbb() -> None:
    """Load the TBB library of the ``tbb`` wheel, if installed, so that Numba finds it.

    Numba prefers TBB: a parallel call starts on the calling thread at once and the workers
    join as they wake, where OpenMP's passive pool makes every call wait for its sleeping
    worker. But pip puts ``libtbb.so.12`` in ``<prefix>/lib``, which the dynamic loader does not
    search; loaded here by its path, Numba's later load by name finds it in the process."""
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


@contextlib.contextmanager
def polite_openmp():
    """Load an OpenMP runtime with the passive wait policy, bound to its own libgomp.

    GNU OpenMP threads spin after a parallel region; on a small machine they then take the
    cores from OpenBLAS's threads in the GEMM that follows. libgomp reads the policy once, when
    it loads, so it is set only while a library loads and is restored afterwards; a policy the
    user set wins. PyTorch ships its own libgomp and loads it into the global symbol scope:
    RTLD_DEEPBIND makes what loads here bind to its own instead of that copy, whose threads are
    already started and spinning.
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


def _start_threads_politely():
    """Start Numba's thread pool inside :func:`polite_openmp`."""
    from numba.np.ufunc import parallel

    with polite_openmp():
        parallel._launch_threads()


def import_extension(name: str):
    """Import a compiled (OpenMP) extension module inside :func:`polite_openmp`, and inside
    :func:`_brief_openblas_spin` for the BLAS it links (scipy's OpenBLAS, if not yet loaded)."""
    import importlib

    with polite_openmp(), _brief_openblas_spin():
        return importlib.import_module(name)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; the CPU count where the platform
    has none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """Threads used by the Numba kernels (on the calling thread)."""
    return _configure_numba().get_num_threads()


def pool_size() -> int:
    """Threads in Numba's pool (``NUMBA_NUM_THREADS``), the most a kernel can use; cheaper to
    read than :func:`get_num_threads`, which asks Numba's compiled runtime."""
    return _configure_numba().config.NUMBA_NUM_THREADS


def set_num_threads(n: int) -> None:
    """Set the threads used by the Numba kernels (at most ``NUMBA_NUM_THREADS``)."""
    _configure_numba().set_num_threads(int(n))


def run_sized(elements: int, kernel, *args):
    """``kernel(*args)``, on the calling thread alone if the call reads and writes fewer than
    ``config.SERIAL_BELOW`` array elements (for Numba's threading layer), else on every thread.

    Numba's thread count is per calling thread, so this is safe with several Python threads.
    """
    from . import config

    layer = numba_threading_layer()
    if elements >= config.SERIAL_BELOW.get(layer, config.SERIAL_BELOW["omp"]):
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
        A parallel kernel never calls a multi-threaded BLAS: that would nest two thread pools.
    inline : bool
        Inline the function into its callers (Numba IR inlining). For helpers with a loop
        that run once per row or plane: LLVM does not inline a separately compiled Numba
        function, and a call per row costs more than a short row's work.
    """
    from . import config

    numba = _configure_numba()
    return numba.njit(
        inline="always" if inline else "never",
        parallel=parallel and config.PARALLEL,
        cache=config.CACHE,
        fastmath=config.FASTMATH,
        error_model="numpy",  # no ZeroDivisionError checks in the inner loops
        nogil=True,
        boundscheck=False,
    )
