//! Named, seeded parameters.
//!
//! candle's CPU `randn` draws from an unseeded thread RNG, so weights are drawn here from a
//! ChaCha RNG seeded by the run seed: same seed ⇒ same weights. A store can also be built as a
//! copy of another (same names, same values): that is how EMA targets are made.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a parameter is, for optimizers that treat kinds differently (LARS exclusions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Conv / linear weight matrices.
    Weight,
    /// Conv / linear biases.
    Bias,
    /// Scale and shift of a normalization layer.
    Norm,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub kind: ParamKind,
}

/// Trainable parameters plus non-trainable buffers (batch-norm running statistics).
#[derive(Debug)]
pub struct ParamStore {
    device: Device,
    dtype: DType,
    rng: ChaCha8Rng,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
    /// When set, values are copied from here by name instead of drawn.
    source: Option<HashMap<String, Tensor>>,
    /// Layers get their parameters detached (see [`ParamStore::frozen_copy_of`]).
    frozen: bool,
}

impl ParamStore {
    pub fn new(device: &Device, seed: u64) -> Self {
        Self::with_dtype(device, seed, DType::F32)
    }

    /// A store of another float type (f64 for finite-difference gradient checks).
    pub fn with_dtype(device: &Device, seed: u64, dtype: DType) -> Self {
        Self {
            device: device.clone(),
            dtype,
            rng: ChaCha8Rng::seed_from_u64(seed),
            params: Vec::new(),
            buffers: Vec::new(),
            source: None,
            frozen: false,
        }
    }

    /// A store whose parameters start as copies of `other`'s (matched by name).
    pub fn copy_of(other: &ParamStore) -> Result<Self> {
        let mut source = HashMap::new();
        for p in &other.params {
            source.insert(p.name.clone(), p.var.as_tensor().copy()?);
        }
        for (name, b) in &other.buffers {
            source.insert(name.clone(), b.as_tensor().copy()?);
        }
        Ok(Self {
            device: other.device.clone(),
            dtype: other.dtype,
            rng: ChaCha8Rng::seed_from_u64(0),
            params: Vec::new(),
            buffers: Vec::new(),
            source: Some(source),
            frozen: false,
        })
    }

