"""The plan's edges and element-wise steps on NHWC: NCHW in and out, zeroing a buffer's
border, a per-channel affine (a batch norm that follows no convolution), an activation on its
own, the sum, product, difference or quotient of two activations (one of them perhaps a
pixel per image, as squeeze-and-excitation multiplies, or a constant), the copy of a
concatenation's input into its slice (or of a split's part, a nearest upsampling, a
depth-to-space), a resize, the softmax over the channels, and a gather of values between
the pixels and the channels (a reshape or a transpose).

Element-wise kernels take their operands as (buffer, top, left) with the (h, w) interior size,
so that each may have its own border.
"""

from __future__ import annotations

from numba import prange

from ....runtime import jit
from ...epilogue import ADD, DIV, DIV_INTO, EXP, MUL, SUB, SUB_FROM
from ..microkernel import VECTOR_BYTES, activate_span, interleave3
from .epilogue import activate_row


@jit(parallel=True)
def from_nchw(x, out, top, left, border, tasks):
    """``out[n, top + h, left + w, c] = x[n, c, h, w]`` (``x`` in any memory layout), and
    ``out``'s border zeroed (:func:`zero_border_share`). By rows: an image's three planes
    whose rows are contiguous a vector of pixels at a time (``microkernel.interleave3``),
    else (and the row's last pixels) a plane's part of the row at a time, its reads running
    along the input's row while the row's pixels stay in L1 for the next plane's."""
    n_images, channels, height, width = x.shape
    rows = n_images * height
    flat = out.reshape(-1)
    rows_out, cols_out = out.shape[1], out.shape[2]
    lanes = VECTOR_BYTES // x.itemsize
    # an image's three planes with their rows contiguous: a vector of pixels at a time
    vectors = width // lanes if channels == 3 and x.strides[3] == x.itemsize else 0
    for task in prange(tasks):
        zero_border_share(flat, border, task, tasks)
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // height
            h = r - n * height
            at = ((n * rows_out + top + h) * cols_out + left) * channels
            for v in range(vectors):
                interleave3(flat, at + 3 * v * lanes, x[n, 0, h], x[n, 1, h], x[n, 2, h],
                            v * lanes)
            out_row = out[n, top + h, left:left + width, :]
            for c in range(channels):
                plane_row = x[n, c, h]
                for w in range(vectors * lanes, width):
                    out_row[w, c] = plane_row[w]


