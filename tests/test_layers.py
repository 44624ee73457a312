"""The import contracts between fer_edge's layers, read from the source with `ast` (no import, no TensorFlow).

The layout is a light core under the sides. The board installs the core and the runtime only, so a runtime
module that reached into data, convert or bench would pull host code (and, sooner or later, TensorFlow)
onto it; the host sides may share the data readers but not each other. Every `import` counts - at module
level, inside functions and under `if TYPE_CHECKING:` alike - because a lazy import breaks the board just as
surely, only later. `importlib.import_module("fer_edge...")` with a literal name counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "fer_edge"

# The core: the package itself, its top-level modules (fer_edge/*.py) and the packaged assets. It is what
# every side needs, the board included. fer_edge/cli.py is top-level too but it is the shell, not the core.
CORE = "core"
SHELL = "fer_edge.cli"
SIDES = ("data", "convert", "bench", "runtime", "recipes")

# Which layers each layer may import (itself included). `recipes` runs a table row end to end (train with
# convert, then score with bench), so it sits above both; nothing but the shell imports it.
ALLOWED: dict[str, set[str]] = {
    CORE: {CORE},
    "data": {CORE, "data"},
    "runtime": {CORE, "runtime"},
    "convert": {CORE, "data", "convert"},
    "bench": {CORE, "data", "bench"},
    "recipes": {CORE, "data", "convert", "bench", "recipes"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(name: str) -> bool:
    return (PKG.parent / Path(*name.split(".")) / "__init__.py").is_file()


def is_module(name: str) -> bool:
    return is_package(name) or (PKG.parent / Path(*name.split("."))).with_suffix(".py").is_file()


def layer_of(name: str) -> str:
    """The layer of a fer_edge module (or of an attribute of one: `fer_edge.__version__` is the core's)."""
    parts = name.split(".")
    assert parts[0] == "fer_edge", name
    if len(parts) == 1:
        return CORE
    if name == SHELL or parts[:2] == ["fer_edge", "cli"]:
        return SHELL
    if parts[1] in SIDES:
        return parts[1]
    if parts[1] == "assets" or is_module(".".join(parts[:2])) or not is_package(".".join(parts[:2])):
        return CORE
    raise AssertionError(f"{name}: fer_edge/{parts[1]}/ is a package no contract names; add it to SIDES")


def is_cli(name: str) -> bool:
    """fer_edge.cli or a side's command module (fer_edge.<side>.cli)."""
    parts = name.split(".")
    return name == SHELL or (len(parts) >= 3 and parts[1] in SIDES and parts[2] == "cli")


def imports_of(source: str, name: str, is_pkg: bool) -> list[tuple[int, str]]:
    """(line, imported fer_edge name) for every import in `source`, however deep it is nested.

    `from A import b` yields A.b when that is a module (so `from fer_edge import runtime` is the runtime)
    and A otherwise (an attribute of A). Relative imports are resolved against `name`.
    """
    here = name if is_pkg else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                found.append((node.lineno, sub if mod.startswith("fer_edge") and is_module(sub) else mod))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.append((node.lineno, node.args[0].value))
    return sorted({(line, n) for line, n in found if n == "fer_edge" or n.startswith("fer_edge.")})


def all_modules() -> list[tuple[str, Path]]:
    return sorted((module_name(p), p) for p in PKG.rglob("*.py"))


def violations(modules: list[tuple[str, Path]] | None = None) -> list[str]:
    bad = []
    for name, path in modules if modules is not None else all_modules():
        src_layer = layer_of(name)
        rel = path.relative_to(PKG.parent) if path.is_relative_to(PKG.parent) else path
        for line, target in imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py"):
            dst_layer = layer_of(target)
            if is_cli(target) and name != SHELL and target != name:
                bad.append(f"{rel}:{line}: imports {target} (only fer_edge/cli.py imports the command modules)")
            elif src_layer != SHELL and dst_layer not in ALLOWED[src_layer]:
                bad.append(f"{rel}:{line}: {src_layer} imports {target} ({dst_layer})")
    return bad


def test_every_module_belongs_to_a_layer():
    layers = {name: layer_of(name) for name, _ in all_modules()}
    assert layers["fer_edge.labels"] == CORE and layers["fer_edge.assets"] == CORE
    assert layers["fer_edge.cli"] == SHELL and layers["fer_edge.runtime.daemon"] == "runtime"
    assert set(layers.values()) == {CORE, SHELL, *SIDES}


def test_the_import_contracts_hold():
    assert violations() == []


@pytest.mark.parametrize("snippet, target", [
    ("def f():\n    from fer_edge.bench.core import run_bench\n", "fer_edge.bench.core"),
    ("class A:\n    def m(self):\n        import fer_edge.convert.api\n", "fer_edge.convert.api"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..data import load\n", "fer_edge.data.load"),
    ("import importlib\ndef f():\n    importlib.import_module('fer_edge.data.splits')\n", "fer_edge.data.splits"),
    ("from fer_edge import bench\n", "fer_edge.bench"),
])
def test_a_forbidden_import_anywhere_in_a_module_is_caught(tmp_path, snippet, target):
    # a runtime module with one forbidden import, nested as deep as the real code nests them
    fake = tmp_path / "probe.py"
    fake.write_text(snippet)
    assert [n for _, n in imports_of(snippet, "fer_edge.runtime.probe", False)] == [target]
    bad = violations([("fer_edge.runtime.probe", fake)])
    assert len(bad) == 1 and target in bad[0]


def test_a_cli_import_outside_the_shell_is_caught(tmp_path):
    fake = tmp_path / "probe.py"
    fake.write_text("def f():\n    from fer_edge.runtime.cli import register\n")
    bad = violations([("fer_edge.runtime.probe", fake)])
    assert len(bad) == 1 and "only fer_edge/cli.py" in bad[0]
