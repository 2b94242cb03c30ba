"""Shared fixtures: notebook factory, temporary projects, running the real CLI and tools."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)

# pytest keeps its rewritten test modules (assert rewriting) only where bytecode may be
# written: on machines that set PYTHONDONTWRITEBYTECODE, each pytest process rewrote all of
# them on every run (3 to 4 s of CPU each). This process only: what the tests start still
# inherits the variable, as a user's processes would.
sys.dont_write_bytecode = False

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this venv first on PATH, no telemetry, quiet git."""
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_NB_ROOT"}
    env.update(
        PATH=BIN + os.pathsep + env.get("PATH", ""),
        DVC_NO_ANALYTICS="1",
        DO_NOT_TRACK="1",
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
        PYTHONWARNINGS="ignore",
        MLOPS_NB_WORKER_IDLE="30",  # warm workers of temp projects go away soon after
    )
    env.update(extra)
    return env


def make_nb(path: Path, cells: list[tuple[list[str], str]], markdown_first: bool = False) -> Path:
    """Write a notebook whose code cells carry the given tags and sources."""
    nb_cells = []
    if markdown_first:
        nb_cells.append({"cell_type": "markdown", "metadata": {}, "source": "# title", "id": "md"})
    for i, (tags, src) in enumerate(cells):
        meta = {"tags": tags} if tags else {}
        nb_cells.append({"cell_type": "code", "execution_count": None, "metadata": meta,
                         "outputs": [], "source": src, "id": f"c{i}"})
    doc = {"cells": nb_cells, "metadata": {"kernelspec": {"name": "python3",
                                                          "display_name": "Python 3",
                                                          "language": "python"}},
           "nbformat": 4, "nbformat_minor": 5}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def sh(cmd: list[str], cwd: Path, check: bool = True, **extra: str
       ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, cwd=cwd, env=tool_env(**extra), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}\nstdout:\n{res.stdout}"
                             f"\nstderr:\n{res.stderr}")
    return res


def cli(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh([sys.executable, "-m", "mlops_nb", *args], cwd, check=check)


def cli_in_process(args: list[str], cwd: Path, check: bool = True
                   ) -> subprocess.CompletedProcess[str]:
    """`mlops-nb ARGS` in `cwd`, run by the CLI's own main() in this process: the same exit
    code and output as `cli`, without a new interpreter importing kfp or scikit-learn again
    for each call (about 1 s of CPU). For tests of what a command answers; each command also
    runs as a process of its own in the integration tests."""
    from mlops_nb.cli import main

    out, err = io.StringIO(), io.StringIO()
    # the log goes to stderr as main()'s logging.basicConfig sends it in a process of its
    # own (here the root logger has pytest's handlers already, so basicConfig does nothing)
    logs = logging.StreamHandler(err)
    logs.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # and at main()'s level: the root logger's gates what reaches any handler
    level = logging.DEBUG if {"-v", "--verbose"} & set(args) else logging.WARNING
    logs.setLevel(level)
    root_log = logging.getLogger()
    kept, kept_level = list(root_log.handlers), root_log.level
    root_log.addHandler(logs)
    root_log.setLevel(level)
    here = os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors and --help, as a process exits
                code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(here)
        root_log.setLevel(kept_level)
        # ours, and any that basicConfig added (where pytest's logging plugin is off): none
        # may outlive the call and write to its closed-over buffers
        for handler in [h for h in root_log.handlers if h not in kept]:
            root_log.removeHandler(handler)
    res = subprocess.CompletedProcess(["mlops-nb", *args], code, out.getvalue(),
                                      err.getvalue())
    if check and code != 0:
        raise AssertionError(f"mlops-nb {' '.join(args)} exited {code}\nstdout:\n"
                             f"{res.stdout}\nstderr:\n{res.stderr}")
    return res


# what `mlops-nb init` finds and keeps or changes when it is there already (it appends to a
# .gitignore): a folder holding one of them is made a project by the real command
_INIT_TOUCHES = (".git", ".dvc", ".dvcignore", ".gitignore")


def git_project(root: Path) -> Path:
    """A real git + DVC project in `root`, with everything committed.

    What `mlops-nb init` makes of an empty folder is made once per test session (built_once)
    and copied in beside what `root` holds (a file of `root` wins, as init never overwrites
    one): a copied repository is what git and DVC take it for. Init itself, and a `root`
    that already has something init would touch, go through the real command."""
    if any((root / name).exists() for name in _INIT_TOUCHES):
        cli(["init", str(root)], root.parent)
    else:
        template = built_once("initialized-project", lambda folder: cli(["init", "."], folder),
                              "proj")
        root.mkdir(parents=True, exist_ok=True)
        for entry in template.iterdir():
            if entry.is_dir():
                shutil.copytree(entry, root / entry.name, symlinks=True, dirs_exist_ok=True)
            elif not (root / entry.name).exists():
                shutil.copy2(entry, root / entry.name)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "init", "--allow-empty"], root)
    return root


