"""The profiler on a tiny network: records, peaks, outputs and the CLI's errors."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from fastconv import cli, config, models
from fastconv.bench import machine, peers, profile
from fastconv.flops import backward_macs

from helpers import needs_torch

TINY = dict(alpha=0.25, resolution=32)


@pytest.fixture(scope="module")
def peaks():
    return machine.measure_machine(dtypes=("float32",), seconds=0.05, quick=True)


def test_machine_peaks(peaks):
    assert peaks.cpu.cores >= 1 and peaks.threads >= 1
    assert peaks.gemm_gflops["float32"] > 0 and peaks.bandwidth_gbs > 0
    assert peaks.peak_gflops["float64"] * 2 == pytest.approx(peaks.peak_gflops["float32"])
    assert peaks.assumptions and "FMA" in peaks.assumptions[0]
    assert set(peaks.to_dict()) >= {"cpu", "peak_gflops", "gemm_gflops", "bandwidth_gbs",
                                    "wake_us", "blas_spin_ms", "after_idle_us"}
    assert peaks.blas_spin_ms >= 0 and "after a GEMM" in peaks.blas_spin_text()
    warm, woken = peaks.after_idle_us
    assert warm > 0 and woken > 0
    assert f"{warm:.0f} µs back to back" in peaks.after_idle_text()


def test_waking_the_pool_is_measured_and_the_thread_count_restored(peaks):
    # measured on the calling thread alone too, then the thread count is set back
    assert peaks.wake_us is not None and peaks.wake_us >= 0
    assert config.get_num_threads() == peaks.threads


@pytest.mark.parametrize("mode", ["forward", "backward", "both"])
def test_profile_records_match_the_specs(mode, peaks):
    net = models.mobilenet_v1(**TINY)
    result = profile.profile_network(net, batch=2, mode=mode, budget=0.05, machine=peaks,
                                     settle=0.0)
    layers = result["layers"]
    assert len(layers) == len(net)
    for i, (rec, spec) in enumerate(zip(layers, net)):
        grads = backward_macs(spec, 2)
        expected = {"forward": spec.flops * 2,
                    "backward": 2 * grads["grad_weight"] + (2 * grads["grad_input"] if i else 0)}
        expected["both"] = expected["forward"] + expected["backward"]
        assert rec["flops"] == expected[mode]
        assert rec["macs"] == spec.macs * 2
        assert rec["output"] == list(spec.output_shape(2))
        assert 0 < rec["seconds"] <= rec["seconds_median"]
        assert rec["gflops"] == pytest.approx(rec["flops"] / rec["seconds"] / 1e9)
        assert 0 < rec["roofline_gflops"] <= peaks.gemm_gflops["float32"]
    total = result["total"]
    assert total["flops"] == sum(r["flops"] for r in layers)
    assert sum(r["flops_share"] for r in layers) == pytest.approx(1.0)
    assert sum(r["time_share"] for r in layers) == pytest.approx(1.0)
    assert total["seconds"] >= total["sum_of_layer_minima"] > 0
    assert total["passes"] >= 3


@needs_torch
def test_profile_with_peers():
    net = models.mobilenet_v1(**TINY)
    result = profile.profile_network(net, mode="both", budget=0.05, settle=0.0,
                                     compare=("torch", "onnxruntime"))
    totals = result["peers"]["totals"]
    assert totals["torch"]["seconds"] > 0 and totals["onnxruntime"]["seconds"] > 0
    assert "does not train" in totals["onnxruntime"]["note"]
    assert all(set(r["peers"]) == {"torch", "onnxruntime"} for r in result["layers"])
    with pytest.raises(ValueError, match="unknown peer 'tensorflow'"):
        profile.profile_network(net, budget=0.01, compare=("tensorflow",))


def _node(name, op, microseconds):
    return dict(cat="Node", name=f"{name}_kernel_time", dur=microseconds,
                args=dict(op_name=op))


def test_onnxruntime_layers_are_its_conv_nodes_pass_by_pass():
    """Kernel times of the Conv nodes, in the order they ran, a pass per len(net); glue and
    session events are left out."""
    one_pass = [_node("/0/Conv", "Conv", 30), _node("reorder", "ReorderOutput", 7),
                _node("pool", "GlobalAveragePool", 5), _node("y", "Conv", 12)]
    events = [dict(cat="Session", name="model_run", dur=99), *one_pass,
              dict(cat="Node", name="/0/Conv_fence_before", dur=1, args=dict(op_name="Conv")),
              *one_pass[:3], _node("y", "Conv", 11)]
    assert peers.layer_times_from_profile(events, 2) == [[30e-6, 12e-6], [30e-6, 11e-6]]
    with pytest.raises(RuntimeError, match="3 Conv nodes, which is not a whole number of "
                                           "passes of 2 layers"):
        peers.layer_times_from_profile(events[:-1], 2)
    swapped = [*one_pass, _node("y", "Conv", 12), _node("/0/Conv", "Conv", 30)]
    with pytest.raises(RuntimeError, match="do not run in the same order"):
        peers.layer_times_from_profile(swapped, 2)


@pytest.mark.skipif(not (peers.onnxruntime_available() and peers.torch_available()),
                    reason="onnxruntime, onnx and torch (to export the model) are needed")
def test_onnxruntime_session_times_every_layer_of_every_profiled_pass():
    net = models.mobilenet_v1(**TINY)
    params = profile.network_weights(net, "float32")
    x0 = np.random.default_rng(1).standard_normal(net[0].input_shape(2)).astype(np.float32)
    session = peers.OnnxRuntimeNet(net, params, x0)
    expected = session.run()
    for _ in range(3):
        np.testing.assert_array_equal(session.run_profiled(), expected)
    times = session.layer_times()
    assert len(times) == 3 and all(len(p) == len(net) for p in times)
    # whole microseconds: a tiny layer may read 0, a pass may not
    assert all(t >= 0 for p in times for t in p) and all(sum(p) > 0 for p in times)
    assert session.layer_times() is times  # read once: the profile ends with it


def test_chain_pass_pools_before_the_classifier():
    net = models.mobilenet_v1(**TINY)
    params = profile.network_weights(net, "float64")
    runner = profile.FastconvNet(net, params)
    x0 = profile.np.ones(net[0].input_shape(1))
    fwd, bwd = profile.chain_pass(runner, net, x0, backward=True)
    assert len(fwd) == len(bwd) == len(net) and min(fwd) > 0 and min(bwd) > 0


def test_cli_profile_writes_json_csv_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_json, out_csv, plots = tmp_path / "p.json", tmp_path / "p.csv", tmp_path / "plots"
    status = cli.main(["profile", "mobilenet-v1", "--alpha", "0.25", "--resolution", "32",
                       "--budget", "0.05", "--pass", "both", "--json", str(out_json),
                       "--csv", str(out_csv), "--plot", str(plots)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "GFLOP/s" in printed and "separable vs full" in printed
    result = json.loads(out_json.read_text())
    assert set(result["total"]) >= {"flops", "macs", "seconds", "seconds_median"}
    assert len(result["layers"]) == 28 and result["twin"]["model"] == "mobilenet-v1-full"
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["name"] for r in rows] == [r["name"] for r in result["layers"]]
    assert float(rows[0]["seconds"]) > 0
    names = sorted(os.listdir(plots))
    assert names == ["roofline.png", "separable_vs_full.png", "share_by_kind.png",
                     "time_vs_flops.png"]
    for name in names:
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_cli_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for fragment in ("numba", "threading layer", "vector extensions", "BLAS",
                     "backend numba: available", "backend cython: ", "backend cuda: "):
        assert fragment in out


@pytest.mark.parametrize("argv, message", [
    (["profile", "resnet"], "unknown model 'resnet'"),
    (["profile", "mobilenet-v1", "--budget", "-1"], "--budget: expected a positive number"),
    (["profile", "mobilenet-v1", "--pass", "sideways"], "invalid choice: 'sideways'"),
    (["profile", "mobilenet-v1", "--compare", "tensorflow"], "unknown peer 'tensorflow'"),
    (["profile", "mobilenet-v1", "--backend", "tpu"], "unknown backend 'tpu'"),
    (["profile", "mobilenet-v1", "--algorithm", "fft"], "unknown algorithm 'fft'"),
    (["profile", "mobilenet-v1", "--json", "/nonexistent/dir/p.json"],
     "cannot write /nonexistent/dir/p.json: No such file or directory"),
    (["profile", "mobilenet-v1", "--resolution", "8"], "resolution must be at least 32"),
])
def test_cli_profile_errors(argv, message, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_cli_plot_into_a_file_fails_cleanly(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert cli.main(["profile", "mobilenet-v1", "--plot", str(blocker)]) == 2
    assert f"cannot create {blocker}" in capsys.readouterr().err


@needs_torch
def test_profile_plan_times_the_plan_beside_the_engines():
    result = profile.profile_plan(alpha=0.25, resolution=64, engines=("per-call", "torch",
                                                                       "onnxruntime"),
                                  budget=0.05, settle=0.0)
    engines = result["engines"]
    assert {"plan", "per-call", "torch"} <= set(engines)
    assert all(e["seconds"] > 0 and e["seconds_median"] >= e["seconds"]
               for e in engines.values())
    names = [n["name"] for n in result["nodes"]]
    assert names[0] == "input" and names[-1] == "output"
    convs = [n for n in result["nodes"] if n["op"] in ("conv", "linear")]
    # 28 layers, the depthwise and pointwise pairs fused into one node each
    assert sum(n["layers"] for n in convs) == 28 and len(convs) < 28
    assert all(n["flops"] > 0 for n in convs)
    if peers.onnxruntime_available():  # ONNX Runtime's kernels, one per layer, in order
        assert all(n["onnxruntime"]["seconds"] >= 0 for n in convs)
        assert convs[-1]["onnxruntime"]["op"] in ("Gemm", "FusedGemm", "MatMul")
    assert result["plan"]["arena_bytes"] > 0


@needs_torch
def test_cli_profile_plan(tmp_path, capsys):
    out = tmp_path / "plan.json"
    status = cli.main(["profile", "mobilenet-v1", "--plan", "--alpha", "0.25", "--resolution",
                       "64", "--budget", "0.05", "--compare", "per-call,torch", "--json",
                       str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "fastconv.Network node by node" in printed and "plan / engine" in printed
    assert set(json.loads(out.read_text())["engines"]) == {"plan", "per-call", "torch"}
    assert cli.main(["profile", "mobilenet-v1", "--plan", "--compare", "tensorflow"]) == 2
    assert "unknown engine 'tensorflow'" in capsys.readouterr().err
