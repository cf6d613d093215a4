//! An ablation grid: a `base` run, named variants that override fields of it, and seeds.
//!
//! ```toml
//! name = "bn-ablation"
//! seeds = [0, 1, 2]
//! [base]
//! method.name = "byol"
//! [[variant]]
//! name = "no-norm"
//! model.projector.norm = "none"
//! model.predictor.norm = "none"
//! ```
//! Grid expansion is variants × seeds, in file order; `--set key.path=value` overrides apply
//! on top of every run.

use std::path::Path;

use toml::{Table, Value};

use super::error::InputError;
use super::run::RunConfig;
pub use super::table::Override;
use super::table::{deserialize_run, merge, set_path};

/// One named variant: a partial run config merged onto the base.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    pub description: String,
    pub overrides: Table,
}

/// One run of a grid, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// `<variant>-s<seed>`
    pub run_id: String,
    pub variant: String,
    pub seed: u64,
    pub config: RunConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub name: String,
    pub description: String,
    pub seeds: Vec<u64>,
    pub base: Table,
    pub variants: Vec<Variant>,
    pub overrides: Vec<Override>,
}

/// The variant name of the untrained-encoder baseline every grid adds (one run per seed); no
/// grid variant may take it.
pub const BASELINE_VARIANT: &str = "random";

