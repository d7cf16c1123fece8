"""Choices the kernels of every backend share (pure Python, no compiler involved)."""

from __future__ import annotations

from ..spec import ConvSpec


def batch_small_images(spec: ConvSpec, n_images: int) -> bool:
    """Whether the weight gradient should be one GEMM over several images rather than one per
    image: when the weight is larger than an image's columns and outputs, each per-image GEMM
    writes a weight-sized partial sum for little work (a classifier's are outer products), and
    copying the images side by side is cheaper (measured: 16x for MobileNet's classifier at
    batch 8, 1.3x for its 14x14 and 7x7 1x1 layers)."""
    kh, kw = spec.kernel_size
    ho, wo = spec.output_size
    group_rows = spec.in_channels_per_group * kh * kw
    og = spec.out_channels_per_group
    return n_images > 1 and og * group_rows > (group_rows + og) * ho * wo
