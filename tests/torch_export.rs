//! A trained `resnet18` encoder, exported with `collapse-lab export --format torch`, loads into
//! torchvision's `resnet18()` strictly (fc aside) and gives collapse-lab's features on the same
//! images to 1e-4 relative. Needs PyTorch: CI creates the venv (`bench/torch-venv.sh`) and runs
//! this with `--ignored`.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use collapse_lab::config::load_run_config;
use common::*;

/// The Python with PyTorch: `COLLAPSE_LAB_TORCH_PYTHON`, or the venv `bench/torch-venv.sh` makes.
pub fn torch_python() -> PathBuf {
    std::env::var_os("COLLAPSE_LAB_TORCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/collapse-lab/torch-venv/bin/python")
        })
}

#[test]
#[ignore = "needs PyTorch in a venv (bench/torch-venv.sh); CI runs it with --ignored"]
fn exported_resnet18_loads_in_torchvision_and_gives_the_same_features() {
    let python = torch_python();
    assert!(
        python.exists(),
        "{} missing: run bench/torch-venv.sh",
        python.display()
    );
    let d = tempfile::tempdir().expect("tempdir");
    let o = run_smoke(
        d.path(),
        "byol",
        &[
            "--set",
            "model.encoder=resnet18",
            "--set",
            "model.width=64",
            "--set",
            "model.resnet_stem=imagenet",
            "--set",
            "dataset.image_size=32",
            "--set",
            "train.max_steps=3",
            "--set",
            "log.embeddings_every=0",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let run = d.path().join("smoke/byol-s0");
    let o = bin()
        .args(["export", run.to_str().expect("utf-8"), "--format", "torch"])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", stderr(&o));

    // Our features of a few fixed images, from the stored weights.
    let cfg = load_run_config(&run.join("config.toml")).expect("config");
    let method = collapse_lab::method::build(&cfg, 3, &Device::Cpu).expect("networks");
    let mut stored = HashMap::new();
    for f in ["encoder.safetensors", "heads.safetensors"] {
        stored.extend(candle_core::safetensors::load(run.join(f), &Device::Cpu).expect("weights"));
    }
    method.online().store.load(&stored).expect("load");
    let n = 6 * 3 * 32 * 32;
    let pixels: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 1.5).collect();
    let images = Tensor::from_vec(pixels, (6, 3, 32, 32), &Device::Cpu).expect("images");
    let (features, _) = method.online().embed(&images).expect("embed");
    let data = d.path().join("data.safetensors");
    let tensors: HashMap<String, Tensor> = [
        ("images".to_string(), images),
        ("features".to_string(), features),
    ]
    .into();
    candle_core::safetensors::save(&tensors, &data).expect("save");

    let o = std::process::Command::new(&python)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["bench/torch_features.py", "--encoder"])
        .arg(run.join("encoder.torch.safetensors"))
        .arg("--data")
        .arg(&data)
        .output()
        .expect("python runs");
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!("{out}{}", stderr(&o));
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("strict load ok"), "{out}");
}
