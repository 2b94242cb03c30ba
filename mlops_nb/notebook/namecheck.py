"""Names a step reads that nothing before it defines: errors at compile time, not at run time.

The rule (pyflakes-style): a name a step's own code reads must be bound by an earlier step of
its notebook, the `imports`/`functions` cells, the parameters or Python's builtins. Otherwise
compile fails naming the notebook, cell, line and name, with the nearest defined name; if a
later step binds it, the message names that step's cell instead (the notebook is probably
mis-tagged). A name the step's own code binds before it reads it, on some path (in a branch,
a `try` or its handler: `except ImportError: import json`), is not undefined: the read may
fail at run time, as in the kernel, and the check does not guess which branch runs. Code
that can bind names the analysis cannot see (`from x import *`, `globals()`, `exec`, `%run`,
`%store -r`) turns the error into a warning.
"""

from __future__ import annotations

import ast
import difflib
import logging
import re
from collections.abc import Iterable

from mlops_nb.errors import NotebookError
from mlops_nb.notebook.effects import BUILTINS
from mlops_nb.notebook.magics import parse
from mlops_nb.notebook.tags import Cell

log = logging.getLogger(__name__)

DYNAMIC_CALLS = frozenset({"globals", "locals", "exec", "eval", "vars", "__import__"})
DYNAMIC_MAGICS = re.compile(r"^\s*%(run|store|load|autoreload|env)\b|^\s*get_ipython\(\)",
                            re.MULTILINE)
IPYTHON_NAMES = frozenset({"_", "__", "___", "_i", "_ii", "_iii", "_oh", "_ih", "_dh"})


def first_read(cells: Iterable[Cell], name: str) -> tuple[int, int] | None:
    """(cell index, line) where the code of `cells` first reads `name`, if it does directly."""
    for cell in cells:
        try:
            tree = parse(cell.source)
        except SyntaxError:
            continue
        lines = [n.lineno for n in _outside_bodies(tree) if isinstance(n, ast.Name)
                 and n.id == name and isinstance(n.ctx, ast.Load)]
        if lines:
            return cell.index, min(lines)
    return None


def first_bind(cells: Iterable[Cell], name: str) -> tuple[int, int] | None:
    """(cell index, line) where the code of `cells` first binds `name` in its own scope, at
    any depth of statements (not in a def's or class's body, nor as a comprehension's
    variable), if it does."""
    for cell in cells:
        try:
            tree = parse(cell.source)
        except SyntaxError:
            continue
        lines = [line for bound, line in _bindings(tree) if bound == name]
        if lines:
            return cell.index, min(lines)
    return None


def _bindings(tree: ast.AST) -> list[tuple[str, int]]:
    """(name, line) of every binding of the code's own scope."""
    out: list[tuple[str, int]] = []
    todo = [tree]
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append((n.name, n.lineno))  # its body is a scope of its own
            continue
        if isinstance(n, (ast.Lambda, ast.ListComp, ast.SetComp, ast.GeneratorExp,
                          ast.DictComp)):  # only `:=` binds outside these scopes
            out += [(m.target.id, m.lineno) for m in ast.walk(n)
                    if isinstance(m, ast.NamedExpr)]
            continue
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            out += [((a.asname or a.name).split(".")[0], n.lineno) for a in n.names
                    if a.name != "*"]
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.append((n.id, n.lineno))
        elif isinstance(n, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and n.name:
            out.append((n.name, n.lineno))
        elif isinstance(n, ast.MatchMapping) and n.rest:
            out.append((n.rest, n.lineno))
        todo += list(ast.iter_child_nodes(n))
    return out


def _outside_bodies(node: ast.AST) -> list[ast.AST]:
    """Nodes that run when the code runs: not the bodies of defs and lambdas, which run when
    called (a name they read may be defined later, as Python allows)."""
    out: list[ast.AST] = []
    todo = [node]
    while todo:
        n = todo.pop()
        out.append(n)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo += n.decorator_list + n.args.defaults + [d for d in n.args.kw_defaults if d]
        elif isinstance(n, ast.Lambda):
            todo += n.args.defaults + [d for d in n.args.kw_defaults if d]
        else:
            todo += list(ast.iter_child_nodes(n))
    return out


def dynamic(cells: Iterable[Cell]) -> bool:
    """Whether code may bind names the analysis cannot see."""
    for cell in cells:
        if DYNAMIC_MAGICS.search(cell.source):
            return True
        try:
            tree = parse(cell.source)
        except SyntaxError:
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names):
                return True
            if isinstance(n, ast.Name) and n.id in DYNAMIC_CALLS:
                return True
    return False


def check_reads(path: str, step: str, cells: tuple[Cell, ...], unresolved: set[str],
                defined: set[str], later: dict[str, tuple[str, int]], lenient: bool) -> None:
    """Raise (or warn, when `lenient`) for the first name of `unresolved` the step's own code
    reads. `defined`: every name the step could see; `later`: names later steps bind, with
    the step and cell that bind them (step '' for a cell outside the pipeline)."""
    for name in sorted(unresolved - BUILTINS - IPYTHON_NAMES):
        where = first_read(cells, name)
        if where is None:  # read inside a function it calls: Python says so if it runs
            continue
        cell, line = where
        bound = first_bind(cells, name)
        if bound is not None and bound < (cell, line):  # bound on some path before the read
            continue
        if name in later and not later[name][0]:
            msg = (f"line {line}: undefined name '{name}': only cell {later[name][1]}, which is"
                   " not part of the pipeline ('skip', or untagged before the first tagged"
                   " cell), defines it; tag that cell as part of a step or move the code")
        elif name in later:
            other, other_cell = later[name]
            msg = (f"line {line}: step '{step}' reads '{name}', which only step '{other}'"
                   f" (cell {other_cell}) defines, later in the pipeline; the cell is probably"
                   " tagged with the wrong step: tag it (or the cell that defines the name)"
                   " so that the name is defined first")
        else:
            near = difflib.get_close_matches(name, sorted(defined), n=1, cutoff=0.6)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            msg = (f"line {line}: undefined name '{name}'{hint}: no earlier step, parameter,"
                   " 'imports' or 'functions' cell defines it")
        if lenient:
            log.warning("%s cell %d: %s (not an error: the notebook binds names"
                        " dynamically)", path, cell, msg)
            continue
        raise NotebookError(path, msg, cell)


def bound_names(source: str) -> set[str]:
    """Every name a cell's code may bind, at any depth (for naming the later step)."""
    try:
        tree = parse(source)
    except SyntaxError:
        return set()
    out = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
           and isinstance(n.ctx, ast.Store)}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in n.names}
    return out
