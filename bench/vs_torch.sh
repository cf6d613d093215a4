#!/usr/bin/env bash
# Our BYOL step against PyTorch's on the same network, batch and thread count, run
# alternately (ours, PyTorch, ours, …) PAIRS times; prints each run and the median ratio of
# images/s. PyTorch lives in its own venv (benchmark-only). Usage:
#   bench/vs_torch.sh                       # small net: 32-64-128-256, 32 px, batch 256, 2 threads
#   ENCODER=resnet18 WIDTH=64 bench/vs_torch.sh
#   WHAT=step bench/vs_torch.sh             # the plain step (one view, no target) instead of BYOL's
#   ISA=avx2 bench/vs_torch.sh              # both sides on AVX2 + FMA on an AVX-512 machine: ours
#       built without the `avx512` feature (gemm's AVX2 kernels), PyTorch with oneDNN, MKL and
#       ATen capped at AVX2 (ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS, ATEN_CPU_CAPABILITY)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${PAIRS:-5} threads=${THREADS:-2} encoder=${ENCODER:-convnet} width=${WIDTH:-32}
depth=${DEPTH:-4} size=${SIZE:-32} batch=${BATCH:-256} steps=${STEPS:-10} warmup=${WARMUP:-3}
what=${WHAT:-byol-step}
python=$(bash bench/torch-venv.sh)
isa=${ISA:-native}
release="${CARGO_TARGET_DIR:-$HOME/.cache/collapse-lab/target}/release"
case "$isa" in
  native) cargo build --release --quiet; bin="$release/collapse-lab" ;;
  avx2)
    # Same target folder, other features: cargo keeps both builds' artifacts; the AVX2
    # binary is copied aside and the default one rebuilt (a re-link) so that nothing else
    # picks up the AVX2 binary by accident.
    cargo build --release --quiet --no-default-features
    cp "$release/collapse-lab" "$release/collapse-lab-avx2"
    cargo build --release --quiet
    bin="$release/collapse-lab-avx2"
    export ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 ;;
  *) echo "ISA=$isa: expected native or avx2" >&2; exit 2 ;;
esac
log=$(mktemp)
for _ in $(seq "$pairs"); do
  "$bin" bench --what "$what" --threads "$threads" --warmup "$warmup" --steps "$steps" \
    --set model.encoder="$encoder" --set model.width="$width" --set model.depth="$depth" \
    --set model.resnet_stem=cifar --set dataset.image_size="$size" --set train.batch_size="$batch" \
    --set model.projector.hidden=256 --set model.projector.out=64 \
    --set model.predictor.hidden=256 --set model.predictor.out=64 | tail -n 1 | sed 's/^/ours /' | tee -a "$log"
  "$python" bench/torch_reference.py --encoder "$encoder" --width "$width" --depth "$depth" \
    --what "$what" --image-size "$size" --batch "$batch" --threads "$threads" --warmup "$warmup" --steps "$steps" \
    | sed 's/^/torch /' | tee -a "$log"
done
lscpu | grep -E "^Model name" | sed 's/  */ /g'
grep -o -e '"cpu":"[^"]*"' -e '"cpu_capability": "[^"]*"' "$log" | sort -u
python3 - "$log" "$what, $encoder width $width, $size px, batch $batch, $threads threads" <<'PY'
import json, statistics, sys
ours, torch = [], []
for line in open(sys.argv[1]):
    who, payload = line.split(" ", 1)
    (ours if who == "ours" else torch).append(json.loads(payload)["images_per_s"])
ratios = [o / t for o, t in zip(ours, torch)]
print(f"{sys.argv[2]}: ours {statistics.median(ours):.0f} img/s, pytorch {statistics.median(torch):.0f} img/s, "
      f"median ratio (ours / pytorch, per pair) {statistics.median(ratios):.2f} over {len(ratios)} pairs "
      f"({', '.join(f'{r:.2f}' for r in ratios)})")
PY
rm -f "$log"
