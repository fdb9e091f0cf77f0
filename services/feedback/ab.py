"""Online A/B split of a mode between two versions of its adapter family (contract: docs/feedback.md).

Pure helpers (no FastAPI): the Redis key, the sticky assignment, the split record's validation.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

AB_KEY_PREFIX = "tutorstack:ab:"


def ab_key(mode: str, prefix: str = AB_KEY_PREFIX) -> str:
    return f"{prefix}{mode}"


def bucket(mode: str, subject: str) -> int:
    """0..99, stable for (mode, subject): the same user always lands in the same arm."""
    return int(hashlib.sha256(f"{mode}:{subject}".encode()).hexdigest()[:8], 16) % 100


def assign_variant(mode: str, subject: str, percent: float) -> str:
    return "candidate" if bucket(mode, subject) < percent else "control"


def make_split(family: str, control: str, candidate: str, percent: float, started_at: str | None = None) -> dict:
    if not 0 <= percent <= 100:
        raise ValueError("percent must be between 0 and 100")
    if control == candidate:
        raise ValueError("control and candidate must differ")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"family": family, "control": control, "candidate": candidate, "percent": percent,
            "started_at": started_at or now, "updated_at": now}


def dumps(split: dict) -> str:
    return json.dumps(split, sort_keys=True)
