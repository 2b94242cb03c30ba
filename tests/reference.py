"""The reference semantics: a notebook's non-`skip` cells run top to bottom in one kernel."""

from __future__ import annotations

import json
from pathlib import Path

from mlops_nb.notebook.tags import parse_notebook


def run_top_to_bottom(nb_path: Path, tail: str = "", every_cell: bool = False) -> Path:
    """Execute the pipeline cells of nb_path in one kernel (cwd = its folder); returns it.

    `every_cell`: run every code cell not tagged `skip`, without our parser (for notebooks
    with no leading exploration cells), so the reference cannot share a parser's mistake."""
    import papermill as pm

    if every_cell:
        raw = json.loads(nb_path.read_text())["cells"]
        sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                   for c in raw if c["cell_type"] == "code"
                   and "skip" not in (c.get("metadata") or {}).get("tags", [])]
    else:
        parsed = parse_notebook(nb_path, nb_path.name)
        cells = list(parsed.imports + parsed.parameters + parsed.functions)
        for step in parsed.steps:
            cells += step.cells
        cells += parsed.metrics
        cells.sort(key=lambda c: c.index)
        sources = [c.source for c in cells]
    sources += [tail] if tail else []
    doc = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                      "outputs": [], "source": s, "id": f"r{i}"} for i, s in enumerate(sources)],
           "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}},
           "nbformat": 4, "nbformat_minor": 5}
    src = nb_path.parent / f".reference-{nb_path.stem}.ipynb"
    src.write_text(json.dumps(doc))
    out = src.with_name(f".reference-{nb_path.stem}.out.ipynb")
    pm.execute_notebook(str(src), str(out), cwd=str(nb_path.parent), progress_bar=False,
                        kernel_name="python3")
    return out
