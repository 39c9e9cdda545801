"""The shape of the house: no import circle in the package, and the bottom modules import nothing above them.

Imports are read from the source (every ``import`` and ``from ... import``, those inside functions too: a
deferred import is still a dependency), so a circle is caught before it ever bites at import time.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mtl_perception": ROOT / "mtl_perception", "mtl_perception_training": ROOT / "training"}
#: the bottom of the house: the tools' entry, atomic writes, signals and worker processes, the run lock
BOTTOM = {
    "mtl_perception.cli",
    "mtl_perception.atomic",
    "mtl_perception.signals",
    "mtl_perception.folder_lock",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports (``from package import submodule`` counts the submodule only,
    ``from module import name`` the module)."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            submodules = {f"{module}.{alias.name}" for alias in node.names} & set(modules)
            targets |= submodules
            if len(submodules) < len(node.names):  # names defined in ``module`` itself
                targets.add(module)
    return {t for t in targets if t in modules and t != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_in_the_package():
    assert _circles(_graph()) == []


def test_the_finder_sees_a_circle():
    """The check can fail: two modules importing each other are one circle."""
    assert _circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def _absolute_imports(path: Path) -> set[str]:
    """Every module ``path`` names in an absolute import."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imported.add(node.module)
    return imported


def test_the_bottom_modules_import_only_the_standard_library_and_each_other():
    modules = _modules()
    for name in BOTTOM:
        for module in _absolute_imports(modules[name]):
            top = module.split(".")[0]
            assert top in sys.stdlib_module_names or module in BOTTOM, f"{name} imports {module}"


def test_the_runtime_never_imports_training_and_only_ros_imports_rclpy():
    for name, path in _modules().items():
        if not name.startswith("mtl_perception."):
            continue
        imported = _absolute_imports(path)
        assert not any(m.startswith("mtl_perception_training") for m in imported), name
        if not name.startswith("mtl_perception.ros"):
            assert not any(m.split(".")[0] in ("rclpy", "rcl_interfaces") for m in imported), name
