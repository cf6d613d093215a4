# collapse-lab recipes (README's commands do not depend on just).
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/collapse-lab/target")

# Run the default grid (or another: just run experiments/smoke.toml)
run grid="experiments/bn-ablation.toml" *args="":
    cargo run --release -- run {{grid}} {{args}}

# The test suite (release: debug builds train ~40× slower)
test:
    cargo test --release

# Step parity with PyTorch over bench/parity.toml (STEPS=10 by default)
parity *args="":
    bash bench/parity.sh {{args}}

# Soak test: a 12-run grid killed (SIGKILL) at 20 random moments, resumed, compared bit for bit
soak:
    cargo test --release --test soak -- --ignored --nocapture

# The Slurm test against a single-node Slurm on this machine (root; installs it with apt)
slurm-test:
    bash scripts/slurm-local.sh install
    cargo test --release --test slurm -- --ignored --nocapture

# Formatting, lints, tests and the pandas check, as CI runs them
ci:
    bash .ci/run

# Our BYOL step vs PyTorch's, side by side (A B A B); e.g. `just bench-vs-torch ENCODER=resnet18 WIDTH=64`
# or `just bench-vs-torch ISA=avx2` (both on AVX2 on an AVX-512 machine)
bench-vs-torch *env="":
    env {{env}} bash bench/vs_torch.sh

# Time a step or the loader: `just bench --what loader`
bench *args="":
    cargo run --release -- bench {{args}}

# Build with CUDA on a machine without a GPU or CUDA install (pinned CUDA 13.0 wheels in a venv,
# a link-time libcuda from Debian; see README "CUDA"). CUDA_COMPUTE_CAP defaults to 90 (H100/H200).
build-cuda *args="":
    bash scripts/build-cuda.sh {{args}}

# The GPU check kit (gpu-kit/, ≤ 48 MiB): the CUDA binary stripped and xz-compressed, the smoke
# grid and run.sh, which runs selftest, the smoke grid on GPU vs CPU and a ResNet-18 bench on a
# GPU machine (README "CUDA")
gpu-kit:
    bash scripts/gpu-kit.sh

# Render the report of a grid folder
report dir="runs/bn-ablation":
    cargo run --release -- report {{dir}}
