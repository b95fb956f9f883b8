#!/usr/bin/env bash
# Pre-training step throughput on one CUDA GPU in bf16 at the official size (12 layers x 512,
# 2,048 genes): ours (padded, length-grouped), ours_packed (no padding, block-diagonal attention)
# and the fair baseline hf_sdpa_grouped, each as real tokens/s, ratio and MFU against the GPU's
# bf16 GEMM rate measured in the same run, then the projected days for one pass over 27.5M cells
# on 4 GPUs of this kind. Budget: under 8 minutes. Usage: bash benchmarks/gpu_pretrain.sh [python]
set -euo pipefail
PYTHON="${1:-${PYTHON:-python}}"
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
"$PYTHON" - <<'PY'
import importlib.util, time
import numpy as np
import torch
from benchmarks.pretrain_step_benchmark import cell_lengths, main

print(f"torch {torch.__version__}, flash_attn installed: {importlib.util.find_spec('flash_attn') is not None}"
      " (ours_packed uses its variable-length kernel when it is, else SDPA per cell)")
start = time.time()
result = main(["--device", "cuda", "--precision", "bf16", "--sizes", "official", "--context-sizes", "",
               "--batch-size", "16", "--official-cells", "512", "--warmup", "3", "--gemm-size", "8192"])
cells, days_target = 27.5e6, 50.0
mean_tokens = float(np.mean(np.minimum(cell_lengths(100_000, 0), 2047) + 1))
print(f"\nprojection: 27.5M cells x {mean_tokens:.0f} real tokens (benchmark length distribution) per pass")
for row in result["rows"]:
    days = cells * mean_tokens / (4 * row["tokens_per_s"]) / 86400
    print(f"  {row['case']:<18} MFU {row['mfu']:6.1%}  {row['tokens_per_s']:>10.0f} tok/s/GPU  "
          f"{days:6.2f} days per pass on 4 GPUs of this kind ({days_target / days:5.1f} passes in the paper's 50 days)")
print(f"(one pass per epoch; the official epoch count is not published. Wall time {time.time() - start:.0f} s)")
PY
