# cython: language_level=3
"""Depthwise convolution, AOT-compiled: the twin of ``fastconv.kernels.numba.depthwise``.

3x3 kernels (any padding, dilation, column stride 1-2): each input plane is copied into a
flat scratch buffer laid out by one of the paths of ``fastconv.kernels.depthwise_paths`` (a
zero-padded plane, its four phases for stride 2, its even and odd columns for narrow stride-2
planes padded by 1, or three wrapped copies for narrow "same" planes), so the nine taps are
nine constant offsets and every output is written once. The input gradient is the same
correlation with the rotated kernel (of dY spread out at the stride, or per phase); the weight
gradient is nine dot products over the flat planes. Other kernels use the direct kernels.
"""

include "_common.pxi"

from cython.parallel cimport threadid
import numpy as np

from .. import depthwise_paths as paths
from . import _checks, direct

from .. import tuning

# scratch buffers end in whole vectors of this many lanes, so no loop has a scalar remainder
cdef Py_ssize_t VECTOR = tuning.VECTOR


cdef inline void _correlate(const floating* plane, floating* dst, Py_ssize_t span,
                            const Py_ssize_t* o, const floating* w, floating b,
                            bint accumulate) noexcept nogil:
    """``dst[p] (+)= b + sum_k w[k] * plane[p + o[k]]`` for ``p < span``. The offsets and
    weights are copied to locals first, so the compiler keeps them in registers instead of
    reloading them (it cannot prove ``dst`` does not alias them) and vectorises the loop."""
    cdef Py_ssize_t p
    cdef Py_ssize_t o1 = o[1], o2 = o[2], o3 = o[3], o4 = o[4], o5 = o[5], o6 = o[6]
    cdef Py_ssize_t o7 = o[7], o8 = o[8]
    cdef floating w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5]
    cdef floating w6 = w[6], w7 = w[7], w8 = w[8]
    cdef floating value
    for p in range(span):
        value = (b + w0 * plane[p] + w1 * plane[p + o1] + w2 * plane[p + o2]
                 + w3 * plane[p + o3] + w4 * plane[p + o4] + w5 * plane[p + o5]
                 + w6 * plane[p + o6] + w7 * plane[p + o7] + w8 * plane[p + o8])
        if accumulate:
            dst[p] += value
        else:
            dst[p] = value


cdef inline void _dots(const floating* dy, const floating* plane, Py_ssize_t span,
                       const Py_ssize_t* o, floating* out) noexcept nogil:
    """``out[k] = sum_p dy[p] * plane[p + o[k]]``, the nine sums in one pass (locals, as in
    :func:`_correlate`, so that the loop vectorises)."""
    cdef Py_ssize_t p
    cdef Py_ssize_t o1 = o[1], o2 = o[2], o3 = o[3], o4 = o[4], o5 = o[5], o6 = o[6]
    cdef Py_ssize_t o7 = o[7], o8 = o[8]
    cdef floating a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0, a8 = 0
    cdef floating g
    for p in range(span):
        g = dy[p]
        a0 += g * plane[p]
        a1 += g * plane[p + o1]
        a2 += g * plane[p + o2]
        a3 += g * plane[p + o3]
        a4 += g * plane[p + o4]
        a5 += g * plane[p + o5]
        a6 += g * plane[p + o6]
        a7 += g * plane[p + o7]
        a8 += g * plane[p + o8]
    out[0], out[1], out[2], out[3], out[4] = a0, a1, a2, a3, a4
    out[5], out[6], out[7], out[8] = a5, a6, a7, a8


# --- placing a plane in its scratch buffer ------------------------------------------------


