# cython: language_level=3
"""Direct convolution, AOT-compiled: any kernel, stride, padding, dilation and groups; no
workspace. The twin of ``fastconv.kernels.numba.direct``: each parallel task owns an output
plane (forward), an input-gradient plane, or one filter's gradient."""

include "_common.pxi"

import numpy as np

from . import _checks


def _geometry(spec):
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    return sh, sw, ph, pw, dh, dw


cdef void _forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   const floating[::1] bias, floating[:, :, :, ::1] out, Py_ssize_t sh,
                   Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                   Py_ssize_t groups, int threads) noexcept nogil:
    cdef Py_ssize_t n_images = x.shape[0], height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t c_out = weight.shape[0], cg = weight.shape[1]
    cdef Py_ssize_t kh_size = weight.shape[2], kw_size = weight.shape[3]
    cdef Py_ssize_t ho_size = out.shape[2], wo_size = out.shape[3], og = c_out // groups
    cdef Py_ssize_t task, n, oc, c0, oh, ow, kh, kw, ic, ih, lo, hi, offset
    cdef floating wv
    for task in prange(n_images * c_out, schedule="static", num_threads=threads):
        n = task // c_out
        oc = task - n * c_out
        c0 = (oc // og) * cg
        for oh in range(ho_size):
            for ow in range(wo_size):
                out[n, oc, oh, ow] = bias[oc]
            for kh in range(kh_size):
                ih = oh * sh - ph + kh * dh
                if ih < 0 or ih >= height:
                    continue
                for ic in range(cg):
                    for kw in range(kw_size):
                        offset = kw * dw - pw
                        lo = range_lo(offset, sw, wo_size)
                        hi = range_hi(offset, sw, width, wo_size)
                        wv = weight[oc, ic, kh, kw]
                        for ow in range(lo, hi):
                            out[n, oc, oh, ow] += wv * x[n, c0 + ic, ih, ow * sw + offset]


cdef void _backward_input(const floating[:, :, :, ::1] grad_output,
                          const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] grad_input,
                          Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                          int threads) noexcept nogil:
    cdef Py_ssize_t n_images = grad_input.shape[0], c_in = grad_input.shape[1]
    cdef Py_ssize_t height = grad_input.shape[2], width = grad_input.shape[3]
    cdef Py_ssize_t c_out = weight.shape[0], cg = weight.shape[1]
    cdef Py_ssize_t kh_size = weight.shape[2], kw_size = weight.shape[3]
    cdef Py_ssize_t ho_size = grad_output.shape[2], wo_size = grad_output.shape[3]
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t task, n, c, g, icg, oc, kh, kw, oh, ow, ih, lo, hi, rlo, rhi, offset
    cdef floating wv
    # each task owns one input plane: no two threads add into the same pixel
    for task in prange(n_images * c_in, schedule="static", num_threads=threads):
        n = task // c_in
        c = task - n * c_in
        g = c // cg
        icg = c - g * cg
        for ih in range(height):
            for ow in range(width):
                grad_input[n, c, ih, ow] = 0
        for oc in range(g * og, (g + 1) * og):
            for kh in range(kh_size):
                rlo = range_lo(kh * dh - ph, sh, ho_size)
                rhi = range_hi(kh * dh - ph, sh, height, ho_size)
                for oh in range(rlo, rhi):
                    ih = oh * sh - ph + kh * dh
                    for kw in range(kw_size):
                        offset = kw * dw - pw
                        lo = range_lo(offset, sw, wo_size)
                        hi = range_hi(offset, sw, width, wo_size)
                        wv = weight[oc, icg, kh, kw]
                        for ow in range(lo, hi):
                            grad_input[n, c, ih, ow * sw + offset] += wv * grad_output[n, oc, oh, ow]


