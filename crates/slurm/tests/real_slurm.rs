//! The Slurm machinery against a real Slurm: a one-node cluster on localhost
//! (`scripts/slurm/cluster.sh`, Debian's `slurm-wlm` and `munge`), a sweep submitted as a job array
//! plus an `afterany` collect job, one array task killed mid-point with `scancel`, the sweep
//! re-submitted, then re-submitted once more after it finished.
//!
//! Checked: every grid point finished exactly once (one result line, one `done` marker); the
//! killed point was resumed from its last step by the re-submission; each task ran only its shard;
//! the collect job ran after every array task had ended, also when one was cancelled (which
//! `afterok` would not do); re-submitting a finished sweep changed nothing; and the final report
//! equals that of a local run of the same sweep file. First of all, a submission to a partition
//! that does not exist must fail with an error naming the command and quoting sbatch.
//!
//! The sweep is run by a stand-in `fp8` (tests/standin-fp8.sh) that implements the shared-file-system
//! claim protocol the real `fp8 sweep --shard` must follow; [`Subject`] is all the test knows about
//! it, so swapping in the real executable means another `Subject`.
//!
//! Needs root and the Slurm and munge daemons and clients. Without them the test says why and
//! passes, unless `CI` is set: `.ci/run` installs them (scripts/slurm/install-deps.sh), so there a
//! missing piece fails the test.

use fp8_slurm::{
    render_array_script, render_collect_script, submit, write_scripts, Sbatch, ScriptFiles,
    SlurmOptions, Submitted, SweepJob,
};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The sweep under test: how to run it and how to read its output directory.
struct Subject {
    fp8_exe: PathBuf,
    sweep_file: PathBuf,
    /// Grid points, in grid order (shard `i/n` holds those whose index is `i` modulo `n`).
    points: Vec<String>,
}

impl Subject {
    /// The stand-in: 6 points of 6 steps of 0.2 s, so a task holds a point for about 1.2 s.
    fn standin(dir: &Path) -> Subject {
        let bin = dir.join("bin dir");
        std::fs::create_dir_all(&bin).unwrap();
        // A space in the directory tests the scripts' quoting. Not in the file name: Slurm's
        // proctrack/linuxproc misreads /proc/PID/stat when the command name has a space, and such a
        // process escapes `scancel` (seen with Slurm 22.05).
        let fp8_exe = bin.join("fp8");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin-fp8.sh");
        std::fs::copy(&source, &fp8_exe).unwrap();
        let points: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
        let sweep_file = dir.join("sweep file.txt");
        let lines: String = points.iter().map(|p| format!("{p} 6 0.2\n")).collect();
        std::fs::write(&sweep_file, lines).unwrap();
        Subject {
            fp8_exe,
            sweep_file,
            points,
        }
    }

    fn finished(&self, out: &Path, point: &str) -> bool {
        out.join("done").join(point).exists()
    }

    /// Steps done of a point that is not finished.
    fn progress(&self, out: &Path, point: &str) -> u32 {
        std::fs::read_to_string(out.join("progress").join(point))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Result lines by point.
    fn results(&self, out: &Path) -> BTreeMap<String, Vec<ResultLine>> {
        let mut by_point: BTreeMap<String, Vec<ResultLine>> = BTreeMap::new();
        let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap_or_default();
        for line in text.lines() {
            let r = ResultLine::parse(line);
            by_point.entry(r.point.clone()).or_default().push(r);
        }
        by_point
    }

    fn report(&self, out: &Path) -> String {
        std::fs::read_to_string(out.join("report.txt")).unwrap_or_default()
    }

    /// Start times (ns) of the collect jobs that ran, by job id.
    fn collect_starts(&self, out: &Path) -> BTreeMap<String, u128> {
        let text = std::fs::read_to_string(out.join("collect.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let (job, ns) = l.split_once(' ').unwrap();
                (job.to_owned(), ns.parse().unwrap())
            })
            .collect()
    }
}

/// One line of the stand-in's results.jsonl.
#[derive(Debug)]
struct ResultLine {
    point: String,
    array_job: String,
    task: String,
    resumed_from: u32,
    end_ns: u128,
}

impl ResultLine {
    fn parse(line: &str) -> ResultLine {
        let field = |key: &str| -> String {
            let start = line.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
            let rest = &line[start..];
            let end = rest.find([',', '}']).unwrap();
            rest[..end].trim_matches('"').to_owned()
        };
        ResultLine {
            point: field("point"),
            array_job: field("array_job"),
            task: field("task"),
            resumed_from: field("resumed_from").parse().unwrap(),
            end_ns: field("end_ns").parse().unwrap(),
        }
    }
}

const TOOLS: [&str; 10] = [
    "sbatch",
    "squeue",
    "scancel",
    "sinfo",
    "scontrol",
    "slurmctld",
    "slurmd",
    "munged",
    "munge",
    "runuser",
];

/// PATH with the sbin directories, where Debian puts the daemons.
fn path_with_sbin() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    std::env::join_paths(dirs).unwrap()
}

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisites(path: &OsString) -> Option<String> {
    let dirs: Vec<PathBuf> = std::env::split_paths(path).collect();
    let missing: Vec<&str> = TOOLS
        .into_iter()
        .filter(|t| !dirs.iter().any(|d| d.join(t).is_file()))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing {} (Debian: scripts/slurm/install-deps.sh installs slurm-wlm and munge)",
            missing.join(", ")
        ));
    }
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("must run as root: slurmctld and slurmd run as root".into());
    }
    None
}

