#!/usr/bin/env bash
# Builds llama.cpp's own OpenAI-compatible server (`llama-server`) once and caches it under
# TUTORSTACK_HOME/venv-llamacpp, for LLM_ENGINE=llamacpp (see docs/engines.md).
#
# Source: the llama.cpp tree vendored in PyPI's llama-cpp-python sdist (Debian has no llama.cpp
# package). We build llama.cpp's `llama-server` rather than llama-cpp-python's Python server because
# llama-server switches LoRA adapters per request (`"lora": [{"id", "scale"}]`) while the Python
# server can only reload a whole model to change adapters. The same tree's convert_lora_to_gguf.py
# and gguf-py convert PEFT adapters (kept under venv-llamacpp/src).
#
# The binary targets a generic x86-64 CPU with AVX2/FMA/F16C (x86-64-v3: every x86 laptop since
# ~2015), not -march=native, so a cache built on an AVX-512 host runs on laptops without AVX-512.
# Override with LLAMACPP_CMAKE_ARGS (e.g. "-DGGML_NATIVE=ON" for the build host's best).
# Progress: the cmake/ninja output goes to venv-llamacpp/build.log; a line every 30 s says how far.
set -euo pipefail
HOME_DIR="${TUTORSTACK_HOME:-$HOME/.cache/tutorstack}"
DEST="$HOME_DIR/venv-llamacpp"
PACKAGE="${LLAMACPP_PACKAGE:-llama-cpp-python==0.3.36}"
VERSION="${PACKAGE#*==}"
DEFAULT_ARGS="-DGGML_NATIVE=OFF"
case "$(uname -m)" in
  x86_64|amd64) DEFAULT_ARGS="$DEFAULT_ARGS -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF" ;;
esac
CMAKE_ARGS_LLAMA="${LLAMACPP_CMAKE_ARGS:-$DEFAULT_ARGS}"
STAMP="$PACKAGE $CMAKE_ARGS_LLAMA"
JOBS="${LLAMACPP_BUILD_JOBS:-$(nproc)}"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ -x "$DEST/bin/llama-server" ] && [ "$(cat "$DEST/.tutorstack-stamp" 2>/dev/null)" = "$STAMP" ]; then
  exit 0
fi
PY="${PYTHON:-python3}"
mkdir -p "$DEST/bin" "$HOME_DIR/downloads"
LOG="$DEST/build.log"
touch "$LOG"
SDIST="$HOME_DIR/downloads/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  say "llama.cpp: downloading the $PACKAGE sdist (source of llama-server, ~77 MB)"
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "$PACKAGE" -d "$tmp" >>"$LOG" 2>&1 \
    || "$PY" -m pip download -q --no-deps --no-binary :all: "$PACKAGE" -d "$tmp" >>"$LOG" 2>&1 \
    || { echo "could not download $PACKAGE (see $LOG)"; exit 1; }
  mv "$tmp"/llama_cpp_python-*.tar.gz "$SDIST"
  rm -rf "$tmp"
fi
if [ -f "$DEST/build/CMakeCache.txt" ] && [ "$(cat "$DEST/.building" 2>/dev/null)" = "$STAMP" ]; then
  say "llama.cpp: resuming an interrupted build (log: $LOG)"  # ninja rebuilds only what is missing
else
  rm -rf "$DEST/src" "$DEST/build"
  mkdir -p "$DEST/src"
  tar -xzf "$SDIST" -C "$DEST/src" --strip-components=3 "llama_cpp_python-$VERSION/vendor/llama.cpp"
  if ! command -v g++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "llama.cpp: installing a C++ compiler (Debian's g++)"
    apt-get install -y -qq g++ >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }
  fi
  command -v g++ >/dev/null 2>&1 || { echo "a C++ compiler (g++) is needed to build llama.cpp"; exit 1; }
  if ! command -v cmake >/dev/null 2>&1; then  # PyPI's cmake and ninja, in a small venv of their own
    say "llama.cpp: cmake and ninja from PyPI"
    [ -x "$DEST/buildtools/bin/python" ] || python3 -m venv "$DEST/buildtools"
    "$DEST/buildtools/bin/python" -m pip install -q cmake ninja >>"$LOG" 2>&1 || { echo "could not install cmake (see $LOG)"; exit 1; }
    export PATH="$DEST/buildtools/bin:$PATH"
  fi
  GENERATOR=()
  command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
  say "llama.cpp: building llama-server with $JOBS jobs (${CMAKE_ARGS_LLAMA}); about 10-20 min on 2 cores, log: $LOG"
  # shellcheck disable=SC2086
  cmake -S "$DEST/src" -B "$DEST/build" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_OPENMP=ON \
    $CMAKE_ARGS_LLAMA >>"$LOG" 2>&1 || { tail -30 "$LOG"; echo "llama.cpp: cmake configure failed (see $LOG)"; exit 1; }
  echo "$STAMP" > "$DEST/.building"
fi
[ -x "$DEST/buildtools/bin/cmake" ] && export PATH="$DEST/buildtools/bin:$PATH"
cmake --build "$DEST/build" --target llama-server -j "$JOBS" >>"$LOG" 2>&1 &
build=$!
started=$(date +%s)
while kill -0 "$build" 2>/dev/null; do
  sleep 30
  kill -0 "$build" 2>/dev/null || break
  step=$(grep -oE '^\[[0-9]+/[0-9]+\]' "$LOG" | tail -1 || true)
  say "llama.cpp: still building ($(( $(date +%s) - started ))s) ${step}"
done
wait "$build" || { tail -30 "$LOG"; echo "llama.cpp: build failed (see $LOG)"; exit 1; }
cp "$DEST/build/bin/llama-server" "$DEST/bin/llama-server"
"$DEST/bin/llama-server" --version >>"$LOG" 2>&1 || { echo "llama.cpp: the built llama-server does not run (see $LOG)"; exit 1; }
rm -rf "$DEST/build" "$DEST/.building"  # the objects; the binary is static
echo "$STAMP" > "$DEST/.tutorstack-stamp"
say "llama.cpp: llama-server ready at $DEST/bin/llama-server ($(( $(date +%s) - started ))s)"
