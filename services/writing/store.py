"""The learner profile's writing weak points in Redis (schema: docs/learner-profile.md)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np
import redis.asyncio as redis

from services.writing.scorer import AssignmentStats

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


# Teacher anchors (docs/writing.md "Teacher anchors"). Each entry of the `...:anchors` hash is a JSON object
# {"residual", "recorded_at" (unix seconds), "teacher_score"}; entries written before timestamps were kept are a
# plain residual string, read as such (recorded_at and teacher_score unknown) and replaced on the next write.
# The scripts are registered once (EVALSHA; redis-py loads them again on NOSCRIPT).
_RESIDUAL = """
local function residual(v)
  if string.sub(v, 1, 1) == '{' then return tonumber(cjson.decode(v)['residual']) end
  return tonumber(v)
end
"""

# One teacher anchor per text: a new text adds to m and the sum; the same text scored again replaces its earlier
# entry (a teacher correcting a score), so m stays and the sum moves by the difference. Returns 1 new, 2 replaced.
# KEYS: assignment hash, anchors hash; ARGV: content hash, residual, entry (JSON), ttl.
ADD_ANCHOR = _RESIDUAL + """
local old = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local result = 2
if old then
  redis.call('HINCRBYFLOAT', KEYS[1], 'anchor_sum', tostring(tonumber(ARGV[2]) - residual(old)))
else
  redis.call('HINCRBY', KEYS[1], 'anchor_m', 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'anchor_sum', ARGV[2])
  result = 1
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return result
"""

# Removes one anchor: m - 1 and the sum less its residual, or both fields gone with the last anchor (an exact 0,
# no rounding left over). A missing id changes nothing. Returns {found (0|1), m, sum as a string}.
DELETE_ANCHOR = _RESIDUAL + """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'anchor_m') or '0'), redis.call('HGET', KEYS[1], 'anchor_sum') or '0'}
end
redis.call('HDEL', KEYS[2], ARGV[1])
local m = redis.call('HINCRBY', KEYS[1], 'anchor_m', -1)
if m <= 0 or redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('HDEL', KEYS[1], 'anchor_m', 'anchor_sum')
  redis.call('DEL', KEYS[2])
  return {1, 0, '0'}
