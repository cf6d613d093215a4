//! The CPU a grid ran on. Float results are bit for bit per instruction set, not across them
//! (gemm and our kernels pick their SIMD paths at run time), so every summary names it.

/// Model name and widest vector instruction set, read from `/proc/cpuinfo` (and the
/// compiler's run-time feature detection where that file is missing).
#[derive(Debug, Clone, PartialEq)]
pub struct CpuInfo {
    /// e.g. `Intel(R) Xeon(R) Processor`; `unknown` where not reported.
    pub model: String,
    /// `AVX-512`, `AVX2+FMA`, `AVX`, `SSE` or the architecture's name.
    pub isa: &'static str,
    /// f32 FLOP per cycle per core with two FMA pipes (64 AVX-512, 32 AVX2+FMA, 16 AVX, 8).
    pub flop_per_cycle: f64,
    /// The clock `/proc/cpuinfo` reports, if it does.
    pub mhz: Option<f64>,
}

impl CpuInfo {
    /// `model (isa)`, as `summary.parquet`'s `cpu` column and the report show it.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.model, self.isa)
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
    let (isa, flop_per_cycle) = if has("avx512f") {
        ("AVX-512", 64.0)
    } else if has("avx2") && has("fma") {
        ("AVX2+FMA", 32.0)
    } else if has("avx") {
        ("AVX", 16.0)
    } else if cfg!(target_arch = "x86_64") {
        ("SSE", 8.0)
    } else {
        (std::env::consts::ARCH, 8.0)
    };
    CpuInfo {
        model: field(&info, "model name").unwrap_or("unknown").to_string(),
        isa,
        flop_per_cycle,
        mhz: field(&info, "cpu MHz").and_then(|v| v.parse().ok()),
    }
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
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            cpu.isa == "AVX-512",
            std::arch::is_x86_feature_detected!("avx512f"),
            "{cpu:?}"
        );
    }
}
