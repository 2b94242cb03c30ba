"""The request schema of a served model, derived from its training data schema.

A request is `{"records": [{column: value, ...}, ...]}`. Each record must carry exactly the
schema's columns (a missing or extra field is an error), each value of the column's type
(strict: "5.1" is not a float, true is not a number), finite (NaN and infinity are refused;
JSON has no NaN, Python's parser accepts it), null only where the schema allows nulls, and a
categorical value from the column's domain. Ranges are not enforced here: values outside the
training range are what monitoring must see. The batch holds 1 to `max_rows` records.

Validation runs in pydantic's Rust core straight from the request bytes; every problem is
reported with the record's index and the field's name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mlops_nb.guards.validation.schema import ColumnSchema, Schema

DEFAULT_MAX_ROWS = 1000


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
        from pydantic import ConfigDict, Field, TypeAdapter, create_model

        self.schema = schema
        self.max_rows = max_rows
        self.columns = [c.name for c in schema.columns]
        # fields are named f0, f1...: a column may be called anything ('sepal length (cm)',
        # '_id', 'model_config'); requests and errors use the column names (aliases)
        fields: dict[str, Any] = {f"f{i}": (_field_type(c), Field(..., alias=c.name))
                                  for i, c in enumerate(schema.columns)}
        self.record_model = create_model(  # type: ignore[call-overload]
            "Record", __config__=ConfigDict(extra="forbid"), **fields)
        records = Annotated[list[self.record_model],  # type: ignore[name-defined]
                            Field(min_length=1, max_length=max_rows)]
        self.body_model = create_model(  # type: ignore[call-overload]
            "PredictRequest", __config__=ConfigDict(extra="forbid"), records=(records, ...))
        self._adapter = TypeAdapter(self.body_model)

    def parse(self, body: bytes) -> list[dict[str, Any]]:
        """The records of a JSON body, or RequestInvalid listing every problem."""
        from pydantic import ValidationError

        try:
            parsed = self._adapter.validate_json(body)
        except ValidationError as exc:
            raise RequestInvalid(_errors(exc)) from None
        names = self.columns
        return [dict(zip(names, r.__dict__.values(), strict=True))
                for r in parsed.records]  # type: ignore[attr-defined]

    def json_schema(self) -> dict[str, Any]:
        return self._adapter.json_schema()  # type: ignore[no-any-return]


class RequestInvalid(Exception):
    """A request body broke the schema; `errors` says where (not an MlopsNbError: it is the
    client's mistake, answered with 422, never a failure of the service)."""

    def __init__(self, errors: list[RequestError]) -> None:
        self.errors = errors
        super().__init__("; ".join(e.message for e in errors[:5]))


def _errors(exc: Any) -> list[RequestError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = list(err.get("loc", ()))
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
