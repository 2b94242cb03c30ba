"""Commands that widgets start: a subprocess watched from a thread, so the kernel never waits.

A widget's button starts `mlops-nb run`, `dvc exp run` and the like as a child process; a
daemon thread reads its output (stdout and stderr, merged: DVC reports progress on both) line
by line and calls back, then reports the exit code with the last line. Running the tool in
its own process, not in the kernel, keeps the kernel responsive, and `mlops-nb run`'s signal
handling works (signals need the main thread of a process).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def tool_env() -> dict[str, str]:
    """The kernel's environment, with this interpreter's folder first on PATH (dvc, mlops-nb
    and ploomber of the same installation) and no telemetry."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1")
    env.pop("MLOPS_NB_ROOT", None)
    return env


def mlops_command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mlops_nb", "-C", str(root), *args]


def dvc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


@dataclass(frozen=True)
class Finished:
    command: str
    code: int
    last_error: str  # a failure's last non-empty output line (tools end with the error)

    @property
    def ok(self) -> bool:
        return self.code == 0

    def message(self) -> str:
        """One readable line: what failed and why."""
        if self.ok:
            return f"{self.command}: done"
        why = self.last_error or f"exit code {self.code}"
        return f"{self.command} failed: {why}"


def run_sync(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a short command (exp show, apply, remove) and return its result."""
    return subprocess.run(list(argv), cwd=cwd, env=tool_env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def start(argv: Sequence[str], cwd: Path, *, label: str,
          on_line: Callable[[str], None] | None = None,
          on_exit: Callable[[Finished], None] | None = None) -> threading.Thread:
    """Start `argv` in `cwd` and watch it from a daemon thread; returns the thread."""

    def watch() -> None:
        try:
            proc = subprocess.Popen(list(argv), cwd=cwd, env=tool_env(), text=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, bufsize=1)
        except OSError as exc:
            result = Finished(label, 127, str(exc))
        else:
            last = ""
            for line in proc.stdout or []:
                if line.strip():
                    last = line.strip()
                if on_line:
                    _guarded(on_line, line.rstrip("\n"))
            code = proc.wait()
            result = Finished(label, code, last if code else "")
        if on_exit:
            _guarded(on_exit, result)

    thread = threading.Thread(target=watch, name=f"mlops-nb {label}", daemon=True)
    thread.start()
    return thread


def _guarded(fn: Callable, arg: object) -> None:
    try:
        fn(arg)
    except Exception:  # noqa: BLE001 - a broken callback must not kill the watcher
        log.warning("widget callback failed", exc_info=True)
