"""Course membership, asked of the guided service, which owns it (`GET /v1/courses/{id}/teachers`
answers 403 to anyone who is neither an admin nor a teacher of that course). One rule for every
service that lets a teacher act on a course (ai_service's safety events, writing's teacher anchors)."""

from __future__ import annotations

import httpx

from common.auth import Caller, service_headers
from common.errors import OpenAIError


async def require_course_teacher(guided_url: str, guided_token: str, caller: Caller, course: str,
                                 action: str) -> None:
    """Returns when `caller` is an admin or a teacher of `course`; else 403. 503 when guided cannot say.
    `action` ends the refusal: "Only a teacher of course 'x' (or an admin) may {action}."."""
    if caller.role == "admin":
        return
    url = f"{guided_url.rstrip('/')}/v1/courses/{course}/teachers"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(url, headers=service_headers(guided_token, caller))
    except httpx.HTTPError as exc:
        raise OpenAIError(503, f"Course membership cannot be checked: the guided service is not reachable "
                               f"({type(exc).__name__}).", code="courses_unavailable") from exc
    if response.status_code in (403, 404):
        raise OpenAIError(403, f"Only a teacher of course {course!r} (or an admin) may {action}.", code="forbidden")
    if response.status_code != 200:
        raise OpenAIError(503, f"Course membership cannot be checked (guided answered {response.status_code}).",
                          code="courses_unavailable")
