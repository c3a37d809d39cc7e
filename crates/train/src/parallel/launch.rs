//! Starting a data-parallel run: which role this process plays (alone, launcher of local
//! workers, or one worker), the worker processes and their supervision, and the private run
//! directory of the ranks other than 0.
//!
//! Like `torchrun --nproc-per-node N`, `fp8 train --nproc N` starts N copies of itself with
//! the rank in the environment; with `--nnodes M --node-rank R --orchestrator HOST:PORT` (one
//! launcher per machine) the ranks of machine R are `R·N .. R·N+N−1`, and global rank 0 (on
//! machine 0) listens on `HOST:PORT`. With `--slurm` these come from `srun`'s variables.
//! Workers learn their place from `FP8_RANK`, `FP8_WORLD_SIZE` and `FP8_ORCHESTRATOR`, and
//! `FP8_DP_TIMEOUT` (seconds, default 600) bounds every wait for another rank.

use anyhow::{bail, Context};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Environment variables a launcher sets for its workers.
pub const ENV_RANK: &str = "FP8_RANK";
pub const ENV_WORLD: &str = "FP8_WORLD_SIZE";
pub const ENV_ORCHESTRATOR: &str = "FP8_ORCHESTRATOR";
pub const ENV_TIMEOUT: &str = "FP8_DP_TIMEOUT";
/// The orchestrator port under `--slurm` when `--orchestrator` is not given (torchrun's).
pub const DEFAULT_PORT: u16 = 29500;
const DEFAULT_TIMEOUT_S: u64 = 600;

/// The command-line side of a data-parallel launch (`fp8 train` flags).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaunchFlags {
    pub nproc: Option<usize>,
    pub nnodes: Option<usize>,
    pub node_rank: Option<usize>,
    pub orchestrator: Option<String>,
    pub slurm: bool,
}

/// What this process does.
#[derive(Clone, Debug, PartialEq)]
pub enum Launch {
    /// An ordinary one-process run.
    Single,
    /// Start `nproc` local workers with global ranks `node_rank·nproc ..`, supervise them.
    Launcher {
        nproc: usize,
        nnodes: usize,
        node_rank: usize,
        /// `None`: one machine, rank 0 listens on a free local port.
        orchestrator: Option<String>,
    },
    /// Train as one rank.
    Worker(WorkerSpec),
}

/// One rank's place in the group.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSpec {
    pub rank: usize,
    pub world: usize,
    pub orchestrator: String,
    pub timeout: Duration,
}

impl WorkerSpec {
    /// The group size a launch gives its runs (1 for a single process).
    pub fn world_of(launch: &Launch) -> usize {
        match launch {
            Launch::Single => 1,
            Launch::Launcher { nproc, nnodes, .. } => nproc * nnodes,
            Launch::Worker(w) => w.world,
        }
    }
}

