//! Resuming from a checkpoint continues bit for bit, for every method, encoder, normalization
//! and optimizer option (the runs of bench/parity.toml): a run of 3 steps equals a run that
//! checkpointed after step 2 and was resumed from there.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use collapse_lab::config::Grid;
use collapse_lab::data::{open_dataset, Dataset, TwoViewBatch};
use collapse_lab::log::StepRecord;
use collapse_lab::method::Embeddings;
use collapse_lab::train::checkpoint::{checkpoints, read_checkpoint, Checkpointing};
use collapse_lab::train::{train_with, RunControl, StepObserver};

struct NoLog;

impl StepObserver for NoLog {
    fn on_step(&mut self, _: &StepRecord, _: &Embeddings, _: &TwoViewBatch) -> anyhow::Result<()> {
        Ok(())
    }
}

fn bits(state: &[(String, Tensor)]) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = state
        .iter()
        .map(|(n, t)| {
            let v = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("f32");
            (n.clone(), v.into_iter().map(f32::to_bits).collect())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_option_resumes_bit_for_bit() {
    let grid = Grid::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/parity.toml"
    )))
    .expect("parity grid");
    for spec in grid.expand().expect("runs") {
        let mut cfg = spec.config.clone();
        cfg.train.max_steps = Some(3);
        let pair = open_dataset(&cfg.dataset).expect("data");
        let train: Arc<dyn Dataset> = pair.train.clone();
        let (whole, _) = train_with(
            &cfg,
            &Device::Cpu,
            train.clone(),
            &mut NoLog,
            None,
            RunControl::default(),
        )
        .expect("trains");
        let dir = tempfile::tempdir().expect("tempdir");
        let checkpointing = Checkpointing {
            dir: dir.path().to_path_buf(),
            every: 2,
            config_hash: "h".into(),
            interrupt: Arc::new(AtomicBool::new(false)),
        };
        let control = RunControl {
            checkpointing: Some(checkpointing),
            ..RunControl::default()
        };
        train_with(&cfg, &Device::Cpu, train.clone(), &mut NoLog, None, control).expect("trains");
        let at = checkpoints(dir.path())
            .expect("readable")
            .into_iter()
            .next()
            .expect("a checkpoint after step 2");
        let resume = read_checkpoint(&at, &Device::Cpu).expect("loads");
        assert_eq!(resume.progress.next_step, 2);
        let control = RunControl {
            resume: Some(resume),
            ..RunControl::default()
        };
        let (resumed, _) =
            train_with(&cfg, &Device::Cpu, train, &mut NoLog, None, control).expect("trains");
        let (a, b) = (bits(&whole.final_state), bits(&resumed.final_state));
        assert_eq!(a.len(), b.len(), "{}", spec.run_id);
        for ((na, va), (_, vb)) in a.iter().zip(&b) {
            assert!(va == vb, "{}: {na} differs after resuming", spec.run_id);
        }
    }
}
