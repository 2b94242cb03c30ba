"""Execute a step notebook's cells in this process, the way papermill would record them.

The notebook gets papermill's `injected-parameters` cell after its `parameters` cell; each
code cell runs in an IPython shell (magics and shell escapes work) and its outputs (streams,
rich displays, the last expression's value, the error) are written into the executed
notebook after every cell, so a crash keeps everything up to the failing cell.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_nb import atomic


def serializer_warmup() -> Iterator[None]:
    """Import what saving and loading outputs will need, one module per step of the iterator.

    skops costs 0.2-0.3 s to import even through artifacts.skops_io (it lists every
    scikit-learn estimator, importing all of scikit-learn's public modules). A runner
    advances this while a step runs on the other core and stops as soon as the step ends, so
    the import barely delays the next step; what is imported before a fork is inherited by
    every later step.
    """
    # what every step's own machinery imports: running cells, reading params.yaml, writing
    # and reading outputs (pyarrow.dataset is Parquet's read path), recording it done
    for name in ("pyarrow.parquet", "IPython.utils.capture", "IPython.core.logger",
                 "pyarrow.pandas_compat", "pyarrow.dataset", "ruamel.yaml", "mlops_nb.runtime",
                 "mlops_nb.run"):
        _quiet_import(name)
        yield
    if "sklearn" not in sys.modules:
        return
    import pkgutil

    import sklearn

    skip = {"tests", "externals", "setup", "conftest", "experimental", "estimator_checks"}
    for info in pkgutil.walk_packages(sklearn.__path__, prefix="sklearn."):
        if "._" in info.name or skip & set(info.name.split(".")):
            continue
        _quiet_import(info.name)
        yield
    _quiet_import("sklearn.utils._testing")  # skops' estimator listing imports it (and pytest)
    yield
    try:
        from mlops_nb.artifacts import skops_io

        skops_io()
    except Exception:  # noqa: BLE001 - a step that saves a model reports the error itself
        pass
    yield


def deepen(names: list[str], root: Path) -> Iterator[None]:
    """Import, one per step of the iterator, the named modules that lie inside packages this
    process has already loaded (never a new top-level package: what the imports cell did
    not import stays out of the warm parent), except the project's own code under `root`
    (a warm worker must never hold code the user may edit next)."""
    for name in names:
        top = sys.modules.get(name.partition(".")[0])
        if name in sys.modules or top is None or _under(top, root):
            continue
        _quiet_import(name)
        yield


def _under(module: Any, root: Path) -> bool:
    f = getattr(module, "__file__", None) or ""
    return f.startswith(str(root)) and ".venv" not in f


LEARNED = "warm-modules.json"


def learned_modules(state: Path) -> list[str]:
    """The modules earlier runs' steps had to import themselves (see ModuleReport)."""
    try:
        names = json.loads((state / LEARNED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def remember_modules(state: Path, known: list[str], new: list[str]) -> list[str]:
    """Add `new` to what is remembered for the next run; returns the updated list."""
    added = [n for n in new if n not in set(known)]
    if not added:
        return known
    names = (known + added)[-3000:]
    try:
        atomic.write_text(state / LEARNED, json.dumps(names))
    except OSError:
        pass
    return names


class ModuleReport:
    """A forked step tells its warm parent which modules it had to import itself (a pipe).

    The parent imports them (`deepen`) while later steps run, so they inherit them: Parquet's
    read path, scikit-learn's lazily loaded parts, whatever the steps' code pulls in.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        self._before: frozenset[str] = frozenset()

    def child_started(self) -> None:
        os.close(self._r)
        self._before = frozenset(sys.modules)

    def child_ending(self) -> None:
        try:
            new = sorted(set(sys.modules) - self._before)
            os.set_blocking(self._w, False)
            os.write(self._w, json.dumps(new).encode()[:60000])
        except (OSError, TypeError, ValueError):
            pass
        finally:
            os.close(self._w)

    def parent_forked(self) -> None:
        os.close(self._w)

    def received(self) -> list[str]:
        """What the child reported (read after it ended; [] if it died before reporting).

        Never waits: a process the step forked may still hold the pipe open."""
        chunks = []
        try:
            os.set_blocking(self._r, False)
            while chunk := os.read(self._r, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        except OSError:
            chunks = []
        try:
            names = json.loads(b"".join(chunks) or b"[]")
        except ValueError:
            names = []
        finally:
            self.close()
        return [n for n in names if isinstance(n, str)]

    def close(self) -> None:
        try:
            os.close(self._r)
        except OSError:
            pass


def warm_serializers() -> None:
    """All of serializer_warmup at once."""
    for _ in serializer_warmup():
        pass


def _quiet_import(name: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a step that needs it reports the error itself
            pass


def make_shell() -> Any:
    """An IPython shell for running cells in-process (no kernel)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    # a pipeline's cells do not belong in the user's IPython history (~/.ipython), and
    # forked steps must not share one SQLite file and its writer thread
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config, colors="NoColor")
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
