"""CLI commands of the pipeline: init, compile, run, status.

Registered by cli.build_parser; imports nothing heavy at module level (each command imports
its library function). Each command parses, calls one library function and renders.
"""

from __future__ import annotations

import argparse
from pathlib import Path


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
    from mlops_nb.execute.run import run

    def show(step: str, what: str) -> None:
        print(f"{step}: {what}", flush=True)

    result = run(_root(args), args.steps or None, force=args.force, engine=args.engine,
                 timeout=args.timeout, on_step=show)
    print(f"ran {len(result.ran)}, up to date {len(result.skipped)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mlops_nb import compile as compile_mod
    from mlops_nb.execute.run import statuses

    root = _root(args)
    spec, _ = compile_mod.render(root)
    width = max(len(s.name) for s in spec.steps)
    for st in statuses(root, spec):
        reason = f" ({st.reason})" if st.reason else ""
        print(f"{st.step:<{width}}  {st.status}{reason}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the pipeline's commands to the `mlops-nb` parser."""
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
