"""fastconv: compiled convolution kernels for NumPy arrays, and the tools to see where their
time goes.

>>> import fastconv as fc
>>> y = fc.conv2d(x, weight, bias, stride=1, padding="same")      # doctest: +SKIP
"""

# runtime first: it loads numpy's OpenBLAS (see fastconv.runtime)
from . import runtime  # noqa: F401
from . import config, models
from .api import (conv1d, conv1d_backward, conv2d, conv2d_backward, conv2d_input_grad,
                  conv2d_weight_grad, separable_conv2d, separable_conv2d_backward)
from .dispatch import ALGORITHMS, BACKENDS, available_backends
from .spec import ConvSpec, ReceptiveField, receptive_field

__version__ = "0.1.0"


def __getattr__(name):
    # the network plan loads on first use: importing fastconv stays as quick as it was
    if name == "Network":
        from .network import Network

        return Network
    raise AttributeError(f"module 'fastconv' has no attribute {name!r}")


__all__ = [
    "ALGORITHMS",
    "BACKENDS",
    "ConvSpec",
    "Network",
    "ReceptiveField",
    "available_backends",
    "config",
    "conv1d",
    "conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "models",
    "receptive_field",
    "separable_conv2d",
    "separable_conv2d_backward",
]
