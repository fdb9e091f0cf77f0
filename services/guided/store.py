"""The learner model and guided-session state in Redis (docs/guided.md, docs/learner-profile.md).

Keys (course and user ids are validated to [A-Za-z0-9_.@-], so a key cannot be forged across users):
  guided:learner:{course_id}:{user_id}    JSON: skills (mastery, counts, history), weak_points, recent_topics
  guided:learner-courses:{user_id}        SET of course ids the user has a profile in
  guided:course:{course_id}:teachers      SET of teacher user ids (who may read/correct the course's profiles)
  guided:session:{session_id}             JSON SessionState, expires after GUIDED_SESSION_TTL_SEC
Profiles are written in a WATCH/MULTI transaction, so concurrent turns never lose an update. Durability
is Redis's: the platform runs it with AOF (appendonly yes)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Callable

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from services.guided.mastery import DEFAULT_PARAMS

MAX_HISTORY = 20
MAX_TOPICS = 10
MAX_WEAK_POINTS = 20


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def learner_key(course_id: str, user_id: str) -> str:
    return f"guided:learner:{course_id}:{user_id}"


def courses_key(user_id: str) -> str:
    return f"guided:learner-courses:{user_id}"


def teachers_key(course_id: str) -> str:
    return f"guided:course:{course_id}:teachers"


def session_key(session_id: str) -> str:
    return f"guided:session:{session_id}"


def empty_profile(user_id: str, course_id: str) -> dict[str, Any]:
    return {"user_id": user_id, "course_id": course_id, "created_at": now_iso(), "updated_at": now_iso(),
            "skills": {}, "weak_points": [], "recent_topics": []}


def skill_entry(profile: dict, skill: str) -> dict[str, Any]:
    return profile["skills"].get(skill) or {"mastery": DEFAULT_PARAMS.p_init, "attempts": 0, "correct": 0,
                                            "updated_at": None, "source": "prior", "history": []}


def mastery_of(profile: dict, skill: str) -> float:
    return float(skill_entry(profile, skill)["mastery"])


def record_evidence(profile: dict, skill: str, *, correct: bool | None, before: float, after: float,
                    session_id: str, evidence: str) -> None:
    entry = skill_entry(profile, skill)
    if correct is not None:
        entry["attempts"] += 1
        entry["correct"] += int(correct)
        entry["mastery"] = after
        entry["source"] = "bkt"
        entry["updated_at"] = now_iso()
        entry["history"] = (entry["history"] + [{"at": now_iso(), "correct": correct, "before": before,
                                                 "after": after, "session_id": session_id,
                                                 "evidence": evidence[:200]}])[-MAX_HISTORY:]
    profile["skills"][skill] = entry


def record_weak_point(profile: dict, skill: str, description: str, evidence: str, source: str = "guided") -> None:
    """A weak point with its evidence: one entry per (skill, description), counted and time-stamped."""
    for point in profile["weak_points"]:
        if point["skill"] == skill and point["description"] == description and not point.get("resolved"):
            point["count"] += 1
            point["last_seen"] = now_iso()
            point["evidence"] = (point.get("evidence", []) + [evidence[:200]])[-5:]
            return
    profile["weak_points"].append({"skill": skill, "description": description, "evidence": [evidence[:200]],
                                   "first_seen": now_iso(), "last_seen": now_iso(), "count": 1,
                                   "source": source, "resolved": False})
    profile["weak_points"] = profile["weak_points"][-MAX_WEAK_POINTS:]


def record_topic(profile: dict, topic: str, skill: str) -> None:
    topics = [t for t in profile["recent_topics"] if t["topic"] != topic]
    profile["recent_topics"] = ([{"topic": topic[:200], "skill": skill, "at": now_iso()}] + topics)[:MAX_TOPICS]


class LearnerStore:
    def __init__(self, redis_url: str, session_ttl_sec: int = 7 * 24 * 3600):
        self.redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.session_ttl_sec = session_ttl_sec

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def get_profile(self, user_id: str, course_id: str) -> dict | None:
        raw = await self.redis.get(learner_key(course_id, user_id))
        return json.loads(raw) if raw else None

    async def courses_of(self, user_id: str) -> list[str]:
        return sorted(await self.redis.smembers(courses_key(user_id)))

    async def update_profile(self, user_id: str, course_id: str, change: Callable[[dict], Any]) -> tuple[dict, Any]:
        """Apply `change(profile)` atomically (optimistic WATCH/MULTI, retried on conflict)."""
        key = learner_key(course_id, user_id)
        for _ in range(20):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    profile = json.loads(raw) if raw else empty_profile(user_id, course_id)
                    result = change(profile)
                    profile["updated_at"] = now_iso()
                    pipe.multi()
                    pipe.set(key, json.dumps(profile, ensure_ascii=False))
                    pipe.sadd(courses_key(user_id), course_id)
                    await pipe.execute()
                    return profile, result
                except WatchError:
                    continue
        raise RuntimeError("learner profile update kept conflicting")

    async def teachers(self, course_id: str) -> set[str]:
        return set(await self.redis.smembers(teachers_key(course_id)))

    async def set_teachers(self, course_id: str, teachers: list[str], *, replace: bool = True) -> set[str]:
        async with self.redis.pipeline(transaction=True) as pipe:
            if replace:
                pipe.delete(teachers_key(course_id))
            if teachers:
                pipe.sadd(teachers_key(course_id), *teachers)
            await pipe.execute()
        return await self.teachers(course_id)

    async def load_session(self, session_id: str) -> dict | None:
        raw = await self.redis.get(session_key(session_id))
        return json.loads(raw) if raw else None

    async def save_session(self, session_id: str, state: dict) -> None:
        await self.redis.set(session_key(session_id), json.dumps({**state, "saved_at": time.time()}),
                             ex=self.session_ttl_sec)

    async def scan_keys(self, pattern: str) -> list[str]:
        """Keys matching a glob pattern, by SCAN (never KEYS: it would block Redis on a large keyspace)."""
        return [key async for key in self.redis.scan_iter(match=pattern, count=1000)]

    async def read_json(self, key: str) -> Any:
        """A key another service owns (the writing analysis's weak points), read-only, any Redis type."""
        kind = await self.redis.type(key)
        if kind == "string":
            raw = await self.redis.get(key)
            try:
                return json.loads(raw)
            except (TypeError, ValueError):
                return raw
        if kind == "hash":
            data = await self.redis.hgetall(key)
            return {k: _maybe_json(v) for k, v in data.items()}
        if kind == "list":
            return [_maybe_json(v) for v in await self.redis.lrange(key, 0, 199)]
        if kind == "zset":
            return [_maybe_json(v) for v in await self.redis.zrevrange(key, 0, 199)]
        if kind == "set":
            return [_maybe_json(v) for v in await self.redis.smembers(key)]
        return None


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value
