"""Here `vllm_stack` and `stack` are the llama.cpp ones: the modules beside this file import the
engine-independent tests of tests/integration unchanged, so they run against llama.cpp too."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def vllm_stack(llamacpp_engine):
    return llamacpp_engine


@pytest.fixture(scope="session")
def stack(llamacpp_stack):
    return llamacpp_stack
