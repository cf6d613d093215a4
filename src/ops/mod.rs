//! CPU kernels behind the networks (what candle-core is to candle-nn): im2col/col2im, the
//! fused convolution + batch-norm op and the ops built from its units (the small encoder's
//! chain, the ResNet basic block), batch-norm column passes, the residual add + ReLU, and
//! the thread helpers they share. Each op has a reference test against candle's own ops and a
//! finite-difference gradient test.

pub mod batch_norm_op;
pub mod columns;
pub mod conv_bn_chain;
pub mod conv_bn_op;
pub mod fused_op;
#[cfg(test)]
pub(crate) mod gradcheck;
pub mod im2col;
pub mod isa;
mod parallel;
pub mod residual_block;
pub mod residual_op;
