//! Claims on sweep points, so that runners sharing an output directory (the tasks of a Slurm job
//! array on a shared file system, or two `fp8 sweep` started by hand) never run the same point at
//! once, and a point whose runner died is taken over instead of staying held forever.
//!
//! A point's claims live in one directory (`OUT/claims/<run name>/`), one file per
//! **generation** `0`, `1`, …; the live claim is the highest generation. A runner claims a point
//! by creating the next generation with `create_new` (`O_CREAT|O_EXCL`: atomic on local file
//! systems and on NFSv3 and later), so of two runners creating the same generation exactly one
//! succeeds; the other reads the winner's claim and leaves the point. The file holds the holder's
//! host, pid, process start time and Slurm job id ([`Holder`]).
//!
//! Whether a live claim is **stale** (its holder is gone) is judged
//! - for a holder on this host, from `/proc`: stale when its pid is not running, or runs a process
//!   started at another time (the pid was reused); not stale while it runs, however old its
//!   heartbeat (a job Slurm suspended beats again when it resumes);
//! - otherwise (another host, no `/proc`, or a file that cannot be read as a claim: a holder killed
//!   between creating and writing it), from its heartbeat, the file's modification time, which the
//!   holder refreshes every [`ClaimRules::heartbeat`]: stale once older than
//!   [`ClaimRules::stale_after`].
//!
//! A stale claim of generation `g` is taken over by creating `g + 1`, again exclusively, so of two
//! runners judging the same claim stale only one wins. Old generations stay as a record. A runner
//! releases its claim (dropping [`Claim`]) by removing its file, unless someone else's claim has
//! replaced it; the sweep runner re-checks whether a point is finished after claiming it, so a
//! point finished by the previous holder is never run twice.
//!
//! Hand-written on `std::fs`: the file-lock crates (`fs2`, `fd-lock`) use `flock`/`fcntl` locks,
//! which a killed holder on another NFS client can leave behind or which some shared file systems
//! do not support, and they record no holder to judge.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a claim counts as stale, and how often a holder proves it is alive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClaimRules {
    /// How often a holder refreshes its claim file's modification time.
    pub heartbeat: Duration,
    /// A claim whose holder cannot be checked directly (another host) is stale once its heartbeat
    /// is this old. Several heartbeats, so that a slow file system or a busy node is not taken for
    /// a dead one.
    pub stale_after: Duration,
}

impl Default for ClaimRules {
    /// A heartbeat every 30 s; stale after 5 minutes without one.
    fn default() -> Self {
        ClaimRules {
            heartbeat: Duration::from_secs(30),
            stale_after: Duration::from_secs(300),
        }
    }
}

/// Who holds a claim: what a claim file holds (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22), where the
    /// host has `/proc`: tells a live holder from a later process that reuses its pid.
    pub start_ticks: Option<u64>,
    /// `SLURM_JOB_ID` (and the array task, `SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID`), if any.
    pub slurm_job: Option<String>,
    /// When the claim was made, in seconds since the Unix epoch.
    pub claimed_unix_s: u64,
}

impl Holder {
    /// This process.
    pub fn me() -> Holder {
        let pid = std::process::id();
        let slurm_job = match (
            std::env::var("SLURM_ARRAY_JOB_ID"),
            std::env::var("SLURM_ARRAY_TASK_ID"),
        ) {
            (Ok(a), Ok(t)) => Some(format!("{a}_{t}")),
            _ => std::env::var("SLURM_JOB_ID").ok(),
        };
        Holder {
            host: host_name(),
            pid,
            start_ticks: start_ticks(pid),
            slurm_job,
            claimed_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Whether this holder's process is running, where that can be told: on this host, from
    /// `/proc`. A pid running a process started at another time is a reuse: the holder is gone.
    fn liveness(&self) -> Liveness {
        if self.host != host_name() || !Path::new("/proc/self/stat").exists() {
            return Liveness::Unknown;
        }
        match (start_ticks(self.pid), self.start_ticks) {
            (None, _) => Liveness::Gone,
            (Some(now), Some(then)) if now != then => Liveness::Gone,
            (Some(_), Some(_)) => Liveness::Running,
            (Some(_), None) => Liveness::Unknown,
        }
    }
}

enum Liveness {
    Running,
    Gone,
    Unknown,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)?;
        if let Some(j) = &self.slurm_job {
            write!(f, " (Slurm job {j})")?;
        }
        Ok(())
    }
}

/// The outcome of [`claim`].
#[derive(Debug)]
pub enum Claimed {
    /// This process holds the point now.
    Won(Claim),
    /// Another runner holds it (`None`: one whose claim file could not be read yet).
    Held(Option<Holder>),
}

