"""The serving log: every request's records and predictions, as JSON lines for `monitor`.

Rule: logging never blocks or fails a response. A request hands its records to a bounded
queue (`put_nowait`); one writer thread turns them into lines and appends them to
`<dir>/requests-<pid>.jsonl` (one file per server process, so workers never interleave
lines). When full, the queue drops the records and counts them (reported in /metrics) rather
than wait. A file that reaches `max_bytes` is renamed `requests-<pid>-<time>.jsonl` and a new
one started; the folder keeps at most `max_files` files besides those other live processes
write (the oldest go), so the log is bounded by about max_bytes x (max_files + processes).
Pruning removes only rotated files and the files of processes that are gone, never the file
another worker is writing (its records would be lost uncounted). Records that cannot be
written (a full disk) are dropped and counted like those of a full queue (`on_drop`, the
/metrics counter). The log holds request data: files are 0600 in folders of mode 0700.

One line per request, columnar: {"ts", "request", "model", "version", "rows", "x": {column:
[values]}, "prediction": [values]}; with `serve --shadow`, a shadow line per request too
(serve/shadow.py: it starts {"shadow":true, and has no "x").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic

log = logging.getLogger(__name__)

PATTERN = "requests-*.jsonl"
_ACTIVE = re.compile(r"requests-(\d+)\.jsonl")
_Item = tuple[dict[str, Any], list[dict[str, Any]], list[Any]]


class RequestLog:
    def __init__(self, folder: Path, *, max_bytes: int = 64 * 2**20, max_files: int = 20,
                 queue_size: int = 10_000,
                 on_drop: Callable[[int], None] | None = None) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.max_files = max(2, max_files)
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[_Item | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._file: Any = None
        self._path = folder / f"requests-{os.getpid()}.jsonl"
        self._on_drop = on_drop
        # requests queued and requests written (or dropped): feedback waits on these until
        # what was served before it is on disk (wait_written)
        self._settled = threading.Condition()
        self._submitted = self._done = 0

    def submit(self, entry: dict[str, Any], records: list[dict[str, Any]],
               predictions: list[Any]) -> bool:
        """Queue a request's records for writing; never waits (a full queue drops them,
        counted). `entry` holds the request's own fields (ts, request, model, version)."""
        with self._settled:
            self._submitted += 1
        try:
            self._queue.put_nowait((entry, records, predictions))
        except queue.Full:
            with self._settled:
                self._submitted -= 1
            self.dropped += len(records)
            return False
        return True

    def wait_written(self, timeout: float) -> bool:
        """Wait until every request queued before this call is written (or dropped); False
        if that took longer than `timeout` seconds. Requests queued meanwhile are not
        waited for, so a steady load never holds a caller."""
        with self._settled:
            target = self._submitted
            if self._thread is None:
                return self._done >= target
            return self._settled.wait_for(lambda: self._done >= target, timeout)

    def _settle(self, n: int) -> None:
        with self._settled:
            self._done += n
            self._settled.notify_all()

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self._on_drop is not None:
            self._on_drop(n)

    def start(self) -> None:
        private_dirs(self.folder)
        self._prune()
        self._thread = threading.Thread(target=self._run, name="mlops-nb-request-log",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._thread = None

    def flush(self) -> None:
        """Wait until every row queued so far is written (for tests and shutdown)."""
        self._queue.join()

    def _open(self) -> Any:
        if self._file is None:
            fd = atomic.open_append(self._path, mode=0o600)  # never a link, only our own file
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        return self._file

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    break
                batch = [item]
                while len(batch) < 256:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)  # seen after this batch is written
                        self._queue.task_done()
                        break
                    batch.append(nxt)
                    self._queue.task_done()
                try:
                    self._write(batch)
                except Exception:
                    self._drop(sum(len(entry[1]) for entry in batch))
                    raise
                finally:
                    self._settle(len(batch))
            except Exception as exc:  # noqa: BLE001 - a full disk must not stop serving
                log.error("request log %s: %s", self._path, exc)
            finally:
                self._queue.task_done()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, batch: list[_Item]) -> None:
        f = self._open()
        try:
            f.write("".join(line(*item) for item in batch))
            f.flush()
        except OSError:
            # what did not reach the disk is dropped (counted by the caller); a half line
            # left behind is skipped by the reader; start a fresh file object next time
            self._file = None
            with contextlib.suppress(OSError):
                f.close()
            raise
        self.written += sum(len(item[1]) for item in batch)
        if f.tell() >= self.max_bytes:
            f.close()
            self._file = None
            stamp = time.strftime("%Y%m%dT%H%M%S")
            rotated = self._path.with_name(f"{self._path.stem}-{stamp}-{time.time_ns()}.jsonl")
            os.replace(self._path, rotated)
            self._prune()

    def _prune(self) -> None:
        """Keep the newest max_files - 1 of the files no live process writes (with the file
        this process writes, max_files); never remove another live process's file."""
        candidates = [p for p in log_files(self.folder) if not _live_active(p)]
        for old in candidates[:-(self.max_files - 1)]:
            old.unlink(missing_ok=True)


def _live_active(path: Path) -> bool:
    """True for `requests-<pid>.jsonl` of a process still running (it may be writing it)."""
    match = _ACTIVE.fullmatch(path.name)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def private_dirs(folder: Path) -> None:
    """Make `folder` and its missing parents with mode 0700; an existing folder of this user
    that others may enter is closed to them (the log holds request data)."""
    missing = []
    here = folder
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for part in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o700)
    st = os.stat(folder)
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(folder, 0o700)


def line(entry: dict[str, Any], records: list[dict[str, Any]], predictions: list[Any]) -> str:
    """One request as a JSON line, its records as columns (a shadow prediction's line,
    serve/shadow.py, has no `x`: the records are in the served line of its request)."""
    if entry.get("shadow") is True:
        return json.dumps({**entry, "rows": len(records), "prediction": predictions},
                          separators=(",", ":"), default=str) + "\n"
    columns: dict[str, list[Any]] = {name: [] for name in (records[0] if records else {})}
    for rec in records:
        for name, value in rec.items():
            columns[name].append(value)
    return json.dumps({**entry, "rows": len(records), "x": columns, "prediction": predictions},
                      separators=(",", ":"), default=str) + "\n"


def log_files(folder: Path) -> list[Path]:
    """The log's files, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob(PATTERN):
        try:
            found.append((path.stat().st_mtime_ns, path.name, path))
        except FileNotFoundError:  # pruned by another worker meanwhile
            continue
    return [path for _, _, path in sorted(found)]
