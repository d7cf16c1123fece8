"""The network plan's Numba kernels, on NHWC activations with zero borders.

An activation of shape (N, H, W, C) lives in a buffer of shape (N, H + top + bottom,
W + left + right, C) whose border is zero: a convolution whose padding fits in it reads its
input without a bounds test. Kernels take the buffers flattened, with tables of offsets
computed once per input shape by the planner (``fastconv.network.planner``), and apply their
epilogue (bias, activation, residual) before their one store. Conversions to and from NCHW
happen only at the network's edges (``layout``).
"""
