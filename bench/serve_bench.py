"""Load benchmark of `mlops-nb serve` against MLflow's scoring server on the same model.

    python bench/serve_bench.py [--seconds S] [--rounds R] [--concurrency C] [--quick]
                                [--no-mlflow] [--out FILE]

Trains the example pipeline in a temporary project (its promoted model is iris:1, a
scikit-learn Pipeline), exports that same fitted model to MLflow's format, and starts both
servers on loopback with one worker each: `mlops-nb serve` and `mlflow models serve
--env-manager local`. A load generator in this (second) process drives each with C concurrent
keep-alive connections (httpx, asyncio) for S seconds, for 1-record and 100-record requests;
the servers and payload sizes take turns round by round, so drift in machine speed spreads
over all cells. Reported: requests/s and records/s, p50/p99 latency, the server's CPU time
per request (its process group's user+system time: what other load on the machine slows but
does not inflate), medians over rounds, and errors. Both servers' predictions on the
payload are checked equal before timing.

MLflow is not one of mlops_nb's dependencies: it goes into a virtualenv of its own (default
~/.cache/mlops_nb/mlflow-bench, $MLFLOW_BENCH_VENV), made with pip on first use with the same
scikit-learn, numpy, pandas, scipy and skops versions as .venv, so it loads the same model.
It is not an extra of pyproject.toml because setup.sh installs every extra of the lock.
Writes its section of bench/RESULTS.md (sections.py), leaving the others.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata as md
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sections

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SAME = ("scikit-learn", "numpy", "pandas", "scipy", "skops")
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore",
       "MLFLOW_TRACKING_URI": "", "GIT_PYTHON_REFRESH": "quiet"}


def sh(cmd: list[str], cwd: Path, log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=ENV,
                              stdin=subprocess.DEVNULL).returncode
    if code:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}; see {log}")


def build_project(work: Path, log: Path) -> Path:
    root = work / "example"
    root.mkdir()
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    mlops = [sys.executable, "-m", "mlops_nb"]
    sh(["git", "init", "-q"], root, log)
    sh([*mlops, "init", "."], root, log)
    sh([*mlops, "run"], root, log)
    return root


def mlflow_python(log: Path) -> tuple[Path | None, str]:
    """The MLflow virtualenv's python (made on first use), or None and why not."""
    venv = Path(os.environ.get("MLFLOW_BENCH_VENV",
                               Path.home() / ".cache/mlops_nb/mlflow-bench"))
    py = venv / "bin/python"
    pins = [f"{p}=={md.version(p)}" for p in SAME]
    stamp = venv / ".pins"
    if py.exists() and stamp.exists() and stamp.read_text() == " ".join(pins):
        return py, ""
    shutil.rmtree(venv, ignore_errors=True)  # a venv cannot be moved: built in place
    try:
        sh([sys.executable, "-m", "venv", str(venv)], BENCH, log)
        sh([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "mlflow",
            *pins], BENCH, log)
    except RuntimeError as exc:
        shutil.rmtree(venv, ignore_errors=True)
        return None, f"MLflow could not be installed ({exc})"
    stamp.write_text(" ".join(pins))  # last: a half-made venv has none, and is made again
    return py, ""


MLFLOW = [""]  # the MLflow version measured, for the report

EXPORT = """
import sys, mlflow.sklearn, skops.io as sio
path, out = sys.argv[1], sys.argv[2]
model = sio.load(path, trusted=sio.get_untrusted_types(file=path))
mlflow.sklearn.save_model(model, out, serialization_format="cloudpickle")
"""


