"""Squeeze-and-excitation as one step (MobileNet v3's and EfficientNet's SE block): each
image's global average, two small fully connected layers with their activations, and the
input scaled per channel by the gate they give, in one parallel region instead of four.

Each task scales its share of the rows; for every image that share touches, it computes that
image's gate itself, from the whole image: a task reads the input once more than it would in
a step of its own, and no task waits for another.
"""

from __future__ import annotations

from numba import prange

from ....runtime import jit
from ..microkernel import activate_span


@jit(parallel=True)
def squeeze_excite(x, top, left, height, width, w1, b1, s_kind, s_lo, s_hi, s_alpha, s_beta,
                   w2, b2, kind, lo, hi, alpha, beta, out, out_top, out_left, scratch, tasks):
    """``out[n, h, w, c] = x[n, h, w, c] * gate[n, c]``, with ``gate[n] = act(w2 @
    s_act(w1 @ mean[n] + b1) + b2)`` (``act`` the epilogue ``kind, lo, hi, alpha, beta``,
    ``s_act`` the ``s_``-prefixed one), ``mean[n]`` the average of image n's ``height`` x
    ``width`` pixels (the window from ``(top, left)``). ``w1`` is (S, C), ``w2`` (S, C) (the
    second layer's weights transposed, so that its loop runs along the channels); ``scratch``
    (tasks, 2 C + S)."""
    n_images, rows_in, cols_in, channels = x.shape
    rows_out, cols_out = out.shape[1], out.shape[2]
    squeeze = w1.shape[0]
    xf, of = x.reshape(-1), out.reshape(-1)
    scale = 1.0 / (height * width)
    rows = n_images * height
    for task in prange(tasks):
        r0, r1 = task * rows // tasks, (task + 1) * rows // tasks
        s = scratch[task]
        mean = s[:channels]
        gate = s[channels:2 * channels]
        hidden_at = 2 * channels
        for n in range(r0 // height, (r1 + height - 1) // height):
            mean[:] = 0
            for h in range(height):
                row = ((n * rows_in + top + h) * cols_in + left) * channels
                for w in range(width):
                    pixel = xf[row + w * channels:row + (w + 1) * channels]
                    for c in range(channels):
                        mean[c] += pixel[c]
            for j in range(squeeze):
                total = 0.0
                for c in range(channels):
                    total += w1[j, c] * mean[c]
                s[hidden_at + j] = total * scale + b1[j]  # the mean's scale, once per output
            activate_span(s, hidden_at, squeeze, s_kind, s_lo, s_hi, s_alpha, s_beta)
            gate[:] = b2
            for j in range(squeeze):
                hidden = s[hidden_at + j]
                for c in range(channels):
                    gate[c] += w2[j, c] * hidden
            activate_span(s, channels, channels, kind, lo, hi, alpha, beta)
            for r in range(max(r0, n * height), min(r1, (n + 1) * height)):
                h = r - n * height
                x_at = ((n * rows_in + top + h) * cols_in + left) * channels
                o_at = ((n * rows_out + out_top + h) * cols_out + out_left) * channels
                for w in range(width):
                    src = xf[x_at + w * channels:x_at + (w + 1) * channels]
                    dst = of[o_at + w * channels:o_at + (w + 1) * channels]
                    for c in range(channels):
                        dst[c] = src[c] * gate[c]
