"""The feedback log: ground truth for served predictions, as JSON lines beside the serving log.

One line per label, joined at submission with the prediction it is the truth of:
{"ts": when stored, "request": id, "index": record, "model", "version", "served": when
predicted, "prediction", "label", "source": "api" or "file"}. A line carries its prediction,
version and time, so online quality (monitor/quality.py) needs no serving log still on disk.

Files: `<dir>/feedback.jsonl`, appended only while holding `<dir>/feedback.lock` (flock), so
every writer (each server process, `mlops-nb feedback`) checks for duplicates against all
that is stored and appends whole submissions; a file that reaches `max_bytes` is renamed
`feedback-<time>-<ns>.jsonl` and the folder keeps the newest `max_files` feedback files
(bounded as the serving log is). Appends go through atomic.open_append (never a symlink,
only a regular file of this user); files are 0600 in a 0700 folder (labels are request data).

Reading (`Tail`, `parse`): files are opened without following symlinks, only regular files of
this user; a line is taken only in the exact shape written, anything else is skipped and
counted with its reason, never fatal.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.serve.reqlog import private_dirs

log = logging.getLogger(__name__)

ACTIVE = "feedback.jsonl"
PATTERN = "feedback*.jsonl"
LOCK = "feedback.lock"
MAX_LINE_BYTES = 64 * 2**20
MAX_ID = 128  # characters of a request id
_INT_LIMIT = 2**63
FileKey = tuple[int, int]  # (st_dev, st_ino): a file keeps it when rotated (renamed)


def valid_id(value: Any) -> bool:
    """A request id as the service hands them out: 1 to MAX_ID printable characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID and value.isprintable()


def scalar(value: Any) -> bool:
    """A JSON scalar a label or prediction may be: text, true/false, or a finite number."""
    if isinstance(value, bool) or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -_INT_LIMIT < value < _INT_LIMIT
    return isinstance(value, float) and math.isfinite(value)


def line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n"


class BadLine(ValueError):
    """A feedback line that is not one this module writes."""


def _no_constants(_name: str) -> Any:
    raise BadLine("a number that is not finite (NaN or Infinity)")


def parse(raw: bytes) -> dict[str, Any]:
    """One stored label, or BadLine saying what is wrong with the line."""
    try:
        rec = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise BadLine("nested too deeply") from None
    except BadLine:
        raise
    except ValueError:  # UnicodeDecodeError too
        raise BadLine("invalid JSON (a torn or damaged line)") from None
    if not isinstance(rec, dict):
        raise BadLine("not a JSON object")
    for key in ("ts", "served"):
        v = rec.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise BadLine(f"'{key}' is not a time (a number of seconds)")
    version, index = rec.get("version"), rec.get("index")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < _INT_LIMIT:
        raise BadLine("'version' is not a version number")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < _INT_LIMIT:
        raise BadLine("'index' is not a record index")
    if not valid_id(rec.get("request")):
        raise BadLine("'request' is not a request id")
    if not scalar(rec.get("label")) or not (rec.get("prediction") is None
                                            or scalar(rec.get("prediction"))):
        raise BadLine("'label' or 'prediction' is not a single value")
    return rec


