//! Printing that survives a closed stdout or stderr (`collapse-lab run … 2>&1 | head -1`):
//! `println!` panics when a write fails (EPIPE), which abandoned a grid with runs pending.
//! These macros write and forget a failed write, so the grid goes on and writes its tables.

/// `println!` to stdout that ignores a closed pipe.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` to stdout that ignores a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` to stderr that ignores a closed pipe.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
