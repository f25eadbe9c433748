#!/usr/bin/env bash
# Train the bundled model v2 on one GPU, from nothing to the fp16 bundle (MODEL_CARD.md), in about 7 minutes
# on one H200:
#
#   scripts/train_bundled_gpu.sh RESULTS_DIR [full|cpu|tiny]
#
#  1. procedural data: 2000 training clips (seed 0) and the 60 held-out clips of the benchmarks (seed 12345)
#  2. stage 1 up to the latent cache (VAE + latents), once
#  3. objective ablation: three copies of that run train the UNet for its first ABL steps side by side
#     (epsilon | v-prediction + zero terminal SNR + trailing | the same + min-SNR-5), then
#     benchmarks/stage1_ablation.py scores them on held-out prompts (one red sun, no stray red, detail, and the
#     attribute probe's reading when the probe exists)
#  4. the winner continues to the full UNet schedule (same run, resumed: identical to never stopping) and
#     the decoder-only phase
#  5. stage 2, three runs side by side on the winner: the NADM recipe, sparse-causal off, contrastive off
#     and, beside them, the image-to-video control model (shanshui train-control, docs/control.md)
#  6. optional: EXTEND="U1:S1 U2:S2 ..." continues the winner's UNet to U1 steps (a warm restart of its
#     cosine schedule), snapshots it as model-U1, trains stage 2 on it for S1 steps (warm-started from the
#     previous extension's motion module, the first one fresh), and so on; then the two ablations and a fresh
#     copy of the recipe train S steps each on the last snapshot. This is how the shipped model was made on a
#     CPU over several sessions (`make bundled-model`: EXTEND="4600:800 6600:400" at the cpu scale)
#  7. the fp16 bundle (weights in files of at most 15 MB), packed as bundle.tar split in 15 MiB parts
#
# Runs live in $SHANSHUI_RUNS (default ~/.cache/shanshui/runs) and every stage resumes where it stopped.
# `tiny` runs the same steps with tiny models and data on a CPU in a few minutes (tests/test_gpu_script.py).
# `cpu` is the full recipe sized for a 2-core CPU (about two hours; MODEL_CARD.md lists its step counts): the
# same stages, one heavy job at a time (jobs that run side by side on a GPU queue on a lock file instead).
# PYTHON (default python3) must import shanshui (e.g. PYTHONPATH=src) and its dependencies. WINNER=eps|v|vminsnr
# overrides the ablation's pick (its table is still written).
set -euo pipefail
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error
RESULTS=${1:?usage: scripts/train_bundled_gpu.sh RESULTS_DIR [full|cpu|tiny]}
SCALE=${2:-full}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${SHANSHUI_RUNS:-$HOME/.cache/shanshui/runs}/bundled2-$SCALE
mkdir -p "$RESULTS" "$RUNS"
RESULTS=$(cd "$RESULTS" && pwd)
START=$(date +%s)
SS=("$PY" -m shanshui.cli)
S1=(--config "$HERE/configs/bundled2_stage1.yaml")
S2=(--config "$HERE/configs/bundled2_stage2.yaml")
SERIAL=()              # prefix of every heavy job; on the CPU it queues them on one lock
PROBE_THREADS=4

case "$SCALE" in
  full)
    N=2000; HELD=60; ABL=300; WORKERS=$(nproc); ABL_N=36
    T1=(unet.max_minutes=2.0); T2=(schedule.max_minutes=2.0); TVAL=(); TC=(--max-minutes 2.0) ;;
  cpu)
    N=1500; HELD=60; ABL=200; WORKERS=2; ABL_N=36; PROBE_THREADS=2
    SERIAL=(flock "$RUNS/.cpu.lock")
    T1=(threads=2 'mixed_precision="no"' data.frames_per_clip=4 vae.steps=400 vae.decoder_steps=200
        vae.decoder_batch_size=8 unet.steps=1800 unet.batch_size=32 unet.lr=4.0e-4 checkpoint.every_minutes=5
        log_every=25)
    T2=(cpu=true 'mixed_precision="no"' optim.batch_size=1 data.num_workers=1 schedule.max_steps=200
        checkpoint.every=100)
    TVAL=(--device cpu)
    TC=(cpu=true optim.batch_size=2 data.num_workers=0 checkpoint.every=100 --max-minutes 8) ;;
  tiny)
    N=6; HELD=4; ABL=2; WORKERS=2; ABL_N=4
    T1=(model.preset=tiny data.frames_per_clip=2 threads=1 log_every=1 vae.steps=2 vae.batch_size=2 vae.crop=32
        vae.decoder_steps=1 vae.decoder_batch_size=2 unet.steps=4 unet.batch_size=2 unet.warmup_steps=1
        model.tokenizer_merges=50 samples.steps=2 'mixed_precision="no"')
    T2=(schedule.max_steps=2 schedule.warmup_steps=0 optim.batch_size=1 data.frames=4 data.size=64 loss.m=1
        data.num_workers=0 checkpoint.every=1 'mixed_precision="no"' log_every=1)
    TVAL=(--steps 2 --device cpu)
    TC=(cpu=true model.refiner_channels=[8,16] data.frames=4 data.size=64 data.num_workers=0 optim.batch_size=1
        schedule.max_steps=2 schedule.warmup_steps=0 checkpoint.every=1 log_every=1) ;;
  *) echo "error: scale '$SCALE' must be full, cpu or tiny" >&2; exit 2 ;;
