"""What a kill -9 of `dvc repro` can leave of DVC's own files (DVC writes dvc.lock and
.dvc/tmp/rwlock in place): `mlops-nb status` names the broken file and the command that
recovers it, and that command makes real DVC work again (issue 21, item 16)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli, compiled_project, make_nb, sh, tool_env

pytestmark = pytest.mark.slow


def _ran_once(root: Path) -> None:
    make_nb(root / "notebooks/nb.ipynb", [(["step:a"], "x = 1"), (["step:b"], "y = x + 1")])
    compiled_project(root)
    sh(["dvc", "repro"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "ran"], root)


@pytest.fixture
def ran(project, from_template) -> Path:
    return from_template("dvc-ran-once", _ran_once, project)


# (file, what a killed dvc leaves, what status says, the recovery it names)
PLANTS = {
    "empty dvc.lock": ("dvc.lock", "", "dvc.lock is empty", "git checkout dvc.lock"),
    "empty rwlock": (".dvc/tmp/rwlock", "", ".dvc/tmp/rwlock is empty",
                     "rm .dvc/tmp/rwlock"),
}
OTHER_PLANTS = {
    "dvc.lock cut short": ("dvc.lock", "schema: '2.0'\nstages:\n  a:\n    cmd: [",
                           "dvc.lock is not valid YAML (line"),
    "dvc.lock of another shape": ("dvc.lock", "- a\n- b\n", "dvc.lock is not a DVC lock"),
    "rwlock of another shape": (".dvc/tmp/rwlock", '{"read": 5}',
                                ".dvc/tmp/rwlock is not DVC's lock record"),
    "rwlock nested 100,000 deep": (".dvc/tmp/rwlock", "[" * 100_000,
                                   ".dvc/tmp/rwlock is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(PLANTS))
def test_status_names_a_broken_dvc_file_and_its_recovery(ran, case):
    name, text, said, recovery = PLANTS[case]
    (ran / name).write_text(text)
    assert sh(["dvc", "status"], ran, check=False).returncode != 0  # DVC itself is stuck
    res = cli(["status"], ran, check=False)
    assert res.returncode == 1, res.stderr
    assert said in res.stderr and f"`{recovery}`" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert "a  up to date" in res.stdout  # the steps are still listed
    sh(recovery.split(), ran)  # the recovery it names works
    sh(["dvc", "status"], ran)
    res = cli(["status"], ran)
    assert res.stderr == "" and res.returncode == 0


def test_status_names_other_damage_without_a_traceback(ran):
    for case, (name, text, said) in OTHER_PLANTS.items():
        good = (ran / name).read_bytes()
        (ran / name).write_text(text)
        res = cli(["status"], ran, check=False)
        assert res.returncode == 1 and said in res.stderr, (case, res.stderr)
        assert "Traceback" not in res.stderr, case
        (ran / name).write_bytes(good)


def test_nothing_is_said_while_a_dvc_command_holds_the_repository(ran):
    (ran / ".dvc/tmp/rwlock").write_text("")  # as mid-write under a running dvc
    fd = os.open(ran / ".dvc/tmp/lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as DVC holds it
        res = cli(["status"], ran)
        assert res.returncode == 0 and "rwlock" not in res.stderr
    finally:
        os.close(fd)
    assert cli(["status"], ran, check=False).returncode == 1


def test_planted_files_are_neither_followed_nor_waited_on(ran, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("")  # an empty file elsewhere: not DVC's, never read as if it were
    (ran / ".dvc/tmp/rwlock").unlink()
    (ran / ".dvc/tmp/rwlock").symlink_to(outside)
    (ran / "dvc.lock").unlink()
    os.mkfifo(ran / "dvc.lock")  # opening it for reading would block
    res = subprocess.run([sys.executable, "-m", "mlops_nb", "status"], cwd=ran,
                         capture_output=True, text=True, timeout=60, env=tool_env())
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "rwlock" not in res.stderr
    assert outside.read_text() == ""
