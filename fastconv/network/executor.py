"""What an executor of the plan is: the contract ``planner`` and ``Network`` rely on, kept by
``numba_executor`` and ``cython_executor`` alike (``tests/test_network.py`` checks both).

An executor is a module. The planner asks it for its tiles' geometry (the vector width its
kernels were built for) and emits :class:`~fastconv.network.emission.Step` records, each
naming one of :data:`STEP_KINDS`; the executor's :class:`Arena` binds a shape plan's steps to
its buffers once, then runs them call after call.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .step_args import RECORDS

#: The kernels a plan's steps name (``Step.kind``: the kinds of ``step_args``' records); an
#: executor has each, by that name, taking its record's fields in order.
STEP_KINDS = tuple(RECORDS)

#: The geometry an executor's tiles have (``kernels.plan_tiles.TileGeometry`` at its width).
GEOMETRY = ("tile_shape", "depthwise_block", "wide", "schedule", "pack", "winograd_filters",
            "l2_bytes")


class Arena(Protocol):
    """One shape plan's buffers, allocated once, and its steps bound to them; serves one call
    at a time."""

    def __init__(self, plan) -> None: ...

    def run(self, x: np.ndarray, clock=None, extra=(), out=None) -> np.ndarray:
        """Every step on NCHW input ``x``, then the output's conversion: returns the output,
        a new array owned by the caller (NCHW, or (N, F)), or ``out`` (C-contiguous, of the
        output's shape and dtype) written. With a ``clock``
        (``network._Clock``), each step's seconds are added to ``clock[step.node]`` and the
        conversion's to ``clock["output"]``."""
        ...


class Executor(Protocol):
    """The module: ``Arena``, the names of :data:`GEOMETRY` and of :data:`STEP_KINDS`."""

    Arena: type[Arena]
