"""Op counts over lists of layers: MACs, FLOPs, params, bytes, arithmetic intensity.

Every number comes from :class:`~fastconv.ConvSpec`; nothing here knows a formula for an
output size. MACs (multiply-accumulates) and FLOPs (= 2 x MACs) are always reported as two
labelled quantities: mixing them up is the most common complaint about FLOP counters. Bias
additions are not counted (as in the MobileNet paper and fvcore); bias *parameters* are.

Backward counts: the gradient of the input and of the weight each take exactly as many MACs as
the forward (every forward product ``w * x`` has one partner in each), per group, so a grouped
or depthwise layer's weight gradient is *not* multiplied by the number of groups
(``torch.utils.flop_counter`` does that).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .models import layer_names
from .spec import ConvSpec

__all__ = ["layer_counts", "totals", "backward_macs", "separable_prediction",
           "separable_vs_full"]

DTYPES = ("float32", "float64")


def backward_macs(spec: ConvSpec, batch: int = 1) -> dict[str, int]:
    """MACs of the backward pass: ``{"grad_input": ..., "grad_weight": ...}``.

    ``grad_bias`` is a sum (``batch * out_channels * H_out * W_out`` additions), not a MAC.
    """
    return {"grad_input": spec.macs * batch, "grad_weight": spec.macs * batch}


def layer_counts(net: Sequence[ConvSpec], batch: int = 1,
                 names: Sequence[str] | None = None) -> list[dict]:
    """One record per layer, JSON-ready.

    Parameters
    ----------
    net : sequence of ConvSpec
        Layers with their ``input_size`` set (see :func:`fastconv.models.chain`).
    batch : int, default 1
    names : sequence of str, optional
        Defaults to :func:`fastconv.models.layer_names`.

    Returns
    -------
    list of dict
        Keys: ``name, kind, input, output`` (NCHW shapes), ``macs, flops, params``,
        ``bytes_float32, bytes_float64`` (input + weight + output, each moved once),
        ``intensity_float32, intensity_float64`` (FLOPs per byte), ``grad_input_macs,
        grad_weight_macs``.
    """
    names = layer_names(net) if names is None else list(names)
    rows = []
    for name, spec in zip(names, net):
        row = dict(name=name, kind=spec.kind, input=list(spec.input_shape(batch)),
                   output=list(spec.output_shape(batch)), macs=spec.macs * batch,
                   flops=spec.flops * batch, params=spec.params)
        for dtype in DTYPES:
            nbytes = spec.bytes(dtype, batch)
            row[f"bytes_{dtype}"] = nbytes
            row[f"intensity_{dtype}"] = row["flops"] / nbytes
        grads = backward_macs(spec, batch)
        row["grad_input_macs"] = grads["grad_input"]
        row["grad_weight_macs"] = grads["grad_weight"]
        rows.append(row)
    return rows


def totals(rows: Iterable[dict], dtype: str = "float32") -> dict:
    """Sums of :func:`layer_counts` records: ``macs, flops, params, bytes`` (at ``dtype``),
    ``grad_input_macs, grad_weight_macs``, and the net's ``intensity``."""
    rows = list(rows)
    total = {key: sum(r[key] for r in rows)
             for key in ("macs", "flops", "params", "grad_input_macs", "grad_weight_macs")}
    total["bytes"] = sum(r[f"bytes_{dtype}"] for r in rows)
    total["intensity"] = total["flops"] / total["bytes"] if total["bytes"] else 0.0
    return total


def separable_prediction(depthwise: ConvSpec, pointwise: ConvSpec) -> float:
    """``1/N + 1/D_K**2``: a depthwise + pointwise pair's MACs over a full convolution's
    (Howard et al. 2017, eq. 5), with ``N`` the pointwise output channels and ``D_K`` the
    kernel size (``kH * kW`` for a non-square kernel)."""
    kh, kw = depthwise.kernel_size
    return 1 / pointwise.out_channels + 1 / (kh * kw)


