"""Profiling any model: ``fastconv flops`` and ``fastconv profile`` on an ONNX file and on a
torch factory, their counts against the torch module's own layers, and their refusals."""

from __future__ import annotations

import csv
import json
import os
import textwrap
import warnings

import numpy as np
import pytest

import fastconv as fc
from fastconv import cli
from fastconv.bench import machine, peers, profile, sources

from helpers import needs_torch, torch

pytestmark = needs_torch

if torch is not None:
    from torch import nn

    from fastconv.bench import zoo

SIZE = (3, 40, 44)


def _export(module, path, dynamic_size=False):
    axes = {0: "N", 2: "H", 3: "W"} if dynamic_size else {0: "N"}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *SIZE),), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": {0: "N"}})
    return path


@pytest.fixture(scope="module")
def resnet():
    return zoo.randomise(zoo.ResNet18(0.25))


@pytest.fixture(scope="module")
def resnet_file(resnet, tmp_path_factory):
    pytest.importorskip("onnx")
    return _export(resnet, tmp_path_factory.mktemp("models") / "resnet.onnx")


def _torch_counts(module, batch):
    """MACs and parameters of the module's convolutions and linear layers, from the output
    shapes torch computes; every convolution here is followed by a batch norm, which the plan
    folds into a bias of its own."""
    macs, params, hooks = [], [], []

    def conv_hook(m, inputs, out):
        kh, kw = m.kernel_size
        macs.append(out.numel() * m.in_channels // m.groups * kh * kw)
        params.append(m.weight.numel() + m.out_channels)

    def linear_hook(m, inputs, out):
        macs.append(out.numel() * m.in_features)
        params.append(m.weight.numel() + m.bias.numel())

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        module(torch.zeros(batch, *SIZE))
    for h in hooks:
        h.remove()
    return sum(macs), sum(params)


def test_counts_match_the_modules_layers(resnet):
    net = fc.Network.from_torch(resnet)
    counts = net.counts((2, *SIZE))
    macs, params = _torch_counts(resnet, 2)
    assert sum(r["macs"] for r in counts) == macs
    assert sum(r["params"] for r in counts) == params
    assert all(r["flops"] == 2 * r["macs"] for r in counts)
    first = counts[0]  # conv1 with bn1 folded and the ReLU fused: input, weights, output
    conv1 = resnet.conv1
    out = (2, conv1.out_channels, 20, 22)
    assert first["params"] == conv1.weight.numel() + conv1.out_channels
    assert first["bytes"] == 4 * (2 * np.prod(SIZE) + first["params"] + np.prod(out))
    residual = next(r for r in counts if r["name"] == "layer layer1.0.conv2 (Conv2d)")
    plain = next(r for r in counts if r["name"] == "layer layer1.0.conv1 (Conv2d)")
    assert residual["bytes"] - plain["bytes"] == 4 * np.prod(out[:1] + (conv1.out_channels, 10,
                                                                         11))  # the residual
    with pytest.raises(ValueError, match=r"counts needs at least one image, but got a batch "
                                         r"of 0"):
        net.counts((0, *SIZE))


def test_a_fused_pair_counts_no_traffic_between_its_layers():
    module = zoo.randomise(zoo.MobileNetV1(0.25))
    counts = fc.Network.from_torch(module).counts((1, *SIZE))
    pair = next(r for r in counts if r["layers"] == 2)
    dw, pw = module.features[1][0], module.features[2][0]
    c_in, c_out = dw.in_channels, pw.out_channels
    params = dw.weight.numel() + c_in + pw.weight.numel() + c_out
    assert pair["params"] == params
    assert pair["bytes"] == 4 * (c_in * 20 * 22 + params + c_out * 20 * 22)


def test_cli_flops_on_an_onnx_file(resnet, resnet_file, capsys):
    assert cli.main(["flops", str(resnet_file), "--batch", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["input_shape"] == [3, *SIZE] and record["not_counted"] == []
    macs, params = _torch_counts(resnet, 3)
    assert sum(n["macs"] for n in record["nodes"]) == record["macs"] == macs
    assert sum(n["params"] for n in record["nodes"]) == params
    assert record["nodes"][0]["name"] == "node '/conv1/Conv' (Conv)"
    assert record["nodes"][0]["category"] == "convolution"
    assert cli.main(["flops", str(resnet_file)]) == 0
    printed = capsys.readouterr().out
    assert "resnet.onnx, inputs {'image': [1, 3, 40, 44]}" in printed
    assert "convolution" in printed and "elementwise" in printed and "total" in printed


def test_profile_model_on_an_onnx_file(resnet_file):
    peaks = machine.measure_machine(dtypes=("float32",), seconds=0.05, quick=True)
    source = sources.open_model(str(resnet_file), batch=2)
    engines = ("onnxruntime",) if peers.onnxruntime_available() else ()
    result = profile.profile_model(source, engines=engines, budget=0.05, settle=0.0,
                                   machine=peaks)
    assert set(result["engines"]) == {"plan", *engines}
    nodes = result["nodes"]
    assert [n["name"] for n in nodes][::len(nodes) - 1] == ["input", "output"]
    assert result["plan"]["macs"] == sum(n["macs"] for n in nodes)
    assert result["plan"]["sum_of_nodes"] == pytest.approx(sum(n["seconds"] for n in nodes))
    # every call's nodes sum to at least their minima, so the median call does too
    assert result["plan"]["sum_of_nodes"] <= result["plan"]["sum_of_nodes_median"]
    assert sum(n["time_share"] for n in nodes) == pytest.approx(1.0)
    peak, bandwidth = peaks.gemm_gflops["float32"], peaks.bandwidth_gbs
    for n in nodes:
        if n["flops"]:
            assert n["intensity"] == pytest.approx(n["flops"] / n["bytes"])
            assert n["roofline_gflops"] == pytest.approx(min(peak, n["intensity"] * bandwidth))
            assert n["percent_of_peak"] == pytest.approx(100 * n["gflops"] / peak)
        else:
            assert "percent_of_peak" not in n
    convs = [n for n in nodes if n["op"] in ("conv", "linear")]
    assert {n["kind"] for n in convs} == {"conv", "pw", "fc"}
    if engines:  # every convolution meets ONNX Runtime's kernel for the same ONNX node
        assert all(n["onnxruntime"]["seconds"] > 0 for n in convs)
        assert "Conv" in next(n for n in nodes if "conv1/Conv" in n["name"])["onnxruntime"][
            "op"]


def test_cli_profile_on_an_onnx_file(resnet_file, tmp_path, capfd):
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    argv = ["profile", str(resnet_file), "--budget", "0.05", "--compare", "onnxruntime,openvino",
            "--json", str(out), "--csv", str(table)]
    plots = pytest.importorskip("matplotlib") and tmp_path / "plots"
    assert cli.main([*argv, "--plot", str(plots)]) == 0
    printed, errors = capfd.readouterr()
    # OpenVINO's compiler forks from its own thread after Numba's pool started: not a word
    assert "Attempted to fork" not in errors
    assert "fastconv.Network on numba node by node" in printed and "plan / engine" in printed
    assert "sum of nodes" in printed and "against the whole call's" in printed
    result = json.loads(out.read_text())
    assert "plan" in result["engines"] and result["plan"]["backend"] == "numba"
    for engine, available in (("onnxruntime", peers.onnxruntime_available()),
                              ("openvino", peers.openvino_available())):
        assert (engine in result["engines"]) == available
        assert (engine in result["missing"]) != available
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [n["name"] for n in result["nodes"]]
    assert sorted(p.name for p in plots.iterdir()) == ["roofline.png", "share_by_kind.png",
                                                       "time_vs_flops.png"]


def test_cli_profile_plans_an_onnx_file_on_the_backend_asked_for(resnet_file, tmp_path,
                                                                  capsys):
    pytest.importorskip("fastconv.kernels.cython.plan")
    out = tmp_path / "r.json"
    assert cli.main(["profile", str(resnet_file), "--budget", "0.05", "--compare", "",
                     "--backend", "cython", "--json", str(out)]) == 0
    assert "fastconv.Network on cython node by node" in capsys.readouterr().out
    assert json.loads(out.read_text())["plan"]["backend"] == "cython"


def test_a_fork_from_another_thread_writes_nothing_to_standard_error(capfd):
    """What a fork's handlers print between the hooks is held back when another thread forks
    (OpenVINO's telemetry; Numba's TBB pool then warns), never when the main thread does."""
    import threading

    from fastconv.bench.peers import NumbaForkWarningHush as hush

    def fork_handlers():
        hush.before()
        os.write(2, b"Numba: Attempted to fork from a non-main thread\n")
        hush.after()
        os.write(2, b"after the fork\n")

    worker = threading.Thread(target=fork_handlers)
    worker.start()
    worker.join()
    assert capfd.readouterr().err == "after the fork\n"
    fork_handlers()  # the main thread: nothing held back
    assert capfd.readouterr().err.count("Numba: Attempted to fork") == 1


def test_cli_profile_on_a_torch_factory(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinynets.py").write_text(textwrap.dedent("""
        from torch import nn

        def build():
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 4, 1)).train()  # profiled in eval mode

        not_a_module = 3
        """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "t.json"
    assert cli.main(["profile", "tinynets:build", "--input-shape", "3,9,11", "--batch", "2",
                     "--budget", "0.05", "--compare", "torch", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["engines"]) == {"plan", "torch"}
    assert result["settings"]["input_shape"] == [2, 3, 9, 11]
    assert result["plan"]["macs"] == 2 * 9 * 11 * (8 * 27 + 4 * 8)
    assert cli.main(["flops", "tinynets:not_a_module"]) == 2
    assert "tinynets:not_a_module returned int, not a torch.nn.Module" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["flops", "no/such/model.onnx"], "no such ONNX file: 'no/such/model.onnx'"),
    (["flops", "no_such_module_here:build"], "cannot import 'no_such_module_here'"),
    (["flops", "fastconv.bench.zoo:nothing"], "module 'fastconv.bench.zoo' has no attribute "
                                              "'nothing'"),
    (["flops", "fastconv.bench.zoo:"], "expected package.module:function"),
    (["flops", "mobilenet-v1", "--input-shape", "3,32,32"], "--input-shape is for a model file"),
    (["profile", "mobilenet-v1", "--input-shape", "3,32,32"], "--input-shape is for a model"),
    (["profile", "fastconv.bench.zoo:resnet18", "--pass", "backward"], "--pass must be forward"),
    (["profile", "fastconv.bench.zoo:resnet18", "--compare", "litert"], "unknown engine "
                                                                         "'litert'"),
    (["profile", "fastconv.bench.zoo:resnet18", "--convs-only"], "--convs-only is for the "
                                                                 "built-in MobileNet"),
    (["profile", "fastconv.bench.zoo:resnet18", "--input-shape", "1,32,32"],
     "layer conv1 (Conv2d): given groups=1, weight of size [64, 3, 7, 7], expected "
     "input[1, 1, 32, 32] to have 3 channels, but got 1 channels instead"),
])
def test_cli_model_refusals(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def test_an_onnx_file_without_its_size_needs_the_input_shape(resnet, tmp_path, capsys):
    pytest.importorskip("onnx")
    path = _export(resnet, tmp_path / "any_size.onnx", dynamic_size=True)
    assert cli.main(["flops", str(path)]) == 2
    assert ("the model's input 'image' is [N, 3, ?, ?]: give its size with --input-shape "
            "C,H,W") in capsys.readouterr().err
    assert cli.main(["flops", str(path), "--input-shape", "3,33,35", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [1, 3, 33, 35]
    assert cli.main(["flops", str(path), "--input-shape", "4,33,35"]) == 2
    assert ("the model's input 'image' is [N, 3, ?, ?], but got input of size [1, 4, 33, 35]"
            in capsys.readouterr().err)
    with pytest.raises(SystemExit):
        cli.main(["flops", str(path), "--input-shape", "3,33"])
    assert "expected three positive integers C,H,W, got '3,33'" in capsys.readouterr().err


def test_the_node_table_shows_what_each_plan_node_covers():
    """A plan node's row names the graph's nodes fused into it by their operators."""
    from fastconv.bench import rows

    node = dict(name="node '/c/Conv' (Conv)", kernel="conv 3x3/1", input="[3, 8, 8]",
                output="[4, 8, 8]", fused=["node '/bn' (BatchNormalization)",
                                           "node '/act/Sigmoid' (Sigmoid)", "layer 2 (ReLU)"],
                flops=2e6, params=112, bytes=2000, intensity=1000.0, seconds=1e-3,
                seconds_median=1e-3, gflops=2.0, time_share=1.0)
    plan = dict(sum_of_nodes=1e-3, flops=2e6, params=112, bytes=2000)
    _, table, _ = rows.model_rows({"nodes": [node, dict(node, fused=[], name="input")],
                                   "plan": plan})
    assert table[0][0] == ("node '/c/Conv' (Conv)\n+ fused: BatchNormalization, Sigmoid, "
                           "ReLU")
    assert table[1][0] == "input"


def test_onnx_runtimes_own_fusions_count_for_the_row_that_ran_their_nodes():
    """ONNX Runtime names a node of its own fusions after the node it replaced (SiLU's
    Sigmoid and Mul as ``.../Mul/QuickGeluFusion/``); the plan's row that fused those nodes
    takes its time, beside the convolution's (named after the value it writes)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], [0.0] * 12)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="/b/Conv"),
         helper.make_node("Sigmoid", ["c"], ["s"], name="/b/act/Sigmoid"),
         helper.make_node("Mul", ["c", "s"], ["y"], name="/b/act/Mul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w])
    rows = [dict(name="node '/b/Conv' (Conv)", layers=1,
                 fused=["node '/b/act/Mul' (Mul)", "node '/b/act/Sigmoid' (Sigmoid)"])]
    ort_nodes = [("c_nchwc", "Conv", 2e-6), ("/b/act/Mul/QuickGeluFusion/", "QuickGelu", 3e-6),
                 ("ReorderOutput", "ReorderOutput", 1e-6)]
    profile._beside_ort_by_name(rows, ort_nodes, helper.make_model(graph).SerializeToString())
    assert rows[0]["onnxruntime"] == dict(node="c_nchwc + /b/act/Mul/QuickGeluFusion/",
                                          op="Conv + QuickGelu", seconds=pytest.approx(5e-6))
