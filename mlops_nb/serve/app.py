"""The REST service of one registered model: POST /predict and /feedback, GET /health,
/version, /metrics.

`create_app` builds the ASGI app from a ModelHolder (the served model, hot-swapped on
promotion), a RequestLog (the serving log monitoring reads) and the limits. Bad requests are
the client's: a body that breaks the request schema, or records the model cannot predict
(e.g. a value its preparation cannot take), get 422 with the record and field; never a 500.
A body over 16 KiB is parsed and validated in the thread pool (a smaller one, well under a
millisecond, on the event loop), and the model predicts in a thread of its own, batching
concurrent requests (batching.py), so the event loop keeps accepting (and /health answering)
while a large body is checked or a model works. The runtime (runtime.py) is scikit-learn or
the version's checked ONNX export.
A classifier's class probabilities come with `?proba=true` or `"proba": true` in the body.

Every /predict answer carries its request id (`request`, and the X-Request-Id header): the
client's own X-Request-Id when it is 1 to 128 printable characters, else a new one. A record's
index is its place in `records` (and `predictions`). POST /feedback takes the true labels of
earlier predictions by request id and index (serve/feedback.py); it runs on a thread of its
own, so labels never hold the threads /predict uses.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mlops_nb.errors import MlopsNbError
from mlops_nb.serve.batching import Batcher, BatchSettings, predict_together
from mlops_nb.serve.feedback import FeedbackInvalid, FeedbackStore
from mlops_nb.serve.feedlog import valid_id
from mlops_nb.serve.guard import LOOPBACK_HOSTS, Guard
from mlops_nb.serve.holder import ModelHolder, Served
from mlops_nb.serve.metrics import CONTENT_TYPE, Metrics
from mlops_nb.serve.reqlog import RequestLog
from mlops_nb.serve.schema import RequestError, RequestInvalid
from mlops_nb.serve.shadow import Shadow

log = logging.getLogger(__name__)

MAX_LOCATED = 10  # records named when a batch fails inside the model


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlops_nb")
    except PackageNotFoundError:
        return "unknown"


def predict_records(served: Served, records: list[dict[str, Any]]) -> list[Any]:
    """The model's predictions for validated records; RequestInvalid naming the records the
    model cannot take (found by predicting them one by one, only on failure)."""
    try:
        return served.runtime.predict(records)
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    errors = []
    for i, rec in enumerate(records):
        try:
            served.runtime.predict([rec])
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


def classes_of(served: Served) -> list[Any] | None:
    """A classifier's classes (None for a regressor)."""
    classes = getattr(served.model, "classes_", None)
    return None if classes is None else list(classes)


def probabilities(served: Served, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each record's probability per class; RequestInvalid when the model has none."""
    import numpy as np

    classes = classes_of(served)
    if classes is None or not hasattr(served.model, "predict_proba"):
        raise RequestInvalid([RequestError(None, "proba", f"{served.version.ref} gives no class"
                                                          " probabilities (not a classifier)",
                                           "proba_unavailable")])
    proba = served.runtime.proba(records)
    # float32 values (what ONNX gives) to 6 decimals: the same JSON from either runtime
    return {"classes": [c.item() if hasattr(c, "item") else c for c in classes],
            "probabilities": np.round(np.asarray(proba, dtype=np.float32).astype(np.float64),
                                      6).tolist()}


def _alone(served: Served, records: list[dict[str, Any]], proba: bool
           ) -> tuple[list[Any], dict[str, Any]]:
    """One request's predictions (and probabilities if asked), on its own."""
    predictions = predict_records(served, records)
    return predictions, probabilities(served, records) if proba else {}


def _wants_proba(request: Request) -> bool:
    value = request.query_params.get("proba", "").lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise RequestInvalid([RequestError(None, "proba", "query parameter proba: use true or"
                                                      " false", "bool_parsing")])


def request_id(given: str | None) -> str:
    """The client's X-Request-Id when it is one a label can name, else a new unique id."""
    return given if given is not None and valid_id(given) else uuid.uuid4().hex


FEEDBACK_BODY = {
    "type": "object", "required": ["labels"], "additionalProperties": False,
    "properties": {"labels": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["request", "label"], "additionalProperties": False,
        "properties": {
            "request": {"type": "string", "minLength": 1, "maxLength": 128,
                        "description": "the request id /predict answered with"},
            "index": {"type": "integer", "minimum": 0, "default": 0,
                      "description": "the record's place in that request's records"},
            "label": {"description": "the true value: one of a classifier's classes, or"
                                     " a number for a regressor"}}}}}}


