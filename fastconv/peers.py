"""The libraries we measure against, each optional: PyTorch, and a bare BLAS GEMM.

Every factory takes the layer and its arrays and returns a zero-argument callable (or None when
the peer is not installed), so the timing harness can interleave it with fastconv's calls.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .spec import ConvSpec


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_conv2d(spec: ConvSpec, x: np.ndarray, weight: np.ndarray, bias=None,
                 threads: int | None = None) -> Callable[[], object] | None:
    """``torch.nn.functional.conv2d`` on CPU tensors sharing the arrays' memory."""
    if not torch_available():
        return None
    import torch
    import torch.nn.functional as F

    if threads is not None:
        torch.set_num_threads(threads)
    xt, wt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(weight))
    bt = None if bias is None else torch.from_numpy(np.ascontiguousarray(bias))
    (ph, _), (pw, _) = spec.pads
    padding = spec.padding if isinstance(spec.padding, str) else (ph, pw)

    def run():
        with torch.no_grad():
            return F.conv2d(xt, wt, bt, spec.stride, padding, spec.dilation, spec.groups)

    return run


def gemm_shape(spec: ConvSpec) -> tuple[int, int, int] | None:
    """``(M, K, N)`` of the GEMM an im2col convolution of one image and one group performs."""
    kh, kw = spec.kernel_size
    ho, wo = spec.output_size
    return (spec.out_channels_per_group, spec.in_channels_per_group * kh * kw, ho * wo)


def numpy_gemm(spec: ConvSpec, batch: int, dtype) -> Callable[[], object] | None:
    """A bare ``numpy.matmul`` doing the GEMMs of the layer (one per image and group): the
    floor an im2col or 1x1 convolution cannot beat. None for depthwise layers, whose "GEMM" is
    a dot product of length kH*kW per output and no measure of anything."""
    if spec.kind == "dw":
        return None
    m, k, n = gemm_shape(spec)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((spec.groups, m, k)).astype(dtype)
    b = rng.standard_normal((batch, spec.groups, k, n)).astype(dtype)

    def run():
        return np.matmul(a, b)  # allocates its output, as a convolution does

    return run
