"""Where the warm worker listens, and who may talk to it.

Rules (the threat model in the README): the worker's socket is a file in a folder that only
its user can enter (`<tmp>/mlops-nb-<uid>`, mode 0700, owned by that user, never followed if
it is a symlink; anything else and no worker is used); the socket file itself is 0600; the
peer's uid (`SO_PEERCRED`) must be the worker's own, and the client checks the worker's the same
way before it hands over its stdin/stdout/stderr. A worker is keyed by the project, the
interpreter, the mlops_nb sources, the installed packages and the variables an interpreter
reads only when it starts (`PYTHONHASHSEED`, thread counts...): a step never runs in a
worker started with other ones. A request must arrive whole within RECEIVE_SECONDS of the
connection; the worker reads requests from any number of connections at once, so an idle or
slow connection never holds up another.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import stat
import struct
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

# the worker's answers other than an exit code, and what a stage sends when it was
# interrupted while its step runs (here, so a stage's side imports nothing of the worker's)
STALE, BUSY, REFUSED, UNCHECKED = "stale", "busy", "refused", "unchecked"
INTERRUPT = b"i"

RECEIVE_SECONDS = 5.0
MAX_REQUEST = 1 << 20
# read by an interpreter or a numeric library once, when the process starts: a forked step
# inherits the worker's values whatever its stage's environment says
START_PREFIXES = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "VECLIB_", "BLIS_",
                  "GOTO_", "KMP_", "MALLOC_")
START_NAMES = ("LD_PRELOAD", "LD_LIBRARY_PATH")
# set by scikit-learn's import (setdefault), in the worker as in any process that imports it
SET_BY_IMPORTS = ("KMP_INIT_AT_FORK", "KMP_DUPLICATE_LIB_OK")
_SUN_PATH_MAX = 107


def startup_env(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The variables of `env` that only take effect when an interpreter starts."""
    return {k: v for k, v in env.items()
            if (k.startswith(START_PREFIXES) or k in START_NAMES) and k not in SET_BY_IMPORTS}


def _signature() -> str:
    """What the warm modules depend on: mlops_nb's sources and the installed packages."""
    # the environment, not the name it was started by (a DVC stage runs `python`, Ploomber's
    # task process `python3`: both must find the same worker)
    parts = [sys.prefix, os.path.realpath(sys.executable), sys.version]
    pkg = Path(__file__).resolve().parent.parent  # all of mlops_nb, not only execute/
    for f in sorted(pkg.rglob("*.py")):
        parts.append(f"{f.relative_to(pkg).as_posix()}:{f.stat().st_mtime_ns}")
    for entry in sys.path:
        if entry.endswith("site-packages") and os.path.isdir(entry):
            parts.append(f"{entry}:{os.stat(entry).st_mtime_ns}")
    parts += [f"{k}={v}" for k, v in sorted(startup_env(os.environ).items())]
    return "\n".join(parts)


def socket_dir() -> Path | None:
    """This user's private folder for worker sockets, made if absent; None when it is not
    safe (a symlink, another owner, open to others, in a folder others may rename it in)."""
    folder = Path(tempfile.gettempdir()) / f"mlops-nb-{os.getuid()}"
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        log.warning("no warm worker: cannot make %s (%s)", folder, exc.strerror)
        return None
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        log.warning("no warm worker: %s is not a folder (a symlink?)", folder)
        return None
    try:
        st = os.fstat(fd)
        parent = os.stat(folder.parent)
    finally:
        os.close(fd)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        log.warning("no warm worker: %s must be owned by uid %d with mode 0700 (it is uid %d,"
                    " mode %o); remove it", folder, os.getuid(), st.st_uid,
                    stat.S_IMODE(st.st_mode))
        return None
    if parent.st_mode & 0o002 and not parent.st_mode & stat.S_ISVTX:
        log.warning("no warm worker: %s is writable by anyone without the sticky bit",
                    folder.parent)
        return None
    return folder


