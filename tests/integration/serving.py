"""Helpers for the serving tests: a trained example project, a real server on a free loopback
port, and raw HTTP for what httpx will not send (a 100 MB chunked body)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx

from tests.conftest import REPO, built_once, sh, tool_env


def trained_example(dest: Path, scratch: Path | None = None) -> Path:
    """The example project after `dvc repro` (one promoted model), committed, at `dest`.

    Built once per test session (built_once: the pytest-xdist workers share it), then copied
    (git, DVC cache, outputs and the registry come along), so each test module gets its own
    project cheaply. (`scratch` is no longer used.)"""
    shutil.copytree(built_once("trained-example", _train_example, "example"), dest,
                    symlinks=True)
    return dest


def _train_example(root: Path) -> None:
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    sh(["git", "init", "-q"], root)
    sh([sys.executable, "-m", "mlops_nb", "init", "."], root)
    sh([sys.executable, "-m", "mlops_nb", "compile"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "example"], root)
    sh(["dvc", "repro"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "trained"], root)


# one record of the example's iris features, as a client sends it
GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> bool:
    """Poll `condition` until true (or the deadline): waiting on a state, not on time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def registry_copy(root: Path, dest: Path) -> Path:
    """A copy of the project's registry (the example's: iris:1 in production) at `dest`,
    which a test may change (served with MLOPS_NB_REGISTRY=dest)."""
    shutil.copytree(root / ".mlops_nb/registry", dest)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`mlops-nb serve` in a subprocess on 127.0.0.1, ready when /health answers."""

    def __init__(self, root: Path, *args: str, token: str | None = None,
                 env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        cmd = [sys.executable, "-m", "mlops_nb", "serve", "--port", str(self.port), *args]
        if token:
            cmd += ["--token", token]
        self.proc = subprocess.Popen(cmd, cwd=root, env=tool_env(**(env or {})),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec_fn)
        # read the server's output as it comes: a server that logs (a library's warning per
        # request) must never block on a full pipe while a test runs
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [threading.Thread(target=_drain, args=(stream, into), daemon=True)
                         for stream, into in ((self.proc.stdout, self._out),
                                              (self.proc.stderr, self._err))]
        for reader in self._readers:
            reader.start()
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                out, err = self._collect()
                raise AssertionError(f"server exited {self.proc.returncode}:\n{out}\n{err}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("server did not answer /health within 120 s")
            time.sleep(0.05)  # polling a condition (the port), not synchronising on time

    def stop(self) -> tuple[str, str]:
        """SIGTERM (the served log is flushed on the way out); returns stdout, stderr."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self._collect()

    def _collect(self) -> tuple[str, str]:
        """The server's whole output, once it has exited."""
        self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=60)
        return "".join(self._out), "".join(self._err)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drain(stream, into: list[str]) -> None:  # type: ignore[no-untyped-def]
    for line in stream:
        into.append(line)
    stream.close()


@contextlib.contextmanager
def serving(root: Path, *args: str, **kw: object) -> Iterator[Server]:
    server = Server(root, *args, **kw)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def raw_post(port: int, path: str, headers: dict[str, str], body: Iterable[bytes],
             chunked: bool) -> tuple[int, bytes, int]:
    """POST `body` over a plain socket while reading the answer; returns the status, the
    response bytes and how many body bytes went out before the server stopped reading."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items())
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    sent = [0]

    def writer() -> None:
        try:
            sock.sendall((head + "\r\n").encode())
            for chunk in body:
                data = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk
                sock.sendall(data)
                sent[0] += len(chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server refused the rest and closed: what these tests expect

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    response = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    except OSError:
        pass
    thread.join(timeout=60)
    sock.close()
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0
    return status, response, sent[0]


def serve_cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`mlops-nb serve ...` expected to exit at once (a server that starts instead is
    stopped after 120 s, and the test fails)."""
    proc = subprocess.Popen([sys.executable, "-m", "mlops_nb", "serve", *args], cwd=root,
                            env=tool_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += "\n(still running after 120 s: killed)"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
