"""The report's targets table: each of issue 6's targets judged from the run's own figures."""

from __future__ import annotations

import pytest

from fastconv import models
from fastconv.bench import report

from helpers import needs_torch


def _network(fastconv, **peers):
    return dict(total=dict(seconds=fastconv),
                peers=dict(totals={p: dict(seconds=s) for p, s in peers.items()}))


def _inputs(**changes):
    """Figures where every target is met; ``changes`` replaces some of them."""
    figures = dict(
        results={("mobilenet-v1", "forward", 1): _network(5e-3, onnxruntime=6e-3, torch=9e-3),
                 ("mobilenet-v1-full", "forward", 1): _network(40e-3, onnxruntime=46e-3),
                 ("mobilenet-v1", "both", 1): _network(20e-3, torch=30e-3),
                 ("mobilenet-v1", "both", 8): _network(150e-3, torch=240e-3)},
        layers=[dict(layer="dw2", kind="dw", fastconv=1e-4, peer=2.5e-4, peer_name="torch"),
                dict(layer="dw4", kind="dw", fastconv=1e-4, peer=2e-4, peer_name="torch"),
                dict(layer="pw3", kind="pw", fastconv=1e-4, peer=0.96e-4, peer_name="GEMM"),
                dict(layer="pw5", kind="pw", fastconv=1e-4, peer=1e-4, peer_name="GEMM")],
        dilation=[("depthwise 3x3, 128x56x56", "fastconv forward", 1e-4, 1.2e-4),
                  ("depthwise 3x3, 128x56x56", "torch forward", 1e-4, 3e-4),
                  ("dense 3x3, 64x56x56", "fastconv backward", 1e-3, 1.1e-3)],
        memory=[("im2col", 6 << 20, 7 << 20)],
        cold=[("numba, warm cache", 0.5), ("numba, no cache", 2.4)])
    figures.update(changes)
    return figures


def _met(**changes):
    return [row[2] for row in report.target_rows(**_inputs(**changes))]


def test_every_target_met():
    rows = report.target_rows(**_inputs())
    assert [row[2] for row in rows] == ["yes"] * 8
    assert rows[0][1] == "5.00 ms against 6.00: 0.83x"
    assert rows[2][1] == ("batch 1: 20.00 ms against 30.00: 0.67x; "
                          "batch 8: 150.00 ms against 240.00: 0.62x")
    assert rows[3][1] == "torch / fastconv from 2.00 (dw4) to 2.50 (dw2); 2 of 2 layers ≥ 2"
    assert rows[4][1] == "GEMM / fastconv from 0.96 (pw3) to 1.00 (pw5); 2 of 2 layers ≥ 0.95"
    # torch's own dilation ratio (3x) is no target of ours
    assert rows[5][1] == "depthwise 3x3 forward 1.20x; dense 3x3 backward 1.10x"


@pytest.mark.parametrize("change, failed", [
    (dict(results={**_inputs()["results"],
                   ("mobilenet-v1", "forward", 1): _network(6.1e-3, onnxruntime=6e-3)}), 0),
    (dict(results={**_inputs()["results"],
                   ("mobilenet-v1", "both", 8): _network(170e-3, torch=240e-3)}), 2),
    (dict(layers=[dict(layer="dw2", kind="dw", fastconv=1e-4, peer=1.9e-4, peer_name="torch"),
                  dict(layer="pw3", kind="pw", fastconv=1e-4, peer=0.96e-4,
                       peer_name="GEMM")]), 3),
    (dict(layers=[dict(layer="dw2", kind="dw", fastconv=1e-4, peer=2e-4, peer_name="torch"),
                  dict(layer="pw3", kind="pw", fastconv=1e-4, peer=0.94e-4,
                       peer_name="GEMM")]), 4),
    (dict(dilation=[("dense 3x3, 64x56x56", "fastconv forward", 1e-3, 1.3e-3)]), 5),
    (dict(memory=[("im2col", 8 << 20, 7 << 20)]), 6),
    (dict(cold=[("numba, warm cache", 1.2)]), 7),
])
def test_a_missed_target_is_marked(change, failed):
    met = _met(**change)
    assert met[failed] == "no"
    assert met.count("no") == 1


