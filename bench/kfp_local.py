"""How much slower the exported KFP pipeline runs under kfp.local than `mlops-nb run`.

On copies of the example project (notebooks/iris.ipynb, 6 steps) and of the fan-out/fan-in
fixture (5 steps), each round times, in rotated order: `mlops-nb run -f` (the fast path),
`mlops-nb run -f --engine papermill` (a kernel per step), and `mlops-nb export kfp --local`
(export, then kfp.local's SubprocessRunner with this interpreter). Medians are written into
bench/RESULTS.md's `kfp-local` section, with the command. Wall time, spawn to exit.

Usage: .venv/bin/python bench/kfp_local.py [--runs N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sections import write_section

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_NB_ROOT"}
    env.update(DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1", MLOPS_NB_WORKER="0",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def _project(work: Path, name: str) -> Path:
    root = work / name
    if name == "iris":
        root.mkdir()
        shutil.copytree(REPO / "notebooks", root / "notebooks")
        shutil.copy(REPO / "params.yaml", root / "params.yaml")
    else:
        shutil.copytree(REPO / "tests/fixtures/fanout", root)
    return root


CASES = {
    "run": ["mlops-nb", "run", "-f"],
    "papermill": ["mlops-nb", "run", "-f", "--engine", "papermill"],
    "kfp": ["mlops-nb", "export", "kfp", "--local"],
}
LABELS = {
    "run": "`mlops-nb run -f` (fast path)",
    "papermill": "`mlops-nb run -f --engine papermill` (a kernel per step)",
    "kfp": "`mlops-nb export kfp --local` (export + kfp.local SubprocessRunner)",
}


def _time(cmd: list[str], root: Path) -> float:
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True)
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {root}:\n{res.stdout}\n{res.stderr}")
    return took


PER_TASK = {
    "kfp's executor": "import kfp.dsl.executor_main",
    "mlops_nb's step execution (IPython shell)":
        "import mlops_nb.execute.step, mlops_nb.execute.cells, IPython",
    "the executed notebook's HTML page (mlops_nb's renderer; nbconvert before issue 25.9)":
        "import mlops_nb.export.html",
    "pandas + scikit-learn (the step's own imports)": "import pandas, sklearn.ensemble",
}


def _cpu(code: str) -> float:
    """User + system CPU seconds of `python -c code` (less sensitive to load than wall time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], env=_env(), check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mlops-nb-bench-kfp-"))
    started = time.time()
    load = [os.getloadavg()[0]]
    times: dict[tuple[str, str], list[float]] = {}
    try:
        projects = {n: _project(work, n) for n in ("iris", "fanout")}
        for root in projects.values():  # untimed: compile, first imports, typed artifacts
            _time(CASES["run"], root)
        for r in range(args.runs):
            print(f"round {r + 1}/{args.runs}", flush=True)
            load.append(os.getloadavg()[0])
            names = list(CASES)
            names = names[r % len(names):] + names[:r % len(names)]
            for pname, root in projects.items():
                for case in names:
                    times.setdefault((pname, case), []).append(_time(CASES[case], root))
            for label, code in PER_TASK.items():
                times.setdefault(("cpu", label), []).append(_cpu(code))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load.append(os.getloadavg()[0])
    lines = [
        "## Kubeflow Pipelines, run locally (issue 14)",
        "",
        f"Command: `python bench/kfp_local.py --runs {args.runs}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.runs} run(s) of"
        f" each case, order rotated per round; {(time.time() - started) / 60:.1f} min; load"
        f" average (1 min) {', '.join(f'{x:.1f}' for x in load)}",
        "",
        "| pipeline | way to run | runs | median s | min-max s | ratio to `mlops-nb run` |",
        "|---|---|---|---|---|---|",
    ]
    for pname, title in (("iris", "example (6 steps)"), ("fanout", "fan-out/fan-in (5 steps)")):
        base = statistics.median(times[(pname, "run")])
        for case in CASES:
            t = times[(pname, case)]
            med = statistics.median(t)
            lines.append(f"| {title} | {LABELS[case]} | {len(t)} | {med:.2f} |"
                         f" {min(t):.2f}-{max(t):.2f} | {med / base:.1f}x |")
    lines += ["", "What every KFP task pays again, as a fresh process (CPU seconds, median):", ""]
    lines += [f"- {label}: {statistics.median(times[('cpu', label)]):.2f} s"
              for label in PER_TASK]
    lines += [
        "",
        "Why the KFP run is slower: each task is a fresh `python -m kfp.dsl.executor_main`"
        " process that imports kfp, mlops_nb, IPython and the step's libraries (pandas,"
        " scikit-learn) again, where `mlops-nb run` forks every step from one warm process;"
        " each task also builds a scratch project, copies its input artifacts in and its"
        " outputs out (no shared filesystem is assumed), renders its executed notebook to HTML,"
        " and kfp.local runs the tasks one after another. The export itself"
        " (kfp SDK import and compile) is part of the KFP row. On a cluster, pod scheduling and"
        " image pulls add to this; independent branches run in parallel there.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(BENCH / "RESULTS.md", "kfp-local", text)
        print("wrote bench/RESULTS.md (section kfp-local)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
