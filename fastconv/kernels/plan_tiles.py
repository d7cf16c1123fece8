"""How the network plan's register tiles cut a GEMM, for every backend (pure Python).

The plan's convolutions are GEMMs of register tiles on NHWC activations (``MR`` pixels by
``NR`` channels each), whose weights are packed once into panels of ``NR`` channels. The tile
shapes depend on the width of the vector registers the kernels were compiled for: the CPU's,
as LLVM sees it, for the Numba kernels; the compiler's target for the Cython ones. A
:class:`TileGeometry` answers for one width, so that the planner asks its executor and the
executors share the packing and the schedule.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from . import tuning

# G of Winograd F(2x2, 3x3): the filter transform, U = G g G^T
WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def widest_vectors(features) -> int:
    """The widest vector registers, in bits, that a CPU with these features (names as LLVM
    and ``/proc/cpuinfo`` spell them: ``avx512f``, ``avx2``, ...) runs: 512, 256 or 128."""
    features = set(features)
    if "avx512f" in features:
        return 512
    if "avx2" in features or "avx" in features:
        return 256
    return 128


def host_vector_bits() -> int:
    """This CPU's widest vector registers (:func:`widest_vectors`), from the flags in
    ``/proc/cpuinfo`` (what the CPU and the kernel both support), else as LLVM sees them."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return widest_vectors(line.partition(":")[2].split())
    except OSError:
        pass
    from llvmlite import binding

    return widest_vectors(name for name, on in binding.get_host_cpu_features().items() if on)


def l2_bytes() -> int:
    """This core's L2 cache, from sysfs (``tuning.L2_BYTES`` where it does not say)."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as fh:
            text = fh.read().strip()
        return int(text[:-1]) << {"K": 10, "M": 20}[text[-1]]
    except (OSError, ValueError, KeyError, IndexError):
        return tuning.L2_BYTES


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A C-contiguous copy of ``array`` whose data starts on an ``alignment``-byte boundary
    (a cache line): the tiles' vector loads of packed weights then never straddle two
    lines."""
    out = aligned_empty(array.shape, array.dtype, alignment)
    out[...] = array
    return out


