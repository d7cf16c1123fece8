"""Direct convolution on the GPU: any kernel, stride, padding, dilation and groups.

Forward: a block computes an 8x8 tile of one output plane; for each input channel it first
stages the input patch the tile reads in shared memory (zeros for padding), then every thread
sums its taps from there. A patch too large for the shared buffer (big strides or dilations)
is read from global memory instead. Backward: a thread per input pixel gathers the output
gradients that reach it (no atomics), and a thread per weight sums its products.
"""

from __future__ import annotations

import math

from numba import cuda

from ...spec import ConvSpec
from ..tuning import CUDA_DIRECT_PATCH as PATCH
from ..tuning import CUDA_DIRECT_TILE as OUT_TILE
from ._common import THREADS, add_bias, blocks, to_device


def _geometry(spec: ConvSpec):
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    return sh, sw, ph, pw, dh, dw


@cuda.jit
def _forward_kernel(x, weight, out, groups, sh, sw, ph, pw, dh, dw, use_shared, zero):
    patch = cuda.shared.array((PATCH, PATCH), dtype=out.dtype)
    n_images, _, height, width = x.shape
    c_out, cg, kh_size, kw_size = weight.shape
    ho_size, wo_size = out.shape[2], out.shape[3]
    tiles_w = (wo_size + OUT_TILE - 1) // OUT_TILE
    plane = cuda.blockIdx.y  # (image, output channel)
    n = plane // c_out
    oc = plane - n * c_out
    oh0 = (cuda.blockIdx.x // tiles_w) * OUT_TILE
    ow0 = (cuda.blockIdx.x - (cuda.blockIdx.x // tiles_w) * tiles_w) * OUT_TILE
    ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
    oh, ow = oh0 + ty, ow0 + tx
    # the input rows/columns the tile reads: from (top, left), patch_h x patch_w of them
    top, left = oh0 * sh - ph, ow0 * sw - pw
    patch_h = (OUT_TILE - 1) * sh + (kh_size - 1) * dh + 1
    patch_w = (OUT_TILE - 1) * sw + (kw_size - 1) * dw + 1
    c0 = (oc // (c_out // groups)) * cg
    acc = zero
    for ic in range(cg):
        if use_shared:
            for i in range(ty, patch_h, OUT_TILE):
                for j in range(tx, patch_w, OUT_TILE):
                    h, w = top + i, left + j
                    if 0 <= h < height and 0 <= w < width:
                        patch[i, j] = x[n, c0 + ic, h, w]
                    else:
                        patch[i, j] = zero
            cuda.syncthreads()
        if oh < ho_size and ow < wo_size:
            for kh in range(kh_size):
                for kw in range(kw_size):
                    i = ty * sh + kh * dh
                    j = tx * sw + kw * dw
                    if use_shared:
                        value = patch[i, j]
                    else:
                        h, w = top + i, left + j
                        value = x[n, c0 + ic, h, w] if 0 <= h < height and 0 <= w < width \
                            else zero
                    acc += weight[oc, ic, kh, kw] * value
        if use_shared:
            cuda.syncthreads()
    if oh < ho_size and ow < wo_size:
        out[n, oc, oh, ow] = acc


@cuda.jit
def _backward_input_kernel(grad_output, weight, grad_input, groups, sh, sw, ph, pw, dh, dw,
                           zero):
    i = cuda.grid(1)
    n_images, c_in, height, width = grad_input.shape
    if i >= n_images * c_in * height * width:
        return
    iw = i % width
    ih = (i // width) % height
    c = (i // (width * height)) % c_in
    n = i // (width * height * c_in)
    c_out, cg, kh_size, kw_size = weight.shape
    og = c_out // groups
    g = c // cg
    ho_size, wo_size = grad_output.shape[2], grad_output.shape[3]
    acc = zero
    for kh in range(kh_size):
        th = ih + ph - kh * dh  # = oh * sh for the output that reads (ih, iw) with tap kh
        if th < 0 or th % sh != 0 or th // sh >= ho_size:
            continue
        for kw in range(kw_size):
            tw = iw + pw - kw * dw
            if tw < 0 or tw % sw != 0 or tw // sw >= wo_size:
                continue
            for oc in range(g * og, (g + 1) * og):
                acc += weight[oc, c - g * cg, kh, kw] * grad_output[n, oc, th // sh, tw // sw]
    grad_input[n, c, ih, iw] = acc


@cuda.jit
def _backward_weight_kernel(grad_output, x, grad_weight, groups, sh, sw, ph, pw, dh, dw,
                            zero):
    i = cuda.grid(1)
    c_out, cg, kh_size, kw_size = grad_weight.shape
    if i >= c_out * cg * kh_size * kw_size:
        return
    kw = i % kw_size
    kh = (i // kw_size) % kh_size
    icg = (i // (kw_size * kh_size)) % cg
    oc = i // (kw_size * kh_size * cg)
    c = (oc // (c_out // groups)) * cg + icg
    n_images, _, height, width = x.shape
    acc = zero
    for n in range(n_images):
        for oh in range(grad_output.shape[2]):
            h = oh * sh - ph + kh * dh
            if h < 0 or h >= height:
                continue
            for ow in range(grad_output.shape[3]):
                w = ow * sw - pw + kw * dw
                if 0 <= w < width:
                    acc += grad_output[n, oc, oh, ow] * x[n, c, h, w]
    grad_weight[oc, icg, kh, kw] = acc


def forward(x, weight, bias, spec: ConvSpec):
    """Direct convolution forward on the device; returns a device array."""
    x, weight = to_device(x), to_device(weight)
    n_images = x.shape[0]
    out = cuda.device_array(spec.output_shape(n_images), x.dtype)
    sh, sw, ph, pw, dh, dw = _geometry(spec)
    kh, kw = spec.kernel_size
    fits = ((OUT_TILE - 1) * sh + (kh - 1) * dh + 1 <= PATCH
            and (OUT_TILE - 1) * sw + (kw - 1) * dw + 1 <= PATCH)
    ho, wo = spec.output_size
    grid = (math.ceil(ho / OUT_TILE) * math.ceil(wo / OUT_TILE), n_images * spec.out_channels)
    if n_images:
        _forward_kernel[grid, (OUT_TILE, OUT_TILE)](x, weight, out, spec.groups, sh, sw, ph,
                                                    pw, dh, dw, fits, x.dtype.type(0))
    if bias is not None:
        add_bias(out, bias)
    return out


def backward_input(grad_output, weight, spec: ConvSpec):
    """Gradient of the input; a device array."""
    dy, weight = to_device(grad_output), to_device(weight)
    grad_input = cuda.device_array(spec.input_shape(dy.shape[0]), dy.dtype)
    total = dy.shape[0] * spec.in_channels * spec.input_size[0] * spec.input_size[1]
    if total:
        _backward_input_kernel[blocks(total), THREADS](dy, weight, grad_input, spec.groups,
                                                       *_geometry(spec), dy.dtype.type(0))
    return grad_input


def backward_weight(grad_output, x, spec: ConvSpec):
    """Gradient of the weight; a device array."""
    dy, x = to_device(grad_output), to_device(x)
    grad_weight = cuda.device_array(spec.weight_shape, x.dtype)
    total = math.prod(spec.weight_shape)
    _backward_weight_kernel[blocks(total), THREADS](dy, x, grad_weight, spec.groups,
                                                    *_geometry(spec), x.dtype.type(0))
    return grad_weight
