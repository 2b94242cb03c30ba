"""The notebook's `test` cells as pytest items: `pytest -p mlops_nb.ci.pytest_plugin notebooks/`
(or `pytest_plugins = ["mlops_nb.ci.pytest_plugin"]` in a conftest.py).

One item per test cell, named `cell N [test:STEP]`, run as `mlops-nb test` runs it. A plugin
that is asked for, not one that loads itself in every pytest run of the environment: a
project's own test suite may hold notebooks that are fixtures, not tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_nb.ci import celltests
from mlops_nb.pipeline.spec import PipelineSpec, TestSpec

_SKIPPED = {"steps", "outputs", ".ipynb_checkpoints"}


class CellFailed(Exception):
    def __init__(self, result: celltests.CellResult) -> None:
        super().__init__(result.text_report())
        self.result = result


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.File | None:
    if file_path.suffix == ".ipynb" and not _SKIPPED & set(file_path.parts) \
            and b'"test' in file_path.read_bytes():
        found: pytest.File = NotebookFile.from_parent(parent, path=file_path)
        return found
    return None


class NotebookFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from mlops_nb import compile as compile_mod
        from mlops_nb.artifacts.trust import project_of

        root = project_of(self.path.parent)
        rel = self.path.relative_to(root).as_posix()
        spec, _ = compile_mod.render(root)
        for test in spec.tests:
            if test.notebook == rel:
                yield CellItem.from_parent(self, name=f"cell {test.cell.index} [test:{test.step}]",
                                           root=root, spec=spec, test=test)


class CellItem(pytest.Item):
    def __init__(self, *, root: Path, spec: PipelineSpec, test: TestSpec, **kw: Any) -> None:
        super().__init__(**kw)
        self.root, self.spec, self.test = root, spec, test

    def runtest(self) -> None:
        result = celltests.run_test(self.root, self.spec, self.test)
        if result.outcome != celltests.PASSED:
            raise CellFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, CellFailed):
            return excinfo.value.result.text_report()
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, self.test.cell.index - 1, f"{self.test.notebook} {self.name}"
