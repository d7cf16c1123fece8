"""Cython AOT kernels, compiled at install time: twins of the Numba modules, same interface.

Each module (``direct``, ``im2col``, ``depthwise``, ``pointwise``) exposes ``supports``,
``skips_padding``, ``forward``, ``backward_input``, ``backward_weight`` and ``backward_bias``;
parallel loops are OpenMP ``prange`` and GEMMs go through ``scipy.linalg.cython_blas``.
"""