def test_a_peer_not_measured_is_not_judged():
    results = {key: _network(r["total"]["seconds"])
               for key, r in _inputs()["results"].items()}
    assert _met(results=results, layers=[])[:5] == ["n/a"] * 5


@needs_torch
def test_layers_alone_times_depthwise_against_torch_and_pointwise_against_gemm(monkeypatch):
    # conv1, dw2, pw3, dw4, pw5 (torch is timed after a pause: a few layers keep this quick)
    tiny = models.mobilenet_v1(alpha=0.25, resolution=32, include_fc=False)[:5]
    monkeypatch.setattr(report.models, "mobilenet_v1", lambda include_fc: tiny)
    records = report.layers_alone(budget=0.01, threads=1)
    assert [r["kind"] for r in records] == [s.kind for s in tiny if s.kind in ("dw", "pw")]
    assert {r["peer_name"] for r in records if r["kind"] == "dw"} == {"torch"}
    assert {r["peer_name"] for r in records if r["kind"] == "pw"} == {"GEMM"}
    assert all(r["fastconv"] > 0 and r["peer"] > 0 for r in records)


def _plan(plan, **engines):
    return dict(engines={"plan": dict(seconds=plan), **{e: dict(seconds=s)
                                                        for e, s in engines.items()}},
                missing={})


def _plans(**changes):
    """Plan figures where every target is met; ``changes`` replaces some networks."""
    plans = {("mobilenet-v1", True, 1): _plan(3e-3, onnxruntime=4e-3, openvino=3.5e-3,
                                              litert=5e-3, **{"per-call": 9e-3,
                                                              "plan-cython": 3.3e-3}),
             ("mobilenet-v1", False, 1): _plan(3e-3, onnxruntime=3.5e-3, **{"per-call": 5e-3}),
             ("mobilenet-v1-full", True, 1): _plan(20e-3, onnxruntime=20e-3),
             ("mobilenet-v1", True, 8): _plan(20e-3, onnxruntime=25e-3,
                                              **{"plan-cython": 21e-3})}
    plans.update(changes)
    return plans


def test_every_plan_target_met():
    rows = report.plan_target_rows(_plans())
    assert [row[2] for row in rows] == ["yes"] * 7
    assert rows[0][1] == "3.00 ms against openvino 3.50: 0.86x"  # the fastest of the three
    assert rows[2][1] == "20.00 ms against onnxruntime 20.00: 1.00x"
    assert "convolutions only, batch 1: 0.60x" in rows[4][1]
    assert rows[5][1] == "3.30 ms against 3.00: 1.10x"  # the Cython plan against Numba's


@pytest.mark.parametrize("change, failed", [
    ({("mobilenet-v1", True, 1): _plan(3.2e-3, onnxruntime=4e-3, openvino=3.5e-3)}, 0),
    ({("mobilenet-v1", False, 1): _plan(3.3e-3, onnxruntime=3.5e-3)}, 1),
    ({("mobilenet-v1-full", True, 1): _plan(21e-3, onnxruntime=20e-3)}, 2),
    ({("mobilenet-v1", True, 8): _plan(23e-3, onnxruntime=25e-3, **{"plan-cython": 23e-3})},
     3),
    ({("mobilenet-v1", True, 8): _plan(20e-3, onnxruntime=25e-3, **{"plan-cython": 23e-3})},
     6),
    ({("mobilenet-v1", False, 1): _plan(3e-3, onnxruntime=3.5e-3, **{"per-call": 2.9e-3})}, 4),
])
def test_a_missed_plan_target_is_marked(change, failed):
    met = [row[2] for row in report.plan_target_rows(_plans(**{}) | change)]
    assert met[failed] == "no" and met.count("no") == 1


def test_a_plan_peer_not_measured_is_not_judged():
    plans = {case: _plan(1e-3) for case in _plans()}
    assert [row[2] for row in report.plan_target_rows(plans)] == ["n/a"] * 7


def _graphs(v1=(3e-3, 3.5e-3), v2=(4e-3, 4e-3), resnet=(15e-3, 16e-3)):
    """``profile_model`` figures (plan, ONNX Runtime) per ONNX model: by default every
    target met, MobileNet v2 exactly at its limit."""
    return {name: _plan(ours, onnxruntime=theirs) for name, (ours, theirs) in
            (("mobilenet_v1", v1), ("mobilenet_v2", v2), ("resnet18", resnet))}