    /// [`ParamStore::copy_of`] whose layers hold their parameters detached: the variables
    /// still change in place (an EMA update, a checkpoint), but nothing computed from them
    /// records a graph. For an EMA target, whose forward pass is never differentiated: its
    /// ops then keep no activations for a backward pass.
    pub fn frozen_copy_of(other: &ParamStore) -> Result<Self> {
        Ok(Self {
            frozen: true,
            ..Self::copy_of(other)?
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn buffers(&self) -> &[(String, Var)] {
        &self.buffers
    }

    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    fn make(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        if let Some(src) = &self.source {
            let t = src.get(name).ok_or_else(|| {
                candle_core::Error::Msg(format!("copy of a parameter store: no parameter `{name}`"))
            })?;
            if t.dims() != shape {
                candle_core::bail!("copy of `{name}`: shape {:?} ≠ {:?}", t.dims(), shape);
            }
            return Var::from_tensor(t);
        }
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            Init::Uniform(bound) => (0..n)
                .map(|_| self.rng.random_range(-bound..bound) as f32)
                .collect(),
            Init::Const(c) => vec![c as f32; n],
        };
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        Var::from_tensor(&t)
    }

    /// A weight with PyTorch's default init, U(−1/√fan_in, 1/√fan_in).
    pub fn weight(&mut self, name: &str, shape: &[usize], fan_in: usize) -> Result<Tensor> {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        self.add(name, shape, Init::Uniform(bound), ParamKind::Weight)
    }

    /// A bias with PyTorch's default init, U(−1/√fan_in, 1/√fan_in).
    pub fn bias(&mut self, name: &str, size: usize, fan_in: usize) -> Result<Tensor> {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        self.add(name, &[size], Init::Uniform(bound), ParamKind::Bias)
    }

    /// A normalization parameter initialised to a constant (1 for scales, 0 for shifts).
    pub fn norm_param(&mut self, name: &str, size: usize, value: f64) -> Result<Tensor> {
        self.add(name, &[size], Init::Const(value), ParamKind::Norm)
    }

    /// A non-trainable buffer initialised to a constant.
    pub fn buffer(&mut self, name: &str, size: usize, value: f64) -> Result<Var> {
        let var = self.make(name, &[size], Init::Const(value))?;
        self.buffers.push((name.to_string(), var.clone()));
        Ok(var)
    }

    fn add(&mut self, name: &str, shape: &[usize], init: Init, kind: ParamKind) -> Result<Tensor> {
        if self.params.iter().any(|p| p.name == name) {
            candle_core::bail!("parameter `{name}` defined twice");
        }
        let var = self.make(name, shape, init)?;
        // A detached tensor shares the variable's storage: it sees every `set`.
        let t = match self.frozen {
            true => var.as_tensor().detach(),
            false => var.as_tensor().clone(),
        };
        self.params.push(Param {
            name: name.to_string(),
            var,
            kind,
        });
        Ok(t)
    }

    /// Named tensors of parameters and buffers, for safetensors checkpoints.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .chain(
                self.buffers
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_tensor().clone())),
            )
            .collect()
    }

    /// Overwrites values from named tensors (a checkpoint); every parameter must be present.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for p in &self.params {
            let t = tensors
                .get(&p.name)
                .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks `{}`", p.name)))?;
            p.var
                .set(&t.to_device(&self.device)?.to_dtype(self.dtype)?)?;
        }
        for (name, b) in &self.buffers {
            if let Some(t) = tensors.get(name) {
                b.set(&t.to_device(&self.device)?.to_dtype(self.dtype)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Init {
    Uniform(f64),
    Const(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_and_copies_match() -> Result<()> {
        let dev = Device::Cpu;
        let mut a = ParamStore::new(&dev, 7);
        let mut b = ParamStore::new(&dev, 7);
        let mut c = ParamStore::new(&dev, 8);
        let wa = a.weight("w", &[4, 3], 3)?;
        let wb = b.weight("w", &[4, 3], 3)?;
        let wc = c.weight("w", &[4, 3], 3)?;
        let diff = |x: &Tensor, y: &Tensor| -> Result<f32> {
            (x - y)?.abs()?.sum_all()?.to_scalar::<f32>()
        };
        assert_eq!(diff(&wa, &wb)?, 0.0);
        assert!(diff(&wa, &wc)? > 0.0);
        let bound = 1.0 / 3f32.sqrt();
        assert!(wa.abs()?.max_all()?.to_scalar::<f32>()? <= bound);
        let mut copy = ParamStore::copy_of(&a)?;
        let wcopy = copy.weight("w", &[4, 3], 3)?;
        assert_eq!(diff(&wa, &wcopy)?, 0.0);
        // A copy is independent storage: changing the original leaves it.
        a.params()[0].var.set(&wa.zeros_like()?)?;
        assert!(diff(&wa, &wcopy)? > 0.0);
        assert!(copy.weight("missing", &[1], 1).is_err());
        Ok(())
    }

    #[test]
    fn a_frozen_copy_tracks_nothing_and_follows_its_variables() -> Result<()> {
        let dev = Device::Cpu;
        let mut a = ParamStore::new(&dev, 7);
        let wa = a.weight("w", &[4, 3], 3)?;
        let mut frozen = ParamStore::frozen_copy_of(&a)?;
        let wf = frozen.weight("w", &[4, 3], 3)?;
        assert!(wa.track_op());
        assert!(!wf.track_op());
        let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        assert_eq!(values(&wf)?, values(&wa)?);
        // An EMA update sets the variable: the layer's tensor sees it.
        frozen.params()[0].var.set(&(wa.detach() * 0.5)?)?;
        assert_eq!(values(&wf)?, values(&(wa.detach() * 0.5)?)?);
        Ok(())
    }
}
