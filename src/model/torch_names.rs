//! PyTorch's names and layouts for collapse-lab's parameters, so that a trained network loads
//! in PyTorch as it is:
//!
//! - `resnet18`: torchvision's names (`conv1.weight`, `bn1.running_mean`,
//!   `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, …): `torchvision.models.resnet18()`
//!   loads the encoder with `strict=True` apart from `fc` (for width 64 and the ImageNet stem;
//!   the CIFAR stem is a 3×3 `conv1` and no max pool).
//! - `convnet`: `nn.Sequential` of one `nn.Sequential(Conv2d, norm, ReLU)` per stage:
//!   `{stage}.0.weight` (and `.bias` without a norm), `{stage}.1.*` the norm.
//! - heads: `nn.Sequential(Linear, norm, ReLU, Linear)`: `projector.0.*`, `projector.1.*`,
//!   `projector.3.*` (likewise `predictor.*`).
//!
//! Convolution weights are stored channels-last, (O, kh, kw, C); PyTorch's are (O, C, kh, kw).
//! Batch norms gain `num_batches_tracked`, the number of training-mode forward passes.

use candle_core::{DType, Result, Tensor};

/// Training-mode forward passes per batch norm per optimizer step (one per view): what
/// `num_batches_tracked` counts.
pub const BN_PASSES_PER_STEP: u64 = 2;

/// The PyTorch name of one of our parameter or buffer names (with its `encoder.`,
/// `projector.` or `predictor.` prefix; the encoder's prefix is dropped, as the encoder is a
/// model of its own in PyTorch).
pub fn torch_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("encoder.") {
        return encoder_name(rest);
    }
    for head in ["projector.", "predictor."] {
        if let Some(rest) = name.strip_prefix(head) {
            let rest = rest
                .replacen("fc1.", "0.", 1)
                .replacen("norm.", "1.", 1)
                .replacen("fc2.", "3.", 1);
            return format!("{head}{rest}");
        }
    }
    name.to_string()
}

fn encoder_name(rest: &str) -> String {
    if let Some(stage) = rest.strip_prefix("stage") {
        // convnet: stage{i}.conv.* → {i}.0.*, stage{i}.norm.* → {i}.1.*
        return stage
            .replacen(".conv.", ".0.", 1)
            .replacen(".norm.", ".1.", 1);
    }
    rest.replacen("stem.conv.", "conv1.", 1)
        .replacen("stem.norm.", "bn1.", 1)
        .replacen(".norm1.", ".bn1.", 1)
        .replacen(".norm2.", ".bn2.", 1)
        .replacen(".shortcut.conv.", ".downsample.0.", 1)
        .replacen(".shortcut.norm.", ".downsample.1.", 1)
}

/// Our named tensors in PyTorch's names and layouts, with `num_batches_tracked` beside every
/// batch norm's running statistics.
pub fn to_torch(
    tensors: &[(String, Tensor)],
    batches_tracked: u64,
) -> Result<Vec<(String, Tensor)>> {
    convert(tensors, batches_tracked, |torch, _| torch.to_string())
}

/// [`to_torch`] for the tensors of `tensors` whose names start with `prefix` (a checkpoint's
/// `online.`, `target.`, `velocity.`): named `<prefix><torch name>`, the encoder's under
/// `<prefix>encoder.`.
pub fn to_torch_under(
    prefix: &str,
    tensors: &[(String, Tensor)],
    batches_tracked: u64,
) -> Result<Vec<(String, Tensor)>> {
    let mine: Vec<(String, Tensor)> = tensors
        .iter()
        .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.to_string(), t.clone())))
        .collect();
    convert(&mine, batches_tracked, |torch, ours| {
        if ours.starts_with("encoder.") {
            format!("{prefix}encoder.{torch}")
        } else {
            format!("{prefix}{torch}")
        }
    })
}

fn convert(
    tensors: &[(String, Tensor)],
    batches_tracked: u64,
    full_name: impl Fn(&str, &str) -> String,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let value = if t.rank() == 4 {
            t.permute((0, 3, 1, 2))?.contiguous()?
        } else {
            t.clone()
        };
        let torch = full_name(&torch_name(name), name);
        if let Some(prefix) = torch.strip_suffix("running_var") {
            let count = i64::try_from(batches_tracked).unwrap_or(i64::MAX);
            out.push((
                format!("{prefix}num_batches_tracked"),
                Tensor::new(count, t.device())?.to_dtype(DType::I64)?,
            ));
        }
        out.push((torch, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_follow_torchvision_and_sequential_indices() {
        for (ours, torch) in [
            ("encoder.stem.conv.weight", "conv1.weight"),
            ("encoder.stem.norm.running_mean", "bn1.running_mean"),
            ("encoder.layer1.0.conv1.weight", "layer1.0.conv1.weight"),
            ("encoder.layer1.0.norm2.bias", "layer1.0.bn2.bias"),
            (
                "encoder.layer2.0.shortcut.conv.weight",
                "layer2.0.downsample.0.weight",
            ),
            (
                "encoder.layer4.0.shortcut.norm.running_var",
                "layer4.0.downsample.1.running_var",
            ),
            ("encoder.stage0.conv.weight", "0.0.weight"),
            ("encoder.stage3.conv.bias", "3.0.bias"),
            ("encoder.stage2.norm.weight", "2.1.weight"),
            ("projector.fc1.weight", "projector.0.weight"),
            ("projector.norm.running_mean", "projector.1.running_mean"),
            ("predictor.fc2.bias", "predictor.3.bias"),
        ] {
            assert_eq!(torch_name(ours), torch, "{ours}");
        }
    }

    #[test]
    fn conv_weights_become_channels_first_and_bn_gains_its_counter() -> Result<()> {
        let dev = Device::Cpu;
        // (O=2, kh=1, kw=2, C=3), element (o, i, j, c) = 1000o + 100i + 10j + c.
        let v: Vec<f32> = (0..2 * 2 * 3)
            .map(|k| {
                let (o, j, c) = (k / 6, (k / 3) % 2, k % 3);
                (1000 * o + 10 * j + c) as f32
            })
            .collect();
        let w = Tensor::from_vec(v, (2, 1, 2, 3), &dev)?;
        let rv = Tensor::ones(2, DType::F32, &dev)?;
        let out = to_torch(
            &[
                ("encoder.stem.conv.weight".into(), w),
                ("encoder.stem.norm.running_var".into(), rv),
            ],
            14,
        )?;
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["conv1.weight", "bn1.num_batches_tracked", "bn1.running_var"]
        );
        let t = &out[0].1;
        assert_eq!(t.dims(), [2, 3, 1, 2]);
        // (o=1, c=2, i=0, j=1) holds 1000 + 10 + 2.
        let x = t.get(1)?.get(2)?.get(0)?.get(1)?.to_scalar::<f32>()?;
        assert_eq!(x, 1012.0);
        assert_eq!(out[1].1.to_scalar::<i64>()?, 14);
        Ok(())
    }
}
