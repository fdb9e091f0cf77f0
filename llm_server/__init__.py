"""llm_server: gets the model, launches and manages vLLM, and keeps the LoRA adapter registry.

It is not an inference engine. vLLM runs in its own virtualenv (or image); this package
talks to it only through a subprocess and HTTP.
"""
