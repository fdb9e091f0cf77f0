"""OpenAI chat protocol models shared by the gateway and ai_service.

Only what the platform reads is typed; every other OpenAI field passes through untouched
(extra="allow"), so new SDK parameters reach vLLM without a code change here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DataClassification = Literal["public", "private"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(default="", max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=8)
    metadata: dict[str, Any] | None = None

    def upstream_body(self, model: str) -> dict[str, Any]:
        """The JSON sent to an OpenAI-compatible upstream: the client's fields minus ours."""
        body = self.model_dump(exclude_none=True)
        body["model"] = model
        # metadata carries platform fields (data_classification); upstreams need not see it.
        body.pop("metadata", None)
        return body
