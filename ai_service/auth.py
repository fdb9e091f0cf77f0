"""Who may call ai_service: the gateway (AI_GATEWAY_SHARED_TOKEN, with the identity it vouches
for) and internal services calling back for completions (AI_SERVICE_INTERNAL_TOKEN).
The check itself lives in common.auth, the one place for it."""

from __future__ import annotations

from fastapi import Request

from ai_service.replica_pool import session_key_var
from common.auth import GATEWAY_TOKEN_HEADER, SERVICE_TOKEN_HEADER, Caller, caller_from_headers, token_matches
from common.errors import OpenAIError

__all__ = ["Caller", "gateway_caller"]


async def gateway_caller(request: Request) -> Caller:
    """FastAPI dependency: refuses requests that came neither through the gateway nor from an
    internal service (outside dev, where settings make both tokens mandatory)."""
    settings = request.app.state.settings
    gateway_token = request.headers.get(GATEWAY_TOKEN_HEADER, "")
    service_token = request.headers.get(SERVICE_TOKEN_HEADER, "")
    if settings.ai_gateway_shared_token or settings.ai_service_internal_token:
        if not (token_matches(gateway_token, [settings.ai_gateway_shared_token])
                or token_matches(service_token, [settings.ai_service_internal_token])):
            raise OpenAIError(401, "Missing or invalid gateway token: call ai_service through the gateway.",
                              code="invalid_gateway_token")
    # Without any token (dev only, enforced by settings) identity headers are advisory.
    caller = caller_from_headers(request)
    session_key_var.set(caller.user_id or "")  # keeps a user's turns on one vLLM replica (prefix cache)
    return caller
