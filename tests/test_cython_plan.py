"""The Cython executor's own contract, beyond the parity grid it shares with Numba's (the
network, graph and ONNX test modules run on both): its steps refuse arguments that would
reach outside their buffers, its program refuses an input of another shape, and a plan on it
runs without Numba."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

plan = pytest.importorskip("fastconv.kernels.cython.plan")

from fastconv import config  # noqa: E402
from fastconv.kernels import tuning  # noqa: E402
from fastconv.kernels.plan_tiles import host_vector_bits  # noqa: E402
from fastconv.network import cython_executor as k  # noqa: E402


def _conv_args(**changes):
    """A 1x1 convolution of 4 pixels, 8 channels in and 16 out, as the planner gives it."""
    dtype = np.float32
    x, out = np.zeros(4 * 8, dtype), np.zeros(4 * 16, dtype)
    is_wide = False
    mr, nr = k.tile_shape(dtype, is_wide)
    w, panel = k.pack(np.ones((16, 8, 1, 1), dtype), 1, dtype, is_wide)
    args = dict(x=x, rows=np.arange(4, dtype=np.int64) * 8, taps=np.zeros(1, np.int64), c_in=8,
                groups=1, w=w, panel=panel, out=out, out_rows=np.arange(4, dtype=np.int64) * 16,
                out_per_group=16, bias=np.zeros(16, dtype), has_bias=True, kind=0, lo=0.0,
                hi=0.0, alpha=0.0, beta=0.0, res=out, res_rows=np.arange(4, dtype=np.int64) * 16,
                res_mode=0, wide=is_wide, mr=mr, nr=nr, tile_groups=1, unit_groups=1, block=1,
                chunk=8, out_border=np.array([4, 1, 1, 16, 0, 0, 0, 0], np.int64))
    args.update(changes)
    return args


def test_a_checked_step_computes():
    args = _conv_args(x=np.arange(32, dtype=np.float32))
    step = plan.conv(**args)
    src = plan.from_nchw(None, np.zeros((1, 1, 1, 1), np.float32), 0, 0,
                         np.array([1, 1, 1, 1, 0, 0, 0, 0], np.int64), 1)
    sink = plan.to_output(np.zeros((1, 1, 1, 1), np.float32), 0, 0, (1, 1, 1, 1), False, 1)
    program = plan.Program([src, step, sink], 2, (1, 1, 1, 1), (1, 1, 1, 1), np.float32)
    program.run(np.zeros((1, 1, 1, 1), np.float32), np.empty((1, 1, 1, 1), np.float32))
    expected = args["x"].reshape(4, 8).sum(axis=1)[:, None] * np.ones(16)
    np.testing.assert_allclose(args["out"].reshape(4, 16), expected)


@pytest.mark.parametrize("changes, error, message", [
    (dict(rows=np.array([0, 8, 16, 32], np.int64)), ValueError,
     r"rows addresses elements outside \[0, 32\): from 0 to 40"),
    (dict(out_rows=np.array([0, 16, 32, 60], np.int64)), ValueError,
     r"out_rows addresses elements outside \[0, 64\): from 0 to 76"),
    (dict(out_rows=np.arange(3, dtype=np.int64) * 16), ValueError,
     r"expected out_rows to be 1-D with at least 4 entries, but got size \[3\]"),
    (dict(x=np.zeros(32, np.float64)), TypeError,
     r"expected x of dtype float32, but got float64"),
    (dict(x=np.zeros(64, np.float32)[::2]), ValueError, r"x must be C-contiguous"),
    (dict(w=np.zeros(8, np.float32)), ValueError,  # 16 channels: panels of NR (the width's)
     rf"the packed weights \(8 elements\) are not {-(-16 // k.tile_shape(np.float32)[1])} "
     r"panels of 8 x"),
    (dict(mr=40), ValueError, r"a 40x\d+ tile is not one these kernels were compiled for"),
    (dict(res_mode=3), ValueError, r"res_mode must be 0, 1 or 2, but got 3"),
    (dict(kind=99), ValueError, r"unknown activation kind 99"),
    (dict(chunk=0), ValueError, r"chunk must be at least 1, but got 0"),
    (dict(out_border=np.array([4, 1, 1, 8, 0, 0, 0, 0], np.int64)), ValueError,
     r"the border \[4, 1, 1, 8, 0, 0, 0, 0\] does not describe out of 64 elements"),
])
def test_a_step_refuses_what_would_reach_outside_its_buffers(changes, error, message):
    with pytest.raises(error, match=message):
        plan.conv(**_conv_args(**changes))


def test_window_refusals():
    x, out = np.zeros((1, 4, 4, 8), np.float32), np.zeros((1, 2, 2, 8), np.float32)
    with pytest.raises(ValueError, match=r"x of size \[1, 4, 4, 8\] does not hold 5x5 pixels "
                                         r"from \(0, 0\)"):
        plan.depthwise_3x3(x, 0, 0, np.zeros((9, 8), np.float32), np.zeros(8, np.float32), out,
                           0, 0, 2, 2, 2, 2, 1, 1, 0, 0.0, 0.0, 0.0, 0.0, 8,
                           np.array([1, 2, 2, 8, 0, 0, 0, 0], np.int64), 2)
    with pytest.raises(ValueError, match=r"depthwise_3x3: weights \[9, 4\], bias \[8\]"):
        plan.depthwise_3x3(x, 0, 0, np.zeros((9, 4), np.float32), np.zeros(8, np.float32), out,
                           0, 0, 2, 2, 1, 1, 1, 1, 0, 0.0, 0.0, 0.0, 0.0, 8,
                           np.array([1, 2, 2, 8, 0, 0, 0, 0], np.int64), 2)


def test_the_new_steps_refuse_what_does_not_fit():
    """The squeeze-excite step's weights and scratch, and the copy's channel phases."""
    from fastconv.network.step_args import CopyChannels, SqueezeExcite

    f = np.float32
    x, out = np.zeros((1, 4, 4, 8), f), np.zeros((1, 4, 4, 8), f)
    se = SqueezeExcite(x=x, top=0, left=0, height=4, width=4, w1=np.zeros((2, 8), f),
                       b1=np.zeros(2, f), s_kind=0, s_lo=0.0, s_hi=0.0, s_alpha=0.0,
                       s_beta=0.0, w2=np.zeros((2, 8), f), b2=np.zeros(8, f), kind=0, lo=0.0,
                       hi=0.0, alpha=0.0, beta=0.0, out=out, out_top=0, out_left=0,
                       scratch=np.zeros((2, 18), f), tasks=2)
    plan.squeeze_excite(*se)
    with pytest.raises(ValueError, match=r"squeeze_excite: x of size \[1, 4, 4, 8\], w1 "
                                         r"\[2, 6\], b1 \[2\], w2 \[2, 8\]"):
        plan.squeeze_excite(*se._replace(w1=np.zeros((2, 6), f)))
    with pytest.raises(ValueError, match=r"expected scratch of at least \(2, 18\), but got "
                                         r"\[2, 17\]"):
        plan.squeeze_excite(*se._replace(scratch=np.zeros((2, 17), f)))
    copy = CopyChannels(x=x, top=0, left=0, x_c0=0, count=2, out=np.zeros((1, 8, 8, 2), f),
                        out_top=0, out_left=0, c0=0, height=4, width=4, sh=2, sw=2,
                        phase_step=2, row_step=1, col_step=1, tasks=2)
    plan.copy_channels(*copy)
    with pytest.raises(ValueError, match=r"copy_channels: channels 0 to 11 of x of size "
                                         r"\[1, 4, 4, 8\] do not fit"):
        plan.copy_channels(*copy._replace(phase_step=3))
    from fastconv.network.step_args import Resize

    rows, cols = np.array([0, 1, 3], np.int64), np.array([0, 2], np.int64)
    resize = Resize(x=x, top=0, left=0, height=4, width=4, out=np.zeros((1, 3, 2, 8), f),
                    out_top=0, out_left=0, rows0=rows, rows1=rows, row_w=np.zeros(3, f),
                    cols0=cols, cols1=cols, col_w=np.zeros(2, f), tasks=2)
    plan.resize(*resize)
    with pytest.raises(ValueError, match=r"resize: rows1 reaches outside the input's 4 rows"):
        plan.resize(*resize._replace(rows1=np.array([0, 1, 4], np.int64)))
    with pytest.raises(ValueError, match=r"resize: tables of 3 rows and 2 columns, x of size "):
        plan.resize(*resize._replace(col_w=np.zeros(3, f)))


def test_the_gather_and_binary_steps_refuse_what_does_not_fit():
    """The gather's tables stay inside its arrays (its last channel too), and the element-
    wise step knows its operations."""
    from fastconv.network.step_args import Binary, Gather

    f = np.float32
    gather = Gather(x=np.zeros(24, f), rows=np.array([0, 1, 2], np.int64), c_step=6,
                    out=np.zeros(12, f), out_rows=np.array([0, 4, 8], np.int64), channels=4,
                    tasks=2)
    plan.gather(*gather)
    with pytest.raises(ValueError, match=r"rows addresses elements outside \[0, 21\): from 0 "
                                         r"to 22"):
        plan.gather(*gather._replace(rows=np.array([0, 1, 3], np.int64), c_step=6,
                                     channels=4, x=np.zeros(21, f)))
    with pytest.raises(ValueError, match=r"out_rows addresses elements outside \[0, 12\): "
                                         r"from 0 to 13"):
        plan.gather(*gather._replace(out_rows=np.array([0, 4, 9], np.int64)))
    with pytest.raises(ValueError, match=r"expected rows to be 1-D with at least 3 entries"):
        plan.gather(*gather._replace(rows=np.array([0, 1], np.int64)))
    with pytest.raises(ValueError, match=r"gather: channels must be positive and c_step not "
                                         r"negative, but got 4 and -1"):
        plan.gather(*gather._replace(c_step=-1))
    a = np.ones((1, 2, 2, 3), f)
    binary = Binary(a=a, a_top=0, a_left=0, b=a, b_top=0, b_left=0, b_pixels=True, op=3,
                    out=np.zeros_like(a), out_top=0, out_left=0, height=2, width=2, kind=0,
                    lo=0.0, hi=0.0, alpha=0.0, beta=0.0, tasks=2)
    plan.binary(*binary)
    with pytest.raises(ValueError, match=r"binary: unknown operation 7"):
        plan.binary(*binary._replace(op=7))


def test_the_c_kernels_number_the_binary_operations_as_python_does():
    from fastconv.kernels.epilogue import BINARY_OPS

    assert plan.BINARY_OPS == BINARY_OPS


def test_a_program_refuses_another_input():
    buf = np.zeros((1, 2, 2, 3), np.float32)  # NHWC, between the input and the output
    src = plan.from_nchw(None, buf, 0, 0, np.array([1, 2, 2, 3, 0, 0, 0, 0], np.int64), 1)
    sink = plan.to_output(buf, 0, 0, (1, 3, 2, 2), False, 1)
    program = plan.Program([src, sink], 1, (1, 3, 2, 2), (1, 3, 2, 2), np.float32)
    out = np.empty((1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"expected input of size \[1, 3, 2, 2\] and dtype "
                                         r"float32, but got \(1, 3, 2, 3\)"):
        program.run(np.zeros((1, 3, 2, 3), np.float32), out)
    with pytest.raises(ValueError, match=r"expected out of size \[1, 3, 2, 2\], but got "
                                         r"\[1, 3, 2\]"):
        program.run(np.zeros((1, 3, 2, 2), np.float32), np.empty((1, 3, 2), np.float32))
    with pytest.raises(ValueError, match="a program runs from from_nchw to to_output"):
        plan.Program([sink, src], 1, (1, 3, 2, 2), (1, 3, 2, 2), np.float32)
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    np.testing.assert_array_equal(program.run(x[:, ::-1, :, ::-1], out), x[:, ::-1, :, ::-1])


def test_the_compiled_widths_match_the_tuning_tables():
    assert plan.VECTOR_BITS in tuning.GEMM_TILE
    assert plan.DEPTHWISE_VECTORS == tuning.DEPTHWISE_VECTORS[plan.VECTOR_BITS]
    assert config.ISA_WIDTHS[plan.ISA] == plan.VECTOR_BITS


def test_the_c_kernels_number_the_activations_as_python_does():
    from fastconv.kernels.epilogue import ACTIVATIONS

    assert plan.ACTIVATIONS == ACTIVATIONS


def test_the_kernels_chosen_are_the_widest_the_cpu_has():
    assert plan.VECTOR_BITS == min(config.ISA_BITS, host_vector_bits())


_EVERY_WIDTH = """
import sys
import numpy as np
import torch
from torch import nn
import fastconv as fc
from fastconv.kernels.cython import plan
torch.manual_seed(0)
module = nn.Sequential(
    nn.Conv2d(3, 40, 3, stride=2, padding=1), nn.BatchNorm2d(40), nn.ReLU6(),
    nn.Conv2d(40, 40, 3, padding=1, groups=40), nn.ReLU(), nn.Conv2d(40, 72, 1), nn.ReLU(),
    nn.Conv2d(72, 72, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    nn.Linear(72, 10)).eval()
for dtype in (np.float32, np.float64):
    net = fc.Network.from_torch(module.to(torch.float64 if dtype == np.float64 else
                                          torch.float32), backend="cython")
    x = np.random.default_rng(0).standard_normal((2, 3, 19, 13)).astype(dtype)
    expected = module(torch.from_numpy(x)).detach().numpy()
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(net(x), expected, rtol=tol, atol=tol)
assert "numba" not in sys.modules
print(plan.ISA, plan.VECTOR_BITS)
"""


@pytest.mark.parametrize("isa", ["sse2", "avx2", "avx512"])
def test_every_width_the_cpu_has_runs_the_plan_alike(isa, tmp_path):
    """FASTCONV_ISA caps the width (a fresh process each): the plan on each width's kernels
    and tiles matches torch; a width the CPU lacks is never chosen (the widest below it is)."""
    pytest.importorskip("torch")
    env = dict(os.environ, FASTCONV_ISA=isa)
    result = subprocess.run([sys.executable, "-c", _EVERY_WIDTH], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    bits = min(config.ISA_WIDTHS[isa], host_vector_bits())
    isa_run = {512: "avx512", 256: "avx2", 128: "sse2"}[bits]
    assert result.stdout.split() == [isa_run, str(bits)]


def test_an_unknown_isa_is_refused_in_words(tmp_path):
    env = dict(os.environ, FASTCONV_ISA="avx1024")
    result = subprocess.run([sys.executable, "-c", "import fastconv"], capture_output=True,
                            text=True, cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert ("FASTCONV_ISA must be one of avx512, avx2, sse2 (or auto), but got 'avx1024'"
            in result.stderr)


def test_a_cython_plan_runs_without_numba(tmp_path):
    """A fresh process: the plan is made and run on Cython, and Numba is never imported."""
    code = """
import sys
import numpy as np
import torch
from torch import nn
import fastconv as fc
module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                       nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1)).eval()
net = fc.Network.from_torch(module, backend="cython")
x = np.random.default_rng(0).standard_normal((2, 3, 9, 7)).astype(np.float32)
expected = module(torch.from_numpy(x)).detach().numpy()
assert np.allclose(net(x), expected, atol=1e-4), "wrong result"
assert "numba" not in sys.modules, "numba was imported"
assert "backend='cython'" in repr(net)
"""
    pytest.importorskip("torch")
    # away from the source tree, whose fastconv (without its compiled kernels, in a clone)
    # would shadow the installed one
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_backend_auto_takes_cython_without_numba(monkeypatch):
    from fastconv.network import network

    real = network.importlib.util.find_spec
    monkeypatch.setattr(network.importlib.util, "find_spec",
                        lambda name: None if name == "numba" else real(name))
    assert network._resolve("auto") == "cython"
    with pytest.raises(ValueError, match=r"backend 'numba' needs Numba: pip install numba"):
        network._resolve("numba")


def test_the_plans_workers_serve_threads_and_a_forked_child(tmp_path):
    """A fresh process: calls from several Python threads at once (one on the plan's own
    workers, the others in OpenMP regions) and calls in forked children (which start their
    own workers) give the answer of a call on one thread."""
    code = """
