#!/usr/bin/env bash
# The real-size GPU check (docs/performance.md): one run, results in OUTDIR as gpu_check.json + gpu_check.md.
#
#   bash benchmarks/gpu_check.sh OUTDIR            # CUDA, fp16, SD 1.5 size, random weights (<= 8 min on an H200)
#   bash benchmarks/gpu_check.sh OUTDIR --tiny     # tiny models on the CPU, seconds: checks that the script works
#
# Needs python3 with torch, diffusers, transformers, accelerate, safetensors, opencv, einops, scipy, tqdm and
# shanshui importable (this script puts the checkout's src/ on PYTHONPATH). No network, no weights.
set -euo pipefail
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR [--tiny] [--sections a,b,...]}
shift
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO/src"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error
export SHANSHUI_CACHE="${SHANSHUI_CACHE:-${TMPDIR:-/tmp}/shanshui-cache}"
PY=${PYTHON:-python3}
"$PY" -c "import sys, torch, diffusers, transformers, accelerate, shanshui; print('python', sys.version.split()[0], \
'torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available())" 2>&1 | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/env.txt" 2>/dev/null || true
set +e
timeout "${GPU_CHECK_TIMEOUT:-470}" "$PY" "$REPO/benchmarks/gpu_check.py" --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
set -e
echo "gpu_check exit code $rc (124 = stopped by the time limit; the JSON holds every finished section)" | tee -a "$OUT/log.txt"
exit "$rc"
