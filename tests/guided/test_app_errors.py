"""The service's own error paths, in process (no Redis needed): every failure is an OpenAI-shaped error."""

import asyncio

import httpx
import pytest

from services.guided.app import create_app
from services.guided.settings import GuidedSettings

HEADERS = {"x-tutorstack-service-token": "t", "x-tutorstack-user-id": "s1", "x-tutorstack-role": "student"}
TURN = {"topic": "t", "messages": [{"role": "user", "content": "hi"}], "user_id": "s1", "course_id": "c1"}


def call(method, path, headers=HEADERS, **kwargs):
    app = create_app(GuidedSettings(redis_url="redis://127.0.0.1:1/0", guided_llm_enabled=False, app_env="test",
                                    service_token="t", ai_service_internal_token="i"))

    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://guided") as client:
            return await client.request(method, path, headers=headers, **kwargs)

    return asyncio.run(go())


def test_redis_down_is_a_503_not_a_500():
    for response in (call("POST", "/v1/chat/guided", json=TURN),
                     call("GET", "/v1/learners/s1", params={"course_id": "c1"})):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "learner_store_unavailable"


def test_service_token_required():
    response = call("POST", "/v1/chat/guided", headers={**HEADERS, "x-tutorstack-service-token": "wrong"}, json=TURN)
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("body,param", [
    ({**TURN, "user_id": "a:b"}, "user_id"),
    ({**TURN, "course_id": "../x"}, "course_id"),
    ({**TURN, "messages": []}, "messages"),
    ({**TURN, "unknown": 1}, "unknown"),
])
def test_bad_requests_are_422(body, param):
    response = call("POST", "/v1/chat/guided", json=body)
    assert response.status_code == 422 and response.json()["error"]["param"] == param


def test_bad_path_ids_are_400():
    response = call("GET", "/v1/learners/a:b", params={"course_id": "c1"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "user_id"


def test_settings_need_tokens_outside_dev():
    with pytest.raises(ValueError, match="GUIDED_API_TOKEN"):
        GuidedSettings(app_env="prod", service_token="", ai_service_internal_token="x")