impl Grid {
    /// Reads and checks a grid file. Every error names the file and the field.
    pub fn load(path: &Path) -> Result<Self, InputError> {
        let src = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(&src, format!("cannot read grid file: {e}")))?;
        Self::parse(&text, &src)
    }

    /// Parses grid TOML; `src` names it in errors.
    pub fn parse(text: &str, src: &str) -> Result<Self, InputError> {
        let mut top: Table = toml::from_str(text).map_err(|e| toml_error(src, text, &e))?;
        for key in top.keys() {
            if !["name", "description", "seeds", "base", "variant"].contains(&key.as_str()) {
                return Err(InputError::new(
                    src,
                    format!(
                        "unknown top-level field `{key}`, expected one of name, description, seeds, base, [[variant]]"
                    ),
                ));
            }
        }
        let name = match top.remove("name") {
            Some(Value::String(s)) if valid_name(&s) => s,
            Some(v) => {
                return Err(InputError::new(
                    src,
                    format!("field `name`: expected a non-empty name of at most {MAX_NAME_LEN} letters, digits, '-', '_' or '.' not starting with '.', got {v}"),
                ))
            }
            None => return Err(InputError::new(src, "missing field `name` (the grid's name)")),
        };
        let description = match top.remove("description") {
            Some(Value::String(s)) => s,
            None => String::new(),
            Some(v) => {
                return Err(InputError::new(
                    src,
                    format!("field `description`: expected a string, got {v}"),
                ))
            }
        };
        let seeds = match top.remove("seeds") {
            None => vec![0],
            Some(v) => {
                parse_seeds(&v).map_err(|m| InputError::new(src, format!("field `seeds`: {m}")))?
            }
        };
        let base = match top.remove("base") {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(v) => {
                return Err(InputError::new(
                    src,
                    format!("field `base`: expected a table [base], got {v}"),
                ))
            }
        };
        // The base alone must already be a valid run: its errors are reported once, as `base.…`.
        deserialize_run(&base).map_err(|m| InputError::new(src, format!("base.{m}")))?;

        let variants = parse_variants(top.remove("variant"), src)?;
        let grid = Self {
            name,
            description,
            seeds,
            base,
            variants,
            overrides: Vec::new(),
        };
        for v in &grid.variants {
            let table = grid.variant_table(v).map_err(|m| InputError::new(src, m))?;
            let run = deserialize_run(&table)
                .map_err(|m| InputError::new(src, format!("variant `{}`: {m}", v.name)))?;
            run.validate()
                .map_err(|m| InputError::new(src, format!("variant `{}`: {m}", v.name)))?;
        }
        Ok(grid)
    }

    /// Adds `--set` overrides. Each is type-checked on its own, so an unknown field or a wrong
    /// type is blamed on the flag that named it; ranges and combinations are checked with every
    /// flag applied at once, so settings that are valid only together pass (and every run is
    /// validated again when the grid expands).
    pub fn with_overrides(mut self, flags: &[String]) -> Result<Self, InputError> {
        let mut together = self.base.clone();
        for flag in flags {
            let o = Override::parse(flag)?;
            let mut probe = self.base.clone();
            o.apply(&mut probe)?;
            deserialize_run(&probe).map_err(|m| InputError::new(o.flag.clone(), m))?;
            o.apply(&mut together)?;
            self.overrides.push(o);
        }
        if !flags.is_empty() {
            let blame: Vec<&str> = self.overrides.iter().map(|o| o.flag.as_str()).collect();
            deserialize_run(&together)
                .and_then(|run| run.validate())
                .map_err(|m| InputError::new(blame.join(" "), m))?;
        }
        Ok(self)
    }

    /// Keeps only the named variants (`--only a,b`).
    pub fn only(mut self, names: &[String]) -> Result<Self, InputError> {
        if names.is_empty() {
            return Ok(self);
        }
        for n in names {
            if !self.variants.iter().any(|v| &v.name == n) {
                let known: Vec<_> = self.variants.iter().map(|v| v.name.as_str()).collect();
                return Err(InputError::new(
                    "--only",
                    format!(
                        "unknown variant `{n}`, expected one of {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        self.variants.retain(|v| names.contains(&v.name));
        Ok(self)
    }

    /// Replaces the grid's seeds (`--seeds 0,1`); a seed given twice is refused (the two
    /// runs would share one folder).
    pub fn with_seeds(mut self, seeds: Vec<u64>) -> Result<Self, InputError> {
        if let Some(s) = seeds.iter().find(|&&s| s > i64::MAX as u64) {
            return Err(InputError::new(
                "--seeds",
                format!(
                    "seed {s} is larger than {} (configs are TOML, whose integers are signed 64-bit)",
                    i64::MAX
                ),
            ));
        }
        if let Some(d) = first_duplicate(&seeds) {
            return Err(InputError::new(
                "--seeds",
                format!("seed {d} is given twice; each seed is one run per variant"),
            ));
        }
        if !seeds.is_empty() {
            self.seeds = seeds;
        }
        Ok(self)
    }

    fn variant_table(&self, v: &Variant) -> Result<Table, String> {
        let mut t = self.base.clone();
        merge(&mut t, &v.overrides);
        for o in &self.overrides {
            set_path(&mut t, &o.path, o.value.clone()).map_err(|m| format!("{}: {m}", o.flag))?;
        }
        Ok(t)
    }

    /// The base run (with `--set` overrides) for one seed: what the untrained-encoder
    /// baseline evaluates.
    pub fn base_run(&self, seed: u64) -> Result<RunConfig, InputError> {
        let mut table = self.base.clone();
        for o in &self.overrides {
            o.apply(&mut table)?;
        }
        set_path(
            &mut table,
            &["train".to_string(), "seed".to_string()],
            Value::Integer(seed as i64),
        )
        .map_err(|m| InputError::new(&self.name, m))?;
        let run = deserialize_run(&table)
            .map_err(|m| InputError::new(&self.name, format!("base.{m}")))?;
        run.validate()
            .map_err(|m| InputError::new(&self.name, format!("base: {m}")))?;
        Ok(run)
    }

    /// Variants × seeds, in file order. Errors name the variant and field.
    pub fn expand(&self) -> Result<Vec<RunSpec>, InputError> {
        let mut runs = Vec::new();
        for v in &self.variants {
            let mut table = self
                .variant_table(v)
                .map_err(|m| InputError::new(&self.name, m))?;
            for &seed in &self.seeds {
                set_path(
                    &mut table,
                    &["train".to_string(), "seed".to_string()],
                    Value::Integer(seed as i64),
                )
                .map_err(|m| InputError::new(&self.name, m))?;
                let config = deserialize_run(&table).map_err(|m| {
                    InputError::new(&self.name, format!("variant `{}`: {m}", v.name))
                })?;
                config.validate().map_err(|m| {
                    InputError::new(&self.name, format!("variant `{}`: {m}", v.name))
                })?;
                runs.push(RunSpec {
                    run_id: format!("{}-s{seed}", v.name),
                    variant: v.name.clone(),
                    seed,
                    config,
                });
            }
        }
        Ok(runs)
    }

    /// The grid as resolved (overrides folded into the base), for `grid.toml`.
    pub fn to_toml(&self) -> String {
        let mut top = Table::new();
        top.insert("name".into(), Value::String(self.name.clone()));
        if !self.description.is_empty() {
            top.insert(
                "description".into(),
                Value::String(self.description.clone()),
            );
        }
        top.insert(
            "seeds".into(),
            Value::Array(
                self.seeds
                    .iter()
                    .map(|&s| Value::Integer(s as i64))
                    .collect(),
            ),
        );
        let mut base = self.base.clone();
        for o in &self.overrides {
            // Checked in `with_overrides`.
            let _ = set_path(&mut base, &o.path, o.value.clone());
        }
        top.insert("base".into(), Value::Table(base));
        let variants = self
            .variants
            .iter()
            .map(|v| {
                let mut t = Table::new();
                t.insert("name".into(), Value::String(v.name.clone()));
                if !v.description.is_empty() {
                    t.insert("description".into(), Value::String(v.description.clone()));
                }
                merge(&mut t, &v.overrides);
                Value::Table(t)
            })
            .collect();
        top.insert("variant".into(), Value::Array(variants));
        toml::to_string_pretty(&top).unwrap_or_default()
    }
}

/// Reads a single run config file (for `config.toml` next to a run's logs).
pub fn load_run_config(path: &Path) -> Result<RunConfig, InputError> {
    let src = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| InputError::new(&src, format!("cannot read: {e}")))?;
    let table: Table = toml::from_str(&text).map_err(|e| toml_error(&src, &text, &e))?;
    let run = deserialize_run(&table).map_err(|m| InputError::new(&src, m))?;
    run.validate().map_err(|m| InputError::new(&src, m))?;
    Ok(run)
}

/// Longest grid or variant name: a folder name (run folders add `-s<seed>`, up to 22
/// characters, and temporary names a few more) must stay within the file systems' 255 bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A grid or variant name is also a folder name: letters, digits, '-', '_' and '.', not
/// starting with '.' (so never `.` or `..`, which would leave `--out`), at most
/// [`MAX_NAME_LEN`] characters.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn first_duplicate(seeds: &[u64]) -> Option<u64> {
    seeds
        .iter()
        .enumerate()
        .find(|&(i, s)| seeds[..i].contains(s))
        .map(|(_, &s)| s)
}

fn parse_seeds(v: &Value) -> Result<Vec<u64>, String> {
    let Value::Array(items) = v else {
        return Err(format!(
            "expected an array of non-negative integers, got {v}"
        ));
    };
    let mut seeds = Vec::new();
    for item in items {
        match item {
            Value::Integer(i) if *i >= 0 => seeds.push(*i as u64),
            other => return Err(format!("expected non-negative integers, got {other}")),
        }
    }
    if seeds.is_empty() {
        return Err("expected at least one seed".into());
    }
    if let Some(d) = first_duplicate(&seeds) {
        return Err(format!(
            "seed {d} appears twice; each seed is one run per variant"
        ));
    }
    Ok(seeds)
}

/// One line for a TOML syntax error: file, line, and the parser's message.
fn toml_error(src: &str, text: &str, e: &toml::de::Error) -> InputError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
    let msg = e.message().trim().to_string();
    match line {
        Some(l) => InputError::new(format!("{src}:{l}"), format!("invalid TOML: {msg}")),
        None => InputError::new(src, format!("invalid TOML: {msg}")),
    }
}

/// The `[[variant]]` tables of a grid (none: the base alone, as variant `base`). Names must
/// be valid, unique and not the baseline's.
fn parse_variants(value: Option<Value>, src: &str) -> Result<Vec<Variant>, InputError> {
    let items = match value {
        None => {
            return Ok(vec![Variant {
                name: "base".into(),
                description: String::new(),
                overrides: Table::new(),
            }])
        }
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(InputError::new(
                src,
                "field `variant`: an empty list trains nothing; give [[variant]] tables, or none to train the base alone",
            ))
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(InputError::new(
                src,
                "field `variant`: expected [[variant]] tables",
            ))
        }
    };
    let mut variants: Vec<Variant> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let Value::Table(mut t) = item else {
            return Err(InputError::new(
                src,
                format!("variant #{}: expected a [[variant]] table", i + 1),
            ));
        };
        let vname = match t.remove("name") {
            Some(Value::String(s)) if valid_name(&s) => s,
            _ => {
                return Err(InputError::new(
                    src,
                    format!(
                        "variant #{}: field `name` must be a non-empty name of at most {MAX_NAME_LEN} letters, digits, '-', '_' or '.' not starting with '.'",
                        i + 1
                    ),
                ))
            }
        };
        if vname == BASELINE_VARIANT {
            return Err(InputError::new(
                src,
                format!(
                    "variant #{}: the name `{BASELINE_VARIANT}` is the untrained-encoder baseline's, which every grid adds; choose another",
                    i + 1
                ),
            ));
        }
        if variants.iter().any(|v| v.name == vname) {
            return Err(InputError::new(
                src,
                format!("variant `{vname}` appears twice; variant names must be unique"),
            ));
        }
        let description = match t.remove("description") {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        variants.push(Variant {
            name: vname,
            description,
            overrides: t,
        });
    }
    Ok(variants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeadNorm, MethodName};

    const GRID: &str = r#"
name = "g"
seeds = [3, 4]
[base]
method.name = "byol"
model.projector.norm = "bn"
[[variant]]
name = "a"
[[variant]]
name = "b"
model.projector.norm = "none"
optim.lr = 0.02
"#;

    #[test]
    fn expands_variants_times_seeds_in_order() {
        let g = Grid::parse(GRID, "g.toml").expect("valid grid");
        let runs = g.expand().expect("expands");
        let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["a-s3", "a-s4", "b-s3", "b-s4"]);
        assert_eq!(runs[0].config.model.projector.norm, HeadNorm::Bn);
        assert_eq!(runs[2].config.model.projector.norm, HeadNorm::None);
        assert_eq!(runs[2].config.optim.lr, 0.02);
        assert_eq!(runs[0].config.optim.lr, 0.8, "default from code");
        assert_eq!(runs[3].config.train.seed, 4);
        assert_eq!(runs[1].config.method.name, MethodName::Byol);
    }

    #[test]
    fn set_overrides_every_run_and_only_filters() {
        let g = Grid::parse(GRID, "g.toml")
            .and_then(|g| {
                g.with_overrides(&["optim.lr=0.5".into(), "model.predictor.norm=ln".into()])
            })
            .and_then(|g| g.only(&["b".into()]))
            .expect("valid");
        let runs = g
            .with_seeds(vec![9])
            .expect("one seed")
            .expand()
            .expect("expands");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].run_id, "b-s9");
        assert_eq!(runs[0].config.optim.lr, 0.5);
        assert_eq!(runs[0].config.model.predictor.norm, HeadNorm::Ln);
    }

    #[test]
    fn resolved_grid_round_trips() {
        let g = Grid::parse(GRID, "g.toml")
            .and_then(|g| g.with_overrides(&["train.epochs=2".into()]))
            .expect("valid");
        let again = Grid::parse(&g.to_toml(), "resolved").expect("resolved grid parses");
        assert_eq!(again.expand().expect("a"), g.expand().expect("b"));
    }

    fn err(text: &str) -> String {
        Grid::parse(text, "bad.toml")
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn bad_input_names_file_and_field() {
        let e = err("name = \"g\"\n[base\n");
        assert!(e.starts_with("bad.toml:2: invalid TOML"), "{e}");
        let e = err("name = \"g\"\n[base]\nmodel.projector.nrom = \"bn\"\n");
        assert!(
            e.contains("bad.toml") && e.contains("model.projector") && e.contains("nrom"),
            "{e}"
        );
        let e = err("name = \"g\"\n[base]\nmodel.projector.norm = \"xx\"\n");
        assert!(
            e.contains("model.projector.norm") && e.contains("expected one of"),
            "{e}"
        );
        let e = err("name = \"g\"\n[base]\nmethod.name = \"byoll\"\n");
        assert!(e.contains("method.name") && e.contains("byol"), "{e}");
        let e = err("name = \"g\"\n[base]\noptim.name = \"adam\"\n");
        assert!(e.contains("optim.name") && e.contains("lars"), "{e}");
        let e = err("name = \"g\"\n[[variant]]\nname = \"v\"\noptim.lr = -0.1\n");
        assert!(
            e.contains("variant `v`") && e.contains("optim.lr must be a positive"),
            "{e}"
        );
        let e = err("name = \"g\"\nseed = [1]\n");
        assert!(e.contains("unknown top-level field `seed`"), "{e}");
        let e = err("[base]\n");
        assert!(e.contains("missing field `name`"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn set_on_unknown_field_blames_the_flag() {
        let g = Grid::parse(GRID, "g.toml").expect("valid");
        let e = g
            .clone()
            .with_overrides(&["model.projector.widht=3".into()])
            .expect_err("unknown field")
            .to_string();
        assert!(e.starts_with("--set model.projector.widht=3:"), "{e}");
        assert!(e.contains("widht"), "{e}");
        let e = g
            .clone()
            .with_overrides(&["optim.lr".into()])
            .expect_err("no value")
            .to_string();
        assert!(e.contains("expected key.path=value"), "{e}");
        let e = g
            .with_overrides(&["optim.lr=fast".into()])
            .expect_err("wrong type")
            .to_string();
        assert!(e.contains("optim.lr") && e.contains("fast"), "{e}");
    }
}
