"""ConvSpec: the one description of a convolution's geometry.

Everything that needs an output size, a padding amount, a MAC count or a byte count asks a
``ConvSpec``. The public functions build one from their arguments, the kernels receive plain
integers taken from it, and the op counters, models and profiler walk lists of them.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Iterable, NamedTuple

import numpy as np

__all__ = ["ConvSpec", "PoolSpec", "ReceptiveField", "receptive_field", "normalize_tuple"]

PADDING_STRINGS = ("same", "valid")


def _as_int(value, name: str) -> int:
    # bool is an int subclass but `stride=True` is always a mistake
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a tuple of ints, but got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an int or a tuple of ints, but got {value!r} "
            f"of type {type(value).__name__}"
        ) from None


def normalize_tuple(value, n: int, name: str) -> tuple[int, ...]:
    """Expand an int, or check a sequence of ints, into an ``n``-tuple.

    Parameters
    ----------
    value : int or sequence of int
        A single value used for every spatial dimension, or one value per dimension.
    n : int
        Number of spatial dimensions.
    name : str
        Argument name used in error messages.

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        If a sequence of the wrong length is given (PyTorch's message).
    TypeError
        If a value is not an integer.
    """
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            value = value * n
        if len(value) != n:
            raise ValueError(
                f"expected {name} to be a single integer value or a list of {n} values to "
                f"match the convolution dimensions, but got {name}={list(value)}"
            )
        return tuple(_as_int(v, name) for v in value)
    return (_as_int(value, name),) * n


@dataclass(frozen=True)
class ConvSpec:
    """Geometry of one 2-D convolution, normalised and validated once.

    Semantics are those of ``torch.nn.functional.conv2d``: cross-correlation on NCHW input with
    an OIHW weight of shape ``(out_channels, in_channels // groups, kH, kW)``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts; both must be positive and divisible by ``groups``.
    kernel_size : int or (int, int)
        Kernel height and width.
    stride : int or (int, int), default 1
    padding : int, (int, int), ((int, int), (int, int)), "same" or "valid", default 0
        Zero padding added on both sides, or ``((top, bottom), (left, right))`` (ONNX's
        asymmetric pads; ``fastconv.conv2d`` takes only PyTorch's forms). ``"same"`` keeps
        the input size (stride 1 only); when the total padding ``dilation * (kernel - 1)`` is
        odd the extra row/column goes at the end (bottom/right), as in PyTorch. ``"valid"``
        is no padding.
    dilation : int or (int, int), default 1
    groups : int, default 1
    bias : bool, default False
        Whether the layer has a bias (counted in ``params``).
    input_size : int or (int, int), optional
        Input height and width. Needed by everything that depends on the output size.

    Attributes
    ----------
    padding : (int, int), ((int, int), (int, int)) or str
        The normalised padding argument: a pair of ints, a pair of unequal pairs, or
        ``"same"``/``"valid"``.
    pads : ((int, int), (int, int))
        The zero rows/columns actually added: ``((top, bottom), (left, right))``.

    Derived sizes and counts are computed on first use and cached (a spec never changes).

    Examples
    --------
    >>> spec = ConvSpec(32, 64, 3, stride=2, padding=1, input_size=(112, 112))
    >>> spec.output_size
    (56, 56)
    >>> spec.macs == 64 * 56 * 56 * 32 * 3 * 3
    True
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = 1
    padding: tuple[int, int] | str = 0
    dilation: tuple[int, int] = 1
    groups: int = 1
    bias: bool = False
    input_size: tuple[int, int] | None = None
    pads: tuple[tuple[int, int], tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise in place once, here
        for name in ("in_channels", "out_channels", "groups"):
            value = _as_int(getattr(self, name), name)
            if value <= 0:
                if name == "groups":
                    raise ValueError("non-positive groups is not supported")
                raise ValueError(f"{name} must be positive, but got {name}={value}")
            set_(self, name, value)
        if self.in_channels % self.groups:
            raise ValueError(
                f"in_channels must be divisible by groups, but got in_channels="
                f"{self.in_channels} and groups={self.groups}"
            )
        if self.out_channels % self.groups:
            raise ValueError(
                f"out_channels must be divisible by groups, but got out_channels="
                f"{self.out_channels} and groups={self.groups}"
            )

        kernel = normalize_tuple(self.kernel_size, 2, "kernel_size")
        if min(kernel) <= 0:
            raise ValueError(f"kernel_size must be positive, but got kernel_size={list(kernel)}")
        stride = normalize_tuple(self.stride, 2, "stride")
        if min(stride) <= 0:
            raise ValueError("non-positive stride is not supported")
        dilation = normalize_tuple(self.dilation, 2, "dilation")
        if min(dilation) <= 0:
            raise ValueError(f"dilation should be greater than zero, but got {list(dilation)}")
        set_(self, "kernel_size", kernel)
        set_(self, "stride", stride)
        set_(self, "dilation", dilation)

        padding = self.padding
        if isinstance(padding, str):
            padding = padding.lower()
            if padding not in PADDING_STRINGS:
                raise ValueError(
                    f"Invalid padding string: {self.padding!r}, should be one of "
                    f"{list(PADDING_STRINGS)}"
                )
            if padding == "same" and stride != (1, 1):
                raise ValueError(
                    "padding='same' is not supported for strided convolutions, "
                    f"but got stride={list(stride)}"
                )
        elif _is_pair_of_pairs(padding):
            pads = _pads(padding, "padding")
            padding = tuple(lo for lo, _ in pads) if all(lo == hi for lo, hi in pads) else pads
        else:
            padding = normalize_tuple(padding, 2, "padding")
            if min(padding) < 0:
                raise ValueError(f"negative padding is not supported, but got {list(padding)}")
        set_(self, "padding", padding)
        set_(self, "pads", self._resolve_pads())
        set_(self, "bias", bool(self.bias))

        if self.input_size is not None:
            size = normalize_tuple(self.input_size, 2, "input_size")
            if min(size) <= 0:
                raise ValueError(f"input_size must be positive, but got {list(size)}")
            set_(self, "input_size", size)
            self._check_kernel_fits()

    # --- geometry -------------------------------------------------------------------------

    def _resolve_pads(self):
        if self.padding == "valid":
            return ((0, 0), (0, 0))
        if self.padding == "same":  # stride 1: the extra pad at the end, as PyTorch
            return same_pads((None, None), self.kernel_size, (1, 1), self.dilation, upper=True)
        if isinstance(self.padding[0], tuple):
            return self.padding
        return tuple((p, p) for p in self.padding)

    @cached_property
    def dilated_kernel_size(self) -> tuple[int, int]:
        """Extent of the kernel on the input: ``dilation * (kernel - 1) + 1`` per axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    @cached_property
    def padded_input_size(self) -> tuple[int, int]:
        """Input height and width after zero padding."""
        self._need_input_size()
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.input_size, self.pads))

    def _check_kernel_fits(self):
        padded = self.padded_input_size
        extent = self.dilated_kernel_size
        if any(k > p for k, p in zip(extent, padded)):
            raise ValueError(
                f"Calculated padded input size per channel: ({padded[0]} x {padded[1]}). "
                f"Kernel size: ({extent[0]} x {extent[1]}). "
                "Kernel size can't be greater than actual input size"
            )

    def _need_input_size(self):
        if self.input_size is None:
            raise ValueError(
                "this ConvSpec has no input_size; build it with input_size=(H, W) "
                "or call spec.with_input_size(H, W)"
            )

    @cached_property
    def output_size(self) -> tuple[int, int]:
        """Output height and width: ``floor((H + pads - d*(k-1) - 1) / s) + 1`` per axis."""
        return tuple(
            (p - e) // s + 1
            for p, e, s in zip(self.padded_input_size, self.dilated_kernel_size, self.stride)
        )

    @cached_property
    def unread_tail(self) -> tuple[int, int]:
        """The rows and columns at the padded input's end that no output reads (fewer than
        the stride): the output padding under which the transposed convolution of the
        output's size gives back the input's (its gradient's)."""
        return tuple(p - (o - 1) * s - e for p, o, s, e in zip(
            self.padded_input_size, self.output_size, self.stride, self.dilated_kernel_size))

    def input_gradient_pads(self):
        """For a layer of stride 1: the padding ``((top, bottom), (left, right))`` under which
        the convolution of the output's gradient by the kernel flipped, its input and output
        channels swapped, is the input's gradient (the kernel's extent less one, less the
        layer's padding, on each side); None for a strided layer, or where its padding is
        larger than that extent."""
        if self.stride != (1, 1):
            return None
        pads = tuple((e - 1 - lo, e - 1 - hi) for (lo, hi), e in zip(self.pads,
                                                                     self.dilated_kernel_size))
        return None if min(min(p) for p in pads) < 0 else pads

    def weight_gradient_as_conv(self) -> tuple["ConvSpec", tuple[int, int]]:
        """The weight gradient (of a layer without groups) as a convolution of the input
        whose kernel is the output's gradient: the input's channels its batch, the batch its
        channels (``in_channels`` and ``out_channels`` are left for the caller: 1 each), the
        output's size its kernel, dilated by the stride, the layer's dilation its stride, and
        its output the layer's kernel. Returns that spec (input size: the cropped input's)
        and the rows and columns cropped from the input's end (read by no output, past the
        padding)."""
        if self.groups != 1:
            raise ValueError(f"weight_gradient_as_conv needs groups=1, but got {self.groups}")
        crop, pads = [], []
        for (lo, hi), tail in zip(self.pads, self.unread_tail):
            crop.append(max(0, tail - hi))
            pads.append((lo, max(0, hi - tail)))
        size = tuple(n - c for n, c in zip(self.input_size, crop))
        spec = ConvSpec(1, 1, self.output_size, stride=self.dilation, padding=tuple(pads),
                        dilation=self.stride, bias=False, input_size=size)
        return spec, tuple(crop)

    def with_input_size(self, height: int, width: int | None = None) -> "ConvSpec":
        """Return a copy of this spec for another input size (``width`` defaults to ``height``)."""
        return replace(self, input_size=(height, height if width is None else width))

    def without_padding(self) -> "ConvSpec":
        """The same convolution applied to the explicitly zero-padded input (padding 0)."""
        return replace(self, padding=0, input_size=self.padded_input_size)

    def live_window(self):
        """The kernel taps some output reads inside the input, where others read only padding
        (a 3x3 layer on one pixel reads its centre alone): ``((h0, h1), (w0, w1), padding)``,
        the taps ``[h0, h1) x [w0, w1)`` and the padding (a pair of ints) under which those
        taps alone give the same output; None where every tap is read, or where that padding
        is not the same on both sides of an axis."""
        if self.input_size is None:
            raise ValueError("this ConvSpec has no input_size; build it with input_size=(H, W)")
        window, padding = [], []
        for n, o, k, s, d, (lo, _) in zip(self.input_size, self.output_size, self.kernel_size,
                                          self.stride, self.dilation, self.pads):
            at = tap_positions(o, k, s, lo, d)
            read = np.flatnonzero(((at >= 0) & (at < n)).any(axis=0))
            first, stop = int(read[0]), int(read[-1]) + 1
            top = lo - first * d
            # the least padding after the input that keeps every output
            bottom = max(0, (o - 1) * s + d * (stop - first - 1) + 1 - n - top)
            if top != bottom:
                return None
            window.append((first, stop))
            padding.append(top)
        if window == [(0, k) for k in self.kernel_size]:
            return None
        return window[0], window[1], tuple(padding)

    # --- shapes ----------------------------------------------------------------------------

    @property
    def in_channels_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_channels_per_group(self) -> int:
        return self.out_channels // self.groups

    @cached_property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """``(out_channels, in_channels // groups, kH, kW)``."""
        return (self.out_channels, self.in_channels_per_group, *self.kernel_size)

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        """NCHW input shape for a batch."""
        self._need_input_size()
        return (batch, self.in_channels, *self.input_size)

    def output_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        """NCHW output shape for a batch."""
        return (batch, self.out_channels, *self.output_size)

    @property
    def is_depthwise(self) -> bool:
        """Every input channel is convolved on its own (``groups == in_channels``)."""
        return self.groups == self.in_channels

    @property
    def is_pointwise(self) -> bool:
        """A 1x1 kernel."""
        return self.kernel_size == (1, 1)

    @property
    def kind(self) -> str:
        """``"dw"`` (depthwise), ``"pw"`` (dense 1x1) or ``"conv"``, as in the MobileNet paper."""
        if self.is_depthwise and self.groups > 1:
            return "dw"
        if self.is_pointwise and self.groups == 1:
            return "pw"
        return "conv"

    # --- counts ----------------------------------------------------------------------------

    @cached_property
    def macs(self) -> int:
        """Multiply-accumulates for one image (bias additions are not counted)."""
        ho, wo = self.output_size
        kh, kw = self.kernel_size
        return self.out_channels * ho * wo * self.in_channels_per_group * kh * kw

    @property
    def flops(self) -> int:
        """Floating-point operations for one image: ``2 * macs``."""
        return 2 * self.macs

    @cached_property
    def params(self) -> int:
        """Weights, plus ``out_channels`` biases when ``bias`` is True."""
        weights = int(np.prod(self.weight_shape))
        return weights + (self.out_channels if self.bias else 0)

    def bytes(self, dtype="float32", batch: int = 1) -> int:
        """Bytes moved by one call: input + weight (+ bias) + output, each read/written once.

        Parameters
        ----------
        dtype : numpy dtype or str, default "float32"
        batch : int, default 1
        """
        itemsize = np.dtype(dtype).itemsize
        elements = (
            int(np.prod(self.input_shape(batch)))
            + self.params
            + int(np.prod(self.output_shape(batch)))
        )
        return elements * itemsize


def _is_pair_of_pairs(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (tuple, list)) for v in value)


def _pads(value, name: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding as ``((top, bottom), (left, right))``: from an int, a pair (each on both sides)
    or a pair of pairs."""
    if _is_pair_of_pairs(value):
        pads = tuple(normalize_tuple(v, 2, name) for v in value)
    else:
        pads = tuple((p, p) for p in normalize_tuple(value, 2, name))
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"negative padding is not supported, but got {[list(p) for p in pads]}")
    return pads


@dataclass(frozen=True)
class PoolSpec:
    """Geometry of one 2-D max or average pooling, as ``torch.nn.MaxPool2d`` and
    ``AvgPool2d`` (and ONNX's MaxPool, AveragePool) define it.

    Parameters
    ----------
    kind : {"max", "avg"}
    channels : int
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: the kernel size.
    padding : int, (int, int) or ((top, bottom), (left, right)), default 0
        Max pooling pads with -inf, average pooling with zeros.
    dilation : int or (int, int), default 1
    ceil_mode : bool, default False
        Round the output size up; a window that would start in the right or bottom padding
        is dropped, as in PyTorch.
    count_include_pad : bool, default True
        Average pooling: divide by the window's size inside the padded input (True) or by its
        pixels inside the input (False).
    divisor_override : int, optional
        Average pooling: divide every window by this instead.
    input_size : (int, int), optional
    """

    kind: str
    channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] | None = None
    padding: object = 0
    dilation: tuple[int, int] = 1
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    input_size: tuple[int, int] | None = None
    pads: tuple[tuple[int, int], tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        set_ = object.__setattr__
        if self.kind not in ("max", "avg"):
            raise ValueError(f"kind must be 'max' or 'avg', but got {self.kind!r}")
        channels = _as_int(self.channels, "channels")
        if channels <= 0:
            raise ValueError(f"channels must be positive, but got channels={channels}")
        set_(self, "channels", channels)
        kernel = normalize_tuple(self.kernel_size, 2, "kernel_size")
        if min(kernel) <= 0:
            raise ValueError(f"kernel_size must be positive, but got kernel_size={list(kernel)}")
        stride = kernel if self.stride is None else normalize_tuple(self.stride, 2, "stride")
        if min(stride) <= 0:
            raise ValueError(f"stride must be positive, but got stride={list(stride)}")
        dilation = normalize_tuple(self.dilation, 2, "dilation")
        if min(dilation) <= 0:
            raise ValueError(f"dilation must be positive, but got dilation={list(dilation)}")
        pads = _pads(self.padding, "padding")
        for (lo, hi), k, d in zip(pads, kernel, dilation):
            if max(lo, hi) > (d * (k - 1) + 1) // 2:
                raise ValueError(f"pad should be at most half of effective kernel size, but got "
                                 f"pad={max(lo, hi)}, kernel_size={k} and dilation={d}")
        if self.divisor_override is not None and _as_int(self.divisor_override,
                                                          "divisor_override") <= 0:
            raise ValueError("divisor must be not zero")
        for name, value in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation),
                            ("pads", pads), ("ceil_mode", bool(self.ceil_mode)),
                            ("count_include_pad", bool(self.count_include_pad))):
            set_(self, name, value)
        set_(self, "padding", pads)
        if self.input_size is not None:
            size = normalize_tuple(self.input_size, 2, "input_size")
            if min(size) <= 0:
                raise ValueError(f"input_size must be positive, but got {list(size)}")
            set_(self, "input_size", size)
            if min(self.output_size) <= 0:
                raise ValueError(
                    f"Given input size: ({channels}x{size[0]}x{size[1]}). Calculated output "
                    f"size: ({channels}x{self.output_size[0]}x{self.output_size[1]}). "
                    "Output size is too small")

    @cached_property
    def output_size(self) -> tuple[int, int]:
        """Output height and width, rounded down or (``ceil_mode``) up, as in PyTorch."""
        if self.input_size is None:
            raise ValueError("this PoolSpec has no input_size; build it with input_size=(H, W)")
        return pool_output_size(self.input_size, self.kernel_size, self.stride, self.pads,
                                self.dilation, self.ceil_mode)

    def tap_table(self) -> np.ndarray:
        """Each window's taps as flat positions in an input plane (``row * W + column``), -1
        for a tap in the padding: (OH * OW, KH * KW), windows and taps row by row."""
        (h, w), (oh, ow) = self.input_size, self.output_size
        rows, cols = (tap_positions(o, k, s, lo, d) for o, k, s, (lo, _), d in zip(
            (oh, ow), self.kernel_size, self.stride, self.pads, self.dilation))
        inside = (((rows >= 0) & (rows < h))[:, None, :, None]
                  & ((cols >= 0) & (cols < w))[None, :, None, :])
        flat = rows[:, None, :, None] * w + cols[None, :, None, :]
        return np.where(inside, flat, -1).reshape(oh * ow, -1)

    def divisors(self) -> np.ndarray:
        """Average pooling: what each window's sum is divided by, (OH * OW,) float64, as
        PyTorch takes it: ``divisor_override``; or the window's taps inside the padded input
        (``count_include_pad``: its pads, not ceil_mode's overhang), or inside the input."""
        (oh, ow) = self.output_size
        if self.divisor_override is not None:
            return np.full(oh * ow, float(self.divisor_override))
        counts = []
        for n, o, k, s, (lo, hi), d in zip(self.input_size, (oh, ow), self.kernel_size,
                                           self.stride, self.pads, self.dilation):
            at = tap_positions(o, k, s, lo, d)
            first, stop = (-lo, n + hi) if self.count_include_pad else (0, n)
            counts.append(((at >= first) & (at < stop)).sum(axis=1))
        return (counts[0][:, None] * counts[1][None, :]).reshape(-1).astype(float)

    def with_input_size(self, height: int, width: int | None = None) -> "PoolSpec":
        """A copy of this spec for another input size."""
        return replace(self, padding=self.pads,
                       input_size=(height, height if width is None else width))

    def output_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.channels, *self.output_size)


def pool_output_size(size, kernel, stride, pads, dilation, ceil_mode) -> tuple[int, ...]:
    """A pooling window's output size per axis (PyTorch's and ONNX's rule): ``pads`` a (lo,
    hi) pair per axis, of any size (ONNX allows pads beyond half the window, which
    :class:`PoolSpec` refuses as PyTorch does)."""
    out = []
    for n, (lo, hi), k, s, d in zip(size, pads, kernel, stride, dilation):
        span = n + lo + hi - d * (k - 1) - 1
        count = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (count - 1) * s >= n + lo:
            count -= 1  # the last window would start in the padding
        out.append(count)
    return tuple(out)


def same_pads(size, kernel, stride, dilation, upper: bool) -> tuple[tuple[int, int], ...]:
    """``(lo, hi)`` per axis that keep ``ceil(size / stride)`` windows (ONNX's ``SAME_UPPER``
    and ``SAME_LOWER``, PyTorch's ``"same"``): the odd pad at the end when ``upper``, else at
    the start. A size may be None where the stride is 1 (the pads do not depend on it)."""
    out = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        total = d * (k - 1) if s == 1 else max(0, (-(-n // s) - 1) * s + d * (k - 1) + 1 - n)
        small = total // 2
        out.append((small, total - small) if upper else (total - small, small))
    return tuple(out)


def swap_group_channels(weight, groups: int) -> np.ndarray:
    """A grouped weight (A, B / g, kh, kw) as (B, A / g, kh, kw), each group's two channel
    axes swapped: a convolution's weight as its transposed convolution's (torch's layout of
    ConvTranspose2d), and back. A new array."""
    a, b_group, kh, kw = weight.shape
    return np.ascontiguousarray(weight.reshape(groups, a // groups, b_group, kh, kw).transpose(
        0, 2, 1, 3, 4)).reshape(groups * b_group, a // groups, kh, kw)


def tap_positions(outputs: int, kernel: int, stride: int, lo: int, dilation: int) -> np.ndarray:
    """Along one axis, where each output's taps land in the unpadded input: (outputs, kernel),
    output ``i``'s tap ``t`` at ``i * stride - lo + t * dilation`` (outside ``[0, size)``: in
    the padding)."""
    return np.arange(outputs)[:, None] * stride - lo + np.arange(kernel) * dilation


def pool_reads_only_padding(size, kernel, stride, pads, dilation, ceil_mode) -> bool:
    """Whether some window of a pooling layer reads no element of its input (every tap in
    the padding): a window whose value is no one's."""
    out = pool_output_size(size, kernel, stride, pads, dilation, ceil_mode)
    for n, o, k, s, (lo, _), d in zip(size, out, kernel, stride, pads, dilation):
        taps = tap_positions(o, k, s, lo, d)
        if (((taps < 0) | (taps >= n)).all(axis=1)).any():
            return True
    return False


def transposed_phases(size: int, kernel: int, stride: int, pads: tuple[int, int],
                      dilation: int = 1, output_padding: int = 0):
    """One axis of a transposed convolution as ``stride`` ordinary ones, one per output
    phase: ``(out_size, below, above, phases)``.

    Output index ``p + q * stride`` (phase p) sums tap i's weight times input index ``q +
    offset``, for each ``(i, offset)`` of its phase (the taps with ``p + pad_begin - i *
    dilation`` a multiple of the stride): ``phases`` lists ``(p, count, [(i, offset), ...])``
    for each phase with outputs. An input read outside the axis is zero: ``below`` and
    ``above`` are the zeros it needs before and after itself."""
    begin, end = pads
    out = (size - 1) * stride - begin - end + dilation * (kernel - 1) + 1 + output_padding
    below = above = 0
    phases = []
    for p in range(stride):
        count = len(range(p, out, stride))
        if count == 0:
            continue
        taps = [(i, (p + begin - i * dilation) // stride) for i in range(kernel)
                if (p + begin - i * dilation) % stride == 0]
        for _, offset in taps:
            below = max(below, -offset)
            above = max(above, count - 1 + offset - (size - 1))
        phases.append((p, count, taps))
    return out, below, above, phases


#: ONNX Resize's coordinate transformations the plan's resize follows, and its rounding modes.
RESIZE_COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
RESIZE_ROUNDING = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def resize_taps(length: int, resized: int, scale: float, mode: str, coordinates: str,
                rounding: str = "round_prefer_floor"):
    """Where each output index of one axis of ONNX's ``Resize`` reads: ``(first, second,
    weight)`` arrays, the output ``first + weight * (second - first)`` of the two input
    indices (a nearest resize reads one: weight 0).

    ``scale`` is the one the coordinate transformation divides by (the ``scales`` input, or
    ``resized / length`` when sizes were given); ``length * scale``, unfloored, is the
    resized length that ``align_corners`` and ``pytorch_half_pixel`` read. The coordinates
    are float32, as ONNX Runtime computes them (a coordinate exactly half-way between two
    pixels in float32 may not be in float64, and would round the other way). Linear
    interpolation clamps the input coordinate into the axis, as ONNX Runtime does; nearest
    rounds it by ``rounding`` and clamps the index."""
    f = np.float32
    out, scale = np.arange(resized, dtype=f), f(scale)
    extent = f(length) * scale  # the resized length, before the output's is floored
    if coordinates == "half_pixel":
        x = (out + f(0.5)) / scale - f(0.5)
    elif coordinates == "pytorch_half_pixel":
        x = (out + f(0.5)) / scale - f(0.5) if extent != 1 else np.zeros(resized, f)
    elif coordinates == "align_corners":
        x = out * f(length - 1) / (extent - f(1)) if extent != 1 else np.zeros(resized, f)
    elif coordinates == "asymmetric":
        x = out / scale
    else:
        raise ValueError(f"coordinate_transformation_mode must be one of "
                         f"{list(RESIZE_COORDINATES)}, but got {coordinates!r}")
    if mode == "nearest":
        half = x == np.floor(x) + f(0.5)
        if rounding == "round_prefer_floor":
            index = np.where(half, np.floor(x), np.round(x))
        elif rounding == "round_prefer_ceil":
            index = np.where(half, np.ceil(x), np.round(x))
        elif rounding == "floor":
            index = np.floor(x)
        elif rounding == "ceil":
            index = np.ceil(x)
        else:
            raise ValueError(f"nearest_mode must be one of {list(RESIZE_ROUNDING)}, but got "
                             f"{rounding!r}")
        index = np.clip(index, 0, length - 1).astype(np.int64)
        return index, index, np.zeros(resized, f)
    if mode != "linear":
        raise ValueError(f"mode must be 'nearest' or 'linear', but got {mode!r}")
    x = np.clip(x, f(0), f(length - 1))
    first = np.floor(x).astype(np.int64)
    return first, np.minimum(first + 1, length - 1), x - first.astype(f)


class ReceptiveField(NamedTuple):
    """Receptive field of a stack of convolutions, per axis (height, width)."""

    size: tuple[int, int]
    """Input pixels seen by one output pixel of the last layer."""
    jump: tuple[int, int]
    """Distance on the input between neighbouring output pixels (product of strides)."""


def receptive_field(specs: Iterable[ConvSpec]) -> ReceptiveField:
    """Receptive field of a stack of convolutions applied in order.

    Uses ``r_out = r_in + (d*(k-1)) * j_in`` and ``j_out = j_in * s`` per axis, so dilation
    widens the field without adding weights.

    Parameters
    ----------
    specs : iterable of ConvSpec
        The layers, first to last.

    Returns
    -------
    ReceptiveField

    Examples
    --------
    >>> receptive_field([ConvSpec(1, 1, 3), ConvSpec(1, 1, 3)]).size
    (5, 5)
    """
    size = [1, 1]
    jump = [1, 1]
    for spec in specs:
        for axis in range(2):
            size[axis] += (spec.dilated_kernel_size[axis] - 1) * jump[axis]
            jump[axis] *= spec.stride[axis]
    return ReceptiveField(tuple(size), tuple(jump))

