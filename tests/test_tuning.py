"""The tuning in force (kernels/tuned.py) and ``fastconv tune`` (bench/tune.py): a stored
tuning is keyed by the CPU, checked when read, applied to the planner's thresholds, named by
``print(plan)`` and ``fastconv info``; tune keeps a candidate only when it is faster by the
margin."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastconv import cli
from fastconv.bench import harness, tune
from fastconv.kernels import tuned, tuning

from helpers import needs_torch

KEY = tuned.MachineKey("Some CPU @ 3.0GHz", 256, 512 << 10, 2)


@pytest.fixture(autouse=True)
def defaults_after(monkeypatch, tmp_path):
    """Tunings stored in a folder of the test's own; the defaults in force again after."""
    monkeypatch.setenv("FASTCONV_TUNING_DIR", str(tmp_path / "tunings"))
    yield
    tuned.apply("defaults")


def _tuning(key=KEY, **values):
    return tuned.Tuning(key, values, "2026-12-06T12:00:00+00:00", {"WIDE_BELOW": {}})


def test_a_tuning_is_stored_per_cpu_and_read_back():
    t = _tuning(WIDE_BELOW=32, PLAN_SEPARABLE_WEIGHTS=0.3)
    path = tuned.save(t)
    assert path.endswith("some-cpu-3-0ghz-256bit-l2-512k-2c.json")
    assert tuned.load(KEY) == t
    # another width, cache or core count of the same model is another machine
    for other in (tuned.MachineKey(KEY.model, 512, KEY.l2_bytes, 2),
                  tuned.MachineKey(KEY.model, 256, 1 << 20, 2),
                  tuned.MachineKey(KEY.model, 256, KEY.l2_bytes, 4)):
        assert tuned.load(other) is None


def test_applying_a_tuning_sets_its_thresholds_and_defaults_undo_it():
    here = tuned.MachineKey.here(256)
    tuned.save(_tuning(here, WIDE_BELOW=32, PLAN_EXPAND_ROWS=4))
    in_force = tuned.apply("stored", vector_bits=256)
    assert (tuning.WIDE_BELOW, tuning.PLAN_EXPAND_ROWS) == (32, 4)
    assert tuning.GRID_SLACK == tuned.DEFAULTS["GRID_SLACK"]  # not in the tuning: default
    said = in_force.describe()
    assert said.startswith("measured by fastconv tune at 2026-12-06T12:00:00+00:00 on ")
    assert said.endswith("PLAN_EXPAND_ROWS=4, WIDE_BELOW=32")
    # at 512 bits this machine has no stored tuning: the defaults, and words for it
    assert tuned.apply("stored", vector_bits=512).describe() == (
        "kernels/tuning.py's defaults for 512-bit vectors (no stored tuning)")
    assert tuning.WIDE_BELOW == tuned.DEFAULTS["WIDE_BELOW"]
    tuned.apply("stored", vector_bits=256)
    assert tuned.apply("defaults").describe() == (
        "kernels/tuning.py's defaults (FASTCONV_TUNING=defaults)")
    assert (tuning.WIDE_BELOW, tuning.PLAN_EXPAND_ROWS) == (64, 2)


def test_a_damaged_stored_tuning_warns_and_the_defaults_serve():
    here = tuned.MachineKey.here(256)
    path = tuned.save(_tuning(here, WIDE_BELOW=32))
    with open(path, "w") as fh:
        fh.write('{"key": {"model": "x"')  # cut short
    with pytest.warns(RuntimeWarning, match="the stored tuning .* is not read .*defaults apply"):
        in_force = tuned.apply("stored", vector_bits=256)
    assert in_force.tuning is None and tuning.WIDE_BELOW == tuned.DEFAULTS["WIDE_BELOW"]


