"""Public convolution functions: validate -> build a ConvSpec -> dispatch -> run."""

from __future__ import annotations

import functools

import numpy as np

from . import dispatch
from .spec import ConvSpec, _as_int, normalize_tuple

__all__ = ["conv2d", "conv1d", "separable_conv2d", "conv2d_backward", "conv1d_backward",
           "conv2d_input_grad", "conv2d_weight_grad", "separable_conv2d_backward"]


# --- validation ---------------------------------------------------------------------------


def _is_device(value) -> bool:
    """A CUDA device array: numba's, or anything exporting ``__cuda_array_interface__``."""
    return not isinstance(value, np.ndarray) and (
        hasattr(value, "__cuda_array_interface__")
        or type(value).__name__ in ("DeviceNDArray", "FakeCUDAArray"))


def _device_array(fn: str, name: str, value):
    try:
        from .kernels.cuda import _common
    except ImportError as exc:
        raise TypeError(f"{fn}(): argument '{name}' is a CUDA array, but numba.cuda cannot be "
                        f"imported ({exc}): pip install 'fastconv[cuda]'") from None
    return _common.as_device(value)


def _check_array(fn: str, name: str, value):
    if _is_device(value):
        value = _device_array(fn, name, value)
    elif isinstance(value, np.ma.MaskedArray) or not isinstance(value, np.ndarray):
        raise TypeError(
            f"{fn}(): argument '{name}' must be a numpy.ndarray (or a CUDA device array), not "
            f"{type(value).__name__}"
        )
    if value.dtype.kind != "f" or value.dtype.itemsize not in (4, 8):
        raise TypeError(
            f"{fn}(): expected '{name}' to be float32 or float64, but got an array of "
            f"dtype {value.dtype}"
        )
    return value


def _check_arrays(fn: str, x, weight, bias, weight_name: str = "weight"):
    x = _check_array(fn, "x", x)
    weight = _check_array(fn, weight_name, weight)
    # compare the scalar type, so a big-endian float32 matches a native one
    if weight.dtype.type is not x.dtype.type:
        raise TypeError(
            f"Input type ({x.dtype.name}) and {weight_name} type ({weight.dtype.name}) "
            "should be the same"
        )
    if bias is not None:
        bias = _check_array(fn, "bias", bias)
        if bias.dtype.type is not x.dtype.type:
            raise TypeError(
                f"Input type ({x.dtype.name}) and bias type ({bias.dtype.name}) "
                "should be the same"
            )
    return x, weight, bias


def _check_ndim(fn: str, x, weight, spatial: int, weight_name: str = "weight"):
    if x.ndim not in (spatial + 1, spatial + 2):
        raise ValueError(
            f"Expected {spatial + 1}D (unbatched) or {spatial + 2}D (batched) input to {fn}, "
            f"but got input of size: {list(x.shape)}"
        )
    if weight.ndim != spatial + 2:
        raise ValueError(
            f"Expected {spatial + 2}D {weight_name} for {fn}, but got {weight_name} of size "
            f"{list(weight.shape)}"
        )


def _check_channels(x, weight, bias, groups) -> int:
    """PyTorch's checks of the channel, group and bias dimensions (x is batched)."""
    groups = _as_int(groups, "groups")
    if groups <= 0:
        raise ValueError("non-positive groups is not supported")
    w_shape, x_shape = list(weight.shape), list(x.shape)
    if weight.shape[0] == 0:
        raise ValueError(
            f"Given groups={groups}, expected weight to be at least 1 at dimension 0, "
            f"but got weight of size {w_shape} instead"
        )
    if weight.shape[0] % groups:
        raise ValueError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at "
            f"dimension 0, but got weight of size {w_shape} instead"
        )
    if weight.shape[1] == 0:
        raise ValueError(
            f"Given groups={groups}, expected weight to be at least 1 at dimension 1, "
            f"but got weight of size {w_shape} instead"
        )
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(
            f"Given groups={groups}, weight of size {w_shape}, expected input{x_shape} to "
            f"have {weight.shape[1] * groups} channels, but got {x.shape[1]} channels instead"
        )
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(
            f"Given weight of size {w_shape}, expected bias to be 1-dimensional with "
            f"{weight.shape[0]} elements, but got bias of size {list(bias.shape)} instead"
        )
    if 0 in x.shape[2:]:
        raise ValueError(
            "Only zero batch or zero channel inputs are supported, but got input shape: "
            f"{x_shape}"
        )
    if 0 in weight.shape[2:]:
        raise ValueError(f"expected a non-empty kernel, but got weight of size {w_shape}")
    return groups


