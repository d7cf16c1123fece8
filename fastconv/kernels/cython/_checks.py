"""Shape checks the Cython wrappers run before they drop the GIL.

The public API validates every call; these make the compiled kernels safe to call on their own
too: no array whose shape disagrees with the spec reaches unchecked memory access.
"""

from __future__ import annotations

import numpy as np

from ...spec import ConvSpec


def check(name: str, array, shape, dtype=None) -> np.ndarray:
    """``array`` must be a C-contiguous ndarray of ``shape`` (and ``dtype``)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, not {type(array).__name__}")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"expected {name} of size {list(shape)}, but got {list(array.shape)}")
    if dtype is not None and array.dtype != dtype:
        raise TypeError(f"expected {name} of dtype {np.dtype(dtype)}, but got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return array


def _batch(array) -> int:
    return array.shape[0] if isinstance(array, np.ndarray) and array.ndim == 4 else -1


def forward_args(x, weight, bias, spec: ConvSpec):
    check("x", x, spec.input_shape(_batch(x)))
    check("weight", weight, spec.weight_shape, x.dtype)
    if bias is not None:
        check("bias", bias, (spec.out_channels,), x.dtype)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected float32 or float64, but got {x.dtype}")


def backward_args(grad_output, spec: ConvSpec, x=None, weight=None):
    n_images = _batch(grad_output)
    check("grad_output", grad_output, spec.output_shape(n_images))
    if grad_output.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected float32 or float64, but got {grad_output.dtype}")
    if x is not None:
        check("x", x, spec.input_shape(n_images), grad_output.dtype)
    if weight is not None:
        check("weight", weight, spec.weight_shape, grad_output.dtype)
    return n_images


def threads(elements: int | None = None) -> int:
    """OpenMP threads for a call; one (the calling thread) for a memory-bound call that reads
    and writes fewer than OpenMP's ``config.SERIAL_BELOW`` elements, as the Numba kernels do
    on OpenMP."""
    from ... import config

    if elements is not None and elements < config.SERIAL_BELOW["omp"]:
        return 1
    return config.get_num_threads()