cdef inline void _place_padded(const floating* src, Py_ssize_t width, floating* flat,
                               Py_ssize_t pitch, Py_ssize_t top, Py_ssize_t left,
                               Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """``flat[(top + r) * pitch + left + c] = src[r * width + c]``; the rest stays zero."""
    cdef Py_ssize_t r, c
    for r in range(rows):
        for c in range(cols):
            flat[(r + top) * pitch + left + c] = src[r * width + c]


cdef inline void _place_phases(const floating* src, Py_ssize_t width, floating* flat,
                               Py_ssize_t pitch, Py_ssize_t plane, Py_ssize_t top,
                               Py_ssize_t left, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """Padded pixel (R, C) to phase ``2 * (R % 2) + C % 2`` at ``(R // 2) * pitch + C // 2``;
    columns in pairs, one to each column phase."""
    cdef Py_ssize_t r, k, row, base, to_even, to_odd
    cdef Py_ssize_t first = left & 1
    for r in range(rows):
        row = top + r
        base = (row & 1) * 2 * plane + (row >> 1) * pitch
        to_even = base + first * plane + (left >> 1)
        to_odd = base + (1 - first) * plane + ((left + 1) >> 1)
        for k in range(cols >> 1):
            flat[to_even + k] = src[r * width + 2 * k]
            flat[to_odd + k] = src[r * width + 2 * k + 1]
        if cols & 1:
            flat[to_even + (cols >> 1)] = src[r * width + cols - 1]


cdef inline void _place_wrapped(const floating* src, floating* copies, Py_ssize_t copy,
                                Py_ssize_t height, Py_ssize_t width, Py_ssize_t dh,
                                Py_ssize_t dw) noexcept nogil:
    """The three wrapped copies of a plane; the left taps' copy has its last ``dw`` columns
    zeroed, the right taps' its first ``dw``."""
    cdef Py_ssize_t start = dh * width + dw, pixels = height * width, k, p, row
    for k in range(3):
        for p in range(pixels):
            copies[k * copy + start + p] = src[p]
    for row in range(height):
        for k in range(dw):
            copies[start + row * width + width - 1 - k] = 0
            copies[2 * copy + start + row * width + k] = 0


cdef inline void _load_weights(const floating[:, :, :, ::1] weight, Py_ssize_t oc, floating* w,
                               bint rotated) noexcept nogil:
    cdef int k
    for k in range(9):
        if rotated:  # by 180 degrees: the transposed correlation
            w[k] = weight[oc, 0, 2 - k // 3, 2 - k % 3]
        else:
            w[k] = weight[oc, 0, k // 3, k % 3]


# --- forward ----------------------------------------------------------------------------


cdef void _forward_plane(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                         const floating[::1] bias, floating[:, :, :, ::1] out,
                         floating* plane, floating* full, Py_ssize_t n, Py_ssize_t oc,
                         Py_ssize_t multiplier, Py_ssize_t pitch, Py_ssize_t plane_size,
                         Py_ssize_t rows, Py_ssize_t cols, bint phased, bint flat,
                         Py_ssize_t span,
                         const Py_ssize_t* o, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                         Py_ssize_t pw) noexcept nogil:
    """One output plane, "padded" or "phases" (then ``sh == sw == 1`` over the phases). Its
    locals (the nine weights) are this thread's own: a C array declared in a prange body
    would be shared by the threads."""
    cdef Py_ssize_t ic = oc // multiplier, oh, ow
    cdef floating w[9]
    cdef floating b = bias[oc]
    if phased:
        _place_phases(&x[n, ic, 0, 0], x.shape[3], plane, pitch, plane_size, ph, pw, rows, cols)
    else:
        _place_padded(&x[n, ic, 0, 0], x.shape[3], plane, pitch, ph, pw, rows, cols)
    _load_weights(weight, oc, w, False)
    if not flat:  # wide rows: one vectorised loop per output row
        for oh in range(out.shape[2]):
            if sw == 1:
                _correlate(&plane[oh * sh * pitch], &out[n, oc, oh, 0], out.shape[3], o, w, b,
                           False)
            else:  # the stride-1 row, then every other value
                _correlate(&plane[oh * sh * pitch], full, sw * (out.shape[3] - 1) + 1, o, w, b,
                           False)
                for ow in range(out.shape[3]):
                    out[n, oc, oh, ow] = full[ow * sw]
        return
    # narrow rows: the results over the whole flat plane (pad columns included), then the
    # outputs
    _correlate(plane, full, span, o, w, b, False)
    for oh in range(out.shape[2]):
        for ow in range(out.shape[3]):
            out[n, oc, oh, ow] = full[oh * sh * pitch + ow * sw]


cdef void _forward_3x3(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                       const floating[::1] bias, floating[:, :, :, ::1] out,
                       floating[:, ::1] padded, floating[:, ::1] scratch,
                       const Py_ssize_t[::1] offsets, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t pitch, Py_ssize_t plane_size,
                       Py_ssize_t rows, Py_ssize_t cols, bint phased, bint flat,
                       int threads) noexcept nogil:
    cdef Py_ssize_t c_out = out.shape[1], ho = out.shape[2], wo = out.shape[3]
    cdef Py_ssize_t multiplier = c_out // x.shape[1]
    cdef Py_ssize_t span = ((ho - 1) * sh * pitch + (wo - 1) * sw + VECTOR) // VECTOR * VECTOR
    cdef Py_ssize_t task, n, oc, t
    for task in prange(x.shape[0] * c_out, schedule="static", num_threads=threads):
        t = threadid()  # this thread's scratch plane (its border stays zero) and results
        n = task // c_out
        oc = task - n * c_out
        _forward_plane(x, weight, bias, out, &padded[t, 0], &scratch[t, 0], n, oc, multiplier,
                       pitch, plane_size, rows, cols, phased, flat, span, &offsets[0], sh, sw,
                       ph, pw)


cdef void _forward_wrapped_plane(const floating[:, :, :, ::1] x,
                                 const floating[:, :, :, ::1] weight, const floating[::1] bias,
                                 floating[:, :, :, ::1] out, floating* copies, Py_ssize_t copy,
                                 Py_ssize_t n, Py_ssize_t oc, Py_ssize_t multiplier,
                                 const Py_ssize_t* o, Py_ssize_t dh,
                                 Py_ssize_t dw) noexcept nogil:
    """One output plane, "wrapped": written in one flat loop (its locals are its own)."""
    cdef floating w[9]
    _place_wrapped(&x[n, oc // multiplier, 0, 0], copies, copy, x.shape[2], x.shape[3], dh, dw)
    _load_weights(weight, oc, w, False)
    _correlate(copies, &out[n, oc, 0, 0], x.shape[2] * x.shape[3], o, w, bias[oc], False)


cdef void _forward_wrapped(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                           const floating[::1] bias, floating[:, :, :, ::1] out,
                           floating[:, ::1] copies, const Py_ssize_t[::1] offsets,
                           Py_ssize_t copy, Py_ssize_t dh, Py_ssize_t dw,
                           int threads) noexcept nogil:
    cdef Py_ssize_t c_out = out.shape[1], multiplier = out.shape[1] // x.shape[1]
    cdef Py_ssize_t task, t
    for task in prange(x.shape[0] * c_out, schedule="static", num_threads=threads):
        t = threadid()
        _forward_wrapped_plane(x, weight, bias, out, &copies[t, 0], copy, task // c_out,
                               task % c_out, multiplier, &offsets[0], dh, dw)


cdef void _forward_split_plane(const floating[:, :, :, ::1] x,
                               const floating[:, :, :, ::1] weight, const floating[::1] bias,
                               floating[:, :, :, ::1] out, floating* buf, floating* full,
                               Py_ssize_t part, Py_ssize_t span, Py_ssize_t n, Py_ssize_t oc,
                               Py_ssize_t multiplier, const Py_ssize_t* o) noexcept nogil:
    """One output plane, "split": the plane's even and odd columns in one flat pass, every
    row's positions in vectors, the even rows kept (its locals are its own)."""
    cdef const floating* src = &x[n, oc // multiplier, 0, 0]
    cdef Py_ssize_t half = out.shape[3], pairs = x.shape[2] * x.shape[3] // 2
    cdef Py_ssize_t start = 1 + half, k, row, oh, ow
    cdef floating odd
    cdef floating w[9]
    for k in range(pairs):
        odd = src[2 * k + 1]
        buf[start + k] = odd
        buf[part + start + k] = src[2 * k]
        buf[2 * part + start + k] = odd
    for row in range(x.shape[2]):
        buf[start + row * half + half - 1] = 0
    _load_weights(weight, oc, w, False)
    _correlate(buf, full, span, o, w, bias[oc], False)
    for oh in range(out.shape[2]):
        for ow in range(half):
            out[n, oc, oh, ow] = full[2 * oh * half + ow]


cdef void _forward_split(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                         const floating[::1] bias, floating[:, :, :, ::1] out,
                         floating[:, ::1] bufs, floating[:, ::1] fulls,
                         const Py_ssize_t[::1] offsets, Py_ssize_t part,
                         int threads) noexcept nogil:
    cdef Py_ssize_t c_out = out.shape[1], multiplier = out.shape[1] // x.shape[1]
    cdef Py_ssize_t span = ((2 * out.shape[2] - 1) * out.shape[3] + VECTOR - 1) // VECTOR * VECTOR
    cdef Py_ssize_t task, t
    for task in prange(x.shape[0] * c_out, schedule="static", num_threads=threads):
        t = threadid()
        _forward_split_plane(x, weight, bias, out, &bufs[t, 0], &fulls[t, 0], part, span,
                             task // c_out, task % c_out, multiplier, &offsets[0])


# --- backward: input gradient -------------------------------------------------------------


cdef void _input_grad_plane(const floating[:, :, :, ::1] grad_output,
                            const floating[:, :, :, ::1] weight,
                            floating[:, :, :, ::1] grad_input, floating* plane, floating* acc,
                            Py_ssize_t n, Py_ssize_t ic, Py_ssize_t multiplier,
                            Py_ssize_t pitch, Py_ssize_t span, Py_ssize_t rows,
                            Py_ssize_t cols, const Py_ssize_t* o, Py_ssize_t sh,
                            Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                            Py_ssize_t dw) noexcept nogil:
    """One input-gradient plane, "padded": dY spread out at the stride, correlated with the
    rotated kernel (its locals are this thread's own)."""
    cdef Py_ssize_t j, oc, oh, ow, ih, iw
    cdef floating w[9]
    for j in range(multiplier):  # every output channel fed by this input channel
        oc = ic * multiplier + j
        for oh in range(grad_output.shape[2]):
            for ow in range(grad_output.shape[3]):
                plane[(2 * dh + oh * sh) * pitch + 2 * dw + ow * sw] = grad_output[n, oc, oh, ow]
        _load_weights(weight, oc, w, True)
        _correlate(plane, acc, span, o, w, 0, j > 0)
    for ih in range(grad_input.shape[2]):
        for iw in range(grad_input.shape[3]):
            if ih < rows and iw < cols:
                grad_input[n, ic, ih, iw] = acc[(ih + ph) * pitch + pw + iw]
            else:
                grad_input[n, ic, ih, iw] = 0


cdef void _backward_input_3x3(const floating[:, :, :, ::1] grad_output,
                              const floating[:, :, :, ::1] weight,
                              floating[:, :, :, ::1] grad_input, floating[:, ::1] spread,
                              floating[:, ::1] scratch, const Py_ssize_t[::1] offsets,
                              Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                              Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pitch, Py_ssize_t hp,
                              Py_ssize_t rows, Py_ssize_t cols, int threads) noexcept nogil:
    cdef Py_ssize_t c_in = grad_input.shape[1]
    cdef Py_ssize_t multiplier = grad_output.shape[1] // c_in
    cdef Py_ssize_t wp = pitch - 2 * dw  # the forward's padded plane, inside the border
    cdef Py_ssize_t span = ((hp - 1) * pitch + wp + VECTOR - 1) // VECTOR * VECTOR
    cdef Py_ssize_t task, t
    for task in prange(grad_output.shape[0] * c_in, schedule="static", num_threads=threads):
        t = threadid()
        _input_grad_plane(grad_output, weight, grad_input, &spread[t, 0], &scratch[t, 0],
                          task // c_in, task % c_in, multiplier, pitch, span, rows, cols,
                          &offsets[0], sh, sw, ph, pw, dh, dw)


cdef void _wrapped_input_grad_plane(const floating[:, :, :, ::1] grad_output,
                                    const floating[:, :, :, ::1] weight,
                                    floating[:, :, :, ::1] grad_input, floating* copies,
                                    Py_ssize_t copy, Py_ssize_t n, Py_ssize_t ic,
                                    Py_ssize_t multiplier, const Py_ssize_t* o, Py_ssize_t dh,
                                    Py_ssize_t dw) noexcept nogil:
    """"wrapped": the same wrapped correlation, of dY with the rotated kernel."""
    cdef Py_ssize_t j, oc
    cdef floating w[9]
    for j in range(multiplier):
        oc = ic * multiplier + j
        _place_wrapped(&grad_output[n, oc, 0, 0], copies, copy, grad_input.shape[2],
                       grad_input.shape[3], dh, dw)
        _load_weights(weight, oc, w, True)
        _correlate(copies, &grad_input[n, ic, 0, 0], grad_input.shape[2] * grad_input.shape[3],
                   o, w, 0, j > 0)


cdef void _backward_input_wrapped(const floating[:, :, :, ::1] grad_output,
                                  const floating[:, :, :, ::1] weight,
                                  floating[:, :, :, ::1] grad_input, floating[:, ::1] copies,
                                  const Py_ssize_t[::1] offsets, Py_ssize_t copy,
                                  Py_ssize_t dh, Py_ssize_t dw, int threads) noexcept nogil:
    cdef Py_ssize_t c_in = grad_input.shape[1]
    cdef Py_ssize_t multiplier = grad_output.shape[1] // c_in
    cdef Py_ssize_t task, t
    for task in prange(grad_output.shape[0] * c_in, schedule="static", num_threads=threads):
        t = threadid()
        _wrapped_input_grad_plane(grad_output, weight, grad_input, &copies[t, 0], copy,
                                  task // c_in, task % c_in, multiplier, &offsets[0], dh, dw)


cdef void _phase_input_grad_plane(const floating[:, :, :, ::1] grad_output,
                                  const floating[:, :, :, ::1] weight,
                                  floating[:, :, :, ::1] grad_input, floating* d, floating* acc,
                                  Py_ssize_t n, Py_ssize_t ic, Py_ssize_t multiplier,
                                  Py_ssize_t pitch, Py_ssize_t plane, Py_ssize_t ph,
                                  Py_ssize_t pw, Py_ssize_t rows,
                                  Py_ssize_t cols) noexcept nogil:
    """"phases": each phase of the padded plane's gradient collects its own taps (4, 2, 2, 1)
    from dY at ``d[(1 + oh) * pitch + 1 + ow]``; then the phases are interleaved back into the
    input's rows (see the Numba twin)."""
    cdef Py_ssize_t j, oc, q, r, k, row, base, from_even, from_odd, col
    cdef Py_ssize_t one = pitch + 1, first = pw & 1
    cdef floating w[9]
    cdef floating v
    for j in range(multiplier):
        oc = ic * multiplier + j
        for r in range(grad_output.shape[2]):
            for k in range(grad_output.shape[3]):
                d[(1 + r) * pitch + 1 + k] = grad_output[n, oc, r, k]
        _load_weights(weight, oc, w, False)
        for q in range(plane):  # even rows, even columns: taps (0,0) (0,2) (2,0) (2,2)
            v = (w[0] * d[q + one] + w[2] * d[q + one - 1] + w[6] * d[q + one - pitch]
                 + w[8] * d[q + one - pitch - 1])
            acc[q] = acc[q] + v if j > 0 else v
        for q in range(plane):  # even rows, odd columns: taps (0,1) (2,1)
            v = w[1] * d[q + one] + w[7] * d[q + one - pitch]
            acc[plane + q] = acc[plane + q] + v if j > 0 else v
        for q in range(plane):  # odd rows, even columns: taps (1,0) (1,2)
            v = w[3] * d[q + one] + w[5] * d[q + one - 1]
            acc[2 * plane + q] = acc[2 * plane + q] + v if j > 0 else v
        for q in range(plane):  # odd rows, odd columns: tap (1,1)
            v = w[4] * d[q + one]
            acc[3 * plane + q] = acc[3 * plane + q] + v if j > 0 else v
    for r in range(grad_input.shape[2]):
        if r >= rows:
            for col in range(grad_input.shape[3]):
                grad_input[n, ic, r, col] = 0
            continue
        row = ph + r
        base = (row & 1) * 2 * plane + (row >> 1) * pitch
        from_even = base + first * plane + (pw >> 1)
        from_odd = base + (1 - first) * plane + ((pw + 1) >> 1)
        for k in range(cols >> 1):
            grad_input[n, ic, r, 2 * k] = acc[from_even + k]
            grad_input[n, ic, r, 2 * k + 1] = acc[from_odd + k]
        if cols & 1:
            grad_input[n, ic, r, cols - 1] = acc[from_even + (cols >> 1)]
        for col in range(cols, grad_input.shape[3]):
            grad_input[n, ic, r, col] = 0


cdef void _backward_input_phases(const floating[:, :, :, ::1] grad_output,
                                 const floating[:, :, :, ::1] weight,
                                 floating[:, :, :, ::1] grad_input, floating[:, ::1] spread,
                                 floating[:, ::1] scratch, Py_ssize_t ph, Py_ssize_t pw,
                                 Py_ssize_t pitch, Py_ssize_t plane, Py_ssize_t rows,
                                 Py_ssize_t cols, int threads) noexcept nogil:
    cdef Py_ssize_t c_in = grad_input.shape[1]
    cdef Py_ssize_t multiplier = grad_output.shape[1] // c_in
    cdef Py_ssize_t task, t
    for task in prange(grad_output.shape[0] * c_in, schedule="static", num_threads=threads):
        t = threadid()
        _phase_input_grad_plane(grad_output, weight, grad_input, &spread[t, 0], &scratch[t, 0],
                                task // c_in, task % c_in, multiplier, pitch, plane, ph, pw,
                                rows, cols)


# --- backward: weight gradient ------------------------------------------------------------


cdef void _weight_grad_filter(const floating[:, :, :, ::1] grad_output,
                              const floating[:, :, :, ::1] x,
                              floating[:, :, :, ::1] grad_weight, floating* plane,
                              floating* dy, Py_ssize_t oc, Py_ssize_t multiplier,
                              Py_ssize_t pitch, Py_ssize_t plane_size, Py_ssize_t span,
                              Py_ssize_t rows, Py_ssize_t cols, bint phased, bint wrapped,
                              const Py_ssize_t* o, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                              Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """One filter's gradient: nine dot products per image in one pass, in the arrays' dtype,
    summed over images in double (its locals are this thread's own). "wrapped" reads dY's
    plane in place; the others lay it out at the scratch's pitch (at the stride, or at unit
    stride beside the phases)."""
    cdef Py_ssize_t ic = oc // multiplier, n, oh, ow, k
    cdef double sums[9]
    cdef floating part[9]
    for k in range(9):
        sums[k] = 0
    for n in range(x.shape[0]):
        if wrapped:
            _place_wrapped(&x[n, ic, 0, 0], plane, plane_size, x.shape[2], x.shape[3], dh, dw)
            _dots(&grad_output[n, oc, 0, 0], plane, x.shape[2] * x.shape[3], o, part)
        else:
            if phased:
                _place_phases(&x[n, ic, 0, 0], x.shape[3], plane, pitch, plane_size, ph, pw,
                              rows, cols)
            else:
                _place_padded(&x[n, ic, 0, 0], x.shape[3], plane, pitch, ph, pw, rows, cols)
            for oh in range(grad_output.shape[2]):
                for ow in range(grad_output.shape[3]):
                    dy[oh * sh * pitch + ow * sw] = grad_output[n, oc, oh, ow]
            _dots(dy, plane, span, o, part)
        for k in range(9):
            sums[k] += part[k]
    for k in range(9):
        grad_weight[oc, 0, k // 3, k % 3] = <floating>sums[k]


cdef void _backward_weight_3x3(const floating[:, :, :, ::1] grad_output,
                               const floating[:, :, :, ::1] x,
                               floating[:, :, :, ::1] grad_weight, floating[:, ::1] padded,
                               floating[:, ::1] spread, const Py_ssize_t[::1] offsets,
                               Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                               Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pitch,
                               Py_ssize_t plane_size, Py_ssize_t rows, Py_ssize_t cols,
                               bint phased, bint wrapped, int threads) noexcept nogil:
    cdef Py_ssize_t c_out = grad_output.shape[1], ho = grad_output.shape[2]
    cdef Py_ssize_t wo = grad_output.shape[3], multiplier = c_out // x.shape[1]
    cdef Py_ssize_t span = ((ho - 1) * sh * pitch + (wo - 1) * sw + VECTOR) // VECTOR * VECTOR
    cdef Py_ssize_t oc, t
    for oc in prange(c_out, schedule="static", num_threads=threads):
        t = threadid()
        _weight_grad_filter(grad_output, x, grad_weight, &padded[t, 0], &spread[t, 0], oc,
                            multiplier, pitch, plane_size, span, rows, cols, phased, wrapped,
                            &offsets[0], sh, sw, ph, pw, dh, dw)


# --- Python entry points: shapes checked, scratch sized from the path, then nogil ----------


def _planes(threads, size, dtype):
    """One zeroed flat scratch plane per thread (with a vector of slack at the end)."""
    return np.zeros((threads, size + VECTOR), dtype)


def _offsets(offsets):
    return np.asarray(offsets, dtype=np.intp)


def _dtype(const floating[:, :, :, ::1] a):
    return np.float32 if floating is float else np.float64


def _forward_kernel(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                    const floating[::1] bias, floating[:, :, :, ::1] out, spec, int threads):
    cdef Py_ssize_t sh, sw, ph, pw, pitch, plane_size, rows, cols, copy, dh, dw
    cdef bint phased, flat
    cdef const Py_ssize_t[::1] offsets
    cdef floating[:, ::1] padded, scratch
    kind = paths.path(spec)
    dh, dw = spec.dilation
    if kind == "wrapped":
        copy, taps = paths.wrapped_geometry(spec)
        offsets, padded = _offsets(taps), _planes(threads, 3 * copy, _dtype(x))
        with nogil:
            _forward_wrapped(x, weight, bias, out, padded, offsets, copy, dh, dw, threads)
        return
    if kind == "split":
        copy, taps = paths.split_geometry(spec)
        offsets, padded = _offsets(taps), _planes(threads, 3 * copy, _dtype(x))
        scratch = _planes(threads, 2 * out.shape[2] * out.shape[3], _dtype(x))
        with nogil:
            _forward_split(x, weight, bias, out, padded, scratch, offsets, copy, threads)
        return
    (sh, sw), ((ph, _), (pw, _)) = spec.stride, spec.pads
    pitch, plane_size, rows, cols = paths.scratch_geometry(spec)
    phased = kind == "phases"
    if phased:  # the phases turn the stride-2 layer into a stride-1 one over the phases
        sh = sw = 1
    size = 4 * plane_size if phased else plane_size
    offsets = _offsets(paths.scratch_offsets(spec))
    padded, scratch = _planes(threads, size, _dtype(x)), _planes(threads, size, _dtype(x))
    flat = paths.flat_rows(spec)
    with nogil:
        _forward_3x3(x, weight, bias, out, padded, scratch, offsets, sh, sw, ph, pw, pitch,
                     plane_size, rows, cols, phased, flat, threads)


def _backward_input_kernel(const floating[:, :, :, ::1] grad_output,
                           const floating[:, :, :, ::1] weight,
                           floating[:, :, :, ::1] grad_input, spec, int threads):
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw, pitch, plane_size, rows, cols, copy, hp
    cdef const Py_ssize_t[::1] offsets
    cdef floating[:, ::1] spread, scratch
    dtype = _dtype(grad_output)
    kind = paths.path(spec)
    (sh, sw), ((ph, _), (pw, _)), (dh, dw) = spec.stride, spec.pads, spec.dilation
    if kind == "wrapped":
        copy, taps = paths.wrapped_geometry(spec)
        offsets, spread = _offsets(taps), _planes(threads, 3 * copy, dtype)
        with nogil:
            _backward_input_wrapped(grad_output, weight, grad_input, spread, offsets, copy, dh,
                                    dw, threads)
        return
    pitch, plane_size, rows, cols = paths.scratch_geometry(spec)
    if paths.uses_phases(spec):
        spread = _planes(threads, (grad_output.shape[2] + 3) * pitch, dtype)
        scratch = _planes(threads, 4 * plane_size, dtype)
        with nogil:
            _backward_input_phases(grad_output, weight, grad_input, spread, scratch, ph, pw,
                                   pitch, plane_size, rows, cols, threads)
        return
    pitch, hp, taps = paths.spread_geometry(spec)
    offsets = _offsets(taps)
    spread = _planes(threads, (hp + 2 * dh) * pitch, dtype)
    scratch = _planes(threads, hp * pitch, dtype)
    with nogil:
        _backward_input_3x3(grad_output, weight, grad_input, spread, scratch, offsets, sh, sw,
                            ph, pw, dh, dw, pitch, hp, rows, cols, threads)


def _backward_weight_kernel(const floating[:, :, :, ::1] grad_output,
                            const floating[:, :, :, ::1] x,
                            floating[:, :, :, ::1] grad_weight, spec, int threads):
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw, pitch, plane_size, rows, cols, copy
    cdef bint phased, wrapped
    cdef const Py_ssize_t[::1] offsets
    cdef floating[:, ::1] padded, spread
    dtype = _dtype(x)
    kind = paths.path(spec)
    (sh, sw), ((ph, _), (pw, _)), (dh, dw) = spec.stride, spec.pads, spec.dilation
    wrapped, phased = kind == "wrapped", paths.uses_phases(spec)
    if wrapped:
        copy, taps = paths.wrapped_geometry(spec)
        pitch = rows = cols = 0
        plane_size, size, offsets = copy, 3 * copy, _offsets(taps)
        padded = _planes(threads, size, dtype)
        spread = _planes(threads, 0, dtype)
    else:
        pitch, plane_size, rows, cols = paths.scratch_geometry(spec)
        if phased:  # dY sits at unit stride beside the input's phases
            sh = sw = 1
        offsets = _offsets(paths.scratch_offsets(spec))
        padded = _planes(threads, 4 * plane_size if phased else plane_size, dtype)
        spread = _planes(threads, plane_size, dtype)
    with nogil:
        _backward_weight_3x3(grad_output, x, grad_weight, padded, spread, offsets, sh, sw, ph,
                             pw, dh, dw, pitch, plane_size, rows, cols, phased, wrapped,
                             threads)


def forward(x, weight, bias, spec):
    """Depthwise forward (see ``fastconv.kernels.numba.depthwise.forward``)."""
    if paths.is_channel_scale(spec):
        _checks.forward_args(x, weight, bias, spec)
        return paths.channel_scale_forward(x, weight, bias, spec)
    if not paths.uses_3x3_path(spec):
        return direct.forward(x, weight, bias, spec)
    _checks.forward_args(x, weight, bias, spec)
    if spec.groups != spec.in_channels:
        raise ValueError("depthwise needs groups == in_channels")
    out = np.empty(spec.output_shape(x.shape[0]), dtype=x.dtype)
    if bias is None:
        bias = np.zeros(spec.out_channels, dtype=x.dtype)
    _forward_kernel(x, weight, bias, out, spec, _checks.threads(x.size + out.size))
    return out


def backward_input(grad_output, weight, spec):
    """Depthwise gradient of the input."""
    if paths.is_channel_scale(spec):
        _checks.backward_args(grad_output, spec, weight=weight)
        return paths.channel_scale_backward_input(grad_output, weight, spec)
    if not paths.uses_3x3_path(spec):
        return direct.backward_input(grad_output, weight, spec)
    n_images = _checks.backward_args(grad_output, spec, weight=weight)
    if spec.groups != spec.in_channels:
        raise ValueError("depthwise needs groups == in_channels")
    grad_input = np.empty(spec.input_shape(n_images), dtype=grad_output.dtype)
    _backward_input_kernel(grad_output, weight, grad_input, spec,
                           _checks.threads(grad_output.size + grad_input.size))
    return grad_input


def backward_weight(grad_output, x, spec):
    """Depthwise gradient of the weight."""
    if paths.is_channel_scale(spec):
        _checks.backward_args(grad_output, spec, x=x)
        return paths.channel_scale_backward_weight(grad_output, x, spec)
    if not paths.uses_3x3_path(spec):
        return direct.backward_weight(grad_output, x, spec)
    _checks.backward_args(grad_output, spec, x=x)
    if spec.groups != spec.in_channels:
        raise ValueError("depthwise needs groups == in_channels")
    grad_weight = np.empty(spec.weight_shape, dtype=x.dtype)
    _backward_weight_kernel(grad_output, x, grad_weight, spec,
                            _checks.threads(grad_output.size + x.size))
    return grad_weight
