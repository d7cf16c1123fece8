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
                                    "wake_us", "blas_spin_ms", "after_idle_us", "notes"}
    assert peaks.blas_spin_ms >= 0 and "after a GEMM" in peaks.blas_spin_text()
    warm, woken = peaks.after_idle_us
    assert warm > 0 and woken > 0
    assert f"{warm:.0f} µs back to back" in peaks.after_idle_text()


def _machine(gemm, theoretical=100.0):
    cpu = machine.CPU("a CPU", "GenuineIntel", 6, 2, 2.0, "assumed", ["avx2", "fma"])
    return machine.Machine(cpu, 2, {"float32": theoretical, "float64": theoretical / 2}, [],
                           {"float32": gemm}, 10.0)


def test_a_peak_far_below_the_theoretical_one_or_above_it_is_noted():
    low, fine, high = _machine(20.0), _machine(80.0), _machine(130.0)
    for m in (low, fine, high):
        m.check_peaks()
    assert low.notes == ["the float32 GEMM peak measured, 20 GFLOP/s, is 20% of the "
                         "theoretical 100: the machine may have been busy while it was measured"]
    assert fine.notes == []
    assert "is above the theoretical 100: the cores ran faster" in high.notes[0]


@pytest.mark.parametrize("again, expected, said", [
    (60.0, 90.0, "a layer ran at 90 GFLOP/s, above the float32 GEMM peak measured twice (50 and "
                 "60): the machine was busy while it was measured, and the peak taken is that "
                 "layer's"),
    (120.0, 120.0, "the float32 GEMM peak was measured again (50, then 120 GFLOP/s): a layer "
                   "ran at 90, above the first figure"),
])
def test_a_layer_above_the_peak_has_it_measured_again_or_taken_as_the_peak(
        monkeypatch, again, expected, said):
    calls = []
    monkeypatch.setattr(machine, "_gemm_gflops",
                        lambda dtype, size, seconds: calls.append(size) or again)
    m = _machine(50.0)
    m.settle_peak("float32", 40.0)  # below the peak: nothing measured, nothing said
    assert calls == [] and m.notes == [] and m.gemm_gflops["float32"] == 50.0
    m.settle_peak(np.float32, 90.0)
    assert calls == [machine.GEMM_SIZE]
    assert m.gemm_gflops["float32"] == expected and m.notes == [said]


def test_a_profile_never_puts_a_layer_above_the_peak_beside_it(monkeypatch):
    """The peak was measured while the machine was busy (far too low, and low again when
    measured a second time): every layer is then at most 100% of it, and the note says why."""
    monkeypatch.setattr(machine, "_gemm_gflops", lambda dtype, size, seconds: 1e-3)
    busy = _machine(1e-3)
    result = profile.profile_network(models.mobilenet_v1(**TINY), batch=1, budget=0.02,
                                     machine=busy, settle=0.0)
    assert max(r["percent_of_peak"] for r in result["layers"]) == pytest.approx(100.0)
    assert "the machine was busy while it was measured" in result["machine"]["notes"][0]


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
    from fastconv.kernels.numba.microkernel import vector_bits

    assert f"plan kernels: numba {vector_bits()}-bit (" in out


def test_cli_profile_help_names_every_peer_whole(capsys):
    with pytest.raises(SystemExit):
        cli.main(["profile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in (*cli.PEERS, *cli.PLAN_ENGINES, *profile.MODEL_ENGINES):
        assert f" {name}," in text or f" {name};" in text or f" {name})" in text


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


def test_roofline_labels_name_each_cluster_of_points_once():
    pytest.importorskip("matplotlib")
    from fastconv.bench import plots

    def layer(name, intensity, gflops):
        return dict(name=name, intensity=intensity, gflops=gflops)

    # MobileNet's five identical 14x14 pairs land on one point; pw5 and pw27 close together
    layers = ([layer(f"pw{i}", 40.0, 150.0 + i / 10) for i in range(11, 24, 2)]
              + [layer(f"dw{i}", 2.0, 20.0) for i in range(14, 23, 2)]
              + [layer("pw5", 60.0, 160.0), layer("pw27", 61.0, 163.0), layer("conv1", 9, 50)])
    groups = dict(plots._label_groups(layers))
    assert set(groups) == {"pw11–pw23", "dw14–dw22", "pw5, pw27", "conv1"}
    assert groups["conv1"] == pytest.approx((9, 50))
    assert plots._name_runs(["pw3", "pw5", "dw4", "fc"]) == "pw3, pw5, dw4, fc"
