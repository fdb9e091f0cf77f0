"""Runs at start-up in every vLLM process that llm_server launches on CPU with this folder on
PYTHONPATH (LLM_CPU_LORA_FAST_PATH=true): installs the fast CPU LoRA path (fast_cpu_lora.py)."""

try:
    from fast_cpu_lora import install

    install()
except Exception:  # a speed-up must never stop the engine from starting
    pass
