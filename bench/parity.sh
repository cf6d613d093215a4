#!/usr/bin/env bash
# Step parity with PyTorch over the matrix in bench/parity.toml (every method, encoder,
# normalization and optimizer option at least once): collapse-lab trains each run's first
# STEPS steps and dumps views, per-step values and the state after every step; PyTorch replays
# each step from collapse-lab's state and compares (bench/torch_parity.py). `just parity`.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-10}
python=$(bash bench/torch-venv.sh)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/collapse-lab/target}"
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$CARGO_TARGET_DIR/release/collapse-lab" parity-dump bench/parity.toml --steps "$steps" --out "$out" > /dev/null
"$python" bench/torch_parity.py "$out"/* "$@"
