#!/usr/bin/env bash
# Seed 002 (mmclassification): ./tools/dist_test.sh CONFIG CHECKPOINT NUM_GPU [onebit train flags...]
# Evaluates CHECKPOINT on the test set of CONFIG's data set with NUM_GPU processes under torchrun
# (each process evaluates its shard; the counts are summed): dist_train.sh with `-e CHECKPOINT`.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_GPU [onebit train flags...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NUM_GPU=$3
shift 3
exec "$(dirname "$0")/dist_train.sh" "$CONFIG" "$NUM_GPU" -e "$CHECKPOINT" "$@"
