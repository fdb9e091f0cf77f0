"""Online A/B split of a mode between two versions of its adapter family (contract: docs/feedback.md).

Pure helpers (no FastAPI): the split record's validation and encoding. The Redis key and the sticky
assignment are common.ab's, shared with ai_service, which serves the split.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone


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
