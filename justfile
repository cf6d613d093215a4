# collapse-lab recipes (README's commands do not depend on just).
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/collapse-lab/target")

# Run the default grid (or another: just run experiments/smoke.toml)
run grid="experiments/bn-ablation.toml" *args="":
    cargo run --release -- run {{grid}} {{args}}

# The test suite (release: debug builds train ~40× slower)
test:
    cargo test --release

# Formatting, lints, tests and the pandas check, as CI runs them
ci:
    bash .ci/run
