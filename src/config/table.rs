//! Editing run configs as TOML tables: `--set key.path=value` overrides, the deep merge of a
//! variant over the base, and deserialization that names the field a problem is in.

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::error::InputError;
use super::run::RunConfig;

/// A `--set key.path=value` override.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The flag as the user wrote it, for error messages.
    pub flag: String,
    pub path: Vec<String>,
    pub value: Value,
}

impl Override {
    /// Parses `key.path=value`; the value is TOML (`0.1`, `true`, `"bn"`, `[1, 2]`) or, if it
    /// does not parse as TOML, a bare string (`bn`).
    pub fn parse(flag: &str) -> Result<Self, InputError> {
        let src = format!("--set {flag}");
        let Some((key, raw)) = flag.split_once('=') else {
            return Err(InputError::new(src, "expected key.path=value"));
        };
        let path: Vec<String> = key
            .trim()
            .split('.')
            .map(|s| s.trim().to_string())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(InputError::new(
                src,
                format!("`{key}` is not a dotted key path like model.projector.norm"),
            ));
        }
        let raw = raw.trim();
        let value = match toml::from_str::<Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").unwrap_or(Value::String(raw.to_string())),
            Err(_) => Value::String(raw.to_string()),
        };
        Ok(Self {
            flag: src,
            path,
            value,
        })
    }

    pub(super) fn apply(&self, table: &mut Table) -> Result<(), InputError> {
        set_path(table, &self.path, self.value.clone())
            .map_err(|m| InputError::new(self.flag.clone(), m))
    }
}

/// Deserializes a table into `T`, reporting `field.path: problem` on error.
fn deserialize_with_path<T: DeserializeOwned>(table: &Table) -> Result<T, String> {
    let value = Value::Table(table.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let inner = inner.trim();
        if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("field `{path}`: {inner}")
        }
    })
}

pub(crate) fn deserialize_run(table: &Table) -> Result<RunConfig, String> {
    deserialize_with_path(table)
}

/// Deep merge: tables merge key by key, anything else replaces.
pub(super) fn merge(dst: &mut Table, src: &Table) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Table(d)), Value::Table(s)) => merge(d, s),
            _ => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

pub(super) fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key path")?;
    let mut t = table;
    for (i, key) in parents.iter().enumerate() {
        let entry = t
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        t = match entry {
            Value::Table(inner) => inner,
            _ => {
                return Err(format!(
                    "`{}` is a value, not a table",
                    path[..=i].join(".")
                ))
            }
        };
    }
    t.insert(last.clone(), value);
    Ok(())
}
