"""Prometheus metrics: one registry per app, so several apps can live in one test process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServiceMetrics:
    def __init__(self, service: str):
        self.service = service
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total", "HTTP requests by route and status",
            ["service", "method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds", "Time to the end of the response body",
            ["service", "method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )

    def counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def histogram(self, name: str, doc: str, labels: list[str], buckets=LATENCY_BUCKETS) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)


class LabelledChildren:
    """metric.labels(*labels), looked up once per label set: on a hot path the labels() lookup costs more than
    the increment itself. Bounded (`limit` label sets kept; beyond it, looked up each time)."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self._found: dict[tuple, object] = {}

    def get(self, metric, *labels: str):
        key = (id(metric), labels)
        found = self._found.get(key)
        if found is None:
            found = metric.labels(*labels)
            if len(self._found) < self.limit:
                self._found[key] = found
        return found
