"""tests/integration/test_llm_server.py, every test, against LLM_ENGINE=llamacpp: the control API's
adapter registry (list, load the newest of a family, unload, errors, auth) and the sample adapter
changing what the model says, through the proxy that gives llama.cpp vLLM's API."""

from tests.integration.test_llm_server import *  # noqa: F401,F403  (collected here with this directory's fixtures)
