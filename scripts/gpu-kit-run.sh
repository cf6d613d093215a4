#!/usr/bin/env bash
# The GPU check kit's entry point (scripts/gpu-kit.sh copies it into gpu-kit/ as run.sh).
# On a machine with an NVIDIA GPU, CUDA 13's driver and a python3 holding PyTorch with its
# nvidia-* libraries (cuBLAS, cuRAND, cudart), and no Rust toolchain, it:
#   1. unpacks the CUDA build of collapse-lab (xz, decompressed with Python's lzma);
#   2. points LD_LIBRARY_PATH at the driver's folder and the nvidia-* libraries of that
#      python3, found at run time (a clear message, exit 2, if they are missing);
#   3. runs `selftest --device cuda` (kernels vs CPU code, training on the GPU vs the CPU);
#   4. trains the smoke grid on --device cuda and on the CPU and compares the runs' verdicts;
#   5. times a BYOL step of ResNet-18 (CIFAR stem, width 64) at 96 px, batch 256, ours against
#      bench/torch_reference.py on the same GPU.
# Everything (logs, JSON, the smoke grids' summaries) goes under $OUT if it is set, else
# gpu-kit/out. Each step has a time limit; all of them together stay under 8 minutes.
# Exit 0 when every step passed, 1 when one failed, 2 when the machine cannot run the kit.
set -uo pipefail
kit="$(cd "$(dirname "$0")" && pwd)"

# A GPU? nvidia-smi listing one, or the device node. (GPU_KIT_SKIP_GPU_CHECK=1 runs the rest
# anyway: how the script itself is tried on a machine without one.)
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU ' || true)
if [ "${gpus:-0}" = 0 ] && [ ! -e /dev/nvidia0 ] && [ -z "${GPU_KIT_SKIP_GPU_CHECK:-}" ]; then
  echo "run.sh: no GPU on this machine (nvidia-smi lists none and there is no /dev/nvidia0); the kit needs an NVIDIA GPU" >&2
  exit 2
fi

out="${OUT:-$kit/out}"
mkdir -p "$out"
log="$out/run.log"
: > "$log"
say() { echo "$*" | tee -a "$log"; }

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
  echo "run.sh: no $python here: the kit needs the python3 that holds PyTorch and its nvidia-* libraries" >&2
  exit 2
fi

# The nvidia-* wheels' library folders (nvidia/cu13/lib, or nvidia/<lib>/lib in older wheels).
libs=$("$python" - <<'PY'
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
dirs = set()
for base in nvidia.__path__:
    for pattern in ("*/lib", "*/*/lib"):
        dirs.update(d for d in glob.glob(os.path.join(base, pattern)) if os.path.isdir(d))
print(":".join(sorted(dirs)))
PY
)
missing=""
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
  found=""
  IFS=: read -r -a dirs <<< "$libs"
  for d in "${dirs[@]}"; do [ -e "$d/$lib" ] && found=1; done
  [ -n "$found" ] || missing="$missing $lib"
done
if [ -n "$missing" ]; then
  echo "run.sh: $python's nvidia-* packages lack$missing (looked in: ${libs:-no nvidia package}); install nvidia-cuda-runtime, nvidia-cublas and nvidia-curand for CUDA 13" >&2
  exit 2
fi
driver=""
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
  [ -e "$d/libcuda.so.1" ] && driver="$d" && break
done
export LD_LIBRARY_PATH="$libs${driver:+:$driver}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

bin="${TMPDIR:-/tmp}/collapse-lab-gpu-kit"
"$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
  "$kit/collapse-lab.xz" "$bin" || { echo "run.sh: cannot unpack $kit/collapse-lab.xz" >&2; exit 2; }
chmod +x "$bin"

say "== gpu-kit $(cat "$kit/VERSION" 2>/dev/null) on $(hostname), $(date -u +%FT%TZ)"
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true) | tee -a "$log"
failed=0
step() { # step NAME SECONDS COMMAND...: runs it with a time limit, logs it, counts a failure
  local name=$1 limit=$2; shift 2
  say "== $name (limit ${limit} s)"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$log" "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  say "== $name: exit $rc in $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || failed=1
  return "$rc"
}

step selftest 150 "$bin" selftest --device cuda --config "$kit/smoke.toml" --json "$out/selftest.json"

step smoke-gpu 120 "$bin" run "$kit/smoke.toml" --device cuda --quiet --fresh --out "$out/gpu"
step smoke-cpu 120 "$bin" run "$kit/smoke.toml" --quiet --fresh --out "$out/cpu"
cp "$out/gpu/smoke/summary.parquet" "$out/smoke_gpu_summary.parquet" 2>/dev/null
cp "$out/cpu/smoke/summary.parquet" "$out/smoke_cpu_summary.parquet" 2>/dev/null
step smoke-verdicts 30 "$python" - "$out/gpu/smoke/summary.parquet" "$out/cpu/smoke/summary.parquet" <<'PY'
import sys
import pyarrow.parquet as pq
gpu, cpu = (pq.read_table(p).to_pandas().set_index("run_id") for p in sys.argv[1:3])
rows = []
for run in cpu.index:
    g = gpu.loc[run] if run in gpu.index else None
    c = cpu.loc[run]
    # The untrained baseline has no verdict (null on both sides: the same).
    same = g is not None and all(str(g[k]) == str(c[k]) for k in ("status", "collapse_verdict"))
    rows.append(same)
    fmt = lambda r: "—" if r is None else f"{r['status']} {r['collapse_verdict']} pos {r['final_pos_cos']:.4f} neg {r['final_neg_cos']:.4f}"
    print(f"{run:<16} gpu {fmt(g):<44} cpu {fmt(c):<44} {'same' if same else 'DIFFERENT'}")
print(f"{sum(rows)} of {len(rows)} runs have the same status and verdict on GPU and CPU")
sys.exit(0 if all(rows) else 1)
PY

bench=(--what byol-step --warmup 3 --steps 10 --set model.encoder=resnet18 --set model.width=64
  --set model.resnet_stem=cifar --set dataset.image_size=96 --set dataset.train_size=512
  --set train.batch_size=256 --set model.projector.hidden=256 --set model.projector.out=64
  --set model.predictor.hidden=256 --set model.predictor.out=64)
step bench-ours 120 "$bin" bench --config "$kit/smoke.toml" --variant byol --device cuda "${bench[@]}"
step bench-torch 120 "$python" "$kit/torch_reference.py" --device cuda --encoder resnet18 --width 64 \
  --image-size 96 --batch 256 --hidden 256 --out 64 --warmup 3 --steps 10 --what byol-step
"$python" - "$out/bench-ours.log" "$out/bench-torch.log" <<'PY' | tee -a "$log"
import json, sys
def last_json(path):
    try:
        lines = [l for l in open(path) if l.lstrip().startswith("{")]
        return json.loads(lines[-1])
    except Exception:
        return None
ours, torch = (last_json(p) for p in sys.argv[1:3])
if ours and torch:
    o, t = ours["images_per_s"], torch["images_per_s"]
    print(f"ResNet-18 BYOL step, 96 px, batch 256: ours {o:.0f} img/s, PyTorch {t:.0f} img/s, ratio {o / t:.2f}")
else:
    print("bench: no figures to compare (see bench-ours.log, bench-torch.log)")
PY

if [ "$failed" = 0 ]; then say "gpu-kit: every step passed"; else say "gpu-kit: a step FAILED (see $log)"; fi
exit "$failed"
