"""`mlops-nb serve`: check where the service may listen, build the app, run it on uvicorn.

Rule: the service binds 127.0.0.1 unless told otherwise, and binding any other address needs
a bearer token (`--token-file`, $MLOPS_NB_SERVE_TOKEN or `--token`), so nothing reachable from
another machine ever answers without one. A token file must be readable by its owner only.
With several workers, each worker process builds its own app from the same settings (passed
through the environment) and loads the model itself.

Connections: keep-alive `keep_alive` seconds, a request head within `header_timeout`, and at
most `max_connections` open per process (by default the descriptor limit less a reserve for
the model, the logs and the registry watcher), see conn.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import UsageError

log = logging.getLogger(__name__)

TOKEN_ENV = "MLOPS_NB_SERVE_TOKEN"
_SETTINGS_ENV = "MLOPS_NB_SERVE_SETTINGS"
MIN_TOKEN = 16


@dataclass(frozen=True)
class ServeSettings:
    root: str
    ref: str = ""  # NAME, NAME@production or NAME:VERSION
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    schema: str | None = None  # a schema YAML instead of the one stored with the model
    max_rows: int = 1000
    max_body: int = 2**20
    poll: float = 1.0  # seconds between checks of the registry for a new production version
    log_dir: str | None = None  # default <project>/.mlops_nb/serving/<name>
    log_max_bytes: int = 64 * 2**20
    log_max_files: int = 20
    allowed_hosts: tuple[str, ...] | None = None  # Host names answered; None: see hosts()
    header_timeout: float = 10.0  # seconds for a request head to arrive
    keep_alive: float = 5.0  # seconds an idle connection is kept between requests
    max_connections: int | None = None  # None: below the descriptor limit (connection_limit)
    shadow: str | None = None  # a second version predicting off the request path (shadow.py)
    shadow_queue: int = 1000  # requests waiting for the shadow; more are dropped, counted
    runtime: str = "auto"  # auto, sklearn or onnx (runtime.py)
    batch_max_records: int = 1000  # records in one model call (batching.py)
    batch_max_wait_ms: float = 2.0  # longest a request waits for others to join its batch


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token (and a short token anywhere)."""
    if token is not None and len(token) < MIN_TOKEN:
        raise UsageError(f"the bearer token must be at least {MIN_TOKEN} characters")
    if not is_loopback(host) and not token:
        raise UsageError(f"binding {host} makes the service reachable from other machines:"
                         f" set a bearer token with --token or ${TOKEN_ENV}")


