#!/usr/bin/env bash
# Launch `flowvid train` with torchrun: run this once on every node (docs/distributed.md,
# "Several nodes with torchrun"). Arguments are those of `flowvid train`:
#
#   # node 0 (its address is the MASTER_ADDR of every node)
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 tools/torchrun_train.sh -c configs/my_run.yaml --run-dir /shared/runs/my_run --resume auto
#   # node 1
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 tools/torchrun_train.sh -c configs/my_run.yaml --run-dir /shared/runs/my_run --resume auto
#
# With no variables set it trains on this machine alone, one process per GPU.
#
# torchrun (`python -m torch.distributed.run`, installed with torch) must be on PATH: activate
# the environment that has flowvid first. torchrun starts GPUS_PER_NODE processes here and
# sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for each; Lightning detects
# this (TorchElastic) environment by itself and joins those processes instead of starting its
# own. trainer.num_nodes and trainer.devices must match torchrun's --nnodes and
# --nproc-per-node (Lightning stops with an error when devices x num_nodes differs from the
# world size); this script passes both.
set -euo pipefail

NNODES="${NNODES:-1}"                    # machines taking part
NODE_RANK="${NODE_RANK:-0}"              # this machine: 0 .. NNODES-1; node 0 hosts the rendezvous
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"  # address of node 0, reachable from every node
MASTER_PORT="${MASTER_PORT:-29500}"      # a free TCP port on node 0, the same on every node
if [[ -z "${GPUS_PER_NODE:-}" ]]; then   # processes per node, one per GPU: all visible GPUs by default
    GPUS_PER_NODE="$(nvidia-smi --list-gpus 2>/dev/null | wc -l || true)"
    [[ "$GPUS_PER_NODE" -ge 1 ]] || GPUS_PER_NODE=1
fi
STRATEGY="${STRATEGY:-ddp}"              # ddp, or fsdp (with configs/trainer/fsdp.yaml in the config)

if [[ $# -eq 0 ]]; then
    echo "usage: [NNODES=N NODE_RANK=R MASTER_ADDR=A MASTER_PORT=P GPUS_PER_NODE=G] $0 -c CONFIG [--run-dir DIR] [--resume auto] [key=value ...]" >&2
    exit 2
fi
if ! [[ "$NODE_RANK" -ge 0 && "$NODE_RANK" -lt "$NNODES" ]]; then
    echo "$0: NODE_RANK must be in [0, $NNODES), got $NODE_RANK" >&2
    exit 2
fi

echo "node $NODE_RANK of $NNODES: $GPUS_PER_NODE processes, rendezvous at $MASTER_ADDR:$MASTER_PORT" >&2
# The overrides after "$@" win over the config and the command line: they must match torchrun.
exec torchrun \
    --nnodes "$NNODES" --nproc-per-node "$GPUS_PER_NODE" --node-rank "$NODE_RANK" \
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
    -m flowvid.cli train "$@" \
    trainer.num_nodes="$NNODES" trainer.devices="$GPUS_PER_NODE" trainer.strategy="$STRATEGY"
