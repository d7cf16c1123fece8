"""Forward time of MobileNet v1's layers: every fastconv algorithm beside torch and a bare GEMM.

One benchmark group per layer; compilation happens before the timed region (the first call).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import dispatch, profile
from fastconv.models import layer_names

NET = fc.models.mobilenet_v1(include_fc=False)
LAYERS = list(zip(layer_names(NET), NET))


def _cases():
    for name, spec in LAYERS:
        x, w = profile.layer_arrays(spec, 1, np.float32)
        calls = profile.forward_candidates(spec, x, w, algorithms=["auto", *dispatch.algorithms("numba")])
        for candidate in calls:
            if candidate == "direct" and spec.kind != "conv":
                continue  # the generic kernel takes seconds on these; `fastconv bench` shows it
            yield pytest.param(name, spec, candidate, id=f"{name}-{candidate}")


@pytest.mark.parametrize("layer, spec, candidate", list(_cases()))
def test_forward(benchmark, layer, spec, candidate):
    x, w = profile.layer_arrays(spec, 1, np.float32)
    call = profile.forward_candidates(spec, x, w, algorithms=[candidate] if candidate not in
                                      ("torch", "gemm") else [])[candidate]
    call()  # compile (or load from the cache) outside the timed region
    benchmark.group = f"forward {layer} {spec.kind} {'x'.join(map(str, spec.input_shape()[1:]))}"
    benchmark.extra_info["flops"] = spec.flops
    benchmark(call)
