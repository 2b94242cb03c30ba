"""Load benchmark of `mlops-nb serve` against MLflow, BentoML and MLServer on the same model.

    python bench/serve_bench.py [--seconds S] [--rounds R] [--connections 8,64]
                                [--sizes 1,100] [--only NAME,...] [--quick] [--out FILE]

Trains the example pipeline in a temporary project (its promoted model is iris:1, a
scikit-learn Pipeline), exports it to ONNX (`mlops-nb export onnx`, timed), and starts, one
worker each on loopback: `mlops-nb serve --runtime sklearn`, `mlops-nb serve --runtime onnx`,
`mlflow models serve`, BentoML and MLServer (serve_others.py; each from a venv of its own with
the same scikit-learn, serve_envs.py). Every server's predictions on the same 100 records are
checked equal before timing. A load generator in this process (asyncio, raw HTTP/1.1
keep-alive connections: a few microseconds per request, so the client is not what is
measured) drives each server with C connections for S seconds, for each request size; the
cells take turns round by round (order rotated), so drift in machine speed spreads over all.
Reported per cell, medians over rounds: requests/s, records/s, p50/p99 latency, the server's
CPU time per request (user+system of its processes from /proc/PID/stat: what other load
slows but does not inflate), and errors (non-200 answers and broken connections).
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sections
import serve_envs
import serve_others
from serve_others import Spec

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore",
       "MLFLOW_TRACKING_URI": "", "GIT_PYTHON_REFRESH": "quiet"}
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def sh(cmd: list[str], cwd: Path, log: Path) -> float:
    """Run `cmd`; its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=ENV,
                              stdin=subprocess.DEVNULL).returncode
    if code:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}; see {log}")
    return time.perf_counter() - start


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


