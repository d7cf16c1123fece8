"""Scratch memory for the kernels: one cached buffer per thread and slot.

Allocating a fresh multi-megabyte workspace on every call is not free: the pages are returned
to the OS and faulted back in next time, a page fault per 4 KiB, which on a small layer costs
more than its arithmetic. Each thread therefore keeps its
workspace buffers and hands out views of them. The kernels size their requests to the
workspace budget (:func:`fastconv.config.get_workspace_budget`) by tiling; buffers above
:data:`CACHE_LIMIT` bytes are not kept.
"""

from __future__ import annotations

import threading

import numpy as np

CACHE_LIMIT = 64 << 20
_ALIGN = 64  # a cache line, and an AVX-512 vector

_local = threading.local()


def scratch(shape, dtype, slot: int = 0) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype`` backed by this thread's cache.

    Parameters
    ----------
    shape : tuple of int
    dtype : numpy dtype
    slot : int, default 0
        Distinct slots give distinct buffers, for a kernel that needs two at once.

    Returns
    -------
    ndarray
        Valid until the next call with the same slot on the same thread.

    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buffer = buffers.get(slot)
    if buffer is None or buffer.nbytes < nbytes + _ALIGN:
        buffer = np.empty(nbytes + _ALIGN, np.uint8)
        if buffer.nbytes <= CACHE_LIMIT:
            buffers[slot] = buffer
    offset = -buffer.ctypes.data % _ALIGN
    return buffer[offset:offset + nbytes].view(dtype).reshape(shape)


def release() -> None:
    """Free this thread's cached workspace buffers."""
    _local.buffers = {}
