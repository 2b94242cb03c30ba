"""params.yaml, checked: the one parse every runner does before it runs anything.

Rule: params.yaml means the same on every runner, so each entry point (`mlops-nb compile`
and `run`, a DVC stage, Ploomber's on_render hook) calls `check` before it runs a step:
- the file holds a mapping: empty, comments only or `null` is an error, never refilled (the
  tuned values are gone; only the user can say where they are);
- a key appears once in its mapping (PyYAML, hence Ploomber, keeps the last one silently);
- a value has the type of the notebook's declared default: an int where an int is declared,
  an int or a float where a float is, a bool only where a bool is (a bool is no number here),
  a string where a string is (`"100"` is not 100), a list where a list or tuple is, a mapping
  where a dict is; a default of None accepts anything;
- `mlops_nb:` holds mlops_nb's own options: an unknown one is a warning naming the nearest,
  a wrong type an error.
Errors carry file, line, column and the key's dotted name. Missing groups or keys are not
this module's (compile seeds them; params.group_values names them at run time).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.errors import ConfigError

log = logging.getLogger(__name__)

SETTINGS = "mlops_nb"  # params.yaml's section for mlops_nb's own settings (not parameters)
OPTIONS = {"ploomber_jobs": "a whole number of at least 1",  # option -> what it must be
           "deploy": "a mapping of deploy's limits",
           "quality": "a mapping of online-quality thresholds (monitor/quality.py)"}
# `mlops_nb: {deploy: {...}}`: the limits `mlops-nb deploy` checks (ci/deploy.py), defaults
DEPLOY_LIMITS: dict[str, float] = {
    "max_memory_mb": 2048, "max_load_seconds": 60, "max_p99_ms": 2000,
    "min_requests_per_second": 5, "load_test_seconds": 3, "load_test_clients": 4}
_DEPLOY_MAX = {"load_test_seconds": 120, "load_test_clients": 64}

_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_TAG_NAMES = {"int": "an integer", "float": "a float", "bool": "a boolean", "str": "a string",
              "null": "null", "seq": "a list", "map": "a mapping", "timestamp": "a date",
              "binary": "binary data", "set": "a set"}

WHAT_TO_DO_EMPTY = ("restore it from git (`git checkout -- params.yaml`) or from a backup;"
                    " to start again from the notebooks' defaults, delete it and run"
                    " `mlops-nb compile`")


@dataclass(frozen=True)
class Parsed:
    """params.yaml's plain data and its YAML node tree (for lines and columns)."""

    data: dict[str, Any]
    node: Any


def _where(node: Any) -> tuple[int, int]:
    mark = node.start_mark
    return mark.line + 1, mark.column + 1


def _yaml_error(shown: str, exc: Exception) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return ConfigError(shown, f"invalid YAML: {problem}; fix this line",
                           mark.line + 1, mark.column + 1)
    return ConfigError(shown, f"invalid YAML: {problem}")


def _pairs(node: Any) -> Iterator[tuple[Any, Any]]:
    yield from node.value


def _refuse_duplicates(node: Any, shown: str, path: str = "") -> None:
    """Every mapping in the tree names each key once."""
    if node.tag == _MAP:
        seen: dict[Any, int] = {}
        for key, value in _pairs(node):
            name = getattr(key, "value", None)
            if isinstance(name, str):
                dotted = f"{path}.{name}" if path else name
                if name in seen:
                    line, col = _where(key)
                    raise ConfigError(shown, f"duplicate key '{dotted}' (first on line"
                                             f" {seen[name]}): YAML keeps one silently and"
                                             " runners differ on which; delete one of them",
                                      line, col)
                seen[name] = _where(key)[0]
                _refuse_duplicates(value, shown, dotted)
            else:
                _refuse_duplicates(value, shown, path)
    elif node.tag == _SEQ:
        for item in node.value:
            _refuse_duplicates(item, shown, path)


