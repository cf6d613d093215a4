//! Networks: encoders (small conv net, ResNet-18), MLP heads, normalization layers, and the
//! seeded parameter store they draw their weights from.

mod conv_norm;
mod convnet;
mod encoder;
#[cfg(test)]
pub(crate) mod gradcheck;
mod head;
mod layers;
pub(crate) mod norm;
mod params;
mod pool;
mod resnet;
pub(crate) mod torch_names;

pub use convnet::ConvNet;
pub use encoder::Encoder;
pub use head::Mlp;
pub use layers::{Conv2d, ConvSpec, Linear};
pub use params::{Param, ParamKind, ParamStore};
pub use resnet::ResNet18;
