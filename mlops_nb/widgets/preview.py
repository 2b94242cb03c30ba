"""The step preview of a notebook, before anything is compiled: which cells form which step,
each step's detected inputs, outputs and parameters, and the first tag or code error.

Pure apart from reading the project's notebooks: nothing is written. The pipeline is built
from every notebook of the project (a `prev:` may name another notebook's step), with the
previewed notebook included even when it sits outside notebooks/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlops_nb import compile as compile_mod
from mlops_nb.errors import MlopsNbError, NoStepsError, NotebookError, UsageError
from mlops_nb.notebook.tags import ParsedNotebook, parse_notebook
from mlops_nb.pipeline.spec import build_spec
from mlops_nb.widgets.render import html_message, html_table, text_table

COLUMNS = ["step", "cells", "inputs (from step)", "outputs", "parameters", "after"]


@dataclass(frozen=True)
class StepRow:
    step: str
    cells: tuple[int, ...]
    inputs: tuple[tuple[str, str], ...]  # (variable, producing step)
    outputs: tuple[str, ...]
    params: tuple[str, ...]
    upstream: tuple[str, ...]

    def values(self) -> list[str]:
        return [self.step, ", ".join(map(str, self.cells)),
                ", ".join(f"{v} ({p})" for v, p in self.inputs),
                ", ".join(self.outputs), ", ".join(self.params), ", ".join(self.upstream)]


@dataclass(frozen=True)
class Preview:
    notebook: str  # project-relative
    steps: tuple[StepRow, ...]
    error: str = ""  # the first error, naming the notebook and cell
    error_cell: int | None = None

    def text(self) -> str:
        head = f"mlops_nb preview of {self.notebook}"
        if self.error:
            return f"{head}\nerror: {self.error}"
        return f"{head}\n{text_table(COLUMNS, [s.values() for s in self.steps])}"

    def html(self) -> str:
        title = html_message(f"mlops_nb preview of {self.notebook}")
        if self.error:
            return title + html_message(f"error: {self.error}", error=True)
        return title + html_table(COLUMNS, [s.values() for s in self.steps],
                                  css="mlops-preview", left=len(COLUMNS))


def _display(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"{path}: the notebook must be inside the project {root}") from None


def preview(root: Path, notebook: Path) -> Preview:
    """Preview one notebook of the project; an error becomes `Preview.error`, never raises
    for a problem in the notebooks (a missing notebook file is a UsageError)."""
    notebook = notebook if notebook.is_absolute() else (Path.cwd() / notebook)
    if not notebook.exists():
        raise UsageError(f"{notebook}: no such notebook")
    shown = _display(root, notebook)
    try:
        others = [p for p in compile_mod.discover(root) if p.resolve() != notebook.resolve()]
    except UsageError:
        others = []
    try:
        parsed: list[ParsedNotebook] = [parse_notebook(notebook, shown)]
        for other in others:
            try:
                parsed.append(parse_notebook(other, _display(root, other)))
            except NoStepsError:
                continue  # compile skips a notebook with no step: so does the preview
        spec = build_spec(parsed, root)
    except NotebookError as exc:
        return Preview(shown, (), str(exc), exc.cell)
    except MlopsNbError as exc:
        return Preview(shown, (), str(exc))
    rows = tuple(
        StepRow(s.name, tuple(c.index for c in s.cells), s.inputs, s.outputs, s.params,
                s.upstream)
        for s in spec.steps if s.notebook == shown
    )
    return Preview(shown, rows)


def current_notebook(root: Path, given: str = "") -> Path:
    """The notebook to preview: the one given, else the kernel's own notebook as Jupyter
    Server tells it (JPY_SESSION_NAME), else the only notebook under notebooks/."""
    import os

    if given:
        return Path(given).resolve()
    session = os.environ.get("JPY_SESSION_NAME", "")
    if session.endswith(".ipynb"):
        for base in (Path.cwd(), root):
            candidate = Path(session) if Path(session).is_absolute() else base / session
            if candidate.exists():
                return candidate.resolve()
    found = compile_mod.discover(root)
    if len(found) == 1:
        return found[0]
    raise UsageError("which notebook? name it: %mlops preview notebooks/NAME.ipynb")
