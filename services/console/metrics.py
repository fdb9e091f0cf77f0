"""Requests and latency from the services' /metrics (Prometheus text), sampled into a short history."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client.parser import text_string_to_metric_families


def totals(text: str) -> dict:
    """Total requests, and the latency sum/count, over every route of one service."""
    requests = latency_sum = latency_count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total":
                requests += sample.value
            elif sample.name == "http_request_duration_seconds_sum":
                latency_sum += sample.value
            elif sample.name == "http_request_duration_seconds_count":
                latency_count += sample.value
    return {"requests": requests, "latency_sum": latency_sum, "latency_count": latency_count}


class MetricsHistory:
    """Per service: points of (time, requests/s, mean latency ms) between consecutive samples."""

    def __init__(self, size: int):
        self.size = size
        self.last: dict[str, tuple[float, dict]] = {}
        self.points: dict[str, deque] = {}

    def add(self, service: str, sample: dict, at: float | None = None) -> None:
        at = at or time.time()
        previous = self.last.get(service)
        self.last[service] = (at, sample)
        if previous is None:
            return
        dt = max(at - previous[0], 1e-6)
        d_req = max(sample["requests"] - previous[1]["requests"], 0.0)
        d_sum = max(sample["latency_sum"] - previous[1]["latency_sum"], 0.0)
        d_count = max(sample["latency_count"] - previous[1]["latency_count"], 0.0)
        point = {"t": round(at, 1), "rps": round(d_req / dt, 3),
                 "latency_ms": round(1000 * d_sum / d_count, 1) if d_count else None}
        self.points.setdefault(service, deque(maxlen=self.size)).append(point)

    def snapshot(self) -> dict:
        return {"services": {name: {"points": list(points),
                                    "requests_total": self.last[name][1]["requests"] if name in self.last else None}
                             for name, points in self.points.items()},
                "sampled": sorted(self.last)}