def separable_vs_full(separable: Sequence[ConvSpec], full: Sequence[ConvSpec]) -> dict:
    """Compare a separable net with its full-convolution twin, pair by pair.

    Each depthwise + pointwise pair of ``separable`` must face one convolution of ``full``
    with the depthwise's input and the pointwise's output; every other layer must be the same
    in both (MobileNet's first convolution and classifier).

    Returns
    -------
    dict
        ``pairs``: one record per pair (``layers``, ``macs_separable``, ``macs_full``,
        ``ratio`` counted, ``prediction`` = 1/N + 1/D_K^2); ``macs_ratio`` and
        ``params_ratio`` of the whole nets (separable / full); ``pairs_macs_ratio``, the same
        over the pairs only, where the prediction applies.
    """
    names = layer_names(separable)
    pairs, i, j = [], 0, 0
    while i < len(separable) and j < len(full):
        layer, twin = separable[i], full[j]
        if layer.kind == "dw" and i + 1 < len(separable):
            pointwise = separable[i + 1]
            if (twin.in_channels, twin.out_channels) != (layer.in_channels,
                                                         pointwise.out_channels):
                raise ValueError(f"{names[i]}+{names[i + 1]} has no full twin at position {j}")
            sep_macs = layer.macs + pointwise.macs
            pairs.append(dict(layers=f"{names[i]}+{names[i + 1]}", macs_separable=sep_macs,
                              macs_full=twin.macs, ratio=sep_macs / twin.macs,
                              prediction=separable_prediction(layer, pointwise)))
            i += 2
        else:
            if layer != twin:
                raise ValueError(f"{names[i]} differs from its twin {twin}")
            i += 1
        j += 1
    if i != len(separable) or j != len(full):
        raise ValueError("the two nets do not pair up layer by layer")

    def total(key, net):
        return sum(getattr(s, key) for s in net)

    return dict(
        pairs=pairs,
        macs_ratio=total("macs", separable) / total("macs", full),
        params_ratio=total("params", separable) / total("params", full),
        pairs_macs_ratio=(sum(p["macs_separable"] for p in pairs)
                          / sum(p["macs_full"] for p in pairs)),
    )


def share_by_kind(net: Sequence[ConvSpec]) -> dict[str, dict[str, float]]:
    """Fraction of MACs and of params per layer kind (Howard et al. 2017, Table 2).

    Returns ``{kind: {"macs": fraction, "params": fraction}}`` with kinds "pw" (1x1),
    "dw" (depthwise 3x3), "conv" (full convolutions) and "fc".
    """
    macs = np.array([s.macs for s in net], dtype=float)
    params = np.array([s.params for s in net], dtype=float)
    kinds = [s.kind for s in net]
    return {kind: {"macs": macs[[k == kind for k in kinds]].sum() / macs.sum(),
                   "params": params[[k == kind for k in kinds]].sum() / params.sum()}
            for kind in dict.fromkeys(kinds)}


def pass_counts(spec: ConvSpec, batch: int, dtype, mode: str = "forward",
                input_grad: bool = True) -> tuple[int, int]:
    """FLOPs and bytes moved by one layer in a pass: ``mode`` is "forward", "backward" or
    "both". Backward reads dY, X and W and writes dW (and dX unless ``input_grad`` is False);
    its FLOPs are the weight gradient's and the input gradient's."""
    itemsize = np.dtype(dtype).itemsize
    x = int(np.prod(spec.input_shape(batch)))
    y = int(np.prod(spec.output_shape(batch)))
    w = spec.params
    flops = nbytes = 0
    if mode in ("forward", "both"):
        flops += spec.flops * batch
        nbytes += (x + w + y) * itemsize
    if mode in ("backward", "both"):
        grads = backward_macs(spec, batch)
        flops += 2 * grads["grad_weight"] + (2 * grads["grad_input"] if input_grad else 0)
        nbytes += (y + x + w + w + (x if input_grad else 0)) * itemsize
    return flops, nbytes
