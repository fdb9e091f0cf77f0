#!/usr/bin/env bash
# Stage vLLM 0.26.0 and the packages the device image lacks, in parts that fit the device tool's 64 MiB carry
# (bench/results/gpu_path_h200.md). Run here, in the repo root; writes the git-ignored .gpu-stage/.
#   scripts/gpu_path/stage.sh        then carry .gpu-stage/c0 .. c3, one a call: scripts/gpu_path/run_all.sh stash .gpu-stage/cN
set -euo pipefail
grep -qx "/.gpu-stage/" .git/info/exclude 2>/dev/null || echo "/.gpu-stage/" >> .git/info/exclude
S=.gpu-stage; mkdir -p $S/w $S/deps $S/payload
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64
  --platform manylinux_2_35_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_5_x86_64"
python3 -m pip download -q --no-deps $PLAT -d $S/w vllm==0.26.0
# The image's torch 2.11.0+cu130 stays; these are vLLM's requirements that the image lacks (see the results file).
python3 -m pip download -q --no-deps $PLAT -d $S/deps -r scripts/gpu_path/wheels.txt
# FlashAttention 2 kernels (Hopper runs FA3) and deep_gemm builds for other Pythons: 303.7 MB -> 172.1 MB.
cp $S/w/vllm-0.26.0-*.whl $S/payload/vllm-trim.zip
zip -q -d $S/payload/vllm-trim.zip 'vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so' 'vllm/third_party/deep_gemm/_C.cpython-31[0134]-*'
tar -cf $S/payload/deps.tar -C $S deps
# The tokenizer (no weights) of the embedded default: make_model.py builds the random Llama around it.
T=$(mktemp -d); cp -r "${TUTORSTACK_HOME:-$HOME/.cache/tutorstack}/models/SmolLM2-135M-Instruct" $T/e3tok
rm -f $T/e3tok/*.safetensors; tar -cf $S/payload/tok.tar -C $T e3tok; rm -rf $T
tar -cf $S/payload.tar -C $S payload && (cd $S && sha256sum payload.tar > payload.tar.sha256)
(cd $S && split -b 57100000 -d -a 1 payload.tar part. && for i in 0 1 2 3; do mkdir -p c$i && mv part.$i c$i/; done \
  && cp payload.tar.sha256 c0/ && rm payload.tar)
ls -la $S/c*/