@jit(parallel=True)
def to_nchw(src, top, left, out, tasks):
    """``out[n, c, h, w] = src[n, top + h, left + w, c]``: by rows, each row in runs of pixels
    whose channels stay in L1 while every plane's part of the run is written (a plane at a
    time would read the whole buffer per plane)."""
    n_images, channels, height, width = out.shape
    rows = n_images * height
    run = max(1, 8192 // src.itemsize // max(1, src.shape[3]))
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // height
            h = r - n * height
            for w0 in range(0, width, run):
                for c in range(channels):
                    for w in range(w0, min(width, w0 + run)):
                        out[n, c, h, w] = src[n, top + h, left + w, c]


@jit(parallel=True)
def zero_border(buf, border, tasks):
    """Zero the border of ``buf`` (a buffer, flat): :func:`zero_border_share` over ``tasks``
    parallel chunks."""
    for task in prange(tasks):
        zero_border_share(buf, border, task, tasks)


@jit()
def zero_border_share(buf, border, task, tasks):
    """Zero task ``task``'s share (of ``tasks``) of the border of ``buf``, a flat (N, Hb, Wb,
    C) buffer, ``border`` ``(N, Hb, Wb, C, top, bottom, left, right)``: the padding its
    readers read. The kernels that write a buffer call it in each of their tasks, so that
    the border costs no parallel region of its own (they write only the interior)."""
    n_images, rows_b, cols_b, channels = border[0], border[1], border[2], border[3]
    top, bottom, left, right = border[4], border[5], border[6], border[7]
    if top + bottom + left + right == 0:
        return
    rows = n_images * rows_b
    row_length = cols_b * channels
    for r in range(task * rows // tasks, (task + 1) * rows // tasks):
        h = r % rows_b
        at = r * row_length
        if h < top or h >= rows_b - bottom:
            buf[at:at + row_length] = 0
        else:
            buf[at:at + left * channels] = 0
            buf[at + row_length - right * channels:at + row_length] = 0


@jit(parallel=True)
def affine(x, top, left, scale, shift, has_affine, out, out_top, out_left, height, width,
           kind, lo, hi, alpha, beta, tasks):
    """``out = act(x * scale[c] + shift[c])`` (or ``act(x)`` without ``has_affine``)."""
    n_images, rows_in, cols_in, channels = x.shape
    rows_out, cols_out = out.shape[1], out.shape[2]
    xf, of = x.reshape(-1), out.reshape(-1)
    rows = n_images * height
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // height
            h = r - n * height
            x_at = ((n * rows_in + top + h) * cols_in + left) * channels
            o_at = ((n * rows_out + out_top + h) * cols_out + out_left) * channels
            # contiguous slices, so that the loops vectorise (4-D indices of two arrays
            # would not: the compiler cannot tell them apart)
            src, dst = xf[x_at:x_at + width * channels], of[o_at:o_at + width * channels]
            for w in range(width):
                at = w * channels
                if has_affine:
                    for c in range(channels):
                        dst[at + c] = src[at + c] * scale[c] + shift[c]
                else:
                    for c in range(channels):
                        dst[at + c] = src[at + c]
            activate_row(out, n, out_top + h, out_left, width, kind, lo, hi, alpha, beta)


@jit(parallel=True)
def binary(a, a_top, a_left, b, b_top, b_left, b_pixels, op, out, out_top, out_left, height,
           width, kind, lo, hi, alpha, beta, tasks):
    """``out = act(a op b)``, ``op`` one of ``epilogue.BINARY_OPS`` (sum, product,
    difference, quotient, the last two reversed: ``b - a``, ``b / a``, and PRelu: ``a``
    where ``a >= 0``, else ``a * b``); without
    ``b_pixels``, ``b`` is one pixel per image (N, 1, 1, C), broadcast over ``a``'s
    pixels."""
    n_images, rows_a, cols_a, channels = a.shape
    rows_b, cols_b = b.shape[1], b.shape[2]
    rows_out, cols_out = out.shape[1], out.shape[2]
    af, bf, of = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    b_step = channels if b_pixels else 0
    rows = n_images * height
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // height
            h = r - n * height
            a_at = ((n * rows_a + a_top + h) * cols_a + a_left) * channels
            b_at = ((n * rows_b + b_top + (h if b_pixels else 0)) * cols_b + b_left) * channels
            o_at = ((n * rows_out + out_top + h) * cols_out + out_left) * channels
            for w in range(width):
                x = af[a_at + w * channels:a_at + (w + 1) * channels]
                y = bf[b_at + w * b_step:b_at + w * b_step + channels]
                z = of[o_at + w * channels:o_at + (w + 1) * channels]
                if op == ADD:
                    for c in range(channels):
                        z[c] = x[c] + y[c]
                elif op == MUL:
                    for c in range(channels):
                        z[c] = x[c] * y[c]
                elif op == SUB:
                    for c in range(channels):
                        z[c] = x[c] - y[c]
                elif op == DIV:
                    for c in range(channels):
                        z[c] = x[c] / y[c]
                elif op == SUB_FROM:
                    for c in range(channels):
                        z[c] = y[c] - x[c]
                elif op == DIV_INTO:
                    for c in range(channels):
                        z[c] = y[c] / x[c]
                else:  # PRelu: NaN takes the product, and stays NaN
                    for c in range(channels):
                        z[c] = x[c] if x[c] >= 0 else x[c] * y[c]
            activate_row(out, n, out_top + h, out_left, width, kind, lo, hi, alpha, beta)


@jit(parallel=True)
def copy_channels(x, top, left, x_c0, count, out, out_top, out_left, c0, height, width, sh, sw,
                  phase_step, row_step, col_step, tasks):
    """``out[n, out_top + h * sh + i, out_left + w * sw + j, c0 + c] = x[n, top + h, left + w,
    x_c0 + (i * sw + j) * phase_step + c]`` for ``c < count``, ``i < sh``, ``j < sw``: a value
    into its place (one input of a concatenation into its slice, a split's part, or all of a
    value), each pixel repeated ``sh`` x ``sw`` times (``phase_step`` 0: a nearest upsampling
    by integer factors; 1 x 1 copies), or each of its ``sh * sw`` groups of ``phase_step``
    channels into its own output pixel (``phase_step`` = ``count``: a depth-to-space). Input
    pixel (h, w) is ``(top + h * row_step, left + w * col_step)``: 1, 1 but for a strided
    slice of the pixels."""
    n_images, rows_in, cols_in, channels = x.shape
    rows_out, cols_out, total = out.shape[1], out.shape[2], out.shape[3]
    xf, of = x.reshape(-1), out.reshape(-1)
    out_height = height * sh
    rows = n_images * out_height
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // out_height
            oh = r - n * out_height
            h = oh // sh
            x_at = (((n * rows_in + top + h * row_step) * cols_in + left) * channels + x_c0
                    + (oh - h * sh) * sw * phase_step)
            o_at = ((n * rows_out + out_top + oh) * cols_out + out_left) * total + c0
            for w in range(width):
                for j in range(sw):
                    s_at = x_at + w * col_step * channels + j * phase_step
                    at = o_at + (w * sw + j) * total
                    for c in range(count):  # flat indices: no view per pixel, for few channels
                        of[at + c] = xf[s_at + c]


@jit(parallel=True)
def gather(x, rows, c_step, out, out_rows, channels, tasks):
    """``out[out_rows[p] + c] = x[rows[p] + c * c_step]`` for every output pixel ``p`` and
    ``c < channels`` (``x`` and ``out`` flat): a Reshape or Transpose that moves values
    between the pixels and the channels, each output pixel's channels read ``c_step``
    apart."""
    pixels = out_rows.size
    for task in prange(tasks):
        for p in range(task * pixels // tasks, (task + 1) * pixels // tasks):
            at, s_at = out_rows[p], rows[p]
            if c_step == 1:
                for c in range(channels):
                    out[at + c] = x[s_at + c]
            else:
                for c in range(channels):
                    out[at + c] = x[s_at + c * c_step]


@jit(parallel=True)
def softmax(x, top, left, height, width, out, out_top, out_left, tasks):
    """The softmax over each pixel's channels: ``exp(x - max) / sum(exp(x - max))``, the
    exponentials those of the epilogue (``microkernel.activate_span``)."""
    n_images, rows_in, cols_in, channels = x.shape
    rows_out, cols_out = out.shape[1], out.shape[2]
    xf, of = x.reshape(-1), out.reshape(-1)
    zero = x.dtype.type(0)
    rows = n_images * height
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // height
            h = r - n * height
            x_at = ((n * rows_in + top + h) * cols_in + left) * channels
            o_at = ((n * rows_out + out_top + h) * cols_out + out_left) * channels
            for w in range(width):
                src = xf[x_at + w * channels:x_at + (w + 1) * channels]
                at = o_at + w * channels
                dst = of[at:at + channels]
                top_value = src[0]
                for c in range(1, channels):
                    if src[c] > top_value or src[c] != src[c]:  # a NaN makes them all NaN
                        top_value = src[c]
                for c in range(channels):
                    dst[c] = src[c] - top_value
                activate_span(of, at, channels, EXP, zero, zero, zero, zero)
                total = zero
                for c in range(channels):
                    total += dst[c]
                inverse = 1 / total
                for c in range(channels):
                    dst[c] = dst[c] * inverse


@jit(parallel=True)
def resize(x, top, left, height, width, out, out_top, out_left, rows0, rows1, row_w, cols0,
           cols1, col_w, tasks):
    """ONNX's ``Resize`` (nearest or linear) of ``x``'s ``height`` x ``width`` window from
    ``(top, left)`` into ``out`` from ``(out_top, out_left)``, through per-axis tables
    (``spec.resize_taps``): output pixel (i, j) mixes input rows ``rows0[i]``, ``rows1[i]``
    by ``row_w[i]`` and columns ``cols0[j]``, ``cols1[j]`` by ``col_w[j]``, each pixel's
    channels one contiguous vector."""
    n_images, rows_in, cols_in, channels = x.shape
    rows_out, cols_out = out.shape[1], out.shape[2]
    xf, of = x.reshape(-1), out.reshape(-1)
    ho, wo = rows0.size, cols0.size
    rows = n_images * ho
    for task in prange(tasks):
        for r in range(task * rows // tasks, (task + 1) * rows // tasks):
            n = r // ho
            oh = r - n * ho
            a_at = ((n * rows_in + top + rows0[oh]) * cols_in + left) * channels
            b_at = ((n * rows_in + top + rows1[oh]) * cols_in + left) * channels
            wy = row_w[oh]
            o_at = ((n * rows_out + out_top + oh) * cols_out + out_left) * channels
            for ow in range(wo):
                wx = col_w[ow]
                p, q = cols0[ow] * channels, cols1[ow] * channels
                at = o_at + ow * channels
                for c in range(channels):
                    upper = xf[a_at + p + c] + wx * (xf[a_at + q + c] - xf[a_at + p + c])
                    lower = xf[b_at + p + c] + wx * (xf[b_at + q + c] - xf[b_at + p + c])
                    of[at + c] = upper + wy * (lower - upper)


@jit(parallel=True)
def flatten(src, top, left, out, channels, height, width, tasks):
    """``out[n * F + (c * H + h) * W + w] = src[n, top + h, left + w, c]``: torch's flatten
    order, NCHW, for a flat output (N, F)."""
    n_images = src.shape[0]
    features = channels * height * width
    planes = n_images * channels
    for task in prange(tasks):
        for p in range(task * planes // tasks, (task + 1) * planes // tasks):
            n = p // channels
            c = p - n * channels
            base = n * features + c * height * width
            for h in range(height):
                for w in range(width):
                    out[base + h * width + w] = src[n, top + h, left + w, c]
