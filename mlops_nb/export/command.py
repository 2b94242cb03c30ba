"""`mlops-nb export kfp` as one call: export, then optionally run locally or submit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlops_nb.errors import UsageError
from mlops_nb.export.build import ExportResult, export_kfp
from mlops_nb.export.local import LocalRun, arguments, run_local, submit


@dataclass(frozen=True)
class KfpOutcome:
    export: ExportResult
    local: LocalRun | None = None
    run_id: str | None = None


def export_and_run(root: Path, out: Path | None = None, *, image: str | None = None,
                   pipeline_root: str | None = None, data_uri: str | None = None,
                   env: dict[str, str] | None = None, settings: list[str] | None = None,
                   local: bool = False, host: str | None = None,
                   experiment: str | None = None,
                   on_line: Callable[[str], None] | None = None) -> KfpOutcome:
    """Export the package; with `local`, run it with kfp.local; with `host`, submit it."""
    if settings and not (local or host):
        raise UsageError("-S sets a parameter of a run: add --local or --submit")
    result = export_kfp(root, out, image=image, pipeline_root=pipeline_root,
                        data_uri=data_uri, env=env)
    args = arguments(result.plan, settings or [])
    ran = run_local(result.package, result.plan, args, root, on_line) if local else None
    run_id = None
    if host:
        run_id = submit(result.package, host, args, result.plan.name, experiment)
    return KfpOutcome(result, ran, run_id)
