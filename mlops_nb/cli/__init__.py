"""The `mlops-nb` command: parse arguments, call one library function, render the result.

This is the one error boundary: every MlopsNbError becomes a message on stderr and its exit
code (a traceback only with --verbose). Heavy modules are imported inside the commands so
`mlops-nb --help` stays fast.

Exit codes: 0 ok; 1 other mlops_nb error; 2 usage error; 3 a notebook, params.yaml or the
pipeline is invalid; 4 generated files are stale (compile --check); 5 a step failed;
6 a step output is missing or corrupted; 7-10 the guards (see guards); 11 another run
holds the project; 12 a step timed out; 13 a step's process died; 14 served data
drifted (monitor); 15 another retraining is running (monitor --retrain); 20 a notebook test
cell failed (test); 21 a check of ci run failed; 22 the retraining trigger started
failed; 23 deploy refused a version (a check failed; its stage did not move); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mlops_nb.cli import ci, export, guards, params, pipeline, serve
from mlops_nb.errors import MlopsNbError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlops-nb",
        description="Turn tagged notebooks into reproducible papermill/Ploomber/DVC pipelines.",
    )
    _common_flags(p)
    p.set_defaults(verbose=False, project=None)
    p.add_argument("--version", action="version", version=f"mlops-nb {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="one of these (`mlops-nb COMMAND --help` for more)")

    pipeline.register(sub)
    guards.register(sub)
    serve.register(sub)
    export.register(sub)
    ci.register(sub)
    ci.register_ci(sub)
    ci.register_trigger(sub)
    ci.register_deploy(sub)
    params.register(sub)
    for parser in _subparsers(p):  # `mlops-nb run -v` as well as `mlops-nb -v run`
        _common_flags(parser)
    return p


def _common_flags(p: argparse.ArgumentParser) -> None:
    """-v and -C, defaulting to SUPPRESS so a subcommand's copy never undoes the global one."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks (a failed cell's own) and debug logs")
    p.add_argument("-C", "--project", default=argparse.SUPPRESS, metavar="DIR",
                   help="project folder (default: found from the current folder)")


def _subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                out += [child, *_subparsers(child)]
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlops_nb")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except MlopsNbError as exc:
        if args.verbose and getattr(exc, "cell_traceback", ""):
            # the user's failing line matters, not how mlops_nb got there
            print(exc.cell_traceback, file=sys.stderr)  # type: ignore[attr-defined]
        elif args.verbose:
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
