"""Signals on every runner: Ctrl-C and SIGTERM keep the executed notebook, marked interrupted;
a step that ignores Ctrl-C is stopped anyway; nothing a step started outlives a runner killed
with -9; the papermill engine leaves no kernel connection file (it holds the kernel's key).

Ctrl-C is sent as a terminal sends it, to the runner's whole process group; SIGTERM to the
runner's pid. Every wait polls for what the test expects, up to a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_nb.execute.stopping import INTERRUPT_GRACE, TERM_GRACE
from mlops_nb.project import Layout, rel_done
from tests.conftest import git_project, make_nb, sh, tool_env, worker_pids

pytestmark = pytest.mark.slow

RUNNERS = {"run": ["mlops-nb", "run"], "dvc": ["dvc", "repro"],
           "ploomber": ["ploomber", "build"]}


def _slow_project(root: Path, marker: str) -> None:
    """Step `sleepy` starts a background `sleep 300` whose argv[0] is `marker`, says where it
    runs (its parent's command line) in notebooks/started, then sleeps, unless
    notebooks/quick exists."""
    make_nb(root / "notebooks/nb.ipynb", [
        (["step:first"], "x = 1"),
        (["step:sleepy"], "import os, pathlib, shutil, subprocess, time\ny = x\n"
                          "if not pathlib.Path('quick').exists():\n"
                          f"    subprocess.Popen(['{marker}', '300'],"
                          " executable=shutil.which('sleep'))\n"
                          "    pathlib.Path('started').write_text("
                          "open(f'/proc/{os.getppid()}/cmdline').read())\n"
                          "    for _ in range(600):\n        time.sleep(0.1)"),
        (["step:after"], "z = y"),
    ])
    git_project(root)
    sh(["mlops-nb", "compile"], root)


def marked(root: Path) -> list[int]:
    """Live processes whose command line holds the project's marker (the step's background
    sleep)."""
    marker = (root / "marker").read_bytes()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


_PLACEHOLDER = "mlopsnb-bg-placeholder"


@pytest.fixture(scope="module")
def slow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slow project built once (git init, dvc init, compile); each test copies it and
    writes its own marker into the notebook."""
    root = tmp_path_factory.mktemp("slow") / "proj"
    root.mkdir()
    _slow_project(root, _PLACEHOLDER)
    return root


@pytest.fixture
def slow(project: Path, slow_template: Path) -> Iterator[Path]:
    marker = f"mlopsnb-bg-{uuid.uuid4().hex[:12]}"
    shutil.copytree(slow_template, project, symlinks=True, dirs_exist_ok=True)
    nb = project / "notebooks/nb.ipynb"
    nb.write_text(nb.read_text().replace(_PLACEHOLDER, marker))
    sh(["git", "commit", "-qam", "marker"], project)
    sh(["mlops-nb", "compile"], project)
    assert marker in nb.read_text()
    (project / "marker").write_text(marker)
    yield project
    _kill_marked(project)


def _kill_marked(root: Path) -> None:
    """Never leave a sleeper behind (it would also hold the runner's output pipe open)."""
    for pid in marked(root):
        os.kill(pid, signal.SIGKILL)


