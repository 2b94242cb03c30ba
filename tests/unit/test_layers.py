"""The package's shape (ARCHITECTURE.md): imports point down the layers, and never in a circle.

Every `import` of mlops_nb/**/*.py counts, at module level or inside a function (a lazy
import is still a dependency), as import-linter counts them: `import a.b.c` depends on a.b.c,
not on its parent packages. Layers, top to bottom; a module may import its own layer or any
lower one:

    cli
    serve, monitor, export, widgets, ci
    execute, compile, guards
    pipeline
    notebook
    artifacts, errors, project

The top-level names that generated files call (step, ploomber_task, runtime), the public API
(mlops_nb/__init__.py) and __main__ are exempt from the layers, and nothing in the package
may import them. A new top-level module or package must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mlops_nb"

LAYERS: dict[str, int] = {
    "artifacts": 0, "errors": 0, "project": 0,
    "notebook": 1,
    "pipeline": 2,
    "execute": 3, "compile": 3, "guards": 3,
    "serve": 4, "monitor": 4, "export": 4, "widgets": 4, "ci": 4,
    "cli": 5,
}
# stable names for generated files and users; thin shims over execute/
SHIMS = {"mlops_nb", "mlops_nb.__main__", "mlops_nb.step", "mlops_nb.ploomber_task",
         "mlops_nb.runtime"}


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package at `package`."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that module `name` imports (anywhere in its body)."""
    top = name.split(".")[0]
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def known(dotted: str) -> str | None:
        """The module itself, or the package an imported attribute belongs to."""
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from a import b`: a.b when b is a module, else a
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == top and (hit := known(target)) and hit != name:
                found.add(hit)
    return found


def graph(package: Path) -> dict[str, set[str]]:
    files = module_names(package)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def violations(deps: dict[str, set[str]]) -> list[str]:
    """Upward imports, imports of a shim, and modules that belong to no layer."""
    out = []
    for name, targets in sorted(deps.items()):
        if name in SHIMS:
            continue
        mine = layer_of(name)
        if mine is None:
            out.append(f"{name} belongs to no layer: add it to LAYERS (and ARCHITECTURE.md)")
            continue
        for target in sorted(targets):
            if target in SHIMS:
                out.append(f"{name} imports {target}, a name kept for generated files only")
            elif (theirs := layer_of(target)) is not None and theirs > mine:
                out.append(f"{name} (layer {mine}) imports {target} (layer {theirs}), upward")
    return out


def cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in deps.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return found


# --- the package itself ----------------------------------------------------------------------

def test_no_module_imports_a_higher_layer_or_a_shim():
    deps = graph(PACKAGE)
    assert len(deps) > 30, "the package was not found"
    assert violations(deps) == []


def test_no_import_circle():
    assert cycles(graph(PACKAGE)) == []


def test_every_package_has_a_docstring_stating_its_job():
    for init in PACKAGE.rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), init


# --- the check can fail: synthetic trees ------------------------------------------------------

def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "mlops_nb" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "mlops_nb"


BASE = {
    "__init__.py": "from mlops_nb.errors import E\n",
    "errors.py": "",
    "notebook/__init__.py": "",
    "notebook/tags.py": "from mlops_nb.errors import E\n",
    "pipeline/__init__.py": "",
    "pipeline/spec.py": "from mlops_nb.notebook.tags import parse\n",
    "execute/__init__.py": "",
    "execute/run.py": "from mlops_nb.pipeline import spec\nfrom mlops_nb.execute import state\n",
    "execute/state.py": "from mlops_nb import errors\n",
    "cli/__init__.py": "def main():\n    from mlops_nb.execute.run import run\n",
    "step.py": "from mlops_nb.execute.run import run\n",
}


def test_the_synthetic_base_tree_passes(tmp_path):
    deps = graph(_tree(tmp_path, BASE))
    assert deps["mlops_nb.execute.run"] == {"mlops_nb.pipeline.spec", "mlops_nb.execute.state"}
    assert violations(deps) == [] and cycles(deps) == []


@pytest.mark.parametrize("where, line, expected", [
    ("notebook/tags.py", "from mlops_nb.cli import main",
     "mlops_nb.notebook.tags (layer 1) imports mlops_nb.cli (layer 5), upward"),
    ("pipeline/spec.py", "def f():\n    from mlops_nb.execute import run",  # lazy counts too
     "mlops_nb.pipeline.spec (layer 2) imports mlops_nb.execute.run (layer 3), upward"),
    ("errors.py", "import mlops_nb.notebook.tags",
     "mlops_nb.errors (layer 0) imports mlops_nb.notebook.tags (layer 1), upward"),
    ("pipeline/spec.py", "from ..execute.state import x",  # relative import
     "mlops_nb.pipeline.spec (layer 2) imports mlops_nb.execute.state (layer 3), upward"),
    ("execute/run.py", "from mlops_nb import step",
     "mlops_nb.execute.run imports mlops_nb.step, a name kept for generated files only"),
    ("helpers.py", "",
     "mlops_nb.helpers belongs to no layer: add it to LAYERS (and ARCHITECTURE.md)"),
])
def test_a_planted_upward_import_fails(tmp_path, where, line, expected):
    files = dict(BASE)
    files[where] = files.get(where, "") + line + "\n"
    assert violations(graph(_tree(tmp_path, files))) == [expected]


def test_a_planted_circle_fails(tmp_path):
    files = dict(BASE)
    files["execute/state.py"] += "def f():\n    from mlops_nb.execute.run import run\n"
    assert cycles(graph(_tree(tmp_path, files))) == [["mlops_nb.execute.run",
                                                      "mlops_nb.execute.state"]]


# --- the names generated files call ----------------------------------------------------------

def test_the_names_generated_files_call_still_resolve():
    import importlib

    from mlops_nb import runtime
    from mlops_nb.execute import ploomber_task, stage
    from mlops_nb.execute import runtime as real_runtime

    assert runtime is real_runtime  # one module: it holds the running step's context
    assert importlib.import_module("mlops_nb.ploomber_task").run_step is ploomber_task.run_step
    assert importlib.import_module("mlops_nb.step").main is stage.main


def test_the_warm_workers_key_covers_every_module_of_the_package():
    from mlops_nb.execute import worker_socket

    keyed = {line.partition(":")[0] for line in worker_socket._signature().splitlines()}
    for path in PACKAGE.rglob("*.py"):
        assert path.relative_to(PACKAGE).as_posix() in keyed
