//! `fp8 sweep --slurm --submit` against a real Slurm: a one-node cluster on localhost
//! (`scripts/slurm/cluster.sh`, Debian's `slurm-wlm` and `munge`), a tiny sweep (2 recipes × 2
//! learning rates × 1 seed of the `tiny` model) submitted as a 2-task job array plus its
//! `afterany` collect job, one array task killed mid-point with `scancel`, the sweep re-submitted,
//! then re-submitted once more after it finished.
//!
//! Checked, through the real `fp8` binary:
//! - `--slurm` alone prints both scripts and runs nothing; sbatch's refusal of a partition that
//!   does not exist reaches the user (exit code 2, naming the command, quoting sbatch);
//! - the collect job ran after every array task had ended, also when one was cancelled (which
//!   `afterok` would not do), and its results list exactly the points that had finished;
//! - the re-submission took the killed point over (its claim's holder was gone) and resumed it from
//!   its checkpoint, and every grid point finished exactly once (one `finished` line in all the
//!   tasks' output, one result line);
//! - re-submitting the finished sweep ran nothing and changed no file;
//! - the results equal, byte for byte (so the final losses bit for bit), and the report equals, a
//!   local `fp8 sweep` of the same file.
//!
//! Needs root, the Slurm and munge daemons and clients, and the `fp8` binary (`$FP8_EXE`, else
//! `fp8` in this test's target directory, which `cargo test --workspace` builds). Without them the
//! test says why and passes, unless `CI` is set: `.ci/run` installs them
//! (scripts/slurm/install-deps.sh), so there a missing piece fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `fp8` binary: `$FP8_EXE`, else `target/<profile>/fp8` next to this test's `deps/`.
fn fp8_exe() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FP8_EXE") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let exe = me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("fp8"))
        .ok_or("no target directory")?;
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "no fp8 binary at {} (build it with `cargo build --release -p fp8-cli`, or set FP8_EXE)",
            exe.display()
        ))
    }
}

/// Steps of each point: enough that a point runs for a few seconds, so that a task can be
/// caught part-way through one.
const STEPS: u64 = 400;
const TASKS: usize = 2;

/// The sweep: 4 points, 2 array tasks (from the file's `slurm:` section).
fn write_sweep(dir: &Path) -> PathBuf {
    let recipe = |name: &str| {
        repo()
            .join("recipes")
            .join(format!("{name}.ron"))
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    };
    let text = format!(
        r#"(
    recipes: ["{}", "{}"],
    learning_rates: [1e-2, 3e-2],
    seeds: [1],
    steps: {STEPS},
    models: ["tiny"],
    data: ["synthetic:vocab=64,order=1,tokens=20000"],
    train: (
        batch: 4,
        seq: 16,
        warmup: 2,
        eval_every: 100,
        eval_batches: 1,
        log_every: 20,
        checkpoint_every: 20,
        histogram_every: 0,
    ),
    slurm: (array_size: {TASKS}, job_name: "fp8-test"),
)"#,
        recipe("fp32"),
        recipe("bf16"),
    );
    let path = dir.join("tiny sweep.ron");
    std::fs::write(&path, text).unwrap();
    path
}

/// The run directories of a sweep output directory, by name.
fn run_dirs(out: &Path) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(out.join("runs")) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect()
}

fn finished(run_dir: &Path) -> bool {
    run_dir.join("summary.json").exists()
}

/// The step of a run's latest checkpoint (`checkpoints/latest` names `step-NNNNNNNN`).
fn checkpoint_step(run_dir: &Path) -> Option<u64> {
    let name = std::fs::read_to_string(run_dir.join("checkpoints/latest")).ok()?;
    name.trim().strip_prefix("step-")?.parse().ok()
}

