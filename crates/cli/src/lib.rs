//! The `fp8` command line: training, sweeps, reports and format tools.
//!
//! The library half holds everything the subcommands share (data, logging, the training loop)
//! so integration tests can drive it without spawning the binary.

pub mod cmd;