def _end(proc: subprocess.Popen[str], root: Path) -> None:
    """Whatever a test found: the runner's group and the sleeper are gone, the pipes read."""
    _kill_marked(root)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _until(what: str, check, limit: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _start(root: Path, cmd: list[str], **extra: str) -> subprocess.Popen[str]:
    """The runner in a session of its own, as a terminal starts it: its own process group."""
    return subprocess.Popen(cmd, cwd=root, env=tool_env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_started(root: Path, proc: subprocess.Popen[str]) -> str:
    started = root / "notebooks/started"

    def ready() -> bool:
        assert proc.poll() is None, proc.communicate()
        return started.exists() and started.stat().st_size > 0

    _until("the step never started", ready, limit=180)
    return started.read_text()


def _status(root: Path, step: str) -> str | None:
    try:
        doc = json.loads((Layout(root).executed(step)).read_text())
    except (OSError, ValueError):
        return None
    return doc["metadata"].get("mlops_nb", {}).get("status")


def _warm_worker_up(root: Path, cmd: list[str]) -> None:
    """Run the pipeline once, quickly: the first stage starts the project's warm worker."""
    (root / "notebooks/quick").write_text("1")
    sh(cmd, root)
    (root / "notebooks/quick").unlink()


# 4 of the 8 combinations: each signal on each runner, and each runner with the warm worker
# on and off (the signal reaches the stage or task the same way whether or not it then hands
# the step to the worker; the worker's own interruption path is taken by both signals)
@pytest.mark.parametrize("runner,how,worker", [
    ("dvc", "ctrl-c", "off"), ("dvc", "sigterm", "on"),
    ("ploomber", "ctrl-c", "on"), ("ploomber", "sigterm", "off"),
])
def test_interrupted_dvc_and_ploomber_keep_the_notebook_marked_interrupted(slow, runner, how,
                                                                           worker):
    root = slow
    env = {"MLOPS_NB_WORKER": "0"} if worker == "off" else {}
    # DVC runs a stage as `$SHELL -c CMD`, or `/bin/sh -c CMD` when SHELL is unset (as in CI);
    # dash does not exec the command, so the stage's parent is a shell that outlives dvc, and
    # the stage learns of dvc's death only by watching it: a dvc killed by SIGTERM stays a
    # zombie until this test reaps it, after the stage has closed its output pipe
    env["SHELL"] = "/bin/sh"
    cmd = RUNNERS[runner]
    if worker == "on":
        _warm_worker_up(root, cmd)
        cmd = [*cmd, "-f"]
    proc = _start(root, cmd, **env)
    try:
        where = _wait_started(root, proc)
        assert ("mlops_nb.execute.worker" in where) == (worker == "on"), where
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
        # the stage or task may outlive a runner killed by SIGTERM for a moment
        assert _until("the notebook was never marked", lambda: _status(root, "sleepy"),
                      limit=30) == "interrupted"
        _until("the step's background process outlived it", lambda: not marked(root),
               limit=30)
    finally:
        _end(proc, root)
    assert not (root / rel_done("sleepy")).exists()
    executed = json.loads(Layout(root).executed("sleepy").read_text())
    assert executed["cells"][-1]["source"] == ["**mlops_nb: this step interrupted.**"]


def test_ctrl_c_stops_a_step_that_ignores_it(project):
    make_nb(project / "notebooks/nb.ipynb", [
        (["step:a"], "x = 1"),
        (["step:stubborn"], "import pathlib, signal, time\n"
                            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                            "pathlib.Path('started').write_text('1')\n"
                            "for _ in range(1200):\n    time.sleep(0.1)\ny = x"),
    ])
    git_project(project)
    proc = _start(project, RUNNERS["run"])
    try:
        _wait_started(project, proc)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=INTERRUPT_GRACE + TERM_GRACE + 30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    assert took < INTERRUPT_GRACE + TERM_GRACE + 10, took
    assert "step 'stubborn' still running after SIGINT: sending SIGTERM" in err
    assert "step 'stubborn' still running after SIGTERM: sending SIGKILL" in err
    assert _status(project, "stubborn") == "interrupted"
    assert not (project / rel_done("stubborn")).exists()


@pytest.mark.parametrize("runner", ["run", "run-papermill", "dvc-inprocess", "dvc-worker",
                                    "ploomber-inprocess", "ploomber-worker"])
def test_nothing_of_a_step_survives_kill_9_of_its_runner(slow, runner):
    root = slow
    env = {"MLOPS_NB_WORKER": "0"} if runner.endswith("-inprocess") else {}
    cmd = RUNNERS[runner.split("-")[0]]
    if runner == "run-papermill":
        cmd = [*cmd, "--engine", "papermill"]
    if runner.endswith("-worker"):
        _warm_worker_up(root, cmd)
        cmd = [*cmd, "-f" if runner.startswith("dvc") else "--force"]
    proc = _start(root, cmd, **env)
    try:
        where = _wait_started(root, proc)
        assert ("mlops_nb.execute.worker" in where) == runner.endswith("-worker"), where
        assert marked(root), "the step's background process never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _until("the step's background process outlived its runner", lambda: not marked(root),
               limit=20)
    finally:
        _end(proc, root)
    assert not (root / rel_done("sleepy")).exists()


def test_nothing_of_a_step_survives_kill_9_of_the_warm_worker(slow):
    root = slow
    _warm_worker_up(root, RUNNERS["dvc"])
    proc = _start(root, [*RUNNERS["dvc"], "-f"])
    try:
        assert "mlops_nb.execute.worker" in _wait_started(root, proc)
        assert marked(root), "the step's background process never started"
        workers = worker_pids(root)
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)
        # nothing the step started holds dvc's output open: dvc ends, and the sleeper with it
        _, err = proc.communicate(timeout=60)
        _until("the step's background process outlived the worker", lambda: not marked(root),
               limit=20)
    finally:
        _end(proc, root)
    assert proc.returncode != 0
    assert "the warm worker died while running step 'sleepy'" in err
    assert _status(root, "sleepy") == "killed with its warm worker"
    assert not (root / rel_done("sleepy")).exists()


def _kernel_files(*folders: Path) -> list[Path]:
    """Kernel connection files (they hold the kernel's key) in these folders."""
    return [f for d in folders if d.exists() for f in d.rglob("*.json")
            if '"signature_scheme"' in f.read_text()]


def test_papermill_engine_leaves_no_kernel_connection_file(slow, tmp_path):
    root = slow
    # where jupyter_client puts a kernel's connection file by default, for this test only
    tmp, runtime = tmp_path / "tmp", tmp_path / "runtime"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "JUPYTER_RUNTIME_DIR": str(runtime)}
    proc = _start(root, [*RUNNERS["run"], "--engine", "papermill"], **env)
    try:
        _wait_started(root, proc)
        assert _kernel_files(tmp, runtime, root), "the test sees no connection file"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        _end(proc, root)
    (root / "notebooks/quick").write_text("1")
    sh([*RUNNERS["run"], "--engine", "papermill"], root, **env)
    assert _kernel_files(tmp, runtime, root) == []
