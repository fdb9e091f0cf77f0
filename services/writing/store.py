"""The learner profile's writing weak points in Redis (schema: docs/learner-profile.md)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import redis.asyncio as redis

ID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
MAX_POINTS = 12
MAX_HISTORY = 20
RESOLVED_AT = 0.6


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(profile: dict, user_id: str, course_id: str, weak: list[dict], scored: dict[str, float],
          summary: dict) -> dict:
    """Pure update of one profile value: weak points in, resolved ones flagged, history appended."""
    at = summary["at"]
    profile = profile if isinstance(profile, dict) else {}
    profile.update(schema_version=1, user_id=user_id, course_id=course_id, updated_at=at)
    points = [p for p in profile.get("weak_points") or [] if isinstance(p, dict)]
    by_criterion = {p.get("criterion"): p for p in points}
    for point in weak:
        old = by_criterion.get(point["criterion"])
        entry = {**point, "first_seen": (old or {}).get("first_seen", at), "last_seen": at,
                 "count": int((old or {}).get("count", 0)) + 1, "resolved": False}
        by_criterion[point["criterion"]] = entry
    weak_ids = {p["criterion"] for p in weak}
    for criterion, entry in by_criterion.items():
        if criterion not in weak_ids and criterion in scored and scored[criterion] >= RESOLVED_AT:
            entry["resolved"] = True
    kept = sorted(by_criterion.values(), key=lambda p: str(p.get("last_seen", "")), reverse=True)[:MAX_POINTS]
    profile["weak_points"] = kept
    profile["history"] = ((profile.get("history") or []) + [summary])[-MAX_HISTORY:]
    return profile


class ProfileStore:
    def __init__(self, client: redis.Redis, key_template: str):
        self.redis = client
        self.key_template = key_template

    @classmethod
    def from_url(cls, url: str, key_template: str) -> "ProfileStore":
        return cls(redis.from_url(url, decode_responses=True, socket_timeout=3, socket_connect_timeout=3),
                   key_template)

    def key(self, user_id: str, course_id: str) -> str:
        return self.key_template.format(user_id=user_id, course_id=course_id)

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def get(self, user_id: str, course_id: str) -> dict | None:
        raw = await self.redis.get(self.key(user_id, course_id))
        return json.loads(raw) if raw else None

    async def record(self, user_id: str, course_id: str, weak: list[dict], scored: dict[str, float],
                     summary: dict) -> dict:
        key = self.key(user_id, course_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    try:
                        current = json.loads(raw) if raw else {}
                    except ValueError:
                        current = {}
                    profile = merge(current, user_id, course_id, weak, scored, summary)
                    pipe.multi()
                    pipe.set(key, json.dumps(profile, ensure_ascii=False))
                    await pipe.execute()
                    return profile
                except redis.WatchError:
                    continue
