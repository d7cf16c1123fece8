"""Op counts: the MobileNet paper's tables, a worked example, backward counts, the CLI."""

from __future__ import annotations

import json
import re

import pytest

from fastconv import ConvSpec, cli, flops, models
from fastconv.models import FullyConnected, chain

from helpers import needs_torch, torch


def _mmacs(net):
    return sum(s.macs for s in net) / 1e6


def _mparams(net):
    return sum(s.params for s in net) / 1e6


def _printed(value, printed, unit):
    """Equal to what the paper prints, to its last printed digit (``unit``)."""
    return abs(value - printed) <= unit


def test_table4_mobilenet_and_conv_mobilenet():
    net = models.mobilenet_v1()
    assert round(_mmacs(net)) == 569 and round(_mparams(net), 1) == 4.2
    full = models.mobilenet_v1(separable=False)
    assert round(_mparams(full), 1) == 29.3
    # the paper's 4866 M is the convolutions alone; the classifier adds 1.02 M (4867 M), while
    # its 569 M for MobileNet includes the classifier (567.7 M without)
    convs = models.mobilenet_v1(separable=False, include_fc=False)
    assert round(_mmacs(convs)) == 4866
    assert round(_mmacs(full)) == 4867


@pytest.mark.parametrize("alpha, mmacs, mparams", [
    (1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)])
def test_table6_width_multiplier(alpha, mmacs, mparams):
    net = models.mobilenet_v1(alpha=alpha)
    assert _printed(_mmacs(net), mmacs, 0.5) and round(_mparams(net), 1) == mparams


@pytest.mark.parametrize("resolution, mmacs", [(224, 569), (192, 418), (160, 290), (128, 186)])
def test_table7_resolution_multiplier(resolution, mmacs):
    net = models.mobilenet_v1(resolution=resolution)
    # 160 counts 290.7 M: within one unit of the printed 290 (which the classifier-free
    # 289.7 M would round to; the paper is not consistent about the classifier)
    assert _printed(_mmacs(net), mmacs, 1.0)
    assert round(_mparams(net), 1) == 4.2


def test_table2_share_of_mult_adds_and_params_by_layer_kind():
    net = models.mobilenet_v1()
    # the paper's parameter shares count the classifier's 1024 x 1000 weights without its bias
    net[-1] = FullyConnected.of(1024, 1000, bias=False)
    share = flops.share_by_kind(net)
    percent = {kind: {k: round(100 * v, 2) for k, v in s.items()} for kind, s in share.items()}
    assert percent["pw"] == {"macs": 94.86, "params": 74.59}
    assert percent["dw"] == {"macs": 3.06, "params": 1.06}
    assert percent["fc"] == {"macs": 0.18, "params": 24.33}
    # the paper prints 1.19 % for the first (full) 3x3 convolution: its count is 1.91 %
    assert percent["conv"] == {"macs": 1.91, "params": 0.02}


def test_worked_example_4x4_stride2_separable_stack():
    """3x512x512 input, 4x4 kernels, stride 2, padding 1: depthwise-separable 3->64->128->256
    against standard convolutions with the same channels and kernels."""
    def conv(c_in, c_out, groups=1, kernel=4, stride=2, padding=1):
        return ConvSpec(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups)

    separable = chain([conv(3, 3, 3), conv(3, 64, kernel=1, stride=1, padding=0),
                       conv(64, 64, 64), conv(64, 128, kernel=1, stride=1, padding=0),
                       conv(128, 128, 128), conv(128, 256, kernel=1, stride=1, padding=0)], 512)
    standard = chain([conv(3, 64), conv(64, 128), conv(128, 256)], 512)
    assert [s.output_size for s in standard] == [(256, 256), (128, 128), (64, 64)]
    assert sum(s.macs for s in separable) == 309_329_920
    assert sum(s.macs for s in standard) == 4_496_293_888
    assert sum(s.params for s in separable) == 44_272
    assert sum(s.params for s in standard) == 658_432
    mac_ratio = sum(s.macs for s in standard) / sum(s.macs for s in separable)
    param_ratio = sum(s.params for s in standard) / sum(s.params for s in separable)
    assert round(mac_ratio, 1) == 14.5 and round(param_ratio) == 15
    comparison = flops.separable_vs_full(separable, standard)
    assert comparison["macs_ratio"] == pytest.approx(1 / mac_ratio)
    for pair in comparison["pairs"]:  # 1/N + 1/D_K^2 is exact when the strides match
        assert pair["ratio"] == pytest.approx(pair["prediction"])