def compiled_project(root: Path, message: str = "compiled") -> Path:
    """`root` (holding notebooks/) as a git + DVC project, compiled and committed."""
    git_project(root)
    cli(["compile"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", message], root)
    return root


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """`folder` (made here) as a tmpfs of `size`, a disk that really fills up (ENOSPC from the
    kernel, not a faked write call), unmounted after; the test is skipped where mounting is
    not permitted."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (ENOSPC cannot be produced otherwise without"
                    " faking the write call, which would not test the real error path)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_disk(disk: Path, byte: bytes = b"\0") -> None:
    """Fill the disk holding `disk` to the last byte (a file named filler)."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(byte * 4096)
        except OSError:
            pass


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(root: Path) -> list[int]:
    """The pids of the warm workers serving the project at `root` (not the step processes
    they fork, which share their command line)."""
    here = os.fsencode(root.resolve())
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mlops_nb.execute.worker" in args and here in args:
            pids.append(int(proc.name))
    return [p for p in pids if _parent(p) not in pids]


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


# the folder this test session's processes share (set by user_cache; in the environment, as
# tests import this module under a second name)
_SESSION_ENV = "MLOPS_NB_TEST_SESSION"


def built_once(key: str, build, name: str) -> Path:  # type: ignore[no-untyped-def]
    """The folder `name` that `build(folder)` filled, made once per test session for `key`:
    the test processes (pytest-xdist's workers) share it; the first to need it builds it
    while the others wait on its lock. Never change it: copy it (git, DVC and the outputs
    come along, and the outputs load: this session's user wrote them)."""
    shared = Path(os.environ[_SESSION_ENV]) / "built"
    shared.mkdir(exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    done = shared / f"{slug}.done"
    with open(shared / f"{slug}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            folder = shared / slug / name
            shutil.rmtree(folder.parent, ignore_errors=True)  # what a failed build left
            folder.mkdir(parents=True)
            build(folder)
            done.write_text(name)
    return shared / slug / done.read_text()


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory):
    """The user's record of written files (artifacts/trust.py) for this session, in a
    temporary folder: tests never read or add to the real one, and every process they start
    (steps, dvc, its queue workers, the other pytest-xdist workers) shares this one, as a
    user's processes share theirs."""
    from mlops_nb.artifacts.trust import CACHE_ENV

    base = tmp_path_factory.getbasetemp()
    # pytest-xdist gives each worker a folder of its own inside the session's
    session = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    os.environ[_SESSION_ENV] = str(session)
    folder = session / "user-cache"
    folder.mkdir(exist_ok=True)
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def from_template(tmp_path_factory: pytest.TempPathFactory):
    """`from_template(key, build, dest)`: `dest` as a copy of the project `build` made once
    per session for `key` (in a folder named like `dest`; built_once). git and DVC take a
    copied repository as it is (and its outputs load: this session's user wrote them)."""

    def copy(key: str, build, dest: Path) -> Path:
        built = built_once("template." + key, build, dest.name)
        shutil.copytree(built, dest, symlinks=True, dirs_exist_ok=True)
        assert sh(["git", "status", "--porcelain"], dest).stdout == "", key
        return dest

    return copy


@pytest.fixture
def example_project(tmp_path: Path, from_template) -> Path:
    """A copy of the repository's example project in a fresh git + DVC repo, compiled."""
    return from_template("example", _compiled_example, tmp_path / "example")


def _compiled_example(root: Path) -> None:
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for name in ("params.yaml",):
        shutil.copy(REPO / name, root / name)
    compiled_project(root, "compile")
