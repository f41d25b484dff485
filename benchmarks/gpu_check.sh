#!/usr/bin/env bash
# GPU check of issue 7: full fine-tuning of a BERT-base-sized encoder (random init, built from a
# config: hidden 768, 12 layers, 12 heads) in bf16 at sequence length 128; prints samples/s and MFU
# against the bf16 matmul peak measured in the same run and the nominal H100/H200 peak (989 TFLOP/s).
# Variants: fixed-length (no padding) and length-grouped batches, eager and torch.compile.
# Then the default recipe (BBC News, strategy=full) under `accelerate launch` with
# accelerate_configs/multi_gpu.yaml on all GPUs when there are several, else single_gpu.yaml.
# The benchmark stays under 8 minutes (a time budget skips variants that would start late).
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

# The default recipe through `accelerate launch`: multi_gpu.yaml on all GPUs when there are
# several, single_gpu.yaml on one; the dry run launches the same recipe with cpu.yaml for a few
# steps. Prints the command, then what metrics.json says (accuracy, processes, wall time).
recipe_dir="${OUT:-/tmp}/gpu_check_recipe"
run_recipe() {  # $1: accelerate config, $2: processes, then recipe overrides
  local config="$1" procs="$2"
  shift 2
  local cmd=("$py" -m accelerate.commands.launch --config_file "$config" --num_processes "$procs"
             recipes/bbc_news.py "output.dir=$recipe_dir" output.overwrite=true "output.report_to=[none]"
             output.progress_bars=false "$@")
  echo "recipe: accelerate launch --config_file $config --num_processes $procs recipes/bbc_news.py ${*}"
  local t0=$SECONDS
  "${cmd[@]}"
  "$py" - "$recipe_dir/metrics.json" "$((SECONDS - t0))" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
held = m.get("held_out", {})
print(f"recipe done: strategy={m.get('strategy')} processes={m.get('num_processes')} "
      f"held-out accuracy={held.get('accuracy')} best_epoch={m.get('best_epoch')} wall={sys.argv[2]} s")
PY
}

if [[ "${1:-}" == "--dry-run" ]]; then
  shift
  "$py" benchmarks/gpu_bench.py --dry-run --lengths both --compile off --json "$json" "$@"
  run_recipe accelerate_configs/cpu.yaml 1 strategy=full data.max_train_samples=48 train.max_steps=2 \
    model.max_length=32 eval.train_sample_size=16
  exit 0
fi

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv || true
else
  echo "gpu_check: nvidia-smi not found; is this a GPU machine? (use --dry-run on a CPU)" >&2
fi
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
timeout 470 "$py" benchmarks/gpu_bench.py --lengths both --compile both --time-budget 330 --json "$json" "$@"
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
if (( gpus > 1 )); then
  run_recipe accelerate_configs/multi_gpu.yaml "$gpus" strategy=full
elif (( gpus == 1 )); then
  run_recipe accelerate_configs/single_gpu.yaml 1 strategy=full
fi
