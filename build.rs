//! With the `cuda` feature, compiles `src/cuda/kernels.cu` to PTX (`$OUT_DIR/kernels.ptx`)
//! with nvcc for `CUDA_COMPUTE_CAP` (default 90: H100/H200). Without it, does nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cuda/kernels.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("src/cuda/kernels.cu")
        .arg("-o")
        .arg(out.join("kernels.ptx"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            panic!("{nvcc} failed ({s}) compiling src/cuda/kernels.cu; see README (CUDA build)")
        }
        Err(e) => panic!(
            "cannot run {nvcc} ({e}): the cuda feature needs nvcc on PATH; see README (CUDA build)"
        ),
    }
}