def _kernel_ready(a):
    """C-contiguous, native-endian, read-only: the one layout the kernels are compiled for.

    Fortran-ordered, negatively strided and other non-contiguous inputs are copied once;
    contiguous ones are used in place (a read-only *view* never copies).
    """
    if a.flags.c_contiguous and not a.flags.writeable and a.dtype.isnative:
        return a  # already what the kernels take (a caller's read-only array, or our own view)
    a = np.ascontiguousarray(a)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    view = a.view()
    view.flags.writeable = False
    return view


def _spec(*args) -> ConvSpec:
    """``ConvSpec(c_in, c_out, kernel, stride, padding, dilation, groups, bias, size)``,
    cached: a network calls the same few geometries over and over, so each is validated once.

    Only plain ints and strings take the cache: its keys compare ``1.0`` and ``True`` equal to
    ``1``, so a float stride would otherwise pass once an int one had been seen."""
    stride, padding, dilation = args[3:6]
    if _plain(stride) and _plain(padding) and _plain(dilation):
        return _cached_spec(*args)
    args = tuple(tuple(a) if isinstance(a, list) else a for a in args)
    return _new_spec(*args)


def _plain(value) -> bool:
    kind = type(value)
    return kind is int or kind is str or (kind is tuple and all(type(v) is int for v in value))


def _new_spec(c_in, c_out, kernel, stride, padding, dilation, groups, bias, size) -> ConvSpec:
    if isinstance(padding, tuple) and any(isinstance(p, (tuple, list)) for p in padding):
        # torch.nn.functional.conv2d pads each side alike; ConvSpec's pairs are for ONNX
        raise TypeError(f"padding must be an int, a tuple of 2 ints, 'same' or 'valid', but "
                        f"got {padding!r}")
    return ConvSpec(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation,
                    groups=groups, bias=bias, input_size=size)


_cached_spec = functools.lru_cache(maxsize=1024)(_new_spec)


# --- running ------------------------------------------------------------------------------


def _placement(backend: str, *arrays) -> tuple[str, bool]:
    """The backend to use and whether the arrays live on a CUDA device: device arrays run on
    the CUDA backend (``"auto"`` goes there too); any other backend would need a copy."""
    on_device = any(_is_device(a) for a in arrays if a is not None)
    if not on_device:
        return backend, False
    if backend not in ("auto", "cuda"):
        raise TypeError(f"the arrays are on a CUDA device: use backend='cuda' (or copy them to "
                        f"the host), not backend={backend!r}")
    return "cuda", True


def _run_forward_cuda(kernel, x, weight, bias, spec: ConvSpec, on_device: bool):
    from .kernels.cuda import _common

    if x.shape[0] == 0:
        out = np.empty(spec.output_shape(0), dtype=x.dtype)
        return _common.to_device(out) if on_device else out
    out = kernel.module.forward(x, weight, bias, spec)
    return out if on_device else out.copy_to_host()


def _run_forward(x, weight, bias, spec: ConvSpec, algorithm: str, backend: str, key=None):
    """Dispatch a validated, batched 2-D convolution; a host call is remembered under ``key``
    (see :func:`_call_key`)."""
    backend, on_device = _placement(backend, x, weight, bias)
    kernel = dispatch.select(spec, algorithm, backend, x.shape[0])
    if kernel.backend == "cuda":
        return _run_forward_cuda(kernel, x, weight, bias, spec, on_device)
    _remember(key, spec, kernel)
    return _run_on_host(kernel, x, weight, bias, spec)