def parse_text(text: str, shown: str = "params.yaml") -> Parsed:
    """Parse params.yaml's text strictly: tabs, YAML errors, an empty document, a document
    that is no mapping and duplicate keys are ConfigErrors with line and column."""
    if "\t" in text:
        at = text.index("\t")
        line = text[:at].count("\n") + 1
        raise ConfigError(shown, "a tab character: YAML indents with spaces only", line,
                          at - (text.rfind("\n", 0, at) + 1) + 1)
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    y = YAML(typ="safe", pure=True)
    try:
        node = y.compose(text)
    except YAMLError as exc:
        raise _yaml_error(shown, exc) from None
    if node is None or node.tag == "tag:yaml.org,2002:null":
        raise ConfigError(shown, "is empty (no mapping of notebook name to parameters):"
                                 f" the parameter values it held are gone; {WHAT_TO_DO_EMPTY}."
                                 " Nothing was run and the file was left as it is")
    if node.tag != _MAP:
        raise ConfigError(shown, "must be a mapping of notebook name to parameters"
                                 " (e.g. `iris: {N_ESTIMATORS: 100}`)", *_where(node))
    _refuse_duplicates(node, shown)
    try:
        data = y.constructor.construct_document(node)
    except (YAMLError, ValueError) as exc:  # ValueError: an integer of over 4300 digits
        raise _yaml_error(shown, exc) from None
    return Parsed(data, node)


