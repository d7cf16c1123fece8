"""Build script: metadata lives in pyproject.toml; this compiles the Cython AOT kernels.

The extensions are optional. Without OpenMP they are built serial (with a warning); without a
working compiler (or Cython, NumPy, SciPy at build time) the package installs without them and
runs on Numba, and ``backend="cython"`` says how to build them.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext

CYTHON_MODULES = ["direct", "im2col", "depthwise", "pointwise", "plan"]
CYTHON_HEADERS = {"plan": ["fastconv/kernels/cython/_plan_kernels.h",
                           "fastconv/kernels/cython/_plan_width.h",
                           "fastconv/kernels/cython/_plan_kernels_t.h"]}
# Compiled for any x86-64: the plan's C kernels are built for each vector width inside the
# object (``#pragma GCC target`` in _plan_kernels.h) and chosen at import by what the CPU
# reports, so the module itself assumes nothing of the CPU.
PORTABLE_MODULES = {"plan"}


def _openmp_flags():
    """``-fopenmp`` when the compiler accepts and links it, else nothing (serial kernels)."""
    if os.environ.get("FASTCONV_NO_OPENMP"):
        return []
    cc = os.environ.get("CC", "cc")
    src = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as fh:
            fh.write(src)
        try:
            subprocess.run([cc, "-fopenmp", path, "-o", os.path.join(tmp, "probe")],
                           check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            warnings.warn("fastconv: the compiler does not support OpenMP; the Cython kernels "
                          "are built serial")
            return []
    return ["-fopenmp"]


def _flag_works(flag):
    """Whether the C compiler accepts ``flag``."""
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as fh:
            fh.write("int main(void) { return 0; }\n")
        try:
            subprocess.run([cc, flag, path, "-o", os.path.join(tmp, "probe")], check=True,
                           capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return False
    return True


def _arch_flags(name):
    """The per-call kernels are compiled where they run, so for this CPU's vector units;
    FASTCONV_MARCH overrides (e.g. ``x86-64-v3`` for a machine other than the builder). The
    plan's kernels (PORTABLE_MODULES) carry every width and choose at import."""
    if name in PORTABLE_MODULES:
        return []
    flag = f"-march={os.environ.get('FASTCONV_MARCH', 'native')}"
    return [flag] if _flag_works(flag) else []


def _extensions():
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:
        warnings.warn(f"fastconv: no Cython AOT kernels ({exc}); the Numba backend still works")
        return []
    from setuptools import Extension

    openmp = _openmp_flags()
    extensions = [
        Extension(
            f"fastconv.kernels.cython.{name}",
            [f"fastconv/kernels/cython/{name}.pyx"],
            include_dirs=[numpy.get_include()],
            # reassociation lets GCC vectorise sums (the weight gradients' dot products), as
            # Numba's "reassoc" does; no -ffinite-math-only, so NaN and Inf still propagate
            extra_compile_args=["-O3", *_arch_flags(name), "-fno-math-errno", "-fno-trapping-math",
                                "-fno-signed-zeros", "-fassociative-math", *openmp],
            extra_link_args=openmp,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            depends=CYTHON_HEADERS.get(name, []),  # rebuilt when its C headers change
        )
        for name in CYTHON_MODULES
    ]
    return cythonize(extensions, language_level=3, quiet=True,
                     compile_time_env={"OPENMP": bool(openmp)},
                     compiler_directives={"boundscheck": False, "wraparound": False,
                                          "cdivision": True, "initializedcheck": False})


class OptionalBuildExt(build_ext):
    """Build the extensions if we can; an install without them still works (on Numba)."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:  # side by side: the plan's, the longest, beside the others
            self.parallel = os.cpu_count() or 1

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers...
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    def _skip(self, exc):
        message = (f"fastconv: the Cython AOT kernels were not built ({exc}); fastconv runs "
                   "on its Numba kernels")
        warnings.warn(message)
        print(message, file=sys.stderr)


if shutil.which(os.environ.get("CC", "cc")) is None and not os.environ.get("CC"):
    warnings.warn("fastconv: no C compiler found; the Cython AOT kernels are not built")
    ext_modules = []
else:
    ext_modules = _extensions()

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
