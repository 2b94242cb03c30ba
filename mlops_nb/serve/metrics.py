"""The service's Prometheus metrics: requests, latency, errors, predictions per class.

Each app has its own CollectorRegistry (no global state). With several worker processes
(`--workers`), prometheus_client's multiprocess mode is used: each worker writes its values to
files under $PROMETHEUS_MULTIPROC_DIR and /metrics adds them up, whichever worker answers.

Rule: every label value comes from a bounded set, never from what a request or a model
produces freely: paths are the service's own (others are "other"), a classifier's
predictions are labelled with its classes (at most MAX_CLASSES, the rest "other"), and a
regressor's go into a histogram of values (mlops_nb_prediction_value), one series per model
version.
"""

from __future__ import annotations

import collections
import os
from typing import Any

PATHS = ("/predict", "/feedback", "/health", "/version", "/metrics", "/docs", "/openapi.json")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_CLASSES = 100  # class labels of a classifier's predictions; the rest count as "other"
VALUE_BUCKETS = tuple(sorted({s * 10.0 ** e for s in (-1, 1) for e in range(-3, 7)} | {0.0}))


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
        self.values = Histogram("mlops_nb_prediction_value", "predicted values of a"
                                " regressor, by model version", ["model", "version"],
                                buckets=VALUE_BUCKETS, registry=r)
        self.labels = Counter("mlops_nb_feedback_labels", "true labels stored through"
                              " /feedback", registry=r)
        self.log_dropped = Counter("mlops_nb_log_dropped_records",
                                   "served records not logged (the log queue was full, or"
                                   " the log could not be written)", registry=r)

    def observe(self, path: str, status: int, seconds: float) -> None:
        label = path if path in PATHS else "other"
        self.requests.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)
        if status >= 400:
            self.errors.labels(label, str(status)).inc()

    def count_predictions(self, model: str, version: int, predictions: list[Any],
                          classes: list[Any] | None) -> None:
        """A classifier's predictions by class (`classes`: its classes_), a regressor's
        (classes None) as a histogram of values."""
        if classes is None:
            hist = self.values.labels(model, str(version))
            for value in predictions:
                try:
                    hist.observe(float(value))
                except (TypeError, ValueError):
                    continue
            return
        known = {str(c) for c in classes[:MAX_CLASSES]}
        counts = collections.Counter(str(v) if str(v) in known else "other"
                                     for v in predictions)
        for label, n in counts.items():
            self.predictions.labels(model, str(version), label).inc(n)

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)  # type: ignore[no-any-return]
        return generate_latest(self.registry)  # type: ignore[no-any-return]
