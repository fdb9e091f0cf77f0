"""ai_service configuration: one pydantic-settings class, names fixed by the architecture."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ai_service.routing import Policy
from common.ab import AB_KEY_PREFIX
from common.settings import ServiceSettings


class AIServiceSettings(ServiceSettings):
    host: str = Field("127.0.0.1", alias="AI_SERVICE_HOST")
    port: int = Field(8001, alias="AI_SERVICE_PORT")
    # uvicorn worker processes. Each keeps its own breakers, model-list and A/B caches (and moderation models):
    # more than one spreads ai_service over cores, at that memory cost.
    workers: int = Field(1, alias="AI_SERVICE_WORKERS", ge=1)

    llm_routing_policy: Policy = Policy.LOCAL_FIRST
    ai_gateway_shared_token: str = ""
    # Internal services (writing, guided, practice) calling ai_service for completions.
    ai_service_internal_token: str = ""
    llm_enable_cloud_fallback_nonprod: bool = False
    llm_local_timeout_sec: float = Field(30.0, gt=0)
    llm_cloud_timeout_sec: float = Field(60.0, gt=0)
    # The local/cloud timeouts above mean "no first token, or no progress, within N s". This one
    # bounds a whole answer however well it progresses: generous, and never a breaker failure.
    llm_request_deadline_sec: float = Field(240.0, gt=0)
    # max_tokens for requests that set none: per chat mode (a mode may set its own in CHAT_MODES_FILE),
    # and for /v1/chat/completions (0 = the engine's own limit), so a rambling model cannot run away.
    chat_default_max_tokens: int = Field(256, ge=1)
    # where the feedback service keeps each mode's A/B split (common.ab): the same setting as feedback's
    ab_key_prefix: str = Field(AB_KEY_PREFIX, validation_alias="FEEDBACK_AB_KEY_PREFIX")
    llm_default_max_tokens: int = Field(1024, ge=0)
    llm_base_url_local: str = "http://localhost:8000/v1"
    llm_api_key_local: str = "dummy"
    llm_model_local: str = "SmolLM2-135M-Instruct"
    # Scale-out (ai_service/balancer.py, docs/scaling.md): LLM_BASE_URL_LOCAL may list several vLLM
    # replicas (comma-separated) or be dns+http://<headless-service>:8000/v1; LLM_REPLICA_CONTROL_URLS names their
    # llm_server control APIs (same order; one URL = its port on every discovered replica) for loading
    # adapters on demand with LLM_SERVER_API_TOKEN.
    llm_replica_control_urls: str = ""
    llm_server_api_token: str = ""
    llm_replica_poll_sec: float = Field(2.0, gt=0)
    llm_adapter_affinity: bool = True
    # an adapter's replicas are preferred unless this many requests busier than another (then it is loaded there too)
    llm_affinity_spill_margin: float = Field(4.0, ge=0)
    llm_sticky_sessions: bool = True
    llm_load_adapters_on_demand: bool = True
    llm_base_url_cloud: str = ""
    llm_api_key_cloud: str = ""
    llm_model_cloud: str = ""

    circuit_failure_threshold: int = Field(5, ge=1)
    circuit_reset_sec: float = Field(30.0, gt=0)
    # YAML file overriding or adding chat modes (see ai_service/modes.py for the shape).
    chat_modes_file: str = ""

    graph_rag_enabled: bool = True
    graph_rag_url: str = "http://localhost:8002"
    graph_rag_timeout_sec: float = 5.0
    graphrag_api_token: str = ""  # graphrag's own service token

    # Internal services that ai_service delegates to (ai_service/delegate.py): URL and each one's token.
    writing_service_url: str = "http://localhost:8004"
    writing_api_token: str = ""
    guided_service_url: str = "http://localhost:8003"
    guided_api_token: str = ""
    practice_service_url: str = "http://localhost:8006"
    practice_api_token: str = ""
    health_service_url: str = "http://localhost:8005"
    health_api_token: str = ""
    feedback_service_url: str = "http://localhost:8007"
    feedback_api_token: str = ""
    delegate_timeout_sec: float = Field(120.0, gt=0)

    # /v1/chat_with_tools: seconds each built-in tool may take, and how the model picks a tool
    # (guided: a structured-output choice, reliable for small models; native: tool_choice auto).
    tool_timeout_sec: float = Field(15.0, gt=0)
    tools_decision: Literal["guided", "native"] = "guided"

    # Moderation (ai_service/moderation.py, docs/safety.md): checks in and out on every chat route.
    safety_enabled: bool = True
    safety_policy_file: str = ""  # actions per mode and category; default configs/safety/policy.yaml
    safety_actions: str = ""  # overrides: "mode.category=action,..." (mode * = every mode)
    safety_templates_dir: str = ""  # self_harm.<lang>.md, the supportive answer; default configs/safety
    safety_embeddings: bool = True  # the embedding-similarity check (MiniLM / multilingual-e5)
    safety_stream_check_chars: int = Field(64, ge=8)  # a streamed answer is checked every N new characters
    safety_stream_window_chars: int = Field(320, ge=32)  # ... over its last N characters
    safety_events_max: int = Field(10000, ge=100)  # flagged events kept per course (Redis stream)

    @model_validator(mode="after")
    def _check_required(self) -> "AIServiceSettings":
        if not self.llm_api_key_local.strip():
            raise ValueError("LLM_API_KEY_LOCAL must be non-empty (use any value, e.g. 'dummy', for a vLLM without --api-key)")
        self.require_outside_dev("AI_GATEWAY_SHARED_TOKEN", self.ai_gateway_shared_token)
        self.require_outside_dev("AI_SERVICE_INTERNAL_TOKEN", self.ai_service_internal_token)
        from ai_service.balancer import parse_control_urls, parse_local_upstreams

        parse_local_upstreams(self.llm_base_url_local)  # a bad list fails at start-up, not per request
        parse_control_urls(self.llm_replica_control_urls)
        if self.llm_base_url_cloud and not self.llm_model_cloud:
            raise ValueError("LLM_MODEL_CLOUD must be set when LLM_BASE_URL_CLOUD is")
        if self.llm_routing_policy is Policy.CLOUD_ONLY and not self.llm_base_url_cloud:
            raise ValueError("LLM_ROUTING_POLICY=cloud_only needs LLM_BASE_URL_CLOUD")
        return self

    @property
    def cloud_configured(self) -> bool:
        return bool(self.llm_base_url_cloud and self.llm_model_cloud)
