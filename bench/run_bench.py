"""The execution benchmark of issue 3: every way to run the same pipeline, against its floor.

    python bench/run_bench.py [--runs N] [--variant logreg|forest|both] [--quick] [--out FILE]
                              [--only CASE,...] [--keep]

Builds the benchmark projects (bench/make_project.py) in a temporary folder, then runs every
case in the same run, round-robin: each round runs each case once, in an order rotated from
the previous round, so drift in machine speed spreads over all cases instead of landing on
one. Each case is timed as a whole process (measure.py). The table reports medians, min-max,
the ratio of medians to the floor measured in the same run, peak memory and PASS/FAIL against
the issue's targets, and is written to bench/RESULTS.md with the command, date and machine.

A case's untimed set-up puts the project in the state the case is about (DVC's lock matching
the workspace before `dvc exp run`; everything up to date before the nothing-changed cases;
no generated files before the 100-notebook compile), and a check of each run's output makes
sure the case did what it claims (all four steps ran, only train+evaluate reran, nothing ran).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import make_project as mp
import measure
import own_cost
import report
import sections
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def _portable(cmd: str) -> str:
    """A command line as RESULTS.md may show it: no absolute path of this machine."""
    import re
    import tempfile

    cmd = cmd.replace(str(REPO) + "/", "")
    return re.sub(re.escape(tempfile.gettempdir()) + r"/[^/\s]+", "<tmp>", cmd)


@dataclass(frozen=True)
class Target:
    limit: float
    kind: str  # "ratio" (of medians, to the case's floor) or "seconds" (median)

    def text(self) -> str:
        return f"<= {self.limit:g}x" if self.kind == "ratio" else f"<= {self.limit:g} s"


@dataclass
class Case:
    key: str
    label: str
    cwd: Path
    command: Callable[[], list[str]]  # called per run: `dvc exp run` needs a fresh value
    group: str  # variant name, or "cli" for the variant-independent cases
    floor: str | None = None  # key of the case this one is a ratio to
    target: Target | None = None
    setup: list[list[str]] = field(default_factory=list)
    before: Callable[[], object] | None = None  # untimed set-up done in Python
    check: Callable[[measure.Sample, float], str | None] | None = None
    samples: list[measure.Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the case failed its checks
    remarks: list[str] = field(default_factory=list)  # worth knowing, not a failure


def _tool(env: dict[str, str], name: str) -> str:
    found = shutil.which(name, path=env["PATH"])
    if not found:
        raise SystemExit(f"run_bench: `{name}` not found on PATH; activate the project venv")
    return found


def _step_params(project: Path, step: str) -> list[str]:
    doc = json.loads((project / "steps" / f"{step}.ipynb").read_text())
    return list(doc["metadata"].get("mlops_nb", {}).get("params", []))


def _executed_notebooks_fresh(project: Path, steps: tuple[str, ...], since: float) -> str | None:
    """Each step's executed notebook was rewritten by this run, with outputs and parameters."""
    for step in steps:
        path = project / "outputs" / step / f"{step}.ipynb"
        if not path.exists() or path.stat().st_mtime < since - 0.05:  # coarse fs clock
            return f"{path.relative_to(project)} not written by this run"
        doc = json.loads(path.read_text())
        cells = doc.get("cells", [])
        injected = [c for c in cells
                    if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
        if _step_params(project, step) and not injected:
            return f"{path.relative_to(project)} has no injected-parameters cell"
        if not any(c.get("outputs") for c in cells if c.get("cell_type") == "code"):
            return f"{path.relative_to(project)} has no outputs"
    return None


def _ran_all(project: Path, steps: tuple[str, ...] = mp.STEPS
             ) -> Callable[[measure.Sample, float], str | None]:
    def check(sample: measure.Sample, since: float) -> str | None:
        return _executed_notebooks_fresh(project, steps, since)
    return check


def _dvc_stages(sample: measure.Sample, since: float) -> str | None:
    ran = sorted(set(_stage_names(sample.output)))
    if ran != ["evaluate", "train"]:
        return f"dvc exp run ran stages {ran}, expected only train and evaluate"
    return None


def _stage_names(output: str) -> list[str]:
    prefix = "Running stage '"
    return [line.split("'")[1] for line in output.splitlines() if line.startswith(prefix)]


def _nothing_written(project: Path) -> Callable[[measure.Sample, float], str | None]:
    def check(sample: measure.Sample, since: float) -> str | None:
        written = [p for p in (project / "outputs").rglob("*") if p.stat().st_mtime >= since]
        return f"wrote {written[0].relative_to(project)}" if written else None
    return check


def _all_up_to_date(sample: measure.Sample, since: float) -> str | None:
    stale = [ln for ln in sample.output.splitlines() if "changed" in ln or "never run" in ln]
    return f"status not all up to date: {stale}" if stale else None


def _steps_compiled(project: Path, n: int) -> Callable[[measure.Sample, float], str | None]:
    def check(sample: measure.Sample, since: float) -> str | None:
        found = len(list((project / "steps").glob("*.ipynb")))
        return None if found == n else f"compile wrote {found} step notebooks, expected {n}"
    return check


# the cases a big-data variant runs (the others take minutes each at 1M rows)
BIG_CASES = {"floor", "ploomber", "dvc", "dvc_cold", "run"}


def variant_cases(bp: mp.BenchProject, env: dict[str, str], imports: bool = False) -> list[Case]:
    """The ways to run bp's pipeline, its floors, and (imports=True) the floor's import cost."""
    v, project, floor = bp.variant, bp.project, bp.floor
    py, mlops, dvc = sys.executable, _tool(env, "mlops-nb"), _tool(env, "dvc")
    papermill, ploomber = _tool(env, "papermill"), _tool(env, "ploomber")
    plain = " && ".join(f"'{py}' steps/{s}.py" for s in mp.STEPS)

    def papermill_chain() -> list[str]:
        """papermill per step, with the values params.yaml holds now (as the others use)."""
        params = yaml.safe_load((project / "params.yaml").read_text())[mp.NOTEBOOK_STEM]
        runs = []
        for s in mp.STEPS:
            ps = " ".join(f"-p {n} {params[n]!s}" for n in _step_params(project, s))
            runs.append(f"mkdir -p outputs/{s} && '{papermill}' steps/{s}.ipynb"
                        f" outputs/{s}/{s}.ipynb {ps} -k python3 --no-progress-bar")
        return ["sh", "-c", " && ".join(runs)]

    values = iter(v.exp_values)
    k = v.name
    cases = [
        Case(f"{k}.floor", "one plain `python script.py` (the floor)", floor,
             lambda: [py, "script.py"], k),
        Case(f"{k}.plain4", "4 plain Python processes passing files", floor,
             lambda: ["sh", "-c", plain], k, floor=f"{k}.floor"),
        Case(f"{k}.papermill", "4 notebooks through the papermill CLI", project,
             papermill_chain, k, floor=f"{k}.floor", check=_ran_all(project)),
        Case(f"{k}.ploomber", "`ploomber build --force`", project,
             lambda: [ploomber, "build", "--force"], k, floor=f"{k}.floor",
             target=Target(2.0, "ratio"), check=_ran_all(project)),
        Case(f"{k}.ploomber_cold", "`ploomber build --force`, no warm process left by earlier"
             " runs", project, lambda: [ploomber, "build", "--force"], k, floor=f"{k}.floor",
             before=lambda: measure.stop_residents(env[mp.SESSION], project),
             check=_ran_all(project)),
        Case(f"{k}.dvc", "`dvc repro --force`", project,
             lambda: [dvc, "repro", "--force"], k, floor=f"{k}.floor",
             target=Target(2.0, "ratio"), check=_ran_all(project)),
        Case(f"{k}.dvc_cold", "`dvc repro --force`, no warm process left by earlier runs",
             project, lambda: [dvc, "repro", "--force"], k, floor=f"{k}.floor",
             before=lambda: measure.stop_residents(env[mp.SESSION], project),
             check=_ran_all(project)),
        Case(f"{k}.run", "`mlops-nb run -f` (whole pipeline, cold)", project,
             lambda: [mlops, "run", "-f"], k, floor=f"{k}.floor",
             target=Target(1.3, "ratio"), check=_ran_all(project)),
        Case(f"{k}.floor_te", "floor of train + evaluate (one plain process)", floor,
             lambda: [py, "train_evaluate.py"], k),
        Case(f"{k}.exp", f"`dvc exp run -S {mp.NOTEBOOK_STEM}.{v.exp_param}=...`"
             " (reruns train + evaluate)", project,
             lambda: [dvc, "exp", "run", "-S", f"{mp.NOTEBOOK_STEM}.{v.exp_param}={next(values)}"],
             k, floor=f"{k}.floor_te", target=Target(1.5, "ratio"),
             setup=[[dvc, "commit", "-f", "-q"]], check=_dvc_stages),
    ]
    if v.name == "forest":  # training heavy enough for experiments side by side to show
        param = f"{mp.NOTEBOOK_STEM}.{v.exp_param}"

        def two_experiments(queued: bool) -> list[str]:
            a, b = next(values), next(values)  # fresh values: DVC's run cache never answers
            if not queued:
                return ["sh", "-c", f"'{dvc}' exp run -q -S {param}={a} &&"
                                    f" '{dvc}' exp run -q -S {param}={b}"]
            return ["sh", "-c", f"'{dvc}' exp run -q --queue -S {param}={a} &&"
                                f" '{dvc}' exp run -q --queue -S {param}={b} &&"
                                f" '{dvc}' exp run --run-all -j 2"]

        cases += [
            Case(f"{k}.exp2_seq", "two experiments one after another (`dvc exp run -S ...`"
                 " twice)", project, lambda: two_experiments(False), k,
                 setup=[[dvc, "commit", "-f", "-q"]]),
            Case(f"{k}.exp2_queue", "the same two queued, then `dvc exp run --run-all -j 2`"
                 " (side by side, each in a temporary workspace)", project,
                 lambda: two_experiments(True), k, floor=f"{k}.exp2_seq",
                 setup=[[dvc, "commit", "-f", "-q"]]),
        ]
    if bp.variant.name.endswith("1m"):
        cases = [c for c in cases if c.key.split(".", 1)[1] in BIG_CASES]
    else:
        cases += own_cost_cases(bp, env)
    if imports:
        cases.insert(1, Case(f"{k}.imports", "the floor's imports alone (`python -c 'import"
                             " pandas, sklearn...'`)", floor, lambda: [py, "-c", mp.IMPORTS], k,
                             floor=f"{k}.floor"))
    return cases


def own_cost_cases(bp: mp.BenchProject, env: dict[str, str]) -> list[Case]:
    """What DVC and Ploomber cost by themselves on bp's pipeline (own_cost.py)."""
    k, py = bp.variant.name, sys.executable
    dvc, ploomber = _tool(env, "dvc"), _tool(env, "ploomber")
    own, limit = own_cost.dvc_projects(bp.project, f"'{py}' '{bp.floor / 'script.py'}' > /dev/null")
    return [
        Case(f"{k}.dvc_own", "DVC's own cost: the same dvc.yaml, each stage copying in the"
             " outputs of a real run (`dvc repro --force`)", own,
             lambda: [dvc, "repro", "--force"], k, floor=f"{k}.floor"),
        Case(f"{k}.dvc_limit", "the floor, then DVC's own cost: the floor script run by the"
             " first step's stage of the row above", limit,
             lambda: [dvc, "repro", "--force"], k, floor=f"{k}.floor"),
        Case(f"{k}.ploomber_own", "Ploomber's own cost: the same pipeline.yaml, tasks that"
             " only write their products (`ploomber build --force`)",
             own_cost.ploomber_project(bp.project), lambda: [ploomber, "build", "--force"], k,
             floor=f"{k}.floor"),
    ]


def fanout_cases(bp: mp.BenchProject, env: dict[str, str]) -> list[Case]:
    """Two independent heavy steps: `mlops-nb run -j 2` against -j 1 and the plain script."""
    mlops, project, k = _tool(env, "mlops-nb"), bp.project, "fanout"
    ran = _ran_all(project, mp.FANOUT_STEPS)
    return [
        Case(f"{k}.floor", "one plain `python script.py` (the floor: one step after another)",
             bp.floor, lambda: [sys.executable, "script.py"], k),
        Case(f"{k}.run_j1", "`mlops-nb run -f -j 1`", project,
             lambda: [mlops, "run", "-f", "-j", "1"], k, floor=f"{k}.floor", check=ran),
        Case(f"{k}.run_j2", "`mlops-nb run -f -j 2` (the two forests side by side)", project,
             lambda: [mlops, "run", "-f", "-j", "2"], k, floor=f"{k}.floor",
             target=Target(1.0, "ratio"), check=ran),
    ]


def disk_bandwidth(folder: Path, size: int) -> list[str]:
    """dd's write (synced to disk) and read (O_DIRECT, past the page cache) of `size` bytes in
    `folder`: the physical limit beside the figures."""
    import subprocess

    mb = max(1, size >> 20)
    target = folder / "dd.bin"
    lines = []
    for label, cmd in (
            ("write, then fsync", ["dd", "if=/dev/zero", f"of={target}", "bs=1M",
                                    f"count={mb}", "conv=fsync"]),
            ("read, O_DIRECT (not from the page cache)",
             ["dd", f"if={target}", "of=/dev/null", "bs=1M", "iflag=direct"]),
            ("read from the page cache", ["dd", f"if={target}", "of=/dev/null", "bs=1M"])):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        took = time.perf_counter() - t0
        if res.returncode != 0:
            lines.append(f"- dd {label}: failed ({res.stderr.strip()[-120:]})")
            continue
        lines.append(f"- dd {label}: {mb} MB in {took:.2f} s = {mb / took:.0f} MB/s")
    target.unlink(missing_ok=True)
    return lines


def _tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cli_cases(bp: mp.BenchProject, many: Path, n_steps: int, env: dict[str, str]) -> list[Case]:
    """Cases that do not depend on the model: nothing to do, help, check, compile at scale."""
    mlops, project = _tool(env, "mlops-nb"), bp.project
    params_text = (many / "params.yaml").read_text()

    def reset_many() -> None:
        shutil.rmtree(many / "steps", ignore_errors=True)
        for name in ("pipeline.yaml", "dvc.yaml", "env.yaml"):
            (many / name).unlink(missing_ok=True)
        (many / "params.yaml").write_text(params_text)

    return [
        Case("cli.noop_run", "nothing changed: `mlops-nb run`", project,
             lambda: [mlops, "run"], "cli", target=Target(0.3, "seconds"),
             setup=[[mlops, "run"]], check=_nothing_written(project)),
        Case("cli.status", "nothing changed: `mlops-nb status`", project,
             lambda: [mlops, "status"], "cli", target=Target(0.3, "seconds"),
             setup=[[mlops, "run"]], check=_all_up_to_date),
        Case("cli.help", "`mlops-nb --help`", project, lambda: [mlops, "--help"], "cli",
             target=Target(0.3, "seconds")),
        Case("cli.check", "`mlops-nb compile --check` (up to date)", project,
             lambda: [mlops, "compile", "--check"], "cli", target=Target(0.3, "seconds"),
             setup=[[mlops, "compile"]]),
        Case("cli.compile100", "`mlops-nb compile`: 100 notebooks x 30 cells, from scratch",
             many, lambda: [mlops, "compile"], "cli", target=Target(2.0, "seconds"),
             before=reset_many, check=_steps_compiled(many, n_steps)),
    ]


def run_case(case: Case, env: dict[str, str], log: Path) -> None:
    try:
        if case.before:
            case.before()
        for cmd in case.setup:
            measure.run_quiet(cmd, case.cwd, env, log)
    except RuntimeError as exc:
        case.problems.append(str(exc))
        return
    known = len(case.problems)
    since = time.time()
    sample = measure.run(case.command(), case.cwd, env, log)
    case.samples.append(sample)
    if sample.returncode != 0:
        tail = [ln.strip() for ln in sample.output.splitlines() if ln.strip()][-3:]
        case.problems.append(f"exit {sample.returncode}: {' / '.join(tail)[-400:]}")
    elif case.check and (problem := case.check(sample, since)):
        case.problems.append(problem)
    # A resident worker is allowed (issue 3 suggests one); its work is counted in the row.
    case.remarks += [f"left a process running: `{_portable(cmd)}`" for cmd in sample.started]
    case.remarks += [f"handed work to a resident process started earlier: `{_portable(cmd)}`"
                     " (its CPU time and peak memory are counted in this row)"
                     for cmd in sample.used]
    flag = "".join(f"\n    ! {msg[:160]}" for msg in case.problems[known:])
    print(f"  {case.key:<18} {sample.seconds:7.2f} s  {sample.peak_mb:6.0f} MB{flag}", flush=True)


def select(cases: dict[str, list[Case]], names: set[str]) -> dict[str, list[Case]]:
    """Keep the named cases (key without its group) and the floors they are ratios to."""
    by_key = {c.key: c for group in cases.values() for c in group}
    known = {k.split(".", 1)[1] for k in by_key}
    if names - known:
        raise SystemExit(f"run_bench: no case named {', '.join(sorted(names - known))};"
                         f" cases are: {', '.join(sorted(known))}")
    keep = {c.key for c in by_key.values() if c.key.split(".", 1)[1] in names}
    keep |= {floor for k in keep if (floor := by_key[k].floor)}
    picked = {g: [c for c in group if c.key in keep] for g, group in cases.items()}
    return {g: group for g, group in picked.items() if group}


def rotated(items: list[Case], by: int) -> list[Case]:
    by %= len(items)
    return items[by:] + items[:by]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark every way to run the pipeline (issue 3).")
    p.add_argument("--runs", type=int,
                   help="runs of each case (default 5, as issue 3 asks: about 13 min on 2"
                        " cores; --quick: 1)")
    p.add_argument("--variant", default="both",
                   help="comma-separated: logreg, forest, logreg1m (1M rows), logreg10m"
                        " (10M rows), fanout (two"
                        " independent heavy steps, -j 2 against -j 1); both = logreg,forest;"
                        " all = every one")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 run, logreg only, table printed, RESULTS.md untouched")
    p.add_argument("--out", type=Path, help="where to write the table (default bench/RESULTS.md)")
    p.add_argument("--keep", action="store_true", help="keep the temporary projects")
    p.add_argument("--only", help="comma-separated cases to run, e.g. run,dvc,noop_run (their"
                   " floors come along): the part after the dot in RESULTS.md's last table")
    args = p.parse_args(argv)
    runs = args.runs or (1 if args.quick else 5)
    named = {"both": "logreg,forest", "all": "logreg,forest,logreg1m,fanout"}
    variants = ["logreg"] if args.quick else named.get(args.variant, args.variant).split(",")
    fanout = "fanout" in variants
    variants = [v for v in variants if v != "fanout"]
    if unknown := [v for v in variants if v not in mp.VARIANTS]:
        raise SystemExit(f"run_bench: unknown variant {', '.join(unknown)}")
    out = args.out or (None if args.quick else BENCH / "RESULTS.md")
    command = "python bench/run_bench.py" + (" " + " ".join(sys.argv[1:]) if argv is None
                                             and sys.argv[1:] else "")

    work = Path(tempfile.mkdtemp(prefix="mlops-nb-bench-"))
    env = mp.bench_env(session=str(work))
    log = work / "bench.log"
    started = time.time()
    loads = [os.getloadavg()[0]]
    code_at_start = report.code_digest(REPO)
    print(f"building projects in {work} (log: {log})", flush=True)
    try:
        built = [mp.build(work / v, v, env) for v in variants]
        cases = {v: variant_cases(bp, env, imports=(i == 0 and v == "logreg"))
                 for i, (v, bp) in enumerate(zip(variants, built, strict=True))}
        if fanout:
            cases["fanout"] = fanout_cases(mp.build_fanout(work / "fanout", env), env)
            variants.append("fanout")
        if "logreg" in variants:
            many = mp.build_many(work, 100, 30, env)
            cases["cli"] = cli_cases(built[0], many, 400, env)
        disk = []
        for name, rows in (("logreg1m", "1M"), ("logreg10m", "10M")):
            if name in variants:
                big = built[variants.index(name)].project / "outputs"
                disk += [f"Disk bandwidth, for the {_tree_size(big) / 1e6:.0f} MB of outputs the"
                         f" {rows}-row pipeline writes (dd, 1 MiB blocks, in the benchmark's"
                         " folder):", "", *disk_bandwidth(work, _tree_size(big)), ""]
        if args.only:
            cases = select(cases, set(args.only.split(",")))
        print(f"built in {time.time() - started:.0f} s; {runs} round(s)", flush=True)
        for r in range(runs):
            print(f"round {r + 1}/{runs}", flush=True)
            loads.append(os.getloadavg()[0])
            for group in cases.values():
                for case in rotated(group, r):
                    run_case(case, env, log)
        elapsed = time.time() - started
        loads.append(os.getloadavg()[0])
        all_cases = [c for group in cases.values() for c in group]
        text = report.render(all_cases, command=command, runs=runs, elapsed=elapsed,
                             loads=loads, variants=variants, repo=REPO,
                             code=(code_at_start, report.code_digest(REPO)), extra=disk)
        print(text)
        if out:  # other benchmarks' marked sections of the file stay (sections.py)
            out.write_text(sections.keep_sections(out, text))
            print(f"wrote {out}")
        return 1 if any(c.problems for c in all_cases) else 0
    finally:
        stopped = measure.stop_residents(env[mp.SESSION])
        if stopped:
            print(f"stopped {len(stopped)} process(es) the benchmark's commands left running")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
