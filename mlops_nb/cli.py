"""The `mlops-nb` command: parse arguments, call one library function, render the result.

This is the one error boundary: every MlopsNbError becomes a message on stderr and its exit
code (a traceback only with --verbose). Heavy modules are imported inside the commands so
`mlops-nb --help` stays fast.

Exit codes: 0 ok; 1 other mlops_nb error; 2 usage error; 3 a notebook, params.yaml or the
pipeline is invalid; 4 generated files are stale (compile --check); 5 a step failed;
6 a step output is missing or corrupted; 7-10 the guards (see guards); 11 another run
holds the project; 12 a step timed out; 13 a step's process died; 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mlops_nb.errors import MlopsNbError


def _root(args: argparse.Namespace) -> Path:
    from mlops_nb.project import find_root

    return find_root(Path(args.project) if args.project else None)


def cmd_init(args: argparse.Namespace) -> int:
    from mlops_nb.project import init

    created = init(Path(args.dir).resolve())
    for item in created:
        print(f"created {item}")
    if not created:
        print("already a project; nothing changed")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from mlops_nb import compile as compile_mod

    root = _root(args)
    if args.check:
        spec = compile_mod.check(root, args.notebooks or None)
        print(f"up to date: {len(spec.steps)} steps")
        return 0
    result = compile_mod.compile_project(root, args.notebooks or None)
    for rel in result.written:
        print(f"wrote {rel}")
    for rel in result.removed:
        print(f"removed {rel}")
    steps = " -> ".join(s.name for s in result.spec.steps)
    print(f"{len(result.spec.steps)} steps: {steps}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mlops_nb.run import run

    def show(step: str, what: str) -> None:
        print(f"{step}: {what}", flush=True)

    result = run(_root(args), args.steps or None, force=args.force, engine=args.engine,
                 timeout=args.timeout, on_step=show)
    print(f"ran {len(result.ran)}, up to date {len(result.skipped)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mlops_nb import compile as compile_mod
    from mlops_nb.run import statuses

    root = _root(args)
    spec, _ = compile_mod.render(root)
    width = max(len(s.name) for s in spec.steps)
    for st in statuses(root, spec):
        reason = f" ({st.reason})" if st.reason else ""
        print(f"{st.step:<{width}}  {st.status}{reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlops-nb",
        description="Turn tagged notebooks into reproducible papermill/Ploomber/DVC pipelines.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-C", "--project", help="project folder (default: found from the cwd)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="make a folder an mlops_nb project (git, DVC, layout)")
    s.add_argument("dir", nargs="?", default=".")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("compile", help="notebooks -> steps/, pipeline.yaml, dvc.yaml, params.yaml")
    s.add_argument("notebooks", nargs="*", help="notebooks or folders (default: notebooks/)")
    s.add_argument("--check", action="store_true",
                   help="write nothing; exit 4 naming what is stale")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("run", help="compile and run the pipeline (or STEPs and what they need)")
    s.add_argument("steps", nargs="*")
    s.add_argument("-f", "--force", action="store_true", help="rerun steps that are up to date")
    s.add_argument("--engine", choices=("fast", "papermill"), default="fast",
                   help="fast: fork each step from one warm process (default); papermill:"
                        " a kernel per step")
    s.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="stop a step that runs longer (exit 12); its notebook is kept")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="show each step as up to date, changed or never run")
    s.set_defaults(func=cmd_status)

    from mlops_nb.cli_guards import register

    register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except MlopsNbError as exc:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"mlops-nb: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mlops-nb: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The console command: main(), then a quick exit.

    After a run the process holds pandas, scikit-learn and IPython; tearing them down at
    interpreter exit costs ~0.45 s and does nothing useful (every file is written and closed,
    the lineage store commits per run), so once output is flushed the process just ends.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
