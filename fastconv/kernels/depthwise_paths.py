"""The depthwise 3x3 kernels' paths and scratch geometry, shared by every CPU backend.

Pure Python, from the ConvSpec. Four paths, each writing every output pixel once with the
nine taps as nine constant offsets into a flat scratch buffer:

``"wrapped"``
    Narrow planes, stride 1, padded by their dilation ("same"). The output plane is one flat
    loop over the input plane, no padded columns to skip: taps left of a row's start wrap onto
    the previous row's end, those right of its end onto the next row's start, so the scratch
    holds three copies of the plane (each with dilation-many zero rows above and below): the
    left taps read one whose last ``dw`` columns are zeroed, the right taps one whose first
    ``dw`` are.
``"phases"``
    Stride 2, undilated. The zero-padded plane is split into its four phases (even/odd rows x
    even/odd columns, a space-to-depth); each tap reads one phase at unit stride, so the layer
    costs the multiplies of its output, not of its input.
``"split"``
    Stride 2 with padding 1 (undilated, even height and width), narrow planes: the plane is
    split into its even and odd columns by one flat pass over the whole plane (rows stay
    whole, each ``W / 2`` long, with a zero row above). The taps of output row ``oh`` then sit
    at constant offsets from position ``2 * oh * W / 2 + ow``; the left taps read a copy of
    the odd columns whose last column is zeroed (the wrapped trick again). The loop runs over
    every row, odd ones wasted, in full vectors, and the even rows are kept.
``"padded"``
    Everything else: one zero-padded copy of the plane, row pitch ``wp``.

A 1x1 depthwise layer at stride 1 without padding (a 3x3 one on 1x1 images, its live tap) is
each input channel's plane times its outputs' weights: NumPy's broadcasting, forward and
backward, for every backend (:func:`is_channel_scale`).
"""

from __future__ import annotations

import functools

import numpy as np

from ..spec import ConvSpec
from . import tuning


def uses_3x3_path(spec: ConvSpec) -> bool:
    """The 3x3 kernels serve column strides 1-2; other shapes run the direct kernel."""
    return spec.kernel_size == (3, 3) and spec.stride[1] <= 2


def path(spec: ConvSpec) -> str:
    """``"wrapped"``, ``"split"``, ``"phases"`` or ``"padded"`` (see the module docstring)."""
    (dh, dw), ((top, bottom), (left, right)) = spec.dilation, spec.pads
    if (spec.input_size[1] < tuning.FLAT_BELOW and spec.stride == (1, 1)
            and top == bottom == dh and left == right == dw):
        return "wrapped"
    if uses_phases(spec):
        height, width = spec.input_size
        if (spec.pads == ((1, 1), (1, 1)) and height % 2 == 0 and width % 2 == 0
                and width < 2 * tuning.FLAT_BELOW):
            return "split"
        return "phases"
    return "padded"


def flat_rows(spec: ConvSpec) -> bool:
    """Whether the "padded" and "phases" paths compute the plane as one flat loop (output rows
    too short for whole vectors) rather than row by row."""
    return spec.output_size[1] < tuning.FLAT_BELOW


def uses_phases(spec: ConvSpec) -> bool:
    """Stride 2, undilated: the backward kernels work on the four phases (the "split" path
    changes only the forward)."""
    return spec.stride == (2, 2) and spec.dilation == (1, 1)


@functools.lru_cache(maxsize=256)
def _tap_offsets(pitch: int, dh: int, dw: int) -> tuple[int, ...]:
    return tuple(i * dh * pitch + j * dw for i in range(3) for j in range(3))


