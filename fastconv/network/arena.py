"""The arena of a shape plan: its NHWC buffers, placed by liveness in one allocation, and the
steps' arguments bound to it.

:func:`liveness` finds each buffer's first and last step, :func:`place` gives buffers live at
the same step disjoint memory (and says whose border no other buffer touches, to be zeroed
once), :func:`arena_views` makes an arena of a plan and :func:`bound_steps` hands an executor
each step's record with its buffers as views of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .graph import Graph

_ALIGN = 64  # bytes: each buffer starts on a cache line


@dataclass
class Buffer:
    """An NHWC buffer of the arena: (N, H + top + bottom, W + left + right, C)."""

    height: int
    width: int
    channels: int
    border: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # top, bottom, left, right
    offset: int = 0
    first: int = 0  # the step that writes it
    last: int = 0  # the last step that reads it
    count: int | None = None  # a step's scratch: this many rows (one per task), not the batch

    def dims(self, batch: int) -> tuple[int, int, int, int]:
        top, bottom, left, right = self.border
        rows = batch if self.count is None else self.count
        return (rows, self.height + top + bottom, self.width + left + right, self.channels)

    def size(self, batch: int) -> int:
        return math.prod(self.dims(batch))  # Python's integers: no overflow on any shape

    def pixel(self, n, h, w):
        """Element offsets of pixels (n, h, w) (arrays allowed), channel 0."""
        _, rows, cols, channels = self.dims(1)
        top, _, left, _ = self.border
        return ((n * rows + top + h) * cols + left + w) * channels


@dataclass(frozen=True)
class Ref:
    """An argument that is a buffer of the arena, as 4-D, flat, or (``rows``) one row per
    task of a scratch buffer."""

    buffer: int
    flat: bool = False
    rows: bool = False


def arena_views(plan) -> list[tuple[np.ndarray, np.ndarray]]:
    """A new arena for ``plan``: one zeroed allocation, its start on a cache line; per
    buffer, its 4-D view and its flat one. Zeroed, the borders no other buffer overlaps
    stay zero from then on (``ShapePlan.static_borders``)."""
    batch = plan.input_shape[0]
    memory = np.zeros(plan.arena_elements + 16, plan.dtype)
    shift = (-memory.ctypes.data % 64) // plan.dtype.itemsize
    memory = memory[shift:shift + plan.arena_elements]
    views = []
    for b in plan.buffers:
        flat = memory[b.offset:b.offset + b.size(batch)]
        views.append((flat.reshape(b.dims(batch)), flat))
    return views


def bind(views: list, arg):
    """A step's argument, a ``Ref`` as its view of the arena (4-D, flat, or a row per
    task), anything else as it is."""
    if isinstance(arg, Ref):
        four_d, flat = views[arg.buffer]
        if arg.rows:
            return flat.reshape(four_d.shape[0], -1)
        return flat if arg.flat else four_d
    return arg


def bound_steps(plan, views: list):
    """``(step, args)`` for each step of ``plan`` that a call runs, its arguments bound to
    ``views``: a ``zero_border`` step is left out where the buffer's border is static."""
    static = set(plan.static_borders)
    for step in plan.steps:
        if step.kind == "zero_border" and step.args.buf.buffer in static:
            continue
        yield step, [bind(views, a) for a in step.args]


def liveness(graph: Graph, steps: list, buffers: list, buffer_of: dict) -> None:
    """Each buffer's first (writing) and last (reading) step."""
    for b in buffers:
        b.first, b.last = math.inf, -1
    for i, step in enumerate(steps):
        for arg in step.args:
            if isinstance(arg, Ref):
                b = buffers[arg.buffer]
                b.first, b.last = min(b.first, i), max(b.last, i)
    for value in graph.outputs:  # read by the outputs' conversions
        buffers[buffer_of[value]].last = len(steps)
    for b in buffers:
        if b.last < 0:  # written by nothing and read by nothing: a value no step uses
            b.first = b.last = 0


def place(buffers: list, batch: int, dtype, output: int) -> tuple[int, list[int]]:
    """Offsets in one arena: buffers that are live at the same step never overlap (largest
    first, each at the lowest offset that fits). Returns the arena's length and the buffers
    whose border no other buffer's memory touches (zeroed once, not every call)."""
    align = max(1, _ALIGN // np.dtype(dtype).itemsize)
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: -b.size(batch)):
        size = b.size(batch)
        clashes = sorted((p.offset, p.offset + p.size(batch)) for p in placed
                         if p.first <= b.last and b.first <= p.last)
        offset = 0
        for lo, hi in clashes:
            if offset + size <= lo:
                break
            offset = max(offset, -(-hi // align) * align)
        b.offset = offset
        placed.append(b)
    end = max((b.offset + b.size(batch) for b in buffers), default=0)
    static = []
    for i, b in enumerate(buffers):
        lo, hi = b.offset, b.offset + b.size(batch)
        if any(b.border) and not any(o is not b and o.offset < hi and lo < o.offset + o.size(
                batch) for o in buffers):
            static.append(i)
    return end, static
