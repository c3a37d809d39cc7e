//! Submitting the two scripts with `sbatch`: the array first, then the collect job that depends on
//! it with `afterany` (it runs once every task has ended, however each ended).

use crate::script::SweepJob;
use crate::Error;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to run `sbatch`: the program and environment variables to add (e.g. `SLURM_CONF` naming a
/// cluster other than the default one).
#[derive(Clone, Debug)]
pub struct Sbatch {
    pub program: PathBuf,
    pub env: Vec<(OsString, OsString)>,
}

impl Default for Sbatch {
    fn default() -> Self {
        Sbatch {
            program: PathBuf::from("sbatch"),
            env: Vec::new(),
        }
    }
}

/// A Slurm job id as `sbatch --parsable` prints it: `id` or `id;cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobId {
    pub id: u64,
    pub cluster: Option<String>,
}

impl JobId {
    /// Parse `sbatch --parsable` output; `None` unless it is exactly `id` or `id;cluster` (and
    /// surrounding whitespace).
    pub fn parse(text: &str) -> Option<JobId> {
        let text = text.trim();
        let (id, cluster) = match text.split_once(';') {
            Some((id, cluster)) => (id, Some(cluster)),
            None => (text, None),
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let cluster = match cluster {
            Some(c) if c.is_empty() || c.chars().any(char::is_whitespace) => return None,
            c => c.map(str::to_owned),
        };
        Some(JobId {
            id: id.parse().ok()?,
            cluster,
        })
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cluster {
            Some(c) => write!(f, "{};{c}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// The ids of a submitted sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub array: JobId,
    pub collect: JobId,
}

/// Where [`write_scripts`] put the two scripts.
#[derive(Clone, Debug)]
pub struct ScriptFiles {
    pub array: PathBuf,
    pub collect: PathBuf,
}

/// Write the rendered scripts to `OUT/slurm/array.sbatch` and `OUT/slurm/collect.sbatch`, creating
/// `OUT/slurm`, which must exist before submission: Slurm does not create the directory of a
/// job's `--output` file, and a task whose output cannot be opened fails without a word.
pub fn write_scripts(job: &SweepJob, array: &str, collect: &str) -> Result<ScriptFiles, Error> {
    let dir = job.slurm_dir();
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    let files = ScriptFiles {
        array: dir.join("array.sbatch"),
        collect: dir.join("collect.sbatch"),
    };
    for (path, text) in [(&files.array, array), (&files.collect, collect)] {
        std::fs::write(path, text).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files)
}

/// Submit the array, then the collect job with `--dependency=afterany:<array id>`.
pub fn submit(sbatch: &Sbatch, scripts: &ScriptFiles) -> Result<Submitted, Error> {
    let array = run_sbatch(sbatch, &[], &scripts.array)?;
    let dependency = format!("--dependency=afterany:{}", array.id);
    let collect = run_sbatch(sbatch, &[&dependency], &scripts.collect).map_err(|e| match e {
        Error::Command { command, problem } => Error::Command {
            command,
            problem: format!(
                "{problem} (the array, job {array}, was submitted: `scancel {}` if it should not run)",
                array.id
            ),
        },
        other => other,
    })?;
    Ok(Submitted { array, collect })
}

fn run_sbatch(sbatch: &Sbatch, args: &[&str], script: &Path) -> Result<JobId, Error> {
    let mut cmd = Command::new(&sbatch.program);
    cmd.arg("--parsable").args(args).arg(script);
    cmd.envs(sbatch.env.iter().map(|(k, v)| (k, v)));
    let command = format!(
        "{} --parsable {}{}",
        sbatch.program.display(),
        args.iter().map(|a| format!("{a} ")).collect::<String>(),
        script.display()
    );
    let fail = |problem: String| Error::Command {
        command: command.clone(),
        problem,
    };
    let out = cmd.output().map_err(|e| {
        fail(format!(
            "could not be started: {e} (is Slurm installed and on PATH?)"
        ))
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(fail(format!("failed ({}): {}", out.status, stderr.trim())));
    }
    JobId::parse(&stdout).ok_or_else(|| {
        fail(format!(
            "printed no job id: stdout `{}`, stderr `{}`",
            stdout.trim(),
            stderr.trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn job_ids_are_parsed_with_and_without_cluster() {
        assert_eq!(
            JobId::parse("123\n"),
            Some(JobId {
                id: 123,
                cluster: None
            })
        );
        assert_eq!(
            JobId::parse("45;west"),
            Some(JobId {
                id: 45,
                cluster: Some("west".into())
            })
        );
        for bad in [
            "",
            "\n",
            "abc",
            "12a",
            "-3",
            ";west",
            "12;",
            "12;a b",
            "Submitted batch job 12",
        ] {
            assert_eq!(JobId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(JobId::parse("45;west").unwrap().to_string(), "45;west");
    }

    /// A stand-in `sbatch` that logs its arguments (one line per call) and answers with the next id.
    fn fake_sbatch(dir: &Path, body: &str) -> Sbatch {
        let program = dir.join("sbatch");
        std::fs::write(&program, format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        Sbatch {
            program,
            env: vec![("FAKE_LOG".into(), dir.join("calls").into())],
        }
    }

    fn scripts(dir: &Path) -> ScriptFiles {
        let job = SweepJob {
            fp8_exe: "/bin/fp8".into(),
            sweep_file: "/s.ron".into(),
            out_dir: dir.join("out"),
            workdir: "/".into(),
            tasks: 2,
        };
        write_scripts(&job, "array\n", "collect\n").unwrap()
    }

    #[test]
    fn the_collect_job_depends_on_the_array_with_afterany() {
        let tmp = tempfile::tempdir().unwrap();
        let sbatch = fake_sbatch(
            tmp.path(),
            r#"echo "$*" >> "$FAKE_LOG"; n=$(wc -l < "$FAKE_LOG"); if [ "$n" = 1 ]; then echo "41;c1"; else echo 42; fi"#,
        );
        let files = scripts(tmp.path());
        assert_eq!(std::fs::read_to_string(&files.array).unwrap(), "array\n");
        assert_eq!(files.collect, tmp.path().join("out/slurm/collect.sbatch"));
        let ids = submit(&sbatch, &files).unwrap();
        assert_eq!(
            ids,
            Submitted {
                array: JobId {
                    id: 41,
                    cluster: Some("c1".into())
                },
                collect: JobId {
                    id: 42,
                    cluster: None
                },
            }
        );
        let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
        let expected = format!(
            "--parsable {}\n--parsable --dependency=afterany:41 {}\n",
            files.array.display(),
            files.collect.display()
        );
        assert_eq!(calls, expected);
    }

    #[test]
    fn a_failing_sbatch_is_named_with_its_stderr() {
        let tmp = tempfile::tempdir().unwrap();
        let sbatch = fake_sbatch(
            tmp.path(),
            r#"echo "sbatch: error: invalid partition specified: gpu" >&2; exit 1"#,
        );
        let err = submit(&sbatch, &scripts(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--parsable") && err.contains("array.sbatch"),
            "{err}"
        );
        assert!(err.contains("invalid partition specified: gpu"), "{err}");
    }

    #[test]
    fn a_failing_collect_submission_names_the_array_already_submitted() {
        let tmp = tempfile::tempdir().unwrap();
        let sbatch = fake_sbatch(
            tmp.path(),
            r#"case "$*" in *afterany*) echo "sbatch: error: dependency" >&2; exit 1;; *) echo 7;; esac"#,
        );
        let err = submit(&sbatch, &scripts(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("collect.sbatch") && err.contains("scancel 7"),
            "{err}"
        );
    }

    #[test]
    fn output_without_an_id_and_a_missing_program_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let sbatch = fake_sbatch(tmp.path(), "echo 'Submitted batch job 12'");
        let err = submit(&sbatch, &scripts(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no job id") && err.contains("Submitted batch job 12"),
            "{err}"
        );
        let missing = Sbatch {
            program: tmp.path().join("no-such-sbatch"),
            env: vec![],
        };
        let err = submit(&missing, &scripts(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no-such-sbatch") && err.contains("could not be started"),
            "{err}"
        );
    }
}
