//! `embeddings.parquet`: the embeddings of logged steps, one row per (sample, view, kind),
//! built and written on a writer thread so logging does not slow training.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use polars::prelude::*;

use std::collections::BTreeMap;
use std::path::Path;

use super::parquet::{read_parquet, write_parquet};
use crate::config::InputError;

/// `embeddings.parquet`'s columns, in order.
pub const EMBEDDINGS_COLUMNS: [&str; 9] = [
    "run_id", "step", "epoch", "sample", "image_id", "label", "view", "kind", "vector",
];

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
        let [c_run_id, c_step, c_epoch, c_sample, c_image_id, c_label, c_view, c_kind, c_vector] =
            EMBEDDINGS_COLUMNS;
        let mut vectors = ListPrimitiveChunkedBuilder::<Float32Type>::new(
            c_vector.into(),
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
            Column::new(c_run_id.into(), vec![run_id.to_string(); n]),
            Column::new(c_step.into(), self.step),
            Column::new(c_epoch.into(), self.epoch),
            Column::new(c_sample.into(), self.sample),
            Column::new(c_image_id.into(), self.image_id),
            Column::new(c_label.into(), self.label),
            Column::new(c_view.into(), self.view),
            Column::new(
                c_kind.into(),
                self.kind.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            ),
            vectors.finish().into_series().into_column(),
        ];
        Ok(DataFrame::new(n, columns)?)
    }
}

/// What the writer thread is sent.
enum Message {
    Step(LoggedStep),
    /// Write what was collected since the last part to this file and start afresh (a
    /// checkpoint); the answer says whether a part was written (nothing collected: none).
    Part(PathBuf, SyncSender<anyhow::Result<bool>>),
}

/// Collects logged steps on its own thread and writes the file when finished. A run that
/// checkpoints moves what it has collected into part files; the final file is the parts (of
/// this and earlier sessions of the run) followed by the rest, in step order.
pub struct EmbeddingsWriter {
    tx: Option<SyncSender<Message>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// Set when dropped without [`Self::finish`] (an interrupted run): no file is written,
    /// the parts stay for the resumed run.
    abandoned: Arc<AtomicBool>,
}

impl EmbeddingsWriter {
    pub fn spawn(path: PathBuf, run_id: String) -> Self {
        Self::continuing(path, run_id, Vec::new())
    }

    /// A writer whose file starts with the rows of `parts` (written by [`Self::save_part`]
    /// before a run was interrupted).
    pub fn continuing(path: PathBuf, run_id: String, parts: Vec<PathBuf>) -> Self {
        let (tx, rx) = sync_channel::<Message>(8);
        let abandoned = Arc::new(AtomicBool::new(false));
        let abandoned_here = Arc::clone(&abandoned);
        let handle = std::thread::spawn(move || -> anyhow::Result<()> {
            let mut parts = parts;
            let mut cols = Columns::default();
            for message in rx {
                match message {
                    Message::Step(step) => cols.push(step),
                    Message::Part(part, answer) => {
                        let written = if cols.step.is_empty() {
                            Ok(false)
                        } else {
                            let mut df = std::mem::take(&mut cols).into_frame(&run_id)?;
                            write_parquet(&part, &mut df).map(|()| {
                                parts.push(part);
                                true
                            })
                        };
                        // The trainer waits for the answer; if it is gone, so is the run.
                        let _ = answer.send(written);
                    }
                }
            }
            if abandoned_here.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut frame: Option<DataFrame> = None;
            for part in &parts {
                let df = read_parquet(part)?;
                frame = Some(match frame {
                    Some(mut f) => {
                        f.vstack_mut(&df)?;
                        f
                    }
                    None => df,
                });
            }
            if !cols.step.is_empty() {
                let df = cols.into_frame(&run_id)?;
                frame = Some(match frame {
                    Some(mut f) => {
                        f.vstack_mut(&df)?;
                        f
                    }
                    None => df,
                });
            }
            match frame {
                Some(mut df) => {
                    df.rechunk_mut();
                    write_parquet(&path, &mut df)
                }
                None => Ok(()),
            }
        });
        Self {
            tx: Some(tx),
            handle: Some(handle),
            abandoned,
        }
    }

