"""The house: the library never imports the measuring toolchain, and README's Layout section
names every room of the tree."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

# the source tree beside these tests (CI runs them against an installed copy)
ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fastconv"
TOOLCHAIN = ("fastconv.bench", "fastconv.cli")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(package: str, level: int, module: str) -> str:
    if not level:
        return module
    anchor = package.split(".")[:len(package.split(".")) - level + 1]
    return ".".join(anchor + ([module] if module else []))


def _pyx_imports(path: pathlib.Path, package: str) -> set[str]:
    """A .pyx is not Python: its import lines, read as text."""
    found = set()
    for match in re.finditer(r"^\s*(?:from\s+(\.*)([\w.]*)\s+c?import\s+([\w, ]+)|"
                             r"c?import\s+([\w.]+))", path.read_text(), re.M):
        dots, module, names, plain = match.groups()
        if plain:
            found.add(plain)
            continue
        base = _resolve(package, len(dots), module)
        found.add(base)
        found.update(f"{base}.{n.strip()}" for n in names.split(","))
    return found


def _imports(path: pathlib.Path) -> set[str]:
    """Every module a file imports, relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if path.suffix == ".pyx":
        return _pyx_imports(path, package)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(package, node.level, node.module or "")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _library_files():
    for path in sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.pyx")):
        name = _module_name(path)
        if not name.startswith(TOOLCHAIN):
            yield path


def test_the_library_imports_nothing_from_the_toolchain():
    files = list(_library_files())
    assert len(files) > 20  # the walk found the library
    offenders = {str(path.relative_to(ROOT)): sorted(i for i in _imports(path)
                                                     if i.startswith(TOOLCHAIN))
                 for path in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_walk_sees_relative_imports():
    # the check above would pass vacuously if relative imports were not resolved
    assert "fastconv.bench.harness" in _imports(PACKAGE / "bench" / "profile.py")
    assert "fastconv.spec" in _imports(PACKAGE / "kernels" / "algorithms.py")
    assert "fastconv.kernels.tuning" in _imports(PACKAGE / "kernels" / "cython" / "depthwise.pyx")


def test_a_convolution_loads_no_toolchain_module():
    code = ("import sys, numpy as np, fastconv as fc; "
            "fc.conv2d(np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))); "
            "print(sorted(m for m in sys.modules if m.startswith(('fastconv.bench', "
            "'fastconv.cli', 'rich', 'matplotlib'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def _readme_layout() -> list[str]:
    """The paths README's Layout block names, relative to the repository."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\n.*?```\n(.*?)```", text, re.S).group(1)
    paths, stack = [], []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = (len(line) - len(line.lstrip())) // 2
        name = line.split()[0]
        stack = stack[:indent] + [name]
        paths.append("".join(stack))
    return paths


def test_readme_layout_matches_the_tree():
    listed = _readme_layout()
    for path in listed:
        assert (ROOT / path).exists(), f"README's Layout names {path}, which does not exist"
    listed = {p.rstrip("/") for p in listed}
    backends = [PACKAGE / "kernels" / b for b in ("numba", "cython", "cuda")]
    rooms = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*")
             if (p.suffix in (".py", ".pyx") or p.is_dir()) and "__pycache__" not in p.parts
             and not any(b in p.parents for b in backends)}  # inside a backend: its modules
    rooms = {r for r in rooms if not r.endswith("/__init__.py") or r == "fastconv/__init__.py"}
    assert rooms - listed == set()


def test_a_plan_loads_no_dask(tmp_path):
    """Dask is the ``dask`` extra's: planning and running a network never imports it."""
    code = ("import sys, numpy as np, fastconv as fc; "
            "specs = fc.models.get_model('mobilenet-v1', alpha=0.25, resolution=32)[:3]; "
            "net = fc.Network.from_specs(specs, [np.ones(s.weight_shape) for s in specs]); "
            "net(np.ones((1, 3, 32, 32))); import pickle; pickle.loads(pickle.dumps(net)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[]"
