//! The two sbatch scripts of a sweep: the job array that runs the shards, and the collect job that
//! writes the report once the array is over.
//!
//! Paths go into two kinds of places. In the shell part of the script they are shell-quoted
//! ([`shlex::try_quote`]), so any UTF-8 path works. In `#SBATCH --output="…"` lines, which sbatch
//! reads itself with its own, simpler rules, the output directory is double-quoted and may not
//! contain `"`, `\`, `%` (Slurm's file-name pattern character) or control characters. Every path
//! must be absolute: Slurm may start the job on another node, in another directory.

use crate::options::SlurmOptions;
use crate::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the scripts run: `FP8 sweep SWEEP_FILE --out OUT_DIR --shard i/TASKS --jobs 1` in
/// `workdir`, then `FP8 report OUT_DIR`.
#[derive(Clone, Debug)]
pub struct SweepJob {
    /// The `fp8` executable the tasks run.
    pub fp8_exe: PathBuf,
    pub sweep_file: PathBuf,
    pub out_dir: PathBuf,
    /// Working directory of both jobs: the sweep file's relative paths (its recipes) resolve here,
    /// as they do for a local `fp8 sweep` started in this directory.
    pub workdir: PathBuf,
    /// Array tasks, i.e. shards ([`SlurmOptions::array_tasks`]).
    pub tasks: u32,
}

impl SweepJob {
    /// A job whose relative paths (as typed on the command line: `--out sweeps/out/paper`) are
    /// taken relative to `workdir`, normally the current directory, which must be absolute.
    pub fn new(
        fp8_exe: &Path,
        sweep_file: &Path,
        out_dir: &Path,
        workdir: &Path,
        tasks: u32,
    ) -> Result<SweepJob, Error> {
        absolute_utf8("working directory", workdir)?;
        Ok(SweepJob {
            fp8_exe: workdir.join(fp8_exe),
            sweep_file: workdir.join(sweep_file),
            out_dir: workdir.join(out_dir),
            workdir: workdir.to_owned(),
            tasks,
        })
    }

    /// Directory of the scripts and of the jobs' output files: `OUT_DIR/slurm`.
    pub fn slurm_dir(&self) -> PathBuf {
        self.out_dir.join("slurm")
    }
}

/// The job array: task `i` runs shard `i/tasks` of the grid with one worker.
///
/// The shard count is written into the script rather than read from `SLURM_ARRAY_TASK_COUNT`, so
/// that re-running a single task (`sbatch --array=2 array.sbatch`) still runs shard 2 of the
/// whole array, not shard 2 of 1.
pub fn render_array_script(opts: &SlurmOptions, job: &SweepJob) -> Result<String, Error> {
    opts.validate()?;
    if job.tasks == 0 {
        return Err(Error::option("array_size", "0", "a count of at least 1"));
    }
    let exe = shell_path("fp8 executable", &job.fp8_exe)?;
    let sweep = shell_path("sweep file", &job.sweep_file)?;
    let out = shell_path("output directory", &job.out_dir)?;
    let array = match opts.max_concurrent {
        Some(m) => format!("0-{}%{m}", job.tasks - 1),
        None => format!("0-{}", job.tasks - 1),
    };
    let mut s = header(
        "fp8 sweep as a Slurm job array: task i runs the grid points whose index is i modulo the task count.",
        opts.job_name(),
    );
    writeln!(s, "#SBATCH --array={array}").unwrap();
    resources(&mut s, opts, true);
    output_line(&mut s, job, "array-%A_%a.out")?;
    extra_lines(&mut s, opts);
    body_start(&mut s, job)?;
    s.push_str(
        ": \"${SLURM_ARRAY_TASK_ID:?not set: submit this script with sbatch, as a job array}\"\n",
    );
    writeln!(
        s,
        "exec {exe} sweep {sweep} --out {out} --shard \"$SLURM_ARRAY_TASK_ID/{}\" --jobs 1",
        job.tasks
    )
    .unwrap();
    Ok(s)
}

