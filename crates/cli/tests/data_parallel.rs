//! `fp8 train --nproc N` end to end: two ranks compute exactly what one process accumulating
//! the same micro-batches computes (fp32 and delayed scaling, whose amaxes are max-reduced
//! across the ranks), a run resumes on another number of ranks, and a rank that dies or hangs
//! stops the others with an error naming it.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DATA: &str = "synthetic:vocab=64,order=1,tokens=50000";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `fp8 train` on the tiny model, one thread per process (the same in every run compared).
fn train_cmd(run_dir: &Path, recipe: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fp8"));
    c.args(["train", "--model", "tiny", "--data", DATA])
        .arg("--recipe")
        .arg(repo().join("recipes").join(recipe))
        .args([
            "--batch", "4", "--seq", "16", "--lr", "1e-2", "--warmup", "2",
        ])
        .args([
            "--eval-every",
            "0",
            "--eval-batches",
            "1",
            "--log-every",
            "1",
        ])
        .arg("--run-dir")
        .arg(run_dir)
        .args(extra)
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("FP8_RANK");
    c
}

fn run_ok(mut c: Command) -> Output {
    let o = c.output().expect("fp8 runs");
    assert!(
        o.status.success(),
        "{:?} failed: {}",
        c.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
    serde_json::from_value(json(&run_dir.join("curves.json"))["losses"].clone()).unwrap()
}

/// Every step's loss equal bit for bit (the reduction order is fixed), and therefore within the
/// 1e-5 relative tolerance asked for.
fn assert_same_losses(a: &[(u64, f64)], b: &[(u64, f64)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: step counts");
    for ((sa, la), (sb, lb)) in a.iter().zip(b) {
        assert_eq!(sa, sb, "{what}");
        let rel = (la - lb).abs() / la.abs().max(1e-30);
        assert!(
            la.to_bits() == lb.to_bits(),
            "{what}: step {sa}: {la} vs {lb} (relative difference {rel:e})"
        );
    }
}

fn remove(p: &Path) {
    if p.is_dir() {
        std::fs::remove_dir_all(p).unwrap();
    } else {
        std::fs::remove_file(p).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// One process with --grad-accum 2 against --nproc 2 (fresh), and against a resume of the
/// one-process run's step-4 checkpoint on two ranks.
fn two_ranks_equal_one_process(recipe: &str) {
    let dir = tempfile::tempdir().unwrap();
    let steps = ["--steps", "8", "--checkpoint-every", "4"];
    let one = dir.path().join("one");
    run_ok(train_cmd(
        &one,
        recipe,
        &[&steps[..], &["--grad-accum", "2"][..]].concat(),
    ));
    let two = dir.path().join("two");
    run_ok(train_cmd(
        &two,
        recipe,
        &[&steps[..], &["--nproc", "2"][..]].concat(),
    ));
    let reference = losses(&one);
    assert_eq!(reference.len(), 8);
    assert_same_losses(&reference, &losses(&two), &format!("{recipe}: --nproc 2"));
    // The same run, whoever computed it: the identities agree, so either can resume the other.
    assert_eq!(
        json(&one.join("identity.json"))["id"],
        json(&two.join("identity.json"))["id"]
    );
    // Rank 0 alone wrote the run directory's checkpoints; no rank left a scratch directory.
    assert!(two.join("checkpoints/step-00000008").is_dir());

    // Resume the one-process run from step 4 on two ranks.
    let resumed = dir.path().join("resumed");
    copy_dir(&one, &resumed);
    for f in ["checkpoints/step-00000008", "summary.json", "curves.json"] {
        remove(&resumed.join(f));
    }
    let o = run_ok(train_cmd(
        &resumed,
        recipe,
        &[&steps[..], &["--nproc", "2", "--resume"][..]].concat(),
    ));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("at step 4"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_losses(&reference, &losses(&resumed), &format!("{recipe}: resumed"));
}

#[test]
fn fp32_two_ranks_equal_one_process_accumulating() {
    two_ranks_equal_one_process("fp32.ron");
}

#[test]
fn delayed_scaling_two_ranks_equal_one_process_accumulating() {
    two_ranks_equal_one_process("delayed_scaling.ron");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Rank `rank` of 2 started by hand (as a launcher would), on a long run.
fn worker(run_dir: &Path, rank: usize, port: u16, timeout_s: u64) -> Child {
    let mut c = train_cmd(run_dir, "fp32.ron", &["--steps", "100000", "--nproc", "2"]);
    c.env("FP8_RANK", rank.to_string())
        .env("FP8_WORLD_SIZE", "2")
        .env("FP8_ORCHESTRATOR", format!("127.0.0.1:{port}"))
        .env("FP8_DP_TIMEOUT", timeout_s.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

/// Wait until rank 0 has trained a few steps (its TensorBoard file has grown).
fn wait_for_training(run_dir: &Path) {
    let started = Instant::now();
    loop {
        let events = std::fs::read_dir(run_dir).ok().and_then(|d| {
            d.flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("events.out"))
        });
        if let Some(e) = events {
            if e.metadata().map(|m| m.len() > 2000).unwrap_or(false) {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rank 0 never started training"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait for `child` to exit within `limit`; its stderr.
fn exits_within(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            return (status, err);
        }
        if started.elapsed() > limit {
            child.kill().ok();
            panic!("still running {limit:?} after the other rank stopped");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rank_that_dies_stops_the_other_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("r");
    let port = free_port();
    let rank0 = worker(&run_dir, 0, port, 600);
    let mut rank1 = worker(&run_dir, 1, port, 600);
    wait_for_training(&run_dir);
    rank1.kill().unwrap(); // SIGKILL: no chance to say goodbye
    rank1.wait().unwrap();
    let (status, err) = exits_within(rank0, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("lost the connection to rank 1"), "{err}");
}

#[test]
fn a_rank_that_hangs_stops_the_other_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("r");
    let port = free_port();
    let rank0 = worker(&run_dir, 0, port, 3);
    let mut rank1 = worker(&run_dir, 1, port, 3);
    wait_for_training(&run_dir);
    let pid = rank1.id().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(stopped.success());
    let (status, err) = exits_within(rank0, Duration::from_secs(30));
    rank1.kill().unwrap();
    rank1.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("rank 1 did not respond for 3 s"), "{err}");
}

/// The launcher notices a worker killed from outside, stops the other and says which died.
#[test]
fn the_launcher_reports_a_killed_worker() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("r");
    let mut c = train_cmd(&run_dir, "fp32.ron", &["--steps", "100000", "--nproc", "2"]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let launcher = c.spawn().unwrap();
    wait_for_training(&run_dir);
    // The launcher's children, and which of them is rank 1 (from its environment).
    let pid = launcher.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let rank1 = children
        .split_whitespace()
        .find(|child| {
            let env = std::fs::read(format!("/proc/{child}/environ")).unwrap_or_default();
            env.split(|&b| b == 0).any(|kv| kv == b"FP8_RANK=1")
        })
        .expect("a worker with FP8_RANK=1")
        .to_string();
    let killed = Command::new("kill")
        .args(["-KILL", &rank1])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, err) = exits_within(launcher, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("rank 1: killed by signal 9"), "{err}");
    assert!(err.contains("lost the connection to rank 1"), "{err}");
}

#[test]
fn bad_launch_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, needle) in [
        (&["--nproc", "0"][..], "--nproc 0: must be at least 1"),
        (&["--nnodes", "2"][..], "give --orchestrator HOST:PORT"),
        (
            &["--nnodes", "2", "--node-rank", "5", "--orchestrator", "h:1"][..],
            "--node-rank 5: must be below --nnodes 2",
        ),
    ] {
        let o = train_cmd(&dir.path().join("r"), "fp32.ron", flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{err} should contain {needle}");
    }
}
