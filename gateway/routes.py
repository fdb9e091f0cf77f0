"""The public API surface: the only (method, path) pairs the gateway forwards, and path hygiene.

Pure logic, no FastAPI. Anything not listed here is answered 404 by the gateway itself, before
the API key is looked up, so `/v1/../openapi.json`, `/v1/%2e%2e/docs` or a route that ai_service
serves only internally never reaches ai_service. To publish a new route, add one line below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class PublicRoute:
    path: str  # a template: {name} matches one non-empty path segment
    methods: tuple[str, ...]
    summary: str


PUBLIC_ROUTES: tuple[PublicRoute, ...] = (
    PublicRoute("/v1/chat/completions", ("POST",), "OpenAI-compatible chat completions (streaming with stream=true)"),
    PublicRoute("/v1/models", ("GET",), "Models and adapters the platform serves"),
    PublicRoute("/v1/chat", ("POST",), "Tutor chat with modes (tutor, tutor_rag, ...)"),
    PublicRoute("/v1/chat/hybrid", ("POST",), "Tutor chat grounded in the course reader, with citations"),
    PublicRoute("/v1/chat/guided", ("POST",), "A guided (Socratic) learning turn"),
    PublicRoute("/v1/chat_with_tools", ("POST",), "Chat with server-side tool calling"),
    PublicRoute("/v1/writing/analyze", ("POST",), "Structured writing analysis: rubric scores, issues, suggestions"),
    PublicRoute("/v1/writing/anchors", ("GET", "DELETE"), "An assignment's teacher anchors: list, remove all"),
    PublicRoute("/v1/writing/anchors/{anchor_id}", ("DELETE",), "Remove one teacher anchor"),
    PublicRoute("/v1/learners/{user_id}", ("GET", "PATCH"), "A learner's profile and weak points"),
    PublicRoute("/v1/courses/{course_id}/teachers", ("GET", "PUT"), "The teachers of a course"),
    PublicRoute("/v1/personas", ("GET",), "Role-play personas for peer-helper practice"),
    PublicRoute("/v1/roleplay", ("POST",), "A role-play practice turn"),
    PublicRoute("/v1/roleplay/sessions", ("GET",), "Role-play sessions"),
    PublicRoute("/v1/intents", ("POST",), "Classify a helper's utterance into intents"),
    PublicRoute("/v1/health", ("GET",), "Platform health report"),
    PublicRoute("/v1/health/status", ("GET",), "Platform health status page (HTML)"),
    PublicRoute("/v1/arena", ("POST",), "Side-by-side answers to compare (A/B arena)"),
    PublicRoute("/v1/feedback", ("GET", "POST"), "Votes and feedback on answers"),
    PublicRoute("/v1/leaderboard", ("GET",), "Adapter leaderboard from votes"),
    PublicRoute("/v1/me", ("GET",), "The caller's key id, role and user id"),
    PublicRoute("/v1/ab/{mode}", ("GET", "PUT", "DELETE"), "A/B split of a chat mode"),
    PublicRoute("/v1/ab/{mode}/{action}", ("POST",), "Promote or roll back an A/B split"),
    PublicRoute("/v1/adapters", ("GET",), "LoRA adapters (admin)"),
    PublicRoute("/v1/adapters/{action}", ("POST",), "Load or unload a LoRA adapter (admin)"),
    PublicRoute("/v1/safety/events", ("GET",), "Flagged moderation events of a course (teachers, admins)"),
)

# A segment may hold letters, digits and a few safe characters, percent-escapes of anything but
# '.', '/' and '\' included (e.g. an e-mail as a user id); '.' and '..' alone never.
_SEGMENT = r"[A-Za-z0-9_\-.~@:+=,!$'()*]*(?:%(?![2][eEfF]|5[cC])[0-9A-Fa-f]{2}[A-Za-z0-9_\-.~@:+=,!$'()*]*)*"
_SEGMENT_RE = re.compile(_SEGMENT)


def _template_regex(path: str) -> re.Pattern[str]:
    parts = re.split(r"\{[a-z_]+\}", path)
    return re.compile("^" + f"({_SEGMENT})".join(re.escape(p) for p in parts) + "$")


_COMPILED = tuple((_template_regex(route.path), route) for route in PUBLIC_ROUTES)
_EXACT = {route.path: route for route in PUBLIC_ROUTES if "{" not in route.path}


def is_clean_path(raw_path: str) -> bool:
    """True for an absolute path with no empty, '.' or '..' segment, no backslash, and no
    percent-encoded '.', '/' or '\\' (which upstream servers or clients might decode and resolve)."""
    if not raw_path.startswith("/") or "\\" in raw_path or "//" in raw_path:
        return False
    lowered = raw_path.lower()
    if "%2e" in lowered or "%2f" in lowered or "%5c" in lowered or "%00" in lowered:
        return False
    for segment in raw_path[1:].split("/"):
        if segment in ("", ".", ".."):
            return False
    return True


def match(raw_path: str) -> PublicRoute | None:
    """The public route `raw_path` (as sent, still percent-encoded) names, or None.
    The path must be clean (is_clean_path); a trailing slash is not the same route."""
    route = _EXACT.get(raw_path)
    if route is not None:
        return route
    if not is_clean_path(raw_path):
        return None
    for regex, route in _COMPILED:
        found = regex.match(raw_path)
        if found and all(group and group not in (".", "..") for group in found.groups()):
            return route
    return None
