"""gateway: the public edge. API keys, per-key rate limits, request ids, size limits,
OpenAI-shaped errors; forwards to ai_service with the shared token, streaming."""
