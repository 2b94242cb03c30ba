"""The experiments table as plain data, read from `dvc exp show --json` (DVC owns experiments).

Pure functions: DVC's JSON in, rows out; then filter, sort, compare with the baseline (as
`dvc exp diff` does) and the points of a metric-against-parameter plot. The only edges are
`load` (runs `dvc exp show --json`) and `apply`/`remove`, which call DVC's own commands.
Parameter columns are named as `dvc exp run -S` takes them (`iris.N_ESTIMATORS`; a key of
another params file is `file:key`); a metric is named by its key, prefixed with its file
only when two metrics files share a key.

An experiment's state comes from DVC's executor: queued, running, success or failed. DVC
gives a failed or unfinished experiment the metrics of its baseline (the files it started
from), so such a row has no metrics of its own here: it shows its state, never a result.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb.errors import MlopsNbError
from mlops_nb.widgets import background

WORKSPACE = "workspace"
QUEUED, RUNNING, SUCCESS, FAILED = "queued", "running", "success", "failed"


class ExperimentsError(MlopsNbError):
    """DVC could not list, apply or remove experiments."""


@dataclass(frozen=True)
class ExpRow:
    name: str  # experiment name, branch/tag name, short sha, or "workspace"
    rev: str  # full sha ("workspace" for the working tree)
    baseline: str  # the name of the commit row this experiment is based on (itself for one)
    kind: str  # "workspace", "baseline" or "experiment"
    created: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    state: str = ""  # experiments: "queued", "running", "success" or "failed"

    @property
    def queued(self) -> bool:
        return self.state == QUEUED

    @property
    def failed(self) -> bool:
        return self.state == FAILED

    def value(self, column: str) -> Any:
        if column == "name":
            return self.name
        if column == "created":
            return self.created
        if column in self.metrics:
            return self.metrics[column]
        return self.params.get(column)


def _flatten(prefix: str, data: Any, out: dict[str, Any]) -> None:
    if isinstance(data, dict):
        for k, v in data.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = data


def _files_data(section: Any) -> dict[str, dict[str, Any]]:
    """{file: flat {key: value}} of a params or metrics section of DVC's JSON."""
    out: dict[str, dict[str, Any]] = {}
    for file, body in (section or {}).items():
        flat: dict[str, Any] = {}
        _flatten("", (body or {}).get("data") or {}, flat)
        out[file] = flat
    return out


