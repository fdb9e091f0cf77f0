#!/usr/bin/env bash
# The GPU path on the device machine (bench/results/gpu_path_h200.md says how each step was run).
#   scripts/gpu_path/run_all.sh stash DIR   copy one carried chunk (.gpu-stage/cN) out of the repo into $G
#   scripts/gpu_path/run_all.sh setup       join the chunks, check the sha256, unpack vLLM + its missing deps into $G/site
#   scripts/gpu_path/run_all.sh model       random Llama-1B + adapters peer-v1, peer-v2 under $G/ts
#   scripts/gpu_path/run_all.sh start       vLLM with compose's arguments, llm_server --external-vllm, ai_service (daemons)
#   scripts/gpu_path/run_all.sh bench       scripts/gpu_path/bench_gpu.py against them; results and logs to $OUT
#   scripts/gpu_path/run_all.sh vbench      vLLM's own `bench serve` at 1, 8, 64 concurrent requests, base and peer-v1
set -u
G=${GPU_STAGE_DIR:-/root/gpu}
REPO=$(pwd)
NAME=Llama-1B-random
KEY=gpu-path-key-$(hostname | md5sum | cut -c1-8)
export PYTHONPATH=$G/site:$REPO HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$G" "${OUT:-/tmp/out}"
OUT=${OUT:-/tmp/out}

wait_http() {  # url seconds what [pid that must stay alive]
  local t0=$SECONDS
  until python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=3)" "$1" 2>/dev/null; do
    if (( SECONDS - t0 > $2 )); then echo "$3 not up after $2 s"; return 1; fi
    if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then echo "$3 exited while starting"; return 1; fi
    sleep 2
  done
  echo "$3 up after $(( SECONDS - t0 )) s"
}

case "${1:-}" in
  stash)
    cp -v "$2"/* "$G"/ && ls -la "$G" && df -h "$G" | tail -1 ;;
  setup)
    t0=$SECONDS
    cd "$G" && cat part.0 part.1 part.2 part.3 > payload.tar && sha256sum -c payload.tar.sha256 || exit 1
    tar -xf payload.tar && rm -f payload.tar part.[0-3]
    mkdir -p site && python3 -m zipfile -e payload/vllm-trim.zip site/ && chmod +x site/vllm/vllm-rs
    tar -xf payload/deps.tar && python3 -m pip install -q --no-index --no-deps --no-compile --target site deps/*.whl 2>&1 | grep -v WARNING
    tar -xf payload/tok.tar
    echo "setup took $(( SECONDS - t0 )) s; site: $(du -sh site | cut -f1)"
    cd "$REPO" && python3 -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)" ;;
  model)
    python3 scripts/gpu_path/make_model.py --tokenizer "$G/e3tok" --out "$G/ts" --name $NAME ;;
  start)
    cd "$G"
    # docker-compose.yml's vLLM command line, verbatim but for the paths (compose: /models, /adapters).
    # FlashInfer is not carried (flashinfer-python and its kernels): vLLM's sampler must not import it.
    setsid env VLLM_ALLOW_RUNTIME_LORA_UPDATING=True VLLM_USE_FLASHINFER_SAMPLER=0 python3 -m vllm.entrypoints.openai.api_server \
      --host=0.0.0.0 --port=8000 --model=$G/ts/models/$NAME --served-model-name=$NAME \
      --enable-lora --max-lora-rank=64 --max-loras=8 --api-key=$KEY > "$G/vllm.log" 2>&1 < /dev/null &
    VPID=$!
    cd "$REPO"
    # What llm_server would pass when it launches vLLM itself on this machine (for the record).
    python3 - <<PY
from pathlib import Path
from llm_server.adapters import discover_adapters
from llm_server.device import detect, engine_config
from llm_server.serve import model_facts
ad = discover_adapters(Path("$G/ts/adapters"))
cfg = engine_config(detect(), model_facts(Path("$G/ts/models/$NAME"), ad))
print("llm_server's own GPU args:", " ".join(cfg.args)); [print("  reason:", r) for r in cfg.reasons]
PY
    wait_http http://127.0.0.1:8000/health 420 vLLM $VPID || { tail -60 "$G/vllm.log"; exit 1; }
    setsid env APP_ENV=dev LLM_ADAPTERS_DIR=$G/ts/adapters LLM_SERVED_MODEL_NAME=$NAME LLM_API_KEY_LOCAL=$KEY \
      LLM_SERVER_HOST=127.0.0.1 LLM_SERVER_PORT=8010 python3 -m llm_server serve --external-vllm http://127.0.0.1:8000 \
      > "$G/llm_server.log" 2>&1 < /dev/null &
    setsid env APP_ENV=dev AI_SERVICE_PORT=8001 LLM_BASE_URL_LOCAL=http://127.0.0.1:8000/v1 LLM_API_KEY_LOCAL=$KEY \
      LLM_MODEL_LOCAL=$NAME GRAPH_RAG_ENABLED=false SAFETY_EMBEDDINGS=false REDIS_URL=redis://127.0.0.1:6399/0 LOG_LEVEL=WARNING \
      python3 -m ai_service > "$G/ai_service.log" 2>&1 < /dev/null &
    wait_http http://127.0.0.1:8010/readyz 60 llm_server; wait_http http://127.0.0.1:8001/healthz 60 ai_service
    grep -E "Resolved architecture|attention backend|Available KV cache|Maximum concurrency|Graph capturing finished|init engine|torch.compile takes|LoRA|Loaded new LoRA|Starting vLLM" "$G/vllm.log" | cut -c1-240 | tail -25
    tail -5 "$G/llm_server.log" | cut -c1-300 ;;
  bench)
    python3 scripts/gpu_path/bench_gpu.py --vllm http://127.0.0.1:8000 --key $KEY --base $NAME --adapter peer-v1 \
      --ai http://127.0.0.1:8001 --llm-server http://127.0.0.1:8010 --out "$OUT" "${@:2}"
    nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv ;;
  vbench)  # vLLM's own load generator as a cross-check (random 64-token prompts, 256 tokens out, ignore_eos)
    export OPENAI_API_KEY=$KEY
    for lora in none peer-v1; do for c in 1 8 64; do
      n=$(( c == 1 ? 8 : c * 4 )); extra=""; [ $lora != none ] && extra="--lora-modules $lora"
      echo "== vllm bench serve: model=$lora concurrency=$c prompts=$n"
      timeout 120 python3 -m vllm.entrypoints.cli.main bench serve --backend openai-chat --base-url http://127.0.0.1:8000 \
        --endpoint /v1/chat/completions --model $NAME --tokenizer $G/ts/models/$NAME --dataset-name random \
        --random-input-len 64 --random-output-len 256 --num-prompts $n --max-concurrency $c --ignore-eos $extra \
        --save-result --result-dir "$OUT" --result-filename vb_${lora}_$c.json 2>&1 \
        | grep -E "Output token throughput|Mean TTFT|Median TTFT|P99 TTFT|Median TPOT|Successful"
    done; done ;;
  logs)
    cp "$G"/*.log "$OUT"/ 2>/dev/null; ls -la "$OUT" ;;
  *) echo "usage: $0 stash DIR|setup|model|start|bench|vbench|logs"; exit 2 ;;
esac
