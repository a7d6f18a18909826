#!/usr/bin/env bash
# Seed 002 (mmclassification): ./tools/dist_train.sh CONFIG NUM_GPU [onebit train flags...]
# NUM_GPU processes of `onebit train --config CONFIG` under torchrun (CPU processes without CUDA).
# PYTHON selects the interpreter (default: python3); PORT the rendezvous port (default: a free one).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_GPU [onebit train flags...]" >&2
    exit 2
fi
CONFIG=$1
NUM_GPU=$2
shift 2
if [ -n "${PORT:-}" ]; then RDZV=(--master_port "$PORT"); else RDZV=(--standalone); fi
exec "${PYTHON:-python3}" -m torch.distributed.run "${RDZV[@]}" --nproc_per_node "$NUM_GPU" \
    -m onebit train --config "$CONFIG" "$@"
