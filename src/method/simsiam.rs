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
        let embeddings = Embeddings::of_views(&self.online, None, views)?;
        let [p0, p1] = embeddings.predictions("SimSiam")?;
        let [zt0, zt1] = &embeddings.z_target;
        let loss = ((negative_cosine(p0, zt1)? + negative_cosine(p1, zt0)?)? * 0.5)?;
        Ok(StepOutput { loss, embeddings })
    }
}