/// Decide this process's role from `flags` and the environment (`env` looks a variable up):
/// a worker when a launcher set `FP8_RANK`; else from `--slurm` and srun's variables; else
/// from the flags. Every inconsistency is an error naming the flag or variable.
pub fn resolve_launch(
    flags: &LaunchFlags,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Launch> {
    let number = |name: &str, what: &str| -> anyhow::Result<Option<usize>> {
        env(name)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("{what} {name}={v:?}: expected a whole number"))
            })
            .transpose()
    };
    let timeout = match number(ENV_TIMEOUT, "environment variable")? {
        Some(0) => bail!("environment variable {ENV_TIMEOUT}=0: must be at least 1 (seconds)"),
        Some(s) => Duration::from_secs(s as u64),
        None => Duration::from_secs(DEFAULT_TIMEOUT_S),
    };
    if let Some(rank) = number(ENV_RANK, "environment variable")? {
        let world = number(ENV_WORLD, "environment variable")?
            .ok_or_else(|| anyhow::anyhow!("{ENV_RANK} is set but {ENV_WORLD} is not"))?;
        let orchestrator = env(ENV_ORCHESTRATOR)
            .ok_or_else(|| anyhow::anyhow!("{ENV_RANK} is set but {ENV_ORCHESTRATOR} is not"))?;
        if rank >= world {
            bail!("{ENV_RANK}={rank}: must be below {ENV_WORLD}={world}");
        }
        return Ok(Launch::Worker(WorkerSpec {
            rank,
            world,
            orchestrator,
            timeout,
        }));
    }
    if flags.nproc == Some(0) {
        bail!("--nproc 0: must be at least 1");
    }
    if flags.nnodes == Some(0) {
        bail!("--nnodes 0: must be at least 1");
    }
    if flags.slurm {
        if flags.nnodes.is_some() || flags.node_rank.is_some() {
            bail!("--slurm takes --nnodes and --node-rank from srun: give one or the other");
        }
        let need = |name: &str| -> anyhow::Result<usize> {
            number(name, "Slurm variable")?.ok_or_else(|| {
                anyhow::anyhow!("--slurm: {name} is not set (run fp8 train under srun)")
            })
        };
        let (tasks, nodes) = (need("SLURM_NTASKS")?, need("SLURM_NNODES")?);
        let orchestrator = match &flags.orchestrator {
            Some(o) => o.clone(),
            None => format!("{}:{DEFAULT_PORT}", first_slurm_host(env)?),
        };
        if tasks > nodes {
            // srun --ntasks-per-node K: every task is a rank already.
            if flags.nproc.unwrap_or(1) != 1 {
                bail!(
                    "--slurm with {tasks} tasks on {nodes} nodes: every srun task is a rank; \
                     drop --nproc, or run one task per node"
                );
            }
            return Ok(Launch::Worker(WorkerSpec {
                rank: need("SLURM_PROCID")?,
                world: tasks,
                orchestrator,
                timeout,
            }));
        }
        return Ok(launcher(
            flags.nproc.unwrap_or(1),
            nodes,
            need("SLURM_NODEID")?,
            Some(orchestrator),
        ));
    }
    let nnodes = flags.nnodes.unwrap_or(1);
    let node_rank = flags.node_rank.unwrap_or(0);
    if node_rank >= nnodes {
        bail!("--node-rank {node_rank}: must be below --nnodes {nnodes}");
    }
    if nnodes > 1 && flags.orchestrator.is_none() {
        bail!("--nnodes {nnodes}: give --orchestrator HOST:PORT (rank 0's machine), or --slurm");
    }
    Ok(launcher(
        flags.nproc.unwrap_or(1),
        nnodes,
        node_rank,
        flags.orchestrator.clone(),
    ))
}

fn launcher(nproc: usize, nnodes: usize, node_rank: usize, orchestrator: Option<String>) -> Launch {
    if nproc * nnodes == 1 {
        Launch::Single
    } else {
        Launch::Launcher {
            nproc,
            nnodes,
            node_rank,
            orchestrator,
        }
    }
}

/// The first host of the Slurm step (or job), where rank 0 runs under srun's block
/// distribution: `scontrol show hostnames` expands Slurm's compressed host list.
fn first_slurm_host(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let list = env("SLURM_STEP_NODELIST")
        .or_else(|| env("SLURM_JOB_NODELIST"))
        .ok_or_else(|| {
            anyhow::anyhow!("--slurm: SLURM_JOB_NODELIST is not set; give --orchestrator HOST:PORT")
        })?;
    let out = Command::new("scontrol")
        .args(["show", "hostnames", &list])
        .output()
        .context("--slurm: running `scontrol show hostnames` (give --orchestrator HOST:PORT)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next().map(str::trim) {
        Some(h) if out.status.success() && !h.is_empty() => Ok(h.to_string()),
        _ => bail!("--slurm: `scontrol show hostnames {list}` gave no host; give --orchestrator"),
    }
}

/// A free TCP port on this machine, for a one-machine group's orchestrator.
pub fn free_local_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free local port")?;
    Ok(l.local_addr()?.port())
}

/// Run `exe args…` once per local rank of the launch and wait for all of them. A worker that
/// fails (an exit code other than 0, or 3 = the run diverged) stops the launch: the others are
/// given a moment to stop on their own (they notice the lost rank), then killed, and the error
/// names each rank's fate. Returns the workers' common exit code (0 or 3).
pub fn run_workers(launch: &Launch, exe: &Path, args: &[OsString]) -> anyhow::Result<i32> {
    let Launch::Launcher {
        nproc,
        nnodes,
        node_rank,
        orchestrator,
    } = launch
    else {
        bail!("run_workers needs a launcher");
    };
    let orchestrator = match orchestrator {
        Some(o) => o.clone(),
        None => format!("127.0.0.1:{}", free_local_port()?),
    };
    // Like torchrun's OMP_NUM_THREADS=1: the cores are shared between the workers.
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / nproc).max(1).to_string()
    });
    let world = nproc * nnodes;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for local in 0..*nproc {
        let rank = node_rank * nproc + local;
        let child = Command::new(exe)
            .args(args)
            .env(ENV_RANK, rank.to_string())
            .env(ENV_WORLD, world.to_string())
            .env(ENV_ORCHESTRATOR, &orchestrator)
            .env("RAYON_NUM_THREADS", &threads)
            .spawn();
        match child {
            Ok(c) => children.push((rank, c)),
            Err(e) => {
                stop_all(&mut children);
                return Err(e).with_context(|| format!("starting rank {rank} ({})", exe.display()));
            }
        }
    }
    supervise(children)
}

