"""The tuning in force: ``kernels/tuning.py``'s defaults, or what ``fastconv tune`` measured on
this machine.

As FFTW's wisdom, a measured tuning is stored per user and keyed by the CPU it was measured on
(its model, the vector width the kernels run at, its L2 cache and its cores), so that a home
directory shared by several machines, or a ``FASTCONV_ISA`` that narrows the kernels, never
applies one machine's figures to another. Only thresholds the planner reads when it plans are
stored (:data:`TUNABLE`): the tile shapes and the prefetch distance are compiled into the
kernels (and into Numba's cache), so they stay the width's defaults.

``FASTCONV_TUNING`` chooses: ``stored`` (the default: this CPU's stored tuning if there is
one), ``defaults`` (never a stored one), or the path of a tuning file.
``FASTCONV_TUNING_DIR`` is where tunings are stored (default ``~/.config/fastconv/tuning``,
or ``$XDG_CONFIG_HOME/fastconv/tuning``).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field

from . import tuning
from .plan_tiles import host_vector_bits, l2_bytes

#: The thresholds ``fastconv tune`` measures: each one the planner reads when it plans, so a
#: stored value takes effect on the next plan.
TUNABLE = ("WIDE_BELOW", "GEMM_CHUNK_BYTES", "GRID_SLACK", "PLAN_TASKS_PER_THREAD",
           "PLAN_WINOGRAD_CHANNELS", "PLAN_WINOGRAD_BLOCK_MAX", "PLAN_SEPARABLE_WEIGHTS",
           "PLAN_SEPARABLE_SCRATCH", "PLAN_EXPAND_ROWS", "PLAN_EXPAND_SCRATCH")

#: The defaults, as tuning.py has them (before any stored tuning is applied).
DEFAULTS = {name: getattr(tuning, name) for name in TUNABLE}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


@dataclass(frozen=True)
class MachineKey:
    """What a tuning is measured for: the CPU's model, the vector width the plan's kernels run
    at, a core's L2 cache and the cores this process may use."""

    model: str
    vector_bits: int
    l2_bytes: int
    cores: int

    @classmethod
    def here(cls, vector_bits: int | None = None) -> MachineKey:
        """This machine, at ``vector_bits`` (default: the width the kernels run at, the CPU's
        capped by ``FASTCONV_ISA``)."""
        if vector_bits is None:
            from ..config import ISA_BITS

            vector_bits = min(ISA_BITS, host_vector_bits())
        from ..runtime import usable_cores

        return cls(_cpu_model(), vector_bits, l2_bytes(), usable_cores())

    @property
    def slug(self) -> str:
        """A file name: the model's words, then the width, the L2 in KiB and the cores."""
        words = re.sub(r"[^a-z0-9]+", "-", self.model.lower()).strip("-")[:60]
        return f"{words}-{self.vector_bits}bit-l2-{self.l2_bytes >> 10}k-{self.cores}c"

    def describe(self) -> str:
        return (f"{self.model}, {self.vector_bits}-bit vectors, L2 {self.l2_bytes >> 10} KiB, "
                f"{self.cores} cores")


@dataclass
class Tuning:
    """A tuning: the values of :data:`TUNABLE` it sets, for which machine, measured when and
    how (``details``: each threshold's candidates and their times)."""

    key: MachineKey
    values: dict
    measured_at: str
    details: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dict(key=self.key.__dict__, values=self.values,
                               measured_at=self.measured_at, details=self.details), indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "the tuning") -> Tuning:
        data = json.loads(text)
        try:
            key = MachineKey(**data["key"])
            values = dict(data["values"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source} is not a fastconv tuning: {exc}") from None
        unknown = sorted(set(values) - set(TUNABLE))
        if unknown:
            raise ValueError(f"{source} sets {', '.join(unknown)}, which fastconv tune does not "
                             f"measure (it measures {', '.join(TUNABLE)})")
        for name, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{source}: {name} must be a positive number, but got "
                                 f"{value!r}")
            if isinstance(DEFAULTS[name], int) and int(value) != value:
                raise ValueError(f"{source}: {name} must be a whole number, but got {value!r}")
        return cls(key, values, str(data.get("measured_at", "")), dict(data.get("details", {})))


def directory() -> str:
    """Where tunings are stored (``FASTCONV_TUNING_DIR``, else the user's config folder)."""
    if os.environ.get("FASTCONV_TUNING_DIR"):
        return os.environ["FASTCONV_TUNING_DIR"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "fastconv", "tuning")


def path_for(key: MachineKey) -> str:
    return os.path.join(directory(), f"{key.slug}.json")


def save(t: Tuning) -> str:
    """Store ``t`` for its machine; returns the file's path."""
    path = path_for(t.key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(t.to_json())
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def load(key: MachineKey) -> Tuning | None:
    """The tuning stored for ``key``, or None."""
    path = path_for(key)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return Tuning.from_json(fh.read(), path)


@dataclass
class InForce:
    """Which tuning the planner reads: ``source`` is "defaults", "stored" or "file"."""

    source: str
    key: MachineKey | None = None
    tuning: Tuning | None = None
    path: str | None = None

    def describe(self) -> str:
        if self.tuning is None:
            width = f" for {self.key.vector_bits}-bit vectors" if self.key else ""
            why = {"defaults": " (FASTCONV_TUNING=defaults)"}.get(self.source,
                                                                  " (no stored tuning)")
            return f"kernels/tuning.py's defaults{width}{why}"
        changed = {k: v for k, v in self.tuning.values.items() if v != DEFAULTS[k]}
        what = (", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
                or "every value as the defaults")
        return (f"measured by fastconv tune at {self.tuning.measured_at} on "
                f"{self.tuning.key.describe()} ({self.path}): {what}")


#: What :func:`apply` put in force (None before it ran).
IN_FORCE: InForce | None = None


def apply(setting: str | None = None, vector_bits: int | None = None) -> InForce:
    """Put the tuning ``setting`` names (``FASTCONV_TUNING``'s values; default that variable)
    in force for kernels of ``vector_bits`` (default :meth:`MachineKey.here`'s): every value
    of :data:`TUNABLE` back to its default, then the stored or given tuning's values over
    them. Called once at import by ``fastconv.config``; again by ``fastconv tune``."""
    global IN_FORCE
    if setting is None:
        setting = os.environ.get("FASTCONV_TUNING", "stored").strip() or "stored"
    for name, value in DEFAULTS.items():
        setattr(tuning, name, value)
    if setting == "defaults":
        IN_FORCE = InForce("defaults")
        return IN_FORCE
    if setting == "stored":
        key = MachineKey.here(vector_bits)
        try:
            found = load(key)
        except (OSError, ValueError) as exc:  # a damaged file: said, and the defaults serve
            warnings.warn(f"fastconv: the stored tuning {path_for(key)} is not read ({exc}); "
                          "kernels/tuning.py's defaults apply. Run fastconv tune again, or "
                          "delete the file.", RuntimeWarning, stacklevel=2)
            found = None
        IN_FORCE = InForce("stored", key, found, path_for(key) if found else None)
    else:
        if not os.path.exists(setting):
            raise ValueError(f"FASTCONV_TUNING must be stored, defaults or a tuning file, but "
                             f"{setting!r} is none of these")
        with open(setting) as fh:
            found = Tuning.from_json(fh.read(), setting)
        IN_FORCE = InForce("file", found.key, found, setting)
    if IN_FORCE.tuning is not None:
        for name, value in IN_FORCE.tuning.values.items():
            setattr(tuning, name, value)
    return IN_FORCE
