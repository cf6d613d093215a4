//! The vector instruction set the CPU kernels run on: gemm's matrix products and our own
//! passes (batch norm's columns, im2col/col2im, the residual add).
//!
//! gemm picks its kernels at run time: AVX-512 where the CPU has AVX-512F and the build has
//! the `avx512` feature (the default), AVX2 + FMA otherwise. Our passes are plain Rust loops
//! compiled once per instruction set ([`Isa::run`]) and chosen at run time the same way.
//! Their results do not depend on the choice: each element goes through the same f32/f64
//! operations in the same order (Rust never fuses a multiply and an add on its own), so only
//! the vector width changes; `tests` compare every path bit for bit. gemm's kernels do differ
//! between instruction sets (other block sizes, other summation orders), which is why results
//! are bit for bit per instruction set and `summary.parquet` records it.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set our kernels have a path for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
    /// AVX2 + FMA (x86-64-v3).
    Avx2,
    /// AVX-512 F/BW/CD/DQ/VL (x86-64-v4).
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Baseline, Isa::Avx2, Isa::Avx512];

    /// As `bench` and `summary.parquet` name it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "AVX2+FMA",
            Isa::Avx512 => "AVX-512",
        }
    }

    /// Whether this build has the path and this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            Isa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Isa::Avx512 => {
                Isa::Avx2.available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512cd")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The instruction set of gemm's kernels in this process: what the numbers depend on.
    pub fn of_gemm() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    }

    /// The path our passes take: the widest available.
    pub fn of_passes() -> Isa {
        match FORCED.load(Ordering::Relaxed) {
            0 => {}
            forced => return Isa::ALL[forced as usize - 1],
        }
        *Isa::ALL
            .iter()
            .rev()
            .find(|isa| isa.available())
            .unwrap_or(&Isa::Baseline)
    }

    /// `kernel.run()` compiled with this instruction set's features enabled; the baseline's
    /// where unavailable. `Kernel::run` is `#[inline(always)]` (and whatever it calls must be
    /// too), so its whole body is compiled inside the feature-enabled function: a closure
    /// would not do, as the compiler may keep it a separate, baseline function.
    #[inline]
    pub fn run<K: Kernel>(self, kernel: K) -> K::Output {
        match self {
            // Safety: the CPU has the features (`available`).
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Isa::Avx512 if self.available() => unsafe { run_avx512(kernel) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if self.available() => unsafe { run_avx2(kernel) },
            _ => kernel.run(),
        }
    }
}

/// A pass over a block of data: a plain struct of its inputs whose `run` is
/// `#[inline(always)]` ([`Isa::run`]).
pub trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512cd,avx512dq,avx512vl")]
unsafe fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

/// 0: the widest available; i + 1: `Isa::ALL[i]` (tests only).
static FORCED: AtomicU8 = AtomicU8::new(0);

/// Runs `f` with our passes forced onto `isa` (tests comparing paths). Holds a lock so that
/// two such tests do not switch paths under each other; other tests may run meanwhile on
/// the forced path, which gives them the same numbers.
#[cfg(test)]
pub(crate) fn with_passes_on<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let index = Isa::ALL.iter().position(|&i| i == isa).unwrap_or(0);
    FORCED.store(index as u8 + 1, Ordering::Relaxed);
    let out = f();
    FORCED.store(0, Ordering::Relaxed);
    out
}

/// The instruction sets this process can run, baseline first.
#[cfg(test)]
pub(crate) fn available() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.available()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chosen_paths_are_available_and_agree_with_detection() {
        assert!(Isa::Baseline.available());
        assert!(Isa::of_passes().available());
        #[cfg(target_arch = "x86_64")]
        {
            let v4 = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];
            let has = |f: &str| match f {
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
                "avx512cd" => std::arch::is_x86_feature_detected!("avx512cd"),
                "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
                "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
                _ => false,
            };
            let all_v4 = v4.iter().all(|f| has(f));
            assert_eq!(Isa::Avx512.available(), cfg!(feature = "avx512") && all_v4);
            assert_eq!(
                Isa::of_gemm() == Isa::Avx512,
                cfg!(feature = "avx512") && has("avx512f")
            );
        }
    }

    #[test]
    fn forcing_a_path_is_seen_and_undone() {
        for isa in available() {
            with_passes_on(isa, || assert_eq!(Isa::of_passes(), isa));
        }
    }

    /// A sum and a multiply-add map: no path fuses or reorders them.
    struct SumAndMap<'a>(&'a [f32]);

    impl Kernel for SumAndMap<'_> {
        type Output = (f64, Vec<f32>);
        #[inline(always)]
        fn run(self) -> Self::Output {
            let sum = self.0.iter().map(|&v| v as f64 * 1.1 + 0.3).sum();
            (sum, self.0.iter().map(|&v| v * 0.7 + 1.9).collect())
        }
    }

    #[test]
    fn every_path_gives_the_baseline_bit_for_bit() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0)
            .collect();
        let plain = SumAndMap(&x).run();
        for isa in available() {
            let (sum, map) = isa.run(SumAndMap(&x));
            assert_eq!(sum.to_bits(), plain.0.to_bits(), "{isa:?}");
            assert!(map
                .iter()
                .zip(&plain.1)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
