"""`mlops-nb serve`: check where the service may listen, build the app, run it on uvicorn.

Rule: the service binds 127.0.0.1 unless told otherwise, and binding any other address needs
a bearer token (`--token` or $MLOPS_NB_SERVE_TOKEN), so nothing reachable from another machine
ever answers without one. With several workers, each worker process builds its own app from
the same settings (passed through the environment) and loads the model itself.
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
    from mlops_nb.serve.holder import ModelHolder
    from mlops_nb.serve.reqlog import RequestLog

    root = Path(settings.root)
    schema = schema_mod.load(Path(settings.schema)) if settings.schema else None
    holder = ModelHolder(Registry(default_root(root)), settings.ref, schema=schema,
                         max_rows=settings.max_rows, poll=settings.poll)
    reqlog = RequestLog(log_dir(settings), max_bytes=settings.log_max_bytes,
                        max_files=settings.log_max_files)
    return create_app(holder, reqlog=reqlog, max_body=settings.max_body, token=token)


def _where(settings: ServeSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return (f"serving {settings.ref} on http://{host}:{settings.port}"
            f" ({settings.workers} worker(s); docs at /docs)")


def worker_app() -> Any:
    """The app of one worker process (uvicorn's factory when --workers > 1)."""
    settings = ServeSettings(**json.loads(os.environ[_SETTINGS_ENV]))
    return build(settings, os.environ.get(TOKEN_ENV) or None)


def serve(settings: ServeSettings, token: str | None = None,
          announce: Callable[[str], None] | None = None) -> None:
    """Run the service until interrupted; `announce` hears where, once the model is loaded."""
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    check_binding(settings.host, token)
    common: dict[str, Any] = dict(host=settings.host, port=settings.port, log_level="warning",
                                  access_log=False, timeout_graceful_shutdown=10)
    if settings.workers <= 1:
        app = build(settings, token)  # fails here, before binding, if the model cannot load
        if announce:
            announce(_where(settings))
        uvicorn.run(app, **common)
        return
    build(settings, token)  # the same early failure for a model that cannot load
    if announce:
        announce(_where(settings))
    os.environ[_SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    if token:
        os.environ[TOKEN_ENV] = token
    with tempfile.TemporaryDirectory(prefix="mlops-nb-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run("mlops_nb.serve.server:worker_app", factory=True,
                    workers=settings.workers, **common)
