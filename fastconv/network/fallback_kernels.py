"""NumPy kernels for the fallback, where ``onnx.reference`` is wrong or much slower than
NumPy allows.

The fallback runs a node through ``onnx.reference`` unless :func:`kernel_for` names one of
these for it: each follows the ONNX specification (and ONNX Runtime, which the tests compare
it with) where ``onnx.reference`` departs from it.
"""

from __future__ import annotations

import numpy as np

from ..spec import pool_output_size, same_pads


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


class MaxPoolIndices:
    """2-D MaxPool whose Indices output is read: ``onnx.reference`` gives wrong indices when
    windows overlap (strides below the kernel). Indices are into the flattened input, row
    major (``storage_order`` 0) or column major within each channel (1), the first maximum
    of a window in row-major order."""

    def __init__(self, node):
        self.kernel = _ints(node, "kernel_shape", None)
        self.strides = _ints(node, "strides", [1, 1])
        self.dilations = _ints(node, "dilations", [1, 1])
        pads = _ints(node, "pads", [0, 0, 0, 0])
        self.pads = ((pads[0], pads[2]), (pads[1], pads[3]))
        self.auto_pad = _auto_pad(node)
        self.ceil = bool(_ints(node, "ceil_mode", 0))
        self.column_major = bool(_ints(node, "storage_order", 0))
        self.outputs = len(node.output)

    def _auto_pads(self, size):
        """``auto_pad``'s pads for an input of ``size``."""
        if self.auto_pad == "VALID":
            return ((0, 0), (0, 0))
        return same_pads(size, self.kernel, self.strides, self.dilations,
                         upper=self.auto_pad == "SAME_UPPER")

    def run(self, _, feeds):
        x = np.asarray(next(iter(feeds.values())))
        n, c, h, w = x.shape
        pads = self.pads if self.auto_pad in ("NOTSET", "") else self._auto_pads((h, w))
        oh, ow = pool_output_size((h, w), self.kernel, self.strides, pads, self.dilations,
                                  self.ceil)
        (top, _), (left, _) = pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        # the rows and columns each window reads, in the unpadded input (outside: -1)
        rows = (np.arange(oh) * sh - top)[:, None] + np.arange(kh) * dh  # (oh, kh)
        cols = (np.arange(ow) * sw - left)[:, None] + np.arange(kw) * dw  # (ow, kw)
        inside = (((rows >= 0) & (rows < h))[:, None, :, None]
                  & ((cols >= 0) & (cols < w))[None, :, None, :])  # (oh, ow, kh, kw)
        windows = x[:, :, np.clip(rows, 0, h - 1)[:, None, :, None],
                    np.clip(cols, 0, w - 1)[None, :, None, :]]  # (n, c, oh, ow, kh, kw)
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
    return None