/// The cluster, stopped on drop (also when an assertion fails).
struct Cluster {
    script: PathBuf,
    dir: PathBuf,
    env: Vec<(OsString, OsString)>,
}

impl Cluster {
    fn start(dir: &Path, path: &OsString) -> Cluster {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/slurm/cluster.sh");
        let cluster = Cluster {
            script,
            dir: dir.to_owned(),
            env: vec![
                ("PATH".into(), path.clone()),
                ("SLURM_CONF".into(), dir.join("etc/slurm.conf").into()),
            ],
        };
        let out = cluster
            .command("bash")
            .arg(&cluster.script)
            .arg("start")
            .arg(dir)
            .output();
        let out = out.expect("cannot run cluster.sh");
        assert!(
            out.status.success(),
            "cluster.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            printed.trim(),
            format!("export SLURM_CONF={}", dir.join("etc/slurm.conf").display())
        );
        cluster
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sbatch(&self) -> Sbatch {
        Sbatch {
            program: "sbatch".into(),
            env: self.env.clone(),
        }
    }

    /// Finished jobs, from jobcomp/filetxt: one `key=value` map per job or array task.
    fn finished_jobs(&self) -> Vec<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(self.dir.join("log/jobcomp.txt")).unwrap_or_default();
        text.lines()
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }

    fn job_record(&self, id: u64) -> Option<BTreeMap<String, String>> {
        let id = id.to_string();
        self.finished_jobs()
            .into_iter()
            .find(|j| j.get("JobId") == Some(&id))
    }

    fn array_records(&self, array: u64) -> Vec<BTreeMap<String, String>> {
        let id = array.to_string();
        let mut tasks: Vec<_> = self
            .finished_jobs()
            .into_iter()
            .filter(|j| j.get("ArrayJobId") == Some(&id))
            .collect();
        tasks.sort_by_key(|j| j["ArrayTaskId"].parse::<u32>().unwrap());
        tasks
    }

