"""A forked step reports the modules it imported; its warm parent deepens only known packages."""

from __future__ import annotations

import gc
import os
import select
import sys

from mlops_nb.execute.warmup import (
    ModuleReport,
    before_fork,
    deepen,
    forking_gc,
    in_child,
    learned_modules,
    project_file,
    remember_modules,
)


def _fork_importing(statement: str) -> list[str]:
    report = ModuleReport()
    pid = os.fork()
    if pid == 0:  # the step
        code = 1
        try:
            report.child_started()
            exec(statement, {})  # noqa: S102
            report.child_ending(0)
            code = 0
        finally:
            os._exit(code)
    report.parent_forked()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    return report.received()


def test_child_reports_what_it_imported_and_parent_deepens_known_packages(tmp_path):
    import xml  # noqa: F401 - the parent knows the package, not the submodule

    for name in ("xml.dom.minidom", "wave"):
        sys.modules.pop(name, None)
    names = _fork_importing("import xml.dom.minidom, wave")
    assert "xml.dom.minidom" in names and "wave" in names
    assert "xml.dom.minidom" not in sys.modules  # the child's import stayed in the child
    list(deepen(names, tmp_path))
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
    assert report.code() is None and report.at_eof  # the parent reads the exit status
    assert report.received() == []


def test_the_exit_code_arrives_before_the_process_has_exited():
    report = ModuleReport()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        report.child_started()
        report.child_ending(217)
        os.read(go_r, 1)  # still alive after reporting, until the parent lets it go
        os._exit(217)
    os.close(go_r)
    report.parent_forked()
    select.select([report.fileno()], [], [], 10)
    assert report.code() == 217
    assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # not exited yet
    os.close(go_w)
    assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 217


def test_project_code_is_never_warmed_and_learning_persists(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import userpkg  # noqa: F401 - the imports cell imported the user's package

    list(deepen(["userpkg.helpers"], tmp_path))
    assert "userpkg.helpers" not in sys.modules  # the user may edit it before the next step
    state = tmp_path / ".mlops_nb"
    state.mkdir()
    known = remember_modules(state, learned_modules(state), ["xml.dom", "json.tool"])
    assert remember_modules(state, known, ["json.tool"]) == known
    assert learned_modules(state) == ["xml.dom", "json.tool"]
    (state / "warm-modules.json").write_text("{broken")
    assert learned_modules(state) == []


def test_a_grandchild_holding_the_pipe_does_not_block_the_parent():
    report = ModuleReport()
    pid = os.fork()
    if pid == 0:
        report.child_started()
        if os.fork() == 0:  # a process the step started, still alive after the step ends
            import time

            time.sleep(5)
            os._exit(0)
        import wave  # noqa: F401
        report.child_ending(0)
        os._exit(0)
    report.parent_forked()
    os.waitpid(pid, 0)
    assert report.code() == 0
    assert "wave" in report.received()


def test_project_file_is_inside_the_root_not_a_sibling_or_a_venv(tmp_path):
    class Mod:
        __file__ = ""

    root = tmp_path / "proj"
    for path, inside in ((root / "helper.py", True), (tmp_path / "proj2/helper.py", False),
                         (root / ".venv/lib/site.py", False)):
        Mod.__file__ = str(path)
        assert (project_file(Mod, root) is not None) is inside


def test_forking_gc_freezes_for_children_and_restores_the_collector():
    assert gc.isenabled()
    with forking_gc():
        assert not gc.isenabled()
        before_fork()
        assert gc.get_freeze_count() > 0
        pid = os.fork()
        if pid == 0:  # a step: collects again, and never walks the parent's frozen objects
            in_child()
            os._exit(0 if gc.isenabled() and gc.collect() >= 0 else 1)
        assert os.waitpid(pid, 0)[1] == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
