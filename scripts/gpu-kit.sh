#!/usr/bin/env bash
# Builds the GPU check kit (`just gpu-kit`): the CUDA build of collapse-lab (scripts/build-cuda.sh,
# compute capability 90: H100/H200), stripped and xz-compressed, with the smoke grid, the
# PyTorch reference step and run.sh (scripts/gpu-kit-run.sh), in gpu-kit/ (ignored by git).
# The kit must fit a GPU lease's file limit: it refuses to finish above 48 MiB and says what
# takes the space. Copy the folder to the GPU machine and run `bash gpu-kit/run.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
limit_mib=48
kit=gpu-kit
cache="$HOME/.cache/collapse-lab"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_CUDA:-$cache/target-cuda}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

start=$SECONDS
bash scripts/build-cuda.sh
bin="$CARGO_TARGET_DIR/release/collapse-lab"

# Only what this script wrote before is replaced; a symlink in place of the kit is refused.
if [ -L "$kit" ]; then echo "gpu-kit.sh: $kit is a symbolic link; remove it first" >&2; exit 2; fi
mkdir -p "$kit"
for f in collapse-lab.xz smoke.toml torch_reference.py run.sh VERSION; do rm -f "$kit/$f"; done

stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
strip --strip-all -o "$stripped" "$bin"
xz -9e --threads=0 -c "$stripped" > "$kit/collapse-lab.xz"
cp experiments/smoke.toml "$kit/smoke.toml"
cp bench/torch_reference.py "$kit/torch_reference.py"
cp scripts/gpu-kit-run.sh "$kit/run.sh"
chmod +x "$kit/run.sh"
echo "collapse-lab $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo +changes), CUDA compute capability $CUDA_COMPUTE_CAP" > "$kit/VERSION"

size() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
total=$(du -sb "$kit" | cut -f1)
echo "binary $(mib "$(size "$bin")") MiB, stripped $(mib "$(size "$stripped")") MiB, xz $(mib "$(size "$kit/collapse-lab.xz")") MiB"
echo "kit $kit/: $(mib "$total") MiB in all (limit $limit_mib MiB), built in $((SECONDS - start)) s"
if [ "$total" -gt $((limit_mib * 1048576)) ]; then
  echo "gpu-kit.sh: the kit is over $limit_mib MiB. The largest sections of the stripped binary:" >&2
  size_cmd=$(command -v size || true)
  if [ -n "$size_cmd" ]; then "$size_cmd" -A "$stripped" | sort -k2 -n -r | head -n 8 >&2; fi
  echo "(candle's CUDA kernels are embedded as PTX/fatbin per compute capability: build for one, CUDA_COMPUTE_CAP=90)" >&2
  exit 1
fi
