#!/usr/bin/env bash
# `make bench-gpu` on the lent GPU machine (no network; its own python3 3.12 holds torch, lightning, transformers,
# timm, torchmetrics): install the carried wheels it lacks (.whl/, from `make gpu-wheels` here) into a folder of
# their own, check every import of the GPU plan, then run the plan. One call, planned under 8 minutes:
#   device run, carry [".whl"]:  bash benchmarks/gpu_offline.sh        (or: make bench-gpu)
# Extra arguments go to benchmarks.run_all (e.g. --dry-run: the same plan tiny, on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_PY:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${MMSTILTS_SITE:-/tmp/mmstilts-site}
t0=$(date +%s)
"$PY" -m benchmarks.offline install --wheels "$WHEELS" --target "$SITE"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true
"$PY" -m benchmarks.offline check
echo "install + check: $(( $(date +%s) - t0 )) s"
"$PY" -m benchmarks.run_all --only gpu loader --gpu-run "$@"
