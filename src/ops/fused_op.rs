//! The candle side of the fused convolution ops — one unit ([`super::conv_bn_op`]), a chain
//! of units ([`super::conv_bn_chain`]), a ResNet block ([`super::residual_block`]): each
//! takes (x, weights, [γ; β]), contiguous, f32 or f64 alike, on the CPU, and returns the
//! gradients of all three. [`Fused`] makes a [`FusedConv`]'s arithmetic a `CustomOp3`.

use candle_core::{
    CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor, WithDType,
};

use super::batch_norm_op::slice;

/// (dx if wanted, d weights, d[γ; β]).
pub(crate) type Gradients<T> = (Option<Vec<T>>, Vec<T>, Vec<T>);

/// A fused op's inputs, as slices of one float type, with their shapes.
pub struct Inputs<'a, T> {
    pub x: &'a [T],
    pub x_shape: &'a Shape,
    pub w: &'a [T],
    pub w_shape: &'a Shape,
    pub gb: &'a [T],
}

/// A fused op's arithmetic on the CPU.
pub trait FusedConv: Send + Sync {
    /// candle's name for the op.
    fn op_name(&self) -> &'static str;

    /// The output and its shape.
    fn cpu_forward<T: WithDType>(&self, inputs: Inputs<'_, T>) -> Result<(Vec<T>, Shape)>;

    /// The gradients from the output's gradient dy; dx only if `want_dx`.
    fn cpu_backward<T: WithDType>(
        &self,
        inputs: Inputs<'_, T>,
        dy: &[T],
        want_dx: bool,
    ) -> Result<Gradients<T>>;
}

/// A [`FusedConv`] as a candle op.
pub struct Fused<O>(pub O);

macro_rules! with_cpu {
    ($name:expr, $t:expr, |$s:ident, $l:ident| $body:expr) => {{
        let (guard, $l) = $t.storage_and_layout();
        match &*guard {
            Storage::Cpu($s) => $body,
            _ => candle_core::bail!("{} runs on the CPU only", $name),
        }
    }};
}

fn inputs<'a, T>(
    (x, xl): (&'a [T], &'a Layout),
    (w, wl): (&'a [T], &'a Layout),
    (gb, bl): (&'a [T], &'a Layout),
) -> Result<Inputs<'a, T>> {
    Ok(Inputs {
        x: slice(x, xl, "input")?,
        x_shape: xl.shape(),
        w: slice(w, wl, "weights")?,
        w_shape: wl.shape(),
        gb: slice(gb, bl, "γ, β")?,
    })
}

/// The gradients as tensors of the inputs' shapes.
type TensorGradients = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

fn to_tensors<T: WithDType>(
    (dx, dw, dgb): Gradients<T>,
    (x, w, gb): (&Shape, &Shape, &Shape),
) -> Result<TensorGradients> {
    let dev = Device::Cpu;
    Ok((
        dx.map(|v| Tensor::from_vec(v, x, &dev)).transpose()?,
        Some(Tensor::from_vec(dw, w, &dev)?),
        Some(Tensor::from_vec(dgb, gb, &dev)?),
    ))
}

impl<O: FusedConv> CustomOp3 for Fused<O> {
    fn name(&self) -> &'static str {
        self.0.op_name()
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok(match (xs, ws, bs) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                let (y, shape) = self.0.cpu_forward(inputs((x, xl), (w, wl), (b, bl))?)?;
                (CpuStorage::F32(y), shape)
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                let (y, shape) = self.0.cpu_forward(inputs((x, xl), (w, wl), (b, bl))?)?;
                (CpuStorage::F64(y), shape)
            }
            _ => candle_core::bail!("{}: f32 or f64, all alike", self.0.op_name()),
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<TensorGradients> {
        let dy = dy.contiguous()?;
        let want_dx = x.track_op();
        let name = self.0.op_name();
        let shapes = (x.shape(), w.shape(), gb.shape());
        with_cpu!(name, x, |xs, xl| with_cpu!(name, w, |ws, wl| with_cpu!(
            name,
            gb,
            |bs, bl| with_cpu!(name, dy, |gs, gl| match (xs, ws, bs, gs) {
                (
                    CpuStorage::F32(x),
                    CpuStorage::F32(w),
                    CpuStorage::F32(b),
                    CpuStorage::F32(g),
                ) => {
                    let inputs = inputs((x, xl), (w, wl), (b, bl))?;
                    let dy = slice(g, gl, "gradient")?;
                    to_tensors(self.0.cpu_backward(inputs, dy, want_dx)?, shapes)
                }
                (
                    CpuStorage::F64(x),
                    CpuStorage::F64(w),
                    CpuStorage::F64(b),
                    CpuStorage::F64(g),
                ) => {
                    let inputs = inputs((x, xl), (w, wl), (b, bl))?;
                    let dy = slice(g, gl, "gradient")?;
                    to_tensors(self.0.cpu_backward(inputs, dy, want_dx)?, shapes)
                }
                _ => candle_core::bail!("{name}: f32 or f64, all alike"),
            })
        )))
    }
}
