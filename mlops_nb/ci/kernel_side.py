"""What the kernel of a notebook's `test` cells runs: for each cell, its values loaded, then
the cell itself, then the namespace put back as the imports and functions cells left it, so
no test sees what another loaded or bound.

Runs inside the kernel, so it reports through one marked line of stdout (JSON) per cell, which
the runner reads back: the outcome, and for a failure the cell's line, its text and the values
of the names on a failing `assert` line (as pytest shows them), each repr cut short.
"""

from __future__ import annotations

import ast
import json
import linecache
import time
import traceback
from pathlib import Path
from typing import Any

MARKER = "@@mlops-nb-test-result@@ "
_SHOWN = 200  # characters of a value's repr in a failure report


def check(root: str, notebook: str, cell: int, source: str, namespace: dict[str, Any]) -> None:
    """Load what test cell `cell` reads, run it, print its result; then restore `namespace`."""
    start = time.monotonic()
    kept = dict(namespace)
    try:
        try:
            stale = load_test(root, notebook, cell, namespace)
        except Exception as exc:  # noqa: BLE001 - the test could not run: say why
            result: dict[str, Any] = {"outcome": "error",
                                      "message": _cut(f"{type(exc).__name__}: {exc}", 2000)}
        else:
            result = run_cell(source, f"<{notebook} cell {cell}>", namespace)
            result["stale"] = stale
        result["seconds"] = time.monotonic() - start
        print(MARKER + json.dumps(result))
    finally:
        namespace.clear()
        namespace.update(kept)


def load_test(root: str, notebook: str, cell: int, namespace: dict[str, Any]) -> list[str]:
    """Put what the test cell `cell` of `notebook` reads into `namespace`: the parameters
    from params.yaml, definitions taken from earlier steps, values from the last run."""
    from mlops_nb import compile as compile_mod
    from mlops_nb.execute.run import UP_TO_DATE
    from mlops_nb.pipeline import params as params_mod
    from mlops_nb.project import PARAMS, Layout
    from mlops_nb.widgets.loader import define, input_values

    where = Path(root)
    spec, _ = compile_mod.render(where)
    test = next(t for t in spec.tests if t.notebook == notebook and t.cell.index == cell)
    layout = Layout(where)
    group = spec.notebook(notebook).stem
    data = params_mod.read(layout.params, PARAMS)
    params = params_mod.group_values(data, group, list(test.params), PARAMS)
    who = f"the test in {notebook} cell {cell}"
    values, sources = input_values(layout, spec, test.inputs, set(), who)
    stale = [s.producer for s in sources if s.status != UP_TO_DATE]
    namespace.update(params)
    namespace.update(define(test.copied_defs, namespace, who))
    namespace.update(values)
    return stale


def run_cell(source: str, filename: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run a test cell's source (IPython syntax); its outcome."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        code = shell.transform_cell(source) if shell is not None else source
    except ImportError:
        code = source
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    try:
        exec(compile(code, filename, "exec"), namespace)  # noqa: S102 - the user's own cell
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure (SystemExit too) is a result
        return _failure(exc, filename, code, namespace)
    return {"outcome": "passed"}


def _failure(exc: BaseException, filename: str, code: str,
             namespace: dict[str, Any]) -> dict[str, Any]:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    line = frames[-1].lineno if frames else None
    text = code.splitlines()[line - 1].strip() if line and line <= len(code.splitlines()) else ""
    return {"outcome": "failed", "line": line, "text": text,
            "error": type(exc).__name__, "message": _cut(str(exc), 500),
            "values": _values(code, line, namespace) if isinstance(exc, AssertionError) else {}}


def _values(code: str, line: int | None, namespace: dict[str, Any]) -> dict[str, str]:
    """The names read on the failing `assert` statement, with their values."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {}
    shown: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and node.lineno <= (line or 0) <= (node.end_lineno or 0):
            for name in ast.walk(node.test):
                if isinstance(name, ast.Name) and name.id in namespace \
                        and not callable(namespace[name.id]):
                    shown[name.id] = _cut(_repr(namespace[name.id]), _SHOWN)
    return shown


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not hide the failure
        return f"<unrepresentable {type(value).__name__}: {exc}>"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