def socket_path(root: Path) -> Path | None:
    """The socket of `root`'s worker for this interpreter and environment (None: no worker)."""
    folder = socket_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(f"{root.resolve()}\n{_signature()}".encode()).hexdigest()[:24]
    path = folder / f"w-{digest}.sock"
    return path if len(os.fsencode(path)) <= _SUN_PATH_MAX else None


def serving(path: Path) -> bool:
    """Whether a worker holds the lock of the socket at `path` (probed without connecting)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's own lock, if it got one
    return False


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def connect(path: Path) -> socket.socket | None:
    """A connection to the worker at `path`, None if there is none; refused (None, logged)
    when the process listening there is not this user's."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(path))
        if peer_uid(sock) != os.getuid():
            log.warning("not using the worker at %s: it runs as another user", path)
            sock.close()
            return None
    except OSError:
        sock.close()
        return None
    return sock


class Listener:
    """The worker's listening socket, held with a lock file beside it so that one worker at a
    time serves a path; a socket left by a killed worker is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            raise
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                os.unlink(path)  # the lock is ours: whatever socket is there is dead
            except FileNotFoundError:
                pass
            umask = os.umask(0o177)
            try:
                self.sock.bind(os.fspath(path))
            finally:
                os.umask(umask)
            self.sock.listen(16)
            self.sock.setblocking(False)
        except OSError:
            self.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> socket.socket | None:
        """The next connection from this user (others are closed unread, and logged)."""
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        try:
            uid = peer_uid(conn)
        except OSError:
            uid = -1
        if uid != os.getuid():
            print(f"mlops-nb worker: refused a connection from uid {uid}", file=sys.stderr,
                  flush=True)
            conn.close()
            return None
        return conn

    def close_in_child(self) -> None:
        """In a forked step: let go of the sockets without touching the path or the lock."""
        self.sock.close()
        os.close(self._lock)

    def close(self) -> None:
        try:
            if os.path.samestat(os.stat(self.path), os.fstat(self.sock.fileno())):
                os.unlink(self.path)
        except OSError:
            pass
        self.sock.close()
        os.close(self._lock)


class Pending:
    """A connection whose request (one JSON line, with the stage's three descriptors) has
    not fully arrived; it gets RECEIVE_SECONDS."""

    def __init__(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        self.conn = conn
        self.deadline = time.monotonic() + RECEIVE_SECONDS
        self.data = b""
        self.fds: list[int] = []
        self.ended = False  # the peer closed, the request grew too big or a read failed

    def fileno(self) -> int:
        return self.conn.fileno()

    def receive(self) -> bool:
        """Read what arrived; True once the request is complete (or can never be)."""
        try:
            msg, fds, _, _ = socket.recv_fds(self.conn, 1 << 16, 3)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.ended = True
            return True
        self.fds.extend(fds)
        self.data += msg
        if not msg or len(self.data) > MAX_REQUEST:
            self.ended = True
        return self.ended or self.data.endswith(b"\n")

    def close_fds(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def close(self) -> None:
        self.close_fds()
        self.conn.close()


class Door:
    """The listener and the connections whose requests are still arriving."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.pending: list[Pending] = []

    def waitables(self) -> list[int]:
        return [self.listener.fileno(), *(p.fileno() for p in self.pending)]

    def timeout(self, longest: float) -> float:
        now = time.monotonic()
        return max(0.0, min([longest, *(p.deadline - now for p in self.pending)]))

    def arrived(self, ready: list[int]) -> list[Pending]:
        """Accept and read what `ready` (from select) says; the requests now complete. A
        connection past its deadline is closed."""
        if self.listener.fileno() in ready:
            while (conn := self.listener.accept()) is not None:
                self.pending.append(Pending(conn))
        complete, now = [], time.monotonic()
        for p in list(self.pending):
            if p.fileno() in ready and p.receive():
                self.pending.remove(p)
                complete.append(p)
            elif now > p.deadline:
                self.pending.remove(p)
                p.close()
        return complete

    def close(self, *, in_child: bool = False) -> None:
        for p in self.pending:
            p.close()
        if in_child:
            self.listener.close_in_child()
        else:
            self.listener.close()
