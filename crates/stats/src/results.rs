//! `results.jsonl`: one JSON object per finished run of a sweep.
//!
//! JSON Lines because a sweep appends as runs finish, possibly from several processes, and a
//! partial file must stay readable. Each [`append_result`] writes one complete line with a single
//! `write` on a file opened in append mode, so lines from concurrent writers do not interleave.
//!
//! A writer killed mid-line leaves a last line without its `\n` that does not parse. Readers accept
//! that with a warning (the run is simply missing and will show up as not run), and the next
//! append cuts the fragment off first so it does not glue onto a new line. Any *other* malformed
//! line is an error naming the file and line number: it means the file was edited or corrupted, and
//! silently skipping it would change divergence rates without anyone noticing.
//!
//! JSON has no NaN or infinity. Losses of diverged runs are exactly that, so float fields write
//! non-finite values as the strings `"NaN"`, `"inf"`, `"-inf"` (and read `null` as NaN).

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Converged,
    Diverged,
}

/// One line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Recipe name (as registered / in the RON file).
    pub recipe: String,
    /// Model name, e.g. `gpt2-small`.
    pub model: String,
    /// Peak learning rate.
    pub lr: f64,
    pub seed: u64,
    pub outcome: Outcome,
    /// The step the divergence rule fired (see [`crate::divergence`]); `None` when converged.
    #[serde(default)]
    pub diverged_step: Option<u64>,
    /// Training loss at the last step run (may be non-finite for a diverged run).
    #[serde(with = "nonfinite")]
    pub final_loss: f64,
    /// Lowest finite training loss seen.
    #[serde(with = "nonfinite")]
    pub best_loss: f64,
    /// Number of loss spikes ([`crate::spikes`]).
    pub spike_count: u64,
    /// EMA-smoothed loss gap to the baseline recipe with the same seed ([`crate::loss_gap`]).
    #[serde(default, with = "nonfinite_opt")]
    pub loss_gap: Option<f64>,
    /// Largest logit sharpness measured during the run ([`crate::sharpness`]).
    #[serde(default, with = "nonfinite_opt")]
    pub max_sharpness: Option<f64>,
    /// Steps actually run (less than planned when stopped at divergence).
    pub steps: u64,
    /// The run directory, relative to the sweep directory or absolute.
    pub run_dir: String,
}

/// What went wrong reading or writing `results.jsonl`.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot access results file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}:{line}: not a valid result line ({message}); fix or delete this line — only a \
         truncated *last* line (from a killed writer) is skipped automatically",
        path.display()
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl From<ResultsError> for io::Error {
    fn from(e: ResultsError) -> Self {
        match e {
            ResultsError::Io { source, .. } => source,
            e @ ResultsError::Malformed { .. } => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// The parsed file plus any warnings the caller should show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadResults {
    pub results: Vec<RunResult>,
    /// Human-readable warnings (currently: a truncated last line was skipped).
    pub warnings: Vec<String>,
}

/// Parses `results.jsonl` content. `path` is only used in messages. Blank lines are ignored.
pub fn parse_results(text: &str, path: &Path) -> Result<ReadResults, ResultsError> {
    let mut out = ReadResults::default();
    let ends_with_newline = text.ends_with('\n');
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match serde_json::from_str::<RunResult>(trimmed) {
            Ok(r) => out.results.push(r),
            Err(e) if i + 1 == lines.len() && !ends_with_newline => {
                out.warnings.push(format!(
                    "{}:{line_no}: skipped a truncated last line ({} bytes, {e}); a writer was \
                     probably killed mid-line, that run is missing",
                    path.display(),
                    line.len()
                ));
            }
            Err(e) => {
                return Err(ResultsError::Malformed {
                    path: path.to_path_buf(),
                    line: line_no,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// Reads `results.jsonl`. A missing file reads as empty (no run has finished yet).
pub fn read_results(path: &Path) -> Result<ReadResults, ResultsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadResults::default()),
        Err(source) => {
            return Err(ResultsError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse_results(&text, path)
}

/// Appends one result as one line, creating the file if needed.
///
/// If the file ends in a fragment without `\n` (a killed writer), the fragment is cut off first;
/// the returned warning says so.
pub fn append_result(path: &Path, result: &RunResult) -> Result<Option<String>, ResultsError> {
    let io_err = |source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let warning = cut_partial_tail(path).map_err(io_err)?;
    let mut line = serde_json::to_string(result)
        .expect("RunResult serializes: it has no maps with non-string keys");
    line.push('\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err)?;
    // One write_all of one buffer: with O_APPEND this is one write(2) for any sane line length.
    f.write_all(line.as_bytes()).map_err(io_err)?;
    f.flush().map_err(io_err)?;
    Ok(warning)
}

/// Truncates the file after its last `\n` if it ends without one. Returns a warning if it did.
fn cut_partial_tail(path: &Path) -> io::Result<Option<String>> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 || last_byte(&mut f, len)? == b'\n' {
        return Ok(None);
    }
    // Scan backwards in blocks for the last newline.
    let mut end = len;
    let mut keep = 0;
    let mut buf = vec![0u8; 4096];
    'scan: while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(p) = buf[..n].iter().rposition(|&b| b == b'\n') {
            keep = start + p as u64 + 1;
            break 'scan;
        }
        end = start;
    }
    f.set_len(keep)?;
    Ok(Some(format!(
        "{}: removed a truncated last line ({} bytes) left by a killed writer before appending",
        path.display(),
        len - keep
    )))
}

fn last_byte(f: &mut File, len: u64) -> io::Result<u8> {
    let mut b = [0u8];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut b)?;
    Ok(b[0])
}

/// Serde for an f64 that may be NaN or infinite: numbers stay numbers, non-finite values become
/// `"NaN"`, `"inf"`, `"-inf"`; `null` reads as NaN.
pub mod nonfinite {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Str(String),
        Null(()),
    }

    pub(crate) fn to_str(v: f64) -> &'static str {
        if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "inf"
        } else {
            "-inf"
        }
    }

    pub(crate) fn from_str<E: serde::de::Error>(s: &str) -> Result<f64, E> {
        match s {
            "NaN" | "nan" => Ok(f64::NAN),
            "inf" | "+inf" | "Infinity" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(E::custom(format!(
                "expected a number, \"NaN\", \"inf\" or \"-inf\", found string {other:?}"
            ))),
        }
    }

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(to_str(*v))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Str(s) => from_str(&s),
            Repr::Null(()) => Ok(f64::NAN),
        }
    }
}

