"""``fastconv throughput``: images per second of a plan on one process, and over a Dask
cluster (a ``LocalCluster`` of each size asked, or the scheduler given).

The images are made where they are used, for nothing: on one process, one random batch
reused; on the cluster, by the workers (``dask.array.full``, a broadcast constant), so that
no input crosses the network and no time goes into making it. A pipeline that reads its images
elsewhere pays their bytes too: :func:`input_bytes` gives them, and the README's "Beyond one
machine" sets them against a network's bandwidth.
"""

from __future__ import annotations

import time

import numpy as np


def input_bytes(net, shape) -> int:
    """Bytes of one image's input, (C, H, W) in the plan's dtype."""
    return int(np.prod(shape[1:])) * net.dtype.itemsize


def one_process(net, shape, images: int, progress=None) -> dict:
    """The plan on this process alone, one batch of ``shape`` after another (the batch made
    once), after a first call that plans and warms it."""
    x = np.random.default_rng(0).standard_normal(shape).astype(net.dtype)
    net(x)
    calls = -(-images // shape[0])
    task = progress.add_task("one process", total=calls * shape[0]) if progress else None
    start = time.perf_counter()
    for _ in range(calls):
        net(x)
        if progress:
            progress.advance(task, shape[0])
    seconds = time.perf_counter() - start
    return dict(engine=f"one process, no Dask ({net.threads} threads)", workers=0,
                threads_per_worker=0, plan_threads=net.threads, images=calls * shape[0],
                seconds=seconds, images_per_second=calls * shape[0] / seconds)


def on_cluster(net, shape, images: int, client, label: str, progress=None) -> dict:
    """The plan over ``images`` random images in batches of ``shape[0]`` on ``client``'s
    cluster (``Network.map_blocks``), after a warm-up that plans it on every worker; each
    batch's outputs are summed per image on the worker, so that only N numbers come back."""
    import dask.array as da
    from distributed import as_completed

    from ..network.dask_blocks import worker_shares

    batch = shape[0]
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = sum(w["nthreads"] for w in workers.values())
    def run(count, task=None):
        # a block costs nothing to make (a broadcast constant): the time is the plan's and Dask's
        x = da.full((count, *shape[1:]), 0.5, chunks=(batch, *shape[1:]), dtype=net.dtype)
        y = net.map_blocks(x)
        sums = y.sum(axis=tuple(range(1, y.ndim)))
        futures = client.compute(list(sums.to_delayed().ravel()))
        for future in as_completed(futures):
            future.result()
            if task is not None:
                progress.advance(task, batch)

    run(2 * batch * threads)  # every worker plans the model (and compiles, on Numba) first
    count = -(-images // batch) * batch
    task = progress.add_task(label, total=count) if progress else None
    start = time.perf_counter()
    run(count, task)
    seconds = time.perf_counter() - start
    shares = sorted(set(worker_shares(client).values()))
    return dict(engine=label, workers=len(workers),
                threads_per_worker=max(w["nthreads"] for w in workers.values()),
                plan_threads=",".join(map(str, shares)), images=count, seconds=seconds,
                images_per_second=count / seconds)


def local_cluster(workers: int, threads_per_worker: int):
    """A ``LocalCluster`` of worker processes, its dashboard off."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                        processes=True, dashboard_address=":0", silence_logs=50)
