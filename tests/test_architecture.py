"""The folders show the parts, and no part imports one above it (docs/src/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Layers from the bottom; a module may import its own part and the layers below. Parts in one
#: layer sit side by side and never import each other: the web (which only reads and changes
#: state) cannot reach ENA or the workers.
LAYERS: list[set[str]] = [
    {"core"},
    {"state"},
    {"ena", "compute", "web"},
    {"collection"},
    {"jobs"},
    {"demo"},
    {"cli"},
]
PARTS = {"state", "ena", "compute", "collection", "jobs", "cli", "demo"}


def part(module: str) -> str:
    """The part a dotted module name belongs to (``backend.settings`` is core)."""
    names = module.split(".")
    if names[0] == "web":
        return "web"
    if module == "backend.__main__":
        return "cli"
    return names[1] if len(names) > 1 and names[1] in PARTS else "core"


def level(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every backend/web module this file imports, lazily inside functions too."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            # ``from backend.compute import remote`` imports the module backend.compute.remote
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in ("backend", "web")}


def sources() -> list[Path]:
    return sorted(p for top in ("backend", "web") for p in (SRC / top).rglob("*.py"))


def test_every_part_is_a_folder_with_a_docstring() -> None:
    for name in PARTS:
        init = SRC / "backend" / name / "__init__.py"
        assert init.is_file(), f"backend/{name}/ is not a package"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} says nothing"


def test_no_part_imports_one_above_it() -> None:
    wrong = []
    for path in sources():
        here = part(module_name(path))
        for imported in imports(path):
            there = part(imported)
            if there == here:
                continue
            if level(there) >= level(here):
                wrong.append(f"{module_name(path)} ({here}) imports {imported} ({there})")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_the_web_never_starts_or_destroys_workers() -> None:
    """The web reads and changes state only: compute, collection and jobs are out of reach."""
    for path in (SRC / "web").rglob("*.py"):
        reached = {part(name) for name in imports(path)}
        assert not reached & {"ena", "compute", "collection", "jobs"}, path.name
