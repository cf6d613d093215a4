"""`collapse-lab diagnose` against NumPy on one large embedding file, side by side.

    python bench/diagnose_vs_numpy.py [--rows 100000] [--dim 2048] [--repeats 2] [--dir DIR]

Writes an (N, d) float32 `.npy` (800 MB at the defaults) once, then alternates, A B A B:
- collapse-lab: `collapse-lab diagnose FILE` (RankMe, covariance spectrum, α, cosines, spread,
  all streamed in f64), under /usr/bin/time for its peak resident memory;
- NumPy: `np.load` and `np.linalg.svd(z, compute_uv=False)` — the singular values RankMe
  needs, NumPy's fastest route to them — in a child process, timed the same way.
Prints each run's wall time and peak memory, the ratio of the medians, and peak memory / file
size. The CPU is named (lscpu) so that the figures can be read against the machine.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

NUMPY_CHILD = r"""
import sys, numpy as np
z = np.load(sys.argv[1])
s = np.linalg.svd(z, compute_uv=False)
p = s / s.sum() + 1e-7
print(float(np.exp(-(p * np.log(p)).sum())))
"""


def timed(cmd):
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {out.stderr}")
    peak_kb = int(out.stderr.strip().splitlines()[-1])
    return wall, peak_kb * 1024, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "collapse-lab"))
    a = ap.parse_args()
    path = os.path.join(a.dir, f"diagnose-bench-{a.rows}x{a.dim}.npy")
    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        z = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(a.rows, a.dim))
        scale = np.linspace(0.05, 2.0, a.dim, dtype=np.float32)
        for i in range(0, a.rows, 10_000):
            z[i : i + 10_000] = rng.standard_normal((min(10_000, a.rows - i), a.dim), dtype=np.float32) * scale
        z.flush()
        del z
    size = os.path.getsize(path)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    flags = cpu.lower()
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    print(f"{a.rows} × {a.dim} float32, {size / 1e6:.0f} MB; CPU {model} ({isa}), {os.cpu_count()} cores")
    out = tempfile.mkdtemp()
    ours, theirs = [], []
    for r in range(a.repeats):
        w, m, _ = timed([a.bin, "diagnose", path, "--out", out])
        ours.append((w, m))
        print(f"  collapse-lab diagnose  {w:7.1f} s  peak {m / 1e6:7.0f} MB ({m / size:.2f} × file)")
        w, m, rank = timed([sys.executable, "-c", NUMPY_CHILD, path])
        theirs.append((w, m))
        print(f"  numpy svd              {w:7.1f} s  peak {m / 1e6:7.0f} MB ({m / size:.2f} × file)  RankMe {float(rank):.2f}")
    mo = statistics.median(w for w, _ in ours)
    mt = statistics.median(w for w, _ in theirs)
    print(f"median wall: collapse-lab {mo:.1f} s, numpy {mt:.1f} s: numpy / collapse-lab = {mt / mo:.2f}")
    print(f"peak memory: collapse-lab {max(m for _, m in ours) / size:.2f} × file, numpy {max(m for _, m in theirs) / size:.2f} × file")


if __name__ == "__main__":
    main()
