"""The service's Prometheus metrics: requests, latency, errors, predictions per class.

Each app has its own CollectorRegistry (no global state). With several worker processes
(`--workers`), prometheus_client's multiprocess mode is used: each worker writes its values to
files under $PROMETHEUS_MULTIPROC_DIR and /metrics adds them up, whichever worker answers.
"""

from __future__ import annotations

import os
from typing import Any

PATHS = ("/predict", "/health", "/version", "/metrics", "/docs", "/openapi.json")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mlops_nb_requests", "HTTP requests answered",
                                ["path", "status"], registry=r)
        self.errors = Counter("mlops_nb_request_errors",
                              "HTTP requests answered with a 4xx or 5xx status",
                              ["path", "status"], registry=r)
        self.latency = Histogram("mlops_nb_request_seconds", "time to answer a request",
                                 ["path"], buckets=BUCKETS, registry=r)
        self.predictions = Counter("mlops_nb_predictions", "predictions made, by model"
                                   " version and predicted class",
                                   ["model", "version", "prediction"], registry=r)
        self.records = Counter("mlops_nb_records", "records received in /predict requests",
                               registry=r)
        self.log_dropped = Counter("mlops_nb_log_dropped_records",
                                   "served records not logged because the log queue was full",
                                   registry=r)

    def observe(self, path: str, status: int, seconds: float) -> None:
        label = path if path in PATHS else "other"
        self.requests.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)
        if status >= 400:
            self.errors.labels(label, str(status)).inc()

    def count_predictions(self, model: str, version: int, counts: dict[Any, int]) -> None:
        for value, n in counts.items():
            self.predictions.labels(model, str(version), str(value)).inc(n)

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)  # type: ignore[no-any-return]
        return generate_latest(self.registry)  # type: ignore[no-any-return]
