"""`deploy`: move a registered version to `staging` or `production` only after it proved
it can serve.

Rule: the checks run in this order and the first failure stops the deploy with the version's
stage unchanged (DeployRefused, exit 23): (1) the version loads, as serve loads it, in a
fresh environment made from the project's lock (deployenv.py) and predicts its stored
training sample; (2) that process's peak memory and load time are within the limits of
params.yaml (`mlops_nb: {deploy: {...}}`, paramcheck.DEPLOY_LIMITS); (3) `mlops-nb serve
NAME:V`, started from that environment on loopback, answers rows of the training sample with
exactly the predictions the registered model gives in this process (smoke test); (4) a short
load test meets the p99 latency and throughput floors. Then the stage moves; a service
following `NAME@staging` or `NAME@production` swaps to it. `production` is reached only from
`staging` unless forced (UsageError, exit 2, before any check). Every deploy whose checks ran,
passed or refused, is a lineage event (`deploy`) with its checks and figures.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb.ci import deployenv, deployserve
from mlops_nb.errors import DeployRefused, MlopsNbError, UsageError
from mlops_nb.guards.lineage import LineageStore, default_path
from mlops_nb.guards.registry import ModelVersion, Registry, default_root, parse_ref
from mlops_nb.pipeline import paramcheck

log = logging.getLogger(__name__)

TARGETS = ("staging", "production")
SMOKE_ROWS = 20


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeployResult:
    ref: str
    to: str
    checks: list[Check] = field(default_factory=list)
    moved: bool = False
    event: int = 0

    @property
    def failed(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "to": self.to, "moved": self.moved,
                "checks": [c.__dict__ for c in self.checks]}


def limits(root: Path) -> dict[str, float]:
    """deploy's limits: params.yaml's `mlops_nb.deploy` over the defaults (checked)."""
    data = paramcheck.check(root / "params.yaml", None)
    chosen = ((data.get(paramcheck.SETTINGS) or {}).get("deploy") or {})
    return {k: chosen.get(k, v) for k, v in paramcheck.DEPLOY_LIMITS.items()}


def resolve(registry: Registry, ref: str) -> ModelVersion:
    """NAME (its latest version), NAME:V or NAME@STAGE."""
    name, which = parse_ref(ref)
    return registry.get(name, which or "latest")


def _probe(python: Path, registry: Registry, mv: ModelVersion, wait: float) -> Check:
    """Run deploy_probe in the fresh environment; reaped with wait4 for its own peak RSS."""
    import tempfile
    import threading

    cmd = [str(python), "-m", "mlops_nb.ci.deploy_probe", str(registry.root), mv.name,
           str(mv.version), str(SMOKE_ROWS)]
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=deployenv.process_env(), stdout=out, stderr=err)
        killer = threading.Timer(wait + 60, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    seconds = round(time.monotonic() - t0, 3)
    figures: dict[str, Any] = {"peak_memory_mb": round(usage.ru_maxrss / 1024, 1),
                               "process_seconds": seconds}
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        return Check("fresh environment", False,
                     f"{mv.ref} does not load in an environment made from the project's lock"
                     f" (exit {proc.returncode}):\n{tail}", figures)
    try:
        figures.update(json.loads(stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return Check("fresh environment", False, f"the load probe printed no result: {stdout!r}")
    return Check("fresh environment", True, f"loaded and predicted {figures.get('rows')} rows",
                 figures)


def _limits_check(probe: Check, lim: dict[str, float]) -> Check:
    mem = float(probe.figures.get("peak_memory_mb", 0))
    load = float(probe.figures.get("load_seconds", 0))
    figures = {"peak_memory_mb": mem, "max_memory_mb": lim["max_memory_mb"],
               "load_seconds": load, "max_load_seconds": lim["max_load_seconds"]}
    over = []
    if mem > lim["max_memory_mb"]:
        over.append(f"peak memory {mem} MB is over max_memory_mb {lim['max_memory_mb']}")
    if load > lim["max_load_seconds"]:
        over.append(f"load time {load} s is over max_load_seconds {lim['max_load_seconds']}")
    return Check("memory and load time", not over,
                 "; ".join(over) or f"{mem} MB peak, loaded in {load} s", figures)


def _expected(registry: Registry, mv: ModelVersion) -> tuple[list[dict[str, Any]], list[Any]]:
    from mlops_nb.guards.registry import reference_of

    sample = reference_of(mv)
    if sample is None:
        raise DeployRefused(f"{mv.ref} has no stored training sample (reference/) to test it"
                            " with: register it with reference=X_train")
    rows = sample.head(SMOKE_ROWS)
    model = registry.load_model(mv.name, mv.version)
    return deployserve.records_of(rows), [deployserve.plain(p) for p in model.predict(rows)]


def _serve_checks(python: Path, root: Path, registry: Registry, mv: ModelVersion,
                  lim: dict[str, float], result: DeployResult) -> None:
    records, expected = _expected(registry, mv)
    with deployserve.service(python, root, mv.ref, lim["max_load_seconds"] + 60) as svc:
        diffs = deployserve.smoke(svc, records, expected)
        result.checks.append(Check(
            "smoke test", not diffs,
            (f"{len(diffs)} of {len(records)} answers differ: " + "; ".join(diffs[:3]))
            if diffs else f"{len(records)} records answered as the registered model does",
            {"records": len(records), "differences": len(diffs)}))
        if diffs:
            return
        figures = deployserve.load_test(svc, records, lim["load_test_seconds"],
                                        int(lim["load_test_clients"]))
    problems = []
    if figures.failed:
        problems.append(f"{figures.failed} of {figures.requests} requests failed (first:"
                        f" {figures.first_error})")
    if figures.p99_ms > lim["max_p99_ms"]:
        problems.append(f"p99 latency {figures.p99_ms} ms is over max_p99_ms"
                        f" {lim['max_p99_ms']}")
    if figures.requests_per_second < lim["min_requests_per_second"]:
        problems.append(f"{figures.requests_per_second} requests/s is under"
                        f" min_requests_per_second {lim['min_requests_per_second']}")
    result.checks.append(Check(
        "load test", not problems, "; ".join(problems) or
        f"{figures.requests} requests, {figures.requests_per_second}/s, p99"
        f" {figures.p99_ms} ms", {**figures.to_dict(), "max_p99_ms": lim["max_p99_ms"],
                                   "min_requests_per_second": lim["min_requests_per_second"]}))


def deploy(root: Path, ref: str, to: str, *, force: bool = False) -> DeployResult:
    """Run the checks of the module's rule on `ref` and move it to `to` when all pass;
    DeployRefused (stage unchanged) at the first failed check."""
    if to not in TARGETS:
        raise UsageError(f"deploy --to must be one of {', '.join(TARGETS)}, not {to!r}")
    registry = Registry(default_root(root))
    mv = resolve(registry, ref)
    if mv.stage == to or (to == "staging" and mv.stage == "production"):
        raise UsageError(f"{mv.ref} is in stage {mv.stage} already: deploy a newer version"
                         f" (`mlops-nb models list {mv.name}`)")
    if to == "production" and mv.stage != "staging" and not force:
        raise UsageError(f"{mv.ref} is in stage {mv.stage}: production is reached from staging"
                         f" (`mlops-nb deploy {mv.ref} --to staging` first), or pass --force")
    lim = limits(root)
    lock = deployenv.find_lock(root)
    result = DeployResult(mv.ref, to)
    try:
        _run_checks(root, registry, mv, lim, lock, result)
        if result.failed is None:
            registry.set_stage(mv.name, mv.version, to, reason=f"deploy --to {to}"
                               + (" --force" if force else ""), expect=mv.stage)
            result.moved = True
    except MlopsNbError as exc:
        result.checks.append(Check("deploy", False, str(exc)))
    finally:
        payload = {**result.to_dict(), "from_stage": mv.stage, "force": force,
                   "lock": lock.name, "limits": lim}
        result.event = LineageStore(default_path(root)).record_event("deploy", mv.ref,
                                                                     payload)
    bad = result.failed
    if bad is not None:
        log.error("deploy of %s refused at %s: %s", mv.ref, bad.name, bad.detail)
        raise DeployRefused(f"deploy of {mv.ref} to {to} refused at the {bad.name} check:"
                            f" {bad.detail}. Its stage is still {mv.stage}")
    log.info("deployed %s to %s", mv.ref, to)
    return result


def _run_checks(root: Path, registry: Registry, mv: ModelVersion, lim: dict[str, float],
                lock: Path, result: DeployResult) -> None:
    try:
        python = deployenv.python_of(lock)
    except DeployRefused as exc:
        result.checks.append(Check("fresh environment", False, str(exc)))
        return
    probe = _probe(python, registry, mv, lim["max_load_seconds"])
    result.checks.append(probe)
    if not probe.ok:
        return
    result.checks.append(_limits_check(probe, lim))
    if not result.checks[-1].ok:
        return
    _serve_checks(python, root, registry, mv, lim, result)
