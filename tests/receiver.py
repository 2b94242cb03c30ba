"""A webhook receiver for the alert tests: a real threaded HTTP server on 127.0.0.1 that keeps
every POST it gets and answers with the statuses it is told (200 once they run out)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd

SECRET_PATH = "/services/T0SECRET/B0SECRET/xYzS3cretT0kenPart"


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    url: str = ""
    got: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses to answer, in order

    def bodies(self, event: str | None = None) -> list[dict[str, Any]]:
        return [r.body for r in self.got if event is None or r.body["mlops_nb"]["event"] == event]


@contextmanager
def receiving(path: str = SECRET_PATH) -> Iterator[Receiver]:
    rec = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                rec.got.append(Received(time.monotonic(), self.path, dict(self.headers),
                                        json.loads(raw.decode("utf-8"))))
                status = rec.answers.pop(0) if rec.answers else 200
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"server_error")

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def iris_project(root: Path, versions: int = 1, promote: bool = True) -> Path:
    """A project of its own (params.yaml) whose registry holds `versions` iris models, with
    schema (ranges as limits) and training reference; the first promoted to production."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlops_nb.guards.registry import Registry, default_root
    from mlops_nb.guards.validation import schema as schema_mod

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text("{}\n")
    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in x.columns]
    reg = Registry(default_root(root))
    for i in range(versions):
        model = LogisticRegression(max_iter=200, C=1.0 + i).fit(x, y)
        mv = reg.register("iris", model, {"accuracy": 0.9 + i / 100},
                          schema=schema_mod.infer(x, ranges=True), reference=x)
        if promote and i == 0:
            reg.promote("iris", mv.version)
    return root


def iris_rows(shift: float = 0.0, n: int = 60) -> pd.DataFrame:
    from sklearn.datasets import load_iris

    x = load_iris(as_frame=True).data
    x.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in x.columns]
    rows = x.sample(n, random_state=1).reset_index(drop=True)
    return rows + shift if shift else rows


def write_serving_log(root: Path, frame: pd.DataFrame, version: int = 1) -> Path:
    """The serving log a server would write for `frame` (a fresh one each call)."""
    from mlops_nb.serve.reqlog import line

    folder = root / ".mlops_nb" / "serving" / "iris"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("requests-*.jsonl"):
        old.unlink()
    records = json.loads(frame.to_json(orient="records"))
    with open(folder / "requests-1.jsonl", "w") as f:
        for i in range(0, len(records), 15):
            part = records[i:i + 15]
            f.write(line({"ts": time.time(), "request": f"r{i}", "model": "iris",
                          "version": version}, part, [0] * len(part)))
    return folder