esac
[ "$SCALE" = tiny ] && DATA_SIZE=64 || DATA_SIZE=128
[ "$SCALE" = tiny ] && T1+=(data.size=64)

stamp() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$RESULTS/log.txt"; }
mark() { echo "$1 $(( $(date +%s) - START ))" >> "$RESULTS/times.txt"; }

# ------------------------------------------------------------------------------------------ 1. data
stamp "data: $N training clips, $HELD held-out clips ($WORKERS workers)"
"${SS[@]}" data synth --n "$N" --out "$RUNS/data" --seed 0 --size "$DATA_SIZE" --frames 16 --format frames \
  --workers "$WORKERS" > "$RESULTS/synth.log" 2>&1 &
SYNTH=$!
"${SS[@]}" data synth --n "$HELD" --out "$RUNS/heldout" --seed 12345 --size "$DATA_SIZE" --frames 16 \
  --format frames --workers 2 > "$RESULTS/synth_heldout.log" 2>&1
wait $SYNTH
mark data
# the attribute probe of benchmarks/procedural_quality.py learns from the same data meanwhile, on the CPU
PROBE=""
if [ "${PREPARE_PROBE:-0}" = 1 ]; then
  "${SERIAL[@]}" "$PY" "$HERE/benchmarks/procedural_quality.py" --heldout "$RUNS/heldout" --train-data "$RUNS/data" \
    --probe "$RUNS/probe/probe.safetensors" --threads "$PROBE_THREADS" --out "$RUNS/probe/real_rows.json" \
    --sheets "$RUNS/probe/sheets" > "$RESULTS/probe.log" 2>&1 &
  PROBE=$!
fi

# ------------------------------------------------------------------------------------------ 2. VAE + latent cache
COMMON=(data.root="$RUNS/data" "${T1[@]}")
stamp "stage 1: VAE and latent cache"
"${SERIAL[@]}" "${SS[@]}" train-image "${S1[@]}" --resume latest output_dir="$RUNS/stage1-base" until=latents "${COMMON[@]}" \
  > "$RESULTS/stage1_base.log" 2>&1
mark stage1_base

# ------------------------------------------------------------------------------------------ 3. objective ablation
declare -A OBJ
OBJ[eps]="objective.prediction_type=epsilon objective.zero_terminal_snr=false objective.timestep_spacing=leading objective.min_snr_gamma=0"
OBJ[v]="objective.prediction_type=v_prediction objective.zero_terminal_snr=true objective.timestep_spacing=trailing objective.min_snr_gamma=0"
OBJ[vminsnr]="objective.prediction_type=v_prediction objective.zero_terminal_snr=true objective.timestep_spacing=trailing objective.min_snr_gamma=5"
stamp "objective ablation: first $ABL UNet steps of eps | v | vminsnr, side by side"
pids=()
for name in eps v vminsnr; do
  dir="$RUNS/stage1-$name"
  if [ ! -d "$dir" ]; then
    # hard links share the latent cache and checkpoints (read only); the log each run appends to is copied
    cp -al "$RUNS/stage1-base" "$dir.tmp"
    [ -f "$dir.tmp/log.jsonl" ] && cp "$dir.tmp/log.jsonl" "$dir.tmp/log.jsonl.own" && mv -f "$dir.tmp/log.jsonl.own" "$dir.tmp/log.jsonl"
    mv "$dir.tmp" "$dir"
  fi
  # shellcheck disable=SC2086
  "${SERIAL[@]}" "${SS[@]}" train-image "${S1[@]}" --resume latest output_dir="$dir" unet.stop_after=$ABL ${OBJ[$name]} \
    "${COMMON[@]}" > "$RESULTS/stage1_$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
