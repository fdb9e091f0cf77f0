"""The online A/B split as ai_service applies it: sticky per subject, the arm's adapter when it is
loaded, the other arm when it is not, and no split when Redis has none or cannot be read."""

import asyncio
import json

import pytest

from ai_service.chat import ChatEngine
from ai_service.modes import ChatMode
from ai_service.settings import AIServiceSettings
from common.ab import assign_variant
from prometheus_client import CollectorRegistry, Counter

PEER = ChatMode("peer", "be a peer", adapter="peer")


class FakeRedis:
    def __init__(self, value=None, fail=False, key="tutorstack:ab:peer"):
        self.value, self.fail, self.reads, self.key = value, fail, 0, key

    async def get(self, key):
        self.reads += 1
        if self.fail:
            raise ConnectionError("redis down")
        assert key == self.key
        return json.dumps(self.value) if self.value else None

    async def aclose(self):
        pass


def engine(loaded, redis, settings=None):
    registry = CollectorRegistry()
    chat = ChatEngine(settings or AIServiceSettings(), router=None, retrievals=Counter("r", "r", registry=registry),
                      mode_requests=Counter("m", "m", registry=registry))
    chat._redis = redis

    async def ids():
        return loaded
    chat.local_model_ids = ids
    return chat


def test_assignment_is_sticky_and_monotonic_in_percent():
    subjects = [f"student-{i}" for i in range(400)]
    at_10 = {s for s in subjects if assign_variant("peer", s, 10) == "candidate"}
    at_50 = {s for s in subjects if assign_variant("peer", s, 50) == "candidate"}
    assert at_10 <= at_50  # raising the share only moves people towards the candidate
    assert 20 <= len(at_10) <= 60 and 160 <= len(at_50) <= 240
    assert all(assign_variant("peer", s, 10) == assign_variant("peer", s, 10) for s in subjects)


def test_no_split_serves_the_newest_version():
    chat = engine(["base", "peer-v1", "peer-v2"], FakeRedis())
    assert asyncio.run(chat.adapter_for_mode(PEER, "s1")) == ("peer-v2", None)


@pytest.mark.parametrize("percent,expected", [(100, ("peer-v3", "candidate")), (0, ("peer-v2", "control"))])
def test_the_split_picks_the_subjects_arm(percent, expected):
    split = {"family": "peer", "control": "peer-v2", "candidate": "peer-v3", "percent": percent}
    chat = engine(["peer-v2", "peer-v3"], FakeRedis(split))
    assert asyncio.run(chat.adapter_for_mode(PEER, "s1")) == expected


def test_an_arm_that_is_not_loaded_gives_way_and_base_is_an_arm():
    split = {"family": "peer", "control": "peer-v2", "candidate": "peer-v9", "percent": 100}
    assert asyncio.run(engine(["peer-v2"], FakeRedis(split)).adapter_for_mode(PEER, "s")) == ("peer-v2", "control")
    base_control = {"family": "peer", "control": "", "candidate": "peer-v2", "percent": 0}
    assert asyncio.run(engine(["peer-v2"], FakeRedis(base_control)).adapter_for_mode(PEER, "s")) == (None, "control")


def test_redis_down_means_no_split_and_reads_are_cached():
    chat = engine(["peer-v1"], FakeRedis(fail=True))
    assert asyncio.run(chat.adapter_for_mode(PEER, "s")) == ("peer-v1", None)
    redis = FakeRedis({"family": "peer", "control": "peer-v1", "candidate": "peer-v1", "percent": 50})
    chat = engine(["peer-v1"], redis)

    async def many():
        for _ in range(20):
            await chat.adapter_for_mode(PEER, "s")
    asyncio.run(many())
    assert redis.reads == 1  # one Redis read a second, not one per request


def test_the_split_is_read_where_the_feedback_service_writes_it(monkeypatch):
    """FEEDBACK_AB_KEY_PREFIX moves the split for both services (common.ab), not for feedback alone."""
    monkeypatch.setenv("FEEDBACK_AB_KEY_PREFIX", "school-a:ab:")
    split = {"family": "peer", "control": "peer-v2", "candidate": "peer-v3", "percent": 100}
    chat = engine(["base", "peer-v2", "peer-v3"], FakeRedis(split, key="school-a:ab:peer"), AIServiceSettings())
    assert asyncio.run(chat.adapter_for_mode(PEER, "s1")) == ("peer-v3", "candidate")
