#!/usr/bin/env bash
# GPU check of issue 7: full fine-tuning of a BERT-base-sized encoder (random init, built from a
# config: hidden 768, 12 layers, 12 heads) in bf16 at sequence length 128; prints samples/s and MFU
# against the bf16 matmul peak measured in the same run and the nominal H100/H200 peak (989 TFLOP/s).
# Variants: fixed-length (no padding) and length-grouped batches, eager and torch.compile.
# Stays under 8 minutes (a time budget skips variants that would start late).
#
#   bash benchmarks/gpu_check.sh             # on a GPU machine
#   bash benchmarks/gpu_check.sh --dry-run   # same code path on the CPU, tiny config, a few steps
#
# Extra arguments go to benchmarks/gpu_bench.py (e.g. --batch-size 128 --compile off).
# Results are also written as JSON to ${GPU_CHECK_JSON:-${OUT:-/tmp}/gpu_check.json}.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
  py=.venv/bin/python
else
  py=python3
fi
json="${GPU_CHECK_JSON:-${OUT:-/tmp}/gpu_check.json}"

if [[ "${1:-}" == "--dry-run" ]]; then
  shift
  exec "$py" benchmarks/gpu_bench.py --dry-run --lengths both --compile off --json "$json" "$@"
fi

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv || true
else
  echo "gpu_check: nvidia-smi not found; is this a GPU machine? (use --dry-run on a CPU)" >&2
fi
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
exec timeout 470 "$py" benchmarks/gpu_bench.py --lengths both --compile both --time-budget 330 --json "$json" "$@"
