//! `collapse-lab export RUN_DIR --format torch`: a run's weights in PyTorch's names and
//! layouts (`model::torch_names`), beside the stored ones: `encoder.torch.safetensors` (loads
//! into torchvision's `resnet18()` or the documented `nn.Sequential` conv net) and
//! `heads.torch.safetensors` (`projector.*`, `predictor.*`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::staging::read_record;
use crate::config::InputError;
use crate::log::StepsLog;
use crate::model::torch_names::{to_torch, BN_PASSES_PER_STEP};

/// Writes the PyTorch copies of a run's weights; returns their paths.
pub fn export_torch(run_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let steps = match read_record(run_dir) {
        Some(r) => r.summary.outcome.steps,
        None => {
            let steps = run_dir.join("steps.parquet");
            if steps.is_file() {
                StepsLog::read(&steps)?.rows.len() as u64
            } else {
                0
            }
        }
    };
    let mut written = Vec::new();
    // What each file must hold: its tensors' name prefixes (a heads file copied over the
    // encoder's would otherwise be exported as an encoder).
    let expected: [(&str, &[&str]); 2] = [
        ("encoder", &["encoder."]),
        ("heads", &["projector.", "predictor."]),
    ];
    for (name, prefixes) in expected {
        let src = run_dir.join(format!("{name}.safetensors"));
        if !src.is_file() {
            return Err(InputError::new(
                src.display().to_string(),
                "missing (expected a run folder with trained weights)",
            )
            .into());
        }
        let tensors = candle_core::safetensors::load(&src, &Device::Cpu)
            .map_err(|e| InputError::new(src.display().to_string(), e.to_string()))?;
        let mut named: Vec<(String, Tensor)> = tensors.into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if named.is_empty() {
            return Err(InputError::new(src.display().to_string(), "holds no tensors").into());
        }
        if let Some((other, _)) = named
            .iter()
            .find(|(n, _)| !prefixes.iter().any(|p| n.starts_with(p)))
        {
            return Err(InputError::new(
                src.display().to_string(),
                format!(
                    "tensor `{other}` is not the {name}'s (expected names starting with {})",
                    prefixes.join(" or ")
                ),
            )
            .into());
        }
        let torch: HashMap<String, Tensor> = to_torch(&named, steps * BN_PASSES_PER_STEP)?
            .into_iter()
            .collect();
        let file = format!("{name}.torch.safetensors");
        let dest = run_dir.join(file);
        crate::log::write_via_temp(&dest, "", |tmp| {
            Ok(candle_core::safetensors::save(&torch, tmp)?)
        })?;
        written.push(dest);
    }
    Ok(written)
}