import multiprocessing, threading
import numpy as np
import torch
from torch import nn
import fastconv as fc
torch.manual_seed(0)
module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                       nn.Conv2d(8, 8, 5, padding=2, groups=8), nn.Conv2d(8, 16, 1)).eval()
net = fc.Network.from_torch(module, backend="cython", threads=2)
alone = fc.Network.from_torch(module, backend="cython", threads=1)
x = np.random.default_rng(0).standard_normal((2, 3, 19, 17)).astype(np.float32)
expected = alone(x)
assert np.allclose(expected, module(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
errors, start = [], threading.Barrier(3)
def work():
    start.wait()
    for _ in range(50):
        if not np.allclose(net(x), expected, rtol=1e-5, atol=1e-5):
            errors.append(1)
threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, "a call from a thread differs"
def child(queue):
    queue.put(bool(np.allclose(net(x), expected, rtol=1e-5, atol=1e-5)))
context = multiprocessing.get_context("fork")
queue = context.Queue()
children = [context.Process(target=child, args=(queue,), daemon=True) for _ in range(2)]
for c in children:
    c.start()
try:
    assert [queue.get(timeout=60) for _ in children] == [True, True], "a child differs"
finally:
    for c in children:
        c.join(timeout=10)
        if c.exitcode is None:
            c.kill()  # a child stuck waiting for workers it does not have
for c in children:
    assert c.exitcode == 0, "a child failed"
"""
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
