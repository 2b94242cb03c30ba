"""Adaptive batching: concurrent requests predicted in one model call, each answered alone.

Each request is parsed and validated on its own first (a bad body gets its own 422 and never
joins a batch). Its records then queue for the model. One model call runs at a time, in a
thread of its own: when it is free it takes what has queued, up to `max_records` records of
the same served version (a request over the limit goes alone, never split), and each caller
gets the predictions of its own records back (and its probabilities if it asked). While a
call runs, new requests queue, so batches grow with the load by themselves; when the model is
free, a request waits for others only while another request is on its way (being validated),
or, when model calls take longer than the wait, while fewer requests are queued than were in
the service at once during the last call (their clients are sending the next ones), and never
longer than `max_wait_ms` once the model is free; alone, or with fast model calls, it goes at
once.

When the model call fails for the batch (a record the model cannot take), every request of
the batch is predicted again alone (app.predict_records), so only the request holding the bad
record fails, with its own record numbers; the others get their answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlops_nb.errors import UsageError

MAX_RECORDS = 100_000  # the largest batch allowed (a batch's records are all in memory)
MAX_WAIT_MS = 1000.0
INLINE_BODY = 16 * 2**10  # bodies up to this size are validated on the event loop (< 1 ms)

Records = list[dict[str, Any]]
Answer = tuple[list[Any], dict[str, Any]]  # predictions, extra fields (classes, probabilities)


@dataclass(frozen=True)
class BatchSettings:
    max_records: int = 1000  # records in one model call
    max_wait_ms: float = 2.0  # longest a request waits for others to join its batch

    def __post_init__(self) -> None:
        check(self.max_records, self.max_wait_ms)


def check(max_records: Any, max_wait_ms: Any) -> None:
    """Refuse batch limits that are not numbers in range, with the option's name."""
    import math

    if isinstance(max_records, bool) or not isinstance(max_records, int) \
            or not 1 <= max_records <= MAX_RECORDS:
        raise UsageError(f"--batch-max-records {max_records!r}: use a whole number from 1"
                         f" (no batching) to {MAX_RECORDS}")
    if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) \
            or not math.isfinite(max_wait_ms) or not 0 < max_wait_ms <= MAX_WAIT_MS:
        raise UsageError(f"--batch-max-wait-ms {max_wait_ms!r}: use a number of milliseconds"
                         f" above 0 and at most {MAX_WAIT_MS:g}")


@dataclass
class _Item:
    served: Any
    records: Records
    proba: bool
    future: asyncio.Future[Answer]