/// Exit codes a worker may end with without failing the launch.
fn is_ok(status: &ExitStatus) -> bool {
    matches!(status.code(), Some(0) | Some(3))
}

fn supervise(mut children: Vec<(usize, Child)>) -> anyhow::Result<i32> {
    let mut done: Vec<(usize, ExitStatus)> = Vec::new();
    let mut failed_at: Option<Instant> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait()? {
                Some(status) => {
                    let (rank, _) = children.remove(i);
                    if !is_ok(&status) && failed_at.is_none() {
                        failed_at = Some(Instant::now());
                    }
                    done.push((rank, status));
                }
                None => i += 1,
            }
        }
        // After a failure, the others normally stop by themselves within moments (they see
        // the lost connection); a rank that does not is killed.
        if failed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            for (rank, mut c) in children.drain(..) {
                c.kill().ok();
                let status = c.wait()?;
                done.push((rank, status));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done.sort_by_key(|(rank, _)| *rank);
    if done.iter().all(|(_, s)| is_ok(s)) {
        return Ok(done.iter().filter_map(|(_, s)| s.code()).max().unwrap_or(0));
    }
    let fates: Vec<String> = done
        .iter()
        .map(|(rank, s)| format!("rank {rank}: {}", describe(s)))
        .collect();
    bail!("data-parallel training failed ({})", fates.join("; "))
}

fn describe(s: &ExitStatus) -> String {
    #[cfg(unix)]
    let signal = std::os::unix::process::ExitStatusExt::signal(s);
    #[cfg(not(unix))]
    let signal: Option<i32> = None;
    match (s.code(), signal) {
        (Some(0), _) => "finished".into(),
        (Some(3), _) => "diverged".into(),
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "ended".into(),
    }
}

fn stop_all(children: &mut Vec<(usize, Child)>) {
    for (_, c) in children.iter_mut() {
        c.kill().ok();
        c.wait().ok();
    }
    children.clear();
}

/// The run directory of a rank other than 0: private, removed when dropped. On resume it holds
/// hard links to (or copies of) the real run directory's identity and checkpoints, so the rank
/// restores the same state rank 0 does.
pub struct ScratchRunDir {
    pub path: PathBuf,
}

impl ScratchRunDir {
    /// A fresh scratch directory for `rank`, seeded from `real` when `resume`.
    pub fn create(real: &Path, rank: usize, resume: bool) -> anyhow::Result<ScratchRunDir> {
        let path = std::env::temp_dir().join(format!(
            "fp8-rank{rank}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating rank {rank}'s scratch directory"))?;
        let scratch = ScratchRunDir { path };
        if resume {
            let identity = real.join(crate::identity::FILE);
            if identity.exists() {
                link_or_copy(&identity, &scratch.path.join(crate::identity::FILE))?;
            }
            let checkpoints = real.join("checkpoints");
            if checkpoints.is_dir() {
                link_tree(&checkpoints, &scratch.path.join("checkpoints"))?;
            }
        }
        Ok(scratch)
    }
}

impl Drop for ScratchRunDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.path).ok();
    }
}

fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} for a rank's resume", from.display()))?;
    }
    Ok(())
}

