"""Trust between the gateway and ai_service: the shared token, and the caller identity
the gateway vouches for (key id and the key's data classification)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from common.errors import OpenAIError

GATEWAY_TOKEN_HEADER = "x-tutorstack-gateway-token"
KEY_ID_HEADER = "x-tutorstack-key-id"
KEY_CLASSIFICATION_HEADER = "x-tutorstack-key-classification"


@dataclass(frozen=True)
class Caller:
    key_id: str
    key_classification: str  # the API key's default: private unless created public


async def gateway_caller(request: Request) -> Caller:
    """FastAPI dependency: refuses requests that did not come through the gateway (outside dev)."""
    settings = request.app.state.settings
    expected = settings.ai_gateway_shared_token
    if expected:
        presented = request.headers.get(GATEWAY_TOKEN_HEADER, "")
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            raise OpenAIError(401, "Missing or invalid gateway token: call ai_service through the gateway.",
                              code="invalid_gateway_token")
    # Without a token (dev only, enforced by settings) identity headers are advisory.
    return Caller(
        key_id=request.headers.get(KEY_ID_HEADER, "anonymous"),
        key_classification=request.headers.get(KEY_CLASSIFICATION_HEADER, "private"),
    )