def _run_on_host(kernel, x, weight, bias, spec: ConvSpec):
    """Run a CPU kernel on validated, batched host arrays."""
    if x.shape[0] == 0:
        return np.empty(spec.output_shape(0), dtype=x.dtype.newbyteorder("="))
    x, weight = _kernel_ready(x), _kernel_ready(weight)
    bias = None if bias is None else _kernel_ready(bias)
    if (
        spec.pads != ((0, 0), (0, 0))
        and kernel.skips_padding
        and not np.isfinite(weight).all()
    ):
        # Inf * 0 is NaN: padding a kernel skips must become real zeros (PyTorch's result)
        x = _kernel_ready(np.pad(x, ((0, 0), (0, 0), *spec.pads)))
        spec = spec.without_padding()
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf pass silently, as in torch
        return kernel.module.forward(x, weight, bias, spec)


def _expand(a, axis: int):
    """``a`` with a new axis of length 1 (a view; a device array must be contiguous)."""
    if isinstance(a, np.ndarray):
        return np.expand_dims(a, axis)
    shape = tuple(a.shape[:axis]) + (1,) + tuple(a.shape[axis:])
    if not a.is_c_contiguous():
        raise ValueError(f"a non-contiguous CUDA array of size {list(a.shape)} cannot be viewed "
                         f"as size {list(shape)}: pass a contiguous one, or the 4-D layout")
    return a.reshape(*shape)


def _prepare(fn, x, weight, bias, stride, padding, dilation, groups, spatial,
             with_bias=None):
    """Validate a call and return ``(x, weight, spec, unbatched)`` with 4-D (NCHW) views."""
    _check_ndim(fn, x, weight, spatial)
    unbatched = x.ndim == spatial + 1
    if unbatched:
        x = _expand(x, 0)
    groups = _check_channels(x, weight, bias, groups)
    if spatial == 1:  # a 1-D convolution is a 2-D one of height 1
        x, weight = _expand(x, 2), _expand(weight, 2)
        stride = (1, *normalize_tuple(stride, 1, "stride"))
        dilation = (1, *normalize_tuple(dilation, 1, "dilation"))
        if not isinstance(padding, str):
            padding = (0, *normalize_tuple(padding, 1, "padding"))
    with_bias = bias is not None if with_bias is None else bool(with_bias)
    spec = _spec(x.shape[1], weight.shape[0], weight.shape[2:], stride, padding, dilation,
                 groups, with_bias, x.shape[2:])
    return x, weight, spec, unbatched


def _unbatch(out, spatial, unbatched):
    """Back from the kernels' 4-D layout to the caller's (1-D, unbatched)."""
    if out is None:
        return None
    if spatial == 1 and out.ndim == 4:
        out = out[:, :, 0, :]
    return out[0] if unbatched else out


# Host calls already validated, by everything validation and dispatch read: the arrays' types,
# shapes and dtypes, and the arguments. A network makes the same few calls every pass, and on
# a small depthwise layer the ~20 Python calls of validation are a visible share of its time.
_VALIDATED: dict[tuple, tuple] = {}
_VALIDATED_MAX = 1024


def _call_key(first, second, third, stride, padding, dilation, groups, algorithm, backend,
              *flags):
    """The key of a batched 2-D host call in :data:`_VALIDATED`, or None if it cannot have one.

    ``first``, ``second`` and ``third`` are the call's arrays (``third`` None for an absent
    bias), the first batched and 4-D; ``flags`` are further arguments of exact types (bools,
    strings, tuples of strings). Subclasses, device arrays and anything but plain ints,
    strings and tuples of ints (which would compare equal to ints: ``1.0 == True == 1``)
    always take the full validation. Written out rather than looped: it runs on every call."""
    if (type(first) is not np.ndarray or type(second) is not np.ndarray or first.ndim != 4
            or (third is not None and type(third) is not np.ndarray)
            or type(algorithm) is not str or type(backend) is not str
            or type(groups) is not int
            or not (_plain(stride) and _plain(padding) and _plain(dilation))):
        return None
    for flag in flags:
        kind = type(flag)
        if not (kind is bool or kind is str
                or (kind is tuple and all(type(v) is str for v in flag))):
            return None
    return (first.shape, first.dtype, second.shape, second.dtype,
            None if third is None else (third.shape, third.dtype),
            stride, padding, dilation, groups, algorithm, backend, *flags)


