//! `fp8 sweep`: run a grid of training runs in parallel worker processes, here or, with `--slurm`,
//! as a Slurm job array plus a collect job (see docs/slurm.md).

use crate::progress::SweepProgress;
use anyhow::Context;
use fp8_slurm::{
    render_array_script, render_collect_script, submit, write_scripts, Sbatch, SlurmOptions,
    SweepJob, TimeLimit,
};
use fp8_train::sweep::{run_workers, write_results, Shard, SweepFile};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Sweep file (RON): `recipes`, `learning_rates`, `seeds`, `steps`, and optionally `models`,
    /// `data`, `baseline`, `train` (other `fp8 train` options) and `slurm` (options of `--slurm`).
    pub sweep: PathBuf,
    /// Worker processes running at once (default: the number of CPU cores on the CPU; 1 when the
    /// sweep's `train.device` is a GPU, which the workers would otherwise share).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run only grid points whose index is i modulo n (`i/n`), for cluster job arrays. A shard of
    /// several appends to OUT/results.jsonl but leaves rewriting it to `--collect`.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Output directory (default `sweeps/out/<sweep file stem>`). Runners sharing it (shards, a
    /// second `fp8 sweep`) claim each point before running it, so none runs twice.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run nothing: rewrite OUT/results.jsonl from every finished run of the grid, with complete
    /// loss gaps (the collect step after sharded runs; `fp8 report OUT` then writes the report).
    #[arg(long, conflicts_with_all = ["shard", "jobs", "slurm"])]
    pub collect: bool,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// `--slurm` and the cluster options; each `--slurm-*` flag overrides the same field of the sweep
/// file's `slurm:` section.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Slurm (docs/slurm.md)")]
pub struct SlurmArgs {
    /// Run nothing here: print the sbatch scripts of a job array (task i runs
    /// `fp8 sweep FILE --out OUT --shard i/N`) and of a collect job (`--dependency=afterany`, runs
    /// `fp8 sweep FILE --out OUT --collect` and `fp8 report OUT`). OUT must be on a file system
    /// every node sees.
    #[arg(long, conflicts_with = "shard")]
    pub slurm: bool,
    /// With --slurm: write the scripts to OUT/slurm/, submit both with sbatch, print the job ids.
    /// Re-submitting is safe: finished points are skipped, a killed task's point resumes.
    #[arg(long, requires = "slurm")]
    pub submit: bool,
    /// Partition of both jobs (`#SBATCH --partition`).
    #[arg(long, value_name = "NAME", requires = "slurm")]
    pub slurm_partition: Option<String>,
    /// Account charged for both jobs (`#SBATCH --account`).
    #[arg(long, value_name = "NAME", requires = "slurm")]
    pub slurm_account: Option<String>,
    /// Time limit of each array task and of the collect job: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
    /// or INFINITE.
    #[arg(long, value_name = "TIME", requires = "slurm")]
    pub slurm_time: Option<TimeLimit>,
    /// CPUs per array task (default 1).
    #[arg(long, value_name = "N", requires = "slurm")]
    pub slurm_cpus_per_task: Option<u32>,
    /// GPUs per array task (default: none requested).
    #[arg(long, value_name = "N", requires = "slurm")]
    pub slurm_gpus_per_task: Option<u32>,
    /// Array tasks, i.e. shards (default and maximum: one per grid point).
    #[arg(long, value_name = "N", requires = "slurm")]
    pub slurm_array_size: Option<u32>,
    /// Array tasks running at once (`--array=0-K%N`; default: as many as the cluster allows).
    #[arg(long, value_name = "N", requires = "slurm")]
    pub slurm_max_concurrent: Option<u32>,
    /// Job name of the array (default fp8-sweep); the collect job is NAME-collect.
    #[arg(long, value_name = "NAME", requires = "slurm")]
    pub slurm_job_name: Option<String>,
    /// One more `#SBATCH` option for both jobs, e.g. `--slurm-extra=--qos=high`; repeatable, added
    /// after the sweep file's `extra` lines.
    #[arg(
        long,
        value_name = "OPTION",
        requires = "slurm",
        allow_hyphen_values = true
    )]
    pub slurm_extra: Vec<String>,
}