fn link_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else {
            link_or_copy(&entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn flags(nproc: Option<usize>) -> LaunchFlags {
        LaunchFlags {
            nproc,
            ..LaunchFlags::default()
        }
    }

    #[test]
    fn flags_give_the_expected_roles() {
        let none = env_of(&[]);
        assert_eq!(resolve_launch(&flags(None), &none).unwrap(), Launch::Single);
        assert_eq!(
            resolve_launch(&flags(Some(1)), &none).unwrap(),
            Launch::Single
        );
        assert_eq!(
            resolve_launch(&flags(Some(2)), &none).unwrap(),
            Launch::Launcher {
                nproc: 2,
                nnodes: 1,
                node_rank: 0,
                orchestrator: None
            }
        );
        let multi = LaunchFlags {
            nproc: Some(2),
            nnodes: Some(3),
            node_rank: Some(2),
            orchestrator: Some("n0:29500".into()),
            slurm: false,
        };
        let l = resolve_launch(&multi, &none).unwrap();
        assert_eq!(WorkerSpec::world_of(&l), 6);
        // A launcher's worker: the environment decides, whatever the flags say.
        let worker = env_of(&[
            (ENV_RANK, "3"),
            (ENV_WORLD, "6"),
            (ENV_ORCHESTRATOR, "n0:29500"),
            (ENV_TIMEOUT, "7"),
        ]);
        assert_eq!(
            resolve_launch(&multi, &worker).unwrap(),
            Launch::Worker(WorkerSpec {
                rank: 3,
                world: 6,
                orchestrator: "n0:29500".into(),
                timeout: Duration::from_secs(7)
            })
        );
    }

    #[test]
    fn inconsistent_launches_are_errors_naming_the_flag() {
        let none = env_of(&[]);
        let cases = [
            (flags(Some(0)), "--nproc 0"),
            (
                LaunchFlags {
                    nnodes: Some(2),
                    ..flags(None)
                },
                "--orchestrator",
            ),
            (
                LaunchFlags {
                    nnodes: Some(2),
                    node_rank: Some(2),
                    orchestrator: Some("h:1".into()),
                    ..flags(None)
                },
                "--node-rank 2",
            ),
            (
                LaunchFlags {
                    slurm: true,
                    ..flags(None)
                },
                "SLURM_NTASKS is not set",
            ),
        ];
        for (f, needle) in cases {
            let e = resolve_launch(&f, &none).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should contain {needle}");
        }
        let bad = env_of(&[(ENV_RANK, "2"), (ENV_WORLD, "2"), (ENV_ORCHESTRATOR, "h:1")]);
        let e = resolve_launch(&flags(None), &bad).unwrap_err().to_string();
        assert!(e.contains("FP8_RANK=2: must be below"), "{e}");
        let bad = env_of(&[(ENV_RANK, "x")]);
        let e = resolve_launch(&flags(None), &bad).unwrap_err().to_string();
        assert!(e.contains("FP8_RANK=\"x\""), "{e}");
    }

    #[test]
    fn srun_variables_give_ranks_or_node_launchers() {
        // srun --ntasks-per-node 2 on 2 nodes: every task is a rank.
        let tasks = env_of(&[
            ("SLURM_NTASKS", "4"),
            ("SLURM_NNODES", "2"),
            ("SLURM_PROCID", "3"),
            ("SLURM_NODEID", "1"),
        ]);
        let slurm = LaunchFlags {
            slurm: true,
            orchestrator: Some("n0:4000".into()),
            ..flags(None)
        };
        assert_eq!(
            resolve_launch(&slurm, &tasks).unwrap(),
            Launch::Worker(WorkerSpec {
                rank: 3,
                world: 4,
                orchestrator: "n0:4000".into(),
                timeout: Duration::from_secs(DEFAULT_TIMEOUT_S)
            })
        );
        let e = resolve_launch(
            &LaunchFlags {
                nproc: Some(2),
                ..slurm.clone()
            },
            &tasks,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("drop --nproc"), "{e}");
        // One task per node, two local workers each.
        let nodes = env_of(&[
            ("SLURM_NTASKS", "2"),
            ("SLURM_NNODES", "2"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NODEID", "1"),
        ]);
        assert_eq!(
            resolve_launch(
                &LaunchFlags {
                    nproc: Some(2),
                    ..slurm
                },
                &nodes
            )
            .unwrap(),
            Launch::Launcher {
                nproc: 2,
                nnodes: 2,
                node_rank: 1,
                orchestrator: Some("n0:4000".into())
            }
        );
    }

    #[test]
    fn scratch_dirs_link_the_checkpoints_and_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("run");
        std::fs::create_dir_all(real.join("checkpoints/step-00000004")).unwrap();
        std::fs::write(real.join("identity.json"), "{}").unwrap();
        std::fs::write(real.join("checkpoints/step-00000004/model.bin"), "m").unwrap();
        std::fs::write(real.join("summary.json"), "s").unwrap();
        let scratch = ScratchRunDir::create(&real, 1, true).unwrap();
        let p = scratch.path.clone();
        assert_eq!(
            std::fs::read_to_string(p.join("identity.json")).unwrap(),
            "{}"
        );
        assert_eq!(
            std::fs::read_to_string(p.join("checkpoints/step-00000004/model.bin")).unwrap(),
            "m"
        );
        assert!(!p.join("summary.json").exists());
        drop(scratch);
        assert!(!p.exists());
        let fresh = ScratchRunDir::create(&real, 1, false).unwrap();
        assert_eq!(std::fs::read_dir(&fresh.path).unwrap().count(), 0);
    }
}
