//! One error type for everything a user can get wrong. Messages name the file, the line and
//! the field, and say what was expected; the CLI prints them on one line and exits non-zero.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A problem file that cannot be used: `file:line: field: message`.
    #[error("{file}:{line}: `{field}`: {message}")]
    Spec {
        file: String,
        line: usize,
        field: String,
        message: String,
    },
    /// A file that cannot be read or written.
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    /// A command-line value that makes no sense for this problem.
    #[error("{0}")]
    Input(String),
    /// A variational run whose energy stopped being finite.
    #[error("{0}")]
    Diverged(String),
    /// Processes of a parallel run that disagree or cannot work together.
    #[error("{0}")]
    Parallel(String),
    /// A failure inside the tensor library (device, shape or allocation).
    #[error("tensor computation failed: {0}")]
    Tensor(String),
    /// A computation that would not fit in memory, refused before allocating.
    #[error("{what} needs {needed} bytes ({needed_gib:.2} GiB) but only {available} bytes ({available_gib:.2} GiB) are available")]
    Memory {
        what: String,
        needed: u64,
        available: u64,
        needed_gib: f64,
        available_gib: f64,
    },
}

impl Error {
    pub fn memory(what: impl Into<String>, needed: u64, available: u64) -> Self {
        let gib = (1u64 << 30) as f64;
        Error::Memory {
            what: what.into(),
            needed,
            available,
            needed_gib: needed as f64 / gib,
            available_gib: available as f64 / gib,
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Tensor(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