def export_onnx(root: Path, log: Path, times: int = 3) -> list[tuple[float, float, float]]:
    """`mlops-nb export onnx iris` `times` times: (whole command s, its CPU s (user +
    system), export + check s as the command measured it)."""
    import resource

    out = []
    for _ in range(times):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = sh([sys.executable, "-m", "mlops_nb", "export", "onnx", "iris", "-o",
                   str(root)], root, log)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        rec = json.loads(next((root / ".mlops_nb/registry/iris").glob("v1/onnx.json"))
                         .read_text())
        out.append((wall, cpu, float(rec["seconds"])))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, spec: Spec, port: int, log: Path) -> None:
        self.spec, self.name, self.port = spec, spec.name, port
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(spec.cmd, cwd=spec.cwd, env=spec.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}; see {log}")
            try:
                if httpx.get(self.url + spec.health, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling the port of a starting server
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {spec.health} in 300 s; see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system, /proc/PID/stat) used so far by process `pid` and its
    descendants (BentoML's workers run in a session of their own), plus what its reaped
    children used."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            stats[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
    children: dict[int, list[int]] = {}
    for p, fields in stats.items():  # fields after the name: state ppid pgrp ...
        children.setdefault(int(fields[1]), []).append(p)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        fields = stats.get(p)
        if fields is None:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        todo += children.get(p, [])
    return total / tick


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response: status, body, whether the server keeps the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, keep = 0, False, True
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif key == b"connection" and b"close" in value.lower():
            keep = False
    if not chunked:
        return status, await reader.readexactly(length), keep
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body, keep
        body += chunk[:-2]


async def drive(server: Server, body: bytes, seconds: float, connections: int
                ) -> tuple[int, int, list[float], float, float]:
    """(requests answered 200, errors, latencies, elapsed s, server CPU s) over `seconds`."""
    request = (f"POST {server.spec.predict} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    latencies: list[float] = []
    errors = [0]
    start = asyncio.Event()
    end = [0.0]
    ready = [0]

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(2):  # warm the connection and the server
            writer.write(request)
            await _answer(reader)
        ready[0] += 1
        await start.wait()
        while time.perf_counter() < end[0]:
            t0 = time.perf_counter()
            try:
                writer.write(request)
                status, _, keep = await _answer(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status, keep = 0, False
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[0] += 1
            if not keep:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(connections)]
    while ready[0] < connections:
        await asyncio.sleep(0.01)  # until every connection is open and warm
        if any(t.done() and t.exception() for t in tasks):
            raise RuntimeError(f"{server.name}: {next(t.exception() for t in tasks if t.done())}")
    cpu = tree_cpu(server.proc.pid)
    t_start = time.perf_counter()
    end[0] = t_start + seconds
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_start
    return len(latencies), errors[0], latencies, elapsed, tree_cpu(server.proc.pid) - cpu


def payloads(sizes: list[int]) -> dict[int, list[dict]]:
    from sklearn.datasets import load_iris

    rows = [dict(zip(COLUMNS, map(float, r), strict=True)) for r in load_iris().data]
    return {n: (rows * (n // len(rows) + 1))[:n] for n in sizes}


def same_predictions(servers: list[Server], records: list[dict]) -> None:
    import httpx

    answers = {}
    for s in servers:
        r = httpx.post(s.url + s.spec.predict, content=s.spec.body(records),
                       headers={"content-type": "application/json"}, timeout=60)
        r.raise_for_status()
        answers[s.name] = s.spec.predictions(r.json())
    first = next(iter(answers.values()))
    if any(a != first for a in answers.values()):
        raise RuntimeError(f"the servers disagree on the same records: {answers}")


def start_servers(root: Path, work: Path, log: Path, only: set[str] | None
                  ) -> tuple[list[Server], list[str], dict[str, dict[str, str]]]:
    """The servers that could be started, notes on those that could not, their versions."""
    servers: list[Server] = []
    notes: list[str] = []
    versions: dict[str, dict[str, str]] = {}
    for runtime in ("sklearn", "onnx"):
        name = f"mlops-nb serve --runtime {runtime}"
        if only and runtime not in only:
            continue
        port = free_port()
        servers.append(Server(Spec(name, [
            sys.executable, "-m", "mlops_nb", "serve", "--runtime", runtime, "--port",
            str(port), "--log-dir", str(work / f"serving-log-{runtime}")], root, "/health",
            "/predict", "mlops", ENV), port, log))
    skops_file = next((root / ".mlops_nb/registry/iris/v1/model").glob("*.skops"))
    for other in ("mlflow", "bentoml", "mlserver"):
        if only and other not in only:
            continue
        py, why = serve_envs.python_of(other, log)
        if py is None:
            notes.append(why)
            continue
        versions[other] = serve_envs.versions(py, [*serve_envs.SERVERS[other], "scikit-learn"])
        port = free_port()
        try:
            if other == "mlflow":
                spec = serve_others.mlflow(py, skops_file, work, port, ENV)
            elif other == "bentoml":
                spec = serve_others.bentoml(py, skops_file, work, port, ENV, COLUMNS)
            else:
                spec = serve_others.mlserver(py, skops_file, work, port, ENV, free_port(),
                                             free_port())
            servers.append(Server(spec, port, log))
        except RuntimeError as exc:
            notes.append(f"{other} could not be started: {exc}")
    return servers, notes, versions


def main(argv: list[str] | None = None) -> int:
    import report_serve

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per cell and round (8)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    p.add_argument("--connections", default="8,64", help="concurrent connections (8,64)")
    p.add_argument("--sizes", default="1,100", help="records per request (1,100)")
    p.add_argument("--only", help="servers: sklearn,onnx,mlflow,bentoml,mlserver (all)")
    p.add_argument("--quick", action="store_true", help="2 s, 1 round, RESULTS.md untouched")
    p.add_argument("--out", type=Path, help="default bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    out = None if args.quick and not args.out else (args.out or BENCH / "RESULTS.md")
    command = "python bench/serve_bench.py" + (" " + " ".join(sys.argv[1:])
                                               if argv is None and sys.argv[1:] else "")
    connections = [int(c) for c in args.connections.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]
    only = set(args.only.split(",")) if args.only else None
    work = Path(tempfile.mkdtemp(prefix="mlops-nb-serve-bench-"))
    log = work / "bench.log"
    print(f"working in {work} (log: {log})", flush=True)
    started = time.time()
    loads = [os.getloadavg()[0]]
    servers: list[Server] = []
    try:
        root = build_project(work, log)
        exports = export_onnx(root, log)
        print(f"ONNX export + check: {exports}", flush=True)
        servers, notes, versions = start_servers(root, work, log, only)
        bodies = payloads(sizes)
        same_predictions(servers, payloads([100])[100])
        cells: dict[tuple[str, int, int], list[tuple]] = {}
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1}/{args.rounds} (load {loads[-1]:.1f})", flush=True)
            order = [(s, n, c) for s in servers for n in sizes for c in connections]
            order = order[r % len(order):] + order[:r % len(order)]
            for s, n, c in order:
                res = asyncio.run(drive(s, s.spec.body(bodies[n]), args.seconds, c))
                cells.setdefault((s.name, n, c), []).append(res)
                print(f"  {s.name:<32} {n:>3} rec {c:>2} conn: {res[0] / res[3]:8.1f} req/s,"
                      f" p50 {report_serve.quantile(res[2], 0.5) * 1e3:6.1f} ms,"
                      f" p99 {report_serve.quantile(res[2], 0.99) * 1e3:6.1f} ms, CPU"
                      f" {res[4] / max(res[0], 1) * 1e3:5.2f} ms/req, errors {res[1]}",
                      flush=True)
        loads.append(os.getloadavg()[0])
        text = report_serve.render(
            cells, [s.name for s in servers], sizes, connections, exports, notes, versions,
            command=command, rounds=args.rounds, seconds=args.seconds,
            minutes=(time.time() - started) / 60, loads=loads)
        print(text)
        if out:
            sections.write_section(out, "serve-bench", text)
            print(f"wrote its section of {out}")
        return 0
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


def environment() -> str:
    versions = {p: md.version(p) for p in ("scikit-learn", "numpy", "pandas", "onnxruntime",
                                           "fastapi", "uvicorn", "pydantic")}
    return (f"{os.cpu_count()} logical cores, Python {platform.python_version()}; mlops_nb's"
            " venv: " + ", ".join(f"{k} {v}" for k, v in versions.items()))


if __name__ == "__main__":
    sys.exit(main())
