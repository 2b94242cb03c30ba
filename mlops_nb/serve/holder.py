"""The model a service serves, and its switch to a newly promoted version without a restart.

The holder keeps one immutable `Served` (model, registry record, request schema). A request
takes the current `Served` once and uses it to the end, so a swap never changes the model
under a request in flight; a swap replaces the reference in one assignment. Following
`NAME@production`, a background thread polls the registry; a new production version is
loaded aside, and only a fully loaded one replaces the old. One that fails to load keeps the
old version serving, and the reason is kept for /health and /version. A pinned version
(`NAME:VERSION`) never changes. Models are loaded only from the registry, never from a path a
request names.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from mlops_nb.errors import MlopsNbError, RegistryError
from mlops_nb.guards.registry import ModelVersion, Registry, parse_ref, schema_of
from mlops_nb.guards.validation import schema as schema_mod
from mlops_nb.serve.schema import DEFAULT_MAX_ROWS, RequestSchema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    version: ModelVersion
    model: Any
    request: RequestSchema

    def describe(self) -> dict[str, Any]:
        info = self.version.info
        return {"model": self.version.name, "version": self.version.version,
                "stage": self.version.stage, "created": self.version.created,
                "sha256": info.get("sha256"), "metrics": self.version.metrics,
                "data": info.get("data", {}), "code": info.get("code", {}),
                "git_commit": info.get("git_commit"), "run_id": info.get("run_id")}


def load(registry: Registry, mv: ModelVersion, *, schema: schema_mod.Schema | None = None,
         max_rows: int = DEFAULT_MAX_ROWS) -> Served:
    """A servable version: its model (hash-checked, never a pickle) and its request schema."""
    data_schema = schema or schema_of(mv)
    if data_schema is None:
        raise RegistryError(f"{mv.ref} has no data schema recorded (schema.yaml): pass one"
                            " with --schema, or register it with"
                            " promote_if_better(..., reference=X_train)")
    model = registry.load_model(mv.name, mv.version)
    if not hasattr(model, "predict"):
        raise RegistryError(f"{mv.ref} is a {type(model).__name__}, which has no predict()")
    return Served(mv, model, RequestSchema(data_schema, max_rows))


class ModelHolder:
    """The served model of `ref` ('iris', 'iris@production' or 'iris:3')."""

    def __init__(self, registry: Registry, ref: str, *, schema: schema_mod.Schema | None = None,
                 max_rows: int = DEFAULT_MAX_ROWS, poll: float = 1.0) -> None:
        self.registry = registry
        self.name, which = parse_ref(ref)
        self.pinned = which not in (None, "production")
        self._which = which
        self._schema = schema
        self._max_rows = max_rows
        self.poll = poll
        self.swap_error: str | None = None
        self.current = load(registry, registry.get(self.name, which), schema=schema,
                            max_rows=max_rows)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Switch to the production version if it changed; True when it switched."""
        if self.pinned:
            return False
        try:
            mv = self.registry.production(self.name)
        except MlopsNbError as exc:
            self.swap_error = f"cannot read the registry: {exc}"
            log.warning("%s", self.swap_error)
            return False
        now = self.current.version
        if mv is None or mv.version == now.version:
            return False
        if self.swap_error and self.swap_error.startswith(f"{mv.ref} "):
            return False  # this version already failed to load; wait for another
        try:
            served = load(self.registry, mv, schema=self._schema, max_rows=self._max_rows)
        except Exception as exc:  # noqa: BLE001 - whatever breaks the load, keep serving
            self.swap_error = (f"{mv.ref} failed to load ({exc}); still serving {now.ref}")
            log.error("%s", self.swap_error)
            return False
        self.current = served
        self.swap_error = None
        log.warning("now serving %s (was %s)", mv.ref, now.ref)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            self.check()

    def start(self) -> None:
        if self.pinned or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="mlops-nb-model-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
