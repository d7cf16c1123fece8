"""NumPy kernels for the fallback, where ``onnx.reference`` is wrong or much slower than
NumPy allows.

The fallback runs a node through ``onnx.reference`` unless :func:`kernel_for` names one of
these for it: each follows the ONNX specification (and ONNX Runtime, which the tests compare
it with) where ``onnx.reference`` departs from it.
"""

from __future__ import annotations

import numpy as np

from ..spec import pool_output_size, same_pads, tap_positions


def _ints(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else a.i
    return default


def _auto_pad(node) -> str:
    for a in node.attribute:
        if a.name == "auto_pad":
            return a.s.decode()
    return "NOTSET"


class _Pool2d:
    """A 2-D pooling node's attributes, and the windows it reads from an input."""

    def __init__(self, node):
        self.kernel = _ints(node, "kernel_shape", None)
        self.strides = _ints(node, "strides", [1, 1])
        self.dilations = _ints(node, "dilations", [1, 1])
        pads = _ints(node, "pads", [0, 0, 0, 0])
        self.pads = ((pads[0], pads[2]), (pads[1], pads[3]))
        self.auto_pad = _auto_pad(node)
        self.ceil = bool(_ints(node, "ceil_mode", 0))

    def _auto_pads(self, size):
        """``auto_pad``'s pads for an input of ``size``."""
        if self.auto_pad == "VALID":
            return ((0, 0), (0, 0))
        return same_pads(size, self.kernel, self.strides, self.dilations,
                         upper=self.auto_pad == "SAME_UPPER")

    def windows(self, x):
        """``x``'s windows (n, c, oh, ow, kh, kw) (edge values where a tap is outside), the
        taps' rows (oh, kh) and columns (ow, kw) in the unpadded input, and the pads."""
        h, w = x.shape[2:]
        pads = self.pads if self.auto_pad in ("NOTSET", "") else self._auto_pads((h, w))
        oh, ow = pool_output_size((h, w), self.kernel, self.strides, pads, self.dilations,
                                  self.ceil)
        (top, _), (left, _) = pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        rows = tap_positions(oh, kh, sh, top, dh)  # (oh, kh)
        cols = tap_positions(ow, kw, sw, left, dw)  # (ow, kw)
        windows = x[:, :, np.clip(rows, 0, h - 1)[:, None, :, None],
                    np.clip(cols, 0, w - 1)[None, :, None, :]]
        return windows, rows, cols, pads


class MaxPoolIndices(_Pool2d):
    """2-D MaxPool whose Indices output is read: ``onnx.reference`` gives wrong indices when
    windows overlap (strides below the kernel). Indices are into the flattened input, row
    major (``storage_order`` 0) or column major within each channel (1), the first maximum
    of a window in row-major order."""

    def __init__(self, node):
        super().__init__(node)
        self.column_major = bool(_ints(node, "storage_order", 0))
        self.outputs = len(node.output)

    def run(self, _, feeds):
        x = np.asarray(next(iter(feeds.values())))
        n, c, h, w = x.shape
        windows, rows, cols, _ = self.windows(x)
        oh, kh, ow, kw = *rows.shape, *cols.shape
        inside = (((rows >= 0) & (rows < h))[:, None, :, None]
                  & ((cols >= 0) & (cols < w))[None, :, None, :])  # (oh, ow, kh, kw)
        lowest = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
        windows = np.where(inside, windows, lowest).reshape(n, c, oh, ow, kh * kw)
        best = windows.argmax(axis=-1)
        y = np.take_along_axis(windows, best[..., None], -1)[..., 0].astype(x.dtype)
        r = np.take_along_axis(np.broadcast_to(rows[:, None, :, None], (oh, ow, kh, kw))
                               .reshape(1, 1, oh, ow, kh * kw), best[..., None], -1)[..., 0]
        q = np.take_along_axis(np.broadcast_to(cols[None, :, None, :], (oh, ow, kh, kw))
                               .reshape(1, 1, oh, ow, kh * kw), best[..., None], -1)[..., 0]
        plane = (np.arange(n)[:, None] * c + np.arange(c)[None, :])[:, :, None, None] * (h * w)
        index = plane + (q * h + r if self.column_major else r * w + q)
        return [y, index.astype(np.int64)][:self.outputs]


class AveragePool2d(_Pool2d):
    """2-D AveragePool of a float input: ``onnx.reference`` gives wrong averages where the
    pads exceed half the window and the last window of ``ceil_mode`` overhangs them. Each
    window's sum over its taps inside the input, divided by its taps inside the padded input
    (``count_include_pad``: a tap past the pads, in the overhang, is not counted) or inside
    the input, as ONNX Runtime divides."""

    def __init__(self, node):
        super().__init__(node)
        self.include_pad = bool(_ints(node, "count_include_pad", 0))

    def run(self, _, feeds):
        x = np.asarray(next(iter(feeds.values())))
        h, w = x.shape[2:]
        windows, rows, cols, ((top, bottom), (left, right)) = self.windows(x)
        inside = (((rows >= 0) & (rows < h))[:, None, :, None]
                  & ((cols >= 0) & (cols < w))[None, :, None, :])  # (oh, ow, kh, kw)
        if self.include_pad:
            counted = (((rows >= -top) & (rows < h + bottom))[:, None, :, None]
                       & ((cols >= -left) & (cols < w + right))[None, :, None, :])
        else:
            counted = inside
        total = np.where(inside, windows, 0).sum(axis=(-2, -1), dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return [(total / counted.sum(axis=(-2, -1))).astype(x.dtype)]


class Sigmoid:
    """``1 / (1 + exp(-x))`` in the input's dtype, in place in one new array: three passes,
    where ``onnx.reference`` computes both halves of a stable form in float64 and selects
    (a detector's class scores, the one large tensor of its head, took several times
    longer). exp's overflow gives 0 and 1 at the ends; NaN stays NaN."""

    def run(self, _, feeds):
        x = np.asarray(next(iter(feeds.values())))
        out = np.negative(x)
        with np.errstate(over="ignore"):
            np.exp(out, out=out)
        out += 1
        return [np.reciprocal(out, out=out)]


class CoercedSoftmax:
    """Softmax and LogSoftmax before opset 13: the input coerced to 2-D at ``axis`` (every
    dimension from it on is one row), the softmax along each row. ``onnx.reference`` has only
    opset 13's (along ``axis`` alone), a wrong answer for these."""

    def __init__(self, node):
        self.axis = _ints(node, "axis", 1)
        self.log = node.op_type == "LogSoftmax"

    def run(self, _, feeds):
        x = np.asarray(next(iter(feeds.values())))
        if x.size == 0:
            return [x.copy()]
        axis = self.axis % max(1, x.ndim)
        rows = x.reshape(int(np.prod(x.shape[:axis])), -1)
        shifted = rows - rows.max(axis=1, keepdims=True)
        if self.log:
            y = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        else:
            y = np.exp(shifted)
            y /= y.sum(axis=1, keepdims=True)
        return [y.reshape(x.shape).astype(x.dtype)]


def kernel_for(node, opset: int):
    """The NumPy kernel to run ``node`` by (at the model's default-domain ``opset``), or None
    for ``onnx.reference``."""
    if node.op_type in ("Softmax", "LogSoftmax") and opset < 13:
        return CoercedSoftmax(node)
    if (node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]
            and len(_ints(node, "kernel_shape", [])) == 2):
        return MaxPoolIndices(node)
    if node.op_type == "Sigmoid":
        return Sigmoid()
    if node.op_type == "AveragePool" and len(_ints(node, "kernel_shape", [])) == 2:
        return AveragePool2d(node)
    return None
