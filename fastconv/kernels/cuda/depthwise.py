"""Depthwise convolution on the GPU (``groups == in_channels``, any multiplier): a thread per
output pixel, its taps read straight from global memory (a depthwise layer reads each input
pixel only kH*kW times, so staging it in shared memory buys little). The backward runs the
direct kernels, which serve any groups."""

from __future__ import annotations

from numba import cuda

from ...spec import ConvSpec
from . import direct
from ._common import THREADS, add_bias, blocks, to_device


@cuda.jit
def _forward_kernel(x, weight, out, sh, sw, ph, pw, dh, dw, zero):
    i = cuda.grid(1)
    n_images, c_out, ho_size, wo_size = out.shape
    if i >= n_images * c_out * ho_size * wo_size:
        return
    ow = i % wo_size
    oh = (i // wo_size) % ho_size
    oc = (i // (wo_size * ho_size)) % c_out
    n = i // (wo_size * ho_size * c_out)
    c = oc // (c_out // x.shape[1])
    height, width = x.shape[2], x.shape[3]
    acc = zero
    for kh in range(weight.shape[2]):
        h = oh * sh - ph + kh * dh
        for kw in range(weight.shape[3]):
            w = ow * sw - pw + kw * dw
            value = x[n, c, h, w] if 0 <= h < height and 0 <= w < width else zero
            acc += weight[oc, 0, kh, kw] * value
    out[n, oc, oh, ow] = acc


def forward(x, weight, bias, spec: ConvSpec):
    """Depthwise forward on the device; returns a device array."""
    x, weight = to_device(x), to_device(weight)
    out = cuda.device_array(spec.output_shape(x.shape[0]), x.dtype)
    total = out.size
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    (ph, _), (pw, _) = spec.pads
    if total:
        _forward_kernel[blocks(total), THREADS](x, weight, out, sh, sw, ph, pw, dh, dw,
                                                x.dtype.type(0))
    if bias is not None:
        add_bias(out, bias)
    return out


backward_input = direct.backward_input
backward_weight = direct.backward_weight