/// A claim this process holds. Its heartbeat runs on a thread until it is dropped; dropping it
/// releases the claim.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    generation: u64,
    me: Holder,
    /// The stale claim this one replaced.
    taken_over: Option<Option<Holder>>,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Claim {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The holder of the stale claim this one replaced, if it replaced one (`Some(None)`: a claim
    /// file that could not be read).
    pub fn taken_over(&self) -> Option<&Option<Holder>> {
        self.taken_over.as_ref()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        // Remove the file only while it is still ours: a runner that judged us stale (a heartbeat
        // lost on a slow file system) has its own, higher generation, and ours is history then.
        if read_holder(&self.path).as_ref() == Some(&self.me) && !higher_exists(self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn higher_exists(c: &Claim) -> bool {
    c.path
        .parent()
        .map(|d| generations(d).unwrap_or_default())
        .is_some_and(|g| g.iter().any(|&x| x > c.generation))
}

/// Try to claim the point whose claims live in `dir` (created if needed).
pub fn claim(dir: &Path, rules: &ClaimRules) -> anyhow::Result<Claimed> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let me = Holder::me();
    let mut taken_over = None;
    // Each round either wins, finds a live holder, or sees a generation another runner created
    // meanwhile and looks again; the bound only guards against a file system gone mad.
    for _ in 0..1000 {
        let live = generations(dir)?.into_iter().max();
        let next = match live {
            None => 0,
            Some(g) => {
                let path = dir.join(g.to_string());
                let holder = read_holder(&path);
                let age = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                let Some(age) = age else {
                    continue; // removed (released) meanwhile
                };
                // A holder seen running keeps its claim even with an old heartbeat (a job
                // suspended by Slurm beats again when it resumes).
                let stale = match holder.as_ref().map_or(Liveness::Unknown, Holder::liveness) {
                    Liveness::Gone => true,
                    Liveness::Running => false,
                    Liveness::Unknown => age > rules.stale_after,
                };
                if !stale {
                    return Ok(Claimed::Held(holder));
                }
                taken_over = Some(holder);
                g + 1
            }
        };
        let path = dir.join(next.to_string());
        match create_claim(&path, &me) {
            Ok(()) => {
                return Ok(Claimed::Won(start_heartbeat(
                    path,
                    next,
                    me,
                    taken_over,
                    rules.heartbeat,
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating claim {}", path.display())),
        }
    }
    anyhow::bail!(
        "claims in {} kept changing: 1000 attempts without an answer",
        dir.display()
    )
}

fn create_claim(path: &Path, me: &Holder) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let text = serde_json::to_string(me).map_err(std::io::Error::other)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn start_heartbeat(
    path: PathBuf,
    generation: u64,
    me: Holder,
    taken_over: Option<Option<Holder>>,
    every: Duration,
) -> Claim {
    let (stop, stopped) = mpsc::channel::<()>();
    let beat_path = path.clone();
    let heartbeat = std::thread::Builder::new()
        .name("claim-heartbeat".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                // A failed refresh is retried at the next beat; only a long run of them lets the
                // claim go stale.
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&beat_path) {
                    let _ = f.set_modified(SystemTime::now());
                }
            }
        })
        .ok();
    Claim {
        path,
        generation,
        me,
        taken_over,
        stop: Some(stop),
        heartbeat,
    }
}

/// The generations present in `dir` (files named by a number; anything else is ignored).
fn generations(dir: &Path) -> anyhow::Result<Vec<u64>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

fn read_holder(path: &Path) -> Option<Holder> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// This host's name: the kernel's, else `$HOSTNAME`, else `unknown` (which makes every claim one
/// of "another host", judged by its heartbeat alone).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised command name, which may hold spaces).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the name; the start time is field 22, the 20th of those.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn fast() -> ClaimRules {
        ClaimRules {
            heartbeat: Duration::from_millis(20),
            stale_after: Duration::from_secs(60),
        }
    }

    fn won(c: Claimed) -> Claim {
        match c {
            Claimed::Won(c) => c,
            Claimed::Held(h) => panic!("expected to win, held by {h:?}"),
        }
    }

    fn write_claim(path: &Path, h: &Holder) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_string(h).unwrap()).unwrap();
    }

    /// A pid that was running a moment ago and is not now.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn age_file(path: &Path, by: Duration) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - by).unwrap();
    }

    #[test]
    fn start_ticks_reads_this_process() {
        if Path::new("/proc/self/stat").exists() {
            let mine = start_ticks(std::process::id()).unwrap();
            // Stable for a live process, and not before boot.
            assert_eq!(start_ticks(std::process::id()), Some(mine));
            assert!(start_ticks(dead_pid()).is_none());
        }
    }

    #[test]
    fn of_racing_claimers_exactly_one_wins() {
        for round in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("p");
            let n = 8;
            let barrier = Arc::new(Barrier::new(n));
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let (dir, barrier) = (dir.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        claim(&dir, &fast()).unwrap()
                    })
                })
                .collect();
            let outcomes: Vec<Claimed> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners: Vec<&Claim> = outcomes
                .iter()
                .filter_map(|c| match c {
                    Claimed::Won(c) => Some(c),
                    Claimed::Held(_) => None,
                })
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
            assert_eq!(winners[0].generation(), 0);
            assert!(winners[0].taken_over().is_none());
            // The losers saw the winner (this process) as the holder.
            for o in &outcomes {
                if let Claimed::Held(Some(h)) = o {
                    assert_eq!(h.pid, std::process::id());
                }
            }
        }
    }

    #[test]
    fn a_claim_of_a_dead_process_on_this_host_is_taken_over_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let dead = Holder {
            pid: dead_pid(),
            start_ticks: Some(1),
            ..Holder::me()
        };
        write_claim(&dir.join("0"), &dead);
        // Fresh heartbeat, but the holder is gone: two runners race to take over, one wins.
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    claim(&dir, &fast()).unwrap()
                })
            })
            .collect();
        let outcomes: Vec<Claimed> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<&Claim> = outcomes
            .iter()
            .filter_map(|c| match c {
                Claimed::Won(c) => Some(c),
                Claimed::Held(_) => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        assert_eq!(winners[0].generation(), 1);
        assert_eq!(winners[0].taken_over(), Some(&Some(dead.clone())));
        // The old generation stays as a record; the new one names this process.
        assert_eq!(read_holder(&dir.join("0")), Some(dead));
        assert_eq!(read_holder(&dir.join("1")).unwrap().pid, std::process::id());
    }

    #[test]
    fn a_reused_pid_does_not_keep_a_claim() {
        if !Path::new("/proc/self/stat").exists() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let mine = Holder::me();
        // Our own pid, but a start time that is not ours: another process that had this pid.
        let earlier = Holder {
            start_ticks: mine.start_ticks.map(|t| t + 1),
            ..mine.clone()
        };
        write_claim(&dir.join("0"), &earlier);
        assert_eq!(won(claim(&dir, &fast()).unwrap()).generation(), 1);
        // With the right start time, the same claim is live.
        let dir2 = tmp.path().join("q");
        write_claim(&dir2.join("0"), &mine);
        assert!(matches!(claim(&dir2, &fast()).unwrap(), Claimed::Held(Some(h)) if h == mine));
    }

    #[test]
    fn another_hosts_claim_is_stale_only_when_its_heartbeat_is_old() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let remote = Holder {
            host: format!("{}-elsewhere", host_name()),
            pid: dead_pid(),
            ..Holder::me()
        };
        write_claim(&dir.join("0"), &remote);
        let rules = fast();
        // Its pid means nothing here: held while the heartbeat is fresh.
        age_file(&dir.join("0"), rules.stale_after / 2);
        assert!(matches!(claim(&dir, &rules).unwrap(), Claimed::Held(Some(h)) if h == remote));
        age_file(&dir.join("0"), rules.stale_after + Duration::from_secs(1));
        let c = won(claim(&dir, &rules).unwrap());
        assert_eq!(c.generation(), 1);
        assert_eq!(c.taken_over(), Some(&Some(remote)));
    }

    #[test]
    fn an_unreadable_claim_is_judged_by_its_age() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0"), "").unwrap(); // created, never written
        let rules = fast();
        assert!(matches!(claim(&dir, &rules).unwrap(), Claimed::Held(None)));
        age_file(&dir.join("0"), rules.stale_after * 2);
        let c = won(claim(&dir, &rules).unwrap());
        assert_eq!((c.generation(), c.taken_over()), (1, Some(&None)));
    }

    #[test]
    fn the_holder_beats_and_dropping_releases() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let c = won(claim(&dir, &fast()).unwrap());
        let path = c.path().to_owned();
        age_file(&path, Duration::from_secs(3600));
        let old = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let beat = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(
            beat.duration_since(old).unwrap() > Duration::from_secs(3000),
            "no heartbeat"
        );
        // While held, a second claimer is refused; after the drop, it wins generation 0 again.
        assert!(matches!(
            claim(&dir, &fast()).unwrap(),
            Claimed::Held(Some(_))
        ));
        drop(c);
        assert!(!path.exists());
        assert_eq!(won(claim(&dir, &fast()).unwrap()).generation(), 0);
    }

    #[test]
    fn dropping_a_claim_taken_over_by_another_leaves_theirs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let ours = won(claim(&dir, &fast()).unwrap());
        // Another host judged our heartbeat lost and took over with generation 1.
        let remote = Holder {
            host: format!("{}-elsewhere", host_name()),
            ..Holder::me()
        };
        write_claim(&dir.join("1"), &remote);
        drop(ours);
        assert_eq!(read_holder(&dir.join("1")), Some(remote.clone()));
        assert!(dir.join("0").exists(), "generation 0 is history now, kept");
        assert!(matches!(claim(&dir, &fast()).unwrap(), Claimed::Held(Some(h)) if h == remote));
    }
}