@dataclass
class Skipped:
    """Lines and files not read: how many, why, and where the first ones are."""

    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def add(self, name: str, lineno: int, reason: str) -> None:
        self.count += 1
        self.reasons[reason] += 1
        if len(self.first) < 5:
            self.first.append({"file": name, "line": lineno, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "reasons": dict(self.reasons.most_common()),
                "first": list(self.first), "skipped_files": list(self.files)}


def open_read(path: Path) -> tuple[int | None, str]:
    """A log file opened for reading (never through a symlink, never blocking on a FIFO,
    only a regular file of this user), or None and why not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, "removed while reading (rotated)"
    except OSError as exc:
        return None, "a symlink, never followed" if exc.errno == errno.ELOOP else \
            (exc.strerror or str(exc))
    st = os.fstat(fd)
    why = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
        f"owned by another user (uid {st.st_uid})" if st.st_uid != os.geteuid() else ""
    if why:
        os.close(fd)
        return None, why
    return fd, ""


def files(folder: Path, pattern: str) -> list[Path]:
    """The files of `folder` matching `pattern`, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            found.append((path.lstat().st_mtime_ns, path.name, path))
    return [path for _, _, path in sorted(found)]


class Tail:
    """Reads the complete lines added to a folder's log files since the last call; a file
    keeps its place when rotated (renamed), and a file gone is forgotten (`gone`)."""

    def __init__(self, folder: Path, pattern: str) -> None:
        self.folder = folder
        self.pattern = pattern
        self.offsets: dict[FileKey, int] = {}
        self.linenos: dict[FileKey, int] = {}
        self.paths: dict[FileKey, Path] = {}
        self.gone: list[FileKey] = []
        self.skipped = Skipped()

    def new_lines(self) -> Iterator[tuple[FileKey, int, bytes | None]]:
        """(file, offset, bytes) of each new complete line; bytes None for a line over
        MAX_LINE_BYTES (read past, never held). `linenos[file]` is the line's number."""
        seen: dict[FileKey, Path] = {}
        self.skipped.files = []
        for path in files(self.folder, self.pattern):
            fd, why = open_read(path)
            if fd is None:
                self.skipped.files.append(f"{path.name}: {why}")
                continue
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_dev, st.st_ino)
                seen[key] = self.paths[key] = path
                start = self.offsets.get(key, 0)
                if start > st.st_size:  # replaced or truncated: read it again
                    start = self.linenos[key] = 0
                f.seek(start)
                pos = start
                while True:
                    raw = f.readline(MAX_LINE_BYTES + 1)
                    if not raw.endswith(b"\n"):
                        if len(raw) <= MAX_LINE_BYTES:
                            break  # a line still being written: read it next time
                        while raw and not raw.endswith(b"\n"):
                            raw = f.readline(MAX_LINE_BYTES)
                        if not raw:
                            break
                        self.linenos[key] = self.linenos.get(key, 0) + 1
                        yield key, pos, None
                    else:
                        self.linenos[key] = self.linenos.get(key, 0) + 1
                        yield key, pos, raw
                    pos = f.tell()
                self.offsets[key] = pos
        self.gone = [k for k in self.offsets if k not in seen]
        for key in self.gone:
            del self.offsets[key]
            self.linenos.pop(key, None)
        self.paths = seen

    def read_at(self, key: FileKey, offset: int) -> bytes | None:
        """The line at `offset` of file `key`, if that file is still there."""
        path = self.paths.get(key)
        if path is None:
            return None
        fd, _ = open_read(path)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != key:
                return None
            f.seek(offset)
            raw = f.readline(MAX_LINE_BYTES + 1)
        return raw if raw.endswith(b"\n") else None


def append(folder: Path, text: str, *, max_bytes: int, max_files: int) -> None:
    """Append `text` (whole lines) to the active file, all or nothing: on a failed write the
    file is cut back to where it was. Rotates and prunes past `max_bytes`. The caller holds
    the folder's lock (`locked`)."""
    path = folder / ACTIVE
    private_dirs(folder)
    fd = atomic.open_append(path, mode=0o600)
    try:
        before = os.fstat(fd).st_size
        data = text.encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            raise
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size >= max_bytes:
        rotated = folder / f"feedback-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns()}.jsonl"
        os.replace(path, rotated)
        for old in files(folder, PATTERN)[:-max(1, max_files)]:
            # the log is bounded: its oldest labels go, said in the service's log
            log.warning("feedback log: removed %s, the oldest of more than %d files"
                        " (--log-max-files)", old.name, max_files)
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """The folder's feedback lock, held exclusively (every writer of feedback takes it)."""
    import fcntl

    private_dirs(folder)
    fd = atomic.open_lock(folder / LOCK, mode=0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read(folder: Path, *, since: float | None = None) -> tuple[list[dict[str, Any]], Skipped]:
    """Every stored label (served after `since`, a UNIX time, if given), and what was
    skipped."""
    tail = Tail(folder, PATTERN)
    labels = []
    for key, _, raw in tail.new_lines():
        where = (tail.paths[key].name, tail.linenos[key])
        if raw is None:
            tail.skipped.add(*where, f"longer than {MAX_LINE_BYTES:,} bytes")
            continue
        if not raw.strip():
            continue
        try:
            rec = parse(raw)
        except BadLine as exc:
            tail.skipped.add(*where, str(exc))
            continue
        if since is None or rec["served"] >= since:
            labels.append(rec)
    return labels, tail.skipped