# the attribute probe (when it is being trained) is part of the score: it tells a landscape from a texture
PROBE_ARG=()
if [ -n "$PROBE" ]; then wait "$PROBE" || stamp "probe training failed (see probe.log)"; PROBE=""; fi
[ -f "$RUNS/probe/probe.safetensors" ] && PROBE_ARG=(--probe "$RUNS/probe/probe.safetensors")
"${SERIAL[@]}" "$PY" "$HERE/benchmarks/stage1_ablation.py" --heldout "$RUNS/heldout" --n "$ABL_N" "${TVAL[@]}" "${PROBE_ARG[@]}" \
  --model eps="$RUNS/stage1-eps/model" --model v="$RUNS/stage1-v/model" \
  --model vminsnr="$RUNS/stage1-vminsnr/model" --out "$RESULTS/stage1_ablation.json" \
  --pick "$RESULTS/winner.txt" 2>&1 | tee "$RESULTS/stage1_ablation.log"
if [ -n "${WINNER:-}" ]; then   # a decision taken by looking at more than the score (MODEL_CARD.md says which)
  stamp "winner set to $WINNER by WINNER=; the score picked $(cat "$RESULTS/winner.txt")"
  echo "$WINNER" > "$RESULTS/winner.txt"
fi
WIN=$(cat "$RESULTS/winner.txt")
cp "$RESULTS/winner.txt" "$RUNS/winner.txt"
mark ablation

# ------------------------------------------------------------------------------------------ 4. the winner, to the end
stamp "stage 1: $WIN continues to the full schedule + decoder phase"
# shellcheck disable=SC2086
"${SERIAL[@]}" "${SS[@]}" train-image "${S1[@]}" --resume latest output_dir="$RUNS/stage1-$WIN" ${OBJ[$WIN]} "${COMMON[@]}" \
  > "$RESULTS/stage1_main.log" 2>&1
IMAGE="$RUNS/stage1-$WIN/model"
mark stage1

# ------------------------------------------------------------------------------------------ 5. stage 2 (+ ablations)
stamp "stage 2: NADM | sparse-causal off | contrastive off (| image-to-video control), side by side"
C2=(model.base_model="$IMAGE" data.root="$RUNS/data" "${T2[@]}")
"${SERIAL[@]}" "${SS[@]}" train "${S2[@]}" --resume latest --no-progress output_dir="$RUNS/stage2" "${C2[@]}" \
  > "$RESULTS/stage2.log" 2>&1 &
MAIN2=$!
"${SERIAL[@]}" "${SS[@]}" train "${S2[@]}" --resume latest --no-progress output_dir="$RUNS/stage2-sc-off" model.sparse_causal=off \
  "${C2[@]}" > "$RESULTS/stage2_sc_off.log" 2>&1 &
SC=$!
"${SERIAL[@]}" "${SS[@]}" train "${S2[@]}" --resume latest --no-progress output_dir="$RUNS/stage2-con-off" loss.lambda_con=0 \
  "${C2[@]}" > "$RESULTS/stage2_con_off.log" 2>&1 &
CON=$!
CTRL=""
start_control() {  # args: extra overrides
  "${SERIAL[@]}" "${SS[@]}" train-control --config "$HERE/configs/bundled_control.yaml" --no-progress --resume latest \
    output_dir="$RUNS/control" model.base_model="$IMAGE" data.root="$RUNS/data" "${TC[@]}" "$@" \
    > "$RESULTS/control.log" 2>&1 &
  CTRL=$!
}
# on a GPU the control model trains beside stage 2 from fresh motion modules; on the CPU, where the jobs queue
# anyway and its time budget is short, it starts from stage 2's motion module
[ "$SCALE" != cpu ] && start_control
wait $MAIN2
mark stage2
[ "$SCALE" = cpu ] && start_control model.motion_module="$RUNS/stage2/final/motion_module.safetensors"
ABL_OK=1
wait $SC || ABL_OK=0
wait $CON || ABL_OK=0
mark stage2_ablations
CTRL_OK=0
if [ -n "$CTRL" ]; then wait "$CTRL" && CTRL_OK=1; mark control; fi