def test_every_onnx_target_met():
    rows = report.onnx_target_rows(_graphs())
    assert [row[2] for row in rows] == ["yes"] * 3
    assert rows[0] == ["mobilenet_v1 from ONNX, batch 1: ≤ 0.9x ONNX Runtime",
                       "3.00 ms against 3.50: 0.86x", "yes"]
    assert rows[1][1] == "4.00 ms against 4.00: 1.00x"


@pytest.mark.parametrize("change, failed", [
    (dict(v1=(3.2e-3, 3.5e-3)), 0),  # 0.91x: within 1.0 but not 0.9
    (dict(v2=(4.1e-3, 4e-3)), 1),
    (dict(resnet=(17e-3, 16e-3)), 2),
])
def test_a_missed_onnx_target_is_marked(change, failed):
    met = [row[2] for row in report.onnx_target_rows(_graphs(**change))]
    assert met[failed] == "no" and met.count("no") == 1


def test_an_onnx_model_not_measured_is_not_judged():
    graphs = _graphs()
    graphs["resnet18"] = _plan(15e-3)  # ONNX Runtime did not run
    del graphs["mobilenet_v2"]
    rows = report.onnx_target_rows(graphs)
    assert [row[2] for row in rows] == ["yes", "n/a", "n/a"]
    assert rows[1][1] == "not measured"


def _family(ours, cython, theirs, fallback=0):
    result = _plan(ours, onnxruntime=theirs, **{"plan-cython": cython})
    result["nodes"] = [dict(kernel="fallback: onnx.reference")] * fallback + [
        dict(kernel="conv 3x3/1 (register tiles)")]
    return result


def test_the_family_targets_judge_each_executor_and_the_fallback():
    rows = report.family_target_rows({("yolov8n", 320): _family(9e-3, 11e-3, 10e-3),
                                      ("dbnet", 640): _family(9e-3, 9e-3, 10e-3, fallback=2)})
    assert rows[0] == ["yolov8n at 320, the plan on Numba: ≤ 1.0x ONNX Runtime, no node in the "
                       "fallback", "9.00 ms against 10.00: 0.90x, 0 fallback nodes", "yes"]
    assert rows[1][2] == "no"  # Cython: 1.10x
    assert [row[2] for row in rows[2:]] == ["no", "no"]  # faster, but two fallback nodes
    assert rows[3][1] == "9.00 ms against 10.00: 0.90x, 2 fallback nodes"


def test_a_markdown_cell_keeps_its_line_breaks_in_one_row():
    from fastconv.bench.rows import markdown

    assert markdown(["a", "b"], [["x\n+ fused: Relu", 1]]).splitlines()[-1] == (
        "| x<br>+ fused: Relu | 1 |")


def _training(planned, per_call, torch_, target):
    steps = {"planned": {"seconds": planned}, "per-call": {"seconds": per_call},
             "torch": {"seconds": torch_}}
    return {"steps": steps, "target": target, "nodes": []}


def test_the_training_targets_judge_torch_and_the_per_call_layers():
    rows = report.training_target_rows({
        ("mobilenet_v1", 224, 8, 0.5): _training(0.4, 0.6, 1.0, 0.5),
        ("resnet18", 224, 8, 0.8): _training(0.9, 0.8, 1.0, 0.8)})
    assert rows[0] == ["mobilenet_v1 at 224, batch 8: the planned step ≤ 0.5x PyTorch's",
                       "400.00 ms against 1000.00: 0.40x", "yes"]
    assert rows[1] == ["mobilenet_v1 at 224, batch 8: the planned step ≤ 1x the per-call "
                       "layers'", "400.00 ms against 600.00: 0.67x", "yes"]
    assert [row[2] for row in rows[2:]] == ["no", "no"]  # 0.9x torch; slower than per-call
    partial = _training(0.4, 0.6, 1.0, 0.5)
    del partial["steps"]["per-call"]
    assert report.training_target_rows({("m", 32, 1, 0.5): partial})[1][1:] == [
        "not measured", "n/a"]
