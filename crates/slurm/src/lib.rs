//! Running an fp8 sweep on a Slurm cluster, as a job array plus a collect job.
//!
//! `fp8 sweep FILE --out DIR --slurm` turns a sweep into two sbatch scripts:
//!
//! - the **array** ([`render_array_script`]): task `i` of `N` runs
//!   `fp8 sweep FILE --out DIR --shard i/N --jobs 1`, i.e. the grid points whose index is `i`
//!   modulo `N`, one at a time;
//! - the **collect job** ([`render_collect_script`]): `fp8 report DIR` after a merge command
//!   (`fp8 sweep --slurm` passes `sweep FILE --out DIR --collect`, which rewrites
//!   `results.jsonl` from every finished run), submitted with `--dependency=afterany:<array
//!   id>` so that it runs once every task has ended, however each ended, and a cancelled task
//!   still leaves a report of what finished.
//!
//! `--slurm --submit` writes both to `DIR/slurm/` ([`write_scripts`]) and submits them
//! ([`submit`]), printing the two job ids. The tasks' and collect job's output files go to
//! `DIR/slurm/` too.
//!
//! Cluster options ([`SlurmOptions`]: partition, account, time limit, CPUs and GPUs per task, array
//! size and concurrency, extra `#SBATCH` lines) come from the sweep file's `slurm:` section and
//! from flags, flags winning ([`SlurmOptions::merged`]).
//!
//! Safety on a shared file system (a killed task's point is resumed, a finished point is never
//! run twice, a finished sweep re-submitted does nothing) is the sweep runner's job, not this
//! crate's: every task only runs `fp8 sweep --shard`, which skips finished points and resumes
//! interrupted ones. Re-submitting is therefore always safe, and is the way to finish a sweep whose
//! tasks were killed or timed out.
//!
//! How `fp8 sweep --slurm [--submit]` uses it:
//!
//! ```no_run
//! use fp8_slurm::{render_array_script, render_collect_script, submit, write_scripts};
//! use fp8_slurm::{Sbatch, SlurmOptions, SweepJob};
//! use std::path::Path;
//!
//! # fn main() -> Result<(), fp8_slurm::Error> {
//! let from_file = SlurmOptions::default(); // the sweep file's `slurm:` section
//! let from_flags = SlurmOptions { partition: Some("gpu".into()), ..Default::default() };
//! let opts = from_file.merged(&from_flags);
//! opts.validate()?;
//! let grid_points = 48;
//! let job = SweepJob::new(
//!     Path::new("/opt/fp8/bin/fp8"), // std::env::current_exe()
//!     Path::new("sweeps/paper.ron"),
//!     Path::new("sweeps/out/paper"),
//!     Path::new("/home/me/fp8"), // std::env::current_dir()
//!     opts.array_tasks(grid_points),
//! )?;
//! let array = render_array_script(&opts, &job)?;
//! let collect = render_collect_script(&opts, &job, &[])?;
//! // --slurm alone prints `array` and `collect`; --submit:
//! let ids = submit(&Sbatch::default(), &write_scripts(&job, &array, &collect)?)?;
//! println!("array job {}, collect job {}", ids.array, ids.collect);
//! # Ok(())
//! # }
//! ```
//!
//! The crate has no `burn` dependency and runs no Slurm command except `sbatch` in [`submit`]. Its
//! real-cluster test (`tests/real_slurm.rs`) starts a one-node cluster on localhost with
//! `scripts/slurm/cluster.sh`, submits, kills a task, re-submits and checks that every point ran
//! exactly once.

mod error;
pub mod options;
pub mod script;
pub mod submit;

pub use error::Error;
pub use options::{SlurmOptions, TimeLimit};
pub use script::{render_array_script, render_collect_script, SweepJob};
pub use submit::{submit, write_scripts, JobId, Sbatch, ScriptFiles, Submitted};
