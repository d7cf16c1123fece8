"""The plan's executor on Numba: its kernels, and an arena that runs a shape plan's steps.

Every kernel here is ``fastconv.kernels.numba.nhwc``'s; every parallel loop is a ``prange``
of the plan's own thread count, and no step calls BLAS (the GEMMs are the plan's register
tiles), so one thread pool runs the whole network and nothing nests.
"""

from __future__ import annotations

import numpy as np

from ..kernels.numba.microkernel import depthwise_block, tile_shape
from ..kernels.numba.nhwc.conv import conv, pack, schedule, wide
from ..kernels.numba.nhwc.depthwise import depthwise, depthwise_3x3
from ..kernels.numba.nhwc.layout import (affine, binary, copy_channels, flatten, from_nchw,
                                         to_nchw, zero_border)
from ..kernels.numba.nhwc.pool import avg_pool, global_average, max_pool
from ..kernels.numba.nhwc.separable import expanded_separable, separable
from ..kernels.numba.nhwc.winograd import pack_filters as winograd_filters
from ..kernels.numba.nhwc.winograd import winograd
from ..kernels.plan_tiles import l2_bytes
from .planner import ShapePlan, arena_views, bound_steps

# what the planner calls, by name
__all__ = ["Arena", "affine", "avg_pool", "binary", "conv", "copy_channels", "depthwise",
           "depthwise_3x3", "depthwise_block", "expanded_separable", "flatten", "from_nchw",
           "global_average", "l2_bytes", "max_pool", "pack", "schedule", "separable",
           "tile_shape", "to_nchw", "wide", "winograd", "winograd_filters", "zero_border"]


class Arena:
    """One shape plan's buffers, allocated once, and its steps bound to them. An arena serves
    one call at a time; concurrent calls take one each."""

    def __init__(self, plan: ShapePlan):
        self.plan = plan
        self.views = arena_views(plan)
        self.steps = [(step.node, step.kernel, args)
                      for step, args in bound_steps(plan, self.views, zero_border)]

    def run(self, x, clock=None):
        """Run every step on input ``x``; returns the output buffer's 4-D view. With a
        ``clock``, each step's seconds are added to ``clock[node]``."""
        for node, kernel, args in self.steps:
            if kernel is from_nchw:
                args = [x, *args[1:]]
            if clock is None:
                kernel(*args)
            else:
                start = clock.now()
                kernel(*args)
                clock.add(node, clock.now() - start)
        return self.views[self.plan.output_buffer][0]

    def output(self, result, clock=None):
        """The output, in a new array owned by the caller: NCHW, or (N, F)."""
        plan = self.plan
        buf = plan.buffers[plan.output_buffer]
        top, _, left, _ = buf.border
        out = np.empty(plan.output_shape, plan.dtype)
        start = clock.now() if clock is not None else 0.0
        if plan.output_flat:
            out[...] = result[:, top, left, :]
        else:
            to_nchw(result, top, left, out, plan.threads)
        if clock is not None:
            clock.add("output", clock.now() - start)
        return out
