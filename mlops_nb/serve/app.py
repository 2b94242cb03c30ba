"""The REST service of one registered model: POST /predict, GET /health, /version, /metrics.

`create_app` builds the ASGI app from a ModelHolder (the served model, hot-swapped on
promotion), a RequestLog (the serving log monitoring reads) and the limits. Bad requests are
the client's: a body that breaks the request schema, or records the model cannot predict
(e.g. a value its preparation cannot take), get 422 with the record and field; never a 500.
Predictions run in the thread pool, so the event loop keeps accepting while a model works.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from mlops_nb.serve.guard import Guard
from mlops_nb.serve.holder import ModelHolder, Served
from mlops_nb.serve.metrics import CONTENT_TYPE, Metrics
from mlops_nb.serve.reqlog import RequestLog
from mlops_nb.serve.schema import RequestError, RequestInvalid

log = logging.getLogger(__name__)

MAX_LOCATED = 10  # records named when a batch fails inside the model


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlops_nb")
    except PackageNotFoundError:
        return "unknown"


def _frame(served: Served, records: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame.from_records(records, columns=served.request.columns)


def predict_records(served: Served, records: list[dict[str, Any]]) -> list[Any]:
    """The model's predictions for validated records; RequestInvalid naming the records the
    model cannot take (found by predicting them one by one, only on failure)."""
    import numpy as np

    try:
        with np.errstate(all="ignore"):
            return served.model.predict(_frame(served, records)).tolist()  # type: ignore
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    errors = []
    for i, rec in enumerate(records):
        try:
            with np.errstate(all="ignore"):
                served.model.predict(_frame(served, [rec]))
        except (ValueError, TypeError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(RequestError(i, None, f"record {i}: the model cannot predict it"
                                                f" ({msg})", "model_rejected"))
            if len(errors) >= MAX_LOCATED:
                break
    if not errors:
        errors.append(RequestError(None, None, f"the model cannot predict this batch ({first})",
                                   "model_rejected"))
    raise RequestInvalid(errors)


def create_app(holder: ModelHolder, *, reqlog: RequestLog | None, metrics: Metrics | None = None,
               max_body: int = 2**20, token: str | None = None) -> Any:
    metrics = metrics or Metrics()
    service_version = _package_version()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        if reqlog is not None:
            reqlog.start()
        holder.start()
        try:
            yield
        finally:
            holder.stop()
            if reqlog is not None:
                reqlog.stop()

    app = FastAPI(title=f"mlops-nb model service: {holder.name}", version=service_version,
                  lifespan=lifespan,
                  description="Predictions of the registered model; the request schema comes"
                              " from the model's training data schema.")

    @app.exception_handler(RequestInvalid)
    async def invalid(_request: Request, exc: RequestInvalid) -> JSONResponse:
        return JSONResponse({"detail": "invalid request",
                             "errors": [e.to_dict() for e in exc.errors]}, status_code=422)

    body_schema = holder.current.request.json_schema()

    @app.post("/predict", openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": body_schema}}}},
        responses={422: {"description": "a record or field breaks the request schema"},
                   413: {"description": "request body too large"}})
    async def predict(request: Request) -> dict[str, Any]:
        """Predict a batch of records: {"records": [{column: value, ...}, ...]}."""
        served = holder.current  # one version for the whole request, even across a swap
        body = await request.body()
        records = served.request.parse(body)
        predictions = await run_in_threadpool(predict_records, served, records)
        mv = served.version
        metrics.records.inc(len(records))
        metrics.count_predictions(mv.name, mv.version, collections.Counter(predictions))
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        if reqlog is not None:
            entry = {"ts": time.time(), "request": rid, "model": mv.name, "version": mv.version}
            if not reqlog.submit(entry, records, predictions):
                metrics.log_dropped.inc(len(records))
        return {"model": mv.name, "version": mv.version, "request": rid,
                "predictions": predictions}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and the served version (open without a token)."""
        served = holder.current
        return {"status": "ok" if holder.swap_error is None else "degraded",
                "model": served.version.ref, "swap_error": holder.swap_error}

    @app.get("/version")
    async def version() -> dict[str, Any]:
        """The served model version with its data and code hashes."""
        return {**holder.current.describe(), "swap_error": holder.swap_error,
                "following": "pinned" if holder.pinned else "production",
                "service": f"mlops-nb {service_version}"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return Guard(app, metrics=metrics, max_body=max_body, token=token)
