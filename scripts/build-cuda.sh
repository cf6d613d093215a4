#!/usr/bin/env bash
# Builds collapse-lab with the `cuda` feature on a machine with no GPU and no CUDA install
# (`just build-cuda`). Steps, each also in README ("CUDA build"):
#  1. the CUDA 13.0 compiler and libraries from the Python package registry, every wheel
#     pinned (unpinned, nvcc 13.0 pulls nvvm 13.5, whose PTX a CUDA 13.0 driver rejects);
#  2. a link-time libcuda.so from Debian's non-free `libcuda1` package, downloaded through a
#     private apt configuration and unpacked, never installed (the wheels ship no libcuda,
#     and the binary links the driver API directly);
#  3. a CUDA root folder that cudarc and candle-kernels' build scripts understand;
#  4. cargo build --release --features cuda with CUDA_COMPUTE_CAP (default 90: H100/H200).
# The binary needs, on the GPU machine, the driver's libcuda.so.1 and the wheels' libcudart,
# libcublas and libcurand (print-env below prints the LD_LIBRARY_PATH to use).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="$HOME/.cache/collapse-lab"
venv="$cache/cuda-venv"
root="$cache/cuda-root"
cap="${CUDA_COMPUTE_CAP:-90}"

# 1. Wheels.
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.0.2.14 \
  nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
cu=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$cu/bin/nvcc" ] || { echo "error: no nvcc in $cu/bin after installing the wheels" >&2; exit 1; }

# 2. libcuda for linking.
stub="$cache/libcuda1"
if [ -z "$(find "$stub" -name 'libcuda.so.1' 2>/dev/null | head -n 1)" ]; then
  apt_dir="$cache/apt-nonfree"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$stub"
  . /etc/os-release
  printf 'deb http://deb.debian.org/debian %s main non-free\n' "$VERSION_CODENAME" > "$apt_dir/sources.list"
  opts=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache::Archives="$apt_dir/archives"
        -o APT::Architecture=amd64)
  apt-get "${opts[@]}" update -qq
  (cd "$apt_dir" && apt-get "${opts[@]}" download libcuda1)
  dpkg-deb -x "$(ls "$apt_dir"/libcuda1_*.deb | head -n 1)" "$stub"
fi
libcuda=$(find "$stub" -name 'libcuda.so.1' | head -n 1)

# 3. The CUDA root.
mkdir -p "$root/lib/stubs"
for d in bin include nvvm; do ln -sfn "$cu/$d" "$root/$d"; done
for l in cudart nvrtc curand cublas cublasLt; do
  ln -sfn "$(ls "$cu"/lib/lib$l.so.* | head -n 1)" "$root/lib/lib$l.so"
done
ln -sfn "$libcuda" "$root/lib/stubs/libcuda.so"
ln -sfn "$libcuda" "$root/lib/libcuda.so"

if [ "${1:-}" = "print-env" ]; then
  echo "LD_LIBRARY_PATH=$cu/lib"
  exit 0
fi

# 4. Build.
export PATH="$cu/bin:$PATH" CUDA_HOME="$root" CUDA_PATH="$root" CUDA_ROOT="$root"
export CUDA_TOOLKIT_ROOT_DIR="$root" CUDA_COMPUTE_CAP="$cap"
export LIBRARY_PATH="$root/lib:$root/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target-cuda}"
cargo build --release --features cuda "$@"
echo "built $CARGO_TARGET_DIR/release/collapse-lab (CUDA, compute capability $cap)"
