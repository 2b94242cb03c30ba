"""Execute a step notebook's cells in this process, the way papermill would record them.

The notebook gets papermill's `injected-parameters` cell after its `parameters` cell; each
code cell runs in an IPython shell (magics and shell escapes work) and its outputs (streams,
rich displays, the last expression's value, the error) are written into the executed
notebook after every cell, so a crash keeps everything up to the failing cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic


def make_shell() -> Any:
    """An IPython shell for running cells in-process (no kernel)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    # a pipeline's cells do not belong in the user's IPython history (~/.ipython), and
    # forked steps must not share one SQLite file and its writer thread
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config, colors="nocolor")
    # `%matplotlib inline` asks for a GUI event loop, which a shell without a kernel lacks;
    # the inline back end needs none: figures arrive as display data, as in Jupyter
    shell.enable_gui = lambda gui=None: None  # type: ignore[method-assign]
    return shell


def _injected_cell(parameters: dict[str, Any]) -> dict[str, Any]:
    lines = ["# Parameters\n"] + [f"{k} = {v!r}\n" for k, v in parameters.items()]
    return {"cell_type": "code", "execution_count": None, "id": "injected-parameters",
            "metadata": {"tags": ["injected-parameters"]}, "outputs": [], "source": lines}


def prepare_notebook(doc: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The notebook as papermill would run it: parameters injected after the parameters cell
    (none when there are no parameters, as papermill does)."""
    if not parameters:
        return doc
    cells = list(doc["cells"])
    at = next((i + 1 for i, c in enumerate(cells)
               if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    cells.insert(at, _injected_cell(parameters))
    return {**doc, "cells": cells}


def write_notebook(path: Path, doc: dict[str, Any]) -> None:
    atomic.write_text(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def run_cells(shell: Any, doc: dict[str, Any], executed: Path) -> bool:
    """Run every code cell in `shell` as a kernel would (see kernelio); write the executed
    notebook after each; False on error."""
    from mlops_nb.execute import kernelio

    sink = kernelio.install(shell)
    # as in Jupyter and papermill: `if __name__ == '__main__':` cells run, and Python's
    # default filters show DeprecationWarnings raised by the step's own code
    shell.user_ns["__name__"] = "__main__"
    count = 0
    for cell in doc["cells"]:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        count += 1
        sink.start(count)
        with kernelio.capturing(sink):
            result = shell.run_cell(source, store_history=False, silent=False)
        cell["execution_count"] = count
        cell["outputs"] = sink.items
        write_notebook(executed, doc)
        if result.error_before_exec is not None or result.error_in_exec is not None:
            return False
    return True


def mark_executed(executed: Path, status: str) -> None:
    """Record in the executed notebook how the step ended, keeping what it has so far; the
    first status recorded stays (the step's own, then its runner's has nothing to add)."""
    try:
        doc = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if doc.get("metadata", {}).get("mlops_nb", {}).get("status"):
        return
    doc.setdefault("metadata", {}).setdefault("mlops_nb", {})["status"] = status
    doc["cells"].append({"cell_type": "markdown", "id": "mlops-nb-status", "metadata": {},
                         "source": [f"**mlops_nb: this step {status}.**"]})
    write_notebook(executed, doc)


def failure_of(executed: Path, source_notebook: str) -> tuple[str, str]:
    """(where and what, exception class name) of the error an executed notebook recorded. The
    cell is named by its number in the source notebook and by its first line, which is what
    JupyterLab shows (it numbers no cells)."""
    where, ename, _ = failure_details(executed, source_notebook)
    return where, ename


def failure_details(executed: Path, source_notebook: str) -> tuple[str, str, str]:
    """failure_of(), plus the failing cell's own traceback (what `-v` shows)."""
    import re

    try:
        doc = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "", "", ""
    for cell in doc.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = cell.get("metadata", {}).get("mlops_nb", {}).get("source_cell")
                err = f"{out.get('ename')}: {out.get('evalue')}"
                where = "generated code of the step"
                if src:
                    text = cell.get("source", "")
                    text = "".join(text) if isinstance(text, list) else text
                    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
                    first = first if len(first) <= 60 else first[:57] + "..."
                    where = f"{source_notebook} cell {src} (`{first}`)"
                tb = "\n".join(out.get("traceback", []))
                tb = re.sub(r"\x1b\[[0-9;]*m", "", tb)  # a kernel's traceback has colours
                return f"{where}: {err}", str(out.get("ename", "")), tb
    return "", "", ""
