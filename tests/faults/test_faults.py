"""Fault injection: kills, interrupts, concurrent runs, corrupted state, full disks.

Each test really does the fault (signals to real processes, a size-limited tmpfs where the
machine allows mounting one) and checks that nothing partial is taken for finished.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops_nb import artifacts
from mlops_nb.errors import ArtifactError
from tests.conftest import alive, cli, git_project, make_nb, sh, tool_env

pytestmark = pytest.mark.slow

SLOW_STEP = [
    (["step:first"], "x = 1"),
    (["step:sleepy"], "import os, time, pathlib\ny = x\n"
                      "pathlib.Path('started').write_text(str(os.getpid()))\n"
                      "time.sleep(60)\npathlib.Path('finished').write_text('1')"),
    (["step:after"], "z = y"),
]


def start_run(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mlops_nb", "run", *args], cwd=root,
                            env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(path: Path, proc: subprocess.Popen[str], limit: float = 60) -> None:
    """Block until the step has really started (a file it writes), not a guessed delay."""
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "step never started"
        time.sleep(0.05)


def step_processes(marker: str) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if marker in line]


def _slow(root: Path) -> None:
    make_nb(root / "notebooks/slow.ipynb", SLOW_STEP)
    git_project(root)


@pytest.fixture
def slow_project(project: Path, from_template) -> Path:
    return from_template("faults.slow", _slow, project)


def test_kill_9_of_runner_kills_the_step_and_next_run_reruns_it(slow_project):
    root = slow_project
    proc = start_run(root)
    wait_for(root / "notebooks/started", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the forked step dies with its runner (PDEATHSIG): nothing writes 'finished' later
    deadline = time.monotonic() + 10
    while any(True for _ in _children_of(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(_children_of(root))
    assert not (root / "notebooks/finished").exists()
    assert "sleepy" not in json.loads((root / ".mlops_nb/state.json").read_text())["steps"]
    status = cli(["status"], root).stdout
    assert "sleepy  never run" in status and "first   up to date" in status


def _children_of(root: Path):
    """Processes whose working directory is inside the project (the step's process)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(root)):
            yield int(pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_step_keeps_notebook_releases_lock(slow_project, sig):
    root = slow_project
    proc = start_run(root)
    wait_for(root / "notebooks/started", proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "outputs/sleepy/sleepy.ipynb" in err
    executed = json.loads((root / "outputs/sleepy/sleepy.ipynb").read_text())
    assert executed["metadata"]["mlops_nb"]["status"] == "interrupted"
    assert not list(_children_of(root))
    assert "sleepy" not in json.loads((root / ".mlops_nb/state.json").read_text())["steps"]
    # the lock is free again: a run starts (and is itself interrupted by the timeout)
    res = cli(["run", "--timeout", "1"], root, check=False)
    assert res.returncode == 12 and "timeout of 1 s" in res.stderr


def test_second_run_fails_fast_naming_the_holder(slow_project):
    root = slow_project
    proc = start_run(root)
    wait_for(root / "notebooks/started", proc)
    try:
        t0 = time.monotonic()
        res = cli(["run"], root, check=False)
        assert res.returncode == 11
        assert f"another run holds this project (pid {proc.pid}" in res.stderr
        assert time.monotonic() - t0 < 20
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_lock_of_a_dead_process_is_recovered_and_a_broken_one_explained(project):
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = 1")])
    git_project(project)
    state = project / ".mlops_nb"
    state.mkdir(exist_ok=True)
    (state / "run.lock").write_text(json.dumps({"pid": 999999, "host": "gone",
                                                "started": 0, "command": "mlops-nb run"}))
    assert cli(["run"], project).returncode == 0
    (state / "run.lock").unlink()
    (state / "run.lock").mkdir()
    res = cli(["run", "-f"], project, check=False)
    assert res.returncode == 11 and "is a folder, not a lock file; remove it" in res.stderr


def test_step_that_exits_its_process_gets_its_own_status(project):
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = 1"),
                                             (["step:die"], "import os\ny = x\nos._exit(3)")])
    git_project(project)
    res = cli(["run"], project, check=False)
    assert res.returncode == 13
    assert "its process exited with code 3" in res.stderr
    meta = json.loads((project / "outputs/die/die.ipynb").read_text())["metadata"]["mlops_nb"]
    assert meta["status"] == "exited with code 3"


def test_tampered_output_is_refused_then_rebuilt(project):
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = list(range(5))"),
                                             (["step:b"], "y = sum(x)"),
                                             (["pipeline-metrics"], "print(y)")])
    git_project(project)
    cli(["run"], project)
    data = project / "outputs/a/x/data.json"
    data.write_text("[1, 1, 1, 1, 1]")
    with pytest.raises(ArtifactError, match="changed after its step wrote it"):
        artifacts.load(project / "outputs/a/x")
    assert "a  changed (outputs missing or changed)" in cli(["status"], project).stdout
    out = cli(["run"], project).stdout
    # a is rebuilt; it writes the same bytes again, so b (same input hash) stays up to date
    assert "a: done" in out and "b: up to date" in out
    assert artifacts.load(project / "outputs/a/x") == list(range(5))
    assert json.loads((project / "outputs/b/metrics.json").read_text()) == {"y": 10}


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True)
    return res.returncode == 0


