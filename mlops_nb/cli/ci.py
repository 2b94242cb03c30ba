"""CLI commands of level 2: `test` (the notebook's test cells).

Registered by cli.build_parser; imports nothing heavy at module level.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "test", help="run the notebooks' `test` cells against the last run's outputs",
        description="Run each cell tagged `test` (or `test:STEP`) in a kernel of its own,"
                    " against the last run's outputs of its step, and report each failure"
                    " with its notebook, cell and line. Exit 20 when one fails.")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="only the test cells of these notebooks (project-relative paths)")
    p.add_argument("--step", action="append", default=[], metavar="STEP",
                   help="only the test cells about STEP (repeatable)")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write the results to FILE as JSON (one object per cell)")
    p.set_defaults(func=cmd_test)


def cmd_test(args: argparse.Namespace) -> int:
    import json

    from mlops_nb.artifacts import atomic
    from mlops_nb.ci import celltests
    from mlops_nb.errors import NotebookTestsFailed
    from mlops_nb.project import find_root

    root = find_root(Path(args.project) if args.project else None)
    out = Path(args.json).absolute() if args.json else None
    if out is not None and (inside := atomic.boundary(out, root)) is not None:
        atomic.refuse_symlinks(out, root=inside)
    results = celltests.run_tests(root, args.notebooks or None, args.step or None)
    if not results:
        print("no test cells (tag a cell `test` or `test:STEP` in JupyterLab to add one)")
        return 0
    for r in results:
        print(r.text_report())
        if r.stale:
            print(f"  note: {', '.join(r.stale)} changed since its last run; the values"
                  " tested are that run's (mlops-nb run first)")
    if out is not None:
        atomic.write_text(out, json.dumps([r.as_json() for r in results], indent=1) + "\n",
                          root=atomic.boundary(out, root))
    bad = [r for r in results if r.outcome != celltests.PASSED]
    print(f"{len(results) - len(bad)} passed, {len(bad)} failed"
          f" ({sum(r.seconds for r in results):.1f} s)")
    if bad:
        raise NotebookTestsFailed(f"{len(bad)} of {len(results)} test cells failed: first"
                                  f" {bad[0].where}")
    return 0


def register_ci(sub: argparse._SubParsersAction) -> None:
    ci = sub.add_parser("ci", help="continuous integration of the pipeline: run, init",
                        description="Continuous integration of the notebook pipeline.")
    verbs = ci.add_subparsers(dest="ci_command", required=True, metavar="VERB")
    r = verbs.add_parser(
        "run", help="the CI workflow's steps on HEAD, locally, with a report",
        description="In a temporary git worktree of HEAD: compile --check, the project's tests,"
                    " dvc pull (when a remote is configured), dvc repro, the notebook's test"
                    " cells; then ci-report/report.md (+ report.json, plots) comparing metrics"
                    " and parameters with --base. Exit 21 when a check failed.")
    r.add_argument("--base", default="main", metavar="REF",
                   help="the commit to compare with (default: main)")
    r.add_argument("--tests", default=None, metavar="COMMAND",
                   help="the project's test command (default: python -m pytest -q when tests/"
                        " exists; '' skips)")
    r.add_argument("--promote", action="store_true",
                   help="let the pipeline's gate register and promote into the project's own"
                        " registry (the main branch); by default it decides against a copy")
    r.set_defaults(func=cmd_ci_run)
    register_ci_init(verbs)


def cmd_ci_run(args: argparse.Namespace) -> int:
    from mlops_nb.ci import report
    from mlops_nb.ci import run as ci_run
    from mlops_nb.errors import CiFailed
    from mlops_nb.project import find_root

    root = find_root(Path(args.project) if args.project else None)
    report.check_writable(root)
    result = ci_run.run(root, args.base, args.tests, args.promote)
    md = report.write(result, root)
    for c in result.checks:
        print(f"{c.outcome:>7}  {c.name} ({c.seconds:.1f} s){': ' + c.detail if c.detail else ''}")
    print(f"report: {md.relative_to(root)}")
    if result.failed:
        raise CiFailed(f"CI failed at: {', '.join(c.name for c in result.failed)}; see"
                       f" {md.relative_to(root)}")
    return 0


def register_ci_init(verbs: argparse._SubParsersAction) -> None:
    i = verbs.add_parser(
        "init", help="write the CI workflow for GitHub Actions and/or GitLab CI",
        description="Write .github/workflows/mlops.yml (--github) and/or .gitlab-ci.yml"
                    " (--gitlab): on a pull request they set up, run `mlops-nb ci run` against"
                    " the target branch and post its report; on the default branch the gate"
                    " may promote (--promote); nightly they run again.")
    i.add_argument("--github", action="store_true", help="GitHub Actions")
    i.add_argument("--gitlab", action="store_true", help="GitLab CI")
    i.add_argument("--setup", default=None, metavar="COMMAND",
                   help="the project's set-up command (default: found from scripts/setup.sh,"
                        " requirements.txt or pyproject.toml)")
    i.add_argument("--force", action="store_true", help="replace existing workflow files")
    i.set_defaults(func=cmd_ci_init)


def cmd_ci_init(args: argparse.Namespace) -> int:
    from mlops_nb.ci import workflows
    from mlops_nb.project import find_root

    root = find_root(Path(args.project) if args.project else None)
    for rel in workflows.init(root, args.github, args.gitlab, args.setup, args.force):
        print(f"wrote {rel}")
    print("commit it; the report is posted with GitHub's own token (GitLab: set the masked"
          " variable MLOPS_NB_GITLAB_TOKEN to comment on merge requests)")
    return 0
