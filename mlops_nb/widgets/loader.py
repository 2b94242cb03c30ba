"""`%mlops load STEP`: a step's inputs and parameter values, put into the live kernel.

So one step can be debugged cell by cell: its inputs come from the last run's outputs (each
checked against the hash recorded when its step wrote it; a mismatch is refused), its
parameters from params.yaml, and the functions and classes it takes from earlier steps are
defined again. The report says which run each value comes from, and warns when that
producer is no longer up to date (its values are then not what a new run would give).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb import artifacts
from mlops_nb import compile as compile_mod
from mlops_nb.errors import ArtifactError, UsageError
from mlops_nb.execute.run import UP_TO_DATE, statuses
from mlops_nb.pipeline import params as params_mod
from mlops_nb.pipeline.spec import PipelineSpec
from mlops_nb.project import PARAMS, Layout, rel_executed


@dataclass(frozen=True)
class Source:
    producer: str
    names: tuple[str, ...]
    finished: str  # when the producer's run wrote its executed notebook (UTC), or ""
    status: str  # the producer's status now (up to date, changed, never run)


@dataclass(frozen=True)
class LoadReport:
    step: str
    params: dict[str, Any]
    sources: tuple[Source, ...]
    definitions: tuple[str, ...]

    def text(self) -> str:
        lines = [f"loaded the inputs of step '{self.step}':"]
        for s in self.sources:
            when = f"run finished {s.finished}" if s.finished else "run time unknown"
            warn = "" if s.status == UP_TO_DATE else \
                f" [{s.status}: rerun with %mlops run {s.producer} for current values]"
            lines.append(f"  {', '.join(s.names)} from step {s.producer}"
                         f" ({rel_executed(s.producer)}, {when}){warn}")
        if self.params:
            shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
            lines.append(f"  parameters from {PARAMS}: {shown}")
        if self.definitions:
            lines.append(f"  definitions from earlier steps: {', '.join(self.definitions)}")
        if len(lines) == 1:
            lines.append("  nothing: it reads no earlier step's values and no parameter")
        return "\n".join(lines)


def _finished(layout: Layout, step: str) -> str:
    path = layout.executed(step)
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return ""
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def input_values(layout: Layout, spec: PipelineSpec, inputs: tuple[tuple[str, str], ...],
                 copied: set[str], consumer: str) -> tuple[dict[str, Any], list[Source]]:
    """The values of `inputs` ((variable, producer) pairs) from their producers' last run,
    each artifact loaded once and hash-checked; `consumer` names who needs them in errors."""
    values: dict[str, Any] = {}
    by_producer: dict[str, list[str]] = {}
    loaded: dict[tuple[str, str], Any] = {}  # a bundle is loaded once, its objects shared
    for var, producer in inputs:
        if var in copied:
            continue
        art = spec.step(producer).artifact_for(var) or var
        if (producer, art) not in loaded:
            folder = layout.output(producer, art)
            if not folder.exists():
                raise ArtifactError(f"step '{producer}' has no output '{art}' yet (needed by"
                                    f" {consumer}); run it first: mlops-nb run {producer}")
            loaded[(producer, art)] = artifacts.load(folder, project=layout.root)
        value = loaded[(producer, art)]
        values[var] = value if art == var else value[var]
        by_producer.setdefault(producer, []).append(var)
    status = {s.step: s.status for s in statuses(layout.root, spec)}
    sources = [Source(p, tuple(names), _finished(layout, p), status.get(p, ""))
               for p, names in by_producer.items()]
    return values, sources


def define(copied_defs: tuple[tuple[str, str], ...], namespace: dict[str, Any],
           consumer: str) -> dict[str, Any]:
    """Run the sources of definitions taken from earlier steps in a copy of `namespace`;
    return what they defined."""
    scratch: dict[str, Any] = dict(namespace)
    for name, source in copied_defs:
        try:
            exec(compile(source, f"<{consumer}: {name}>", "exec"), scratch)  # noqa: S102
        except Exception as exc:  # noqa: BLE001 - the user's own code, reported in one line
            raise UsageError(f"defining '{name}' (taken by {consumer} from an earlier step)"
                             f" raised {type(exc).__name__}: {exc}") from None
    return {k: scratch[k] for k, _ in copied_defs if k in scratch}


def load_step(root: Path, step: str, namespace: dict[str, Any]) -> LoadReport:
    """Put STEP's parameters, copied definitions and inputs into `namespace`.

    Everything is read and checked first; the namespace changes only when all of it loaded.
    """
    spec, _ = compile_mod.render(root)
    names = [s.name for s in spec.steps]
    if step not in names:
        raise UsageError(f"no step named '{step}'; steps are: {', '.join(names)}")
    target = spec.step(step)
    layout = Layout(root)
    group = spec.notebook(target.notebook).stem
    data = params_mod.read(layout.params, PARAMS)
    params = params_mod.group_values(data, group, list(target.params), PARAMS)
    values, sources = input_values(layout, spec, target.inputs,
                                   {name for name, _ in target.copied_defs}, f"'{step}'")
    defined = define(target.copied_defs, namespace, f"step '{step}'")
    namespace.update(params)
    namespace.update(defined)
    namespace.update(values)
    return LoadReport(step, params, tuple(sources), tuple(defined))


def sources_json(report: LoadReport) -> str:
    return json.dumps([s.__dict__ for s in report.sources])
