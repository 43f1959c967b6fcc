#!/usr/bin/env bash
# Every check that needs a CUDA device, in one pass sized for a few minutes of a lent GPU:
# the gpu-marked tests (bf16-mixed training with sdpa/flex and FSDP, GPU attention backends
# against each other, the sampling tools on the GPU), then training throughput and MFU through
# the real trainer (tools/bench_train.py) for the B preset in bf16 with each attention backend.
# Each part has its own time limit and writes its output under $OUT (default gpu_results/) as
# it goes, so a part that runs out of time still leaves the others.
#
# On a machine whose Python lacks some of flowvid's dependencies, install them from wheels first:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/{omegaconf,antlr4,av,tensorboardx}*.whl
#   PYTHONPATH=/tmp/site:$PWD bash tools/gpu_checks.sh
set -uo pipefail
out=${OUT:-gpu_results}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/device.txt"

timeout 300 "$py" -m pytest -q -m gpu -p no:cacheprovider -rs 2>&1 | tee "$out/test_gpu.txt"

bench=(--gpu --preset B --size 64 --patch 4 --clips 8 --steps 14 --warmup 4 --rounds 1)
for backend in sdpa flex xformers; do
    timeout 150 "$py" tools/bench_train.py "${bench[@]}" --backend "$backend" 2>&1 | grep -E "^\||^device|Error" \
        | tee "$out/train_B_$backend.txt"
done
# compiled: the packed shapes vary from step to step, so more warm-up steps let recompiles settle
timeout 240 "$py" tools/bench_train.py "${bench[@]}" --backend sdpa --compile --steps 24 --warmup 12 2>&1 | grep -E "^\||^device|Error" \
    | tee "$out/train_B_sdpa_compiled.txt"
