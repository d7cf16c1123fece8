"""Networks as lists of ConvSpec: MobileNet v1 and its full-convolution twin.

A network here is a plain list of :class:`~fastconv.ConvSpec`, first layer to last, each with
its ``input_size`` set. Everything that counts or times a network walks such a list, so your
own network is just your own list; :func:`chain` fills in the input sizes for you::

    net = chain([ConvSpec(3, 16, 3, stride=2, padding=1),
                 ConvSpec(16, 16, 3, padding=1, groups=16),
                 ConvSpec(16, 32, 1)], input_size=64)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable

from .spec import ConvSpec, _as_int, normalize_tuple

__all__ = ["FullyConnected", "chain", "layer_names", "mobilenet_v1", "MODELS", "get_model"]


@dataclass(frozen=True)
class FullyConnected(ConvSpec):
    """A dense layer, counted as a 1x1 convolution on a 1x1 input (with bias by default).

    Build it with :meth:`of`; its ``kind`` is ``"fc"``.
    """

    @classmethod
    def of(cls, in_features: int, out_features: int, bias: bool = True) -> "FullyConnected":
        """A ``in_features -> out_features`` dense layer."""
        return cls(in_features, out_features, 1, bias=bias, input_size=(1, 1))

    @property
    def kind(self) -> str:
        return "fc"


def chain(specs: Iterable[ConvSpec], input_size) -> list[ConvSpec]:
    """Give each spec the output size of the one before it.

    Parameters
    ----------
    specs : iterable of ConvSpec
        Layers in order; their own ``input_size`` is ignored. A :class:`FullyConnected`
        layer keeps its 1x1 input (it follows a global pooling).
    input_size : int or (int, int)
        Input height and width of the first layer.

    Returns
    -------
    list of ConvSpec

    Raises
    ------
    ValueError
        If a layer's ``in_channels`` differs from the previous layer's ``out_channels``, or a
        layer's kernel no longer fits its input.
    """
    size = normalize_tuple(input_size, 2, "input_size")
    net: list[ConvSpec] = []
    for i, spec in enumerate(specs):
        if net and spec.in_channels != net[-1].out_channels:
            raise ValueError(
                f"layer {i} expects {spec.in_channels} input channels, but layer {i - 1} "
                f"produces {net[-1].out_channels}"
            )
        if not isinstance(spec, FullyConnected):
            spec = replace(spec, input_size=size)
        net.append(spec)
        size = spec.output_size
    return net


def layer_names(net: Iterable[ConvSpec]) -> list[str]:
    """Names such as ``conv1, dw2, pw3, ..., fc28``: the kind and the 1-based position."""
    return [f"{spec.kind}{i}" for i, spec in enumerate(net, start=1)]


# (depthwise stride, pointwise output channels) of MobileNet v1's 13 separable blocks,
# Howard et al. 2017, Table 1. The last block has stride 1, as in the reference
# implementation; the paper's table prints "s2" there by mistake.
_MOBILENET_V1_BLOCKS = (
    (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512),
    (2, 1024), (1, 1024),
)
_MOBILENET_V1_STRIDE = 32  # the product of its strides


def mobilenet_v1(alpha: float = 1.0, resolution: int = 224, separable: bool = True,
                 include_fc: bool = True) -> list[ConvSpec]:
    """MobileNet v1 (Howard et al. 2017, Table 1) as a list of layers.

    Parameters
    ----------
    alpha : float, default 1.0
        Width multiplier: every channel count ``c`` becomes ``int(c * alpha)``.
    resolution : int, default 224
        Input height and width (the resolution multiplier); at least 32, the network's total
        stride.
    separable : bool, default True
        False gives "Conv MobileNet", the twin where each depthwise + pointwise pair is one
        full 3x3 convolution with the pointwise's output channels and the depthwise's stride.
    include_fc : bool, default True
        Append the final 1024 -> 1000 fully connected layer (as a :class:`FullyConnected`).
        The 7x7 average pool before it has no weights and is not listed.

    Returns
    -------
    list of ConvSpec
        28 layers (conv, 13 x (dw, pw), fc) when separable, 15 otherwise. Convolutions have
        no bias (batch normalisation follows them); the fully connected layer has one.

    Examples
    --------
    >>> net = mobilenet_v1()
    >>> round(sum(s.macs for s in net) / 1e6)
    569
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number, but got alpha={alpha!r}")
    resolution = _as_int(resolution, "resolution")
    if resolution < _MOBILENET_V1_STRIDE:
        raise ValueError(
            f"resolution must be at least {_MOBILENET_V1_STRIDE} (MobileNet v1 downsamples "
            f"by {_MOBILENET_V1_STRIDE}), but got resolution={resolution}"
        )

    def width(channels: int) -> int:
        return max(1, int(channels * alpha))

    channels = width(32)
    layers = [ConvSpec(3, channels, 3, stride=2, padding=1)]
    for stride, out in _MOBILENET_V1_BLOCKS:
        out = width(out)
        if separable:
            layers.append(ConvSpec(channels, channels, 3, stride=stride, padding=1,
                                   groups=channels))
            layers.append(ConvSpec(channels, out, 1))
        else:
            layers.append(ConvSpec(channels, out, 3, stride=stride, padding=1))
        channels = out
    if include_fc:
        layers.append(FullyConnected.of(channels, 1000))
    return chain(layers, resolution)


MODELS: dict[str, Callable[..., list[ConvSpec]]] = {
    "mobilenet-v1": lambda **kw: mobilenet_v1(separable=True, **kw),
    "mobilenet-v1-full": lambda **kw: mobilenet_v1(separable=False, **kw),
}


def get_model(name: str, **options) -> list[ConvSpec]:
    """Build a network by name (one of :data:`MODELS`), passing ``options`` to its builder."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**options)