def parse(path: Path, shown: str | None = None) -> Parsed | None:
    """parse_text of the file; None when there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return parse_text(text, shown or str(path))


def _child(node: Any, key: str) -> tuple[Any, Any] | None:
    for k, v in _pairs(node):
        if getattr(k, "value", None) == key:
            return k, v
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "seq", tuple: "seq",
            set: "seq", dict: "map"}.get(type(value), "")


def _fits(declared: Any, tag: str) -> bool:
    """Whether a YAML value of `tag` (int, str, ...) may stand for the declared default."""
    want = _kind(declared)
    if want in ("", "null"):  # None, bytes, complex...: the notebook says nothing usable
        return True
    if want == "float":
        return tag in ("int", "float")
    return tag == want


def must_be(declared: Any, value: Any) -> str | None:
    """None when `value`, given elsewhere than params.yaml (a command line), may stand for a
    parameter declared as `declared`, by the rule above; else what it must be ("an integer",
    "a number", ...)."""
    if _fits(declared, _kind(value)):
        return None
    return "a number" if _kind(declared) == "float" else _TAG_NAMES.get(
        _kind(declared), type(declared).__name__)


def _shown_value(node: Any) -> str:
    if node.tag.endswith(":str"):
        return repr(node.value)
    if node.tag in (_MAP, _SEQ):
        return _TAG_NAMES[node.tag.rsplit(":", 1)[1]]
    return str(node.value)


def _hint(node: Any, declared: Any, expected: str) -> str:
    if node.tag.endswith(":str"):
        try:
            if _kind(ast.literal_eval(node.value)) == _kind(declared) or (
                    _kind(declared) == "float"
                    and _kind(ast.literal_eval(node.value)) == "int"):
                return f"write {node.value} without quotes"
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
        if _kind(declared) == "bool" and node.value.lower() in ("true", "false"):
            return f"write {node.value.lower()} without quotes"
    return (f"write {expected} there, or change the notebook's default and run"
            " `mlops-nb compile`")


def _check_types(root: Any, declared: Mapping[str, Mapping[str, str]], shown: str,
                 skip: set[tuple[str, str]]) -> None:
    for group, literals in declared.items():
        found = _child(root, group)
        if found is None or not literals:
            continue
        section = found[1]
        if section.tag == "tag:yaml.org,2002:null":
            continue  # `nb:` alone: compile fills it; a runner names what is missing
        if section.tag != _MAP:
            raise ConfigError(shown, f"'{group}' must be a mapping of the parameters of"
                                     f" notebook '{group}', not {_shown_value(section)}",
                              *_where(section))
        for name, literal in literals.items():
            item = _child(section, name)
            if item is None or (group, name) in skip:
                continue
            try:
                default = ast.literal_eval(literal)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            value = item[1]
            tag = value.tag.rsplit(":", 1)[1]
            if not _fits(default, tag):
                expected = _TAG_NAMES.get(_kind(default), type(default).__name__)
                if _kind(default) == "float":
                    expected = "a number"
                raise ConfigError(
                    shown, f"{group}.{name} is {_shown_value(value)} ({_TAG_NAMES.get(tag, tag)}),"
                           f" but notebook '{group}' declares {name} = {literal} ({expected});"
                           f" {_hint(value, default, expected)}", *_where(value))


def _check_options(root: Any, data: dict[str, Any], shown: str, warn: bool) -> None:
    found = _child(root, SETTINGS)
    if found is None:
        return
    section = found[1]
    if section.tag == "tag:yaml.org,2002:null":
        return
    if section.tag != _MAP:
        raise ConfigError(shown, f"'{SETTINGS}' must be a mapping of mlops_nb's options"
                                 f" ({', '.join(OPTIONS)})", *_where(section))
    for key, value in _pairs(section):
        name = str(getattr(key, "value", key))
        if name not in OPTIONS:
            if not warn:
                continue
            import difflib

            line, _ = _where(key)
            near = difflib.get_close_matches(name, list(OPTIONS), n=1, cutoff=0.6)
            log.warning("%s:%d: %s.%s is not an option of mlops_nb%s; it is ignored", shown,
                        line, SETTINGS, name,
                        f" (did you mean '{near[0]}'?)" if near
                        else f" (options: {', '.join(OPTIONS)})")
            continue
        if name == "deploy":
            _check_deploy(value, data[SETTINGS][name], shown, warn)
        if name == "ploomber_jobs":
            jobs = data[SETTINGS][name]
            if type(jobs) is not int or jobs < 1:
                raise ConfigError(shown, f"{SETTINGS}.{name} must be {OPTIONS[name]}, not"
                                         f" {_shown_value(value)}", *_where(value))


def _check_deploy(node: Any, limits: Any, shown: str, warn: bool) -> None:
    """`mlops_nb.deploy`: known limits (unknown: a warning naming the nearest), each a
    positive finite number (the clients a whole number), within _DEPLOY_MAX."""
    import math

    where = f"{SETTINGS}.deploy"
    if node.tag == "tag:yaml.org,2002:null":
        return
    if node.tag != _MAP:
        raise ConfigError(shown, f"{where} must be a mapping of limits"
                                 f" ({', '.join(DEPLOY_LIMITS)}), not {_shown_value(node)}",
                          *_where(node))
    for key, value in _pairs(node):
        name = str(getattr(key, "value", key))
        if name not in DEPLOY_LIMITS:
            if warn:
                import difflib

                near = difflib.get_close_matches(name, list(DEPLOY_LIMITS), n=1, cutoff=0.6)
                log.warning("%s:%d: %s.%s is not a limit of deploy%s; it is ignored", shown,
                            _where(key)[0], where, name[:80],
                            f" (did you mean '{near[0]}'?)" if near
                            else f" (limits: {', '.join(DEPLOY_LIMITS)})")
            continue
        got = limits[name]
        whole = name == "load_test_clients"
        ok = (type(got) is int or (type(got) is float and not whole)) and \
            math.isfinite(got) and 0 < got <= _DEPLOY_MAX.get(name, math.inf)
        if not ok:
            what = "a whole number" if whole else "a positive number"
            top = f" of at most {_DEPLOY_MAX[name]}" if name in _DEPLOY_MAX else ""
            raise ConfigError(shown, f"{where}.{name} must be {what}{top}, not"
                                     f" {_shown_value(value)[:80]}", *_where(value))


def check_parsed(parsed: Parsed, declared: Mapping[str, Mapping[str, str]] | None,
                 shown: str = "params.yaml", skip: set[tuple[str, str]] | None = None,
                 warn: bool = True) -> dict[str, Any]:
    """Types against `declared` ({group: {name: the notebook's literal}}) and mlops_nb's
    options; the plain data. `skip`: (group, name) pairs whose value is not the file's;
    `warn`: log unknown options (False where an earlier check of the same run did)."""
    _check_types(parsed.node, declared or {}, shown, skip or set())
    _check_options(parsed.node, parsed.data, shown, warn)
    return parsed.data


def check(path: Path, declared: Mapping[str, Mapping[str, str]] | None,
          shown: str = "params.yaml", warn: bool = True) -> dict[str, Any]:
    """The whole check of the file at `path` (see the module's rule); its plain data, {}
    when there is no file (compile seeds one)."""
    parsed = parse(path, shown)
    if parsed is None:
        return {}
    return check_parsed(parsed, declared, shown, warn=warn)