def create_app(holder: ModelHolder, *, reqlog: RequestLog | None, metrics: Metrics | None = None,
               max_body: int = 2**20, token: str | None = None,
               allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS,
               feedback: FeedbackStore | None = None, shadow: Shadow | None = None,
               batching: BatchSettings | None = None) -> Any:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    metrics = metrics or Metrics()
    service_version = _package_version()
    # feedback waits on the feedback lock and the serving log: on a thread of its own,
    # never on the pool that /predict parses and predicts in
    labels_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-nb-feedback")
    batcher = Batcher(batching or BatchSettings(), alone=_alone,
                      together=functools.partial(predict_together,
                                                 probabilities=probabilities))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        if reqlog is not None:
            reqlog.start()
        holder.start()
        if shadow is not None:
            shadow.start()
        try:
            yield
        finally:
            batcher.stop()
            holder.stop()
            if shadow is not None:  # before the log stops: what it predicts is logged
                shadow.stop()
            labels_thread.shutdown(wait=True, cancel_futures=True)
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

    @app.post("/predict", openapi_extra={
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": body_schema}}},
        "parameters": [{"name": "proba", "in": "query", "required": False,
                        "schema": {"type": "boolean", "default": False},
                        "description": "also return each class's probability (classifiers):"
                                       " `classes` and `probabilities`, one row per record"}]},
        responses={422: {"description": "a record or field breaks the request schema"},
                   413: {"description": "request body too large"},
                   503: {"description": "no production version to serve"}})
    async def predict(request: Request) -> Any:
        """Predict a batch of records: {"records": [{column: value, ...}, ...]}; with
        `?proba=true` (or `"proba": true`) a classifier's class probabilities too."""
        served = holder.current  # one version for the whole request, even across a swap
        if not holder.available:
            return JSONResponse({"detail": holder.problem}, status_code=503)
        proba = _wants_proba(request)
        body = await request.body()
        # validated alone, predicted with concurrent requests (batching.py)
        records, (predictions, extra) = await batcher.answer(served, body, proba)
        mv = served.version
        metrics.records.inc(len(records))
        metrics.count_predictions(mv.name, mv.version, predictions, classes_of(served))
        rid = request_id(request.headers.get("x-request-id"))
        if reqlog is not None:
            entry = {"ts": time.time(), "request": rid, "model": mv.name, "version": mv.version}
            if not reqlog.submit(entry, records, predictions):
                metrics.log_dropped.inc(len(records))
            if shadow is not None:  # after the answer is made; never waits (serve/shadow.py)
                shadow.submit(rid, entry["ts"], records, mv.version)
        return JSONResponse({"model": mv.name, "version": mv.version, "request": rid,
                             "predictions": predictions, **extra},
                            headers={"x-request-id": rid})

    @app.post("/feedback", openapi_extra={
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": FEEDBACK_BODY}}}},
        responses={422: {"description": "a bad entry (unknown request id, wrong label type,"
                                        " a label already stored): nothing was stored"},
                   413: {"description": "request body too large"},
                   503: {"description": "no serving log to check labels against"}})
    async def feedback_labels(request: Request) -> Any:
        """Store the true labels of earlier predictions: {"labels": [{"request": ID,
        "index": N, "label": VALUE}, ...]}; all of them, or none (422 naming each bad
        entry)."""
        if feedback is None:
            return JSONResponse({"detail": "this service keeps no serving log, so it cannot"
                                           " take feedback"}, status_code=503)
        body = await request.body()
        loop = asyncio.get_running_loop()
        try:
            stored = await loop.run_in_executor(labels_thread, feedback.submit_body, body)
        except FeedbackInvalid as exc:
            return JSONResponse({"detail": "invalid feedback: nothing was stored",
                                 "errors": [e.to_dict() for e in exc.errors]}, status_code=422)
        except (MlopsNbError, OSError) as exc:  # a full disk, a planted link: not stored
            log.error("feedback not stored: %s", exc)
            return JSONResponse({"detail": "the labels could not be stored (see the"
                                           " service's log); nothing was stored"},
                                status_code=503)
        metrics.labels.inc(stored)
        return {"model": holder.name, "stored": stored}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and the served version (open without a token); `degraded` with the
        reason when the service cannot follow the registry or has nothing to serve."""
        served = holder.current
        ok = holder.problem is None and holder.available
        return {"status": "ok" if ok else "degraded", "model": served.version.ref,
                "reason": holder.problem, "swap_error": holder.problem,
                **({"shadow": shadow.describe()} if shadow is not None else {})}

    @app.get("/version")
    async def version() -> dict[str, Any]:
        """The served model version with its data and code hashes."""
        return {**holder.current.describe(), "swap_error": holder.swap_error,
                "following": "pinned" if holder.pinned else holder.stage,
                "batching": batcher.describe(),
                "service": f"mlops-nb {service_version}",
                **({"shadow": shadow.describe()} if shadow is not None else {})}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return Guard(app, metrics=metrics, max_body=max_body, token=token,
                 allowed_hosts=allowed_hosts)