cdef void _backward_weight(const floating[:, :, :, ::1] grad_output,
                           const floating[:, :, :, ::1] x, floating[:, :, :, ::1] grad_weight,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                           Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                           int threads) noexcept nogil:
    cdef Py_ssize_t n_images = x.shape[0], height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t c_out = grad_weight.shape[0], cg = grad_weight.shape[1]
    cdef Py_ssize_t kh_size = grad_weight.shape[2], kw_size = grad_weight.shape[3]
    cdef Py_ssize_t ho_size = grad_output.shape[2], wo_size = grad_output.shape[3]
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t oc, c0, icg, kh, kw, n, oh, ow, ih, lo, hi, rlo, rhi, offset
    cdef double acc
    # each task owns one output channel's filters
    for oc in prange(c_out, schedule="static", num_threads=threads):
        c0 = (oc // og) * cg
        for icg in range(cg):
            for kh in range(kh_size):
                rlo = range_lo(kh * dh - ph, sh, ho_size)
                rhi = range_hi(kh * dh - ph, sh, height, ho_size)
                for kw in range(kw_size):
                    offset = kw * dw - pw
                    lo = range_lo(offset, sw, wo_size)
                    hi = range_hi(offset, sw, width, wo_size)
                    acc = 0
                    for n in range(n_images):
                        for oh in range(rlo, rhi):
                            ih = oh * sh - ph + kh * dh
                            for ow in range(lo, hi):
                                acc = acc + grad_output[n, oc, oh, ow] * x[n, c0 + icg, ih, ow * sw + offset]
                    grad_weight[oc, icg, kh, kw] = <floating>acc


cdef void _sum_planes(const floating[:, :, :, ::1] grad_output, floating[::1] out,
                      int threads) noexcept nogil:
    cdef Py_ssize_t c, n, h, w
    cdef double acc
    for c in prange(grad_output.shape[1], schedule="static", num_threads=threads):
        acc = 0
        for n in range(grad_output.shape[0]):
            for h in range(grad_output.shape[2]):
                for w in range(grad_output.shape[3]):
                    acc = acc + grad_output[n, c, h, w]
        out[c] = <floating>acc


def _forward_kernel(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                    const floating[::1] bias, floating[:, :, :, ::1] out, geometry, groups,
                    int threads):
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw
    sh, sw, ph, pw, dh, dw = geometry
    cdef Py_ssize_t g = groups
    with nogil:
        _forward(x, weight, bias, out, sh, sw, ph, pw, dh, dw, g, threads)


def _backward_input_kernel(const floating[:, :, :, ::1] grad_output,
                           const floating[:, :, :, ::1] weight,
                           floating[:, :, :, ::1] grad_input, geometry, groups, int threads):
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw
    sh, sw, ph, pw, dh, dw = geometry
    cdef Py_ssize_t g = groups
    with nogil:
        _backward_input(grad_output, weight, grad_input, sh, sw, ph, pw, dh, dw, g, threads)


def _backward_weight_kernel(const floating[:, :, :, ::1] grad_output,
                            const floating[:, :, :, ::1] x,
                            floating[:, :, :, ::1] grad_weight, geometry, groups, int threads):
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw
    sh, sw, ph, pw, dh, dw = geometry
    cdef Py_ssize_t g = groups
    with nogil:
        _backward_weight(grad_output, x, grad_weight, sh, sw, ph, pw, dh, dw, g, threads)


def _sum_planes_kernel(const floating[:, :, :, ::1] grad_output, floating[::1] out,
                       int threads):
    with nogil:
        _sum_planes(grad_output, out, threads)


def forward(x, weight, bias, spec):
    """Direct convolution forward (see ``fastconv.kernels.numba.direct.forward``)."""
    _checks.forward_args(x, weight, bias, spec)
    out = np.empty(spec.output_shape(x.shape[0]), dtype=x.dtype)
    if bias is None:
        bias = np.zeros(spec.out_channels, dtype=x.dtype)
    _forward_kernel(x, weight, bias, out, _geometry(spec), spec.groups, _checks.threads())
    return out


def backward_input(grad_output, weight, spec):
    """Gradient of the input, scattered from each output plane."""
    n_images = _checks.backward_args(grad_output, spec, weight=weight)
    grad_input = np.empty(spec.input_shape(n_images), dtype=grad_output.dtype)
    _backward_input_kernel(grad_output, weight, grad_input, _geometry(spec), spec.groups,
                           _checks.threads())
    return grad_input


def backward_weight(grad_output, x, spec):
    """Gradient of the weight, as dot products summed in double precision."""
    _checks.backward_args(grad_output, spec, x=x)
    grad_weight = np.empty(spec.weight_shape, dtype=x.dtype)
    _backward_weight_kernel(grad_output, x, grad_weight, _geometry(spec), spec.groups,
                            _checks.threads())
    return grad_weight


def backward_bias(grad_output):
    """Gradient of the bias: ``grad_output`` summed over images and pixels."""
    if not isinstance(grad_output, np.ndarray) or grad_output.ndim != 4:
        raise ValueError("expected a 4-D grad_output")
    out = np.empty(grad_output.shape[1], grad_output.dtype)
    _sum_planes_kernel(np.ascontiguousarray(grad_output), out, _checks.threads())
    return out
