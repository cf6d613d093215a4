//! The one error type for bad user input: the CLI maps it to exit code 2.

use std::fmt;

/// Bad input from the user (a file, a field, a flag, a record). Its message is one line that
/// names the source and what was expected; the CLI prints it and exits with code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// A file path, a `--flag`, or another name the user will recognise.
    pub source: String,
    pub message: String,
}

impl InputError {
    pub fn new(source: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep it on one line whatever the underlying library printed.
        let one_line = self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        write!(f, "{}: {}", self.source, one_line)
    }
}

impl std::error::Error for InputError {}
