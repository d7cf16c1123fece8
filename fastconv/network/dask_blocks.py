"""``Network.map_blocks``: a plan over a Dask array (imported only by that method, so that
fastconv's core never imports dask).

Each block is a batch of whole images; a task runs the plan on it with the share of the cores
its worker may take. On a ``dask.distributed`` cluster the shares are worked out on the client
when the graph is built: each worker's machine's cores (asked of the workers) over the Dask
threads of every worker on that machine (the scheduler's figures). On the local schedulers a
task works it out where it runs: the cores over the threaded or process pool.
"""

from __future__ import annotations

import os

import numpy as np

from .. import runtime


def map_blocks(net, x):
    """See :meth:`fastconv.network.Network.map_blocks`."""
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise ModuleNotFoundError("Network.map_blocks runs on Dask, which is not installed: "
                                  "pip install 'fastconv[dask]'") from None

    if not isinstance(x, da.Array):
        raise TypeError(f"Network.map_blocks expects a dask.array.Array, but got "
                        f"{type(x).__name__}")
    if x.dtype != net.dtype:
        raise TypeError(f"Input type ({x.dtype}) and the network's weight type ({net.dtype}) "
                        f"should be the same")
    if x.ndim != 4:
        raise ValueError(f"Network expects a batched 4-D input (N, C, H, W), but got input of "
                         f"size {list(x.shape)}")
    batch = x.shape[0] if not np.isnan(x.shape[0]) else 1
    out_shape = net.output_shape((max(1, batch), *x.shape[1:]))  # the plan's own refusals
    if any(len(c) != 1 for c in x.chunks[1:]):
        x = x.rechunk({1: -1, 2: -1, 3: -1})  # a block holds whole images
    chunks = (x.chunks[0], *((n,) for n in out_shape[1:]))
    extra = {} if len(out_shape) == 4 else {"drop_axis": [2, 3]}
    client = _client()
    if client is not None:  # the plan scattered once to every worker, not in the graph
        plan, shares = client.scatter(net, broadcast=True, hash=False), worker_shares(client)
    else:  # one key for the plan, not a copy inside every task
        plan, shares = dask.delayed(net, pure=True), {}
    return da.map_blocks(_run_block, x, plan, shares, dtype=net.dtype, chunks=chunks,
                         meta=np.empty((0,) * len(out_shape), net.dtype), **extra)


def _client():
    """The current ``dask.distributed`` client, or None (a local scheduler)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:
        return None


def worker_shares(client) -> dict[str, int]:
    """Worker address -> its share of its machine's cores, on ``client``'s cluster."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(runtime.usable_cores)  # address -> usable cores there
    threads_on: dict[str, int] = {}
    for info in workers.values():
        threads_on[info["host"]] = threads_on.get(info["host"], 0) + info["nthreads"]
    return {address: max(1, cores.get(address, 1) // threads_on[info["host"]])
            for address, info in workers.items()}


def _local_share() -> int:
    """Outside a distributed worker: the cores over the local scheduler's pool (Dask's
    ``num_workers``, by default the cores), or all of them on the calling thread alone."""
    import threading

    import dask

    if threading.current_thread() is threading.main_thread() and (
            dask.config.get("scheduler", None) in ("sync", "synchronous", "single-threaded")):
        return runtime.usable_cores()
    pool = dask.config.get("num_workers", None) or os.cpu_count() or 1
    return max(1, runtime.usable_cores() // pool)


def _run_block(block, net, shares):
    """One block of whole images through the plan: on its share of the cores, unless the
    plan was made with a thread count of its own."""
    from .network import _dask_worker_share

    if net._settings[1] is not None:  # threads= given where the plan was made
        return net(block)
    threads = None
    if shares:
        from distributed import get_worker

        try:
            threads = shares.get(get_worker().address)
        except ValueError:
            threads = None
    if threads is None:
        threads = _dask_worker_share() or _local_share()
    if threads != net.threads:
        net = net.with_threads(threads)
    return net(block)
