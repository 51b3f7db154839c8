"""The folder tree is the architecture: no import cycles, imports point down the layers, no test code in the product.

Every import of every module of `annotation_io`, `model` and `backend` counts, including imports inside
functions and under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("annotation_io", "model", "backend")  # each may import only itself and the ones before it
NOT_PRODUCT = ("model.testing", "model.cli", "model.bench", "model.__main__", "tests")


def module_names(root: Path = ROOT) -> dict[str, Path]:
    names = {}
    for package in LAYERS:
        for path in (root / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(root).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it imports (`from a import b` names a.b where that is a module)."""
    names = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module if node.level == 0 else ".".join(name.split(".")[: -node.level] + [node.module])
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names)
        graph[name] = {t for t in targets if t.split(".")[0] in (*LAYERS, "tests") and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in graph.items():
        rank = LAYERS.index(source.split(".")[0])
        product = not source.startswith(NOT_PRODUCT)
        for target in sorted(targets):
            top = target.split(".")[0]
            if top == "tests" or (product and target.startswith(NOT_PRODUCT)):
                bad.append(f"{source} imports {target} (test support, a command line or a benchmark)")
            elif top in LAYERS and LAYERS.index(top) > rank:
                bad.append(f"{source} imports {target}, a layer above it")
    return bad


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_imports_point_down_and_the_product_imports_no_test_support() -> None:
    assert layer_violations(import_graph()) == []


@pytest.mark.parametrize(
    ("module", "line", "expect"),
    [
        ("model/heatmaps.py", "from model.pipeline.predictor import Predictor", "cycle"),
        ("annotation_io/types.py", "from model.heatmaps import encode", "layer"),
        ("model/pipeline/video_job.py", "from model.testing.simulated import SimulatedBackbone", "layer"),
    ],
)
def test_the_guard_catches_a_planted_cycle_or_upward_import(tmp_path: Path, module: str, line: str,
                                                            expect: str) -> None:
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            copy = tmp_path / path.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(path.read_text())
    planted = tmp_path / module
    planted.write_text(planted.read_text() + f"\n\ndef _planted() -> None:\n    {line}\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) != [] if expect == "cycle" else layer_violations(graph) != []


def unlisted_modules(package: Path, *, recursive: bool = False) -> list[str]:
    """Modules and sub-packages under `package` (all levels with `recursive`) its `__init__.py` docstring does not name."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    files = package.rglob("*.py") if recursive else package.glob("*.py")
    names = {p.stem for p in files if p.stem not in ("__init__", "__main__") and "migrations" not in p.parts}
    names |= {p.parent.name for p in package.glob("*/__init__.py")}
    return sorted(n for n in names if not re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", doc))


def test_model_docstring_lists_every_module() -> None:
    """README "Development": `model/__init__.py` lists every module of the package."""
    assert unlisted_modules(ROOT / "model", recursive=True) == []


def test_backend_package_docstrings_list_their_modules() -> None:
    """README "Development": each backend package's `__init__.py` docstring lists its modules."""
    packages = [ROOT / "backend", *(p.parent for p in (ROOT / "backend").glob("*/__init__.py"))]
    missing = {str(p.relative_to(ROOT)): unlisted_modules(p) for p in packages}
    assert not {k: v for k, v in missing.items() if v}, missing