def _remember(key, *validated):
    """Store what a validated host call resolved to (its spec, kernel, and for a
    backward the gradients it needs) under ``key``, unless it has none."""
    if key is None:
        return
    if len(_VALIDATED) >= _VALIDATED_MAX:
        _VALIDATED.clear()
    _VALIDATED[key] = validated


def _convolve(fn, x, weight, bias, stride, padding, dilation, groups, algorithm, backend,
              spatial):
    key = None
    if spatial == 2:
        key = _call_key(x, weight, bias, stride, padding, dilation, groups, algorithm, backend)
        known = _VALIDATED.get(key) if key is not None else None
        if known is not None:
            spec, kernel = known
            return _run_on_host(kernel, x, weight, bias, spec)
    x, weight, bias = _check_arrays(fn, x, weight, bias)
    x, weight, spec, unbatched = _prepare(fn, x, weight, bias, stride, padding, dilation,
                                          groups, spatial)
    out = _run_forward(x, weight, bias, spec, algorithm, backend, key)
    return _unbatch(out, spatial, unbatched)


_GRADIENTS = ("input", "weight", "bias")


def _check_needs(needs, names=_GRADIENTS) -> frozenset:
    if isinstance(needs, str):
        needs = (needs,)
    try:
        needs = frozenset(needs)
    except TypeError:
        raise TypeError(f"needs must be a collection of names from {names}, "
                        f"but got {needs!r}") from None
    if not needs <= set(names):
        raise ValueError(f"needs must be a subset of {names}, but got {sorted(needs)}")
    return needs


def _check_grad_output(fn, grad_output, x, spec: ConvSpec, unbatched, spatial, shown_input,
                       shown_weight):
    """grad_output must have the dtype of the input and the shape of the forward's output."""
    grad_output = _check_array(fn, "grad_output", grad_output)
    if grad_output.dtype.type is not x.dtype.type:
        raise TypeError(f"Input type ({x.dtype.name}) and grad_output type "
                        f"({grad_output.dtype.name}) should be the same")
    expected = list(_unbatch(np.empty(spec.output_shape(x.shape[0]), np.bool_), spatial,
                             unbatched).shape)
    if list(grad_output.shape) != expected:
        raise ValueError(
            f"Expected grad_output of size {expected} for input of size {shown_input} and "
            f"weight of size {shown_weight}, but got grad_output of size "
            f"{list(grad_output.shape)}")
    if unbatched:
        grad_output = _expand(grad_output, 0)
    if spatial == 1:
        grad_output = _expand(grad_output, 2)
    return grad_output


def _run_backward_cuda(kernel, grad_output, x, weight, spec: ConvSpec, needs,
                       on_device: bool):
    from .kernels.cuda import _common

    def place(a):
        return a if on_device else a.copy_to_host()

    grads = [None, None, None]
    if grad_output.shape[0] == 0:
        zeros = [np.zeros(spec.input_shape(0), grad_output.dtype),
                 np.zeros(spec.weight_shape, grad_output.dtype),
                 np.zeros(spec.out_channels, grad_output.dtype)]
        return tuple(None if (name not in needs or (name == "bias" and not spec.bias))
                     else (_common.to_device(z) if on_device else z)
                     for name, z in zip(("input", "weight", "bias"), zeros))
    if "input" in needs:
        grads[0] = place(kernel.module.backward_input(grad_output, weight, spec))
    if "weight" in needs:
        grads[1] = place(kernel.module.backward_weight(grad_output, x, spec))
    if "bias" in needs and spec.bias:
        grads[2] = place(kernel.backward_bias(grad_output))
    return tuple(grads)


