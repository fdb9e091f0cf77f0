"""Online A/B assignment: the one rule that ai_service (which serves the split) and the feedback
service (which reports on it) share. Sticky: the same subject always lands in the same arm for a
mode, and raising `percent` only moves subjects from control to candidate, never back."""

from __future__ import annotations

import hashlib

# A mode's split lives in Redis at <prefix><mode> (docs/feedback.md); both services read the prefix
# from FEEDBACK_AB_KEY_PREFIX, so moving it (tests isolate themselves that way) moves it for both.
AB_KEY_PREFIX = "tutorstack:ab:"


def ab_key(mode: str, prefix: str = AB_KEY_PREFIX) -> str:
    return f"{prefix}{mode}"


def bucket(mode: str, subject: str) -> int:
    """0..99, stable for (mode, subject): the same user always lands in the same arm."""
    return int(hashlib.sha256(f"{mode}:{subject}".encode()).hexdigest()[:8], 16) % 100


def assign_variant(mode: str, subject: str, percent: float) -> str:
    return "candidate" if bucket(mode, subject) < percent else "control"
