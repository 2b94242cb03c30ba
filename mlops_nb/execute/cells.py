"""Execute a step notebook's cells in this process, the way papermill would record them.

The notebook gets papermill's `injected-parameters` cell after its `parameters` cell; each
code cell runs in an IPython shell (magics and shell escapes work) and its outputs (streams,
rich displays, the last expression's value, the error) are written into the executed
notebook after every cell, so a crash keeps everything up to the failing cell.
"""

from __future__ import annotations

import json
import traceback
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
    if shell.display_formatter is not None:
        shell.display_formatter.active_types = ["text/plain", "text/html", "image/png"]
    # `%matplotlib inline` asks for a GUI event loop, which a shell without a kernel lacks;
    # the inline back end needs none: figures arrive as display data, as in Jupyter
    shell.enable_gui = lambda gui=None: None  # type: ignore[method-assign]
    return shell


def _injected_cell(parameters: dict[str, Any]) -> dict[str, Any]:
    lines = ["# Parameters\n"] + [f"{k} = {v!r}\n" for k, v in parameters.items()]
    return {"cell_type": "code", "execution_count": None, "id": "injected-parameters",
            "metadata": {"tags": ["injected-parameters"]}, "outputs": [], "source": lines}


def prepare_notebook(doc: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The notebook as papermill would run it: parameters injected after the parameters cell."""
    cells = list(doc["cells"])
    at = next((i + 1 for i, c in enumerate(cells)
               if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    cells.insert(at, _injected_cell(parameters))
    return {**doc, "cells": cells}


def write_notebook(path: Path, doc: dict[str, Any]) -> None:
    atomic.write_text(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def _outputs(captured: Any, result: Any) -> list[dict[str, Any]]:
    outs: list[dict[str, Any]] = []
    if captured.stdout:
        outs.append({"output_type": "stream", "name": "stdout", "text": captured.stdout})
    if captured.stderr:
        outs.append({"output_type": "stream", "name": "stderr", "text": captured.stderr})
    for rich in captured.outputs:
        outs.append({"output_type": "display_data", "data": dict(rich.data),
                     "metadata": dict(rich.metadata or {})})
    if result is not None and result.result is not None:
        outs.append({"output_type": "execute_result", "execution_count": None,
                     "data": {"text/plain": repr(result.result)}, "metadata": {}})
    return outs


def run_cells(shell: Any, doc: dict[str, Any], executed: Path) -> bool:
    """Run every code cell in `shell`; write the executed notebook after each; False on error."""
    from IPython.utils.capture import capture_output

    count = 0
    for cell in doc["cells"]:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        count += 1
        with capture_output(display=True) as captured:
            result = shell.run_cell(source, store_history=False, silent=False)
        cell["execution_count"] = count
        cell["outputs"] = _outputs(captured, result)
        err = result.error_before_exec or result.error_in_exec
        if err is not None:
            cell["outputs"].append({
                "output_type": "error", "ename": type(err).__name__, "evalue": str(err),
                "traceback": traceback.format_exception(type(err), err, err.__traceback__),
            })
            write_notebook(executed, doc)
            return False
        write_notebook(executed, doc)
    return True


def mark_executed(executed: Path, status: str) -> None:
    """Record in the executed notebook how the step ended, keeping what it has so far."""
    try:
        doc = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    doc.setdefault("metadata", {}).setdefault("mlops_nb", {})["status"] = status
    doc["cells"].append({"cell_type": "markdown", "id": "mlops-nb-status", "metadata": {},
                         "source": [f"**mlops_nb: this step {status}.**"]})
    write_notebook(executed, doc)


def failure_of(executed: Path, source_notebook: str) -> tuple[str, str]:
    """(where and what, exception class name) of the error an executed notebook recorded."""
    try:
        doc = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "", ""
    for cell in doc.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = cell.get("metadata", {}).get("mlops_nb", {}).get("source_cell")
                err = f"{out.get('ename')}: {out.get('evalue')}"
                where = f"{source_notebook} cell {src}" if src else "generated code of the step"
                return f"{where}: {err}", str(out.get("ename", ""))
    return "", ""
