# cython: language_level=3
"""Depthwise convolution, AOT-compiled: the twin of ``fastconv.kernels.numba.depthwise``.

3x3 kernels (any padding, dilation, column stride 1-2): each input plane is copied into a
zero-padded scratch plane stored flat, so the nine taps are nine constant offsets and every
output is written once; stride 2 computes the stride-1 results and keeps every other one.
The input gradient is the same correlation, of the output gradient spread out at the stride
with the rotated kernel; the weight gradient is nine dot products over the flat planes. Other
kernels use the direct kernels.
"""

include "_common.pxi"

from cython.parallel cimport threadid
import numpy as np

from . import _checks, direct
from .direct import backward_bias  # noqa: F401

cdef enum:
    VECTOR = 16  # float32 lanes of an AVX-512 register: whole vectors, no scalar remainder
    FLAT_BELOW = 32  # output rows narrower than this are computed as one flat loop


def _uses_3x3_path(spec):
    return spec.kernel_size == (3, 3) and spec.stride[1] <= 2


def supports(spec):
    """Depthwise needs one input channel per group."""
    if not spec.is_depthwise:
        return (f"depthwise needs groups == in_channels, but got groups={spec.groups} and "
                f"in_channels={spec.in_channels}")
    return None


def skips_padding(spec):
    """The 3x3 path multiplies real zeros; other sizes run the direct kernel."""
    return not _uses_3x3_path(spec)


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


cdef inline void _offsets(Py_ssize_t* o, Py_ssize_t pitch, Py_ssize_t dh,
                          Py_ssize_t dw) noexcept nogil:
    cdef int i, j
    for i in range(3):
        for j in range(3):
            o[3 * i + j] = i * dh * pitch + j * dw


