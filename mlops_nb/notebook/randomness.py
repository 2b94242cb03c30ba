"""Whether a notebook seeds a global random generator (issue 25, item 1).

The rule: a notebook that seeds numpy's legacy global RandomState, Python's `random` or
torch's default generator anywhere in its pipeline cells draws one sequence top to bottom;
its steps then hand the generators' state on in notebook order (pipeline.randomchain).
A notebook that never seeds draws what it draws: there is no sequence to keep. Names are
resolved through the notebook's own imports (`import numpy as np`, `from numpy.random import
seed`, `from numpy import random as npr`), so a user's `seed()` helper is not a seed.
"""

from __future__ import annotations

import ast

from mlops_nb.notebook.magics import parse

# dotted names that set a global generator's state
SEEDS = frozenset({
    "numpy.random.seed", "numpy.random.set_state",
    "random.seed", "random.setstate",
    "torch.manual_seed", "torch.random.manual_seed", "torch.set_rng_state",
    "torch.random.set_rng_state",
})


def _dotted(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _imports(tree: ast.AST, into: dict[str, str]) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    into[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    into[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name != "*":
                    into[a.asname or a.name] = f"{node.module}.{a.name}"


def seeds_global_random(sources: list[str]) -> bool:
    """Whether any of these cells (in notebook order) calls a global generator's seed."""
    trees = []
    for src in sources:
        try:
            trees.append(parse(src))
        except SyntaxError:
            continue  # reported by the analysis of its cell
    names: dict[str, str] = {}
    for tree in trees:
        _imports(tree, names)
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            parts = _dotted(node.func)
            if not parts or parts[0] not in names:
                continue
            if ".".join([names[parts[0]], *parts[1:]]) in SEEDS:
                return True
    return False