/// [`nonfinite`] for `Option<f64>`: `None` is `null`.
pub mod nonfinite_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Str(String),
    }

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(v) if v.is_finite() => s.serialize_f64(*v),
            Some(v) => s.serialize_str(super::nonfinite::to_str(*v)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Repr>::deserialize(d)? {
            None => Ok(None),
            Some(Repr::Num(v)) => Ok(Some(v)),
            Some(Repr::Str(s)) => super::nonfinite::from_str(&s).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(seed: u64, outcome: Outcome) -> RunResult {
        RunResult {
            recipe: "e4m3".into(),
            model: "gpt2-tiny".into(),
            lr: 1e-3,
            seed,
            outcome,
            diverged_step: (outcome == Outcome::Diverged).then_some(120),
            final_loss: if outcome == Outcome::Diverged {
                f64::NAN
            } else {
                3.25
            },
            best_loss: 3.2,
            spike_count: 2,
            loss_gap: Some(0.05),
            max_sharpness: None,
            steps: 1000,
            run_dir: format!("runs/e4m3-lr1e-3-s{seed}"),
        }
    }

    fn same(a: &RunResult, b: &RunResult) -> bool {
        // NaN != NaN, so compare through JSON.
        serde_json::to_string(a).unwrap() == serde_json::to_string(b).unwrap()
    }

    #[test]
    fn round_trip_with_non_finite() {
        let mut r = sample(1, Outcome::Diverged);
        r.loss_gap = Some(f64::INFINITY);
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""final_loss":"NaN""#), "{line}");
        assert!(line.contains(r#""outcome":"diverged""#), "{line}");
        assert!(line.contains(r#""loss_gap":"inf""#), "{line}");
        assert!(line.contains(r#""max_sharpness":null"#), "{line}");
        let back: RunResult = serde_json::from_str(&line).unwrap();
        assert!(same(&r, &back));
        assert!(back.final_loss.is_nan());
    }

    #[test]
    fn null_loss_reads_as_nan_and_optionals_may_be_missing() {
        let line = r#"{"recipe":"a","model":"m","lr":0.001,"seed":3,"outcome":"converged",
            "final_loss":null,"best_loss":2.0,"spike_count":0,"steps":10,"run_dir":"r"}"#;
        let r: RunResult = serde_json::from_str(line).unwrap();
        assert!(r.final_loss.is_nan());
        assert_eq!(
            (r.loss_gap, r.max_sharpness, r.diverged_step),
            (None, None, None)
        );
    }

    #[test]
    fn append_and_read_tolerate_truncated_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        assert_eq!(read_results(&path).unwrap(), ReadResults::default());
        let a = sample(0, Outcome::Converged);
        let b = sample(1, Outcome::Diverged);
        assert_eq!(append_result(&path, &a).unwrap(), None);
        // A killed writer: half of b's line, no newline.
        let line = serde_json::to_string(&b).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
        drop(f);
        let read = read_results(&path).unwrap();
        assert_eq!(read.results, vec![a.clone()]);
        assert_eq!(read.warnings.len(), 1);
        assert!(read.warnings[0].contains(":2: skipped a truncated last line"));
        // The next append cuts the fragment off.
        let w = append_result(&path, &b).unwrap();
        assert!(w.unwrap().contains("removed a truncated last line"));
        let read = read_results(&path).unwrap();
        assert!(read.warnings.is_empty());
        assert_eq!(read.results.len(), 2);
        assert!(same(&read.results[1], &b));
    }

    #[test]
    fn malformed_middle_line_is_an_error_with_line_number() {
        let a = serde_json::to_string(&sample(0, Outcome::Converged)).unwrap();
        let text = format!("{a}\n\n{{\"recipe\": 1}}\n{a}\n");
        let err = parse_results(&text, Path::new("sweep/results.jsonl")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("sweep/results.jsonl:3: not a valid result line"),
            "{msg}"
        );
        // A complete (newline-terminated) bad last line is also an error, not a truncation.
        let text = format!("{a}\n{{\"recipe\"\n");
        assert!(matches!(
            parse_results(&text, Path::new("r")),
            Err(ResultsError::Malformed { line: 2, .. })
        ));
    }

    #[test]
    fn cut_tail_without_any_newline_empties_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        std::fs::write(&path, "{\"reci").unwrap();
        let read = read_results(&path).unwrap();
        assert!(read.results.is_empty() && read.warnings.len() == 1);
        append_result(&path, &sample(4, Outcome::Converged)).unwrap();
        assert_eq!(read_results(&path).unwrap().results.len(), 1);
    }
}