    /// Wait until the collect job of `ids` has ended (it ends after the whole array).
    fn wait_done(&self, ids: &Submitted, timeout: Duration) {
        wait_for(
            timeout,
            &format!("collect job {} to end", ids.collect),
            || self.job_record(ids.collect.id).is_some(),
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self
            .command("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
        if let Ok(out) = out {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const TASKS: u32 = 3;

#[test]
fn a_killed_task_is_resumed_by_resubmission_and_every_point_runs_once() {
    let path = path_with_sbin();
    if let Some(why) = missing_prerequisites(&path) {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but the real-Slurm test cannot run: {why}");
        }
        eprintln!("skipped: real_slurm: {why}");
        return;
    }
    // FP8_SLURM_TEST_KEEP=1 keeps the directory (cluster logs, job output) for a look afterwards.
    let tmp = tempfile::Builder::new()
        .prefix("fp8-real-slurm")
        .disable_cleanup(std::env::var_os("FP8_SLURM_TEST_KEEP").is_some())
        .tempdir()
        .unwrap();
    eprintln!("real_slurm: working in {}", tmp.path().display());
    let subject = Subject::standin(tmp.path());
    let cluster = Cluster::start(&tmp.path().join("cluster"), &path);

    // A local run of the same sweep, for the final comparison (it only sleeps: run it meanwhile).
    let local_out = tmp.path().join("local out");
    let sweep_file = subject.sweep_file.to_str().unwrap();
    let local_dir = local_out.to_str().unwrap();
    let local = Command::new(&subject.fp8_exe)
        .args([
            "sweep", sweep_file, "--out", local_dir, "--shard", "0/1", "--jobs", "1",
        ])
        .spawn()
        .unwrap();

    let out = tmp.path().join("sweep out");
    let opts = SlurmOptions {
        array_size: Some(TASKS),
        max_concurrent: Some(2),
        ..Default::default()
    };
    let job = SweepJob {
        fp8_exe: subject.fp8_exe.clone(),
        sweep_file: subject.sweep_file.clone(),
        out_dir: out.clone(),
        workdir: tmp.path().to_owned(),
        tasks: opts.array_tasks(subject.points.len()),
    };
    assert_eq!(job.tasks, TASKS);
    // 0. sbatch's own refusal reaches the caller, naming the command and quoting sbatch.
    let bad = SlurmOptions {
        partition: Some("no-such-partition".into()),
        ..opts.clone()
    };
    let bad_scripts = write_scripts(
        &job,
        &render_array_script(&bad, &job).unwrap(),
        &render_collect_script(&bad, &job, &[]).unwrap(),
    )
    .unwrap();
    let err = submit(&cluster.sbatch(), &bad_scripts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sbatch --parsable") && err.contains("array.sbatch"),
        "{err}"
    );
    assert!(
        err.contains("invalid partition specified: no-such-partition"),
        "{err}"
    );

    let scripts = write_scripts(
        &job,
        &render_array_script(&opts, &job).unwrap(),
        &render_collect_script(&opts, &job, &[]).unwrap(),
    )
    .unwrap();
    let submit_now = |scripts: &ScriptFiles| -> Submitted {
        let ids = submit(&cluster.sbatch(), scripts).unwrap();
        eprintln!("submitted array {} and collect {}", ids.array, ids.collect);
        ids
    };

    // 1. Submit; kill task 1 while it is in the middle of one of its points.
    let first = submit_now(&scripts);
    let shard1: Vec<&String> = subject
        .points
        .iter()
        .skip(1)
        .step_by(TASKS as usize)
        .collect();
    let mut victim = String::new();
    wait_for(
        Duration::from_secs(60),
        "task 1 to be part-way through a point",
        || {
            let busy = shard1
                .iter()
                .find(|p| !subject.finished(&out, p) && subject.progress(&out, p) >= 1);
            match busy {
                Some(p) => {
                    victim = (*p).clone();
                    true
                }
                None => false,
            }
        },
    );
    cluster.run("scancel", &[&format!("{}_1", first.array.id)]);
    cluster.wait_done(&first, Duration::from_secs(90));

    let tasks = cluster.array_records(first.array.id);
    let states: Vec<&str> = tasks.iter().map(|t| t["JobState"].as_str()).collect();
    assert_eq!(states, ["COMPLETED", "CANCELLED", "COMPLETED"], "{tasks:?}");
    let stopped_at = subject.progress(&out, &victim);
    assert!(
        !subject.finished(&out, &victim),
        "{victim} finished although its task was killed"
    );
    assert!(
        (1..6).contains(&stopped_at),
        "{victim} stopped at step {stopped_at}"
    );
    // afterany: the collect job ran although a task was cancelled, and only after every task.
    let collect = cluster.job_record(first.collect.id).unwrap();
    assert_eq!(collect["JobState"], "COMPLETED", "{collect:?}");
    let last_task_end = tasks.iter().map(|t| t["EndTime"].clone()).max().unwrap();
    assert!(
        collect["StartTime"] >= last_task_end,
        "{collect:?} vs {tasks:?}"
    );
    let starts = subject.collect_starts(&out);
    let first_collect_ns = starts[&first.collect.id.to_string()];
    let results = subject.results(&out);
    assert!(results
        .values()
        .flatten()
        .all(|r| r.end_ns < first_collect_ns));
    let report = subject.report(&out);
    let expected_report: String = results.keys().map(|p| format!("{p} 1\n")).collect();
    assert_eq!(
        report, expected_report,
        "the first report lists what had finished"
    );
    assert!(!results.contains_key(&victim));

    // 2. Re-submit: the killed point is taken over and resumed, the rest is skipped.
    let second = submit_now(&scripts);
    cluster.wait_done(&second, Duration::from_secs(90));
    let results = subject.results(&out);
    for (i, p) in subject.points.iter().enumerate() {
        let runs = results.get(p).map_or(&[][..], |r| &r[..]);
        assert_eq!(
            runs.len(),
            1,
            "{p} has {} result lines: {runs:?}",
            runs.len()
        );
        assert!(subject.finished(&out, p), "{p} has no done marker");
        assert_eq!(
            runs[0].task,
            (i as u32 % TASKS).to_string(),
            "{p} ran outside its shard"
        );
    }
    let resumed = &results[&victim][0];
    assert_eq!(resumed.array_job, second.array.id.to_string());
    assert_eq!(
        resumed.resumed_from, stopped_at,
        "{victim} did not resume from its progress"
    );
    assert!(
        out.join("claims").join(&victim).join("1").exists(),
        "the stale claim was not taken over"
    );
    let second_tasks = cluster.array_records(second.array.id);
    assert!(
        second_tasks.iter().all(|t| t["JobState"] == "COMPLETED"),
        "{second_tasks:?}"
    );

    // 3. Re-submit the finished sweep: nothing runs again.
    let before = std::fs::read(out.join("results.jsonl")).unwrap();
    let third = submit_now(&scripts);
    cluster.wait_done(&third, Duration::from_secs(90));
    assert_eq!(std::fs::read(out.join("results.jsonl")).unwrap(), before);
    assert_eq!(
        subject.collect_starts(&out).len(),
        3,
        "one report per submission"
    );

    // The final report is the local run's.
    let local = local.wait_with_output().unwrap();
    assert!(local.status.success());
    let status = Command::new(&subject.fp8_exe)
        .args(["report", local_dir])
        .status()
        .unwrap();
    assert!(status.success());
    let local_report = subject.report(&local_out);
    assert_eq!(local_report.lines().count(), subject.points.len());
    assert_eq!(subject.report(&out), local_report);
}