def test_disk_full_keeps_earlier_output_and_records_nothing(tmp_path, monkeypatch):
    disk = tmp_path / "disk"
    mounted = _tmpfs(disk, "2M")
    try:
        (disk / "params.yaml").write_text("{}\n")  # a project: its record of writes is here
        if not mounted:  # no mount permission: simulate ENOSPC at the write call
            from mlops_nb.artifacts.digest import HashingWriter

            real = HashingWriter.write

            def full(self: HashingWriter, data: bytes) -> int:
                if len(data) > 100_000:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(self, data)

            monkeypatch.setattr(HashingWriter, "write", full)
        out = disk / "outputs" / "step" / "big"
        artifacts.save(list(range(10)), out)
        before = (out / "data.json").read_bytes()
        big = b"x" * 3_000_000 if mounted else b"x" * 200_000
        with pytest.raises(ArtifactError, match="cannot write output .*No space left"):
            artifacts.save(big, out)
        assert (out / "data.json").read_bytes() == before
        assert artifacts.load(out) == list(range(10))
        assert [p.name for p in out.parent.iterdir()] == ["big"]  # no temp folder left
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)


PARAMS_BROKEN = {
    "unclosed bracket": ("nb:\n  N: [1, 2\n", "params.yaml:3:1: invalid YAML"),
    "tab": ("nb:\n\tN: 1\n", "params.yaml:2:1: a tab character"),
    "duplicate key": ("nb:\n  N: 1\n  N: 2\n", "params.yaml:3:3: duplicate key 'nb.N'"),
    "not a mapping": ("- 1\n- 2\n", "params.yaml:1:1: must be a mapping"),
    "empty": ("", "params.yaml: is empty"),
}


@pytest.mark.parametrize("case", sorted(PARAMS_BROKEN))
def test_broken_params_yaml_runs_nothing(project, case):
    make_nb(project / "notebooks/nb.ipynb", [(["parameters"], "N = 1"),
                                             (["step:a"], "x = N")])
    git_project(project)
    text, message = PARAMS_BROKEN[case]
    (project / "params.yaml").write_text(text)
    res = cli(["run"], project, check=False)  # (every runner: tests/faults/test_params_yaml.py)
    assert res.returncode == 3, res.stderr
    assert message in res.stderr
    assert not (project / "outputs").exists()


def test_hand_edited_generated_file_is_refused_with_line_and_column(project):
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = 1")])
    git_project(project)
    cli(["compile"], project)
    dvc_yaml = project / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("python -m", "python3 -m"))
    res = cli(["run"], project, check=False)
    assert res.returncode == 3
    assert "dvc.yaml:5:16: edited by hand" in res.stderr
    assert not (project / "outputs").exists()
    cli(["compile"], project)  # the documented way out: regenerate
    assert cli(["run"], project).returncode == 0


