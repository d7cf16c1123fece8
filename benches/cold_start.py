"""Cold start of a plan: a fresh process imports torch, then fastconv, plans MobileNet v1
(ReLU6, the classifier: ``fastconv.bench.zoo.mobilenet_v1``) with ``from_torch`` and makes
its first call on one 224x224 image. Timed inside each process, beyond importing torch (which
a user of ``from_torch`` has paid already); the minimum and median of fresh processes, per
backend. Whether Numba was imported is reported too: the Cython plan never needs it.

    python benches/cold_start.py [--repeats 5] [--backends cython,numba]

The Numba plan's figure is with its on-disk cache warm (a run before fills it); its first
run after an install also compiles.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import numpy as np

CHILD = """
import json, sys, time
import torch
start = time.perf_counter()
import numpy as np
import fastconv as fc
from fastconv.bench import zoo
imported = time.perf_counter()
module = zoo.mobilenet_v1().eval()
made = time.perf_counter()
net = fc.Network.from_torch(module, backend=sys.argv[1])
planned = time.perf_counter()
net(np.zeros((1, 3, 224, 224), np.float32))
done = time.perf_counter()
print(json.dumps(dict(imports=imported - start, plan=planned - made, first_call=done - planned,
                      total=done - start - (made - imported), numba="numba" in sys.modules)))
"""


def measure(backend: str, repeats: int) -> list[dict]:
    runs = []
    for _ in range(repeats):
        # from a directory of its own: the installed fastconv, never a source tree's
        with tempfile.TemporaryDirectory() as where:
            out = subprocess.run([sys.executable, "-c", CHILD, backend], capture_output=True,
                                 text=True, check=True, cwd=where)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="cython,numba")
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from fastconv.bench.machine import read_cpu

    table = Table(title=f"Cold start beyond importing torch, MobileNet v1 at batch 1 "
                        f"({read_cpu().model}; {args.repeats} fresh processes)")
    for column in ("backend", "import fastconv (s)", "from_torch (s)", "first call (s)",
                   "total min (s)", "total median (s)", "Numba imported"):
        table.add_column(column)
    for backend in args.backends.split(","):
        measure(backend, 1)  # fills the Numba cache, if any
        runs = measure(backend, args.repeats)
        med = {key: float(np.median([r[key] for r in runs]))
               for key in ("imports", "plan", "first_call", "total")}
        table.add_row(backend, f"{med['imports']:.3f}", f"{med['plan']:.3f}",
                      f"{med['first_call']:.3f}", f"{min(r['total'] for r in runs):.3f}",
                      f"{med['total']:.3f}", "yes" if any(r["numba"] for r in runs) else "no")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
