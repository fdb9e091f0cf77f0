"""ai_service: OpenAI-compatible chat over local vLLM (with LoRA adapters) and an optional cloud tier."""
