"""The platform health service (port 8005): polls every service's /readyz, keeps a short history
in Redis, serves GET /v1/health (JSON), an HTML status page and Prometheus up/latency metrics."""
