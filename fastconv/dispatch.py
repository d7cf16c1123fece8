"""Which kernel runs a call: the backends' tables, and the ``"auto"`` choice.

Each backend's table (:class:`fastconv.kernels.algorithms.Backend`) says which algorithms it
offers; :func:`select` resolves a call to a :class:`Kernel`. Kernel modules are imported on
first use, so ``import fastconv`` does not pay for compiling anything.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Callable, NamedTuple

from .kernels import tuning
from .kernels.tiling import winograd_tiles
from .spec import ConvSpec

BACKENDS = ("numba", "numpy", "cython", "cuda")

#: Every algorithm some backend offers (kernels.algorithms.ALGORITHMS, written out so that
#: importing fastconv reads no backend's table).
ALGORITHMS = ("direct", "im2col", "depthwise", "pointwise", "winograd", "reference")

# the backends' tables (kernels.algorithms.Backend), read on first use
_TABLES: dict = {}


def _table(backend: str):
    if not _TABLES:
        from .kernels.cuda import BACKEND as cuda
        from .kernels.cython import BACKEND as cython
        from .kernels.numba import BACKEND as numba
        from .kernels.reference import BACKEND as numpy

        _TABLES.update((b.name, b) for b in (numba, numpy, cython, cuda))
    return _TABLES[backend]

_NOT_BUILT: dict[str, str] = {}

_CYTHON_MISSING = (
    "the Cython AOT kernels are not built in this installation ({error}); they are compiled "
    "by `pip install .` from a source checkout when a C compiler is present (gcc, with OpenMP "
    "for parallel kernels)"
)

class Kernel(NamedTuple):
    """What :func:`select` resolves a call to: the backend and algorithm, the kernel module,
    whether it skips zero padding for this spec, and the backend's bias gradient."""

    backend: str
    algorithm: str
    module: ModuleType
    skips_padding: bool
    backward_bias: Callable


def available_backends() -> list[str]:
    """Backends that can run in this installation."""
    return [b for b in BACKENDS if _missing(b) is None]


def _missing(backend: str) -> str | None:
    """Why a backend cannot run here, or None."""
    if backend in _NOT_BUILT:
        return _NOT_BUILT[backend]
    if backend == "cython":
        try:
            load("cython", "direct")
        except ImportError as exc:
            return _CYTHON_MISSING.format(error=exc)
    if backend == "cuda":
        return _cuda_missing()
    return None


def _cuda_missing() -> str | None:
    """Why the CUDA backend cannot run: numba-cuda missing, or no device (nor simulator)."""
    try:
        cuda = importlib.import_module("numba.cuda")
    except ImportError as exc:
        return (f"numba.cuda cannot be imported ({exc}): install the cuda extra, "
                "pip install 'fastconv[cuda]'")
    if not cuda.is_available():
        return ("numba.cuda finds no CUDA device (no GPU or driver here); to run the kernels "
                "on the CPU, set NUMBA_ENABLE_CUDASIM=1 before numba is imported")
    return None


def algorithms(backend: str) -> list[str]:
    """Algorithms a backend provides."""
    return list(_table(backend).modules) if backend in BACKENDS else []


