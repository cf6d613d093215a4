# %% [markdown]
# # Exploring a collapse-lab grid
# Open this file as a notebook (VS Code, Jupyter with jupytext) or run it as a script:
# `python examples/explore.py runs/bn-ablation`. It loads the grid's tables with pandas
# (pyarrow), polars and duckdb, and stacks logged embedding vectors into a 2-D array.

# %%
import pathlib
import sys

import duckdb
import numpy as np
import pandas as pd
import polars as pl

grid = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bn-ablation")

# %% [markdown]
# ## One row per run: pandas

# %%
summary = pd.read_parquet(grid / "summary.parquet")
runs = summary[summary.variant != "random"]
print(
    runs.groupby("variant")[["final_pos_cos", "final_neg_cos", "final_probe_acc"]]
    .agg(["mean", "std"])
    .round(3)
)
print("untrained baseline probe accuracy:",
      summary.loc[summary.variant == "random", "final_probe_acc"].round(3).tolist())

# %% [markdown]
# ## Every step of every run: polars (lazy scan over all runs)

# %%
steps = pl.scan_parquet(str(grid / "*" / "steps.parquet")).collect()
last_epoch = (
    steps.filter(pl.col("epoch") == pl.col("epoch").max().over("run_id"))
    .group_by("variant")
    .agg(pl.col("pos_cos").mean(), pl.col("neg_cos").mean(), pl.col("effective_rank").mean())
    .sort("variant")
)
print(last_epoch)

# %% [markdown]
# ## SQL over the evaluations: duckdb

# %%
evals_glob = str(grid / "*" / "evals.parquet")
print(duckdb.sql(f"""
    SELECT variant, epoch, avg(probe_acc) AS probe, avg(knn_acc) AS knn, avg(y_effective_rank) AS y_rank
    FROM read_parquet('{evals_glob}')
    GROUP BY variant, epoch
    ORDER BY variant, epoch
""").df().to_string())

# %% [markdown]
# ## Embeddings of a logged step as a matrix

# %%
run_dir = next(p for p in sorted(grid.iterdir()) if (p / "embeddings.parquet").is_file())
emb = pd.read_parquet(run_dir / "embeddings.parquet")
first = emb[(emb.step == emb.step.min()) & (emb.kind == "z") & (emb.view == 0)].sort_values("sample")
z = np.stack(first.vector.to_numpy())
print(run_dir.name, "z at step", int(first.step.iloc[0]), "→ array", z.shape, z.dtype)
zn = z / np.linalg.norm(z, axis=1, keepdims=True)
print("numpy std of l2-normalised rows:", float(zn.std(axis=0, ddof=1).mean()))
