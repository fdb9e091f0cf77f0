"""`python -m graphrag serve --build-from DIR` as a real process: builds, serves, answers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_serve_builds_the_index_then_answers(course, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GRAPHRAG_PORT": str(port),
           "GRAPH_RAG_INDEX_PATH": str(tmp_path / "index"), "EMBEDDING_PROVIDER": "hashing",
           "VECTOR_STORE_PATH": str(tmp_path / "vectors"), "GRAPH_RAG_ENABLED": "true",
           "APP_ENV": "test", "GRAPHRAG_API_TOKEN": "serve-test-token"}
    log = open(tmp_path / "graphrag.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "graphrag", "serve", "--build-from", course.name],
                               cwd=course.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "graphrag.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "graphrag.log").read_text()
            time.sleep(0.3)
        query = {"query": "中心论点", "top_k": 2, "mode": "hybrid"}
        anonymous = httpx.post(f"http://127.0.0.1:{port}/v1/retrieve", json=query, timeout=10)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_service_token"
        body = httpx.post(f"http://127.0.0.1:{port}/v1/retrieve", json=query, timeout=10,
                          headers={"authorization": "Bearer serve-test-token"}).json()
        assert body["data"][0]["citation"]["path"] == "course/chinese/argument.md"
        assert "skipped course/english/broken.pdf" in (tmp_path / "graphrag.log").read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
        log.close()
