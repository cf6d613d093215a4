//! Every committed grid parses, expands and names the variants the study needs.

use collapse_lab::config::Grid;

mod common;

#[test]
fn committed_grids_are_valid() {
    for name in std::fs::read_dir(common::repo("experiments")).expect("experiments/") {
        let path = name.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let grid = Grid::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let runs = grid.expand().unwrap_or_else(|e| panic!("{e}"));
        assert!(!runs.is_empty(), "{}", path.display());
    }
}

#[test]
fn default_grid_has_the_study_variants() {
    study_variants("experiments/bn-ablation.toml");
}

#[test]
fn cifar10_grid_has_the_study_variants_on_real_images() {
    study_variants("experiments/cifar10-bn-ablation.toml");
    let grid = Grid::load(&common::repo("experiments/cifar10-bn-ablation.toml")).expect("grid");
    let run = &grid.expand().expect("expands")[0].config;
    assert_eq!(
        (run.dataset.name.as_str(), run.dataset.image_size),
        ("cifar10", 32)
    );
}

fn study_variants(file: &str) {
    let grid = Grid::load(&common::repo(file)).expect("grid");
    let names: Vec<_> = grid.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "byol",
            "projector-bn",
            "predictor-bn",
            "no-norm",
            "layer-norm",
            "contrastive"
        ]
    );
    // Enough seeds for the claims' statistics: ≥ 3 decide anything at all.
    assert!(grid.seeds.len() >= 3, "{file}: {} seeds", grid.seeds.len());
    use collapse_lab::config::{HeadNorm, MethodName};
    let runs = grid.expand().expect("expands");
    let get = |v: &str| {
        runs.iter()
            .find(|r| r.variant == v)
            .expect("variant")
            .config
            .clone()
    };
    assert_eq!(get("byol").model.projector.norm, HeadNorm::Bn);
    assert_eq!(get("byol").model.predictor.norm, HeadNorm::Bn);
    assert_eq!(get("projector-bn").model.predictor.norm, HeadNorm::None);
    assert_eq!(get("predictor-bn").model.projector.norm, HeadNorm::None);
    assert_eq!(get("no-norm").model.projector.norm, HeadNorm::None);
    assert_eq!(get("layer-norm").model.predictor.norm, HeadNorm::Ln);
    assert_eq!(get("contrastive").method.name, MethodName::Contrastive);
}

/// The mechanism grid trains every variant the claims M1–M4 read, with the references.
#[test]
fn mechanism_grid_has_every_part_of_batch_norm_and_the_references() {
    let grid = Grid::load(&common::repo("experiments/bn-mechanism.toml")).expect("grid");
    let names: Vec<_> = grid.variants.iter().map(|v| v.name.as_str()).collect();
    for v in [
        "byol",
        "no-norm",
        "layer-norm",
        "bn-center",
        "bn-scale",
        "bn-detached",
        "ghost-bn",
    ] {
        assert!(names.contains(&v), "{v} missing from {names:?}");
    }
    let runs = grid.expand().expect("expands");
    let ghost = runs
        .iter()
        .find(|r| r.variant == "ghost-bn")
        .expect("ghost-bn");
    assert_eq!(ghost.config.model.ghost_batch, 16);
    assert!(
        ghost.config.train.batch_size > 16,
        "more than one ghost group per batch"
    );
}