cdef void _forward_plane(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                         const floating[::1] bias, floating[:, :, :, ::1] out,
                         floating* plane, floating* full, Py_ssize_t n, Py_ssize_t oc,
                         Py_ssize_t multiplier, Py_ssize_t rows, Py_ssize_t cols,
                         Py_ssize_t wp, Py_ssize_t span, const Py_ssize_t* o, Py_ssize_t sh,
                         Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    """One output plane. Its locals (the nine weights) are this thread's own: a C array
    declared in a prange body would be shared by the threads."""
    cdef Py_ssize_t ic = oc // multiplier, r, c, p, oh, ow
    cdef floating w[9]
    cdef floating b = bias[oc]
    for r in range(rows):
        for c in range(cols):
            plane[(r + ph) * wp + pw + c] = x[n, ic, r, c]
    for p in range(9):
        w[p] = weight[oc, 0, p // 3, p % 3]
    if out.shape[3] >= FLAT_BELOW:  # wide rows: one vectorised loop per output row
        for oh in range(out.shape[2]):
            if sw == 1:
                _correlate(&plane[oh * sh * wp], &out[n, oc, oh, 0], out.shape[3], o, w, b,
                           False)
            else:  # the stride-1 row, then every other value
                _correlate(&plane[oh * sh * wp], full, sw * (out.shape[3] - 1) + 1, o, w, b,
                           False)
                for ow in range(out.shape[3]):
                    out[n, oc, oh, ow] = full[ow * sw]
        return
    # narrow rows: the stride-1 results over the whole flat plane (pad columns included),
    # then the outputs
    _correlate(plane, full, span, o, w, b, False)
    for oh in range(out.shape[2]):
        for ow in range(out.shape[3]):
            out[n, oc, oh, ow] = full[oh * sh * wp + ow * sw]


cdef void _forward_3x3(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                       const floating[::1] bias, floating[:, :, :, ::1] out,
                       floating[:, ::1] padded, floating[:, ::1] scratch, Py_ssize_t sh,
                       Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                       Py_ssize_t dw, int threads) noexcept nogil:
    cdef Py_ssize_t n_images = x.shape[0], c_in = x.shape[1]
    cdef Py_ssize_t height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t c_out = out.shape[1], ho = out.shape[2], wo = out.shape[3]
    cdef Py_ssize_t multiplier = c_out // c_in
    cdef Py_ssize_t hp = (ho - 1) * sh + 2 * dh + 1, wp = (wo - 1) * sw + 2 * dw + 1
    cdef Py_ssize_t rows = max(0, min(height, hp - ph)), cols = max(0, min(width, wp - pw))
    cdef Py_ssize_t span = ((ho - 1) * sh * wp + (wo - 1) * sw + VECTOR) // VECTOR * VECTOR
    cdef Py_ssize_t o[9]
    _offsets(o, wp, dh, dw)
    cdef Py_ssize_t task, n, oc, t
    for task in prange(n_images * c_out, schedule="static", num_threads=threads):
        t = threadid()  # this thread's padded plane (its border stays zero) and results
        n = task // c_out
        oc = task - n * c_out
        _forward_plane(x, weight, bias, out, &padded[t, 0], &scratch[t, 0], n, oc, multiplier,
                       rows, cols, wp, span, o, sh, sw, ph, pw)


cdef void _input_grad_plane(const floating[:, :, :, ::1] grad_output,
                            const floating[:, :, :, ::1] weight,
                            floating[:, :, :, ::1] grad_input, floating* plane, floating* acc,
                            Py_ssize_t n, Py_ssize_t ic, Py_ssize_t multiplier,
                            Py_ssize_t pitch, Py_ssize_t span, Py_ssize_t rows,
                            Py_ssize_t cols, const Py_ssize_t* o, Py_ssize_t sh,
                            Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                            Py_ssize_t dw) noexcept nogil:
    """One input-gradient plane (its locals are this thread's own)."""
    cdef Py_ssize_t j, oc, oh, ow, p, ih, iw, k
    cdef floating w[9]
    for j in range(multiplier):  # every output channel fed by this input channel
        oc = ic * multiplier + j
        for oh in range(grad_output.shape[2]):
            for ow in range(grad_output.shape[3]):
                plane[(2 * dh + oh * sh) * pitch + 2 * dw + ow * sw] = grad_output[n, oc, oh, ow]
        for k in range(9):  # the kernel rotated by 180 degrees
            w[k] = weight[oc, 0, 2 - k // 3, 2 - k % 3]
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
                              floating[:, ::1] scratch, Py_ssize_t sh, Py_ssize_t sw,
                              Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                              int threads) noexcept nogil:
    cdef Py_ssize_t n_images = grad_output.shape[0], c_out = grad_output.shape[1]
    cdef Py_ssize_t ho = grad_output.shape[2], wo = grad_output.shape[3]
    cdef Py_ssize_t c_in = grad_input.shape[1]
    cdef Py_ssize_t height = grad_input.shape[2], width = grad_input.shape[3]
    cdef Py_ssize_t multiplier = c_out // c_in
    cdef Py_ssize_t hp = (ho - 1) * sh + 2 * dh + 1, wp = (wo - 1) * sw + 2 * dw + 1
    cdef Py_ssize_t pitch = wp + 2 * dw
    cdef Py_ssize_t span = ((hp - 1) * pitch + wp + VECTOR - 1) // VECTOR * VECTOR
    cdef Py_ssize_t rows = max(0, min(height, hp - ph)), cols = max(0, min(width, wp - pw))
    cdef Py_ssize_t o[9]
    _offsets(o, pitch, dh, dw)
    cdef Py_ssize_t task, n, ic, t
    for task in prange(n_images * c_in, schedule="static", num_threads=threads):
        t = threadid()
        n = task // c_in
        ic = task - n * c_in
        _input_grad_plane(grad_output, weight, grad_input, &spread[t, 0], &scratch[t, 0], n,
                          ic, multiplier, pitch, span, rows, cols, o, sh, sw, ph, pw, dh, dw)


cdef void _weight_grad_filter(const floating[:, :, :, ::1] grad_output,
                              const floating[:, :, :, ::1] x,
                              floating[:, :, :, ::1] grad_weight, floating* plane,
                              floating* dy, Py_ssize_t oc, Py_ssize_t multiplier,
                              Py_ssize_t wp, Py_ssize_t span, Py_ssize_t rows, Py_ssize_t cols,
                              const Py_ssize_t* o, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                              Py_ssize_t pw) noexcept nogil:
    """One filter's gradient: nine dot products per image in one pass, in the arrays' dtype,
    summed over images in double (its locals are this thread's own)."""
    cdef Py_ssize_t ic = oc // multiplier, n, r, c, oh, ow, p, k
    cdef double sums[9]
    cdef floating part[9]
    for k in range(9):
        sums[k] = 0
    for n in range(x.shape[0]):
        for r in range(rows):
            for c in range(cols):
                plane[(r + ph) * wp + pw + c] = x[n, ic, r, c]
        for oh in range(grad_output.shape[2]):
            for ow in range(grad_output.shape[3]):
                dy[oh * sh * wp + ow * sw] = grad_output[n, oc, oh, ow]
        _dots(dy, plane, span, o, part)
        for k in range(9):
            sums[k] += part[k]
    for k in range(9):
        grad_weight[oc, 0, k // 3, k % 3] = <floating>sums[k]


cdef void _backward_weight_3x3(const floating[:, :, :, ::1] grad_output,
                               const floating[:, :, :, ::1] x,
                               floating[:, :, :, ::1] grad_weight, floating[:, ::1] padded,
                               floating[:, ::1] spread, Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                               int threads) noexcept nogil:
    cdef Py_ssize_t c_in = x.shape[1], height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t c_out = grad_output.shape[1], ho = grad_output.shape[2]
    cdef Py_ssize_t wo = grad_output.shape[3], multiplier = c_out // c_in
    cdef Py_ssize_t hp = (ho - 1) * sh + 2 * dh + 1, wp = (wo - 1) * sw + 2 * dw + 1
    cdef Py_ssize_t rows = max(0, min(height, hp - ph)), cols = max(0, min(width, wp - pw))
    cdef Py_ssize_t span = ((ho - 1) * sh * wp + (wo - 1) * sw + VECTOR) // VECTOR * VECTOR
    cdef Py_ssize_t o[9]
    _offsets(o, wp, dh, dw)
    cdef Py_ssize_t oc, t
    for oc in prange(c_out, schedule="static", num_threads=threads):
        t = threadid()
        _weight_grad_filter(grad_output, x, grad_weight, &padded[t, 0], &spread[t, 0], oc,
                            multiplier, wp, span, rows, cols, o, sh, sw, ph, pw)


def _geometry(spec):
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    return sh, sw, ph, pw, dh, dw


def _planes(threads, size, dtype):
    """One zeroed flat scratch plane per thread (with a vector of slack at the end)."""
    return np.zeros((threads, size + VECTOR), dtype)


def _forward_kernel(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                    const floating[::1] bias, floating[:, :, :, ::1] out,
                    floating[:, ::1] padded, floating[:, ::1] scratch, geometry, int threads):
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw
    sh, sw, ph, pw, dh, dw = geometry
    with nogil:
        _forward_3x3(x, weight, bias, out, padded, scratch, sh, sw, ph, pw, dh, dw, threads)


def _backward_input_kernel(const floating[:, :, :, ::1] grad_output,
                           const floating[:, :, :, ::1] weight,
                           floating[:, :, :, ::1] grad_input, floating[:, ::1] spread,
                           floating[:, ::1] scratch, geometry, int threads):
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw
    sh, sw, ph, pw, dh, dw = geometry
    with nogil:
        _backward_input_3x3(grad_output, weight, grad_input, spread, scratch, sh, sw, ph, pw,
                            dh, dw, threads)


def _backward_weight_kernel(const floating[:, :, :, ::1] grad_output,
                            const floating[:, :, :, ::1] x,
                            floating[:, :, :, ::1] grad_weight, floating[:, ::1] padded,
                            floating[:, ::1] spread, geometry, int threads):
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw
    sh, sw, ph, pw, dh, dw = geometry
    with nogil:
        _backward_weight_3x3(grad_output, x, grad_weight, padded, spread, sh, sw, ph, pw, dh,
                             dw, threads)


def _plane_sizes(spec):
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    ho, wo = spec.output_size
    hp, wp = (ho - 1) * sh + 2 * dh + 1, (wo - 1) * sw + 2 * dw + 1
    return hp, wp


def forward(x, weight, bias, spec):
    """Depthwise forward (see ``fastconv.kernels.numba.depthwise.forward``)."""
    if not _uses_3x3_path(spec):
        return direct.forward(x, weight, bias, spec)
    _checks.forward_args(x, weight, bias, spec)
    if spec.groups != spec.in_channels:
        raise ValueError("depthwise needs groups == in_channels")
    out = np.empty(spec.output_shape(x.shape[0]), dtype=x.dtype)
    if bias is None:
        bias = np.zeros(spec.out_channels, dtype=x.dtype)
    threads = _checks.threads()
    hp, wp = _plane_sizes(spec)
    _forward_kernel(x, weight, bias, out, _planes(threads, hp * wp, x.dtype),
                    _planes(threads, hp * wp, x.dtype), _geometry(spec), threads)
    return out


def backward_input(grad_output, weight, spec):
    """Depthwise gradient of the input."""
    if not _uses_3x3_path(spec):
        return direct.backward_input(grad_output, weight, spec)
    n_images = _checks.backward_args(grad_output, spec, weight=weight)
    if spec.groups != spec.in_channels:
        raise ValueError("depthwise needs groups == in_channels")
    grad_input = np.empty(spec.input_shape(n_images), dtype=grad_output.dtype)
    threads = _checks.threads()
    hp, wp = _plane_sizes(spec)
    dh, dw = spec.dilation
    pitch = wp + 2 * dw
    _backward_input_kernel(grad_output, weight, grad_input,
                           _planes(threads, (hp + 2 * dh) * pitch, grad_output.dtype),
                           _planes(threads, hp * pitch, grad_output.dtype), _geometry(spec),
                           threads)
    return grad_input


def backward_weight(grad_output, x, spec):
    """Depthwise gradient of the weight."""
    if not _uses_3x3_path(spec):
        return direct.backward_weight(grad_output, x, spec)
    _checks.backward_args(grad_output, spec, x=x)
    if spec.groups != spec.in_channels:
        raise ValueError("depthwise needs groups == in_channels")
    grad_weight = np.empty(spec.weight_shape, dtype=x.dtype)
    threads = _checks.threads()
    hp, wp = _plane_sizes(spec)
    _backward_weight_kernel(grad_output, x, grad_weight, _planes(threads, hp * wp, x.dtype),
                            _planes(threads, hp * wp, x.dtype), _geometry(spec), threads)
    return grad_weight