def _run_backward(grad_output, x, weight, spec: ConvSpec, needs, algorithm, backend,
                  key=None):
    """Dispatch a validated, batched backward; returns (grad_input, grad_weight, grad_bias).
    A host call is remembered under ``key`` (see :func:`_call_key`)."""
    backend, on_device = _placement(backend, grad_output, x, weight)
    kernel = dispatch.select(spec, algorithm, backend, grad_output.shape[0])
    if kernel.backend == "cuda":
        return _run_backward_cuda(kernel, grad_output, x, weight, spec, needs, on_device)
    _remember(key, spec, kernel, needs)
    return _run_backward_on_host(kernel, grad_output, x, weight, spec, needs)


def _run_backward_on_host(kernel, grad_output, x, weight, spec: ConvSpec, needs):
    """Run a CPU kernel's backward on validated, batched host arrays."""
    dtype = grad_output.dtype.newbyteorder("=")
    n_images = grad_output.shape[0]
    grad_input = grad_weight = grad_bias = None
    if n_images == 0:  # nothing flows back: zeros of the right shapes
        if "input" in needs:
            grad_input = np.zeros(spec.input_shape(0), dtype)
        if "weight" in needs:
            grad_weight = np.zeros(spec.weight_shape, dtype)
        if "bias" in needs and spec.bias:
            grad_bias = np.zeros(spec.out_channels, dtype)
        return grad_input, grad_weight, grad_bias
    grad_output = _kernel_ready(grad_output)
    with np.errstate(invalid="ignore", over="ignore"):
        if "input" in needs:
            grad_input = kernel.module.backward_input(grad_output, _kernel_ready(weight), spec)
        if "weight" in needs:
            grad_weight = kernel.module.backward_weight(grad_output, _kernel_ready(x), spec)
        if "bias" in needs and spec.bias:
            grad_bias = kernel.backward_bias(grad_output)
    return grad_input, grad_weight, grad_bias


