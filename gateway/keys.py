"""API keys: random, shown once, stored only as a SHA-256 hash in Redis.

Keys are 32 random bytes, so a fast hash is safe (no dictionary to attack); a slow KDF would
only cost latency on every request.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from common.auth import ROLES

KEY_PREFIX = "ts-"
_HASH_KEY = "tutorstack:apikeys:{digest}"
_INDEX_KEY = "tutorstack:apikeys:index"


@dataclass(frozen=True)
class APIKey:
    id: str
    name: str
    classification: str  # default data classification of this key's requests: private | public
    rpm: int  # requests per minute
    created_at: float
    user_id: str | None = None  # the learner or teacher this key acts for, when it acts for one
    role: str = "student"  # student | teacher | admin


def digest(plain_key: str) -> str:
    return hashlib.sha256(plain_key.encode()).hexdigest()


class APIKeyStore:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    async def create(self, name: str, *, classification: str = "private", rpm: int = 60, role: str = "student",
                     user_id: str | None = None) -> tuple[str, APIKey]:
        if classification not in ("private", "public"):
            raise ValueError("classification must be 'private' or 'public'")
        if rpm < 1:
            raise ValueError("rpm must be at least 1")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        key = APIKey(id=digest(plain)[:12], name=name, classification=classification, rpm=rpm, created_at=time.time(),
                     user_id=user_id or None, role=role)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_HASH_KEY.format(digest=digest(plain)), json.dumps(asdict(key)))
            pipe.hset(_INDEX_KEY, key.id, digest(plain))
            await pipe.execute()
        return plain, key

    async def lookup(self, plain_key: str) -> APIKey | None:
        raw = await self.redis.get(_HASH_KEY.format(digest=digest(plain_key)))
        return APIKey(**json.loads(raw)) if raw else None

    async def list(self) -> list[APIKey]:
        digests = await self.redis.hvals(_INDEX_KEY)
        if not digests:
            return []
        raws = await self.redis.mget([_HASH_KEY.format(digest=d.decode() if isinstance(d, bytes) else d) for d in digests])
        return sorted((APIKey(**json.loads(r)) for r in raws if r), key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> bool:
        key_digest = await self.redis.hget(_INDEX_KEY, key_id)
        if key_digest is None:
            return False
        key_digest = key_digest.decode() if isinstance(key_digest, bytes) else key_digest
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_HASH_KEY.format(digest=key_digest))
            pipe.hdel(_INDEX_KEY, key_id)
            await pipe.execute()
        return True
