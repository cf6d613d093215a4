//! `embeddings.parquet`: the embeddings of logged steps, one row per (sample, view, kind),
//! built and written on a writer thread so logging does not slow training.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use polars::prelude::*;

use super::parquet::write_parquet;

/// One embedding matrix of a logged step: `kind` (`y`, `z`, `z_target`, `p`) of one view.
pub struct EmbeddingBlock {
    pub kind: &'static str,
    pub view: u8,
    pub dim: usize,
    /// Row-major (batch, dim).
    pub values: Vec<f32>,
}

/// Everything logged for one step.
pub struct LoggedStep {
    pub step: u64,
    pub epoch: u32,
    pub image_ids: Vec<u64>,
    pub labels: Vec<Option<u32>>,
    pub blocks: Vec<EmbeddingBlock>,
}

#[derive(Default)]
struct Columns {
    step: Vec<u64>,
    epoch: Vec<u32>,
    sample: Vec<u32>,
    image_id: Vec<u64>,
    label: Vec<Option<i32>>,
    view: Vec<u8>,
    kind: Vec<&'static str>,
    dims: Vec<usize>,
    values: Vec<f32>,
}

impl Columns {
    fn push(&mut self, s: LoggedStep) {
        for block in s.blocks {
            for (i, row) in block.values.chunks_exact(block.dim.max(1)).enumerate() {
                self.step.push(s.step);
                self.epoch.push(s.epoch);
                self.sample.push(i as u32);
                self.image_id.push(s.image_ids.get(i).copied().unwrap_or(0));
                self.label
                    .push(s.labels.get(i).copied().flatten().map(|l| l as i32));
                self.view.push(block.view);
                self.kind.push(block.kind);
                self.dims.push(block.dim);
                self.values.extend_from_slice(row);
            }
        }
    }

    fn into_frame(self, run_id: &str) -> anyhow::Result<DataFrame> {
        let n = self.step.len();
        let mut vectors = ListPrimitiveChunkedBuilder::<Float32Type>::new(
            "vector".into(),
            n,
            self.values.len(),
            DataType::Float32,
        );
        let mut at = 0;
        for d in &self.dims {
            vectors.append_slice(&self.values[at..at + d]);
            at += d;
        }
        let columns = vec![
            Column::new("run_id".into(), vec![run_id.to_string(); n]),
            Column::new("step".into(), self.step),
            Column::new("epoch".into(), self.epoch),
            Column::new("sample".into(), self.sample),
            Column::new("image_id".into(), self.image_id),
            Column::new("label".into(), self.label),
            Column::new("view".into(), self.view),
            Column::new(
                "kind".into(),
                self.kind.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            ),
            vectors.finish().into_series().into_column(),
        ];
        Ok(DataFrame::new(n, columns)?)
    }
}

/// Collects logged steps on its own thread and writes the file when finished.
pub struct EmbeddingsWriter {
    tx: Option<SyncSender<LoggedStep>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl EmbeddingsWriter {
    pub fn spawn(path: PathBuf, run_id: String) -> Self {
        let (tx, rx) = sync_channel::<LoggedStep>(8);
        let handle = std::thread::spawn(move || -> anyhow::Result<()> {
            let mut cols = Columns::default();
            for step in rx {
                cols.push(step);
            }
            if cols.step.is_empty() {
                return Ok(());
            }
            let mut df = cols.into_frame(&run_id)?;
            write_parquet(&path, &mut df)
        });
        Self {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn send(&self, step: LoggedStep) -> anyhow::Result<()> {
        match &self.tx {
            Some(tx) => tx
                .send(step)
                .map_err(|_| anyhow::anyhow!("embeddings writer stopped")),
            None => Ok(()),
        }
    }

    /// Closes the stream and waits for the file to be written.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.tx.take();
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("embeddings writer panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddingsWriter {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