def _shape_only(shape, dtype, name):
    """A zero-byte array of ``shape``: lets the shape checks run where only a size is given."""
    try:
        shape = tuple(_as_int(n, name) for n in shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, but got {shape!r}") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"{name} must not be negative, but got {list(shape)}")
    return np.broadcast_to(np.zeros((), dtype), shape)


def _backward(fn, grad_output, x, weight, stride, padding, dilation, groups, bias, needs,
              algorithm, backend, spatial):
    key = None
    if spatial == 2:
        key = _call_key(grad_output, x, weight, stride, padding, dilation, groups, algorithm,
                        backend, bias, needs)
        known = _VALIDATED.get(key) if key is not None else None
        if known is not None:
            spec, kernel, needs = known
            return _run_backward_on_host(kernel, grad_output, x, weight, spec, needs)
    needs = _check_needs(needs)
    x, weight, _ = _check_arrays(fn, x, weight, None)
    shown_input, shown_weight = list(x.shape), list(weight.shape)
    x, weight, spec, unbatched = _prepare(fn, x, weight, None, stride, padding, dilation,
                                          groups, spatial, with_bias=bias)
    grad_output = _check_grad_output(fn, grad_output, x, spec, unbatched, spatial, shown_input,
                                     shown_weight)
    grad_input, grad_weight, grad_bias = _run_backward(grad_output, x, weight, spec, needs,
                                                       algorithm, backend, key)
    if grad_weight is not None and spatial == 1:
        grad_weight = grad_weight[:, :, 0, :]
    return _unbatch(grad_input, spatial, unbatched), grad_weight, grad_bias


# --- public functions ---------------------------------------------------------------------


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto", backend="auto"):
    """2-D convolution (cross-correlation) with the semantics of ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W) or (C_in, H, W)
        Input, float32 or float64. Any memory layout is accepted (non-contiguous, Fortran
        ordered, negatively strided, read-only); non-contiguous input is copied once.
    weight : ndarray, shape (C_out, C_in // groups, kH, kW)
        Filters, same dtype as ``x``.
    bias : ndarray of shape (C_out,), optional
    stride : int or (int, int), default 1
    padding : int, (int, int), "same" or "valid", default 0
        Zero padding on both sides; ``"same"`` (stride 1 only) keeps the input size, putting
        an odd extra row/column at the bottom/right as PyTorch does.
    dilation : int or (int, int), default 1
    groups : int, default 1
        ``C_in`` and ``C_out`` must both be divisible by it.
    algorithm : {"auto", "direct", "im2col", "depthwise", "pointwise", "reference"}
        ``"auto"`` picks depthwise for depthwise layers, pointwise for 1x1 and im2col+GEMM
        otherwise.
    backend : {"auto", "numba", "numpy", "cython", "cuda"}
        ``"numpy"`` runs the slow reference implementation.

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        Same dtype as ``x``.

    Raises
    ------
    TypeError
        Non-array input, unsupported or mismatched dtypes.
    ValueError
        Inconsistent shapes or geometry, or an algorithm/backend that cannot serve the call.

    Examples
    --------
    >>> import numpy as np, fastconv as fc
    >>> x = np.ones((1, 3, 8, 8), np.float32)
    >>> w = np.ones((4, 3, 3, 3), np.float32)
    >>> fc.conv2d(x, w, padding=1).shape
    (1, 4, 8, 8)
    """
    return _convolve("conv2d", x, weight, bias, stride, padding, dilation, groups,
                     algorithm, backend, spatial=2)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm="auto", backend="auto"):
    """1-D convolution with the semantics of ``torch.nn.functional.conv1d``.

    Runs the 2-D kernels on a height-1 view of the data.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, L) or (C_in, L)
    weight : ndarray, shape (C_out, C_in // groups, K)
    bias : ndarray of shape (C_out,), optional
    stride, dilation : int or (int,), default 1
    padding : int, (int,), "same" or "valid", default 0
    groups : int, default 1
    algorithm, backend : str
        As in :func:`conv2d`.

    Returns
    -------
    ndarray, shape (N, C_out, L_out) or (C_out, L_out)

    Examples
    --------
    The full convolution of (1, 2, 3, 4) with (1, 0, 2) is a correlation with the flipped
    kernel and padding 2:

    >>> import numpy as np, fastconv as fc
    >>> x = np.array([[[1.0, 2, 3, 4]]]); w = np.array([[[1.0, 0, 2]]])
    >>> fc.conv1d(x, w[..., ::-1], padding=2)[0, 0]
    array([1., 2., 5., 8., 6., 8.])
    """
    return _convolve("conv1d", x, weight, bias, stride, padding, dilation, groups,
                     algorithm, backend, spatial=1)


def separable_conv2d(x, depthwise_weight, pointwise_weight, bias=None, stride=1, padding=0,
                     dilation=1, *, backend="auto"):
    """Depthwise-separable convolution: a depthwise conv followed by a 1x1 conv.

    ``y = conv2d(conv2d(x, depthwise_weight, stride=stride, padding=padding,
    dilation=dilation, groups=C_in), pointwise_weight, bias)``, as in MobileNet and Keras'
    ``SeparableConv2D``.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W) or (C_in, H, W)
    depthwise_weight : ndarray, shape (C_in * multiplier, 1, kH, kW)
    pointwise_weight : ndarray, shape (C_out, C_in * multiplier, 1, 1)
    bias : ndarray of shape (C_out,), optional
        Added to the pointwise output.
    stride, padding, dilation
        Of the depthwise convolution, as in :func:`conv2d`.
    backend : str
        As in :func:`conv2d`.

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
    """
    hidden = _separable_hidden("separable_conv2d", x, depthwise_weight, pointwise_weight, bias,
                               stride, padding, dilation, backend)
    return conv2d(hidden, pointwise_weight, bias, backend=backend)


