"""The serving benchmark's section of bench/RESULTS.md: the table, the targets, the machine.

Figures are medians over rounds of one run; ratios compare medians of the same run. The
targets are issue 24's: at 1 record and 8 connections, at least 5x MLflow's requests/s and at
most a fifth of its p99; at 100 records, at least 3x its records/s; ahead of BentoML and
MLServer on every cell; the ONNX export and check of the example model under 5 s.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MLFLOW = "mlflow models serve"
OURS = ("mlops-nb serve --runtime onnx", "mlops-nb serve --runtime sklearn")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _cell(runs: list[tuple]) -> dict[str, float]:
    return {"rps": statistics.median(r[0] / r[3] for r in runs),
            "p50": statistics.median(quantile(r[2], 0.5) for r in runs) * 1e3,
            "p99": statistics.median(quantile(r[2], 0.99) for r in runs) * 1e3,
            "cpu": statistics.median(r[4] / max(r[0], 1) for r in runs) * 1e3,
            "errors": sum(r[1] for r in runs)}


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render(cells: dict[tuple[str, int, int], list[tuple]], names: list[str], sizes: list[int],
           connections: list[int], exports: list[tuple[float, float, float]], notes: list[str],
           versions: dict[str, dict[str, str]], *, command: str, rounds: int, seconds: float,
           minutes: float, loads: list[float]) -> str:
    from serve_bench import environment

    commit = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "mlops_nb", "bench"],
                           cwd=REPO, capture_output=True, text=True).stdout.strip()
    figures = {key: _cell(runs) for key, runs in cells.items()}
    others = "; ".join(f"{k}: " + ", ".join(f"{p} {v}" for p, v in vs.items())
                       for k, vs in versions.items())
    lines = [
        "# Serving benchmark (issues 13 and 24)", "",
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {rounds} round(s) of"
        f" {seconds:g} s per cell, cells round-robin (order rotated each round), one server"
        f" worker each, on loopback; whole benchmark {minutes:.1f} min  ",
        "Load average (1 min) at the start, at each round's start and at the end: "
        + ", ".join(f"{x:.1f}" for x in loads) + " (2 cores shared with other work)  ",
        f"Machine: {environment()}  ",
        f"mlops_nb at `{commit}`" + (" (with uncommitted changes)" if dirty else "")
        + f"; other servers, each in its own venv: {others}", "",
        "Model: the example pipeline's promoted iris:1 (a scikit-learn Pipeline: log-ratio"
        " features + a 100-tree random forest of depth 4), the same fitted object in every"
        " server (loaded from the registry's skops file in each venv); the ONNX runtime serves"
        " its checked export (`mlops-nb export onnx`). Every server's predictions on the same"
        " 100 records were checked equal before timing. The load generator is this benchmark's"
        " own process on the same 2 cores (asyncio, raw HTTP/1.1 keep-alive connections).",
        "mlops-nb serve runs with its defaults (token-less loopback, schema validation, the"
        " serving log written, metrics, adaptive batching: --batch-max-records 1000,"
        " --batch-max-wait-ms 2); the others with theirs (BentoML: a plain API, no"
        " `batchable`; MLServer: `parallel_workers: 0`, no adaptive batching configured).", "",
        "| server | records/request | connections | requests/s | records/s | p50 ms | p99 ms |"
        " server CPU ms/request | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        for n in sizes:
            for c in connections:
                f = figures.get((name, n, c))
                if f:
                    lines.append(f"| `{name}` | {n} | {c} | {f['rps']:.1f} | {f['rps'] * n:.0f}"
                                 f" | {f['p50']:.1f} | {f['p99']:.1f} | {f['cpu']:.2f} |"
                                 f" {f['errors']} |")
    lines += ["", "Targets (issue 24):", ""]
    for ours in OURS:
        if ours not in names:
            continue
        if MLFLOW in names and (ours, 1, 8) in figures and (MLFLOW, 1, 8) in figures:
            a, b = figures[(ours, 1, 8)], figures[(MLFLOW, 1, 8)]
            ratio, tail = a["rps"] / b["rps"], a["p99"] / b["p99"]
            lines.append(f"- `{ours}`, 1 record, 8 connections: {ratio:.1f}x MLflow's"
                         f" requests/s (target >= 5x: {_verdict(ratio >= 5)}), p99"
                         f" {tail:.2f}x MLflow's (target <= 0.2x: {_verdict(tail <= 0.2)})")
        for c in connections:
            if MLFLOW in names and (ours, 100, c) in figures and (MLFLOW, 100, c) in figures:
                ratio = figures[(ours, 100, c)]["rps"] / figures[(MLFLOW, 100, c)]["rps"]
                lines.append(f"- `{ours}`, 100 records, {c} connections: {ratio:.1f}x MLflow's"
                             f" records/s (target >= 3x: {_verdict(ratio >= 3)})")
        behind = []
        for other in ("BentoML", "MLServer"):
            for n in sizes:
                for c in connections:
                    if (ours, n, c) in figures and (other, n, c) in figures:
                        mine, theirs = figures[(ours, n, c)], figures[(other, n, c)]
                        if mine["rps"] <= theirs["rps"]:
                            behind.append(f"{other} at {n} record(s), {c} connections"
                                          f" ({mine['rps']:.0f} vs {theirs['rps']:.0f} req/s)")
        compared = [o for o in ("BentoML", "MLServer") if o in names]
        if compared:
            lines.append(f"- `{ours}` ahead of {' and '.join(compared)} on every cell: "
                         + (_verdict(True) if not behind else
                            _verdict(False) + ": behind " + "; ".join(behind)))
    if exports:
        whole = statistics.median(w for w, _, _ in exports)
        cpu = statistics.median(c for _, c, _ in exports)
        inner = statistics.median(s for _, _, s in exports)
        lines.append(f"- ONNX export + check of the example model (`mlops-nb export onnx"
                     f" iris`, {len(exports)} runs, median): {whole:.2f} s for the whole"
                     f" command ({cpu:.2f} s of CPU), {inner:.2f} s of it loading the model,"
                     f" converting, checking and writing (target < 5 s for the whole"
                     f" command: {_verdict(whole < 5)})")
    for note in notes:
        lines.append(f"- not measured: {note}")
    return "\n".join(lines) + "\n"