def test_symlinked_outputs_are_refused_before_writing_anything(project, tmp_path):
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = 1"), (["step:b"], "y = x")])
    git_project(project)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (project / "outputs").symlink_to(outside)
    sh(["mlops-nb", "compile"], project)
    for runner in (["mlops-nb", "run"], ["mlops-nb", "run", "--engine", "papermill"],
                   ["dvc", "repro"], ["ploomber", "build"]):
        res = sh(runner, project, check=False)
        assert res.returncode != 0, runner
        assert "outputs must stay inside the project" in res.stderr + res.stdout, runner
        # checked before anything is written (Ploomber itself makes its products' folders)
        assert [p for p in outside.rglob("*") if not p.is_dir()] == [], runner


def _ran_sleepy(tool: str, root: Path) -> bool:
    if tool == "dvc":
        return "Running stage 'sleepy'" in sh(["dvc", "repro"], root).stdout
    out = sh(["ploomber", "build"], root).stdout
    return "sleepy" in {line.split()[0] for line in out.splitlines() if " True " in f" {line} "}


@pytest.mark.parametrize("tool", ["dvc", "ploomber"])
def test_kill_9_of_dvc_or_ploomber_leaves_no_orphan_and_reruns(slow_project, tool):
    root = slow_project
    cli(["compile"], root)
    cmd = ["dvc", "repro"] if tool == "dvc" else ["ploomber", "build"]
    proc = subprocess.Popen(cmd, cwd=root, env=tool_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(root / "notebooks/started", proc, limit=120)
    step_pid = int((root / "notebooks/started").read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while (alive(step_pid) or step_processes("mlops_nb.step sleepy")) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(step_pid), f"the step's process outlived {tool}"
    assert step_processes("mlops_nb.step sleepy") == []
    assert not (root / "notebooks/finished").exists()
    shutil.rmtree(root / ".dvc" / "tmp", ignore_errors=True)  # DVC's own lock of the killed run
    nb = root / "notebooks/slow.ipynb"
    nb.write_text(nb.read_text().replace("time.sleep(60)", "time.sleep(0)"))
    cli(["compile"], root)
    assert _ran_sleepy(tool, root)


def test_tampered_dvc_cache_is_refused_not_served(project):
    """DVC restores a tampered cache file without a word; the step reading it refuses it."""
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = list(range(5))"),
                                             (["step:b"], "y = sum(x)")])
    git_project(project)
    cli(["compile"], project)
    sh(["dvc", "repro"], project)
    meta = json.loads((project / "outputs/a/x/meta.json").read_text())
    cache = next(p for p in (project / ".dvc/cache").rglob("*")
                 if p.is_file() and artifacts.sha256_file(p) == meta["sha256"])
    cache.chmod(0o644)
    cache.write_text("[9, 9, 9, 9, 9]")  # a corrupted cache entry, then a fresh checkout
    shutil.rmtree(project / "outputs/a/x")
    sh(["dvc", "checkout", "outputs/a/x"], project, check=False)
    res = sh(["dvc", "repro", "--force", "-s", "b"], project, check=False)
    assert res.returncode != 0
    assert "changed after its step wrote it" in res.stderr + res.stdout
    assert not (project / "outputs/b/y").exists()


@pytest.mark.parametrize("worker", ["1", "0"])
def test_failing_step_under_ploomber_names_step_and_cell_and_reruns(project, worker):
    make_nb(project / "notebooks/nb.ipynb", [
        (["step:a"], "x = 1"),
        (["step:b"], "y = x + 1"),
        ([], "raise ValueError('bad row ' + str(y))"),
        (["step:c"], "z = y"),
    ])
    git_project(project)
    cli(["compile"], project)
    res = sh(["ploomber", "build"], project, check=False, MLOPS_NB_WORKER=worker)
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert "step 'b' failed" in text and "notebooks/nb.ipynb" in text and "bad row 2" in text
    assert not (project / "outputs/c").exists()
    nb = project / "notebooks/nb.ipynb"
    nb.write_text(nb.read_text().replace("raise ValueError('bad row ' + str(y))", "pass"))
    cli(["compile"], project)
    out = sh(["ploomber", "build"], project).stdout
    ran = {line.split()[0] for line in out.splitlines() if " True " in f" {line} "}
    assert ran == {"b", "c"}