class Batcher:
    """Queues validated requests and predicts them in batches (see the module)."""

    def __init__(self, settings: BatchSettings,
                 alone: Callable[[Any, Records, bool], Answer],
                 together: Callable[[Any, list[Records], list[bool]], list[Answer]]) -> None:
        self.settings = settings
        self._alone = alone  # one request: its answer, or RequestInvalid with its errors
        self._together = together  # several: their answers, or any exception for the batch
        self._queue: list[_Item] = []
        self._arriving = 0  # requests being validated in the thread pool right now
        self._inside = 0  # requests between arrival and answer
        self._peak = 0  # most requests inside at once since the last model call started
        self._last_call = 0.0  # seconds the last model call took
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._model = concurrent.futures.ThreadPoolExecutor(1, "mlops-nb-model")
        self.calls = 0  # model calls made (for tests and logs)
        self.largest = 0  # most requests in one batch

    async def answer(self, served: Any, body: bytes, proba: bool) -> tuple[Records, Answer]:
        """Validate `body` (RequestInvalid for its own errors), then predict its records with
        whatever else is queued; returns its records and its answer."""
        self._inside += 1
        self._peak = max(self._peak, self._inside)
        try:
            return await self._answer(served, body, proba)
        finally:
            self._inside -= 1

    async def _answer(self, served: Any, body: bytes, proba: bool) -> tuple[Records, Answer]:
        from fastapi.concurrency import run_in_threadpool

        if len(body) <= INLINE_BODY:
            records, asked = served.request.parse_request(body)
        else:
            self._arriving += 1
            try:
                records, asked = await run_in_threadpool(served.request.parse_request, body)
            finally:
                self._arriving -= 1
                self._poke()
        loop = asyncio.get_running_loop()
        item = _Item(served, records, proba or asked, loop.create_future())
        self._queue.append(item)
        self._start(loop)
        self._poke()
        return records, await item.future

    def describe(self) -> dict[str, Any]:
        """The limits and what batching did so far (for /version)."""
        return {"max_records": self.settings.max_records,
                "max_wait_ms": self.settings.max_wait_ms, "model_calls": self.calls,
                "largest_batch": self.largest}

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """One dispatcher per event loop (an app served again, or tested, gets a new one)."""
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="mlops-nb-batcher")

    def stop(self) -> None:
        """Stop the dispatcher; a model call under way finishes in its thread."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(0)  # let requests read in this loop turn queue up too
            await self._gather()
            batch = self._take()
            self._peak = self._inside
            started = time.perf_counter()
            try:
                answers = await loop.run_in_executor(self._model, self._predict, batch)
                self._last_call = time.perf_counter() - started
            except BaseException as exc:  # noqa: BLE001 - every caller hears of it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for item, got in zip(batch, answers, strict=True):
                if item.future.done():  # the caller went away
                    continue
                if isinstance(got, BaseException):
                    item.future.set_exception(got)
                else:
                    item.future.set_result(got)

    async def _gather(self) -> None:
        """Wait, up to max_wait_ms once the model is free, for the batch to fill: while
        another request is being validated, or, when the model's calls take longer than the
        wait (a wait then costs less than a call), while fewer requests are queued than were
        in the service at once during the last call (their clients answered and are sending
        the next ones). Never when the batch is full."""
        assert self._wake is not None
        wait = self.settings.max_wait_ms / 1000
        # from now, when the model is free: requests queued during the last call have
        # waited for the model, not for company
        limit = time.perf_counter() + wait
        while self._queued() < self.settings.max_records and (
                self._arriving or (self._last_call > wait and len(self._queue) < self._peak)):
            left = limit - time.perf_counter()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    def _queued(self) -> int:
        return sum(len(i.records) for i in self._queue)

    def _take(self) -> list[_Item]:
        """The oldest request and those after it of the same version, up to max_records."""
        first = self._queue[0]
        batch, rest, size = [first], [], len(first.records)
        for item in self._queue[1:]:
            if item.served is first.served and size + len(item.records) \
                    <= self.settings.max_records:
                batch.append(item)
                size += len(item.records)
            else:
                rest.append(item)
        self._queue = rest
        return batch

    def _predict(self, batch: list[_Item]) -> list[Answer | BaseException]:
        """In the model thread: one call for the batch, else each request alone."""
        self.calls += 1
        self.largest = max(self.largest, len(batch))
        served = batch[0].served
        if len(batch) > 1:
            try:
                return list(self._together(served, [i.records for i in batch],
                                           [i.proba for i in batch]))
            except Exception:  # noqa: BLE001, S110 - each request alone says what failed
                pass
        out: list[Answer | BaseException] = []
        for item in batch:
            try:
                out.append(self._alone(served, item.records, item.proba))
            except Exception as exc:  # noqa: BLE001 - that request's own error
                out.append(exc)
        return out


def predict_together(served: Any, parts: list[Records], probas: list[bool],
                     probabilities: Callable[[Any, Records], dict[str, Any]]) -> list[Answer]:
    """One model call for several requests' records (and one probability call for those
    that asked), split back per request; raises whatever the model raises."""
    records = [r for part in parts for r in part]
    predictions = served.runtime.predict(records)
    asked = [r for part, wants in zip(parts, probas, strict=True) if wants for r in part]
    shared = probabilities(served, asked) if asked else {}
    out: list[Answer] = []
    at = seen = 0
    for part, wants in zip(parts, probas, strict=True):
        extra: dict[str, Any] = {}
        if wants:
            extra = {"classes": shared["classes"],
                     "probabilities": shared["probabilities"][seen:seen + len(part)]}
            seen += len(part)
        out.append((predictions[at:at + len(part)], extra))
        at += len(part)
    return out