/// The point a claim of Slurm job `job` (`ARRAY_TASK`) holds, if any.
fn claimed_by(out: &Path, job: &str) -> Vec<String> {
    let Ok(points) = std::fs::read_dir(out.join("claims")) else {
        return Vec::new();
    };
    let mut held = Vec::new();
    for p in points {
        let p = p.unwrap().path();
        for g in std::fs::read_dir(&p).into_iter().flatten() {
            let text = std::fs::read_to_string(g.unwrap().path()).unwrap_or_default();
            if text.contains(&format!("\"slurm_job\":\"{job}\"")) {
                held.push(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    held
}

/// results.jsonl lines, by run directory.
fn results(out: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut by_run: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap_or_default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let dir = v["run_dir"].as_str().unwrap().to_owned();
        by_run.entry(dir).or_default().push(v);
    }
    by_run
}

/// Every array task's output so far (`OUT/slurm/array-<job>_<task>.out`), by file name.
fn task_logs(out: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(out.join("slurm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("array-") && n.ends_with(".out")
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect()
}

fn summary_times(out: &Path) -> BTreeMap<String, SystemTime> {
    run_dirs(out)
        .into_iter()
        .filter_map(|(n, d)| {
            let t = std::fs::metadata(d.join("summary.json"))
                .ok()?
                .modified()
                .ok()?;
            Some((n, t))
        })
        .collect()
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
        let script = repo().join("scripts/slurm/cluster.sh");
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
    fn wait_done(&self, collect: u64, timeout: Duration) {
        wait_for(timeout, &format!("collect job {collect} to end"), || {
            self.job_record(collect).is_some()
        });
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

/// Runs `fp8` in `dir` with the cluster's environment.
struct Fp8 {
    exe: PathBuf,
    dir: PathBuf,
    env: Vec<(OsString, OsString)>,
}

impl Fp8 {
    fn output(&self, args: &[&str]) -> Output {
        Command::new(&self.exe)
            .args(args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "fp8 {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `fp8 sweep … --slurm --submit`: the array's and the collect job's ids.
    fn submit(&self, sweep: &str, out: &str) -> (u64, u64) {
        let o = self.ok(&[
            "sweep",
            sweep,
            "--out",
            out,
            "--slurm",
            "--submit",
            "--slurm-max-concurrent",
            "2",
        ]);
        let text = String::from_utf8_lossy(&o.stdout);
        let id = |what: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(what))
                .unwrap_or_else(|| panic!("no `{what}` line in {text}"))
                .trim()
                .parse()
                .unwrap()
        };
        let ids = (id("array job "), id("collect job "));
        eprintln!("submitted array {} and collect {}", ids.0, ids.1);
        ids
    }
}

#[test]
fn a_killed_task_is_resumed_by_resubmission_and_every_point_runs_once() {
    let path = path_with_sbin();
    let ready = missing_prerequisites(&path).map_or_else(fp8_exe, Err);
    let exe = match ready {
        Ok(exe) => exe,
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but the real-Slurm test cannot run: {why}");
            }
            eprintln!("skipped: real_slurm: {why}");
            return;
        }
    };
    let started = Instant::now();
    // FP8_SLURM_TEST_KEEP=1 keeps the directory (cluster logs, job output) for a look afterwards.
    let tmp = tempfile::Builder::new()
        .prefix("fp8-real-slurm")
        .disable_cleanup(std::env::var_os("FP8_SLURM_TEST_KEEP").is_some())
        .tempdir()
        .unwrap();
    eprintln!("real_slurm: working in {}", tmp.path().display());
    // A space in the directory names tests the scripts' quoting.
    let work = tmp.path().join("work dir");
    std::fs::create_dir_all(&work).unwrap();
    let sweep_path = write_sweep(&work);
    let sweep = sweep_path.to_str().unwrap();
    let cluster = Cluster::start(&tmp.path().join("cluster"), &path);
    let fp8 = Fp8 {
        exe,
        dir: work.clone(),
        env: cluster.env.clone(),
    };

    // A local run of the same file, for the final comparison; it runs while the cluster works.
    let local_out = work.join("local out");
    let local = Command::new(&fp8.exe)
        .args([
            "sweep",
            sweep,
            "--out",
            local_out.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .current_dir(&work)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let out = work.join("sweep out");
    let out_arg = out.to_str().unwrap();
    // 0. `--slurm` alone prints the scripts and runs nothing; a bad partition is sbatch's error.
    let printed = fp8.ok(&["sweep", sweep, "--out", out_arg, "--slurm"]);
    let printed = String::from_utf8_lossy(&printed.stdout);
    for expected in [
        "#SBATCH --array=0-1\n",
        "#SBATCH --job-name=fp8-test\n",
        "--shard \"$SLURM_ARRAY_TASK_ID/2\" --jobs 1\n",
        "#SBATCH --job-name=fp8-test-collect\n",
        " --collect\n",
        " report ",
    ] {
        assert!(printed.contains(expected), "no {expected:?} in\n{printed}");
    }
    assert!(!out.join("runs").exists(), "--slurm alone ran something");
    let bad = fp8.output(&[
        "sweep",
        sweep,
        "--out",
        out_arg,
        "--slurm",
        "--submit",
        "--slurm-partition",
        "no-such-partition",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sbatch --parsable") && err.contains("array.sbatch"),
        "{err}"
    );
    assert!(
        err.contains("invalid partition specified: no-such-partition"),
        "{err}"
    );

    // 1. Submit; kill task 1 while it is part-way through one of its points.
    let (array, collect) = fp8.submit(sweep, out_arg);
    let task1 = format!("{array}_1");
    let mut victim = String::new();
    wait_for(
        Duration::from_secs(120),
        "task 1 to be part-way through a point",
        || {
            let dirs = run_dirs(&out);
            let busy = claimed_by(&out, &task1).into_iter().find(|p| {
                dirs.get(p).is_some_and(|d| {
                    !finished(d) && checkpoint_step(d).is_some_and(|s| s <= STEPS / 2)
                })
            });
            match busy {
                Some(p) => {
                    victim = p;
                    true
                }
                None => false,
            }
        },
    );
    cluster.run("scancel", &[&task1]);
    cluster.wait_done(collect, Duration::from_secs(180));

    let tasks = cluster.array_records(array);
    let states: Vec<&str> = tasks.iter().map(|t| t["JobState"].as_str()).collect();
    assert_eq!(states, ["COMPLETED", "CANCELLED"], "{tasks:?}");
    let victim_dir = out.join("runs").join(&victim);
    assert!(
        !finished(&victim_dir),
        "{victim} finished although its task was killed"
    );
    let stopped_at = checkpoint_step(&victim_dir).unwrap();
    assert!(
        stopped_at > 0 && stopped_at < STEPS,
        "{victim} at {stopped_at}"
    );
    // afterany: the collect job ran although a task was cancelled, and only after every task.
    let record = cluster.job_record(collect).unwrap();
    assert_eq!(record["JobState"], "COMPLETED", "{record:?}");
    let last_task_end = tasks.iter().map(|t| t["EndTime"].clone()).max().unwrap();
    assert!(
        record["StartTime"] >= last_task_end,
        "{record:?} vs {tasks:?}"
    );
    // Its results are exactly the points that had finished, and it wrote the report.
    let done: BTreeSet<String> = run_dirs(&out)
        .into_iter()
        .filter(|(_, d)| finished(d))
        .map(|(n, _)| format!("runs/{n}"))
        .collect();
    let listed: BTreeSet<String> = results(&out).into_keys().collect();
    assert_eq!(listed, done, "the first collect job's results");
    assert!(!done.contains(&format!("runs/{victim}")));
    assert!(out.join("report.md").exists());

    // 2. Re-submit: the killed point is taken over and resumed, the rest is skipped.
    let (array2, collect2) = fp8.submit(sweep, out_arg);
    cluster.wait_done(collect2, Duration::from_secs(180));
    let second_tasks = cluster.array_records(array2);
    assert!(
        second_tasks.iter().all(|t| t["JobState"] == "COMPLETED"),
        "{second_tasks:?}"
    );
    let dirs = run_dirs(&out);
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    let logs = task_logs(&out);
    let all_output: String = logs.values().cloned().collect();
    for (name, dir) in &dirs {
        assert!(finished(dir), "{name} did not finish");
        // Exactly once: one `finished` line in all the tasks' output of both submissions.
        let lines: Vec<&str> = all_output
            .lines()
            .filter(|l| l.contains(&format!("] {name}: ")) && l.contains("final loss"))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
    }
    let takeover = &logs[&format!("array-{array2}_1.out")];
    assert!(
        takeover.contains(&format!("{victim} was claimed by pid"))
            && takeover.contains(&format!(
                "(Slurm job {task1}), which is gone; taking it over"
            )),
        "{takeover}"
    );
    let train_log = std::fs::read_to_string(victim_dir.join("train.log")).unwrap();
    let resumed_at: u64 = train_log
        .lines()
        .find_map(|l| l.strip_prefix(&format!("resuming {} at step ", victim_dir.display())))
        .unwrap_or_else(|| panic!("{victim} was not resumed:\n{train_log}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        resumed_at >= stopped_at && resumed_at < STEPS,
        "{victim} resumed at {resumed_at}, stopped at {stopped_at}"
    );
    let merged = results(&out);
    assert_eq!(merged.len(), 4, "{merged:?}");
    assert!(merged.values().all(|r| r.len() == 1), "{merged:?}");

    // 3. Re-submit the finished sweep: nothing runs, no result or summary changes.
    let before = std::fs::read(out.join("results.jsonl")).unwrap();
    let summaries = summary_times(&out);
    let (array3, collect3) = fp8.submit(sweep, out_arg);
    cluster.wait_done(collect3, Duration::from_secs(180));
    assert_eq!(std::fs::read(out.join("results.jsonl")).unwrap(), before);
    assert_eq!(summary_times(&out), summaries);
    let logs = task_logs(&out);
    for t in 0..TASKS {
        let log = &logs[&format!("array-{array3}_{t}.out")];
        assert!(log.contains("already finished, 0 to run"), "{log}");
    }

    // The results and the report are the local run's.
    let local = local.wait_with_output().unwrap();
    assert!(
        local.status.success(),
        "local sweep: {}",
        String::from_utf8_lossy(&local.stderr)
    );
    let local_results = results(&local_out);
    assert_eq!(
        local_results.keys().collect::<Vec<_>>(),
        merged.keys().collect::<Vec<_>>()
    );
    for (run, r) in &merged {
        let l = &local_results[run][0];
        assert_eq!(
            r[0]["final_loss"].as_f64().map(f64::to_bits),
            l["final_loss"].as_f64().map(f64::to_bits),
            "{run}"
        );
    }
    assert_eq!(
        String::from_utf8(before).unwrap(),
        std::fs::read_to_string(local_out.join("results.jsonl")).unwrap()
    );
    fp8.ok(&["report", local_out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        std::fs::read_to_string(local_out.join("report.md")).unwrap()
    );
    eprintln!("real_slurm: done in {:.0?}", started.elapsed());
}
