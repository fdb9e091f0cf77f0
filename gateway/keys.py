"""API keys: random, shown once, stored only as a SHA-256 hash in Redis, each record signed.

Keys are 32 random bytes, so a fast hash is safe (no dictionary to attack); a slow KDF would
only cost latency on every request.

Each record is JSON with an HMAC-SHA256 signature (GATEWAY_KEY_SIGNING_SECRET) over its fields
*and* the key's hash, so whoever can write to Redis can neither forge a key nor copy an admin
key's record under the hash of a key they hold. A record whose signature fails is rejected and logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from common.auth import ROLES

log = logging.getLogger("gateway.keys")

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


def record_key(key_digest: str) -> str:
    return _HASH_KEY.format(digest=key_digest)


class InvalidRecord(ValueError):
    """A record in Redis that was not written by a gateway holding the signing secret."""


class RecordSigner:
    """Signs and verifies API-key records with HMAC-SHA256."""

    def __init__(self, secret: str):
        if not secret:
            raise ValueError("the API-key signing secret is empty")
        self._secret = secret.encode()

    def _mac(self, fields: dict, key_digest: str) -> str:
        payload = json.dumps({**fields, "digest": key_digest}, sort_keys=True, separators=(",", ":"))
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def dumps(self, key: APIKey, key_digest: str) -> str:
        fields = asdict(key)
        return json.dumps({**fields, "sig": self._mac(fields, key_digest)})

    def loads(self, raw: bytes | str, key_digest: str) -> APIKey:
        try:
            fields = json.loads(raw)
            sig = fields.pop("sig", "") if isinstance(fields, dict) else ""
        except ValueError as exc:
            raise InvalidRecord("not JSON") from exc
        if not isinstance(sig, str) or not hmac.compare_digest(sig, self._mac(fields, key_digest)):
            raise InvalidRecord("missing or wrong signature")
        try:
            return APIKey(**fields)
        except TypeError as exc:
            raise InvalidRecord("unexpected fields") from exc


class APIKeyStore:
    def __init__(self, redis: aioredis.Redis, signer: RecordSigner):
        self.redis = redis
        self.signer = signer

    def parse(self, raw: bytes | str | None, key_digest: str) -> APIKey | None:
        """The key in a record read from Redis; None (and a warning in the log) for a forged one."""
        if not raw:
            return None
        try:
            return self.signer.loads(raw, key_digest)
        except InvalidRecord as exc:
            log.warning("rejected an API-key record whose signature does not verify",
                        extra={"key_id": key_digest[:12], "reason": str(exc)})
            return None

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
            pipe.set(record_key(digest(plain)), self.signer.dumps(key, digest(plain)))
            pipe.hset(_INDEX_KEY, key.id, digest(plain))
            await pipe.execute()
        return plain, key

    async def lookup(self, plain_key: str) -> APIKey | None:
        key_digest = digest(plain_key)
        return self.parse(await self.redis.get(record_key(key_digest)), key_digest)

    async def list(self) -> list[APIKey]:
        digests = [d.decode() if isinstance(d, bytes) else d for d in await self.redis.hvals(_INDEX_KEY)]
        if not digests:
            return []
        raws = await self.redis.mget([record_key(d) for d in digests])
        keys = (self.parse(raw, d) for raw, d in zip(raws, digests))
        return sorted((k for k in keys if k is not None), key=lambda k: k.created_at)

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