impl SlurmArgs {
    fn options(&self) -> SlurmOptions {
        SlurmOptions {
            job_name: self.slurm_job_name.clone(),
            partition: self.slurm_partition.clone(),
            account: self.slurm_account.clone(),
            time: self.slurm_time,
            cpus_per_task: self.slurm_cpus_per_task,
            gpus_per_task: self.slurm_gpus_per_task,
            array_size: self.slurm_array_size,
            max_concurrent: self.slurm_max_concurrent,
            extra: self.slurm_extra.clone(),
        }
    }
}

/// The cluster options of a `--slurm` run: the sweep file's section, overridden by the flags,
/// checked.
pub fn slurm_options(sweep: &SweepFile, flags: &SlurmArgs) -> anyhow::Result<SlurmOptions> {
    let opts = sweep
        .slurm
        .clone()
        .unwrap_or_default()
        .merged(&flags.options());
    opts.validate()?;
    Ok(opts)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sweep = SweepFile::from_file(&args.sweep)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("sweeps/out").join(args.sweep.file_stem().unwrap_or_default())
    });
    if args.collect {
        return collect(&sweep, &out);
    }
    if args.slurm.slurm {
        return slurm(&args, &sweep, &out);
    }
    let jobs = args.jobs.unwrap_or_else(|| sweep.default_jobs());
    let exe = std::env::current_exe()?;
    let shard = args.shard.unwrap_or(Shard::all());
    let report = run_workers(&sweep, &out, shard, jobs, &exe, &mut SweepProgress)?;
    eprintln!(
        "sweep: {} finished now, {} were already done, {} failed, {} left to other runners, {} \
         duplicate(s) dropped; results in {}",
        report.finished,
        report.skipped,
        report.failed.len(),
        report.held_elsewhere,
        report.duplicates,
        out.join("results.jsonl").display()
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--collect`: results.jsonl from every finished point.
fn collect(sweep: &SweepFile, out: &Path) -> anyhow::Result<ExitCode> {
    let grid = sweep.grid(out)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let finished = write_results(&grid, out)?;
    fp8_train::sweep_tb::write_tensorboard(&grid, out)?;
    eprintln!(
        "collect: {finished} of the grid's {} runs finished; wrote {}",
        grid.points.len(),
        out.join("results.jsonl").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `--slurm [--submit]`: render the two scripts; print them, or write and submit them.
fn slurm(args: &Args, sweep: &SweepFile, out: &Path) -> anyhow::Result<ExitCode> {
    let opts = slurm_options(sweep, &args.slurm)?;
    // Expanding the grid checks every point (recipes, models, options) before anything is
    // submitted, and sizes the array.
    let grid = sweep.grid(out)?;
    let workdir = std::env::current_dir().context("reading the current directory")?;
    let exe = std::env::current_exe().context("locating the fp8 executable")?;
    let job = SweepJob::new(
        &exe,
        &args.sweep,
        out,
        &workdir,
        opts.array_tasks(grid.points.len()),
    )?;
    let utf8 = |what: &str, p: &Path| {
        p.to_str()
            .map(str::to_owned)
            .with_context(|| format!("{what} {} is not valid UTF-8", p.display()))
    };
    let (sweep_file, out_dir) = (
        utf8("sweep file", &job.sweep_file)?,
        utf8("output directory", &job.out_dir)?,
    );
    let merge: [&str; 5] = ["sweep", &sweep_file, "--out", &out_dir, "--collect"];
    let array = render_array_script(&opts, &job)?;
    let collect = render_collect_script(&opts, &job, &merge)?;
    if !args.slurm.submit {
        print!("{array}\n# ---- collect job: sbatch --dependency=afterany:<array job id> ----\n{collect}");
        return Ok(ExitCode::SUCCESS);
    }
    let files = write_scripts(&job, &array, &collect)?;
    let ids = submit(&Sbatch::default(), &files)?;
    println!("array job {}", ids.array);
    println!("collect job {}", ids.collect);
    eprintln!(
        "sweep: submitted {} grid points as {} array tasks (job {}) and the collect job {} \
         (afterany:{}); scripts and job output in {}",
        grid.points.len(),
        job.tasks,
        ids.array,
        ids.collect,
        ids.array.id,
        job.slurm_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(["sweep", "s.ron"].into_iter().chain(flags.iter().copied()))
            .map(|c| c.args)
    }

    fn sweep_with(section: &str) -> SweepFile {
        let text = format!(
            "(recipes: [\"fp32.ron\"], learning_rates: [1e-3], seeds: [0], steps: 1, slurm: {section})"
        );
        fp8_core::recipe::ron_options().from_str(&text).unwrap()
    }

    #[test]
    fn flags_override_the_sweep_files_section() {
        let sweep = sweep_with(
            r#"(partition: "cpu", account: "proj42", time: "10", cpus_per_task: 2,
                extra: ["--qos=low"])"#,
        );
        let args = parse(&[
            "--slurm",
            "--slurm-partition",
            "gpu",
            "--slurm-time",
            "1:30:00",
            "--slurm-gpus-per-task",
            "1",
            "--slurm-extra",
            "--mem=4G",
            "--slurm-extra=--exclusive",
        ])
        .unwrap();
        let o = slurm_options(&sweep, &args.slurm).unwrap();
        assert_eq!(
            o,
            SlurmOptions {
                partition: Some("gpu".into()),
                account: Some("proj42".into()),
                time: Some(TimeLimit::Seconds(5400)),
                cpus_per_task: Some(2),
                gpus_per_task: Some(1),
                extra: vec!["--qos=low".into(), "--mem=4G".into(), "--exclusive".into()],
                ..Default::default()
            }
        );
        // No section and no flags: the cluster's defaults.
        let none: SweepFile = fp8_core::recipe::ron_options()
            .from_str("(recipes: [\"fp32.ron\"], learning_rates: [1e-3], seeds: [0], steps: 1)")
            .unwrap();
        assert_eq!(
            slurm_options(&none, &parse(&["--slurm"]).unwrap().slurm).unwrap(),
            SlurmOptions::default()
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        // From a flag: refused by the parser (exit code 2), naming the flag and the value.
        let e = parse(&["--slurm", "--slurm-time", "1:75:00"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--slurm-time") && e.contains("1:75:00"), "{e}");
        // Checked after merging: a 0 from a flag, or a bad name from the file.
        let args = parse(&["--slurm", "--slurm-cpus-per-task", "0"]).unwrap();
        let e = slurm_options(&sweep_with("()"), &args.slurm)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cpus_per_task") && e.contains("`0`"), "{e}");
        let e = slurm_options(&sweep_with(r#"(partition: "a b")"#), &args.slurm)
            .unwrap_err()
            .to_string();
        assert!(e.contains("partition") && e.contains("`a b`"), "{e}");
        // A file field Slurm does not know fails with the file's own error.
        let e = fp8_core::recipe::ron_options()
            .from_str::<SweepFile>(
                "(recipes: [\"a.ron\"], learning_rates: [1e-3], seeds: [0], steps: 1, slurm: (gpus: 2))",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpus"), "{e}");
    }

    #[test]
    fn slurm_flags_need_slurm_and_collect_stands_alone() {
        for flags in [
            &["--submit"][..],
            &["--slurm-partition", "gpu"],
            &["--slurm", "--shard", "0/2"],
            &["--collect", "--shard", "0/2"],
            &["--collect", "--slurm"],
        ] {
            assert!(parse(flags).is_err(), "{flags:?}");
        }
        assert!(parse(&["--slurm", "--submit"]).unwrap().slurm.submit);
        assert!(parse(&["--collect"]).unwrap().collect);
    }
}
