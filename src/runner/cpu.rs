//! The CPU a grid ran on. Float results are bit for bit per instruction set of the kernels,
//! not across them (gemm picks its kernels at run time: AVX-512 or AVX2 + FMA), so every
//! summary names the CPU and the kernels' instruction set.

use std::time::{Duration, Instant};

use crate::ops::isa::Isa;

/// Model name, widest vector instruction set and the kernels' instruction set, read from
/// `/proc/cpuinfo` (and the compiler's run-time feature detection where that file is missing).
#[derive(Debug, Clone, PartialEq)]
pub struct CpuInfo {
    /// e.g. `Intel(R) Xeon(R) Processor`; `unknown` where not reported.
    pub model: String,
    /// The CPU's widest: `AVX-512`, `AVX2+FMA`, `AVX`, `SSE` or the architecture's name.
    pub isa: &'static str,
    /// What gemm's kernels use in this process (AVX2 + FMA on an AVX-512 CPU in a build
    /// without the `avx512` feature).
    pub kernels: Isa,
    /// f32 FLOP per cycle per core at the kernels' width, two FMA pipes assumed: 64 for
    /// AVX-512 (32 on AMD family 19h, Zen 3/4, whose AVX-512 runs as two 256-bit halves),
    /// 32 for AVX2 + FMA, 8 otherwise. An estimate: [`measured_fma_gflops`] measures it.
    pub flop_per_cycle: f64,
    /// The clock `/proc/cpuinfo` reports, if it does.
    pub mhz: Option<f64>,
}

impl CpuInfo {
    /// `model (CPU isa, kernels isa)`, as `summary.parquet`'s `cpu` column and the report
    /// show it.
    pub fn describe(&self) -> String {
        format!(
            "{} (CPU {}, kernels {})",
            self.model,
            self.isa,
            self.kernels.name()
        )
    }
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find(|l| l.starts_with(name))?
        .split_once(':')
        .map(|(_, v)| v.trim())
}

/// `cpu_info().describe()`, read once per process (every summary row records it).
pub fn cpu_description() -> &'static str {
    static DESCRIPTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DESCRIPTION.get_or_init(|| cpu_info().describe())
}

/// This machine's CPU.
pub fn cpu_info() -> CpuInfo {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = field(&info, "flags")
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f) || detected(f);
    let isa = if has("avx512f") {
        "AVX-512"
    } else if has("avx2") && has("fma") {
        "AVX2+FMA"
    } else if has("avx") {
        "AVX"
    } else if cfg!(target_arch = "x86_64") {
        "SSE"
    } else {
        std::env::consts::ARCH
    };
    let kernels = Isa::of_gemm();
    let zen_3_or_4 = field(&info, "vendor_id") == Some("AuthenticAMD")
        && field(&info, "cpu family") == Some("25");
    let flop_per_cycle = match kernels {
        Isa::Avx512 if zen_3_or_4 => 32.0,
        Isa::Avx512 => 64.0,
        Isa::Avx2 => 32.0,
        Isa::Baseline => 8.0,
    };
    CpuInfo {
        model: field(&info, "model name").unwrap_or("unknown").to_string(),
        isa,
        kernels,
        flop_per_cycle,
        mhz: field(&info, "cpu MHz").and_then(|v| v.parse().ok()),
    }
}

/// f32 GFLOP/s of `threads` threads running fused multiply-adds at the kernels' vector
/// width at once (12 independent accumulators, enough to fill two FMA pipes of latency 4–6),
/// best of several 20 ms rounds: the peak the kernels could reach here, with this machine's
/// real clock and FMA units (SMT siblings sharing a core show as such). `None` without
/// vector FMA.
pub fn measured_fma_gflops(threads: usize) -> Option<f64> {
    let kernels = Isa::of_gemm();
    let per_thread = || {
        let mut best = 0.0f64;
        for _ in 0..8 {
            let started = Instant::now();
            let mut flop = 0.0;
            while started.elapsed() < Duration::from_millis(20) {
                flop += fma_round(kernels)?;
            }
            best = best.max(flop / started.elapsed().as_secs_f64() / 1e9);
        }
        Some(best)
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(per_thread)).collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .sum::<Option<f64>>()
    })
}

/// FMA rounds per call of [`fma_round`].
const FMA_ROUNDS: usize = 100_000;
/// Independent accumulators per round.
const FMA_CHAINS: usize = 12;

/// One call's worth of FMAs on `isa`; its FLOP count.
fn fma_round(isa: Isa) -> Option<f64> {
    let lanes = match isa {
        // Safety: `of_gemm` names an instruction set only where the CPU has it.
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        Isa::Avx512 => {
            std::hint::black_box(unsafe { fma_avx512() });
            16
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            std::hint::black_box(unsafe { fma_avx2() });
            8
        }
        _ => return None,
    };
    Some((FMA_ROUNDS * FMA_CHAINS * lanes * 2) as f64)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2() -> [f32; 8] {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_99), _mm256_set1_ps(1e-6));
    let mut acc = [_mm256_set1_ps(1.0); FMA_CHAINS];
    for _ in 0..FMA_ROUNDS {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &r| _mm256_add_ps(s, r));
    std::mem::transmute::<__m256, [f32; 8]>(sum)
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512() -> [f32; 16] {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(0.999_99), _mm512_set1_ps(1e-6));
    let mut acc = [_mm512_set1_ps(1.0); FMA_CHAINS];
    for _ in 0..FMA_ROUNDS {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, &r| _mm512_add_ps(s, r));
    std::mem::transmute::<__m512, [f32; 16]>(sum)
}

#[cfg(target_arch = "x86_64")]
fn detected(flag: &str) -> bool {
    match flag {
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "avx" => std::arch::is_x86_feature_detected!("avx"),
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detected(_flag: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_isa_matches_run_time_detection() {
        let cpu = cpu_info();
        assert!(!cpu.model.is_empty());
        assert!(cpu.describe().contains(cpu.isa));
        assert!(cpu.describe().contains(cpu.kernels.name()));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            cpu.isa == "AVX-512",
            std::arch::is_x86_feature_detected!("avx512f"),
            "{cpu:?}"
        );
    }

    /// A measurement, not a speed check: where the kernels have vector FMA it is positive
    /// and finite (whether it is near the clock × width estimate is for `bench` to show).
    #[test]
    fn the_fma_peak_is_measured_where_the_kernels_have_fma() {
        let measured = measured_fma_gflops(1);
        assert_eq!(measured.is_some(), cpu_info().kernels != Isa::Baseline);
        if let Some(g) = measured {
            assert!(g.is_finite() && g > 0.0, "{g}");
        }
    }
}
