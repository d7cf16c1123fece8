"""Registry of (backend, algorithm) -> kernel module, and the ``"auto"`` choice.

A kernel module exposes ``supports(spec) -> reason or None``,
``forward(x, weight, bias, spec)`` and ``skips_padding(spec)`` (True when zero padding is never
multiplied, so the caller must materialise it for a non-finite weight: Inf * 0 is NaN). Modules are
imported on first use, so ``import fastconv`` does not pay for compiling anything.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from .kernels.tiling import winograd_tiles
from .spec import ConvSpec

BACKENDS = ("numba", "numpy", "cython", "cuda")

_MODULES: dict[str, dict[str, str]] = {
    "numba": {
        "direct": "fastconv.kernels.numba.direct",
        "im2col": "fastconv.kernels.numba.im2col",
        "depthwise": "fastconv.kernels.numba.depthwise",
        "pointwise": "fastconv.kernels.numba.pointwise",
        "winograd": "fastconv.kernels.numba.winograd",
    },
    "numpy": {"reference": "fastconv.reference"},
    "cython": {
        "direct": "fastconv.kernels.cython.direct",
        "im2col": "fastconv.kernels.cython.im2col",
        "depthwise": "fastconv.kernels.cython.depthwise",
        "pointwise": "fastconv.kernels.cython.pointwise",
    },
    "cuda": {
        "direct": "fastconv.kernels.cuda.direct",
        "im2col": "fastconv.kernels.cuda.im2col",
        "depthwise": "fastconv.kernels.cuda.depthwise",
        "pointwise": "fastconv.kernels.cuda.pointwise",
    },
}

_NOT_BUILT: dict[str, str] = {}

_CYTHON_MISSING = (
    "the Cython AOT kernels are not built in this installation ({error}); they are compiled "
    "by `pip install .` from a source checkout when a C compiler is present (gcc, with OpenMP "
    "for parallel kernels)"
)

ALGORITHMS = tuple(dict.fromkeys(a for table in _MODULES.values() for a in table))


def available_backends() -> list[str]:
    """Backends that can run in this installation."""
    return [b for b in BACKENDS if b in _MODULES and _missing(b) is None]


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
    return list(_MODULES.get(backend, {}))


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
    if "winograd" in _MODULES[backend] and winograd_pays(spec, n_images):
        return "winograd"
    return "im2col"


def winograd_pays(spec: ConvSpec, n_images: int) -> bool:
    """Whether Winograd F(2x2, 3x3) beats im2col on a dense 3x3 stride-1 layer.

    Its 16 GEMMs are (C_out x C_in) @ (C_in x tiles), one tile per 2x2 outputs of the batch:
    they need enough input channels to run near BLAS speed, and enough tiles to pay back the
    filter transform (16 values per filter, every call). Measured on MobileNet's
    full-convolution layers at batch 1 and 8: Winograd won with at least 96 input channels
    and half as many tiles as input channels; with fewer channels, or at 14x14 and 7x7 with
    one image, im2col won.
    """
    if (spec.groups != 1 or spec.kernel_size != (3, 3) or spec.stride != (1, 1)
            or spec.dilation != (1, 1)):
        return False
    tiles_h, tiles_w = winograd_tiles(spec)
    return spec.in_channels >= 96 and 2 * n_images * tiles_h * tiles_w >= spec.in_channels


def select(spec: ConvSpec, algorithm: str = "auto", backend: str = "auto", n_images: int = 1):
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
    (backend, algorithm, module)

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
def _select_algorithm(spec: ConvSpec, algorithm: str, backend: str, n_images: int):
    """Once per layer: a network resolves the same few specs every pass (a refusal raises,
    and is not cached)."""
    if algorithm == "auto":
        algorithm = auto_algorithm(spec, backend, n_images)
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"unknown algorithm {algorithm!r}; expected one of {['auto', *ALGORITHMS]}"
        )
    if algorithm not in _MODULES[backend]:
        raise ValueError(
            f"algorithm {algorithm!r} is not available on backend {backend!r} "
            f"(it has {algorithms(backend)})"
        )
    module = load(backend, algorithm)
    reason = module.supports(spec)
    if reason is not None:
        raise ValueError(
            f"algorithm {algorithm!r} cannot serve a convolution with weight of size "
            f"{list(spec.weight_shape)} and groups={spec.groups}: {reason}"
        )
    return backend, algorithm, module


def load(backend: str, algorithm: str) -> ModuleType:
    """Import the module that implements ``algorithm`` on ``backend``."""
    return _import(backend, _MODULES[backend][algorithm])


@functools.lru_cache(maxsize=None)
def _import(backend: str, name: str) -> ModuleType:
    """Once per module: a network calls :func:`load` for every layer."""
    if backend == "cython":  # OpenMP inside: loaded the way fastconv.config explains
        from . import config

        return config.import_extension(name)
    return importlib.import_module(name)
