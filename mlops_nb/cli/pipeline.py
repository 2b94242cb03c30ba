"""CLI commands of the pipeline: init, compile, run, status.

Registered by cli.build_parser; imports nothing heavy at module level (each command imports
its library function). Each command parses, calls one library function and renders.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse makes anything else a usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, not"
                                         f" {text!r}")
    return value


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
    print(NEXT_STEPS)
    return 0


NEXT_STEPS = """
next:
  1. put a notebook in notebooks/ (or start one there in JupyterLab)
  2. tag its cells in JupyterLab's cell-tag editor (the gear icon on the right):
     imports, functions, pipeline-parameters, step:NAME, prev:NAME, skip, pipeline-metrics
  3. mlops-nb compile        (then mlops-nb run, dvc repro or ploomber build)
  4. git add -A && git commit -m "pipeline"   (DVC experiments need a commit)"""


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
    print(summary(result.spec))
    return 0


def summary(spec: Any) -> str:
    """The steps as a chain when they form one, else each step with what it needs."""
    steps = list(spec.steps)
    chain = all(list(s.upstream) == ([steps[i - 1].name] if i else [])
                for i, s in enumerate(steps))
    if chain:
        return f"{len(steps)} steps: " + " -> ".join(s.name for s in steps)
    width = max(len(s.name) for s in steps)
    lines = [f"{len(steps)} steps (each after what it needs):"]
    lines += [f"  {s.name:<{width}}  <- {', '.join(s.upstream)}" if s.upstream else f"  {s.name}"
              for s in steps]
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from mlops_nb.execute.parallel import cores
    from mlops_nb.execute.run import run

    def show(step: str, what: str) -> None:
        print(f"{step}: {what}", flush=True)

    result = run(_root(args), args.steps or None, force=args.force, engine=args.engine,
                 timeout=args.timeout, on_step=show, jobs=args.jobs or cores())
    print(f"ran {len(result.ran)}, up to date {len(result.skipped)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mlops_nb import compile as compile_mod
    from mlops_nb.execute.status import statuses

    root = _root(args)
    spec, files = compile_mod.render(root)
    width = max(len(s.name) for s in spec.steps)
    for st in statuses(root, spec, files, verify=args.verify):
        reason = f" ({st.reason})" if st.reason else ""
        print(f"{st.step:<{width}}  {st.status}{reason}")
    from mlops_nb.pipeline import paramsync

    for line in paramsync.advice(paramsync.project_drifts(root, spec.notebooks)):
        print(line, file=sys.stderr)  # a note beside the table, which stays one line a step
    from mlops_nb.execute.dvcfiles import problems

    broken = problems(root)  # DVC's own files, as a killed `dvc repro` can leave them
    for problem in broken:
        print(f"mlops-nb: {problem}", file=sys.stderr)
    return 1 if broken else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the pipeline's commands to the `mlops-nb` parser."""
    s = sub.add_parser("init", help="make a folder an mlops_nb project (git, DVC, layout)")
    s.add_argument("dir", nargs="?", default=".", help="the project folder (default: here)")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("compile", help="notebooks -> steps/, pipeline.yaml, dvc.yaml, params.yaml")
    s.add_argument("notebooks", nargs="*", help="notebooks or folders (default: notebooks/)")
    s.add_argument("--check", action="store_true",
                   help="write nothing; exit 4 naming what is stale")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("run", help="compile and run the pipeline (or STEPs and what they need)")
    s.add_argument("steps", nargs="*", metavar="STEP",
                   help="steps to run, with the steps they need (default: all)")
    s.add_argument("-f", "--force", action="store_true",
                   help="rerun steps that are up to date (with STEPs: those STEPs; the"
                        " steps they need still run only when not up to date)")
    s.add_argument("--engine", choices=("fast", "papermill"), default="fast",
                   help="fast: fork each step from one warm process (default); papermill:"
                        " a kernel per step")
    s.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="stop a step that runs longer (exit 12); its notebook is kept")
    s.add_argument("-j", "--jobs", type=int, metavar="N",
                   help="run up to N independent steps at the same time (default: the"
                        " number of cores; engine fast only, papermill runs one at a time)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="each step: up to date, changed (and what), failed,"
                                      " never run or stale")
    s.add_argument("--verify", action="store_true",
                   help="hash every output again, also those whose size and modification time"
                        " are unchanged (finds bit rot and tampering; reads all outputs)")
    s.set_defaults(func=cmd_status)
