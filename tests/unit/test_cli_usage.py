"""First contact with the CLI (issue 11, items 13-14): flags anywhere, --version, help on
every command and positional, models' own usage, branches shown as branches, init's next
steps and first commit, untagged notebooks skipped with a note."""

from __future__ import annotations

import argparse

import pytest

from mlops_nb.cli import _subparsers, build_parser
from tests.conftest import cli, make_nb, sh


def test_every_subcommand_and_positional_has_help():
    parser = build_parser()
    missing = []
    for p in [parser, *_subparsers(parser)]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if a.help}
                missing += [f"{p.prog} {c}" for c in action.choices if c not in helped]
            elif not action.option_strings and not action.help:
                missing.append(f"{p.prog} {action.dest}")
    assert missing == []


def test_verbose_and_project_work_after_the_subcommand(project, tmp_path):
    make_nb(project / "notebooks/a.ipynb", [(["step:a"], "x = 1")])
    cli(["init", str(project)], tmp_path)
    res = cli(["status", "-C", str(project), "-v"], tmp_path)
    assert "a  never run" in res.stdout
    res = cli(["-C", str(project), "status"], tmp_path)
    assert "a  never run" in res.stdout


def test_version(project):
    res = cli(["--version"], project)
    assert res.stdout.startswith("mlops-nb ")


def test_models_subcommands_have_their_own_usage(project):
    res = cli(["models", "promote", "--help"], project)
    assert "usage: mlops-nb models promote" in res.stdout and "NAME:VERSION" in res.stdout
    res = cli(["models", "show"], project, check=False)
    assert res.returncode == 2 and "usage: mlops-nb models show" in res.stderr


def test_compile_summary_shows_branches(project):
    make_nb(project / "notebooks/b.ipynb", [
        (["step:load"], "x = 1"),
        (["step:left"], "a = x + 1"),
        (["step:right"], "b = x + 2"),
        (["step:join"], "c = a + b"),
    ])
    cli(["init", str(project)], project.parent)
    out = cli(["compile"], project).stdout
    assert "4 steps (each after what it needs):" in out
    assert "  right  <- load" in out and "  join   <- left, right" in out


def test_init_says_what_next_and_makes_the_first_commit(project):
    (project / "data.csv").write_text("a\n1\n")  # the user's files are never committed by init
    out = cli(["init", str(project)], project.parent).stdout
    assert "next:" in out and "mlops-nb compile" in out and "git commit" in out
    assert "Initialized DVC" not in out  # DVC's own notes stay quiet, as with `dvc init -q`
    assert sh(["dvc", "config", "core.analytics"], project).stdout.strip() == "false"
    log = sh(["git", "log", "--format=%s", "--name-only"], project).stdout
    assert "mlops-nb init" in log and "params.yaml" in log and "data.csv" not in log
    again = cli(["init", str(project)], project.parent).stdout
    assert "the first commit" not in again


def test_init_where_dvc_cannot_init_says_so_and_what_to_do(project):
    (project / ".dvcignore").mkdir()  # in the way of the file `dvc init` writes
    res = cli(["init", str(project)], project.parent, check=False)
    assert res.returncode == 2, res.stderr
    assert f"`dvc init` failed in {project}" in res.stderr and "run `mlops-nb init` again" \
        in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow  # runs the step in a real kernel
def test_an_untagged_notebook_is_skipped_with_a_note(project):
    make_nb(project / "notebooks/explore.ipynb", [([], "import os")])
    make_nb(project / "notebooks/train.ipynb", [(["step:train"], "x = 1")])
    cli(["init", str(project)], project.parent)
    res = cli(["compile"], project)
    assert "notebooks/explore.ipynb: skipped, no cell is tagged 'step:<name>' yet" in res.stderr
    assert "1 steps: train" in res.stdout
    # said once per compile that finds it, not on every run (issue 26.9)
    assert "skipped" not in cli(["run"], project).stderr
    make_nb(project / "notebooks/more.ipynb", [([], "import sys")])
    res = cli(["run"], project)
    assert "notebooks/more.ipynb: skipped" in res.stderr and "explore" not in res.stderr
    assert "skipped" not in cli(["run"], project).stderr
