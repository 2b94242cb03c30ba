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
    from mlops_nb.ci import celltests
    from mlops_nb.errors import NotebookTestsFailed
    from mlops_nb.project import find_root

    root = find_root(Path(args.project) if args.project else None)
    results = celltests.run_tests(root, args.notebooks or None, args.step or None)
    if not results:
        print("no test cells (tag a cell `test` or `test:STEP` in JupyterLab to add one)")
        return 0
    for r in results:
        print(r.text_report())
        if r.stale:
            print(f"  note: {', '.join(r.stale)} changed since its last run; the values"
                  " tested are that run's (mlops-nb run first)")
    if args.json:
        import json

        from mlops_nb.artifacts import atomic

        atomic.write_text(Path(args.json).absolute(),
                          json.dumps([r.as_json() for r in results], indent=1) + "\n")
    bad = [r for r in results if r.outcome != celltests.PASSED]
    print(f"{len(results) - len(bad)} passed, {len(bad)} failed"
          f" ({sum(r.seconds for r in results):.1f} s)")
    if bad:
        raise NotebookTestsFailed(f"{len(bad)} of {len(results)} test cells failed: first"
                                  f" {bad[0].where}")
    return 0