def read_token_file(path: Path) -> str:
    """The token in `path`; refused when others may read it, or it is not a plain file."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"--token-file {path}: cannot open it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"--token-file {path}: not a plain file")
        if st.st_mode & 0o077:
            raise UsageError(f"--token-file {path}: mode {stat.S_IMODE(st.st_mode):04o} lets"
                             f" other users read it; run `chmod 600 {path}`")
        data = f.read(4097)
    if len(data) > 4096:
        raise UsageError(f"--token-file {path}: over 4096 bytes; put only the token in it")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"--token-file {path}: not UTF-8 text") from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError(f"--token-file {path}: the token must be one line of printable"
                         " characters without spaces")
    return token


def hosts(settings: ServeSettings) -> tuple[str, ...]:
    """The Host names the service answers: the loopback names, the bound address when it is
    a specific one, and those given (`*`: any); any name when bound to every interface
    without names given (a token guards it then)."""
    from mlops_nb.serve.guard import LOOPBACK_HOSTS

    if settings.host in ("0.0.0.0", "::", "") and not settings.allowed_hosts:
        return ("*",)
    names = (*LOOPBACK_HOSTS, settings.host.strip("[]").lower(), *(settings.allowed_hosts or ()))
    return tuple(dict.fromkeys(names))


def connection_limit(settings: ServeSettings) -> int:
    """Connections one process keeps open: as set, or the descriptor limit less a reserve
    (64, or an eighth of the limit if more) for everything else the process opens."""
    import resource

    if settings.max_connections:
        return settings.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 65536:
        soft = 65536
    return max(8, soft - max(64, soft // 8))


def log_dir(settings: ServeSettings) -> Path:
    from mlops_nb.guards.registry import parse_ref

    if settings.log_dir:
        return Path(settings.log_dir)
    folder = Path(settings.root) / ".mlops_nb" / "serving" / parse_ref(settings.ref)[0]
    atomic.refuse_symlinks(folder, root=Path(settings.root))  # a planted link takes the log
    return folder


def build(settings: ServeSettings, token: str | None) -> Any:
    """The ASGI app for these settings (loads the model; raises if it cannot)."""
    from mlops_nb.guards.registry import Registry, default_root
    from mlops_nb.guards.validation import schema as schema_mod
    from mlops_nb.serve.app import create_app
    from mlops_nb.serve.batching import BatchSettings
    from mlops_nb.serve.feedback import FeedbackStore, registry_target
    from mlops_nb.serve.holder import ModelHolder
    from mlops_nb.serve.metrics import Metrics
    from mlops_nb.serve.reqlog import RequestLog

    root = Path(settings.root)
    schema = schema_mod.load(Path(settings.schema)) if settings.schema else None
    registry = Registry(default_root(root))
    holder = ModelHolder(registry, settings.ref, schema=schema,
                         max_rows=settings.max_rows, poll=settings.poll,
                         runtime=settings.runtime)
    metrics = Metrics()
    folder = log_dir(settings)
    reqlog = RequestLog(folder, max_bytes=settings.log_max_bytes,
                        max_files=settings.log_max_files, on_drop=metrics.log_dropped.inc)
    shadow = None
    if settings.shadow:
        from mlops_nb.serve.shadow import Shadow, check_ref

        shadow = Shadow(registry, check_ref(settings.ref, settings.shadow), reqlog,
                        metrics_registry=metrics.registry, queue_size=settings.shadow_queue,
                        max_rows=settings.max_rows, poll=settings.poll)
    labels = FeedbackStore(folder, holder.name,
                           registry_target(registry, holder.name, lambda: holder.current),
                           max_bytes=settings.log_max_bytes,
                           max_files=settings.log_max_files, reqlog=reqlog,
                           settle=shadow.wait_settled if shadow else None)
    return create_app(holder, reqlog=reqlog, metrics=metrics, max_body=settings.max_body,
                      token=token, allowed_hosts=hosts(settings), feedback=labels,
                      shadow=shadow,
                      batching=BatchSettings(settings.batch_max_records,
                                             settings.batch_max_wait_ms))


def _where(settings: ServeSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return (f"serving {settings.ref} on http://{host}:{settings.port}"
            f" ({settings.workers} worker(s); docs at /docs)")


def worker_app() -> Any:
    """The app of one worker process (uvicorn's factory when --workers > 1)."""
    data = json.loads(os.environ[_SETTINGS_ENV])
    if data.get("allowed_hosts") is not None:
        data["allowed_hosts"] = tuple(data["allowed_hosts"])
    settings = ServeSettings(**data)
    return build(settings, os.environ.get(TOKEN_ENV) or None)


def serve(settings: ServeSettings, token: str | None = None,
          announce: Callable[[str], None] | None = None) -> None:
    """Run the service until interrupted; `announce` hears where, once the model is loaded."""
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    check_binding(settings.host, token)
    common: dict[str, Any] = dict(
        host=settings.host, port=settings.port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=10, timeout_keep_alive=settings.keep_alive,
        http="mlops_nb.serve.conn:GuardedProtocol")

    def configured(config: Any) -> Any:
        config.mlops_header_timeout = settings.header_timeout
        config.mlops_max_connections = connection_limit(settings)
        return config

    if settings.workers <= 1:
        app = build(settings, token)  # fails here, before binding, if the model cannot load
        if announce:
            announce(_where(settings))
        server = uvicorn.Server(configured(uvicorn.Config(app, **common)))
        try:
            server.run()
        except KeyboardInterrupt:
            return
        if not server.started:
            raise UsageError(f"the service could not start on {settings.host}:{settings.port}"
                             " (see the message above)")
        return
    build(settings, token)  # the same early failure for a model that cannot load
    if announce:
        announce(_where(settings))
    os.environ[_SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    if token:
        os.environ[TOKEN_ENV] = token
    with tempfile.TemporaryDirectory(prefix="mlops-nb-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        from uvicorn.supervisors import Multiprocess

        config = configured(uvicorn.Config("mlops_nb.serve.server:worker_app", factory=True,
                                           workers=settings.workers, **common))
        Multiprocess(config, sockets=[config.bind_socket()]).run()
