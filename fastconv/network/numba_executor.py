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
                                         gather, resize, softmax, to_nchw, zero_border)
from ..kernels.numba.nhwc.pool import avg_pool, global_average, max_pool
from ..kernels.numba.nhwc.separable import expanded_separable, separable
from ..kernels.numba.nhwc.squeeze_excite import squeeze_excite
from ..kernels.numba.nhwc.winograd import pack_filters as winograd_filters
from ..kernels.numba.nhwc.winograd import winograd
from ..kernels.plan_tiles import l2_bytes
from .executor import GEOMETRY, STEP_KINDS
from .arena import arena_views, bound_steps
from .planner import ShapePlan

# the executor's contract (network.executor): the Arena, the geometry, the steps' kernels
__all__ = ["Arena", *GEOMETRY, *STEP_KINDS]


class Arena:
    """One shape plan's buffers, allocated once, and its steps bound to them
    (:class:`~fastconv.network.executor.Arena`). An arena serves one call at a time;
    concurrent calls take one each."""

    def __init__(self, plan: ShapePlan):
        self.plan = plan
        self.views = arena_views(plan)
        kernels = globals()
        self.steps, inputs = [], 0
        for step, args in bound_steps(plan, self.views):
            which = None
            if step.kind == "from_nchw":  # the k-th conversion is the k-th input's
                which, inputs = inputs, inputs + 1
            self.steps.append((step.node, which, kernels[step.kind], args))

    def run(self, x, clock=None, extra=(), out=None):
        """Every step on input ``x`` (and a segment's ``extra`` inputs), then the outputs'
        conversions; returns the output, a new array owned by the caller (or ``out``,
        written): NCHW, or (N, F) (a list, the extra outputs after it, where the plan has
        more). With a ``clock``, each
        step's seconds are added to ``clock[node]``, the conversions' to
        ``clock["output"]``."""
        xs = (x, *extra)
        for node, which, kernel, args in self.steps:
            if which is not None:
                args = [xs[which], *args[1:]]
            if clock is None:
                kernel(*args)
            else:
                start = clock.now()
                kernel(*args)
                clock.add(node, clock.now() - start)
        plan = self.plan
        start = clock.now() if clock is not None else 0.0
        outs = [self._output(plan.output_buffer, plan.output_shape, plan.output_flat, out)]
        outs += [self._output(*edge) for edge in plan.extra_outputs]
        if clock is not None:
            clock.add("output", clock.now() - start)
        return outs if plan.extra_outputs else outs[0]

    def _output(self, buffer, shape, flat, out=None):
        result = self.views[buffer][0]
        top, _, left, _ = self.plan.buffers[buffer].border
        out = np.empty(shape, self.plan.dtype) if out is None else out
        if flat:
            out[...] = result[:, top, left, :]
        else:
            to_nchw(result, top, left, out, self.plan.threads)
        return out
