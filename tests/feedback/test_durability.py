"""Durability: votes acknowledged before a kill -9 (of the feedback service, which owns the SQLite store,
and of Redis) are all there after a restart; retries after the restart still count once."""

import os
import signal
import threading
import time

import httpx

from tests.support.processes import Process, free_port, python_module, start_redis, wait_healthy

TOKEN = "durability-token"
HEADERS = {"x-tutorstack-service-token": TOKEN, "x-tutorstack-key-id": "key-d", "x-tutorstack-role": "admin",
           "x-tutorstack-user-id": "dora"}


def start(tmp_path, port, redis_url, n):
    env = {**os.environ, "APP_ENV": "test", "FEEDBACK_API_TOKEN": TOKEN, "FEEDBACK_PORT": str(port),
           "FEEDBACK_DB_PATH": str(tmp_path / "fb.db"), "REDIS_URL": redis_url}
    proc = Process(f"feedback-{n}", python_module("services.feedback"), env, tmp_path)
    wait_healthy(f"http://127.0.0.1:{port}/healthz", proc, 60)
    return proc


def test_acknowledged_votes_survive_kill_9(tmp_path):
    redis_proc, redis_url = start_redis(tmp_path / "redis")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(tmp_path, port, redis_url, 1)
    acknowledged: list[str] = []
    stop = threading.Event()

    def cast():
        with httpx.Client(base_url=url, headers=HEADERS, timeout=5) as client:
            i = 0
            while not stop.is_set():
                try:
                    r = client.post("/v1/feedback", json={"response_id": f"resp-{i}", "vote": "up" if i % 2 else "down",
                                                          "prompt": f"prompt {i}", "answer": f"answer {i}",
                                                          "mode": "peer"})
                except httpx.HTTPError:
                    return  # the service died under us: what was acknowledged before counts
                if r.status_code == 200:
                    acknowledged.append(f"resp-{i}")
                i += 1

    writer = threading.Thread(target=cast)
    try:
        writer.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.popen.pid, signal.SIGKILL)  # mid-stream, no chance to flush anything
        os.killpg(redis_proc.popen.pid, signal.SIGKILL)
        stop.set()
        writer.join(10)
        proc.popen.wait(5)
        assert len(acknowledged) >= 40

        redis_proc, redis_url = start_redis(tmp_path / "redis2")
        proc = start(tmp_path, port, redis_url, 2)
        stored = httpx.get(f"{url}/v1/feedback?limit=1000", headers=HEADERS, timeout=10).json()["data"]
        stored_ids = {v["response_id"] for v in stored}
        missing = [r for r in acknowledged if r not in stored_ids]
        assert not missing, f"{len(missing)} acknowledged votes lost: {missing[:5]}"
        # a client retry of an acknowledged vote after the restart is recognised, not counted again
        retry = httpx.post(f"{url}/v1/feedback", json={"response_id": acknowledged[0], "vote": "up"},
                           headers=HEADERS, timeout=10).json()
        assert retry["duplicate"] is True
        assert len(httpx.get(f"{url}/v1/feedback?limit=1000", headers=HEADERS, timeout=10).json()["data"]) \
            == len(stored)
    finally:
        stop.set()
        proc.stop()
        redis_proc.stop()
