//! A grid as a Slurm job array: tasks `0 … n−1` each train `runs_per_task` consecutive runs
//! of the grid (in grid order), and one last task evaluates the untrained baselines. A task
//! is an ordinary `run` of its runs, with the same resume and isolation, so a requeued or
//! preempted task continues where it stopped.

use crate::config::{Grid, InputError, RunSpec};

/// Which array task this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSlice {
    pub index: usize,
    pub runs_per_task: usize,
}

/// Tasks a grid of `runs` trained runs needs with `runs_per_task` runs each: the trained
/// runs' tasks and the baseline task.
pub fn task_count(runs: usize, runs_per_task: usize) -> usize {
    runs.div_ceil(runs_per_task.max(1)) + 1
}

impl TaskSlice {
    /// From `--task-index` or, without it, `$SLURM_ARRAY_TASK_ID`.
    pub fn new(index: Option<usize>, runs_per_task: usize) -> Result<Self, InputError> {
        if runs_per_task == 0 {
            return Err(InputError::new("--runs-per-task", "expected at least 1"));
        }
        let index = match index {
            Some(i) => i,
            None => {
                let var = std::env::var("SLURM_ARRAY_TASK_ID").map_err(|_| {
                    InputError::new(
                        "--task-index",
                        "not given and $SLURM_ARRAY_TASK_ID is not set",
                    )
                })?;
                var.trim().parse().map_err(|_| {
                    InputError::new(
                        "$SLURM_ARRAY_TASK_ID",
                        format!("expected a task number, got `{var}`"),
                    )
                })?
            }
        };
        Ok(Self {
            index,
            runs_per_task,
        })
    }

    /// This task's trained runs and baselines: (runs, baselines). One of the two is empty.
    pub fn select(&self, grid: &Grid) -> anyhow::Result<(Vec<RunSpec>, Vec<RunSpec>)> {
        let runs = grid.expand()?;
        let run_tasks = task_count(runs.len(), self.runs_per_task) - 1;
        if self.index < run_tasks {
            let start = self.index * self.runs_per_task;
            let end = (start + self.runs_per_task).min(runs.len());
            Ok((runs[start..end].to_vec(), Vec::new()))
        } else if self.index == run_tasks {
            Ok((Vec::new(), super::baseline_specs(grid)?))
        } else {
            Err(InputError::new(
                "--task-index",
                format!(
                    "{} is past the last task: grid `{}` has {} runs, {} per task → tasks 0–{run_tasks} (the last one evaluates the baselines)",
                    self.index,
                    grid.name,
                    runs.len(),
                    self.runs_per_task
                ),
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        let text = r#"
name = "t"
seeds = [0, 1]
[base]
dataset.train_size = 256
[[variant]]
name = "a"
[[variant]]
name = "b"
[[variant]]
name = "c"
"#;
        Grid::parse(text, "t.toml").expect("grid")
    }

    /// Every run lands in exactly one task, in grid order; the baselines in the last.
    #[test]
    fn tasks_partition_the_grid() {
        let g = grid();
        let all: Vec<String> = g.expand().unwrap().into_iter().map(|r| r.run_id).collect();
        assert_eq!(all.len(), 6);
        for per_task in [1, 2, 4, 6, 10] {
            let n = task_count(all.len(), per_task);
            let mut seen = Vec::new();
            for index in 0..n - 1 {
                let (runs, baselines) = TaskSlice {
                    index,
                    runs_per_task: per_task,
                }
                .select(&g)
                .unwrap();
                assert!(baselines.is_empty() && !runs.is_empty());
                assert!(runs.len() <= per_task);
                seen.extend(runs.into_iter().map(|r| r.run_id));
            }
            assert_eq!(seen, all, "{per_task} per task");
            let (runs, baselines) = TaskSlice {
                index: n - 1,
                runs_per_task: per_task,
            }
            .select(&g)
            .unwrap();
            assert!(runs.is_empty());
            assert_eq!(baselines.len(), 2);
            let past = TaskSlice {
                index: n,
                runs_per_task: per_task,
            }
            .select(&g);
            assert!(past.is_err());
        }
    }

    #[test]
    fn zero_runs_per_task_is_refused() {
        assert!(TaskSlice::new(Some(0), 0).is_err());
    }
}
