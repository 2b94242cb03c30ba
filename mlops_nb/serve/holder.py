"""The model a service serves, and its switch to a newly promoted version without a restart.

The holder keeps one immutable `Served` (model, registry record, request schema). A request
takes the current `Served` once and uses it to the end, so a swap never changes the model
under a request in flight; a swap replaces the reference in one assignment. Following
`NAME@production` (or `NAME@staging`), a background thread polls the registry; a new version
of that stage is loaded aside, and only a fully loaded one replaces the old. Models are loaded
only from the registry, never from a path a request names.

Rules:
- only versions the registry made are served (`Registry.is_registered`: its record of what
  `register` wrote lists the name, number and model digest); a folder copied in with
  `stage: production` is ignored, and two recorded production versions are refused;
- the watcher survives every error (an unreadable version.json, descriptors run out, a
  version that fails to load): it keeps serving what it has, says why in `problem` (for
  /health and /version: no absolute paths) and tries again at the next poll;
- a production version demoted with none left is followed: the service stops predicting
  (503) until one is promoted, rather than serving an archived model;
- a pinned version (`NAME:VERSION`) never changes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from mlops_nb.errors import RegistryError
from mlops_nb.guards.registry import ModelVersion, Registry, parse_ref, schema_of
from mlops_nb.guards.validation import schema as schema_mod
from mlops_nb.serve.runtime import Runtime, make
from mlops_nb.serve.schema import DEFAULT_MAX_ROWS, RequestSchema

log = logging.getLogger(__name__)

RETRY_FAILED = 30.0  # seconds before a version that failed to load is tried again
_ABSOLUTE = re.compile(r"(?<![\w.~])/(?:[^\s'\"():,;/]+/)+([^\s'\"():,;/]*)")


@dataclass(frozen=True)
class Served:
    version: ModelVersion
    model: Any
    request: RequestSchema
    runtime: Runtime  # what computes the answers: scikit-learn or the checked ONNX export

    def describe(self) -> dict[str, Any]:
        info = self.version.info
        return {"model": self.version.name, "version": self.version.version,
                "runtime": self.runtime.name,
                "stage": self.version.stage, "created": self.version.created,
                "sha256": info.get("sha256"), "metrics": self.version.metrics,
                "data": info.get("data", {}), "code": info.get("code", {}),
                "git_commit": info.get("git_commit"), "run_id": info.get("run_id")}


def load(registry: Registry, mv: ModelVersion, *, schema: schema_mod.Schema | None = None,
         max_rows: int = DEFAULT_MAX_ROWS, runtime: str = "sklearn") -> Served:
    """A servable version: one the registry made, its model (hash-checked, never a pickle),
    its request schema and the runtime chosen for it (runtime.make)."""
    if not registry.is_registered(mv):
        raise RegistryError(f"{mv.ref} is not a version this registry's register() made (not"
                            " in its record: copied or planted in?); refusing to serve it."
                            " Register the model again")
    data_schema = schema or schema_of(mv)
    if data_schema is None:
        raise RegistryError(f"{mv.ref} has no data schema recorded (schema.yaml): pass one"
                            " with --schema, or register it with"
                            " promote_if_better(..., reference=X_train)")
    model = registry.load_model(mv.name, mv.version)
    if not hasattr(model, "predict"):
        raise RegistryError(f"{mv.ref} is a {type(model).__name__}, which has no predict()")
    return Served(mv, model, RequestSchema(data_schema, max_rows),
                  make(runtime, mv.ref, mv.path, model, data_schema))


def public(text: str, registry: Registry) -> str:
    """`text` without absolute paths (for /health): those in the registry become relative
    to it, any other is cut to its last part."""
    for root in {str(registry.root.absolute()), str(registry.root.resolve())}:
        text = text.replace(root.rstrip("/") + "/", "")
    return _ABSOLUTE.sub(lambda m: m.group(1) or "...", text)


class ModelHolder:
    """The served model of `ref` ('iris', 'iris@production' or 'iris:3')."""

    def __init__(self, registry: Registry, ref: str, *, schema: schema_mod.Schema | None = None,
                 max_rows: int = DEFAULT_MAX_ROWS, poll: float = 1.0,
                 runtime: str = "sklearn") -> None:
        self.registry = registry
        self.name, which = parse_ref(ref)
        self.pinned = which not in (None, "production", "staging")
        self.stage = which if which == "staging" else "production"  # the stage followed
        self._schema = schema
        self._max_rows = max_rows
        self.runtime = runtime  # the choice (auto, sklearn, onnx), made again for each version
        self.poll = poll
        self.problem: str | None = None  # why the service is degraded (no absolute paths)
        self.available = True  # False: no production version left, predictions refused
        self._failed: dict[str, tuple[float, str]] = {}  # ref -> (when, why) of failed loads
        if self.pinned:
            mv: ModelVersion | None = registry.get(self.name, which)
        else:
            mv, notes = self._production()
            if mv is None:
                raise RegistryError(f"model '{self.name}' has no {self.stage} version"
                                    + (f" ({'; '.join(notes)})" if notes else ""))
        assert mv is not None
        self.current = load(registry, mv, schema=schema, max_rows=max_rows, runtime=runtime)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._checking = threading.Lock()

    @property
    def swap_error(self) -> str | None:  # the name /health and /version have always used
        return self.problem

    def _production(self) -> tuple[ModelVersion | None, list[str]]:
        """The registry's one version in the followed stage (production or staging) among
        those it made, and notes on the versions claiming that stage that it did not make."""
        versions = self.registry.versions(self.name)
        ours: list[ModelVersion] = []
        planted: list[ModelVersion] = []
        for v in versions:
            (ours if self.registry.is_registered(v) else planted).append(v)
        notes = [f"ignored {v.ref}: marked {self.stage} but not made by this registry's"
                 " register() (copied or planted in)" for v in planted
                 if v.stage == self.stage]
        prod = [v for v in ours if v.stage == self.stage]
        if len(prod) > 1:
            raise RegistryError(f"'{self.name}' has {len(prod)} {self.stage} versions"
                                f" ({', '.join(v.ref for v in prod)}); promote one of them"
                                " again (`mlops-nb models promote`) to archive the others")
        return (prod[0] if prod else None), notes

    def _say(self, problems: list[str]) -> None:
        """Set `problem` (before logging: a request reads it meanwhile) and log a change."""
        text = "; ".join(problems) if problems else None
        before, self.problem = self.problem, public(text, self.registry) if text else None
        if self.problem != before:
            if text:
                log.error("%s", text)
            else:
                log.warning("%s: following the registry again", self.name)

    def check(self) -> bool:
        """Follow the registry once; True when a new version is now served. Never raises:
        whatever fails is kept in `problem` and tried again at the next check."""
        if self.pinned:
            return False
        with self._checking:
            try:
                return self._check()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive every error
                self._say([f"cannot follow the registry ({exc}); still serving"
                           f" {self.current.version.ref}"])
                return False

    def _check(self) -> bool:
        mv, problems = self._production()
        now = self.current.version
        if mv is None:
            try:
                fresh = self.registry.get(self.name, now.version)
            except RegistryError:
                fresh = dataclasses.replace(now, stage="removed")
            self.current = dataclasses.replace(self.current, version=fresh)
            self.available = False
            self._say([*problems, f"'{self.name}' has no {self.stage} version ({now.ref} is"
                                  f" {fresh.stage}): predictions are refused until one is"
                                  " promoted"])
            return False
        if mv.version == now.version and mv.info.get("sha256") == now.info.get("sha256"):
            self._say(problems)
            self.available = True
            if mv != now:  # stage, metrics or history changed: /version shows the record
                self.current = dataclasses.replace(self.current, version=mv)
            return False
        failed = self._failed.get(mv.ref)
        if failed and time.monotonic() - failed[0] < max(RETRY_FAILED, self.poll):
            self._say([*problems, failed[1]])
            return False
        try:
            served = load(self.registry, mv, schema=self._schema, max_rows=self._max_rows,
                          runtime=self.runtime)
        except Exception as exc:  # noqa: BLE001 - whatever breaks the load, keep serving
            why = f"{mv.ref} failed to load ({exc}); still serving {now.ref}"
            self._failed[mv.ref] = (time.monotonic(), why)
            self._say([*problems, why])
            return False
        self._failed.pop(mv.ref, None)
        self._say(problems)  # first: whoever sees the new version sees its state too
        self.available = True
        self.current = served
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
