"""The local model list is cached briefly and refreshed once when it expires, however many requests
arrive while the refresh is in flight (under load they would otherwise each send their own GET /models)."""

import asyncio
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, Counter

from ai_service.chat import ChatEngine
from ai_service.routing import Tier
from ai_service.settings import AIServiceSettings


class SlowModels:
    def __init__(self, fail=False):
        self.calls, self.fail = 0, fail

    async def models(self):
        self.calls += 1
        await asyncio.sleep(0.05)
        if self.fail:
            raise ConnectionError("vLLM down")
        return [{"id": f"base-{self.calls}"}]


def engine(upstream):
    registry = CollectorRegistry()
    router = SimpleNamespace(upstreams={Tier.LOCAL: upstream}, pool=None)
    return ChatEngine(AIServiceSettings(), router=router, retrievals=Counter("r", "r", registry=registry),
                      mode_requests=Counter("m", "m", registry=registry))


def test_concurrent_requests_share_one_refresh_and_the_cache_holds():
    upstream = SlowModels()
    chat = engine(upstream)

    async def go():
        lists = await asyncio.gather(*(chat.local_models() for _ in range(50)))
        again = await chat.local_models()
        fresh = await chat.local_models(fresh=True)
        return lists, again, fresh

    lists, again, fresh = asyncio.run(go())
    assert all(found == [{"id": "base-1"}] for found in lists) and again == [{"id": "base-1"}]
    assert fresh == [{"id": "base-2"}] and upstream.calls == 2


def test_a_failed_refresh_fails_its_waiters_and_the_next_request_tries_again():
    upstream = SlowModels(fail=True)
    chat = engine(upstream)

    async def go():
        results = await asyncio.gather(*(chat.local_models() for _ in range(10)), return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results) and upstream.calls == 1
        assert await chat.local_model_ids() == []  # routing then finds out and falls back or fails properly
        assert upstream.calls == 2

    asyncio.run(go())