def _separable_hidden(fn, x, depthwise_weight, pointwise_weight, bias, stride, padding,
                      dilation, backend):
    """Validate a separable call and return the depthwise output (the pointwise's input)."""
    x, depthwise_weight, bias = _check_arrays(fn, x, depthwise_weight, bias,
                                              "depthwise_weight")
    _, pointwise_weight, _ = _check_arrays(fn, x, pointwise_weight, None, "pointwise_weight")
    _check_ndim(fn, x, depthwise_weight, 2, "depthwise_weight")
    _check_ndim(fn, x, pointwise_weight, 2, "pointwise_weight")
    c_in = x.shape[-3]
    dw_shape, pw_shape = list(depthwise_weight.shape), list(pointwise_weight.shape)
    if dw_shape[1] != 1 or dw_shape[0] == 0 or dw_shape[0] % c_in:
        raise ValueError(
            f"expected depthwise_weight of size [{c_in} * multiplier, 1, kH, kW] for input of "
            f"size {list(x.shape)}, but got depthwise_weight of size {dw_shape}"
        )
    if pw_shape[1:] != [dw_shape[0], 1, 1]:
        raise ValueError(
            f"expected pointwise_weight of size [C_out, {dw_shape[0]}, 1, 1] after "
            f"depthwise_weight of size {dw_shape}, but got pointwise_weight of size {pw_shape}"
        )
    return conv2d(x, depthwise_weight, None, stride, padding, dilation, groups=c_in,
                  backend=backend)


# --- backward ---------------------------------------------------------------------------------


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    bias=True, needs=("input", "weight", "bias"), algorithm="auto",
                    backend="auto"):
    """Gradients of :func:`conv2d`: ``(grad_input, grad_weight, grad_bias)``.

    Parameters
    ----------
    grad_output : ndarray
        Gradient of the loss with respect to the convolution's output; the shape ``conv2d``
        returns for ``x`` and ``weight`` (batched or not, like ``x``).
    x : ndarray, shape (N, C_in, H, W) or (C_in, H, W)
        The forward's input.
    weight : ndarray, shape (C_out, C_in // groups, kH, kW)
    stride, padding, dilation, groups
        As in the forward call.
    bias : bool, default True
        Whether the forward had a bias; ``grad_bias`` is None when it did not.
    needs : collection of {"input", "weight", "bias"}, default all three
        The gradients to compute; the others are returned as None and cost nothing (a caller
        that only needs ``grad_weight`` does not pay for ``grad_input``).
    algorithm, backend : str
        As in :func:`conv2d`; every algorithm has its own backward.

    Returns
    -------
    grad_input : ndarray of ``x``'s shape, or None
    grad_weight : ndarray of ``weight``'s shape, or None
    grad_bias : ndarray of shape (C_out,), or None

    Notes
    -----
    Input pixels that no output reads (past the last full window of a strided or dilated
    convolution) get an exact zero, as in ``torch.nn.grad``.

    Examples
    --------
    >>> import numpy as np, fastconv as fc
    >>> x = np.ones((1, 2, 5, 5)); w = np.ones((3, 2, 3, 3))
    >>> y = fc.conv2d(x, w, padding=1)
    >>> gx, gw, gb = fc.conv2d_backward(np.ones_like(y), x, w, padding=1)
    >>> gx.shape, gw.shape, gb.tolist()
    ((1, 2, 5, 5), (3, 2, 3, 3), [25.0, 25.0, 25.0])
    """
    return _backward("conv2d_backward", grad_output, x, weight, stride, padding, dilation,
                     groups, bias, needs, algorithm, backend, spatial=2)


def conv1d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    bias=True, needs=("input", "weight", "bias"), algorithm="auto",
                    backend="auto"):
    """Gradients of :func:`conv1d`; arguments and results as in :func:`conv2d_backward`."""
    return _backward("conv1d_backward", grad_output, x, weight, stride, padding, dilation,
                     groups, bias, needs, algorithm, backend, spatial=1)