/// The collect job, to be submitted with `--dependency=afterany:<array id>`: it runs whether or
/// not every task succeeded, so a killed task still leaves a report of what finished.
///
/// `merge` are the arguments of an `fp8` command that runs before the report (e.g. one that
/// rewrites `results.jsonl` from every finished run); empty for none, since the tasks append their
/// results as they finish.
pub fn render_collect_script(
    opts: &SlurmOptions,
    job: &SweepJob,
    merge: &[&str],
) -> Result<String, Error> {
    opts.validate()?;
    let exe = shell_path("fp8 executable", &job.fp8_exe)?;
    let out = shell_path("output directory", &job.out_dir)?;
    let mut s = header(
        "fp8 sweep, collect job: the report of the array's results, once every task has ended.",
        &format!("{}-collect", opts.job_name()),
    );
    resources(&mut s, opts, false);
    output_line(&mut s, job, "collect-%j.out")?;
    extra_lines(&mut s, opts);
    body_start(&mut s, job)?;
    if !merge.is_empty() {
        let args = merge
            .iter()
            .map(|a| quote("merge argument", a))
            .collect::<Result<Vec<_>, _>>()?;
        writeln!(s, "{exe} {}", args.join(" ")).unwrap();
    }
    writeln!(s, "exec {exe} report {out}").unwrap();
    Ok(s)
}

fn header(what: &str, job_name: &str) -> String {
    format!(
        "#!/bin/bash\n# {what}\n# Written by `fp8 sweep --slurm`.\n#SBATCH --job-name={job_name}\n"
    )
}

/// CPUs and GPUs are per array task; the collect job needs one CPU and no GPU.
/// Each job (each array element) is one task: `--ntasks=1` also gives `--gpus-per-task` the
/// explicit task count Slurm requires of it.
fn resources(s: &mut String, opts: &SlurmOptions, array: bool) {
    let cpus = if array { opts.cpus_per_task() } else { 1 };
    writeln!(s, "#SBATCH --ntasks=1\n#SBATCH --cpus-per-task={cpus}").unwrap();
    if let (true, Some(g)) = (array, opts.gpus_per_task) {
        writeln!(s, "#SBATCH --gpus-per-task={g}").unwrap();
    }
    if let Some(p) = &opts.partition {
        writeln!(s, "#SBATCH --partition={p}").unwrap();
    }
    if let Some(a) = &opts.account {
        writeln!(s, "#SBATCH --account={a}").unwrap();
    }
    if let Some(t) = opts.time {
        writeln!(s, "#SBATCH --time={t}").unwrap();
    }
}

fn output_line(s: &mut String, job: &SweepJob, file: &str) -> Result<(), Error> {
    let dir = job.slurm_dir();
    let text = absolute_utf8("output directory", &dir)?;
    if text
        .chars()
        .any(|c| matches!(c, '"' | '\\' | '%') || c.is_control())
    {
        return Err(Error::Path {
            what: "output directory",
            path: job.out_dir.clone(),
            why: "sbatch's --output cannot name a directory with `\"`, `\\`, `%` or control characters; choose another --out",
        });
    }
    writeln!(s, "#SBATCH --output=\"{text}/{file}\"").unwrap();
    Ok(())
}

fn extra_lines(s: &mut String, opts: &SlurmOptions) {
    for line in &opts.extra {
        writeln!(s, "#SBATCH {line}").unwrap();
    }
}

fn body_start(s: &mut String, job: &SweepJob) -> Result<(), Error> {
    let workdir = shell_path("working directory", &job.workdir)?;
    writeln!(s, "set -euo pipefail\ncd {workdir}").unwrap();
    Ok(())
}

fn absolute_utf8<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, Error> {
    if !path.is_absolute() {
        return Err(Error::Path {
            what,
            path: path.to_owned(),
            why: "must be absolute (Slurm may start the job on another node, in another directory)",
        });
    }
    path.to_str().ok_or_else(|| Error::Path {
        what,
        path: path.to_owned(),
        why: "is not valid UTF-8",
    })
}

fn shell_path(what: &'static str, path: &Path) -> Result<String, Error> {
    quote(what, absolute_utf8(what, path)?)
}

