#!/usr/bin/env bash
# Every check that needs a CUDA device, in one pass sized for a few minutes of a lent GPU:
# training throughput and MFU through the real trainer (tools/bench_train.py) for the B preset
# in bf16 with each attention backend, compiled and eager, and the gpu-marked tests (bf16-mixed
# training through the trainer with each backend and FSDP, the step's reads of the device, GPU
# attention backends against each other, the sampling tools on the GPU).
# The parts run in order of importance within one time budget (BUDGET seconds, default 540);
# each has its own cap and writes its output under $OUT (default gpu_results/) as it goes, so a
# part that runs out of time still leaves the others.
#
# On a machine whose Python lacks some of flowvid's dependencies, install them from wheels first:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD bash tools/gpu_checks.sh
set -uo pipefail
out=${OUT:-gpu_results}
py=${PYTHON:-python3}
deadline=$((SECONDS + ${BUDGET:-540}))
mkdir -p "$out"
export PYTHONUNBUFFERED=1

# at most $1 seconds, and never past the deadline
limit() { local left=$((deadline - SECONDS)); echo $(( left < $1 ? left : $1 )); }

# the device first, in the tests' file: at most 8 files come back from a lent device
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/test_gpu.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/test_gpu.txt"
"$py" -c "from flowvid.models.attention import check_xformers; check_xformers(); import xformers; print('xformers', xformers.__version__)" \
    2>&1 | tail -n 1 | tee -a "$out/test_gpu.txt"
has_xformers=$(grep -c "^xformers " "$out/test_gpu.txt")

bench=(--gpu --preset B --size 64 --patch 4 --clips 8 --steps 12 --warmup 4 --rounds 1)
run_part() {  # file, cap, command...: the command, if more than 20 s are left
    local file=$1 cap=$2
    shift 2
    [ "$(limit "$cap")" -gt 20 ] || { echo "no time left" | tee "$out/$file"; return; }
    timeout "$(limit "$cap")" "$@" 2>&1 | tee "$out/$file"
}
run_bench() {  # name, cap, args...
    local name=$1 cap=$2
    shift 2
    run_part "train_B_$name.txt" "$cap" "$py" tools/bench_train.py "${bench[@]}" "$@"
}
# Most wanted first: the insertion/full-sequence throughput target, with what GPU training should
# use (compiled blocks, split at attention; varlen has never run on a GPU), then the tests (one
# counts the step's reads of the device), then the figures that exist from an earlier pass.
# Compiled: the packed shapes vary from step to step; steps that compile are left out by the tool.
run_bench sdpa_compiled 150 --backend sdpa --compile --steps 20 --warmup 8
run_bench varlen_compiled 150 --backend varlen --compile --steps 20 --warmup 8
run_bench varlen 100 --backend varlen
[ "$(limit 200)" -gt 20 ] && timeout "$(limit 200)" "$py" -m pytest -q -m gpu -p no:cacheprovider -rs 2>&1 \
    | tee -a "$out/test_gpu.txt"
run_bench flex_compiled 150 --backend flex --compile --steps 20 --warmup 8
run_part flex_mask.txt 60 "$py" tools/bench_flex_mask.py --gpu --reps 3
run_bench flex 150 --backend flex
if [ "$has_xformers" -gt 0 ]; then
    run_bench xformers 120 --backend xformers
fi
