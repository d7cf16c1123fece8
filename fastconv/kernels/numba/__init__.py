"""Numba JIT kernels: one module per algorithm, forward and backward side by side.

Each module exposes ``supports(spec) -> reason or None`` and ``forward(x, weight, bias, spec)``.
The arrays arrive validated, C-contiguous, native-endian and read-only (one compiled
specialisation per dtype); the kernels trust them and take plain integers from the spec.
"""
