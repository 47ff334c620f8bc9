"""The package's layers (see the docstring of ``st_hpo/__init__.py``): no module imports a higher layer, and
the ``cli`` modules import each other without a cycle. Every import counts, function-level ones too; the
sources are parsed, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import st_hpo

SRC = Path(st_hpo.__file__).parent

#: Lowest first. A module's layer is its package under ``st_hpo`` (or its own name at the top); the package
#: ``st_hpo`` itself (the public API, and ``__version__``) sits below ``cli``, which reads its version.
LAYERS = ["exceptions", "_schema", "_interrupts", "_kinds", "_definition", "_tracking", "_validation", "_execution", "_results", "_engines",
          "_api", "__init__", "cli", "__main__"]


def _module_name(path: Path) -> str:
    parts = ["st_hpo", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}
#: The stored schema (``_tracking/_schema.py``) sits in a layer of its own, just above the exceptions.
SCHEMA = "st_hpo._tracking._schema"


def _layer(module: str) -> str:
    if module == "st_hpo":
        return "__init__"
    if module == SCHEMA:  # the stored keys: every layer spells a key through it, and it imports nothing
        return "_schema"
    return module.split(".")[1]


def _imports(path: Path) -> set[str]:
    """The st_hpo modules ``path`` imports, at module level or inside functions (``from st_hpo.cli import
    _review`` imports the module ``st_hpo.cli._review``)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {name for name in found if name == "st_hpo" or name.startswith("st_hpo.")}


def test_layers_cover_every_module():
    assert {_layer(m) for m in MODULES} <= set(LAYERS)
    assert set(MODULES) >= {"st_hpo._execution._trial", "st_hpo.cli._common", "st_hpo._definition._study"}


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, path in MODULES.items():
        for imported in _imports(path):
            assert imported in MODULES, f"{module} imports {imported}, which is not a module of st_hpo"
            if LAYERS.index(_layer(imported)) > LAYERS.index(_layer(module)):
                upward.append(f"{module} -> {imported}")
    assert not upward, "imports of a higher layer: " + "; ".join(upward)


def test_cli_has_no_import_cycle():
    cli = {m for m in MODULES if _layer(m) == "cli"}
    graph = {m: {i for i in _imports(MODULES[m]) if i in cli and i != m} for m in cli}
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        assert module not in stack, "cli import cycle: " + " -> ".join([*stack[stack.index(module):], module])
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*stack, module])
        done.add(module)

    for module in sorted(cli):
        visit(module, [])