def resolve_backend(backend: str) -> str:
    """The backend ``backend`` names ("auto" is Numba); ValueError when unknown or unbuilt."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, but got {type(backend).__name__}")
    if backend == "auto":
        return "numba"
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown backend {backend!r}; expected one of {['auto', *BACKENDS]}"
        )
    missing = _missing(backend)
    if missing is not None:
        raise ValueError(
            f"backend {backend!r} is not built: {missing} "
            f"(available backends: {available_backends()})"
        )
    return backend


def auto_algorithm(spec: ConvSpec, backend: str, n_images: int = 1) -> str:
    """The algorithm ``"auto"`` picks for a spec on a backend, for a batch of ``n_images``."""
    if backend == "numpy":
        return "reference"
    if spec.kind == "dw":
        return "depthwise"
    if spec.is_pointwise:
        return "pointwise"
    if "winograd" in _table(backend).modules and winograd_pays(spec, n_images):
        return "winograd"
    return "im2col"


def winograd_pays(spec: ConvSpec, n_images: int) -> bool:
    """Whether Winograd F(2x2, 3x3) beats im2col on a dense 3x3 stride-1 layer.

    Its 16 GEMMs are (C_out x C_in) @ (C_in x tiles), one tile per 2x2 outputs of the batch:
    they need enough input channels to run near BLAS speed, and enough tiles to pay back the
    filter transform (16 values per filter, every call); the thresholds are
    ``tuning.WINOGRAD_MIN_CHANNELS`` and ``tuning.WINOGRAD_TILES_PER_CHANNEL``.
    """
    if (spec.groups != 1 or spec.kernel_size != (3, 3) or spec.stride != (1, 1)
            or spec.dilation != (1, 1)):
        return False
    tiles_h, tiles_w = winograd_tiles(spec)
    return (spec.in_channels >= tuning.WINOGRAD_MIN_CHANNELS and n_images * tiles_h * tiles_w
            >= tuning.WINOGRAD_TILES_PER_CHANNEL * spec.in_channels)


def select(spec: ConvSpec, algorithm: str = "auto", backend: str = "auto",
           n_images: int = 1) -> Kernel:
    """Resolve ``algorithm`` and ``backend`` for a spec.

    Parameters
    ----------
    spec : ConvSpec
    algorithm : str
        ``"auto"`` or a name from :data:`ALGORITHMS`.
    backend : str
        ``"auto"`` or a name from :data:`BACKENDS`.
    n_images : int
        The batch size, which ``"auto"`` may weigh.

    Returns
    -------
    Kernel

    Raises
    ------
    ValueError
        Unknown or unbuilt backend, unknown algorithm, or an algorithm that cannot serve
        this spec; the message says why.
    """
    backend = resolve_backend(backend)
    if not isinstance(algorithm, str):
        raise TypeError(f"algorithm must be a str, but got {type(algorithm).__name__}")
    return _select_algorithm(spec, str(algorithm), backend, int(n_images))


@functools.lru_cache(maxsize=1024)
def _select_algorithm(spec: ConvSpec, algorithm: str, backend: str, n_images: int) -> Kernel:
    """Once per layer: a network resolves the same few specs every pass (a refusal raises,
    and is not cached)."""
    if algorithm == "auto":
        algorithm = auto_algorithm(spec, backend, n_images)
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"unknown algorithm {algorithm!r}; expected one of {['auto', *ALGORITHMS]}"
        )
    table = _table(backend)
    if algorithm not in table.modules:
        raise ValueError(
            f"algorithm {algorithm!r} is not available on backend {backend!r} "
            f"(it has {algorithms(backend)})"
        )
    from .kernels.algorithms import supports

    reason = supports(algorithm, spec)
    if reason is not None:
        raise ValueError(
            f"algorithm {algorithm!r} cannot serve a convolution with weight of size "
            f"{list(spec.weight_shape)} and groups={spec.groups}: {reason}"
        )
    bias_module = _import(backend, f"{table.package}.{table.bias_gradient}")
    return Kernel(backend, algorithm, load(backend, algorithm), table.skips(algorithm, spec),
                  bias_module.backward_bias)


def load(backend: str, algorithm: str) -> ModuleType:
    """Import the module that implements ``algorithm`` on ``backend``."""
    return _import(backend, _table(backend).module_name(algorithm))


@functools.lru_cache(maxsize=None)
def _import(backend: str, name: str) -> ModuleType:
    """Once per module: a network calls :func:`load` for every layer."""
    if backend == "cython":  # OpenMP inside: loaded the way fastconv.runtime explains
        from . import runtime

        return runtime.import_extension(name)
    return importlib.import_module(name)
