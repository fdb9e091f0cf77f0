"""The engine-facing tests of tests/integration/test_platform.py against LLM_ENGINE=llamacpp: the openai
SDK through the gateway and ai_service (chat, streaming with usage, /v1/models, adapters by mode and
by family name, upstream 4xx passed through). The routing and edge tests there exercise ai_service
and the gateway, not the engine, and run once, on vLLM."""

from tests.integration.test_platform import (  # noqa: F401  (collected here with this directory's fixtures)
    test_adapter_family_name_resolves_to_latest_version,
    test_chat_mode_selects_adapter,
    test_sdk_chat_completion_served_locally_with_usage,
    test_sdk_models_list_has_base_and_adapter,
    test_sdk_streaming_with_usage,
    test_streamed_mode_chat,
    test_upstream_4xx_is_returned_not_retried,
)
