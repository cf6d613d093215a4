//! `--device cpu|cuda[:N]`.

use candle_core::Device;

use crate::config::InputError;

/// Parses a device name. CUDA needs the `cuda` cargo feature; without it the error says so.
pub fn parse_device(name: &str) -> Result<Device, InputError> {
    let flag = format!("--device {name}");
    match name.trim() {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| InputError::new(&flag, "expected cuda:N with N a GPU index"))?,
            };
            if !cfg!(feature = "cuda") {
                return Err(InputError::new(
                    flag,
                    "this binary was built without CUDA; rebuild with `--features cuda` (see README)",
                ));
            }
            Device::new_cuda(ordinal).map_err(|e| {
                // One line: the driver's message, not candle's captured backtrace.
                let e = match e {
                    candle_core::Error::WithBacktrace { inner, .. } => *inner,
                    e => e,
                };
                InputError::new(flag, format!("cannot open CUDA device {ordinal}: {e}"))
            })
        }
        _ => Err(InputError::new(flag, "expected cpu, cuda or cuda:N")),
    }
}
