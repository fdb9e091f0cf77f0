"""A mode's adapter unloaded between two model-list refreshes (a rollback, an unload through
llm_server): the chat looks again and answers with what is loaded now, instead of a 404 for a
model the client never named."""

import asyncio
import json

from ai_service.api import ModeChatRequest, _mode_chat
from ai_service.chat import ChatEngine
from ai_service.modes import ChatMode
from ai_service.settings import AIServiceSettings
from ai_service.upstreams import Served, Tier
from common.auth import Caller
from prometheus_client import CollectorRegistry, Counter

PEER = ChatMode("peer", "be a peer", adapter="peer")


class NoSplit:
    async def get(self, key):
        return None

    async def aclose(self):
        pass


class Engine(ChatEngine):
    """The real ChatEngine's choices over a scripted model server: peer-v2 was just unloaded."""

    def __init__(self, listed: list[str], served: list[str]):
        registry = CollectorRegistry()
        super().__init__(AIServiceSettings(), router=None, retrievals=Counter("r", "r", registry=registry),
                         mode_requests=Counter("m", "m", ["mode", "adapter", "variant"], registry=registry))
        self._redis = NoSplit()
        self.listed, self.served, self.sent, self.refreshes = listed, served, [], 0

    async def local_models(self, *, fresh: bool = False):
        if fresh:
            self.refreshes += 1
            self.listed = list(self.served)
        return [{"id": name} for name in self.listed]

    async def local_model_ids(self):
        return [m["id"] for m in await self.local_models()]

    async def complete(self, request, model, classification, moderation=None):
        self.sent.append(model)
        if model not in self.served:
            return Served(Tier.LOCAL, model, 404, body={"error": {"message": f"The model `{model}` does not exist."}})
        return Served(Tier.LOCAL, model, 200, body={"choices": [{"message": {"content": "hi"}}]})


def run(chat: Engine):
    body = ModeChatRequest(mode="peer", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    caller = Caller(key_id="k", key_classification="private", user_id="s1", role="student")
    return asyncio.run(_mode_chat(body, PEER, None, caller, chat, None))


def test_a_stale_model_list_is_refreshed_and_the_loaded_version_answers():
    chat = Engine(listed=["base", "peer-v1", "peer-v2"], served=["base", "peer-v1"])
    response = run(chat)
    assert response.status_code == 200
    assert chat.sent == ["peer-v2", "peer-v1"] and chat.refreshes == 1
    assert response.headers["x-tutorstack-adapter"] == "peer-v1"
    assert json.loads(response.body)["adapter"] == "peer-v1"


def test_a_loaded_adapter_is_not_asked_twice():
    chat = Engine(listed=["base", "peer-v1"], served=["base", "peer-v1"])
    assert run(chat).status_code == 200 and chat.sent == ["peer-v1"] and chat.refreshes == 0


def test_an_unknown_model_is_answered_with_every_valid_name():
    chat = Engine(listed=["SmolLM2-135M-Instruct", "peer-v1", "peer-v2", "style-v1"], served=[])
    message = asyncio.run(chat.unknown_model_message("gpt-9"))
    assert message == ("The model `gpt-9` does not exist here. Valid models: SmolLM2-135M-Instruct, peer-v1, "
                       "peer-v2, style-v1; or an adapter family for its newest version: peer, style.")
