"""Online A/B assignment: the one rule that ai_service (which serves the split) and the feedback
service (which reports on it) share. Sticky: the same subject always lands in the same arm for a
mode, and raising `percent` only moves subjects from control to candidate, never back."""

from __future__ import annotations

import hashlib

AB_KEY = "tutorstack:ab:{mode}"  # Redis key of a mode's split (docs/feedback.md)


def assign_variant(mode: str, subject: str, percent: float) -> str:
    bucket = int(hashlib.sha256(f"{mode}:{subject}".encode()).hexdigest()[:8], 16) % 100
    return "candidate" if bucket < percent else "control"
