#!/usr/bin/env bash
# GPU smoke test: one CUDA GPU, no network, at most 9 minutes. Four checks of the GPU path, each a real
# launch of the shipped code:
#   1. quickstart steps on CUDA in bf16 (transformers rollout backend), one process;
#   2. an accelerate FSDP2 launch (accelerate_configs/fsdp2.yaml) with 1 process for 3 steps;
#   3. the update benchmark (scripts/bench_fsdp2.py) on a random Qwen2.5-1.5B-shaped model in bf16:
#      tokens/s, MFU and peak GPU memory, one JSON line;
#   4. the rollout benchmark (scripts/bench_rollout.py) on CUDA: our backend against padded `generate`.
# Writes runs/gpu_smoke/ (override with OUT=...). Every step has its own timeout; the script stops at the
# first failure. The policy of steps 1, 2 and 4 is the embedded default (built on first use, minutes on the
# machine's CPU) unless MODEL names a local checkpoint or hub id, e.g. the embedded model built elsewhere:
#   MODEL=/path/to/embedded/default-<fingerprint> bash scripts/gpu_smoke.sh
# Results: docs/performance.md, "GPU smoke".
#
# Passed on one H200 (2026-12-04, 164 s; docs/performance.md "GPU smoke") with torch 2.11.0+cu130, transformers
# 5.25.0, accelerate 1.16.0, datasets 5.2.0, math-verify 0.9.0, peft 0.21.0, tokenizers 0.23.2. Offline, install
# those (a CUDA build of torch) before going offline; `pip install -e .` adds the rest.
#
#   bash scripts/gpu_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-runs/gpu_smoke}
MODEL=${MODEL:-embedded}
python() { "${PYTHON:-$(command -v python || command -v python3)}" "$@"; }  # images that ship only python3
mkdir -p "$OUT"
start=$(date +%s)
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_smoke: no CUDA device')"
python -c "import torch; print('gpu_smoke:', torch.cuda.get_device_name(), 'torch', torch.__version__)"

echo "gpu_smoke 1/4: quickstart, 4 steps, CUDA bf16, transformers backend"
rm -rf "$OUT/quickstart"
timeout 240 python -m accelerate.commands.launch --config_file accelerate_configs/single_gpu.yaml \
    -m pipeline.train --config quickstart --output-dir "$OUT/quickstart" \
    model.name_or_path="$MODEL" train.total_steps=4 update.precision=bf16 generate.precision=bf16 eval.precision=bf16 eval.max_problems=32

echo "gpu_smoke 2/4: accelerate FSDP2 launch (accelerate_configs/fsdp2.yaml), 1 process, 3 steps"
rm -rf "$OUT/fsdp2"
timeout 180 python -m accelerate.commands.launch --config_file accelerate_configs/fsdp2.yaml --num_processes 1 \
    -m pipeline.train --config quickstart --output-dir "$OUT/fsdp2" \
    model.name_or_path="$MODEL" train.total_steps=3 eval.at_start=false eval.at_end=false
test -f "$OUT/fsdp2/checkpoints/training-state-000003/sharded/.metadata"

echo "gpu_smoke 3/4: update benchmark, random Qwen2.5-1.5B-shaped model (28 layers), bf16, FSDP2, 1 process"
timeout 150 python -m accelerate.commands.launch --config_file accelerate_configs/fsdp2.yaml --num_processes 1 \
    scripts/bench_fsdp2.py --layers 28 --steps 3 --groups 4 --samples 8 --response-len 1024 | tee "$OUT/bench_fsdp2.json"

echo "gpu_smoke 4/4: rollout benchmark on CUDA, fp32 and bf16"
for precision in fp32 bf16; do
  timeout 90 python scripts/bench_rollout.py --device cuda --precision "$precision" --repeats 3 --model "$MODEL" \
      | tee -a "$OUT/bench_rollout.json"
done

echo "gpu_smoke: passed in $(( $(date +%s) - start ))s (limit 540s)"
