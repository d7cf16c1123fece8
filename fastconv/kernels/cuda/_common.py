"""What the CUDA kernels share: device arrays, a shared-memory tiled GEMM, launch sizes.

Imported only when ``backend="cuda"`` is asked for (it imports ``numba.cuda``). Kernels index
device arrays of any strides, so views of torch or CuPy tensors run without copies.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..tuning import CUDA_GEMM_TILE as TILE
from ..tuning import CUDA_THREADS as THREADS


def simulated() -> bool:
    """True under ``NUMBA_ENABLE_CUDASIM=1`` (numba-cuda's simulator, on the CPU)."""
    from numba.cuda import config as cuda_config

    return bool(getattr(cuda_config, "ENABLE_CUDASIM", False))


def is_device_array(obj) -> bool:
    """A numba device array or any object exporting ``__cuda_array_interface__``."""
    if isinstance(obj, np.ndarray):
        return False
    if hasattr(obj, "__cuda_array_interface__"):
        return True
    return type(obj).__name__ in ("DeviceNDArray", "FakeCUDAArray")


class _HostInterface:
    """Under the simulator "device" memory is host memory: a CUDA array interface is then an
    array interface with the same fields."""

    def __init__(self, interface):
        self.__array_interface__ = dict(interface, version=3)


def as_device(obj):
    """A numba device array viewing ``obj``'s memory (no copy)."""
    if type(obj).__name__ in ("DeviceNDArray", "FakeCUDAArray"):
        return obj
    interface = obj.__cuda_array_interface__
    if simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.asarray(_HostInterface(interface)))
    return cuda.as_cuda_array(obj)


def to_device(array):
    """Host arrays are copied to the device; device arrays are used where they are."""
    if array is None or is_device_array(array):
        return array
    return cuda.to_device(np.ascontiguousarray(array))


def blocks(n: int) -> int:
    return max(1, math.ceil(n / THREADS))


@cuda.jit
def _gemm_kernel(a, b, c, trans_a, trans_b, beta, zero):
    """``C = op(A) @ op(B) + beta * C`` for 2-D arrays of any strides, in TILE x TILE tiles:
    each block stages a tile of op(A) and of op(B) in shared memory per step along K."""
    sa = cuda.shared.array((TILE, TILE), dtype=c.dtype)
    sb = cuda.shared.array((TILE, TILE), dtype=c.dtype)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    m, n = c.shape
    k_size = a.shape[0] if trans_a else a.shape[1]
    acc = zero  # the arrays' dtype: float32 stays float32 on the device
    for k0 in range(0, k_size, TILE):
        ka = k0 + tx  # this thread loads op(A)[row, ka] and op(B)[kb, col]
        kb = k0 + ty
        if row < m and ka < k_size:
            sa[ty, tx] = a[ka, row] if trans_a else a[row, ka]
        else:
            sa[ty, tx] = 0.0
        if kb < k_size and col < n:
            sb[ty, tx] = b[col, kb] if trans_b else b[kb, col]
        else:
            sb[ty, tx] = 0.0
        cuda.syncthreads()
        for k in range(TILE):
            acc += sa[ty, k] * sb[k, tx]
        cuda.syncthreads()
    if row < m and col < n:
        c[row, col] = acc + beta * c[row, col] if beta != 0 else acc


def gemm(a, b, c, trans_a=False, trans_b=False, beta=0.0):
    """Row-major ``C = op(A) @ op(B) + beta C`` on device arrays (C is written in place)."""
    m, n = c.shape
    grid = (max(1, math.ceil(n / TILE)), max(1, math.ceil(m / TILE)))
    _gemm_kernel[grid, (TILE, TILE)](a, b, c, trans_a, trans_b, c.dtype.type(beta),
                                     c.dtype.type(0))


@cuda.jit
def _sum_planes(grad_output, out, zero):
    c = cuda.grid(1)
    if c < out.shape[0]:
        acc = zero
        for n in range(grad_output.shape[0]):
            for h in range(grad_output.shape[2]):
                for w in range(grad_output.shape[3]):
                    acc += grad_output[n, c, h, w]
        out[c] = acc


@cuda.jit
def _add_bias(out, bias):
    i = cuda.grid(1)
    total = out.shape[0] * out.shape[1] * out.shape[2] * out.shape[3]
    if i < total:
        w = i % out.shape[3]
        h = (i // out.shape[3]) % out.shape[2]
        c = (i // (out.shape[3] * out.shape[2])) % out.shape[1]
        n = i // (out.shape[3] * out.shape[2] * out.shape[1])
        out[n, c, h, w] += bias[c]


def add_bias(out, bias):
    """``out[n, c] += bias[c]`` on the device."""
    total = int(np.prod(out.shape))
    if total:
        _add_bias[blocks(total), THREADS](out, to_device(bias))


def backward_bias(grad_output):
    """Gradient of the bias: ``grad_output`` summed over images and pixels, per channel."""
    dy = to_device(grad_output)
    out = cuda.device_array(dy.shape[1], dy.dtype)
    _sum_planes[blocks(dy.shape[1]), THREADS](dy, out, dy.dtype.type(0))
    return out
