"""A forked step reports the modules it imported; its warm parent deepens only known packages."""

from __future__ import annotations

import os
import sys

from mlops_nb.cells import ModuleReport, deepen


def _fork_importing(statement: str) -> list[str]:
    report = ModuleReport()
    pid = os.fork()
    if pid == 0:  # the step
        code = 1
        try:
            report.child_started()
            exec(statement, {})  # noqa: S102
            report.child_ending()
            code = 0
        finally:
            os._exit(code)
    report.parent_forked()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    return report.received()


def test_child_reports_what_it_imported_and_parent_deepens_known_packages():
    import xml  # noqa: F401 - the parent knows the package, not the submodule

    for name in ("xml.dom.minidom", "wave"):
        sys.modules.pop(name, None)
    names = _fork_importing("import xml.dom.minidom, wave")
    assert "xml.dom.minidom" in names and "wave" in names
    assert "xml.dom.minidom" not in sys.modules  # the child's import stayed in the child
    list(deepen(names))
    assert "xml.dom.minidom" in sys.modules  # inside a package the parent had loaded
    assert "wave" not in sys.modules  # a new top-level package is never added


def test_a_child_that_dies_before_reporting_gives_nothing():
    report = ModuleReport()
    pid = os.fork()
    if pid == 0:
        report.child_started()
        os._exit(3)
    report.parent_forked()
    os.waitpid(pid, 0)
    assert report.received() == []