def aligned_empty(shape, dtype, alignment: int = 64) -> np.ndarray:
    """:func:`aligned`'s memory, uninitialised."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    flat = np.empty(size + alignment, np.uint8)
    start = -flat.ctypes.data % alignment
    return flat[start:start + size].view(dtype).reshape(shape)


#: How a GEMM's tiles are cut (:meth:`TileGeometry.schedule`), by the names the kernels' records
#: (``network.step_args``) give them.
Schedule = namedtuple("Schedule", "tile_groups unit_groups block chunk")


class TileGeometry:
    """Tile shapes, packing and scheduling for vector registers of ``vector_bits`` (512,
    256 or 128) and a core's L2 cache of ``l2`` bytes (this machine's, :func:`l2_bytes`, when
    None). Nothing here asks the host otherwise: tests pass each width's values."""

    def __init__(self, vector_bits: int, l2: int | None = None):
        if vector_bits not in tuning.GEMM_TILE:
            raise ValueError(f"vector_bits must be one of {sorted(tuning.GEMM_TILE)}, but got "
                             f"{vector_bits!r}")
        if l2 is not None and (not isinstance(l2, int) or l2 <= 0):
            raise ValueError(f"l2 must be a positive number of bytes, but got {l2!r}")
        self.vector_bits = vector_bits
        self.l2 = l2_bytes() if l2 is None else l2

    def __repr__(self):
        return f"TileGeometry(vector_bits={self.vector_bits}, l2={self.l2})"

    def lanes(self, dtype) -> int:
        return self.vector_bits // (8 * np.dtype(dtype).itemsize)

    def tile_shape(self, dtype, wide: bool = False) -> tuple[int, int]:
        """``(MR, NR)``, the pixels and channels of one tile (``tuning.GEMM_TILE``, or
        ``tuning.GEMM_TILE_WIDE``)."""
        table = tuning.GEMM_TILE_WIDE if wide else tuning.GEMM_TILE
        return table[self.vector_bits][np.dtype(dtype).name]

    def depthwise_block(self, dtype) -> int:
        """Channels per call of the depthwise row (``tuning.DEPTHWISE_VECTORS`` vectors)."""
        return tuning.DEPTHWISE_VECTORS[self.vector_bits] * self.lanes(dtype)

    def wide(self, pixels: int, k: int, out_per_group: int, groups: int, dtype,
             threads: int) -> bool:
        """Whether a layer takes the wide tile (``tuning.GEMM_TILE_WIDE``) rather than the
        narrow.

        The narrow tile reads each input value once per narrow panel, the wide one half as
        often but with half the pixels per tile. The wide tile serves a layer with more
        channels than one narrow panel when its reduction is short (``k``, taps times input
        channels, at most ``tuning.WIDE_BELOW``), or its outputs are few (at most
        ``tuning.WIDE_BELOW`` channels), or a thread's share of the input does not stay in the
        L2 cache.
        """
        if out_per_group <= self.tile_shape(dtype)[1]:
            return False
        share = -(-pixels // max(1, threads)) * k * groups * np.dtype(dtype).itemsize
        return (k <= tuning.WIDE_BELOW or out_per_group <= tuning.WIDE_BELOW
                or share > self.l2 // 2)

    def schedule(self, pixels: int, k: int, out_per_group: int, groups: int, dtype,
                 threads: int, is_wide: bool, c_in: int | None = None) -> Schedule:
        """A :class:`Schedule` ``(tile_groups, unit_groups, block, chunk)`` for a layer of
        ``pixels`` outputs,
        ``k`` inputs per output (taps times ``c_in`` channels) and ``out_per_group`` outputs per
        group on ``threads``.

        The grid splits pixels and panels so that the largest task is smallest, or nearly
        (pixels first: then each task reads its share of the input only). Within a task the
        tiles come in blocks, each meeting every panel of the task: the block whose memory
        traffic is least, counting a block's input once if it fits half of the core's L2
        cache (else once per panel) and the task's weights once if they fit (else once per
        block).
        """
        mr, nr = self.tile_shape(dtype, is_wide)
        size = np.dtype(dtype).itemsize
        tiles = -(-pixels // mr)
        units = groups * -(-out_per_group // nr)
        tasks = max(1, min(threads, tiles * units))
        grids = [(-(-tiles // tg) * -(-units // (tasks // tg)), tg)
                 for tg in range(tasks, 0, -1) if tasks % tg == 0]
        least = min(cost for cost, _ in grids)
        # the most pixel groups among the grids within tuning.GRID_SLACK of the least work:
        # splitting the panels instead makes every task read the whole input
        tile_groups = max(tg for cost, tg in grids if cost <= least * (1 + tuning.GRID_SLACK))
        unit_groups = tasks // tile_groups
        my_tiles, my_units = -(-tiles // tile_groups), -(-units // unit_groups)
        cache = self.l2 // 2
        weights = my_units * k * nr * size

        def traffic(block):
            a = block * mr * k * size
            inputs = my_tiles * mr * k * size * (1 if a <= cache else my_units)
            return inputs + weights * (1 if weights <= cache else -(-my_tiles // block))

        blocks = sorted({my_tiles, *(max(1, cache // (mr * k * size) >> s) for s in range(4))})
        block = min(blocks, key=lambda b: (traffic(b), -b))
        c_in = k if c_in is None else c_in
        chunk = c_in
        if k * nr * size > tuning.GEMM_CHUNK_ABOVE:  # a panel larger than the caches hold
            chunk = max(1, tuning.GEMM_CHUNK_BYTES // (nr * size))
            chunk = -(-c_in // -(-c_in // chunk))  # equal chunks
        return Schedule(tile_groups, unit_groups, block, chunk)

    def pack(self, weight, groups: int, dtype, is_wide: bool) -> tuple[np.ndarray, int]:
        """Weights (O, I/g, kH, kW) as panels ``[g][panel][tap][c][NR]`` (zero past O/g),
        flat, NR that of the tile (wide or narrow); returns them and one panel's length."""
        _, nr = self.tile_shape(dtype, is_wide)
        out_channels, c_in, kh, kw = weight.shape
        og = out_channels // groups
        whole, rest = divmod(og, nr)
        source = weight.reshape(groups, og, c_in, kh * kw)
        # one strided copy into the panels: a training step re-packs every layer's weights
        w = aligned_empty((groups, whole + (rest > 0), kh * kw, c_in, nr), dtype)
        w[:, :whole] = source[:, :whole * nr].reshape(groups, whole, nr, c_in, kh * kw
                                                      ).transpose(0, 1, 4, 3, 2)
        if rest:
            w[:, whole, ..., rest:] = 0
            w[:, whole, ..., :rest] = source[:, whole * nr:].transpose(0, 3, 2, 1)
        return w.reshape(-1), kh * kw * c_in * nr

    def winograd_filters(self, weight, dtype, is_wide: bool) -> tuple[np.ndarray, int, int]:
        """Filters (O, C, 3, 3) transformed and packed as 16 GEMMs' panels
        ``[xi][panel][C][NR]``; returns them, a panel's length and the panels per
        position."""
        _, nr = self.tile_shape(dtype, is_wide)
        out_channels, c_in = weight.shape[:2]
        panels = -(-out_channels // nr)
        w = weight.reshape(out_channels, c_in, 9).astype(dtype, copy=False)
        if out_channels % nr:  # zero filters past O
            w = np.concatenate([w, np.zeros((panels * nr - out_channels, c_in, 9), dtype)])
        # G w G^T of every filter as one product, kron(G, G) (16, 9) by the taps (9, ...)
        # already in the panels' order [panel][C][NR]
        taps = w.reshape(panels, nr, c_in, 9).transpose(3, 0, 2, 1).reshape(9, -1)
        u = aligned_empty((16, panels * c_in * nr), dtype)
        np.matmul(np.kron(WINOGRAD_G, WINOGRAD_G).astype(dtype), taps, out=u)
        return u.reshape(-1), c_in * nr, panels