# ------------------------------------------------------------------------------------------ 6. extensions
MOTION="$RUNS/stage2/final/motion_module.safetensors"
BUNDLE="$RUNS/bundle"
EXTENDED=()
WARM=()
for ext in ${EXTEND:-}; do
  U=${ext%%:*}; S=${ext##*:}
  [[ "$U" =~ ^[0-9]+$ && "$S" =~ ^[0-9]+$ && "$ext" == *:* ]] || { stamp "error: EXTEND entry '$ext' must be UNET_STEPS:STAGE2_STEPS"; exit 2; }
  SNAP="$RUNS/stage1-$WIN/model-$U"
  if [ ! -d "$SNAP" ]; then       # a snapshot exists only once its UNet steps are done, so a rerun skips it
    stamp "extension: $WIN UNet to $U steps"
    # shellcheck disable=SC2086
    "${SERIAL[@]}" "${SS[@]}" train-image "${S1[@]}" --resume latest output_dir="$RUNS/stage1-$WIN" ${OBJ[$WIN]} \
      "${COMMON[@]}" unet.steps="$U" > "$RESULTS/stage1_to_$U.log" 2>&1
    cp -a "$RUNS/stage1-$WIN/model" "$SNAP.tmp" && mv "$SNAP.tmp" "$SNAP"
  fi
  stamp "extension: stage 2 on the $U-step model, $S steps${WARM:+ (warm start)}"
  "${SERIAL[@]}" "${SS[@]}" train "${S2[@]}" --resume latest --no-progress output_dir="$RUNS/stage2-$U" model.base_model="$SNAP" \
    data.root="$RUNS/data" "${T2[@]}" schedule.max_steps="$S" "${WARM[@]}" > "$RESULTS/stage2_$U.log" 2>&1
  IMAGE=$SNAP
  MOTION="$RUNS/stage2-$U/final/motion_module.safetensors"
  WARM=(model.motion_module="$MOTION")
  EXTENDED+=("$U")
  BUNDLE="$RUNS/bundle-$U"
done
if [ ${#EXTENDED[@]} -gt 0 ]; then
  # the NADM ablations again, on the last image model: three fresh runs of S steps, the recipe itself included
  for arm in base sc-off con-off; do
    extra=()
    [ $arm = sc-off ] && extra=(model.sparse_causal=off)
    [ $arm = con-off ] && extra=(loss.lambda_con=0)
    stamp "extension: stage-2 ablation '$arm' on the $U-step model, $S steps"
    "${SERIAL[@]}" "${SS[@]}" train "${S2[@]}" --resume latest --no-progress output_dir="$RUNS/stage2-$U-abl-$arm" \
      model.base_model="$IMAGE" data.root="$RUNS/data" "${T2[@]}" schedule.max_steps="$S" "${extra[@]}" \
      > "$RESULTS/stage2_${U}_abl_$arm.log" 2>&1
  done
  mark extensions
  # the control model was trained on the first image model; it does not match the extended one
  CTRL_OK=0
fi

# ------------------------------------------------------------------------------------------ 7. export
stamp "export: fp16 bundle"
CONTROL_ARG=()
[ "$CTRL_OK" = 1 ] && CONTROL_ARG=(--control "$RUNS/control/final")
"$PY" -m shanshui.training.bundle "$IMAGE" "$MOTION" --out "$BUNDLE" "${CONTROL_ARG[@]}" | tee -a "$RESULTS/log.txt"
(cd "$RUNS" && tar -cf - "$(basename "$BUNDLE")") | split -b 15m -d - "$RESULTS/bundle.tar.part"
mark export
# what the results folder gets besides the bundle: logs, sample sheets, the stage logs of every run
EXT_RUNS=()
for U in "${EXTENDED[@]}"; do EXT_RUNS+=("stage2-$U"); done
[ ${#EXTENDED[@]} -gt 0 ] && EXT_RUNS+=("stage2-$U-abl-base" "stage2-$U-abl-sc-off" "stage2-$U-abl-con-off")
for run in stage1-base stage1-eps stage1-v stage1-vminsnr stage2 stage2-sc-off stage2-con-off control "${EXT_RUNS[@]}"; do
  [ -d "$RUNS/$run" ] || continue
  mkdir -p "$RESULTS/runs/$run"
  cp -r "$RUNS/$run/samples" "$RESULTS/runs/$run/" 2>/dev/null || true
  cp "$RUNS/$run"/log.jsonl "$RESULTS/runs/$run/" 2>/dev/null || true
  cp "$RUNS/$run"/logs/train.csv "$RESULTS/runs/$run/" 2>/dev/null || true
done
"$PY" - "$RESULTS" "$WIN" "$ABL_OK" "$SCALE" "$CTRL_OK" "$BUNDLE" "${EXTENDED[@]}" <<'EOF'
import json, sys, subprocess
from pathlib import Path
res, win, abl_ok, scale = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4]
control_ok = sys.argv[5] == "1"
bundle, extended = sys.argv[6], [int(u) for u in sys.argv[7:]]
times = dict(line.split() for line in (res / "times.txt").read_text().splitlines())
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    gpu = "none"
summary = {"scale": scale, "winner": win, "stage2_ablations_ok": abl_ok, "control_ok": control_ok,
           "extended_to_unet_steps": extended, "bundle": bundle,
           "seconds_at_end_of": times, "gpu": gpu}
(res / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary))
EOF
if [ -n "$PROBE" ]; then wait "$PROBE" || stamp "probe training failed (see probe.log)"; fi
stamp "done"
