"""A plan beyond one process: pickled whole and rebuilt where it is loaded, and mapped over a
Dask array on the threaded scheduler and on a LocalCluster of two worker processes, against
the plan on the whole array and torch."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import fastconv as fc

from helpers import needs_torch, torch

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

if torch is not None:
    from torch import nn

    from fastconv.bench import engines

pytestmark = [needs_torch, pytest.mark.usefixtures("plan_backend")]


def _small():
    """MobileNet v1 at a quarter of its width, its batch norms, ReLUs and classifier."""
    return engines.torch_model("mobilenet-v1", alpha=0.25, resolution=40)


def _x(n=5, size=40, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def _torch(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_a_plan_pickles_from_torch_onnx_and_specs():
    module, x = _small(), _x()
    from_onnx = fc.Network.from_onnx(engines.onnx_bytes(module, x))
    specs = fc.models.get_model("mobilenet-v1", alpha=0.25, resolution=40, include_fc=False)
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(s.weight_shape) * 0.1 for s in specs]
    from_specs = fc.Network.from_specs(specs, weights, activation="relu6")
    x64 = x.astype(np.float64)
    for net, data in ((fc.Network.from_torch(module), x), (from_onnx, x), (from_specs, x64)):
        expected = net(data)
        loaded = pickle.loads(pickle.dumps(net))
        assert loaded is not net and loaded.backend == net.backend
        assert loaded.threads == net.threads
        np.testing.assert_array_equal(loaded(data), expected)
        assert pickle.loads(pickle.dumps(net)) is loaded  # rebuilt once per process
    np.testing.assert_allclose(from_onnx(x), _torch(module, x), rtol=1e-4, atol=1e-4)


def test_threads_are_settable_and_travel():
    net = fc.Network.from_torch(_small(), threads=1)
    assert pickle.loads(pickle.dumps(net)).threads == 1
    two = net.with_threads(2)
    assert two.threads == 2 and net.with_threads(2) is two
    np.testing.assert_allclose(two(_x()), net(_x()), rtol=1e-5, atol=1e-6)


def test_map_blocks_is_lazy_and_knows_its_shape_and_dtype():
    module = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU6()).eval()
    net = fc.Network.from_torch(module)
    x = da.zeros((7, 3, 21, 17), chunks=(3, 3, 21, 17), dtype=np.float32)
    y = net.map_blocks(x)
    assert y.shape == net.output_shape(x.shape) == (7, 8, 11, 9)
    assert y.dtype == np.float32 and y.chunks == ((3, 3, 1), (8,), (11,), (9,))
    classifier = fc.Network.from_torch(_small()).map_blocks(
        da.zeros((5, 3, 40, 40), chunks=2, dtype=np.float32))  # rechunked whole but the batch
    assert classifier.shape == (5, 1000) and classifier.chunks == ((2, 2, 1), (1000,))


def test_map_blocks_on_the_threaded_scheduler():
    module, x = _small(), _x(7)
    net = fc.Network.from_torch(module)
    y = net.map_blocks(da.from_array(x, chunks=(3, 3, 20, 40))).compute(scheduler="threads")
    np.testing.assert_allclose(y, net(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, _torch(module, x), rtol=1e-4, atol=1e-4)


def test_a_thread_count_given_is_kept_by_map_blocks(monkeypatch):
    chosen = []
    made = fc.Network.with_threads
    monkeypatch.setattr(fc.Network, "with_threads",
                        lambda self, n: chosen.append(n) or made(self, n))
    x = da.from_array(_x(4), chunks=2)
    fc.Network.from_torch(_small(), threads=2).map_blocks(x).compute(scheduler="threads")
    assert chosen == []  # threads=2 given: no other count
    fc.Network.from_torch(_small()).map_blocks(x).compute(scheduler="threads")
    cores = len(os.sched_getaffinity(0))
    assert set(chosen) <= {max(1, cores // (os.cpu_count() or 1))}  # the pool's share


def test_map_blocks_on_the_process_scheduler():
    """Each process loads the plan from its pickle and rebuilds it."""
    module, x = _small(), _x(4, seed=3)
    net = fc.Network.from_torch(module)
    y = net.map_blocks(da.from_array(x, chunks=2)).compute(scheduler="processes",
                                                           num_workers=2)
    np.testing.assert_allclose(y, net(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("x, error, message", [
    (lambda: da.zeros((4, 4, 40, 40), chunks=2, dtype=np.float32), ValueError,
     r"layer 0 \(Conv2d\): given groups=1, weight of size \[8, 3, 3, 3\], expected "
     r"input\[4, 4, 40, 40\] to have 3 channels, but got 4 channels instead"),
    (lambda: da.zeros((4, 3, 40, 40), chunks=2, dtype=np.float64), TypeError,
     r"Input type \(float64\) and the network's weight type \(float32\) should be the same"),
    (lambda: da.zeros((3, 40, 40), chunks=2, dtype=np.float32), ValueError,
     r"Network expects a batched 4-D input \(N, C, H, W\), but got input of size \[3, 40, 40\]"),
    (lambda: np.zeros((4, 3, 40, 40), np.float32), TypeError,
     r"Network.map_blocks expects a dask.array.Array, but got ndarray"),
])
def test_map_blocks_refuses_on_the_client(x, error, message):
    with pytest.raises(error, match=message):
        fc.Network.from_torch(_small()).map_blocks(x())


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=50) as local, \
            distributed.Client(local) as client:
        yield client


def test_map_blocks_on_a_local_cluster_of_two_processes(cluster):
    module, x = _small(), _x(9, seed=2)
    net = fc.Network.from_torch(module)
    y = net.map_blocks(da.from_array(x, chunks=(2, 3, 40, 40)))
    got = cluster.compute(y).result()
    np.testing.assert_allclose(got, net(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, _torch(module, x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"expected input\[1, 4, 40, 40\] to have 3 channels"):
        net.map_blocks(da.zeros((1, 4, 40, 40), dtype=np.float32))


def test_each_worker_takes_its_share_of_the_cores(cluster):
    from fastconv.network.dask_blocks import worker_shares

    cores = len(os.sched_getaffinity(0))
    shares = worker_shares(cluster)
    assert len(shares) == 2 and set(shares.values()) == {max(1, cores // 2)}

    def loaded_threads(data):  # a plan loaded in a worker takes the worker's share
        return pickle.loads(data).threads

    net = fc.Network.from_torch(_small())
    threads = cluster.gather(cluster.map(loaded_threads, [pickle.dumps(net)] * 2, pure=False))
    assert threads == [1, 1]  # the OMP_NUM_THREADS=1 Dask's nanny gives each worker process


def test_the_throughput_command(tmp_path, capsys):
    import json

    from fastconv import cli

    path = tmp_path / "throughput.json"
    assert cli.main(["throughput", "mobilenet-v1", "--alpha", "0.25", "--resolution", "32",
                     "--images", "8", "--batch", "4", "--workers", "1", "--json",
                     str(path)]) == 0
    runs = json.loads(path.read_text())["runs"]
    assert [r["workers"] for r in runs] == [0, 1] and all(r["images"] == 8 for r in runs)
    assert all(r["images_per_second"] > 0 for r in runs)
    assert "LocalCluster, 1 worker x 1 thread" in capsys.readouterr().out
    assert cli.main(["throughput", "mobilenet-v1", "--scheduler", "tcp://127.0.0.1:1",
                     "--workers", "2"]) == 2
    assert "--workers sizes a LocalCluster; with --scheduler the cluster is given" in (
        capsys.readouterr().err)
    assert cli.main(["throughput", "nosuch-net"]) == 2
    assert "unknown model 'nosuch-net'; expected one of ['mobilenet-v1', 'mobilenet-v1-full']" in (
        capsys.readouterr().err)


def test_map_blocks_without_dask_says_which_extra(monkeypatch):
    """Where Dask is not installed, map_blocks names the extra to install."""
    import builtins

    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name == "dask" or name.startswith("dask."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    net = fc.Network.from_specs([fc.ConvSpec(3, 4, 3, padding=1)],
                                [np.ones((4, 3, 3, 3), np.float32)])
    with pytest.raises(ModuleNotFoundError, match=r"Network.map_blocks runs on Dask, which is "
                                                  r"not installed: pip install 'fastconv\[dask\]'"):
        net.map_blocks(np.zeros((1, 3, 8, 8), np.float32))