def _params(section: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for file, flat in _files_data(section).items():
        for key, value in flat.items():
            out[key if file == "params.yaml" else f"{file}:{key}"] = value
    return out


def _metrics(section: Any) -> dict[str, Any]:
    files = _files_data(section)
    seen: dict[str, int] = {}
    for flat in files.values():
        for key in flat:
            seen[key] = seen.get(key, 0) + 1
    out: dict[str, Any] = {}
    for file, flat in files.items():
        for key, value in flat.items():
            out[key if seen[key] == 1 else f"{file}:{key}"] = value
    return out


def _row(entry: dict[str, Any], baseline: str, kind: str, state: str = "") -> ExpRow:
    data = entry.get("data") or {}
    rev = str(entry.get("rev") or data.get("rev") or "")
    name = entry.get("name") or (data.get("meta") or {}).get("name") or \
        (WORKSPACE if rev == WORKSPACE else rev[:7])
    err = entry.get("error") or data.get("error") or ""
    if isinstance(err, dict):
        err = err.get("msg") or err.get("type") or json.dumps(err)
    if kind == "experiment":
        # an experiment run in the workspace has no executor: it finished, or DVC would not
        # list it; an error DVC reports marks it failed whatever the executor said
        state = FAILED if err else (state or SUCCESS)
    own = kind != "experiment" or state == SUCCESS  # else the metrics are its baseline's
    return ExpRow(name=str(name), rev=rev, baseline=baseline if kind != "baseline" else str(name),
                  kind=kind, created=str(data.get("timestamp") or ""),
                  params=_params(data.get("params")),
                  metrics=_metrics(data.get("metrics")) if own else {},
                  error=str(err), state=state if kind == "experiment" else "")


def parse(exp_show: list[dict[str, Any]]) -> list[ExpRow]:
    """Rows of `dvc exp show --json` (DVC 3): the workspace, each baseline commit, then the
    experiments based on it (every revision of an experiment is one row)."""
    rows: list[ExpRow] = []
    for entry in exp_show:
        rev = entry.get("rev")
        if rev == WORKSPACE:
            rows.append(_row(entry, WORKSPACE, "workspace"))
            continue
        base = _row(entry, "", "baseline")
        rows.append(base)
        for exp in entry.get("experiments") or []:
            for rev_entry in exp.get("revs") or []:
                named = dict(rev_entry)
                named.setdefault("name", exp.get("name"))
                if not named.get("name"):
                    named["name"] = exp.get("name")
                state = str((exp.get("executor") or {}).get("state") or "")
                rows.append(_row(named, base.name, "experiment", state))
    return rows


def columns(rows: Iterable[ExpRow]) -> tuple[list[str], list[str]]:
    """(parameter columns, metric columns), in first-seen order."""
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for row in rows:
        params.update(dict.fromkeys(row.params))
        metrics.update(dict.fromkeys(row.metrics))
    return list(params), list(metrics)


def table(rows: Sequence[ExpRow], params: Sequence[str] | None = None,
          metrics: Sequence[str] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Header and values: name, state, then metrics, then parameters (as `dvc exp show`)."""
    all_params, all_metrics = columns(rows)
    params = all_params if params is None else list(params)
    metrics = all_metrics if metrics is None else list(metrics)
    header = ["name", "state", *metrics, *params]
    body = [[r.name, r.state, *(r.metrics.get(m) for m in metrics),
             *(r.params.get(p) for p in params)] for r in rows]
    return header, body


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "!=": operator.ne, "==": operator.eq,
    ">": operator.gt, "<": operator.lt, "=": operator.eq,
}
_EXPR = re.compile(r"^\s*([\w.:/-]+)\s*(>=|<=|!=|==|>|<|=)\s*(.+?)\s*$")


def _coerce(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip("'\"")


def _matches(row: ExpRow, term: str) -> bool:
    m = _EXPR.match(term)
    if m:
        column, op, raw = m.groups()
        value = row.value(column)
        if value is None:
            return False
        want = _coerce(raw)
        try:
            return bool(_OPS[op](value, want))
        except TypeError:
            return bool(_OPS[op](str(value), str(want)))
    needle = term.strip().lower()
    hay = [row.name, *map(str, row.params.values()), *map(str, row.metrics.values())]
    return any(needle in h.lower() for h in hay)


def filter_rows(rows: Sequence[ExpRow], query: str) -> list[ExpRow]:
    """Rows matching every comma-separated term: `accuracy>0.9`, `iris.MAX_DEPTH=4`, or
    text found in the name or any value. The workspace row always stays (the reference)."""
    terms = [t for t in query.split(",") if t.strip()]
    return [r for r in rows if r.kind == "workspace" or all(_matches(r, t) for t in terms)]


def sort_rows(rows: Sequence[ExpRow], column: str, *, descending: bool = False
              ) -> list[ExpRow]:
    """Sorted by a column; rows without a value go last whichever the direction."""
    have = [r for r in rows if r.value(column) is not None]
    missing = [r for r in rows if r.value(column) is None]

    def key(r: ExpRow) -> tuple[int, Any]:
        v = r.value(column)
        return (0, v) if isinstance(v, (int, float)) else (1, str(v))

    return sorted(have, key=key, reverse=descending) + missing


@dataclass(frozen=True)
class Difference:
    column: str
    kind: str  # "metric" or "param"
    baseline: Any
    values: tuple[Any, ...]  # one per compared experiment
    deltas: tuple[Any, ...]  # value - baseline for numbers, None otherwise


def _delta(new: Any, old: Any) -> Any:
    numbers = (int, float)
    if isinstance(new, bool) or isinstance(old, bool):
        return None
    if isinstance(new, numbers) and isinstance(old, numbers):
        d = new - old
        return round(d, 12) if isinstance(d, float) else d
    return None


def compare(rows: Sequence[ExpRow], names: Sequence[str], baseline: str | None = None
            ) -> tuple[ExpRow, list[ExpRow], list[Difference]]:
    """The selected experiments against a baseline, as `dvc exp diff`: every metric, and the
    parameters that differ from the baseline in at least one of them.

    The baseline is the named row, else the commit the first selected experiment is based
    on. Raises ExperimentsError for an unknown name.
    """
    by_name = {r.name: r for r in rows}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ExperimentsError(f"no experiment named {', '.join(unknown)};"
                               f" known: {', '.join(by_name)}")
    chosen = [by_name[n] for n in names]
    if not chosen:
        raise ExperimentsError("select at least one experiment to compare")
    base_name = baseline or chosen[0].baseline
    if base_name not in by_name:
        raise ExperimentsError(f"no baseline row '{base_name}' to compare with")
    base = by_name[base_name]
    chosen = [r for r in chosen if r is not base] or chosen
    params, metrics = columns([base, *chosen])
    diffs = []
    for kind, cols in (("metric", metrics), ("param", params)):
        for col in cols:
            old = base.value(col)
            new = tuple(r.value(col) for r in chosen)
            if kind == "param" and all(v == old for v in new):
                continue
            diffs.append(Difference(col, kind, old, new, tuple(_delta(v, old) for v in new)))
    return base, chosen, diffs


def by_variation(rows: Sequence[ExpRow], params: Sequence[str]) -> list[str]:
    """The parameters, those whose value differs between the rows first (a plot against a
    parameter that never varies is one vertical line)."""
    def varies(p: str) -> bool:
        seen = {json.dumps(r.params.get(p), sort_keys=True, default=str) for r in rows
                if r.kind != WORKSPACE}
        return len(seen) > 1

    return sorted(params, key=lambda p: not varies(p))


def plot_points(rows: Sequence[ExpRow], metric: str, param: str
                ) -> list[tuple[float, float, str]]:
    """(parameter value, metric value, experiment name) of every row that has both as
    finite numbers, sorted by parameter value: the data of a metric-against-parameter plot."""
    out = []
    for r in rows:
        x, y = r.value(param), r.value(metric)
        if isinstance(x, bool) or isinstance(y, bool):
            x, y = (float(x) if isinstance(x, bool) else x), (float(y) if isinstance(y, bool)
                                                               else y)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) \
                and math.isfinite(x) and math.isfinite(y):
            out.append((float(x), float(y), r.name))
    return sorted(out)


# --- edges: DVC's own commands -------------------------------------------------------------

def load(root: Path) -> list[ExpRow]:
    """Run `dvc exp show --json` in the project and parse it."""
    res = background.run_sync(background.dvc_command("exp", "show", "--json"), root)
    if res.returncode != 0:
        raise ExperimentsError(f"dvc exp show failed in {root}: "
                               f"{background.last_line(res.stderr) or res.returncode}")
    try:
        data = json.loads(res.stdout or "[]")
    except json.JSONDecodeError as exc:
        raise ExperimentsError(f"dvc exp show --json printed no JSON ({exc})") from None
    if isinstance(data, dict):  # DVC 2's shape: {rev: {...}}; not supported
        raise ExperimentsError("dvc exp show --json returned DVC 2's format; use DVC >= 3")
    return parse(data)


def apply(root: Path, name: str) -> str:
    """`dvc exp apply NAME`: the experiment's params and outputs into the workspace."""
    return _dvc(root, "apply", name)


def remove(root: Path, names: Sequence[str]) -> str:
    """`dvc exp remove NAME...`."""
    return _dvc(root, "remove", *names)


def _dvc(root: Path, verb: str, *args: str) -> str:
    res = background.run_sync(background.dvc_command("exp", verb, *args), root)
    if res.returncode != 0:
        raise ExperimentsError(f"dvc exp {verb} {' '.join(args)} failed: "
                               f"{background.last_line(res.stderr) or res.returncode}")
    return background.last_line(res.stdout) or f"dvc exp {verb}: done"
