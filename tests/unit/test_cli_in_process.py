"""conftest.cli_in_process answers as a process of its own does: the tests that use it stand
for a user's command only while its exit code, stdout and stderr (log lines, a -v traceback,
argparse's usage errors and --help) are the ones `cli` gets from a real process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import cli, cli_in_process, git_project, make_nb

CASES = [
    ["status"],  # no notebook: a UsageError, exit 2
    ["-v", "status"],  # the same with its traceback
    ["--no-such-option"],  # argparse's usage error
    ["--help"],  # argparse's exit 0
    ["-v", "compile"],  # a notebook compiled
    ["-v", "export", "kfp"],  # -v's log lines (the export's INFO line)
    ["compile", "--check"],
]


def _project(root: Path, args: list[str]) -> Path:
    git_project(root)
    if "compile" in args or "export" in args:
        make_nb(root / "notebooks/a.ipynb", [(["parameters"], "N = 1"), (["step:a"], "x = N")])
    if "--check" in args:
        cli(["compile"], root)
    return root


@pytest.mark.parametrize("args", CASES, ids=" ".join)
def test_the_same_code_stdout_and_stderr_as_a_process(tmp_path, args):
    # two projects alike, one for each way of running the command
    a, b = _project(tmp_path / "a" / "proj", args), _project(tmp_path / "b" / "proj", args)
    by_process, in_process = cli(args, a, check=False), cli_in_process(args, b, check=False)

    def same(text: str, root: Path) -> str:  # a log line may name its folder, a time
        return re.sub(r"0x[0-9a-f]+|\d+\.\d+ ?s\b", "_", text.replace(str(root), "ROOT"))

    assert in_process.returncode == by_process.returncode, (by_process, in_process)
    assert same(in_process.stdout, b) == same(by_process.stdout, a)
    assert same(in_process.stderr, b) == same(by_process.stderr, a)
