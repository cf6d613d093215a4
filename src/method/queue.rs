//! A first-in-first-out bank of l2-normalised negative keys (MoCo).

use candle_core::{DType, Device, Result, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::losses::l2_normalize;

#[derive(Debug)]
pub struct Queue {
    keys: Tensor,
}

impl Queue {
    /// Starts with random unit vectors (as MoCo does), drawn from the run's seeded RNG.
    pub fn new(size: usize, dim: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..size * dim)
            .map(|_| {
                let x: f64 = StandardNormal.sample(&mut rng);
                x as f32
            })
            .collect();
        let keys = l2_normalize(&Tensor::from_vec(v, (size, dim), device)?.to_dtype(DType::F32)?)?;
        Ok(Self { keys })
    }

    pub fn keys(&self) -> &Tensor {
        &self.keys
    }

    /// Replaces the keys (a checkpoint); the shape must match.
    pub fn set_keys(&mut self, keys: &Tensor) -> Result<()> {
        if keys.dims() != self.keys.dims() {
            candle_core::bail!(
                "checkpoint queue has shape {:?}, the run's has {:?}",
                keys.dims(),
                self.keys.dims()
            );
        }
        self.keys = keys
            .to_device(self.keys.device())?
            .to_dtype(self.keys.dtype())?;
        Ok(())
    }

    /// Pushes new keys to the front, dropping the oldest.
    pub fn push(&mut self, new_keys: &Tensor) -> Result<()> {
        let size = self.keys.dim(0)?;
        let fresh = l2_normalize(&new_keys.detach())?;
        let n = fresh.dim(0)?.min(size);
        let fresh = fresh.narrow(0, 0, n)?;
        self.keys = if n == size {
            fresh
        } else {
            Tensor::cat(&[fresh, self.keys.narrow(0, 0, size - n)?], 0)?
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_keeps_size_and_newest_first() -> Result<()> {
        let mut q = Queue::new(4, 2, 0, &Device::Cpu)?;
        let old = q.keys().to_vec2::<f32>()?;
        q.push(&Tensor::new(&[[3f32, 4.0]], &Device::Cpu)?)?;
        let k = q.keys().to_vec2::<f32>()?;
        assert_eq!(k.len(), 4);
        assert!((k[0][0] - 0.6).abs() < 1e-6 && (k[0][1] - 0.8).abs() < 1e-6);
        assert_eq!(k[1], old[0]);
        assert_eq!(k[3], old[2], "oldest dropped");
        Ok(())
    }
}
