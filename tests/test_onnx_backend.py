"""The ONNX conformance suite's node tests (``onnx.backend.test``), run through fastconv's
``onnx.backend.base.Backend``: every case whose operators the importer claims (its own table,
``onnx_import.SUPPORTED``), each compared as ONNX's runner compares it (same dtype and shape,
``rtol`` and ``atol`` of the case).

The cases come from ``onnx.backend.test.case.node.collect_testcases``: the models and the
expected outputs the suite's data files are generated from (the wheel ships the generator,
not the files). A case on 4-D float input of a spatial operator must run wholly on the plan's
kernels, unless :data:`NOT_ON_THE_PLAN` says why not.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from fastconv.network.onnx_backend import Backend  # noqa: E402
from fastconv.network.onnx_import import SUPPORTED  # noqa: E402

pytestmark = pytest.mark.usefixtures("plan_backend")

#: Cases not run, each with its reason.
EXCLUDED = {
    "test_identity_sequence": "a sequence input: a plan's inputs are tensors",
    "test_identity_opt": "an optional input: a plan's inputs are tensors",
}

#: Spatial operators whose 2-D float cases the plan runs on its own kernels.
SPATIAL = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization"}

#: 2-D float cases of :data:`SPATIAL` operators that run (partly) in the fallback, and why.
NOT_ON_THE_PLAN = {
    "test_averagepool_2d_pads": "pads beyond half the kernel",
    "test_averagepool_2d_pads_count_include_pad": "pads beyond half the kernel",
    "test_averagepool_2d_dilations": "a dilated average pool",
    "test_maxpool_2d_pads": "pads beyond half the kernel",
    "test_maxpool_with_argmax_2d_precomputed_pads": "its Indices output is read",
    "test_maxpool_with_argmax_2d_precomputed_strides": "its Indices output is read",
    "test_batchnorm_example_training_mode": "batch norm in training mode (several outputs)",
    "test_batchnorm_epsilon_training_mode": "batch norm in training mode (several outputs)",
}


@functools.lru_cache(maxsize=1)
def _cases() -> dict:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' own overflow warnings
        cases = collect_testcases()
    return {c.name: c for c in cases if c.model is not None
            and all(n.op_type in SUPPORTED for n in c.model.graph.node)}


def _names() -> list[str]:
    return sorted(_cases())


def _spatial_2d(case) -> bool:
    if not case.model.graph.input:
        return False
    first = case.model.graph.input[0].type.tensor_type
    return (any(n.op_type in SPATIAL for n in case.model.graph.node)
            and len(first.shape.dim) == 4 and first.elem_type in (1, 11))


def test_the_suite_is_there():
    names = _names()
    assert len(names) > 100
    for op in ("Conv", "MaxPool", "AveragePool", "BatchNormalization", "Gemm", "Flatten",
               "Reshape", "MatMul", "Concat", "Clip"):
        assert any(op in {n.op_type for n in _cases()[name].model.graph.node}
                   for name in names), op


@pytest.mark.parametrize("name", _names() if onnx is not None else [])
def test_node_case(name):
    if name in EXCLUDED:
        pytest.skip(EXCLUDED[name])
    case = _cases()[name]
    rep = Backend.prepare(case.model)
    for inputs, expected in case.data_sets:
        outputs = rep.run(inputs)
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected):
            got, want = np.asarray(got), np.asarray(want)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol)
    on_plan = not getattr(rep.last, "_programs", None) or not any(
        p.fallback_nodes for p in rep.last._programs.values())
    if name in NOT_ON_THE_PLAN:  # the list kept true
        assert not on_plan, f"{name} now runs on the plan: take it off NOT_ON_THE_PLAN"
    elif _spatial_2d(case):
        assert on_plan, f"{name} ran in the fallback: {str(rep.last)}"
