//! SimSiam (Chen & He 2021): BYOL without the moving average; the target is the online
//! projection of the other view behind a stop-gradient. Loss: −½(cos(p₀, sg z₁) + cos(p₁, sg z₀)).

use candle_core::{Result, Tensor};

use super::losses::negative_cosine;
use super::network::OnlineNetwork;
use super::{Embeddings, Method, Parts, StepOutput};
use crate::config::MethodName;

pub struct SimSiam {
    pub(super) online: OnlineNetwork,
}

impl SimSiam {
    pub(super) fn new(parts: Parts) -> Result<Self> {
        Ok(Self {
            online: parts.online,
        })
    }
}

impl Method for SimSiam {
    fn name(&self) -> MethodName {
        MethodName::Simsiam
    }

    fn online(&self) -> &OnlineNetwork {
        &self.online
    }

    fn forward(&mut self, views: [&Tensor; 2]) -> Result<StepOutput> {
        let o0 = self.online.forward(views[0])?;
        let o1 = self.online.forward(views[1])?;
        let (p0, p1) = match (o0.p, o1.p) {
            (Some(a), Some(b)) => (a, b),
            _ => candle_core::bail!("SimSiam needs a predictor"),
        };
        let zt0 = o0.z.detach();
        let zt1 = o1.z.detach();
        let loss = ((negative_cosine(&p0, &zt1)? + negative_cosine(&p1, &zt0)?)? * 0.5)?;
        Ok(StepOutput {
            loss,
            embeddings: Embeddings {
                y: [o0.y, o1.y],
                z: [o0.z, o1.z],
                z_target: [zt0, zt1],
                p: Some([p0, p1]),
            },
        })
    }

    fn after_step(&mut self, _tau: Option<f64>, _out: &StepOutput) -> Result<()> {
        Ok(())
    }
}
