"""DVC's own files that a killed `dvc repro` can leave broken, and how to recover them.

The rule: what DVC writes is DVC's. It writes `dvc.lock` and `.dvc/tmp/rwlock` in place
(truncate, then write), not aside and renamed, so a `kill -9` of `dvc repro` at the wrong
moment can leave either empty or cut short, and every later `dvc` command then fails
(`dvc.lock validation failed`, `Unable to read RWLock-file`). This module only reads them
and says the recovery; it never repairs or deletes them itself. While a dvc command (or a
runner of ours) holds DVC's repository lock, the files may be mid-write: nothing is checked.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

LOCKFILE = "dvc.lock"
RWLOCK = ".dvc/tmp/rwlock"
REPO_LOCK = ".dvc/tmp/lock"
MAX_BYTES = 64 << 20  # a larger dvc.lock is not parsed (none is that big; a plant may be)


def problems(root: Path) -> list[str]:
    """What is wrong with the project's dvc.lock and .dvc/tmp/rwlock, each with the command
    that recovers it; [] when both are fine, absent, or a dvc command runs now."""
    if not (root / ".dvc").is_dir() or _locked(root / REPO_LOCK):
        return []
    out = []
    text = _read(root / LOCKFILE)
    if text is not None and (why := _bad_lockfile(text)):
        out.append(f"{LOCKFILE} {why}: a `dvc repro` was probably killed while DVC wrote it"
                   " (DVC writes it in place); every dvc command fails until it is restored:"
                   f" `git checkout {LOCKFILE}` (the last committed one; DVC reruns the stages"
                   f" that changed since), or `rm {LOCKFILE}` (the next `dvc repro` reruns"
                   " every stage)")
    text = _read(root / RWLOCK)
    if text is not None and (why := _bad_rwlock(text)):
        out.append(f"{RWLOCK} {why}: a dvc command was probably killed while DVC wrote it"
                   " (DVC writes it in place); every dvc command fails until it is removed:"
                   f" `rm {RWLOCK}` (it only records which running dvc commands use which"
                   " files; DVC makes a new one)")
    return out


def _read(path: Path) -> str | None:
    """The file's text; None when it is absent or not a regular file of at most MAX_BYTES
    (a symlink, a FIFO or a folder planted there is not opened for reading, and never
    blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(MAX_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _bad_lockfile(text: str) -> str:
    """Why DVC cannot read this dvc.lock ('' when it can, as far as its shape goes)."""
    if not text.strip():
        return "is empty"
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data: Any = YAML(typ="safe", pure=True).load(text)
    except (YAMLError, RecursionError, ValueError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        return f"is not valid YAML{where}"
    if not isinstance(data, dict) or "schema" not in data:
        return "is not a DVC lock file (no `schema:` mapping)"
    if not isinstance(data.get("stages", {}), dict):
        return "is not a DVC lock file (`stages:` is not a mapping)"
    return ""


def _bad_rwlock(text: str) -> str:
    """Why DVC cannot read this rwlock ('' when it can, as far as its shape goes)."""
    if not text.strip():
        return "is empty"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return "is not valid JSON"
    if not isinstance(data, dict) or not all(isinstance(data.get(k, {}), dict)
                                             for k in ("read", "write")):
        return "is not DVC's lock record (a JSON object of `read` and `write` mappings)"
    return ""


def _locked(path: Path) -> bool:
    """Whether some process holds a lock on this file now (Linux's /proc/locks; False where
    it cannot be told)."""
    try:
        info = os.stat(path, follow_symlinks=False)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    me = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    return any(me in line.split() for line in lines)
