"""The console's own logic: metrics sampling arithmetic and static assets served locally."""

from fastapi.testclient import TestClient

from services.console.app import create_app
from services.console.metrics import MetricsHistory, totals
from services.console.settings import ConsoleSettings

TEXT = """# TYPE http_requests_total counter
http_requests_total{service="gateway",method="POST",route="/v1/chat",status="200"} 10.0
http_requests_total{service="gateway",method="GET",route="/v1/models",status="200"} 5.0
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_sum{service="gateway",method="POST",route="/v1/chat",status="200"} 3.0
http_request_duration_seconds_count{service="gateway",method="POST",route="/v1/chat",status="200"} 15.0
"""


def test_totals_and_rates():
    sample = totals(TEXT)
    assert sample == {"requests": 15.0, "latency_sum": 3.0, "latency_count": 15.0}
    history = MetricsHistory(10)
    history.add("gateway", sample, at=100.0)
    history.add("gateway", {"requests": 25.0, "latency_sum": 5.0, "latency_count": 25.0}, at=110.0)
    point = history.snapshot()["services"]["gateway"]["points"][0]
    assert point == {"t": 110.0, "rps": 1.0, "latency_ms": 200.0}


def test_page_and_assets_are_local():
    app = create_app(ConsoleSettings(CONSOLE_GATEWAY_URL="http://127.0.0.1:9", CONSOLE_METRICS_TARGETS=""))
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        for asset in ("/static/app.js", "/static/style.css"):
            assert client.get(asset).status_code == 200
        # the gateway is down: the pass-through says so in OpenAI's error shape
        r = client.get("/v1/models", headers={"authorization": "Bearer x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "gateway_unavailable"
