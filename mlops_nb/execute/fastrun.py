"""The fast path of `mlops-nb run`: steps run in forked children of one warm process.

Where papermill starts a Python kernel per step (seconds of start-up and re-imports), this
executes a notebook's `imports` cell once in the runner, then forks a child per step. The
child inherits the warm modules, runs the step notebook's cells in a fresh IPython namespace
(so a step never sees another step's variables), records each cell's outputs, and writes the
executed notebook, with papermill's `injected-parameters` cell, after every cell. A child that
raises, calls os._exit or is killed only ends itself: the parent reads its exit status. Code is
read from the step notebooks at each run, so edited code is always what runs.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.errors import (
    Interrupted,
    StepCrashed,
    StepFailed,
    StepTimedOut,
    exit_code_of,
)
from mlops_nb.execute.cells import (
    failure_details,
    make_shell,
    mark_executed,
    prepare_notebook,
    run_cells,
)
from mlops_nb.execute.runtime import prepare_outputs
from mlops_nb.execute.stopping import Lifeline, stop_groups, wait_group_gone
from mlops_nb.execute.warmup import (
    ModuleReport,
    advance,
    before_fork,
    deepen,
    in_child,
    learned_modules,
    remember_modules,
    run_imports,
    serializer_warmup,
)
from mlops_nb.execute.watchdog import die_with_parent
from mlops_nb.project import Layout

ERROR_EXIT = 217  # "a cell raised"; any other non-zero status is a crash
WARM_MARGIN = 0.1  # seconds: about the longest single warm-up import


def _child(shell: Any, doc: dict[str, Any], executed: Path, root: Path, parent: int,
           lifeline: Lifeline) -> int:
    os.setpgid(0, 0)  # its own process group: the runner can stop the whole step
    die_with_parent(parent, ERROR_EXIT)
    lifeline.guard_this_step()  # and what it starts dies with the runner too
    in_child()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ["MLOPS_NB_ROOT"] = str(root)
    os.environ["MLOPS_NB_RUNNER"] = "fast"
    os.chdir(root)
    shell.user_ns.clear()
    shell.init_user_ns()
    try:
        return 0 if run_cells(shell, doc, executed) else ERROR_EXIT
    except BaseException:  # noqa: BLE001 - report, never fall back into the parent's code
        traceback.print_exc()
        return ERROR_EXIT


class WarmRunner:
    """One warm process that forks a child per step."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = Layout(root)
        self._warmed: set[str] = set()
        # what steps of earlier runs had to import themselves first (most likely needed by
        # the next step), then what saving outputs needs
        self._learned = learned_modules(self.layout.state)
        self._warmup: Iterator[None] = itertools.chain(deepen(self._learned, root),
                                                       serializer_warmup())
        self._ending: list[int] = []  # steps that reported their end, not yet reaped
        self._killed: list[int] = []  # groups of ended steps, sent SIGKILL, maybe not gone
        self.shell = make_shell()
        self.lifeline = Lifeline()

    def warm(self, imports_source: str, key: str) -> None:
        """Import what a notebook's `imports` cell imports, once, before any fork; `key` is
        the notebook's project-relative path."""
        if key in self._warmed or not imports_source.strip():
            return
        self._warmed.add(key)
        run_imports(imports_source, (self.root / key).parent)

    def _wait(self, pid: int, report: ModuleReport, expected: float | None,
              deadline: float = float("inf")) -> tuple[int, int]:
        """(exit code, killing signal or 0) of the step's process; a process that reported
        is reaped later (`close`). Past `deadline` (monotonic) raises _TimedOut: the limit is
        kept here, in the parent, where no code of the step can disable it.

        Meanwhile, on the other core, import what later steps' outputs need, a module at a
        time. An import cannot be cut short, and a step that ends during one waits for it
        (skops' takes up to 0.1 s), so none is started within WARM_MARGIN of the end
        `expected` from the step's last run: what is left waits for the next step.
        """
        pidfd = os.pidfd_open(pid)
        stop_at = time.monotonic() + expected - WARM_MARGIN if expected else float("inf")
        try:
            busy = True
            while True:
                code = report.code()
                if code is not None:
                    self._ending.append(pid)
                    return code, 0
                waited, status = os.waitpid(pid, os.WNOHANG)
                if waited:
                    return _exit_of(status)
                now = time.monotonic()
                if now >= deadline:
                    raise _TimedOut
                busy = busy and now < stop_at and advance(self._warmup)
                if not busy:
                    waitables = [pidfd] if report.at_eof else [report.fileno(), pidfd]
                    select.select(waitables, [], [], min(deadline - now, 3600.0))
        finally:
            os.close(pidfd)

    def close(self) -> None:
        """Reap the steps that reported their end and may still be exiting, and wait until
        what ended steps started is gone (the lifeline stays open until this process exits:
        its guards must not see it closed before)."""
        while self._ending:
            try:
                os.waitpid(self._ending.pop(), 0)
            except ChildProcessError:
                pass
        while self._killed:
            wait_group_gone(self._killed.pop())

    def run_step(self, step: str, source_notebook: str, parameters: dict[str, Any],
                 timeout: float | None = None, expected: float | None = None) -> Path:
        """Run one step in a forked child; `expected`: its wall time last run, if known."""
        running = self.start(step, source_notebook, parameters, timeout)
        pid, report, executed, rel = running.pid, running.report, running.executed, running.rel
        deadline = time.monotonic() + timeout if timeout else float("inf")
        try:
            code, killed = self._wait(pid, report, expected, deadline)
        except _TimedOut:
            report.close()
            _kill_group(pid)
            mark_executed(executed, "timed out")
            raise StepTimedOut(step, f"it ran longer than its timeout of {timeout:g} s",
                               rel) from None
        except KeyboardInterrupt:
            self.interrupt(running)
            raise Interrupted(f"step '{step}' was interrupted; nothing was recorded as done;"
                              f" its notebook so far is {rel}") from None
        return self.finish(running, code, killed)

    def start(self, step: str, source_notebook: str, parameters: dict[str, Any],
              timeout: float | None = None) -> Running:
        """Fork the step's process and return at once; `finish` reads how it ended (a
        timeout is enforced by run_step's wait, so `run -j` runs one step at a time with one)."""
        executed = self.layout.executed(step)
        prepare_outputs(self.layout, step)
        doc = json.loads(self.layout.step_notebook(step).read_text(encoding="utf-8"))
        doc = prepare_notebook(doc, parameters)
        rel = executed.relative_to(self.root).as_posix()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        report = ModuleReport()
        before_fork()
        pid = os.fork()
        if pid == 0:  # child
            code = ERROR_EXIT
            try:
                report.child_started()
                code = _child(self.shell, doc, executed, self.root, parent, self.lifeline)
            finally:
                report.exit(code)
        report.parent_forked()
        self.close()  # the previous step's process, done exiting meanwhile
        return Running(step, pid, report, executed, source_notebook, rel, timeout)

    def poll(self, running: Running) -> tuple[int, int] | None:
        """(exit code, killing signal or 0) once the step ended or reported its end, else
        None; never waits."""
        code = running.report.code()
        if code is not None:
            self._ending.append(running.pid)
            return code, 0
        waited, status = os.waitpid(running.pid, os.WNOHANG)
        return _exit_of(status) if waited else None

    def wait_any(self, steps: list[Running], warm_up: bool) -> list[tuple[Running, int, int]]:
        """Block until at least one of the running steps ended; those that did, with their
        (exit code, killing signal or 0). With `warm_up`, import what later steps need, a
        module at a time, while waiting (a free core)."""
        fds = {r.pid: os.pidfd_open(r.pid) for r in steps}
        try:
            while True:
                ended = [(r, *got) for r in steps if (got := self.poll(r)) is not None]
                if ended:
                    return ended
                warm_up = warm_up and advance(self._warmup)
                if not warm_up:
                    watch = [fds[r.pid] for r in steps]
                    watch += [r.report.fileno() for r in steps if not r.report.at_eof]
                    select.select(watch, [], [])
        finally:
            for fd in fds.values():
                os.close(fd)

    def interrupt(self, *steps: Running) -> None:
        """Stop the steps' process groups (SIGINT, escalated if a step ignores it: see
        stopping.py); their notebooks so far are kept, marked interrupted."""
        for running in steps:
            running.report.close()
        stop_groups({r.pid: r.step for r in steps})
        for running in steps:
            mark_executed(running.executed, "interrupted")

    def finish(self, running: Running, code: int, killed: int) -> Path:
        """Learn from the ended step what to warm up, then its executed notebook, or the
        error that says how it failed."""
        step, executed, rel, pid = running.step, running.executed, running.rel, running.pid
        imported = running.report.received()
        self._learned = remember_modules(self.layout.state, self._learned, imported)
        self._warmup = itertools.chain(self._warmup, deepen(imported, self.root))
        _end_group(pid)  # whatever the step started in the background ends with it
        self._killed.append(pid)  # close() waits until it is gone
        if killed:
            sig = signal.Signals(killed)
            mark_executed(executed, f"killed by {sig.name}")
            raise StepCrashed(step, f"its process was killed by {sig.name} (out of memory?)",
                              rel)
        if code == ERROR_EXIT:
            raise step_error(step, executed, running.source_notebook, rel)
        if code != 0:
            mark_executed(executed, f"exited with code {code}")
            raise StepCrashed(step, f"its process exited with code {code} (os._exit or a"
                              " crash)", rel)
        return executed


@dataclass(frozen=True)
class Running:
    """A step whose process was forked and has not been finished yet."""

    step: str
    pid: int
    report: ModuleReport
    executed: Path
    source_notebook: str
    rel: str  # the executed notebook, relative to the project
    timeout: float | None


def _exit_of(status: int) -> tuple[int, int]:
    """(exit code, killing signal or 0) of a wait status."""
    if os.WIFSIGNALED(status):
        return 0, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), 0


def step_error(step: str, executed: Path, source_notebook: str, rel: str) -> StepFailed:
    """The failure of a step whose cell raised; a guard's error keeps its own exit code."""
    where, ename, cell_tb = failure_details(executed, source_notebook)
    err = StepFailed(step, where or "a cell raised", rel)
    err.cell_traceback = cell_tb
    err.exit_code = exit_code_of(ename) or err.exit_code
    return err


class _TimedOut(Exception):
    """The step's time is up (raised in the parent)."""


def _end_group(pid: int) -> None:
    """Kill what is left of a finished step's process group (background processes it
    started). Its leader is not reaped yet, so the group's id cannot have been reused."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(pid: int) -> None:
    _end_group(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    wait_group_gone(pid)