end
return {1, m, redis.call('HINCRBYFLOAT', KEYS[1], 'anchor_sum', tostring(-residual(old)))}
"""

# Removes every anchor of the assignment; the essays' running statistics stay. Returns the ids removed.
CLEAR_ANCHORS = """
local ids = redis.call('HKEYS', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], 'anchor_m', 'anchor_sum')
return ids
"""


def parse_anchor(anchor_id: str, value: str) -> dict:
    """One `...:anchors` entry -> {id, residual, recorded_at (unix seconds or None), teacher_score (or None)}; a
    plain residual string is an entry from before timestamps were kept."""
    if value.startswith("{"):
        entry = json.loads(value)
        return {"id": anchor_id, "residual": float(entry["residual"]),
                "recorded_at": entry.get("recorded_at"), "teacher_score": entry.get("teacher_score")}
    return {"id": anchor_id, "residual": float(value), "recorded_at": None, "teacher_score": None}


class AssignmentStatsStore:
    """Running feature statistics per assignment (the scorer's per-assignment calibration; docs/writing.md).

    One Redis hash per assignment, `writing:assignment:{course_id}:{assignment}`: field `n` (essays) and, per
    feature i, `s{i}` (sum) and `q{i}` (sum of squares), updated atomically with HINCRBY/HINCRBYFLOAT. A set of
    content hashes (`...:seen`) keeps a resubmitted text from being counted twice. Only numbers are stored, never
    the text. Both keys expire `ttl_sec` after the last essay.

    Teacher anchors (docs/writing.md "Teacher anchors"): fields `anchor_m` (anchors) and `anchor_sum` (sum of the
    residuals, teacher's normalised score - the model's normalised prediction before that anchor) in the same hash,
    and a hash `...:anchors` (content hash -> JSON entry: residual, recorded_at, teacher_score) so the same text
    anchors once (scored again, its entry is replaced); added, deleted or cleared atomically, each by one Lua
    script registered once (EVALSHA)."""

    def __init__(self, client: redis.Redis, prefix: str = "writing:assignment:", ttl_sec: int = 180 * 86400,
                 max_seen: int = 5000):
        self.redis = client
        self.prefix = prefix
        self.ttl_sec = ttl_sec
        self.max_seen = max_seen
        self._add_anchor = client.register_script(ADD_ANCHOR)
        self._delete_anchor = client.register_script(DELETE_ANCHOR)
        self._clear_anchors = client.register_script(CLEAR_ANCHORS)

    def key(self, assignment: str) -> str:
        return self.prefix + assignment

    async def get_all(self, assignment: str, width: int) -> tuple[AssignmentStats | None, int, float]:
        """One read: the running statistics (None before the first essay), anchors m and the residuals' sum."""
        raw = await self.redis.hgetall(self.key(assignment))
        m, total = int(float(raw.get("anchor_m", 0) or 0)), float(raw.get("anchor_sum", 0.0) or 0.0)
        n = int(float(raw.get("n", 0) or 0))
        if n <= 0:
            return None, m, total
        return (AssignmentStats(n=n, sums=np.array([float(raw.get(f"s{i}", 0.0)) for i in range(width)]),
                                sumsq=np.array([float(raw.get(f"q{i}", 0.0)) for i in range(width)])), m, total)

    async def add_anchor(self, assignment: str, content_hash: str, residual: float,
                         teacher_score: float | None = None, at: float | None = None) -> str:
        """Records one teacher anchor: "new", or "replaced" when this text had anchored the assignment before (the
        teacher's later score replaces the earlier one). `at`: unix seconds (default now)."""
        key = self.key(assignment)
        entry = json.dumps({"residual": float(residual), "recorded_at": round(time.time() if at is None else at, 3),
                            "teacher_score": teacher_score}, separators=(",", ":"))
        result = await self._add_anchor(keys=[key, key + ":anchors"],
                                        args=[content_hash, repr(float(residual)), entry, self.ttl_sec])
        return "new" if int(result) == 1 else "replaced"

    async def list_anchors(self, assignment: str) -> tuple[int, float, list[dict]]:
        """One consistent read (MULTI): anchors m and the residuals' sum as scoring reads them, and every anchor
        (parse_anchor), newest first (entries without a time last)."""
        key = self.key(assignment)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(key, "anchor_m", "anchor_sum")
            pipe.hgetall(key + ":anchors")
            (m, total), entries = await pipe.execute()
        anchors = [parse_anchor(k, v) for k, v in entries.items()]
        anchors.sort(key=lambda a: (a["recorded_at"] is not None, a["recorded_at"] or 0, a["id"]), reverse=True)
        return int(float(m or 0)), float(total or 0.0), anchors

    async def delete_anchor(self, assignment: str, anchor_id: str) -> tuple[bool, int, float]:
        """Removes one anchor: (found, m, sum) after it; nothing changes when the id is not an anchor."""
        key = self.key(assignment)
        found, m, total = await self._delete_anchor(keys=[key, key + ":anchors"], args=[anchor_id])
        return bool(int(found)), int(m), float(total)

    async def clear_anchors(self, assignment: str) -> list[str]:
        """Removes all of the assignment's anchors (the essays' statistics stay); returns the ids removed."""
        key = self.key(assignment)
        return sorted(await self._clear_anchors(keys=[key, key + ":anchors"]))

    async def add(self, assignment: str, content_hash: str, x) -> bool:
        """Adds one essay's feature vector; False (nothing changed) when this text was already counted."""
        key = self.key(assignment)
        seen = key + ":seen"
        if not await self.redis.sadd(seen, content_hash):
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "n", 1)
            for i, v in enumerate(x):
                pipe.hincrbyfloat(key, f"s{i}", float(v))
                pipe.hincrbyfloat(key, f"q{i}", float(v) * float(v))
            pipe.expire(key, self.ttl_sec)
            pipe.expire(seen, self.ttl_sec)
            await pipe.execute()
        if await self.redis.scard(seen) > self.max_seen:  # bound the dedupe set; the sums stay exact
            await self.redis.spop(seen, 1)
        return True
