"""The two cells whose content is declarative: parameters and pipeline metrics.

A parameters cell holds only `NAME = literal` lines, so its defaults can seed params.yaml and
papermill can override them; a metrics cell names variables with `print(name)` (Kale).
"""

from __future__ import annotations

import ast

from mlops_nb.notebook.analysis import call_name
from mlops_nb.notebook.magics import parse


def literal_names(source: str, path: str = "<cell>") -> list[tuple[str, ast.AST]]:
    """`NAME = literal` pairs of a parameters cell; raises ValueError naming the bad line."""
    tree = parse(source)
    out: list[tuple[str, ast.AST]] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring or a bare string comment
        if isinstance(stmt, ast.Pass):
            continue
        target = None
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target = stmt.target
        if not isinstance(target, ast.Name):
            raise ValueError(
                f"line {stmt.lineno}: only 'NAME = literal' assignments are allowed in a"
                " parameters cell; move other code to a step or the 'functions' cell"
            )
        if target.id.startswith("__") and target.id.endswith("__"):
            raise ValueError(
                f"line {stmt.lineno}: {target.id} is one of Python's own names, not a"
                " parameter name; rename it"
            )
        value = stmt.value  # type: ignore[attr-defined]  # Assign or AnnAssign here
        assert value is not None
        try:
            ast.literal_eval(value)
        except ValueError:
            raise ValueError(
                f"line {stmt.lineno}: the value of {target.id} is not a literal"
                " (number, string, bool, None, list, dict); compute it in a step instead"
            ) from None
        out.append((target.id, value))
    return out


def metric_names(source: str) -> list[str]:
    """Names in a `pipeline-metrics` cell: `print(name)` lines (Kale) or bare names."""
    names = []
    for stmt in parse(source).body:
        if not isinstance(stmt, ast.Expr):
            continue
        v = stmt.value
        if isinstance(v, ast.Call) and call_name(v.func) == "print":
            names += [a.id for a in v.args if isinstance(a, ast.Name)]
        elif isinstance(v, ast.Name):
            names.append(v.id)
    return names


def immutable_literal(source: str) -> bool:
    """Whether a parameter's literal is immutable (numbers, strings, tuples of them)."""
    try:
        value = ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return False
    return _frozen(value)


def _frozen(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_frozen(v) for v in value)
    return value is None or isinstance(value, (int, float, complex, str, bytes, bool))
