"""A small real HTTP server on a free port whose /readyz answer a test controls."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.processes import free_port


class FakeService:
    """mode: ready | degraded | not_ready | slow | garbage; stop() closes the socket (connection refused)."""

    def __init__(self, mode: str = "ready", slow_sec: float = 2.0):
        self.mode = mode
        self.slow_sec = slow_sec
        self.port = free_port()
        self.hits = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/readyz"

    def start(self) -> "FakeService":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                fake.hits += 1
                mode = fake.mode
                if mode == "slow":
                    time.sleep(fake.slow_sec)
                if mode == "garbage":
                    body, status = b"<html>oops</html>", 200
                else:
                    checks = {"redis": "ok", "upstream": "ok" if mode != "not_ready" else "failed: ConnectError: x"}
                    if mode == "degraded":
                        checks["graphrag"] = "failed: timeout"
                    body = json.dumps({"status": "not_ready" if mode == "not_ready" else "ready", "checks": checks,
                                       "degraded": ["graphrag"] if mode == "degraded" else []}).encode()
                    status = 503 if mode == "not_ready" else 200
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the poller gave up (timeout): expected
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
