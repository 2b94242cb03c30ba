"""The serving checks of a deploy: a real `mlops-nb serve NAME:V` on loopback, its smoke test
and a short load test.

The service runs in deploy's fresh environment with its serving log in a temporary folder
outside the project (the project's serving log, which monitoring reads, sees no test traffic).
The smoke test sends rows of the version's stored training sample and wants back, row for row,
the predictions the registered model gives in-process; the load test keeps a few clients
(http.client, one connection each) busy for a few seconds and measures every request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.ci import deployenv
from mlops_nb.errors import DeployRefused

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    port: int
    proc: subprocess.Popen[bytes]
    output: Path

    def tail(self) -> str:
        try:
            text = self.output.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-15:])


def _request(conn: http.client.HTTPConnection, method: str, path: str,
             body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


@contextlib.contextmanager
def service(python: Path, root: Path, ref: str, wait: float) -> Iterator[Service]:
    """`mlops-nb serve REF` on 127.0.0.1 (a free port), ready when /health answers 200."""
    scratch = Path(tempfile.mkdtemp(prefix="mlops-nb-deploy-"))
    port = free_port()
    output = scratch / "serve.out"
    cmd = [str(python), "-m", "mlops_nb", "--project", str(root), "serve", ref,
           "--host", "127.0.0.1", "--port", str(port), "--log-dir", str(scratch / "log")]
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=deployenv.process_env("MLOPS_NB_ROOT"),
                                stdout=out, stderr=subprocess.STDOUT)
    svc = Service(port, proc, output)
    try:
        deadline = time.monotonic() + wait
        while True:
            if proc.poll() is not None:
                raise DeployRefused(f"the prediction service exited ({proc.returncode}) before"
                                    f" it answered:\n{svc.tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                try:
                    if _request(conn, "GET", "/health")[0] == 200:
                        break
                finally:
                    conn.close()
            if time.monotonic() > deadline:
                raise DeployRefused(f"the prediction service did not answer /health within"
                                    f" {wait:.0f} s:\n{svc.tail()}")
            time.sleep(0.05)  # polling a condition (the port answering)
        yield svc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def plain(value: Any) -> Any:
    """A JSON value for a numpy/pandas scalar (NaN: null)."""
    if hasattr(value, "item") and callable(value.item):
        with contextlib.suppress(ValueError, TypeError):
            value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def records_of(frame: Any) -> list[dict[str, Any]]:
    return [{str(k): plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def smoke(svc: Service, records: list[dict[str, Any]], expected: list[Any]) -> list[str]:
    """Differences between the service's answers to `records` and `expected` (empty: same)."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
    try:
        status, body = _request(conn, "POST", "/predict",
                                json.dumps({"records": records}).encode())
    except (OSError, http.client.HTTPException) as exc:
        return [f"POST /predict failed: {exc}"]
    finally:
        conn.close()
    if status != 200:
        return [f"POST /predict answered {status}: {body[:500].decode(errors='replace')}"]
    try:
        got = json.loads(body)["predictions"]
    except (ValueError, KeyError, TypeError):
        return [f"POST /predict answered no predictions: {body[:300]!r}"]
    if len(got) != len(expected):
        return [f"{len(got)} predictions for {len(expected)} records"]
    return [f"record {i}: served {g!r}, the registered model gives {e!r}"
            for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]


@dataclass(frozen=True)
class LoadFigures:
    requests: int
    failed: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    first_error: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_test(svc: Service, records: list[dict[str, Any]], seconds: float,
              clients: int) -> LoadFigures:
    """`clients` threads POST /predict (a few records each) for `seconds`; every latency."""
    body = json.dumps({"records": records[:5]}).encode()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    status, answer = _request(conn, "POST", "/predict", body)
                    problem = "" if status == 200 else f"answered {status}: {answer[:200]!r}"
                except (OSError, http.client.HTTPException) as exc:
                    problem = f"failed: {exc}"
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
                took = time.perf_counter() - t0
                with lock:
                    latencies.append(took)
                    if problem:
                        errors.append(problem)
        finally:
            conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=client, name=f"deploy-load-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000, 2)

    return LoadFigures(len(latencies), len(errors), round(elapsed, 3),
                       round(len(latencies) / elapsed, 1) if elapsed else 0.0, pct(0.5),
                       pct(0.99), errors[0] if errors else "")