def test_separable_vs_full_mobilenet():
    comparison = flops.separable_vs_full(models.mobilenet_v1(),
                                         models.mobilenet_v1(separable=False))
    assert len(comparison["pairs"]) == 13
    for pair in comparison["pairs"]:
        assert pair["ratio"] == pytest.approx(pair["prediction"], rel=1e-12)
    assert comparison["pairs"][0]["prediction"] == pytest.approx(1 / 64 + 1 / 9)
    assert 1 / comparison["macs_ratio"] == pytest.approx(8.56, abs=0.01)
    assert 1 / comparison["params_ratio"] == pytest.approx(6.96, abs=0.01)


def test_layer_counts_and_totals():
    net = models.mobilenet_v1(alpha=0.5, resolution=128)
    rows = flops.layer_counts(net, batch=4)
    assert [r["name"] for r in rows][:3] == ["conv1", "dw2", "pw3"] and rows[-1]["kind"] == "fc"
    for row, spec in zip(rows, net):
        assert row["macs"] == 4 * spec.macs and row["flops"] == 2 * row["macs"]
        assert row["params"] == spec.params
        assert row["bytes_float64"] == 2 * row["bytes_float32"] == spec.bytes("float64", 4)
        assert row["intensity_float32"] == pytest.approx(row["flops"] / row["bytes_float32"])
        assert row["grad_input_macs"] == row["grad_weight_macs"] == row["macs"]
    total = flops.totals(rows)
    assert total["macs"] == 4 * sum(s.macs for s in net)
    assert total["bytes"] == sum(r["bytes_float32"] for r in rows)


@needs_torch
@pytest.mark.parametrize("groups", [1, 4])
def test_backward_counts_against_torch_flop_counter(groups):
    from torch.utils.flop_counter import FlopCounterMode

    spec = ConvSpec(8, 8, 3, padding=1, groups=groups, input_size=10)
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    w = torch.randn(*spec.weight_shape, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.conv2d(x, w, padding=1, groups=groups).sum().backward()
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    ours = flops.backward_macs(spec, batch=2)
    assert counts["aten.convolution"] == 2 * 2 * spec.macs
    # torch counts grad_input right and grad_weight `groups` times too high
    assert counts["aten.convolution_backward"] == 2 * (ours["grad_input"]
                                                       + groups * ours["grad_weight"])


def test_mobilenet_structure_and_bad_arguments():
    net = models.mobilenet_v1()
    assert len(net) == 28 and len(models.mobilenet_v1(separable=False)) == 15
    assert net[-3].kind == "dw" and net[-3].stride == (1, 1)  # the paper's "s2" is a misprint
    assert net[-2].output_size == (7, 7)
    assert [s.out_channels for s in models.mobilenet_v1(alpha=0.75)][:3] == [24, 24, 48]
    for alpha in (0, -1.0, "1"):
        with pytest.raises(ValueError, match="alpha must be a positive number"):
            models.mobilenet_v1(alpha=alpha)
    with pytest.raises(ValueError, match="resolution must be at least 32"):
        models.mobilenet_v1(resolution=31)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.get_model("resnet")
    with pytest.raises(ValueError,
                       match="layer 1 expects 4 input channels, but layer 0 produces 3"):
        chain([ConvSpec(3, 3, 3), ConvSpec(4, 4, 3)], 16)


def test_cli_flops_json(capsys):
    assert cli.main(["flops", "mobilenet-v1", "--alpha", "0.5", "--resolution", "160",
                     "--batch", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["total"]) >= {"macs", "flops", "params", "bytes"}
    net = models.mobilenet_v1(alpha=0.5, resolution=160)
    assert out["total"]["macs"] == 2 * sum(s.macs for s in net)
    assert len(out["layers"]) == 28 and out["layers"][0]["name"] == "conv1"
    assert len(out["separable_vs_full"]["pairs"]) == 13


def test_cli_flops_tables(capsys):
    assert cli.main(["flops", "mobilenet-v1-full"]) == 0
    out = capsys.readouterr().out
    assert "Conv MobileNet" in out and "4.87 G" in out and "29.28 M" in out
    assert "8.56x fewer" in out and "1/N + 1/D_K^2" in out


@pytest.mark.parametrize("argv, message", [
    (["flops", "mobilenet-v1", "--alpha", "0"], "--alpha: expected a positive number"),
    (["flops", "mobilenet-v1", "--alpha", "x"], "--alpha: expected a number"),
    (["flops", "mobilenet-v1", "--resolution", "16"], "resolution must be at least 32"),
    (["flops", "resnet50"], "unknown model 'resnet50'"),
    (["flops", "mobilenet-v1", "--bogus"], "unrecognized arguments: --bogus"),
    (["bench", "mobilenet-v1", "--algorithms", "fft"], "unknown algorithm 'fft'"),
])
def test_cli_errors_exit_nonzero_with_one_clear_line(argv, message, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    assert re.search(re.escape(message), capsys.readouterr().err)