fn quote(what: &'static str, text: &str) -> Result<String, Error> {
    shlex::try_quote(text)
        .map(|q| q.into_owned())
        .map_err(|_| Error::Path {
            what,
            path: PathBuf::from(text),
            why: "contains a NUL byte",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::TimeLimit;
    use std::process::Command;

    fn job(root: &Path) -> SweepJob {
        SweepJob {
            fp8_exe: root.join("bin/fp8"),
            sweep_file: root.join("sweeps/paper.ron"),
            out_dir: root.join("out/paper"),
            workdir: root.to_owned(),
            tasks: 4,
        }
    }

    fn full_options() -> SlurmOptions {
        SlurmOptions {
            job_name: Some("lr-sweep".into()),
            partition: Some("gpu".into()),
            account: Some("proj42".into()),
            time: Some(TimeLimit::Seconds(5400)),
            cpus_per_task: Some(4),
            gpus_per_task: Some(1),
            array_size: Some(4),
            max_concurrent: Some(2),
            extra: vec!["--qos=normal".into(), "--mem-per-cpu=2G".into()],
        }
    }

    #[test]
    fn array_script_with_every_option() {
        let s = render_array_script(&full_options(), &job(Path::new("/home/me/fp8"))).unwrap();
        let expected = [
            "#!/bin/bash",
            "# fp8 sweep as a Slurm job array: task i runs the grid points whose index is i modulo the task count.",
            "# Written by `fp8 sweep --slurm`.",
            "#SBATCH --job-name=lr-sweep",
            "#SBATCH --array=0-3%2",
            "#SBATCH --ntasks=1",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --partition=gpu",
            "#SBATCH --account=proj42",
            "#SBATCH --time=0-01:30:00",
            "#SBATCH --output=\"/home/me/fp8/out/paper/slurm/array-%A_%a.out\"",
            "#SBATCH --qos=normal",
            "#SBATCH --mem-per-cpu=2G",
            "set -euo pipefail",
            "cd /home/me/fp8",
            ": \"${SLURM_ARRAY_TASK_ID:?not set: submit this script with sbatch, as a job array}\"",
            "exec /home/me/fp8/bin/fp8 sweep /home/me/fp8/sweeps/paper.ron --out /home/me/fp8/out/paper --shard \"$SLURM_ARRAY_TASK_ID/4\" --jobs 1",
        ];
        assert_eq!(s.lines().collect::<Vec<_>>(), expected);
        assert!(s.ends_with('\n'));
    }

    #[test]
    fn array_script_with_defaults_leaves_the_rest_to_the_cluster() {
        let mut j = job(Path::new("/w"));
        j.tasks = 1;
        let s = render_array_script(&SlurmOptions::default(), &j).unwrap();
        let sbatch: Vec<_> = s.lines().filter(|l| l.starts_with("#SBATCH")).collect();
        assert_eq!(
            sbatch,
            [
                "#SBATCH --job-name=fp8-sweep",
                "#SBATCH --array=0-0",
                "#SBATCH --ntasks=1",
                "#SBATCH --cpus-per-task=1",
                "#SBATCH --output=\"/w/out/paper/slurm/array-%A_%a.out\"",
            ]
        );
        assert!(s.contains("--shard \"$SLURM_ARRAY_TASK_ID/1\" --jobs 1\n"));
    }

    #[test]
    fn collect_script_runs_the_merge_then_the_report_on_one_cpu() {
        let s = render_collect_script(
            &full_options(),
            &job(Path::new("/home/me/fp8")),
            &["sweep", "/home/me/fp8/sweeps/paper.ron", "--merge"],
        )
        .unwrap();
        let expected = [
            "#!/bin/bash",
            "# fp8 sweep, collect job: the report of the array's results, once every task has ended.",
            "# Written by `fp8 sweep --slurm`.",
            "#SBATCH --job-name=lr-sweep-collect",
            "#SBATCH --ntasks=1",
            "#SBATCH --cpus-per-task=1",
            "#SBATCH --partition=gpu",
            "#SBATCH --account=proj42",
            "#SBATCH --time=0-01:30:00",
            "#SBATCH --output=\"/home/me/fp8/out/paper/slurm/collect-%j.out\"",
            "#SBATCH --qos=normal",
            "#SBATCH --mem-per-cpu=2G",
            "set -euo pipefail",
            "cd /home/me/fp8",
            "/home/me/fp8/bin/fp8 sweep /home/me/fp8/sweeps/paper.ron --merge",
            "exec /home/me/fp8/bin/fp8 report /home/me/fp8/out/paper",
        ];
        assert_eq!(s.lines().collect::<Vec<_>>(), expected);
        let plain =
            render_collect_script(&SlurmOptions::default(), &job(Path::new("/w")), &[]).unwrap();
        assert_eq!(
            plain.lines().last(),
            Some("exec /w/bin/fp8 report /w/out/paper")
        );
    }

    #[test]
    fn new_makes_relative_paths_absolute_against_the_working_directory() {
        let j = SweepJob::new(
            Path::new("/opt/bin/fp8"),
            Path::new("sweeps/paper.ron"),
            Path::new("out/paper"),
            Path::new("/home/me/fp8"),
            5,
        )
        .unwrap();
        assert_eq!(j.fp8_exe, Path::new("/opt/bin/fp8"));
        assert_eq!(j.sweep_file, Path::new("/home/me/fp8/sweeps/paper.ron"));
        assert_eq!(j.out_dir, Path::new("/home/me/fp8/out/paper"));
        assert_eq!(j.slurm_dir(), Path::new("/home/me/fp8/out/paper/slurm"));
        assert_eq!(j.tasks, 5);
        let err = SweepJob::new(
            Path::new("fp8"),
            Path::new("s"),
            Path::new("o"),
            Path::new("rel"),
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("working directory `rel`"), "{err}");
    }

    #[test]
    fn relative_and_unsafe_paths_are_refused() {
        let mut j = job(Path::new("/w"));
        j.out_dir = "out".into();
        let err = render_array_script(&SlurmOptions::default(), &j)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output directory `out`") && err.contains("absolute"),
            "{err}"
        );
        for bad in ["/w/o\"ut", "/w/o%ut", "/w/o\\ut", "/w/o\nut"] {
            let mut j = job(Path::new("/w"));
            j.out_dir = bad.into();
            let err = render_array_script(&SlurmOptions::default(), &j).unwrap_err();
            assert!(err.to_string().contains("--output"), "{bad}: {err}");
        }
        let mut j = job(Path::new("/w"));
        j.fp8_exe = "fp8".into();
        let err = render_collect_script(&SlurmOptions::default(), &j, &[]).unwrap_err();
        assert!(err.to_string().contains("fp8 executable `fp8`"), "{err}");
        let bad_opts = SlurmOptions {
            cpus_per_task: Some(0),
            ..Default::default()
        };
        assert!(render_array_script(&bad_opts, &job(Path::new("/w"))).is_err());
        let mut j = job(Path::new("/w"));
        j.tasks = 0;
        assert!(render_array_script(&SlurmOptions::default(), &j).is_err());
    }

    /// The rendered script is valid bash, and the shell hands the fp8 executable exactly the
    /// paths it was given, however odd: run it with a stand-in `fp8` that prints its arguments.
    #[test]
    fn paths_with_spaces_quotes_and_dollars_reach_fp8_intact() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("it's a dir $HOME `x` & *");
        std::fs::create_dir_all(root.join("bin dir")).unwrap();
        let exe = root.join("bin dir/fp8 'stand-in'");
        std::fs::write(&exe, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
        make_executable(&exe);
        let j = SweepJob {
            fp8_exe: exe,
            sweep_file: root.join("my sweep's file.ron"),
            out_dir: root.join("out; rm -rf dir"),
            workdir: root.clone(),
            tasks: 3,
        };
        let array = render_array_script(&SlurmOptions::default(), &j).unwrap();
        let collect =
            render_collect_script(&SlurmOptions::default(), &j, &["merge", "a b"]).unwrap();
        let script = tmp.path().join("array.sbatch");
        for text in [&array, &collect] {
            std::fs::write(&script, text).unwrap();
            let n = Command::new("bash")
                .arg("-n")
                .arg(&script)
                .status()
                .unwrap();
            assert!(n.success(), "bash -n failed on:\n{text}");
        }

        std::fs::write(&script, &array).unwrap();
        let out = Command::new("bash")
            .arg(&script)
            .env("SLURM_ARRAY_TASK_ID", "2")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let args = String::from_utf8(out.stdout).unwrap();
        let sweep = j.sweep_file.to_str().unwrap();
        let dir = j.out_dir.to_str().unwrap();
        let expected = [
            "sweep", sweep, "--out", dir, "--shard", "2/3", "--jobs", "1",
        ];
        assert_eq!(args.lines().collect::<Vec<_>>(), expected);

        std::fs::write(&script, &collect).unwrap();
        let out = Command::new("bash").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let args = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            args.lines().collect::<Vec<_>>(),
            ["merge", "a b", "report", dir]
        );
    }

    #[test]
    fn the_array_script_refuses_to_run_outside_an_array() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = tmp.path().join("fp8");
        std::fs::write(&exe, "#!/bin/sh\necho ran\n").unwrap();
        make_executable(&exe);
        let j = SweepJob {
            fp8_exe: exe,
            sweep_file: tmp.path().join("s.ron"),
            out_dir: tmp.path().join("out"),
            workdir: tmp.path().to_owned(),
            tasks: 2,
        };
        let script = tmp.path().join("array.sbatch");
        std::fs::write(
            &script,
            render_array_script(&SlurmOptions::default(), &j).unwrap(),
        )
        .unwrap();
        let out = Command::new("bash")
            .arg(&script)
            .env_remove("SLURM_ARRAY_TASK_ID")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "fp8 ran outside an array");
        assert!(String::from_utf8_lossy(&out.stderr).contains("submit this script with sbatch"));
    }

    fn make_executable(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
