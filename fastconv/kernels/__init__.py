"""Compiled kernels, one package per backend and one module per algorithm."""
