"""CLI commands of level 2: `test` (the notebook's test cells).

Registered by cli.build_parser; imports nothing heavy at module level.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlops_nb.cli.pipeline import _root
from mlops_nb.cli.serve import _positive


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

    root = _root(args)
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
    how = r.add_mutually_exclusive_group()
    how.add_argument("--promote", action="store_true",
                   help="let the pipeline's gate register and promote into the project's own"
                        " registry (the main branch); by default it decides against a copy")
    how.add_argument("--deploy", action="store_true",
                   help="as --promote, but the gate only registers: each new version then goes"
                        " through `deploy --to staging` and `deploy --to production`, each a"
                        " check of the run (the generated workflows' main branch)")
    r.set_defaults(func=cmd_ci_run)
    register_ci_init(verbs)


def cmd_ci_run(args: argparse.Namespace) -> int:
    from mlops_nb.ci import report
    from mlops_nb.ci import run as ci_run
    from mlops_nb.errors import CiFailed

    root = _root(args)
    report.check_writable(root)
    result = ci_run.run(root, args.base, args.tests, args.promote, args.deploy)
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

    root = _root(args)
    for rel in workflows.init(root, args.github, args.gitlab, args.setup, args.force):
        print(f"wrote {rel}")
    print("commit it; the report is posted with GitHub's own token (GitLab: set the masked"
          " variable MLOPS_NB_GITLAB_TOKEN to comment on merge requests)")
    return 0


def register_trigger(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "trigger", help="decide whether to retrain (new data, schedule, drift, skew, online"
                   " quality) and do it",
        description="Check each trigger of continuous training and say why it holds or not:"
                    " new data (dvc status), --schedule, drift and skew of the production"
                    " model's served data, its online quality on labelled records. When one"
                    " holds, rerun the pipeline as a DVC"
                    " experiment (its promote step applies the gate) and deploy a model that"
                    " passes to staging (exit 23 when the deploy's checks refuse it); --dry-run"
                    " only says what it would do. Each decision is an event in the lineage"
                    " store.")
    t.add_argument("model", nargs="?", default=None,
                   help="the served model (default: the registry's only one, if any)")
    t.add_argument("--dry-run", action="store_true", help="decide and report; change nothing")
    t.add_argument("--schedule", action="store_true",
                   help="this is a scheduled run (the nightly workflow): retrain")
    t.add_argument("--since-hours", type=_positive(float), default=None, metavar="H",
                   help="only served records of the last H hours")
    t.add_argument("--min-rows", type=_positive(int), default=30, metavar="N",
                   help="served records needed for a drift verdict (default 30)")
    t.add_argument("--log-dir", default=None, metavar="DIR",
                   help="the serving log (default .mlops_nb/serving/NAME)")
    t.add_argument("--report-dir", default=None, metavar="DIR",
                   help="where the monitoring report and the retraining log go (default"
                        " .mlops_nb/monitor/NAME)")
    t.add_argument("--json", action="store_true", help="print the decision as JSON")
    t.set_defaults(func=cmd_trigger)


def cmd_trigger(args: argparse.Namespace) -> int:
    import json
    import time

    from mlops_nb.ci import trigger
    from mlops_nb.errors import DeployRefused, RetrainFailed
    from mlops_nb.guards.registry import Registry, default_root, parse_ref

    root = _root(args)
    model = args.model
    if model is None:
        names = Registry(default_root(root)).names()
        model = names[0] if len(names) == 1 else None
    name = parse_ref(model)[0] if model else "pipeline"
    decision = trigger.run(
        root, model, dry_run=args.dry_run, schedule=args.schedule,
        log_dir=Path(args.log_dir) if args.log_dir else root / ".mlops_nb" / "serving" / name,
        report_dir=Path(args.report_dir) if args.report_dir else
        root / ".mlops_nb" / "monitor" / name, min_rows=args.min_rows,
        since=time.time() - args.since_hours * 3600 if args.since_hours else None)
    if args.json:
        print(json.dumps(decision.to_dict(), indent=1, default=str))
    else:
        for t in decision.triggers:
            print(f"{'HOLDS' if t.holds else 'no':>5}  {t.kind:<15} {t.reason}")
        verb = "would retrain" if decision.dry_run else "retraining"
        print(f"{verb}: the pipeline as a DVC experiment, through the gate" if decision.retrain
              else "nothing to do: no trigger holds")
    out = decision.outcome
    if out is not None and not out.get("ok"):
        raise RetrainFailed(f"the retraining {out.get('experiment')} failed (exit"
                            f" {out.get('exit_code')}): see {out.get('log')}")
    if out is not None:
        gate = out.get("decision") or {}
        print(f"retrained: {out.get('experiment')} ({out.get('seconds')} s); gate:"
              f" {gate.get('decision', 'no decision recorded')}")
        staged = out.get("deploy")
        if staged is not None and not staged.get("moved"):
            raise DeployRefused(f"the retrained {staged['ref']} was not deployed to staging:"
                                f" {staged.get('error')}")
        if staged is not None:
            print(f"deployed {staged['ref']} to staging; production follows with"
                  f" `mlops-nb deploy {staged['ref']} --to production`")
    return 0


def register_deploy(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "deploy", help="check a registered version can serve, then move it to staging or"
                       " production",
        description="In order, stopping at the first failure with the stage unchanged (exit"
                    " 23): the version loads and predicts in a fresh environment made from the"
                    " project's lock (requirements.lock); its peak memory and load time are"
                    " within params.yaml's `mlops_nb: {deploy: ...}` limits; `mlops-nb serve`"
                    " on loopback answers its training sample as the registered model does;"
                    " a short load test meets the p99 latency and throughput floors. Then the"
                    " stage moves (a service following NAME@STAGE swaps to it). Production is"
                    " reached only from staging unless --force (exit 2).")
    d.add_argument("model", metavar="NAME[:V]",
                   help="NAME (its latest version), NAME:VERSION or NAME@staging")
    d.add_argument("--to", required=True, choices=["staging", "production"],
                   help="the stage to move it to")
    d.add_argument("--force", action="store_true",
                   help="allow production from a stage other than staging")
    d.add_argument("--json", action="store_true", help="print the checks as JSON")
    d.set_defaults(func=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    import json

    from mlops_nb.ci import deploy

    root = _root(args)
    result = deploy.deploy(root, args.model, args.to, force=args.force)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=str))
    else:
        for c in result.checks:
            print(f"{'ok' if c.ok else 'FAILED':>6}  {c.name}: {c.detail}")
        print(f"{result.ref} is now in {result.to}")
    return 0
