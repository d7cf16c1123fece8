"""The plan's executor on Cython: the AOT kernels of ``fastconv.kernels.cython.plan``, and an
arena that runs a shape plan's steps in one OpenMP parallel region per call.

The planner is the Numba executor's (``planner.plan_shape``); only the kernels differ. Each
step's arguments are checked and stored once, when the arena is made; a call checks its
input, drops the GIL and runs every step, the threads meeting at a barrier between steps. No
step calls BLAS (the GEMMs are the plan's register tiles), so nothing nests, and nothing here
imports Numba.
"""

from __future__ import annotations

import numpy as np

from ..kernels.plan_tiles import TileGeometry, l2_bytes
from ..runtime import import_extension
from .executor import GEOMETRY, STEP_KINDS
from .arena import arena_views, bound_steps
from .planner import ShapePlan

plan = import_extension("fastconv.kernels.cython.plan")

_GEOMETRY = TileGeometry(plan.VECTOR_BITS)  # the vector width the kernels were compiled for
tile_shape = _GEOMETRY.tile_shape
depthwise_block = _GEOMETRY.depthwise_block
wide = _GEOMETRY.wide
schedule = _GEOMETRY.schedule
pack = _GEOMETRY.pack
winograd_filters = _GEOMETRY.winograd_filters
from_nchw, zero_border = plan.from_nchw, plan.zero_border
affine, binary, copy_channels, flatten = plan.affine, plan.binary, plan.copy_channels, plan.flatten
gather, resize, softmax = plan.gather, plan.resize, plan.softmax
max_pool, avg_pool, global_average = plan.max_pool, plan.avg_pool, plan.global_average
squeeze_excite = plan.squeeze_excite
conv, depthwise, depthwise_3x3 = plan.conv, plan.depthwise, plan.depthwise_3x3
separable, expanded_separable, winograd = (plan.separable, plan.expanded_separable,
                                           plan.winograd)

# the executor's contract (network.executor): the Arena, the geometry, the steps' kernels
__all__ = ["Arena", *GEOMETRY, *STEP_KINDS]


def max_threads() -> int:
    """The threads a plan takes by default: OpenMP's count (``OMP_NUM_THREADS``, else the
    cores)."""
    return plan.max_threads()


class Arena:
    """One shape plan's buffers, allocated once, and its steps built on them as one program
    (the input's conversion first, the output's last;
    :class:`~fastconv.network.executor.Arena`). An arena serves one call at a time;
    concurrent calls take one each."""

    def __init__(self, shape_plan: ShapePlan):
        self.plan = shape_plan
        self.views = arena_views(shape_plan)
        steps, self.nodes = [], []
        kernels = globals()
        for step, args in bound_steps(shape_plan, self.views):
            if step.kind == "from_nchw":
                args[0] = None  # the input comes with each call
            steps.append(kernels[step.kind](*args))
            self.nodes.append(step.node)
        edges = [(shape_plan.output_buffer, shape_plan.output_shape, shape_plan.output_flat),
                 *shape_plan.extra_outputs]
        for buffer, shape, flat in edges:
            top, _, left, _ = shape_plan.buffers[buffer].border
            steps.append(plan.to_output(self.views[buffer][0], top, left, shape, flat,
                                        shape_plan.threads))
            self.nodes.append("output")
        self.shapes = [shape for _, shape, _ in edges]
        self.program = plan.Program(steps, shape_plan.threads,
                                    [shape_plan.input_shape, *shape_plan.extra_inputs],
                                    self.shapes, shape_plan.dtype)
        self._times = np.zeros(len(steps) + 1)

    def run(self, x, clock=None, extra=(), out=None):
        """Run every step on input ``x`` (and a segment's ``extra`` inputs), the outputs'
        conversions included; returns the output, a new array owned by the caller (or
        ``out``, written; a list, the extra outputs after it, where the plan has more). With a
        ``clock``, each step's seconds (from the first thread's clock after each barrier) are
        added to ``clock[node]``."""
        outs = [np.empty(shape, self.plan.dtype) if i or out is None else out
                for i, shape in enumerate(self.shapes)]
        if clock is None:
            self.program.run([x, *extra], outs)
        else:
            self.program.run([x, *extra], outs, self._times)
            for node, seconds in zip(self.nodes, np.diff(self._times)):
                clock.add(node, float(seconds))
        return outs if len(outs) > 1 else outs[0]
