"""Whole training steps (forward, cross entropy, backward, SGD with momentum) of the zoo's
networks: fastconv.torch.Planned (the whole network in fastconv), the per-call layers
(each Conv2d a fastconv.torch.Conv2d) and torch (``fastconv.bench.training``), at the
sizes issue "training on the plan" sets its targets at.

    pytest benches/bench_training.py --benchmark-only
    pytest benches/bench_training.py --benchmark-only -k "mobilenet_v1 and batch8"

pytest-benchmark runs one benchmark after another, not interleaved;
``fastconv profile fastconv.bench.zoo:mobilenet_v1 --train --batch 8`` interleaves the
engines with a pause before each, and gives the per-node table beside torch's profiler.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastconv.bench import training

# (zoo network, input size, batch)
CASES = [("mobilenet_v1", 224, 8), ("mobilenet_v1", 224, 32), ("resnet18", 224, 8),
         ("mobilenet_v2", 32, 128), ("resnet18", 32, 128)]


def _label(case):
    name, size, batch = case
    return f"{name}-{size}-batch{batch}"


@pytest.fixture(scope="module", params=CASES, ids=_label)
def case(request):
    torch = pytest.importorskip("torch")
    from fastconv.bench import zoo

    name, size, batch = request.param
    torch.manual_seed(0)
    module = getattr(zoo, name)()
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    return request.param, module, x


@pytest.mark.parametrize("engine", training.ENGINES)
def test_training_step(benchmark, case, engine):
    params, module, x = case
    step = training.trainer(engine, module, x)
    step()
    benchmark.group = _label(params)
    benchmark.pedantic(step, rounds=3, iterations=1)
