"""The measuring toolchain: the timing harness, per-layer and whole-network profiles, the
machine's peaks, the peers (PyTorch, ONNX Runtime, a bare GEMM), the report behind
BENCHMARKS.md, plots, and the formatting of their table rows.

The library (``fastconv`` outside this package) never imports from here.
"""
