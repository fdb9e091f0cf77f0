"""Console settings (env names = field names upper-cased, or the alias)."""

from __future__ import annotations

from pydantic import Field

from common.settings import ServiceSettings

DEFAULT_METRICS_TARGETS = "gateway=http://localhost:8080/metrics,ai_service=http://localhost:8001/metrics"


class ConsoleSettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="CONSOLE_HOST")
    port: int = Field(default=8090, validation_alias="CONSOLE_PORT")
    # The public gateway: the console passes the browser's API key on, unchanged (no internal token).
    gateway_url: str = Field(default="http://localhost:8080", validation_alias="CONSOLE_GATEWAY_URL")
    # name=url pairs: the services' Prometheus endpoints sampled for the requests/latency chart.
    metrics_targets: str = Field(default=DEFAULT_METRICS_TARGETS, validation_alias="CONSOLE_METRICS_TARGETS")
    metrics_interval_sec: float = Field(default=5.0, gt=0, validation_alias="CONSOLE_METRICS_INTERVAL_SEC")
    metrics_history: int = Field(default=120, ge=2, validation_alias="CONSOLE_METRICS_HISTORY")
    grafana_url: str = Field(default="", validation_alias="CONSOLE_GRAFANA_URL")
    request_timeout_sec: float = Field(default=300.0, gt=0, validation_alias="CONSOLE_REQUEST_TIMEOUT_SEC")

    def target_list(self) -> list[tuple[str, str]]:
        pairs = []
        for item in self.metrics_targets.split(","):
            name, _, url = item.strip().partition("=")
            if name and url:
                pairs.append((name.strip(), url.strip()))
        return pairs
