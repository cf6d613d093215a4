//! The self-supervised methods as configuration: their names, what each one has (EMA target,
//! predictor, queue, loss) and their settings. The behaviour is in `src/method/<name>.rs`; this
//! declaration sits at the ground floor because validation and the tables need it.

use serde::{Deserialize, Serialize};

use super::rules::{at_least_one, positive};

/// The self-supervised method (see `src/method/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodName {
    Byol,
    Simsiam,
    Simclr,
    Moco,
    Contrastive,
}

/// What a method is made of: the parts a run builds, validates and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    pub name: &'static str,
    /// A target network that is an exponential moving average of the online one (uses τ).
    pub ema_target: bool,
    /// A predictor head on the online side.
    pub predictor: bool,
    /// A queue of negatives (uses `method.queue_size`).
    pub queue: bool,
    /// The loss, as the report names it.
    pub loss: &'static str,
}

/// Online encoder → projector → predictor regresses an EMA target; loss 2 − 2·cos.
const BYOL: MethodSpec = MethodSpec {
    name: "byol",
    ema_target: true,
    predictor: true,
    queue: false,
    loss: "2 − 2·cos",
};
/// Like BYOL without the EMA: the target is the stop-gradient online projection.
const SIMSIAM: MethodSpec = MethodSpec {
    name: "simsiam",
    ema_target: false,
    predictor: true,
    queue: false,
    loss: "−cos (stop-gradient)",
};
/// NT-Xent over in-batch negatives, no predictor, no target network.
const SIMCLR: MethodSpec = MethodSpec {
    name: "simclr",
    ema_target: false,
    predictor: false,
    queue: false,
    loss: "NT-Xent (in-batch negatives)",
};
/// MoCo v2: EMA key encoder, queue of negatives, InfoNCE on the projections.
const MOCO: MethodSpec = MethodSpec {
    name: "moco",
    ema_target: true,
    predictor: false,
    queue: true,
    loss: "InfoNCE (queue negatives)",
};
/// The study's "contrastive loss" row: the BYOL network trained with InfoNCE against queue
/// negatives of target projections.
const CONTRASTIVE: MethodSpec = MethodSpec {
    name: "contrastive",
    ema_target: true,
    predictor: true,
    queue: true,
    loss: "InfoNCE (queue negatives)",
};

impl MethodName {
    pub const ALL: [MethodName; 5] = [
        Self::Byol,
        Self::Simsiam,
        Self::Simclr,
        Self::Moco,
        Self::Contrastive,
    ];

    pub fn spec(self) -> &'static MethodSpec {
        match self {
            Self::Byol => &BYOL,
            Self::Simsiam => &SIMSIAM,
            Self::Simclr => &SIMCLR,
            Self::Moco => &MOCO,
            Self::Contrastive => &CONTRASTIVE,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The method a table's `method` column names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// How the EMA coefficient τ evolves over training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TauSchedule {
    Constant,
    /// τ = 1 − (1 − τ₀)(cos(πk/K) + 1)/2 (BYOL paper).
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodConfig {
    pub name: MethodName,
    /// EMA coefficient of the target network (BYOL, MoCo, contrastive).
    pub tau: f64,
    pub tau_schedule: TauSchedule,
    /// Softmax temperature of InfoNCE / NT-Xent.
    pub temperature: f64,
    /// Negatives kept in the queue (MoCo, contrastive).
    pub queue_size: usize,
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self {
            name: MethodName::Byol,
            tau: 0.996,
            tau_schedule: TauSchedule::Constant,
            temperature: 0.2,
            queue_size: 1024,
        }
    }
}

impl MethodConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        let m = self;
        if !(0.0..=1.0).contains(&m.tau) {
            return Err(format!("method.tau must be in [0, 1], got {}", m.tau));
        }
        positive("method.temperature", m.temperature)?;
        if m.name.spec().queue {
            at_least_one("method.queue_size", m.queue_size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the specs give are serde's (TOML and the tables agree).
    #[test]
    fn spec_names_are_the_serialized_names() {
        for m in MethodName::ALL {
            let text = toml::to_string(&MethodConfig {
                name: m,
                ..MethodConfig::default()
            })
            .unwrap();
            assert!(
                text.contains(&format!("name = \"{}\"", m.as_str())),
                "{text}"
            );
            assert_eq!(MethodName::parse(m.as_str()), Some(m));
        }
        assert_eq!(MethodName::parse("barlow"), None);
    }
}
