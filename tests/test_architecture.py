"""Layers point one way, read from the source with ``ast`` (function-level imports count):
config -> data -> model -> strategies/tasks -> training -> predict -> hub/advisor -> recipes -> cli.

Fails on any import cycle among nlp_transfer modules, any import of an underscore name from
another nlp_transfer module, any import of a higher layer, a function longer than 150 lines,
and a CLI whose subcommands are not one explicit table."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nlp_transfer"
MAX_FUNCTION_LINES = 150

#: Each module's layer (a package prefix covers its submodules). A module may import its own
#: layer and the layers below it, never a higher one.
LAYERS: dict[str, int] = {
    "nlp_transfer.errors": 0, "nlp_transfer.registry": 0, "nlp_transfer.version": 0, "nlp_transfer.metrics": 0,
    "nlp_transfer.log": 0,
    "nlp_transfer.config": 1,
    "nlp_transfer.data": 2, "nlp_transfer.config.multitask": 2,  # multi-task entries name data readers
    "nlp_transfer.tasks.ner.conll": 2, "nlp_transfer.tasks.multilabel.labels": 2,  # pure label utilities
    "nlp_transfer.model": 3,
    "nlp_transfer.strategies": 4, "nlp_transfer.tasks": 4,
    "nlp_transfer.training": 5,
    "nlp_transfer.predict": 6, "nlp_transfer.export": 6,
    "nlp_transfer.publish": 7, "nlp_transfer.selection": 7,
    "nlp_transfer.recipe": 8, "nlp_transfer.multitask": 8, "nlp_transfer.selection.compare": 8,
    "nlp_transfer.cli": 9, "nlp_transfer": 9,
}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        name = ".".join(f.relative_to(PKG.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    return mods


MODULES = _modules()


def _target(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import, at any depth."""
    found = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom):
            target = _target(module, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
    return [(m, n, line) for m, n, line in found if m == "nlp_transfer" or m.startswith("nlp_transfer.")]


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m and not m.startswith(t + ".")}
            for m in MODULES}


def _layer(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    raise AssertionError(f"{module} has no layer: add it to LAYERS in tests/test_architecture.py")


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_no_import_cycles():
    graph, index, low, stack, on, cycles = _graph(), {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_private_names_imported_across_modules():
    private = [f"{m}:{line} imports {t}.{n}" for m in MODULES for t, n, line in _imports(m)
               if n and n.startswith("_") and not n.startswith("__") and t != m]
    assert private == []


def test_layers_point_one_way():
    upward = [f"{m}:{line} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m in MODULES for t, _, line in _imports(m)
              if t in MODULES and not m.startswith(t + ".") and _layer(t) > _layer(m)]
    assert upward == []


def test_no_function_needs_a_scroll_bar():
    long = [f"{f.relative_to(PKG.parent)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for f in MODULES.values() for node in ast.walk(ast.parse(f.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_cli_subcommands_are_one_explicit_table():
    from nlp_transfer import cli
    assert "importlib" not in (PKG / "cli.py").read_text()
    table = cli.subcommands()
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(table)
    assert {"train", "predict", "evaluate", "push", "rank-models", "compare", "preflight"} <= set(table)


def test_the_checker_sees_what_it_should(tmp_path, monkeypatch):
    """The rules are not vacuous: a function-level relative import of a private name, the cycle it
    closes and an upward import are all found."""
    a, b = tmp_path / "zz_a.py", tmp_path / "zz_b.py"
    a.write_text("def f():\n    from .zz_b import _hidden\n")
    b.write_text("from . import zz_a\nfrom .cli import main\n")
    monkeypatch.setitem(MODULES, "nlp_transfer.zz_a", a)
    monkeypatch.setitem(MODULES, "nlp_transfer.zz_b", b)
    monkeypatch.setitem(LAYERS, "nlp_transfer.zz_a", 1)
    monkeypatch.setitem(LAYERS, "nlp_transfer.zz_b", 1)
    assert ("nlp_transfer.zz_b", "_hidden", 2) in _imports("nlp_transfer.zz_a")
    for rule in (test_no_private_names_imported_across_modules, test_no_import_cycles, test_layers_point_one_way):
        with pytest.raises(AssertionError):
            rule()
