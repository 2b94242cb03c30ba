"""The parameters form and experiment grids as plain data (the parameters widget's model).

Fields come from params.yaml (one per leaf value, named as `dvc exp run -S` takes them:
`iris.N_ESTIMATORS`), each with the control that fits its value: bool, int, float, choice
(when the parameters cell lists them in a trailing comment, `MODEL = 'rf'  # one of: rf, lr`,
or the caller does) or text. A grid is the cartesian product of a few values
per field; each point becomes one queued experiment, `dvc exp run --queue -S KEY=VALUE...`,
with only the values that differ from params.yaml set.
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import re
import tokenize
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.errors import MlopsNbError, UsageError
from mlops_nb.notebook.magics import strip_magics
from mlops_nb.notebook.sections import literal_names
from mlops_nb.pipeline import params as params_mod
from mlops_nb.project import PARAMS
from mlops_nb.widgets import background

MAX_GRID = 64  # more points than this is a mistake more often than a plan


@dataclass(frozen=True)
class Field:
    key: str  # "iris.N_ESTIMATORS"
    value: Any
    kind: str  # "bool", "int", "float", "choice", "text"
    choices: tuple[Any, ...] = ()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "text"


def fields(data: Mapping[str, Any], choices: Mapping[str, Sequence[Any]] | None = None
           ) -> list[Field]:
    """One field per leaf of params.yaml, in file order."""
    out: list[Field] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
            return
        options = tuple((choices or {}).get(prefix, ()))
        if options and node not in options:
            options = (node, *options)  # the value in use stays selectable
        kind = "choice" if options else _kind(node)
        out.append(Field(prefix, node, kind, options))

    walk("", data)
    return out


def read_fields(root: Path, choices: Mapping[str, Sequence[Any]] | None = None) -> list[Field]:
    """The fields of params.yaml, with the choices the parameters cells declare (the given
    ones win)."""
    return fields(params_mod.read(root / PARAMS, PARAMS), {**notebook_choices(root),
                                                           **(choices or {})})


_ONE_OF = re.compile(r"#\s*one of:\s*(.*?)\s*$", re.IGNORECASE)


def _option(text: str, default: Any) -> Any:
    """One listed choice: a Python literal of the default's type, else the bare text."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(default, str) and not isinstance(value, str):
        return text
    return value


def declared_choices(source: str) -> dict[str, list[Any]]:
    """{NAME: choices} of a parameters cell's `NAME = value  # one of: a, b, c` lines. The
    comment follows the value (on its last line); quotes around a string choice are
    optional; a cell that does not parse declares none."""
    try:
        by_line = {node.end_lineno: (name, ast.literal_eval(node))
                   for name, node in literal_names(source) if isinstance(node, ast.expr)}
        tokens = list(tokenize.generate_tokens(io.StringIO(strip_magics(source)).readline))
    except (ValueError, SyntaxError, tokenize.TokenError):
        return {}
    out: dict[str, list[Any]] = {}
    for tok in tokens:
        m = _ONE_OF.search(tok.string) if tok.type == tokenize.COMMENT else None
        if m and tok.start[0] in by_line:
            name, default = by_line[tok.start[0]]
            options = [_option(p.strip(), default) for p in m.group(1).split(",") if p.strip()]
            if options:
                out[name] = list(dict.fromkeys(options))
    return out


def notebook_choices(root: Path) -> dict[str, list[Any]]:
    """{"group.NAME": choices} declared in the project's parameters cells."""
    from mlops_nb import compile as compile_mod
    from mlops_nb.notebook.tags import parse_notebook

    out: dict[str, list[Any]] = {}
    try:
        paths = compile_mod.discover(root)
    except MlopsNbError:
        return out
    for path in paths:
        try:
            parsed = parse_notebook(path, path.name)
        except MlopsNbError:
            continue  # compile and preview report it
        for cell in parsed.parameters:
            for name, options in declared_choices(cell.source).items():
                out[f"{parsed.stem}.{name}"] = options
    return out


def shown(value: Any) -> str:
    """A parameter's value as the form shows it: exactly (1.0 stays 1.0; a metric table may
    shorten floats, a parameter must not), lists and mappings as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value) if not isinstance(value, bool) else str(value)
    return json.dumps(value)


def parse_value(field: Field, text: str) -> Any:
    """A value typed in a text box, converted to the field's type (UsageError if it cannot)."""
    raw = text.strip()
    try:
        if field.kind == "bool":
            low = raw.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return low in ("true", "1", "yes")
        if field.kind == "int":
            return int(raw)
        if field.kind == "float":
            return float(raw)
    except ValueError:
        raise UsageError(f"{field.key}: {raw!r} is not a {field.kind}") from None
    if field.kind == "choice":
        for c in field.choices:
            if str(c) == raw:
                return c
        raise UsageError(f"{field.key}: {raw!r} is not one of "
                         f"{', '.join(map(str, field.choices))}")
    if field.kind == "text" and not isinstance(field.value, str):
        try:
            return json.loads(raw)  # a list or mapping leaf, edited as JSON
        except ValueError:
            raise UsageError(f"{field.key}: {raw!r} is not valid JSON") from None
    return raw


def parse_values(field: Field, text: str) -> list[Any]:
    """Comma-separated values of one grid axis (`10, 50, 100`); empty means the field's own."""
    parts = [p for p in text.split(",") if p.strip()]
    if field.kind == "text" and not isinstance(field.value, str):
        parts = [text] if text.strip() else []
    return [parse_value(field, p) for p in parts] or [field.value]


def grid(fields_: Sequence[Field], axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values; each point holds only the values that differ
    from params.yaml (an empty point is params.yaml itself)."""
    known = {f.key: f for f in fields_}
    unknown = [k for k in axes if k not in known]
    if unknown:
        raise UsageError(f"no parameter {', '.join(unknown)} in {PARAMS}")
    keys = list(axes)
    points = []
    for combo in itertools.product(*(axes[k] for k in keys)):
        point = {k: v for k, v in zip(keys, combo, strict=True) if v != known[k].value}
        if point not in points:
            points.append(point)
    if len(points) > MAX_GRID:
        raise UsageError(f"{len(points)} experiments in this grid; queue at most {MAX_GRID}"
                         " at once")
    return points


def yaml_value(value: Any) -> str:
    """A value as `-S` takes it (DVC parses it as YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # quoted: "4" stays a string
    return json.dumps(value)


def set_args(point: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in point.items():
        out += ["-S", f"{key}={yaml_value(value)}"]
    return out


def queue_command(point: Mapping[str, Any]) -> list[str]:
    return background.dvc_command("exp", "run", "--queue", *set_args(point))


def queue(root: Path, point: Mapping[str, Any]) -> str:
    """Queue one experiment; returns DVC's line naming it."""
    res = background.run_sync(queue_command(point), root)
    if res.returncode != 0:
        raise UsageError(f"dvc exp run --queue failed: "
                         f"{background.last_line(res.stderr) or res.returncode}")
    return background.last_line(res.stdout)


def started_experiment(line: str) -> str | None:
    """The experiment a line of `dvc exp run --run-all` says it starts, or None."""
    m = re.match(r"\s*Reproducing experiment '([^']+)'", line)
    return m.group(1) if m else None


def run_queue_command() -> list[str]:
    """Run every queued experiment and wait for them (one worker: a laptop's cores)."""
    return background.dvc_command("exp", "run", "--run-all")
