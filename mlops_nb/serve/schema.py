"""The request schema of a served model, derived from its training data schema.

A request is `{"records": [{column: value, ...}, ...]}`. Each record must carry exactly the
schema's columns (a missing or extra field is an error), each value of the column's type
(strict: "5.1" is not a float, true is not a number), finite (NaN and infinity are refused;
JSON has no NaN, Python's parser accepts it), null only where the schema allows nulls, and a
categorical value from the column's domain. Ranges are not enforced here: values outside the
training range are what monitoring must see. The batch holds 1 to `max_rows` records.

Validation runs in pydantic's Rust core straight from the request bytes; every problem is
reported with the record's index and the field's name. Its cost is bounded by the schema
(max_rows x columns), never by what a client invents: a body with more field names than
max_rows records can hold (twice over) is refused after one scan of its bytes (naming a few unknown
fields), unknown fields are put aside by the parser (not turned into an error object each),
and a request's errors are capped at MAX_ERRORS, the last saying how many more there were.

The body may also carry `"proba": true` (class probabilities for a classifier).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mlops_nb.guards.validation.schema import ColumnSchema, Schema

DEFAULT_MAX_ROWS = 1000
MAX_ERRORS = 50  # errors reported per request; the rest are counted
MAX_NAMED = 5  # unknown fields named per record
_EXTRA = "\x00unknown fields"  # where a record's unknown fields are put aside
# in JSON, a quote followed by a colon ends an object key (quotes inside strings are escaped,
# so this may count a string value's `\":` too: an overestimate, never an underestimate)
_KEY_END = re.compile(rb'"[ \t\n\r]*:')
_STRING = re.compile(rb'"((?:[^"\\]|\\.)*)"[ \t\n\r]*(:?)')


def _field_type(col: ColumnSchema) -> Any:
    from pydantic import Field, StrictBool, StrictInt, StrictStr

    kind: Any
    if col.type == "float":
        kind = Annotated[float, Field(strict=True, allow_inf_nan=False)]
    elif col.type == "int":
        kind = StrictInt
    elif col.type == "bool":
        kind = StrictBool
    elif col.type == "category" and col.values:
        kind = Literal[tuple(col.values)]  # type: ignore[valid-type]
    elif col.type == "datetime":
        kind = dt.datetime
    else:
        kind = StrictStr
    return kind | None if col.nullable else kind


@dataclass(frozen=True)
class RequestError:
    """One problem of a request: which record (None: the body itself), which field, what."""

    record: int | None
    field: str | None
    message: str
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record, "field": self.field, "message": self.message,
                "type": self.kind}


class RequestSchema:
    """Parses request bodies (and tables, for batch prediction) for one data schema."""

    def __init__(self, schema: Schema, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        from pydantic import ConfigDict, Field, TypeAdapter, create_model, model_validator

        self.schema = schema
        self.max_rows = max_rows
        self.columns = [c.name for c in schema.columns]
        # field names a body may have before it is refused unparsed: twice what max_rows
        # records hold, so a batch slightly too long still gets its exact errors
        self._max_keys = 64 + 2 * max_rows * len(self.columns)
        # fields are named f0, f1...: a column may be called anything ('sepal length (cm)',
        # '_id', 'model_config'); requests and errors use the column names (aliases)
        fields: dict[str, Any] = {f"f{i}": (_field_type(c), Field(..., alias=c.name))
                                  for i, c in enumerate(schema.columns)}
        # extra="allow": unknown fields are kept aside by the parser and reported here,
        # counted, rather than each becoming an error object (80,000 of them took seconds)
        known = set(self.columns)

        def aside(cls: Any, data: Any) -> Any:
            # unknown fields go aside before validation, as one marker (a few names and the
            # count): an error object each, carrying the whole record, took seconds
            if isinstance(data, dict):
                extra = [k for k in data if k not in known]
                if extra:
                    data = {k: v for k, v in data.items() if k in known}
                    data[_EXTRA] = (extra[:MAX_NAMED], len(extra))
            return data

        self.record_model = create_model(  # type: ignore[call-overload]
            "Record", __config__=ConfigDict(extra="allow"),
            __validators__={"aside": model_validator(mode="before")(aside)},  # type: ignore[dict-item]
            **fields)
        records = Annotated[list[self.record_model],  # type: ignore[name-defined]
                            Field(min_length=1, max_length=max_rows)]
        self.body_model = create_model(  # type: ignore[call-overload]
            "PredictRequest", __config__=ConfigDict(extra="allow"), records=(records, ...),
            proba=(bool, Field(False, strict=True, description="also return each class's"
                                                                " probability (classifiers)")))
        self._adapter = TypeAdapter(self.body_model)
        openapi: dict[str, Any] = self._adapter.json_schema()
        openapi["additionalProperties"] = False  # what the parser enforces, said in OpenAPI
        for sub in openapi.get("$defs", {}).values():
            sub["additionalProperties"] = False
        self._json_schema = openapi
        self._quick = _quick_adapter(schema, max_rows)

    def parse(self, body: bytes) -> list[dict[str, Any]]:
        """The records of a JSON body, or RequestInvalid listing its problems."""
        return self.parse_request(body)[0]

    def parse_request(self, body: bytes) -> tuple[list[dict[str, Any]], bool]:
        """The records of a JSON body and whether it asks for probabilities, or
        RequestInvalid listing its problems (at most MAX_ERRORS, then a count)."""
        from pydantic import ValidationError

        keys = len(_KEY_END.findall(body))
        if keys > self._max_keys:
            raise RequestInvalid(self._too_many_fields(body, keys))
        if self._quick is not None:  # a valid body, straight to dicts (8x faster)
            try:
                quick = self._quick.validate_json(body)
                return quick["records"], bool(quick.get("proba", False))
            except ValidationError:
                pass  # the full parse below says what is wrong, record by record
        try:
            parsed = self._adapter.validate_json(body)
        except ValidationError as exc:
            raise RequestInvalid(self._failed(body, exc)) from None
        extras = _extras(parsed.__pydantic_extra__, None) + [
            e for i, r in enumerate(parsed.records)  # type: ignore[attr-defined]
            for e in _extras(r.__pydantic_extra__, i)]
        if extras:
            raise RequestInvalid(_cap(extras))
        names = self.columns
        rows = [dict(zip(names, (getattr(r, f"f{i}") for i in range(len(names))), strict=True))
                for r in parsed.records]  # type: ignore[attr-defined]
        return rows, bool(parsed.proba)  # type: ignore[attr-defined]

    def json_schema(self) -> dict[str, Any]:
        return self._json_schema

    def _too_many_fields(self, body: bytes, keys: int) -> list[RequestError]:
        """A body with more field names than max_rows records hold: named, not parsed."""
        known = {*self.columns, "records", "proba"}
        unknown: list[str] = []
        for match in _STRING.finditer(body):
            if match.group(2):
                try:
                    name = json.loads(b'"' + match.group(1) + b'"')
                except ValueError:
                    name = match.group(1).decode("utf-8", "replace")
                if name not in known and name not in unknown:
                    unknown.append(name)
                    if len(unknown) >= MAX_NAMED:
                        break
        named = ", ".join(repr(_short(n)) for n in unknown)
        return [RequestError(None, None, f"body: {keys} field names, far more than"
                                         f" {self.max_rows} records of {len(self.columns)}"
                                         f" fields have: unknown fields such as {named}",
                             "extra_forbidden")]

    def _failed(self, body: bytes, exc: Any) -> list[RequestError]:
        """The errors of a body that failed validation: its unknown fields (the parser kept
        none) and the validator's errors; past a few hundred of those (1,000 records x a
        wide schema), the records are checked one by one until MAX_ERRORS are found, so
        the cost stays that of a few records."""
        from pydantic import TypeAdapter, ValidationError
        from pydantic_core import from_json

        try:
            data = from_json(body)
        except ValueError:
            data = None
        extras: list[RequestError] = []
        records = data.get("records") if isinstance(data, dict) else None
        if isinstance(data, dict):
            extras = _extras({k: 1 for k in data if k not in ("records", "proba")}, None)
        if isinstance(records, list) and len(records) <= self.max_rows:
            known = set(self.columns)
            for i, rec in enumerate(records):
                if isinstance(rec, dict) and len(extras) <= MAX_ERRORS:
                    extras += _extras({k: 1 for k in rec if k not in known}, i)
        total = exc.error_count()
        if total <= 4 * MAX_ERRORS or not isinstance(records, list) \
                or len(records) > self.max_rows:
            return _cap(extras + _errors(exc))
        errors: list[RequestError] = []
        adapter = TypeAdapter(self.record_model)
        for i, rec in enumerate(records):
            try:
                adapter.validate_json(json.dumps(rec))
            except ValidationError as one:
                errors += _errors(one, prefix=["records", i])
            if len(errors) >= MAX_ERRORS:
                break
        return _cap(extras + errors[:MAX_ERRORS], total - min(len(errors), MAX_ERRORS))


def _quick_adapter(schema: Schema, max_rows: int) -> Any:
    """A validator of the same rules with no Python in its loop (TypedDicts, unknown fields
    forbidden) giving the records as dicts in the schema's column order: a valid body is
    parsed by it alone; any error sends the body to the full parse, whose messages the
    client gets. None when the schema's names cannot make a TypedDict."""
    from typing import NotRequired

    from pydantic import ConfigDict, Field, StrictBool, TypeAdapter
    from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

    try:
        record = TypedDict("Record", {c.name: _field_type(c)  # type: ignore[misc,name-match]
                                      for c in schema.columns})
        record.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
        body = TypedDict("Body", {  # type: ignore[misc,name-match]  # noqa: UP013
            "records": Annotated[list[record],  # type: ignore[valid-type]
                                 Field(min_length=1, max_length=max_rows)],
            "proba": NotRequired[StrictBool]})
        body.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
        return TypeAdapter(body)
    except Exception:  # noqa: BLE001 - the full parse serves every schema
        return None


