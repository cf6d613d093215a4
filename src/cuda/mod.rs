//! collapse-lab's own CUDA kernels (`kernels.cu`, compiled to PTX by `build.rs` with the
//! `cuda` feature), for what candle does not fuse: the EMA update of every target
//! parameter in one launch ([`ema`]), the per-step collapse diagnostics with one small host
//! copy ([`diagnostics`]) and LARS's trust ratio + update fused ([`lars`]). Each is tested
//! against the CPU code it replaces (on a GPU machine: `cargo test --release --features
//! cuda cuda::`, and `collapse-lab selftest --device cuda` inside the binary). Only candle, cudarc
//! and the ground floor's `metrics` (the CPU references) are imported here, so any stage may
//! call it.

pub mod diagnostics;
pub mod ema;
pub mod lars;

use candle_core::cuda_backend::cudarc::driver::{sys::CUdeviceptr, DevicePtr, LaunchConfig};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{Device, Result, Storage, Tensor};

/// The PTX of `kernels.cu`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
const MODULE: &str = "collapse_lab";

/// Loads (once) and returns one of the kernels: `function!(dev, "name")`.
macro_rules! function {
    ($dev:expr, $name:expr) => {
        $dev.get_or_load_custom_func($name, super::MODULE, super::PTX)
    };
}
pub(crate) use function;

fn cuda_device(t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d.clone()),
        _ => candle_core::bail!("collapse-lab CUDA kernel: tensor is not on a CUDA device"),
    }
}

/// The device address of a contiguous f32 tensor's first element. The kernels write
/// through it in place (target, weight and velocity tensors): candle's storage is GPU
/// memory that no host reference points into, and every launch runs on the device's one
/// stream, ordered after the ops that produced its inputs.
fn address(t: &Tensor) -> Result<CUdeviceptr> {
    let (storage, layout) = t.storage_and_layout();
    let Some((start, _)) = layout.contiguous_offsets() else {
        candle_core::bail!("collapse-lab CUDA kernel: tensor must be contiguous");
    };
    match &*storage {
        Storage::Cuda(s) => {
            let slice = s.as_cuda_slice::<f32>()?;
            let stream = s.device.cuda_stream();
            let (ptr, _sync) = slice.device_ptr(&stream);
            Ok(ptr + (start * std::mem::size_of::<f32>()) as u64)
        }
        _ => candle_core::bail!("collapse-lab CUDA kernel: tensor is not f32 on a CUDA device"),
    }
}

fn grid_for(elements: usize, block: u32) -> LaunchConfig {
    let blocks = elements.div_ceil(block as usize).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Copies host values to a fresh device buffer.
fn upload<T: candle_core::cuda_backend::cudarc::driver::DeviceRepr + 'static>(
    dev: &CudaDevice,
    values: &[T],
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaSlice<T>> {
    dev.clone_htod(values)
}

/// The GPU in words: name, compute capability, driver version and ordinal (what `selftest`
/// reports).
pub fn describe(dev: &CudaDevice) -> String {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let stream = dev.cuda_stream();
    let ctx = stream.context();
    let name = ctx.name().unwrap_or_else(|e| format!("unnamed ({e:?})"));
    let cap = ctx
        .compute_capability()
        .map_or_else(|e| format!("unknown ({e:?})"), |(a, b)| format!("{a}.{b}"));
    let mut version: std::ffi::c_int = 0;
    // Safety: writes one int through a valid pointer; the driver is loaded (a context exists).
    let driver = match unsafe { sys::cuDriverGetVersion(&mut version) } {
        sys::CUresult::CUDA_SUCCESS => format!("{}.{}", version / 1000, (version % 1000) / 10),
        e => format!("unknown ({e:?})"),
    };
    format!(
        "cuda:{}: {name}, compute capability {cap}, CUDA driver {driver}",
        ctx.ordinal()
    )
}
