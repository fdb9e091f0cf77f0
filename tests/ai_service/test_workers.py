"""`python -m ai_service` with AI_SERVICE_WORKERS=2 runs two uvicorn worker processes on one port
(each builds its app from the environment) and serves; the default stays one process."""

import os

import httpx
import psutil

from tests.support.processes import Process, free_port, python_module, wait_healthy


def test_two_workers_serve_on_one_port(tmp_path):
    port = free_port()
    env = {**os.environ, "APP_ENV": "dev", "AI_SERVICE_PORT": str(port), "AI_SERVICE_WORKERS": "2",
           "SAFETY_ENABLED": "false", "GRAPH_RAG_ENABLED": "false", "LOG_LEVEL": "WARNING",
           "LLM_BASE_URL_LOCAL": "http://127.0.0.1:9/v1", "REDIS_URL": "redis://127.0.0.1:9/0"}
    proc = Process("ai_service-workers", python_module("ai_service"), env, tmp_path)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, 90)
        for _ in range(4):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["service"] == "ai_service"
        workers = [p for p in psutil.Process(proc.popen.pid).children(recursive=True)
                   if "python" in p.name().lower()]
        assert len(workers) >= 2, [p.cmdline() for p in workers]
    finally:
        proc.stop()