    pub fn send(&self, step: LoggedStep) -> anyhow::Result<()> {
        match &self.tx {
            Some(tx) => tx
                .send(Message::Step(step))
                .map_err(|_| anyhow::anyhow!("embeddings writer stopped")),
            None => Ok(()),
        }
    }

    /// Writes the steps collected since the last part to `part` and waits until it is on
    /// disk. Returns whether a part was written (false when nothing was logged since).
    pub fn save_part(&self, part: PathBuf) -> anyhow::Result<bool> {
        let stopped = || anyhow::anyhow!("embeddings writer stopped");
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        let (answer_tx, answer_rx) = sync_channel(1);
        tx.send(Message::Part(part, answer_tx))
            .map_err(|_| stopped())?;
        answer_rx.recv().map_err(|_| stopped())?
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
        if self.handle.is_some() {
            self.abandoned.store(true, Ordering::SeqCst);
        }
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
fn column<'a>(df: &'a DataFrame, name: &str, file: &Path) -> Result<&'a Column, InputError> {
    df.column(name).map_err(|_| {
        InputError::new(
            file.display().to_string(),
            format!("missing column `{name}`"),
        )
    })
}

fn typed<T>(r: PolarsResult<T>, name: &str, want: &str, file: &Path) -> Result<T, InputError> {
    r.map_err(|_| {
        InputError::new(
            file.display().to_string(),
            format!("column `{name}` is not {want}"),
        )
    })
}

/// Embedding matrices of one step, keyed by (kind, view), rows in sample order.
type StepBlocks = BTreeMap<(String, u8), Vec<(u32, Vec<f32>)>>;

/// Logged steps of one run: step → (epoch, embedding blocks).
pub type LoggedSteps = BTreeMap<u64, (u32, StepBlocks)>;

/// Reads `embeddings.parquet` into per-step blocks, checking every record.
pub fn read_embeddings(path: &Path) -> Result<(String, LoggedSteps), InputError> {
    let df = read_parquet(path)?;
    let src = path.display().to_string();
    let run_ids = typed(
        column(&df, "run_id", path)?.str(),
        "run_id",
        "a string",
        path,
    )?;
    let steps = typed(column(&df, "step", path)?.u64(), "step", "u64", path)?;
    let epochs = typed(column(&df, "epoch", path)?.u32(), "epoch", "u32", path)?;
    let samples = typed(column(&df, "sample", path)?.u32(), "sample", "u32", path)?;
    let views = typed(column(&df, "view", path)?.u8(), "view", "u8", path)?;
    let kinds = typed(column(&df, "kind", path)?.str(), "kind", "a string", path)?;
    let vectors = typed(
        column(&df, "vector", path)?.list(),
        "vector",
        "a list of f32",
        path,
    )?;
    let run_id = run_ids.get(0).unwrap_or_default().to_string();
    let mut out: LoggedSteps = BTreeMap::new();
    let mut dims: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..df.height() {
        let record = |what: &str| InputError::new(&src, format!("record {i}: {what}"));
        let (Some(step), Some(epoch), Some(sample), Some(view), Some(kind)) = (
            steps.get(i),
            epochs.get(i),
            samples.get(i),
            views.get(i),
            kinds.get(i),
        ) else {
            return Err(record("null in step/epoch/sample/view/kind"));
        };
        let vector = vectors
            .get_as_series(i)
            .ok_or_else(|| record("null vector"))?;
        let floats = vector
            .f32()
            .map_err(|_| record("vector is not a list of f32"))?;
        if floats.null_count() > 0 {
            return Err(record("null inside vector"));
        }
        let values: Vec<f32> = floats.into_no_null_iter().collect();
        let expected = *dims.entry(kind.to_string()).or_insert(values.len());
        if values.len() != expected || expected == 0 {
            return Err(record(&format!(
                "vector of kind `{kind}` has length {}, expected {expected} like the first `{kind}` record",
                values.len()
            )));
        }
        out.entry(step)
            .or_insert_with(|| (epoch, BTreeMap::new()))
            .1
            .entry((kind.to_string(), view))
            .or_default()
            .push((sample, values));
    }
    Ok((run_id, out))
}