@functools.lru_cache(maxsize=256)
def _phase_offsets(pitch: int, plane: int) -> tuple[int, ...]:
    return tuple((2 * (i % 2) + j % 2) * plane + (i // 2) * pitch + j // 2
                 for i in range(3) for j in range(3))


def scratch_geometry(spec: ConvSpec) -> tuple[int, int, int, int]:
    """``(pitch, plane, rows, cols)`` of the "padded" and "phases" scratch (the latter also
    for "split" specs, whose gradients use the phases): the zero-padded
    input the outputs read (or one of its four phases), and how many of the input's rows and
    columns lie in it (the rest are never read)."""
    (ho, wo), (sh, sw), (dh, dw) = spec.output_size, spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    hp, wp = (ho - 1) * sh + 2 * dh + 1, (wo - 1) * sw + 2 * dw + 1
    rows = max(0, min(spec.input_size[0], hp - ph))
    cols = max(0, min(spec.input_size[1], wp - pw))
    if uses_phases(spec):
        return wo + 1, (ho + 1) * (wo + 1), rows, cols
    return wp, hp * wp, rows, cols


def scratch_offsets(spec: ConvSpec) -> tuple[int, ...]:
    """The nine taps' offsets in the "padded" or "phases" scratch, tap (0, 0) first."""
    pitch, plane, _, _ = scratch_geometry(spec)
    if uses_phases(spec):
        return _phase_offsets(pitch, plane)
    return _tap_offsets(pitch, *spec.dilation)


def spread_geometry(spec: ConvSpec) -> tuple[int, int, tuple[int, ...]]:
    """``(pitch, height, offsets)`` of the "padded" input gradient: dY spread out at the
    stride inside a border of twice the dilation, row pitch ``pitch``; ``height`` rows of the
    forward's padded plane get a gradient (the spread plane has ``2 * dh`` more)."""
    (ho, wo), (sh, sw), (dh, dw) = spec.output_size, spec.stride, spec.dilation
    pitch = (wo - 1) * sw + 4 * dw + 1
    return pitch, (ho - 1) * sh + 2 * dh + 1, _tap_offsets(pitch, dh, dw)


@functools.lru_cache(maxsize=256)
def _wrapped(height: int, width: int, dh: int, dw: int) -> tuple[int, tuple[int, ...]]:
    copy = (height + 2 * dh) * width + 2 * dw
    return copy, tuple(j * copy + i * dh * width + j * dw for i in range(3) for j in range(3))


def wrapped_geometry(spec: ConvSpec) -> tuple[int, tuple[int, ...]]:
    """``(copy, offsets)`` of the "wrapped" scratch: the length of one of its three copies
    (each starts with ``dh`` zero rows and ``dw`` zeros) and the nine taps' offsets."""
    return _wrapped(*spec.input_size, *spec.dilation)


@functools.lru_cache(maxsize=256)
def _split(height: int, width: int) -> tuple[int, tuple[int, ...]]:
    half = width // 2
    part = 1 + (height + 1) * half  # a lead element, a zero row, the rows
    base = (0, part, 2 * part)  # left taps: odd columns, last zeroed; centre: even; right: odd
    return part, tuple(base[j] + i * half + (j > 0) for i in range(3) for j in range(3))


def split_geometry(spec: ConvSpec) -> tuple[int, tuple[int, ...]]:
    """``(part, offsets)`` of the "split" scratch: the length of each of its three parts (odd
    columns with the last zeroed, even columns, odd columns; each a lead element, a zero row
    and the input's rows of ``W / 2``) and the nine taps' offsets from position
    ``2 * oh * (W / 2) + ow``."""
    return _split(*spec.input_size)


# --- a 1x1 depthwise layer: a scale per channel ---------------------------------------------

def is_channel_scale(spec: ConvSpec) -> bool:
    """A 1x1 depthwise layer at stride 1 without padding: output channel ``o`` is input
    channel ``o // multiplier`` times one weight."""
    return (spec.kernel_size == (1, 1) and spec.stride == (1, 1)
            and spec.pads == ((0, 0), (0, 0)) and spec.groups == spec.in_channels)


def _by_multiplier(a, channels: int) -> np.ndarray:
    """An (N, C * m, H, W) array as (N, C, m, H * W)."""
    return a.reshape(a.shape[0], channels, a.shape[1] // channels, a.shape[2] * a.shape[3])


def channel_scale_forward(x, weight, bias, spec: ConvSpec) -> np.ndarray:
    """The forward of a layer :func:`is_channel_scale` serves (arrays as the kernels')."""
    c = spec.in_channels
    out = np.empty(spec.output_shape(x.shape[0]), x.dtype)
    np.multiply(_by_multiplier(x, c), weight.reshape(1, c, -1, 1), out=_by_multiplier(out, c))
    if bias is not None:
        out += bias[:, None, None]
    return out


def channel_scale_backward_input(grad_output, weight, spec: ConvSpec) -> np.ndarray:
    """The input's gradient of a layer :func:`is_channel_scale` serves."""
    c = spec.in_channels
    products = _by_multiplier(grad_output, c) * weight.reshape(1, c, -1, 1)
    return products.sum(axis=2).reshape(spec.input_shape(grad_output.shape[0]))


def channel_scale_backward_weight(grad_output, x, spec: ConvSpec) -> np.ndarray:
    """The weight's gradient of a layer :func:`is_channel_scale` serves."""
    c = spec.in_channels
    products = _by_multiplier(grad_output, c) * _by_multiplier(x, c)
    # summed in float64: a float32 sum over the batch's pixels in one go loses digits
    return products.sum(axis=(0, 3), dtype=np.float64).astype(x.dtype).reshape(
        spec.weight_shape)