def conv2d_input_grad(input_size, weight, grad_output, stride=1, padding=0, dilation=1,
                      groups=1, *, algorithm="auto", backend="auto"):
    """Gradient of a convolution with respect to its input, as ``torch.nn.grad.conv2d_input``.

    Parameters
    ----------
    input_size : sequence of int
        Shape of the input, ``(N, C_in, H, W)`` (or ``(C_in, H, W)``). With a stride above 1
        several input sizes give the same output size; this says which one.
    weight : ndarray, shape (C_out, C_in // groups, kH, kW)
    grad_output : ndarray
        Gradient with respect to the output.
    stride, padding, dilation, groups, algorithm, backend
        As in :func:`conv2d`.

    Returns
    -------
    ndarray of shape ``input_size``
    """
    fn = "conv2d_input_grad"
    weight = _check_array(fn, "weight", weight)
    x = _shape_only(input_size, weight.dtype, "input_size")
    return _backward(fn, grad_output, x, weight, stride, padding, dilation, groups, False,
                     ("input",), algorithm, backend, spatial=2)[0]


def conv2d_weight_grad(x, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                       *, algorithm="auto", backend="auto"):
    """Gradient of a convolution with respect to its weight, as ``torch.nn.grad.conv2d_weight``.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W) or (C_in, H, W)
    weight_size : sequence of int
        ``(C_out, C_in // groups, kH, kW)``.
    grad_output : ndarray
        Gradient with respect to the output.
    stride, padding, dilation, groups, algorithm, backend
        As in :func:`conv2d`.

    Returns
    -------
    ndarray of shape ``weight_size``
    """
    fn = "conv2d_weight_grad"
    x = _check_array(fn, "x", x)
    weight = _shape_only(weight_size, x.dtype, "weight_size")
    return _backward(fn, grad_output, x, weight, stride, padding, dilation, groups, False,
                     ("weight",), algorithm, backend, spatial=2)[1]


_SEPARABLE_GRADIENTS = ("input", "depthwise_weight", "pointwise_weight", "bias")


def separable_conv2d_backward(grad_output, x, depthwise_weight, pointwise_weight, stride=1,
                              padding=0, dilation=1, *, bias=True, needs=_SEPARABLE_GRADIENTS,
                              backend="auto"):
    """Gradients of :func:`separable_conv2d`.

    The depthwise output is recomputed (it is not stored by the forward), then the pointwise
    and depthwise backward passes run in turn.

    Parameters
    ----------
    grad_output, x, depthwise_weight, pointwise_weight, stride, padding, dilation
        As in :func:`separable_conv2d`, with ``grad_output`` the gradient of its output.
    bias : bool, default True
    needs : collection of {"input", "depthwise_weight", "pointwise_weight", "bias"}
    backend : str

    Returns
    -------
    (grad_input, grad_depthwise_weight, grad_pointwise_weight, grad_bias)
        Each None when not asked for (``grad_bias`` also when ``bias`` is False).
    """
    fn = "separable_conv2d_backward"
    needs = _check_needs(needs, _SEPARABLE_GRADIENTS)
    hidden = _separable_hidden(fn, x, depthwise_weight, pointwise_weight, None, stride,
                               padding, dilation, backend)
    pointwise_needs = set()
    if needs & {"input", "depthwise_weight"}:  # both flow back through the depthwise output
        pointwise_needs.add("input")
    if "pointwise_weight" in needs:
        pointwise_needs.add("weight")
    if "bias" in needs:
        pointwise_needs.add("bias")
    grad_hidden, grad_pw, grad_bias = conv2d_backward(
        grad_output, hidden, pointwise_weight, bias=bias, needs=pointwise_needs, backend=backend)
    depthwise_needs = set()
    if "input" in needs:
        depthwise_needs.add("input")
    if "depthwise_weight" in needs:
        depthwise_needs.add("weight")
    grad_x = grad_dw = None
    if depthwise_needs:
        grad_x, grad_dw, _ = conv2d_backward(grad_hidden, x, depthwise_weight, stride, padding,
                                             dilation, groups=x.shape[-3], bias=False,
                                             needs=depthwise_needs, backend=backend)
    return grad_x, grad_dw, grad_pw, grad_bias
