"""Which reply engine serves a request. Pure: the inputs are read elsewhere (settings, Redis, body).

Precedence: the runtime override (a Redis-held setting, the kill switch: "rules" for everyone)
> the request's own `engine` > the configured engine, where `ab` assigns each trainee sticky to one
engine by a hash of (salt, user_id).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ENGINES = ("rules", "llm")


def ab_bucket(user_id: str, salt: str) -> float:
    """A stable number in [0, 1) for a trainee (same user, same salt -> same bucket, across restarts)."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def ab_engine(user_id: str, salt: str, llm_share: float) -> str:
    return "llm" if ab_bucket(user_id, salt) < llm_share else "rules"


@dataclass(frozen=True)
class EngineChoice:
    engine: str
    assignment: str  # runtime_override | request | ab | config


def choose_engine(*, runtime_override: str | None, requested: str | None, configured: str, user_id: str,
                  salt: str, llm_share: float) -> EngineChoice:
    if runtime_override in ENGINES:
        return EngineChoice(runtime_override, "runtime_override")
    if requested in ENGINES:
        return EngineChoice(requested, "request")
    if configured == "ab":
        return EngineChoice(ab_engine(user_id, salt, llm_share), "ab")
    return EngineChoice(configured if configured in ENGINES else "rules", "config")
