"""Trust between tutorstack's services: the one place where credentials are checked.

- The public edge (gateway) checks API keys. It forwards to ai_service with the shared token
  (AI_GATEWAY_SHARED_TOKEN) and the identity it vouches for, in the headers below.
- Every internal service (graphrag, llm_server's control API, writing, guided, practice,
  health) requires its *own* service token (e.g. GRAPHRAG_API_TOKEN), so a leaked token opens
  one service, not all. Callers send it as `x-tutorstack-service-token` or `Authorization: Bearer`.
- ai_service also accepts AI_SERVICE_INTERNAL_TOKEN from internal services that call it back
  for LLM completions (writing analysis, guided tutoring, role-play), passing the caller's
  identity on.

Only /healthz, /readyz and /metrics are open (common.app adds them without this dependency).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from common.errors import OpenAIError
from common.logging import get_logger

log = get_logger("common.auth")

SERVICE_TOKEN_HEADER = "x-tutorstack-service-token"
GATEWAY_TOKEN_HEADER = "x-tutorstack-gateway-token"
# Identity the gateway vouches for (after checking the API key), passed on by every hop.
KEY_ID_HEADER = "x-tutorstack-key-id"
KEY_CLASSIFICATION_HEADER = "x-tutorstack-key-classification"
USER_ID_HEADER = "x-tutorstack-user-id"
ROLE_HEADER = "x-tutorstack-role"
IDENTITY_HEADERS = (KEY_ID_HEADER, KEY_CLASSIFICATION_HEADER, USER_ID_HEADER, ROLE_HEADER)

Role = Literal["student", "teacher", "admin", "service"]
ROLES = ("student", "teacher", "admin")


@dataclass(frozen=True)
class Caller:
    """Who a request is for. `user_id` is None for keys created without one."""

    key_id: str
    key_classification: str  # the API key's default data classification: private unless created public
    user_id: str | None = None
    role: str = "student"

    @property
    def is_staff(self) -> bool:
        return self.role in ("teacher", "admin")

    def headers(self) -> dict[str, str]:
        """The identity headers to pass on to the next internal hop."""
        headers = {KEY_ID_HEADER: self.key_id, KEY_CLASSIFICATION_HEADER: self.key_classification,
                   ROLE_HEADER: self.role}
        if self.user_id:
            headers[USER_ID_HEADER] = self.user_id
        return headers


def caller_from_headers(request: Request) -> Caller:
    """The identity in the request's headers; call only after the token was checked."""
    headers = request.headers
    classification = headers.get(KEY_CLASSIFICATION_HEADER, "private")
    role = headers.get(ROLE_HEADER, "student")
    return Caller(
        key_id=headers.get(KEY_ID_HEADER, "anonymous"),
        key_classification=classification if classification in ("public", "private") else "private",
        user_id=headers.get(USER_ID_HEADER) or None,
        role=role if role in ROLES else "student",
    )


def presented_token(request: Request, header: str = SERVICE_TOKEN_HEADER) -> str:
    token = request.headers.get(header, "")
    if not token:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
    return token


def token_matches(presented: str, accepted: list[str] | tuple[str, ...]) -> bool:
    # compare_digest on every configured token: no early exit that would leak which one matched.
    results = [hmac.compare_digest(presented.encode(), token.encode()) for token in accepted if token]
    return bool(presented) and any(results)


def accepted_service_tokens(settings) -> list[str]:
    tokens = getattr(settings, "accepted_service_tokens", None)
    if callable(tokens):
        return [t for t in tokens() if t]
    token = getattr(settings, "service_token", "")
    return [token] if token else []


async def require_service_token(request: Request) -> Caller:
    """FastAPI dependency for every route of an internal service.

    The service's settings name its token (`service_token`, or `accepted_service_tokens()` for
    several). With no token configured the service is open only when APP_ENV=dev; ServiceSettings
    refuses to start without one elsewhere (see common.settings.require_token)."""
    settings = request.app.state.settings
    accepted = accepted_service_tokens(settings)
    if not accepted:
        if settings.app_env == "dev":
            return caller_from_headers(request)
        raise OpenAIError(503, "This service has no token configured.", code="service_token_missing")
    if not token_matches(presented_token(request), accepted):
        raise OpenAIError(401, "Missing or invalid service token.", code="invalid_service_token")
    return caller_from_headers(request)


def service_headers(token: str, caller: Caller | None = None) -> dict[str, str]:
    """Headers for a call to an internal service: its token, the caller's identity, the request id."""
    from common.http import request_id_headers

    headers = {**request_id_headers()}
    if token:
        headers[SERVICE_TOKEN_HEADER] = token
    if caller is not None:
        headers.update(caller.headers())
    return headers