class RequestInvalid(Exception):
    """A request body broke the schema; `errors` says where (not an MlopsNbError: it is the
    client's mistake, answered with 422, never a failure of the service)."""

    def __init__(self, errors: list[RequestError]) -> None:
        self.errors = errors
        super().__init__("; ".join(e.message for e in errors[:5]))


def _extras(extra: dict[str, Any] | None, record: int | None) -> list[RequestError]:
    """Unknown fields of the body (record None) or of one record: a few named, then a count."""
    if not extra:
        return []
    if _EXTRA in extra:
        names, count = extra[_EXTRA]
    else:
        names, count = list(extra)[:MAX_NAMED], len(extra)
    where = f"record {record}" if record is not None else "body"
    out = [RequestError(record, _short(name), f"{where}, field '{_short(name)}': unknown"
                        " field (not in the model's data schema)", "extra_forbidden")
           for name in names[:MAX_NAMED]]
    if count > MAX_NAMED:
        out.append(RequestError(record, None, f"{where}: and {count - MAX_NAMED} more"
                                              " unknown fields", "extra_forbidden"))
    return out


def _cap(errors: list[RequestError], more: int = 0) -> list[RequestError]:
    """At most MAX_ERRORS errors, the last saying how many were left out."""
    more += max(0, len(errors) - MAX_ERRORS)
    errors = errors[:MAX_ERRORS]
    if more > 0:
        errors.append(RequestError(None, None, f"and {more} more errors", "more_errors"))
    return errors


def _short(name: str, limit: int = 80) -> str:
    return name if len(name) <= limit else name[:limit] + "..."


def _errors(exc: Any, prefix: list[Any] | None = None) -> list[RequestError]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [*(prefix or []), *err.get("loc", ())]
        record = field = None
        if loc[:1] == ["records"] and len(loc) >= 2 and isinstance(loc[1], int):
            record = loc[1]
            field = str(loc[2]) if len(loc) >= 3 else None
        elif loc:
            field = ".".join(str(p) for p in loc)
        kind = str(err.get("type", "invalid"))
        msg = str(err.get("msg", "invalid value"))
        if kind == "too_long" and loc == ["records"]:
            limit = (err.get("ctx") or {}).get("max_length", "?")
            msg = f"too many records: at most {limit} per request"
        elif kind == "too_short" and loc == ["records"]:
            msg = "empty batch: send at least one record"
        elif kind == "extra_forbidden":
            msg = "unknown field (not in the model's data schema)"
        where = (f"record {record}" if record is not None else "body") + (
            f", field '{field}'" if field else "")
        out.append(RequestError(record, field, f"{where}: {msg}", kind))
    return out
