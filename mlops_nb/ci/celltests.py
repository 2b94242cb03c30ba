"""`mlops-nb test`: run each `test` cell against the last run's outputs of its step.

Each cell runs in a real kernel of its own (as the step did): the notebook's imports and
functions cells, then the values the cell reads, loaded as `%mlops load` loads them (hash
checked), then the cell. The kernel's code is built from data (`repr`), never by pasting
notebook text into code. A test fails on any exception; the report names the notebook, the
cell (its number and first line) and the line that failed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb import compile as compile_mod
from mlops_nb.ci.kernel_side import MARKER
from mlops_nb.errors import UsageError
from mlops_nb.pipeline.spec import PipelineSpec, TestSpec

log = logging.getLogger(__name__)

PASSED, FAILED, ERROR = "passed", "failed", "error"


@dataclass(frozen=True)
class CellResult:
    notebook: str
    cell: int
    step: str
    first_line: str
    outcome: str  # passed, failed (the cell raised), error (it could not run)
    seconds: float
    line: int | None = None
    text: str = ""
    message: str = ""
    values: dict[str, str] = field(default_factory=dict)
    stale: tuple[str, ...] = ()  # producers not up to date: the values are an older run's

    @property
    def where(self) -> str:
        return f"{self.notebook} cell {self.cell} [test:{self.step}] {self.first_line!r}"

    def text_report(self) -> str:
        if self.outcome == PASSED:
            return f"PASSED {self.where}"
        head = f"{self.outcome.upper()} {self.where}"
        if self.line is not None:
            head += f"\n  line {self.line}: {self.text}"
        head += f"\n  {self.message}"
        for name, value in self.values.items():
            head += f"\n  {name} = {value}"
        return head

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "where": self.where}


def select(spec: PipelineSpec, notebooks: list[str] | None = None,
           steps: list[str] | None = None) -> list[TestSpec]:
    """The test cells to run: all, or those of the named notebooks and steps."""
    known_steps = {s.name for s in spec.steps}
    for s in steps or []:
        if s not in known_steps:
            raise UsageError(f"no step named '{s}'; steps are: {', '.join(sorted(known_steps))}")
    known_nbs = {n.path for n in spec.notebooks}
    for n in notebooks or []:
        if n not in known_nbs:
            raise UsageError(f"{n} is not a notebook of the pipeline; they are:"
                             f" {', '.join(sorted(known_nbs))}")
    return [t for t in spec.tests
            if (not notebooks or t.notebook in notebooks) and (not steps or t.step in steps)]


def _first_line(source: str) -> str:
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


def _kernel_notebook(root: Path, spec: PipelineSpec, tests: list[TestSpec]) -> Any:
    import nbformat

    nbs = spec.notebook(tests[0].notebook)
    cells = [nbformat.v4.new_code_cell(src) for src in (nbs.imports, nbs.functions)
             if src.strip()]
    for t in tests:
        cells.append(nbformat.v4.new_code_cell(
            "from mlops_nb.ci.kernel_side import check\n"
            f"check({str(root)!r}, {t.notebook!r}, {t.cell.index!r}, {t.cell.source!r},"
            " globals())"))
    return nbformat.v4.new_notebook(cells=cells)


def _marked(cell: Any) -> dict[str, Any] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            for line in "".join(out.get("text", "")).split("\n"):
                if line.startswith(MARKER):
                    found: dict[str, Any] = json.loads(line[len(MARKER):])
                    return found
    return None


def _result(test: TestSpec, found: dict[str, Any]) -> CellResult:
    message = found.get("message", "")
    if "error" in found:
        message = f"{found['error']}: {message}"
    return CellResult(test.notebook, test.cell.index, test.step, _first_line(test.cell.source),
                      found["outcome"], float(found.get("seconds", 0.0)), found.get("line"),
                      found.get("text", ""), message, found.get("values", {}),
                      tuple(found.get("stale", ())))


def run_notebook_tests(root: Path, spec: PipelineSpec, tests: list[TestSpec],
                       timeout: float = 600) -> list[CellResult]:
    """Run test cells of one notebook in one fresh kernel (in `root`): its imports and
    functions cells once, then each test cell in a namespace put back after it."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    nb = _kernel_notebook(root, spec, tests)
    start = time.monotonic()
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(root)}})
    why = ""
    try:
        client.execute()
    except CellExecutionError as exc:  # the imports or functions cell failed
        why = f"the notebook's imports or functions cell raised {exc.ename}: {exc.evalue}"
    except (DeadKernelError, TimeoutError, RuntimeError) as exc:
        why = f"the kernel stopped: {exc}"
    first = len(nb.cells) - len(tests)
    results = []
    for test, cell in zip(tests, nb.cells[first:], strict=True):
        found = _marked(cell) or {"outcome": ERROR, "message": why[:2000] or "no result came"
                                  " back", "seconds": time.monotonic() - start}
        results.append(_result(test, found))
    return results


def run_test(root: Path, spec: PipelineSpec, test: TestSpec) -> CellResult:
    """Run one test cell in a fresh kernel."""
    return run_notebook_tests(root, spec, [test])[0]


def run_tests(root: Path, notebooks: list[str] | None = None,
              steps: list[str] | None = None) -> list[CellResult]:
    """Run the project's test cells (all, or those of the named notebooks and steps)."""
    spec, _ = compile_mod.render(root)
    chosen = select(spec, notebooks, steps)
    results = []
    for nb in dict.fromkeys(t.notebook for t in chosen):
        log.info("running the test cells of %s", nb)
        results += run_notebook_tests(root, spec, [t for t in chosen if t.notebook == nb])
    return results
