"""Reads a grid's Parquet tables with pandas (pyarrow) as a notebook user would, and checks
the columns of the data contract (../shared/architecture.md). Usage: check_tables.py GRID_DIR"""
import pathlib
import sys

import pandas as pd

# The tables' columns, in order; tests/table_contract.rs holds these lists equal to the Rust
# definitions (src/log/).
STEPS = ["run_id", "variant", "seed", "epoch", "step", "loss", "pos_cos", "neg_cos", "z_std",
         "effective_rank", "lr", "tau", "grad_norm", "step_ms", "metrics_ms"]
SUMMARY = ["run_id", "variant", "seed", "method", "encoder", "encoder_norm", "projector_norm",
           "predictor_norm", "optimizer", "lr", "weight_decay", "tau", "batch_size", "epochs",
           "dataset", "dataset_path", "image_size", "cpu", "status", "error", "stop_reason",
           "final_pos_cos", "final_neg_cos", "final_z_std", "final_effective_rank",
           "eval_z_effective_rank", "final_knn_acc", "final_probe_acc", "collapse_verdict",
           "collapse_step", "steps", "wall_seconds", "images_per_second"]
EVALS = ["run_id", "variant", "seed", "epoch", "step", "knn_acc", "probe_acc", "y_std",
         "y_effective_rank", "z_std", "z_effective_rank", "alpha_req", "align", "uniform",
         "z_var_min", "z_var_median", "z_var_max", "split_seed", "fit_size", "score_size",
         "folds", "knn_acc_se", "probe_acc_se"]
SPECTRUM = ["run_id", "epoch", "space", "index", "singular_value"]
EMBEDDINGS = ["run_id", "step", "epoch", "sample", "image_id", "label", "view", "kind", "vector"]

grid = pathlib.Path(sys.argv[1])
summary = pd.read_parquet(grid / "summary.parquet")
missing = [c for c in SUMMARY if c not in summary.columns]
assert not missing, f"summary.parquet lacks {missing}"
assert len(summary) > 0
def has(table, columns, name):
    missing = [c for c in columns if c not in table.columns]
    assert not missing, f"{name} lacks {missing}"


for run_id in summary["run_id"]:
    has(pd.read_parquet(grid / run_id / "evals.parquet"), EVALS, f"{run_id}/evals.parquet")
    has(pd.read_parquet(grid / run_id / "spectrum.parquet"), SPECTRUM, f"{run_id}/spectrum.parquet")
    if run_id.startswith("random-"):
        continue
    emb = pd.read_parquet(grid / run_id / "embeddings.parquet")
    has(emb, EMBEDDINGS, f"{run_id}/embeddings.parquet")
    assert emb["vector"].map(len).nunique() <= 4, run_id
    steps = pd.read_parquet(grid / run_id / "steps.parquet")
    missing = [c for c in STEPS if c not in steps.columns]
    assert not missing, f"{run_id}/steps.parquet lacks {missing}"
    assert len(steps) > 0 and steps["step"].is_monotonic_increasing, run_id
    assert steps["pos_cos"].between(-1.0001, 1.0001).all(), run_id
print(f"pandas {pd.__version__}: read summary.parquet ({len(summary)} rows) and every run's tables")
