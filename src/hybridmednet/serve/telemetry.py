"""Prometheus metrics of the service (``GET /metrics``), in their own registry.

Requests by route and status, a latency histogram per route, requests in flight, the batch-size
histogram, the queue depth, a model-info gauge (name, backend, checkpoint sha256) and the share
of the last ``window`` predictions flagged out-of-distribution (against the run's val split), so
input drift shows on a dashboard. With ``--workers N`` (several processes) set
``PROMETHEUS_MULTIPROC_DIR`` and the metrics of all workers are aggregated.
"""

from __future__ import annotations

import os
from collections import deque

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10)


class Telemetry:
    def __init__(self, window: int = 500):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("hybridmednet_requests", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("hybridmednet_request_seconds", "request latency", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.in_flight = Gauge("hybridmednet_requests_in_flight", "requests being served", registry=r,
                               multiprocess_mode="livesum")
        self.batch = Histogram("hybridmednet_batch_size", "cases per model batch", ["model"],
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.queue = Gauge("hybridmednet_queue_depth", "cases waiting for a batch", ["model"], registry=r,
                           multiprocess_mode="livesum")
        self.info = Gauge("hybridmednet_model_info", "served models", ["model", "backend", "checkpoint_sha256"],
                          registry=r, multiprocess_mode="liveall")
        self.ood_share = Gauge("hybridmednet_ood_share", "share of recent predictions flagged out-of-distribution",
                               ["model"], registry=r, multiprocess_mode="liveall")
        self.window = window
        self._recent: dict[str, deque] = {}

    def record_ood(self, model: str, flag: bool | None) -> None:
        if flag is None:
            return
        recent = self._recent.setdefault(model, deque(maxlen=self.window))
        recent.append(bool(flag))
        self.ood_share.labels(model).set(sum(recent) / len(recent))

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