def export_mlflow(py: Path, root: Path, work: Path, log: Path) -> Path:
    model_dir = root / ".mlops_nb/registry/iris/v1/model"
    skops_file = next(model_dir.glob("*.skops"))
    out = work / "mlflow-model"
    sh([str(py), "-c", EXPORT, str(skops_file), str(out)], work, log)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, name: str, cmd: list[str], cwd: Path, port: int, health: str,
                 predict: str, wrap: str, log: Path) -> None:
        self.name, self.port, self.predict, self.wrap = name, port, predict, wrap
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited {self.proc.returncode}; see {log}")
            try:
                if httpx.get(self.url + health, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{name} did not answer {health} in 300 s; see {log}")

    def body(self, records: list[dict]) -> bytes:
        return json.dumps({self.wrap: records}).encode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the processes of process group `pgid`:
    a server's own work, which other load on the machine slows but does not add to."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])
    return total / tick


async def drive(server: Server, body: bytes, seconds: float, concurrency: int
                ) -> tuple[int, int, list[float], float, float]:
    """(requests answered 200, errors, latencies, elapsed, server CPU s) over `seconds`."""
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
        for _ in range(concurrency * 2):  # warm the connections and the server
            await client.post(server.predict, content=body, headers=headers)
        end = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    r = await client.post(server.predict, content=body, headers=headers)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        start, cpu = time.perf_counter(), group_cpu(server.proc.pid)
        await asyncio.gather(*(one() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - start, group_cpu(server.proc.pid) - cpu
    return len(latencies), errors, latencies, elapsed, cpu


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def payloads() -> dict[int, list[dict]]:
    from sklearn.datasets import load_iris

    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows = [dict(zip(names, map(float, r), strict=True)) for r in load_iris().data]
    return {1: rows[:1], 100: (rows * 2)[:100]}


def same_predictions(servers: list[Server], records: list[dict]) -> None:
    import httpx

    answers = []
    for s in servers:
        r = httpx.post(s.url + s.predict, content=s.body(records),
                       headers={"content-type": "application/json"}, timeout=60)
        r.raise_for_status()
        data = r.json()
        answers.append(data["predictions"])
    if any(a != answers[0] for a in answers):
        raise RuntimeError(f"the servers disagree on the same records: {answers}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="per cell and round (10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    p.add_argument("--concurrency", type=int, default=8, help="connections (8)")
    p.add_argument("--quick", action="store_true", help="2 s, 1 round, RESULTS.md untouched")
    p.add_argument("--no-mlflow", action="store_true", help="mlops-nb serve alone")
    p.add_argument("--out", type=Path, help="default bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    out = None if args.quick and not args.out else (args.out or BENCH / "RESULTS.md")
    command = "python bench/serve_bench.py" + (" " + " ".join(sys.argv[1:])
                                               if argv is None and sys.argv[1:] else "")
    work = Path(tempfile.mkdtemp(prefix="mlops-nb-serve-bench-"))
    log = work / "bench.log"
    print(f"working in {work} (log: {log})", flush=True)
    started = time.time()
    servers: list[Server] = []
    note = ""
    try:
        root = build_project(work, log)
        port = free_port()
        servers.append(Server("mlops-nb serve", [
            sys.executable, "-m", "mlops_nb", "serve", "--port", str(port), "--log-dir",
            str(work / "serving-log")], root, port, "/health", "/predict", "records", log))
        if not args.no_mlflow:
            py, note = mlflow_python(log)
            if py is not None:
                MLFLOW[0] = subprocess.run([str(py), "-c", "import mlflow;"
                                            " print(mlflow.__version__)"], capture_output=True,
                                           text=True, env=ENV).stdout.strip()
                model = export_mlflow(py, root, work, log)
                port = free_port()
                # MLflow starts its scoring server as `uvicorn` found on PATH
                ENV["PATH"] = f"{py.parent}{os.pathsep}{ENV.get('PATH', '')}"
                servers.append(Server("mlflow models serve", [
                    str(py), "-m", "mlflow", "models", "serve", "-m", str(model), "-h",
                    "127.0.0.1", "-p", str(port), "--env-manager", "local", "--workers", "1"],
                    work, port,
                    "/ping", "/invocations", "dataframe_records", log))
        bodies = payloads()
        same_predictions(servers, bodies[100])
        cells: dict[tuple[str, int], list[tuple[int, int, list[float], float]]] = {}
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            order = [(s, n) for s in servers for n in bodies]
            order = order[r % len(order):] + order[:r % len(order)]
            for s, n in order:
                res = asyncio.run(drive(s, s.body(bodies[n]), args.seconds, args.concurrency))
                cells.setdefault((s.name, n), []).append(res)
                print(f"  {s.name:<20} {n:>3} record(s): {res[0] / res[3]:8.1f} req/s,"
                      f" p50 {quantile(res[2], 0.5) * 1e3:6.1f} ms,"
                      f" p99 {quantile(res[2], 0.99) * 1e3:6.1f} ms, server CPU"
                      f" {res[4] / max(res[0], 1) * 1e3:5.2f} ms/request, errors {res[1]}",
                      flush=True)
        text = render(cells, servers, args, command, time.time() - started, note)
        print(text)
        if out:
            sections.write_section(out, "serve-bench", text)
            print(f"wrote its section of {out}")
        return 0
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


def render(cells: dict, servers: list[Server], args: argparse.Namespace, command: str,
           elapsed: float, note: str) -> str:
    import subprocess as sp

    commit = sp.run(["git", "log", "-1", "--format=%h %s"], cwd=REPO, capture_output=True,
                    text=True).stdout.strip()
    versions = {p: md.version(p) for p in (*SAME, "fastapi", "uvicorn", "httpx")}
    lines = [
        "# Serving benchmark (issue 13)", "",
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.rounds} round(s)"
        f" of {args.seconds:g} s per cell, {args.concurrency} concurrent keep-alive"
        f" connections, one server worker each; whole benchmark {elapsed / 60:.1f} min  ",
        f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f}; machine: {os.cpu_count()}"
        f" logical cores, Python {platform.python_version()}  ",
        f"mlops_nb at `{commit}`; " + ", ".join(f"{k} {v}" for k, v in versions.items())
        + (f"; MLflow {MLFLOW[0]} (its own virtualenv, same scikit-learn stack)"
           if MLFLOW[0] else ""), "",
        "Model: the example pipeline's promoted iris:1 (a scikit-learn Pipeline: log-ratio"
        " features + a 100-tree random forest), the same fitted object in both servers"
        " (MLflow's copy exported from the registry's skops file). The load generator is a"
        " second process on the same 2 cores (httpx, asyncio). Medians over rounds. Requests/s"
        " and latency depend on what else the machine runs (see the load average); the"
        " servers' CPU time per request much less so. Both servers spend most of it in the"
        " forest's predict (~8 ms for one row here), so 1 and 100 records cost about the"
        " same.", "",
        "| server | records/request | requests/s | records/s | p50 ms | p99 ms |"
        " server CPU ms/request | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in servers:
        for n in (1, 100):
            runs = cells.get((s.name, n), [])
            if not runs:
                continue
            rps = statistics.median(r[0] / r[3] for r in runs)
            p50 = statistics.median(quantile(r[2], 0.5) for r in runs) * 1e3
            p99 = statistics.median(quantile(r[2], 0.99) for r in runs) * 1e3
            cpu = statistics.median(r[4] / max(r[0], 1) for r in runs) * 1e3
            errors = sum(r[1] for r in runs)
            lines.append(f"| `{s.name}` | {n} | {rps:.1f} | {rps * n:.0f} | {p50:.1f} |"
                         f" {p99:.1f} | {cpu:.2f} | {errors} |")
    if len(servers) > 1:
        lines.append("")
        for n in (1, 100):
            ours = [r[0] / r[3] for r in cells[(servers[0].name, n)]]
            theirs = [r[0] / r[3] for r in cells[(servers[1].name, n)]]
            cpu_ours = [r[4] / max(r[0], 1) for r in cells[(servers[0].name, n)]]
            cpu_theirs = [r[4] / max(r[0], 1) for r in cells[(servers[1].name, n)]]
            lines.append(f"- {n} record(s): mlops-nb serve answers"
                         f" {statistics.median(ours) / statistics.median(theirs):.2f}x the"
                         " requests per second of mlflow models serve, using"
                         f" {statistics.median(cpu_ours) / statistics.median(cpu_theirs):.2f}x"
                         " its CPU time per request.")
    if note:
        lines += ["", f"MLflow was not measured: {note}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
