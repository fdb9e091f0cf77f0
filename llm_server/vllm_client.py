"""The few vLLM HTTP endpoints llm_server uses: models, and runtime LoRA load/unload."""

from __future__ import annotations

import httpx

from common.errors import OpenAIError
from common.http import request_id_headers


class VllmClient:
    def __init__(self, base_url: str, api_key: str = "", timeout: float = 120.0):
        # Loading an adapter reads its weights from disk: allow more than a chat request would need.
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers,
                                       timeout=httpx.Timeout(timeout, connect=5.0))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def healthy(self) -> bool:
        try:
            return (await self._http.get("/health", timeout=3.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def models(self) -> list[dict]:
        response = await self._http.get("/v1/models", headers=request_id_headers(), timeout=5.0)
        response.raise_for_status()
        return response.json().get("data", [])

    async def loaded_adapters(self) -> dict[str, str]:
        """Adapter name -> path, for every LoRA vLLM currently serves (models that have a parent)."""
        return {m["id"]: m.get("root") or "" for m in await self.models() if m.get("parent")}

    async def load_adapter(self, name: str, path: str) -> None:
        await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    async def unload_adapter(self, name: str) -> None:
        await self._post("/v1/unload_lora_adapter", {"lora_name": name})

    async def _post(self, path: str, body: dict) -> None:
        try:
            response = await self._http.post(path, json=body, headers=request_id_headers())
        except httpx.HTTPError as exc:
            raise OpenAIError(503, f"vLLM is not reachable: {type(exc).__name__}: {exc}", code="vllm_unavailable")
        if response.status_code >= 400:
            raise OpenAIError(response.status_code if response.status_code < 500 else 502,
                              f"vLLM refused {path}: {_error_message(response)}", code="vllm_error")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", error))[:500]
        return str(error)[:500]
    return str(body)[:500]
