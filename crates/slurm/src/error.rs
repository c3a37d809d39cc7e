//! Errors of this crate: each names what was wrong (the option, path or command) and why.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Slurm option with a value Slurm (or a safe `#SBATCH` line) would not take.
    #[error("slurm option `{option}` = `{value}`: expected {allowed}")]
    Option {
        option: &'static str,
        value: String,
        allowed: &'static str,
    },
    /// A path that cannot be written into the script.
    #[error("{what} `{path}`: {why}")]
    Path {
        what: &'static str,
        path: PathBuf,
        why: &'static str,
    },
    /// A file the scripts are written to.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `sbatch` could not be started, failed, or printed no job id.
    #[error("`{command}` {problem}")]
    Command { command: String, problem: String },
}

impl Error {
    pub(crate) fn option(option: &'static str, value: &str, allowed: &'static str) -> Self {
        Error::Option {
            option,
            value: value.to_owned(),
            allowed,
        }
    }
}
