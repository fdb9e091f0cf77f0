"""Weak points the writing analysis records (docs/learner-profile.md), read here to pick what to practise.

The reader is tolerant of the record's shape (a JSON object with a `weak_points` list, a list, a hash of
JSON values): each entry's skill comes from its own skill field when it names one of ours, else from its
description through the skill taxonomy."""

from __future__ import annotations

import re
from typing import Any

from common.ids import ID_CHARS
from common.logging import get_logger
from services.guided.skills import BY_ID, skill_for

log = get_logger("guided.weak_points")

_SKILL_FIELDS = ("skill", "dimension", "category", "criterion", "rubric", "type", "kind")
_TEXT_FIELDS = ("description", "label", "message", "issue", "summary", "name", "text")
_TIME_FIELDS = ("last_seen", "updated_at", "at", "timestamp", "first_seen", "created_at")


def normalise(record: Any) -> list[dict]:
    """Entries {skill, description, evidence, last_seen, count, source: "writing"} from any shape."""
    if isinstance(record, dict):
        entries = record.get("weak_points") or record.get("weakPoints") or record.get("items")
        if entries is None:
            entries = [v if isinstance(v, dict) else {"skill": k, "description": str(v)} for k, v in record.items()]
    elif isinstance(record, list):
        entries = record
    else:
        return []
    points = []
    for entry in entries:
        if isinstance(entry, str):
            entry = {"description": entry}
        if not isinstance(entry, dict) or entry.get("resolved"):
            continue
        text = next((str(entry[f]) for f in _TEXT_FIELDS if entry.get(f)), "")
        named = next((str(entry[f]) for f in _SKILL_FIELDS if entry.get(f)), "")
        skill = named if named in BY_ID else skill_for(f"{named} {text}")
        evidence = entry.get("evidence") or entry.get("examples") or []
        if isinstance(evidence, (str, dict)):
            evidence = [evidence]
        points.append({"skill": skill, "description": (text or named)[:200], "evidence": evidence[:3],
                       "last_seen": next((entry[f] for f in _TIME_FIELDS if entry.get(f)), None),
                       "count": entry.get("count") or entry.get("occurrences") or 1, "source": "writing"})
    return points


async def writing_weak_points(store, key_template: str, user_id: str, course_id: str) -> list[dict]:
    if not key_template:
        return []
    try:
        record = await store.read_json(key_template.format(user_id=user_id, course_id=course_id))
    except Exception as exc:  # another service's data: never fail a turn on it
        log.warning("writing weak points unreadable", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
        return []
    return normalise(record)


async def writing_profile_courses(store, key_template: str, user_id: str) -> list[str]:
    """The courses for which the writing analysis keeps a profile of this learner: the keys the template
    gives for any course (the writing service keeps no per-learner index of them, so they are found by
    SCAN; ids hold no glob characters). A course with writing weak points and no guided session yet is
    still one of the learner's courses."""
    if not key_template:
        return []
    # the template with the learner filled in and the course as a capture, e.g. learner:(course):s-42
    course_field = "\x00course\x00"
    shape = re.escape(key_template.format(course_id=course_field, user_id=user_id))
    shape = re.compile(shape.replace(re.escape(course_field), f"({ID_CHARS})"))
    try:
        keys = await store.scan_keys(key_template.format(course_id="*", user_id=user_id))
    except Exception as exc:  # another service's data: never fail a read on it
        log.warning("writing profiles unlistable", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
        return []
    return sorted({match.group(1) for key in keys if (match := shape.fullmatch(key))})


def _rank(point: dict) -> tuple:
    count = point.get("count")
    return (count if isinstance(count, (int, float)) else 1, str(point.get("last_seen") or ""))


def pick_focus(skill: str, guided_points: list[dict], writing_points: list[dict]) -> dict | None:
    """The weak point to work on: the writing analysis's on this skill, then our own on this skill,
    then the writing analysis's most frequent one."""
    open_guided = [p for p in guided_points if not p.get("resolved")]
    for pool in ([p for p in writing_points if p["skill"] == skill], [p for p in open_guided if p["skill"] == skill],
                 writing_points):
        if pool:
            best = max(pool, key=_rank)
            return {"source": best.get("source", "guided"), "skill": best["skill"],
                    "description": best["description"], "evidence": best.get("evidence", [])[:3],
                    "last_seen": best.get("last_seen")}
    return None