def test_a_tuning_file_given_by_path(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(_tuning(GEMM_CHUNK_BYTES=16384).to_json())
    assert tuned.apply(str(path)).source == "file" and tuning.GEMM_CHUNK_BYTES == 16384
    with pytest.raises(ValueError, match="FASTCONV_TUNING must be stored, defaults or a tuning "
                                         "file, but '/no/such.json' is none of these"):
        tuned.apply("/no/such.json")


@pytest.mark.parametrize("values, message", [
    ({"GEMM_TILE": 3}, "sets GEMM_TILE, which fastconv tune does not measure"),
    ({"WIDE_BELOW": 0}, "WIDE_BELOW must be a positive number, but got 0"),
    ({"WIDE_BELOW": True}, "WIDE_BELOW must be a positive number, but got True"),
    ({"PLAN_EXPAND_ROWS": 2.5}, "PLAN_EXPAND_ROWS must be a whole number, but got 2.5"),
    ({"GRID_SLACK": "0.1"}, "GRID_SLACK must be a positive number, but got '0.1'"),
])
def test_a_tuning_file_that_does_not_hold_is_refused_in_words(values, message):
    text = json.dumps(dict(key=KEY.__dict__, values=values, measured_at="now"))
    with pytest.raises(ValueError, match=message):
        tuned.Tuning.from_json(text, "t.json")
    with pytest.raises(ValueError, match="t.json is not a fastconv tuning"):
        tuned.Tuning.from_json(json.dumps({"values": {}}), "t.json")


class _Fake:
    """harness.measure with made-up times: each candidate's time is ``times[value]``."""

    def __init__(self, times):
        self.times = times

    def __call__(self, calls, **_):
        for call in calls.values():
            call()
        return {name: harness.Timing(0.0, [self.times[eval(name)]]) for name in calls}


@needs_torch
@pytest.mark.parametrize("times, chosen", [
    ({1: 1.0, 2: 0.9, 4: 0.95}, 2),     # 10% faster: taken
    ({1: 1.0, 2: 0.99, 4: 1.2}, 1),     # within the margin: the default stays
    ({1: 1.0, 2: 1.1, 4: 1.3}, 1),
])
def test_tune_keeps_a_candidate_only_when_faster_by_the_margin(monkeypatch, times, chosen):
    import torch

    monkeypatch.setattr(harness, "measure", _Fake(times))
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    x = np.ones((1, 3, 9, 7), np.float32)
    done = []
    result = tune.tune([tune.Workload("tiny", module, x)], ("numba",),
                       ("PLAN_TASKS_PER_THREAD",), progress=done.append)
    assert done == ["PLAN_TASKS_PER_THREAD: tiny on numba"]
    assert result.values == {"PLAN_TASKS_PER_THREAD": chosen} == {
        "PLAN_TASKS_PER_THREAD": tuning.PLAN_TASKS_PER_THREAD}
    scores = result.details["PLAN_TASKS_PER_THREAD"]["scores"]
    assert scores == {repr(c): pytest.approx(t) for c, t in times.items()}
    assert result.key == tuned.MachineKey.here()


@needs_torch
def test_a_plan_reads_the_tuning_in_force_and_says_which(plan_backend):
    """With the pointwise weights allowed no room in the L2 cache, MobileNet's depthwise and
    pointwise pair runs apart; the answer is the same; print(plan) names the tuning."""
    import torch

    import fastconv as fc

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 32, 1), torch.nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((1, 8, 10, 12)).astype(np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()
    fused = fc.Network.from_torch(module)
    np.testing.assert_allclose(fused(x), expected, rtol=1e-4, atol=1e-5)
    here = tuned.MachineKey.here()
    tuned.save(_tuning(here, PLAN_SEPARABLE_WEIGHTS=1e-9))
    tuned.apply("stored")
    apart = fc.Network.from_torch(module)
    np.testing.assert_allclose(apart(x), expected, rtol=1e-4, atol=1e-5)
    assert "pointwise" in str(fused) and "tuning: kernels/tuning.py's defaults" in str(fused)
    assert "tuning: measured by fastconv tune" in str(apart)
    assert "PLAN_SEPARABLE_WEIGHTS=1e-09" in str(apart)
    kernels = [n.kernel for n in apart._plans[x.shape].plan.nodes]
    fused_kernels = [n.kernel for n in fused._plans[x.shape].plan.nodes]
    assert len(kernels) == len(fused_kernels) + 1  # the pair runs as two steps


@needs_torch
def test_cli_tune_stores_prints_and_refuses_in_words(monkeypatch, tmp_path, capsys):
    import torch

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    monkeypatch.setattr(tune, "default_workloads",
                        lambda: [tune.Workload("tiny", module, np.ones((1, 3, 9, 7), np.float32))])
    monkeypatch.setenv("FASTCONV_TUNING", "stored")
    argv = ["tune", "--only", "WIDE_BELOW", "--budget", "0.01", "--backends", "numba"]
    assert cli.main([*argv, "--dry-run"]) == 0
    assert "not stored (--dry-run)" in capsys.readouterr().out
    assert tuned.load(tuned.MachineKey.here()) is None
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "WIDE_BELOW" in out and "stored in" in out and "in force now: measured by" in out
    assert set(tuned.load(tuned.MachineKey.here()).values) == {"WIDE_BELOW"}
    assert tuned.IN_FORCE.source == "stored" and tuned.IN_FORCE.tuning is not None
    for bad, message in ((["--only", "TILE"], "unknown threshold 'TILE' for --only"),
                         (["--backends", "cuda"], "unknown backend 'cuda' for --backends")):
        assert cli.main(["tune", *bad]) == 2
        assert message in capsys.readouterr().err


@needs_torch
def test_against_defaults_times_both_plans_and_leaves_the_tuning_in_force():
    import torch

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    w = tune.Workload("tiny", module, np.ones((1, 3, 9, 7), np.float32))
    rows = tune.against_defaults([w], ("numba",), {"WIDE_BELOW": 32}, budget=0.01)
    assert [(r["workload"], r["backend"]) for r in rows] == [("tiny", "numba")]
    assert rows[0]["defaults"] > 0 and rows[0]["tuned"] > 0
    assert tuning.WIDE_BELOW == 32
