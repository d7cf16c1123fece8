"""What each algorithm serves, where it falls back, and the protocol a backend implements.

Written once for every backend. A backend is a package (``kernels/numba``, ``kernels/cython``,
``kernels/cuda``, and the NumPy reference) with one module per algorithm and a
:class:`Backend` table that says which algorithms it offers, which of its kernels skip zero
padding instead of multiplying it, and where its bias gradient is. :mod:`fastconv.dispatch`
reads the tables; the kernel modules hold only their kernels.

A kernel module implements :class:`KernelModule`: the arrays arrive validated, batched (4-D),
C-contiguous, native-endian and read-only, with a :class:`~fastconv.spec.ConvSpec` that
matches them, and the kernels take plain integers from the spec without validating again.
"""

from __future__ import annotations

from typing import Callable

from ..spec import ConvSpec

__all__ = ["ALGORITHMS", "CORE", "KernelModule", "Backend", "supports", "serves",
           "is_plain_gemm", "always", "never", "off_3x3_path"]


class KernelModule:
    """The functions every algorithm module of every backend provides (a description, for
    readers and type checkers: the modules are plain modules, not subclasses)."""

    def forward(self, x, weight, bias, spec: ConvSpec):
        """The convolution: ``x`` (N, C_in, H, W), ``weight`` ``spec.weight_shape``, ``bias``
        (C_out,) or None; returns a new (N, C_out, H_out, W_out) array of ``x``'s dtype."""

    def backward_input(self, grad_output, weight, spec: ConvSpec):
        """The input gradient: ``grad_output`` (N, C_out, H_out, W_out); returns a new
        (N, C_in, H, W) array, exact zeros where no output reads the input."""

    def backward_weight(self, grad_output, x, spec: ConvSpec):
        """The weight gradient: returns a new array of ``spec.weight_shape``."""


def always(spec: ConvSpec) -> bool:
    return True


def never(spec: ConvSpec) -> bool:
    return False


def off_3x3_path(spec: ConvSpec) -> bool:
    """The depthwise kernels multiply real zeros on their 3x3 path and run the direct kernel,
    which skips padding, everywhere else."""
    from .depthwise_paths import uses_3x3_path

    return not uses_3x3_path(spec)


class Backend:
    """One backend's table.

    Attributes
    ----------
    name : str
    package : str
        The package holding one module per algorithm, named after it.
    modules : tuple of str
        The algorithms it offers.
    bias_gradient : str
        The module (within ``package``) whose ``backward_bias(grad_output)`` sums the
        output gradient per channel; the same for every algorithm.
    skips_padding : dict of algorithm -> predicate on the spec
        True where a kernel never multiplies zero padding, so a caller must materialise the
        padding for a non-finite weight (Inf * 0 is NaN in PyTorch); absent means never.
    """

    __slots__ = ("name", "package", "modules", "bias_gradient", "skips_padding")

    def __init__(self, name: str, package: str, modules: tuple[str, ...], bias_gradient: str,
                 skips_padding: dict[str, Callable[[ConvSpec], bool]] | None = None):
        self.name, self.package, self.modules = name, package, tuple(modules)
        self.bias_gradient, self.skips_padding = bias_gradient, dict(skips_padding or {})

    def replace(self, **changes) -> "Backend":
        """A copy with some attributes changed."""
        values = {k: getattr(self, k) for k in self.__slots__}
        return Backend(**{**values, **changes})

    def module_name(self, algorithm: str) -> str:
        return f"{self.package}.{algorithm}"

    def skips(self, algorithm: str, spec: ConvSpec) -> bool:
        return self.skips_padding.get(algorithm, never)(spec)


# --- what each algorithm serves ---------------------------------------------------------------


def _everything(spec: ConvSpec) -> str | None:
    return None


def _depthwise(spec: ConvSpec) -> str | None:
    if not spec.is_depthwise:
        return (f"depthwise needs groups == in_channels, but got groups={spec.groups} and "
                f"in_channels={spec.in_channels}")
    return None


def _pointwise(spec: ConvSpec) -> str | None:
    if not spec.is_pointwise:
        return f"pointwise needs a 1x1 kernel, but got kernel_size={list(spec.kernel_size)}"
    return None


def _winograd(spec: ConvSpec) -> str | None:
    if spec.kernel_size != (3, 3) or spec.stride != (1, 1) or spec.dilation != (1, 1):
        return (f"winograd F(2x2, 3x3) needs a 3x3 kernel, stride 1 and dilation 1, but got "
                f"kernel_size={list(spec.kernel_size)}, stride={list(spec.stride)} and "
                f"dilation={list(spec.dilation)}")
    return None


_SERVES: dict[str, Callable[[ConvSpec], str | None]] = {
    "direct": _everything,
    "im2col": _everything,
    "depthwise": _depthwise,
    "pointwise": _pointwise,
    "winograd": _winograd,
    "reference": _everything,
}

#: Every algorithm, in the order the backends list them.
ALGORITHMS = tuple(_SERVES)

#: What every compiled backend offers.
CORE = ("direct", "im2col", "depthwise", "pointwise")


def supports(algorithm: str, spec: ConvSpec) -> str | None:
    """Why ``algorithm`` cannot serve ``spec``, or None when it can (on every backend that
    offers it)."""
    return _SERVES[algorithm](spec)


def serves(algorithm: str, spec: ConvSpec) -> bool:
    """Whether ``algorithm`` can serve ``spec``."""
    return supports(algorithm, spec) is None


def reads_whole_input(spec: ConvSpec) -> bool:
    """One output pixel whose window is the whole input, unpadded (a classifier's 1x1 on
    1x1 images, a kernel the size of its input): each image's input, flattened, is its
    column of im2col's matrix, so the batch itself is the matrix, and the convolution one GEMM
    per group over the batch."""
    return (spec.output_size == (1, 1) and spec.pads == ((0, 0), (0, 0))
            and spec.kernel_size == spec.input_size
            and (spec.dilation == (1, 1) or spec.kernel_size == (1, 1)))


def is_plain_gemm(spec: ConvSpec) -> bool:
    """A 1x1 at stride 1 without padding: each image's input already is the column matrix,
    and the convolution is one GEMM per image."""
    return spec.stride == (1, 1) and spec.pads == ((0, 0), (0, 0))
