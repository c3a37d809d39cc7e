//! The artefacts a run and a sweep leave, as typed values that are both written and read:
//! [`Summary`] (`summary.json`), [`Curves`] (`curves.json`), and [`RunResult`] (one line of
//! `results.jsonl`), plus [`write_atomic`], through which every one of them is written so that a
//! reader sees either the old file or the new one, never a torn one.
//!
//! f64 values round-trip exactly: serde_json writes the shortest representation that reads back
//! to the same bits, and the workspace builds it with `float_roundtrip` so that reading does too.
//!
//! # `results.jsonl`
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
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How a run ended.
///
/// A run itself records only `Converged` or `Diverged` (the divergence rule of
/// [`crate::divergence`]); `Stalled` is assigned when a report classifies the losses of a run that
/// did not diverge but failed to learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Converged,
    Diverged,
    Stalled,
}

impl Outcome {
    /// Diverged or stalled: the run is no use as a training run.
    pub fn failed(self) -> bool {
        self != Outcome::Converged
    }

    /// The name used in files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::Diverged => "diverged",
            Outcome::Stalled => "stalled",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `summary.json`: what one training run ended with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub outcome: Outcome,
    /// The step the divergence rule fired; `None` when the run did not diverge.
    #[serde(default, rename = "step", skip_serializing_if = "Option::is_none")]
    pub diverged_step: Option<u64>,
    /// Why the run was declared diverged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Optimizer steps taken (fewer than planned when stopped at divergence).
    pub steps: u64,
    /// The first step's training loss.
    #[serde(default, with = "nonfinite_opt")]
    pub initial_loss: Option<f64>,
    #[serde(default, with = "nonfinite_opt")]
    pub final_train_loss: Option<f64>,
    /// Lowest finite training loss.
    #[serde(default, with = "nonfinite_opt")]
    pub best_train_loss: Option<f64>,
    #[serde(default, with = "nonfinite_opt")]
    pub final_val_loss: Option<f64>,
    #[serde(default, with = "nonfinite_opt")]
    pub best_val_loss: Option<f64>,
    /// The data's entropy rate when known (synthetic data): the best achievable loss.
    #[serde(default, with = "nonfinite_opt")]
    pub entropy_floor: Option<f64>,
    pub spike_count: u64,
    #[serde(default, with = "nonfinite_opt")]
    pub max_sharpness: Option<f64>,
    /// Each stability diagnostic's worst value over the run ([`crate::diagnostics::worst`]).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "nonfinite_map"
    )]
    pub diagnostics: BTreeMap<String, f64>,
    pub tokens_per_s: f64,
    pub wall_seconds: f64,
    /// Recipe name (file stem unless the configuration names it).
    pub recipe: String,
    pub model: String,
    pub lr: f64,
    pub seed: u64,
}

impl Summary {
    pub fn diverged(&self) -> bool {
        self.outcome == Outcome::Diverged
    }

    /// Read `summary.json`; errors name the file.
    pub fn read(path: &Path) -> Result<Summary, ArtefactError> {
        read_json(path)
    }
}

/// `curves.json` of a run: `[step, value]` pairs. A NaN or infinite value (a diverged run's last
/// loss) is written as `null` and reads back as NaN.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    #[serde(default, deserialize_with = "nan_for_null")]
    pub losses: Vec<(u64, f64)>,
    #[serde(default, deserialize_with = "nan_for_null")]
    pub val_losses: Vec<(u64, f64)>,
    #[serde(default, deserialize_with = "nan_for_null")]
    pub sharpness: Vec<(u64, f64)>,
    /// The stability diagnostics' series by name ([`crate::diagnostics`]), on logging steps.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nan_for_null_map"
    )]
    pub diagnostics: SeriesMap,
}

/// Named series of `(step, value)` points.
pub type SeriesMap = BTreeMap<String, Vec<(u64, f64)>>;

/// Reads a map of series whose non-finite values serde_json wrote as `null` (as NaN).
pub fn nan_for_null_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SeriesMap, D::Error> {
    let series: BTreeMap<String, Vec<(u64, Option<f64>)>> = Deserialize::deserialize(d)?;
    Ok(series
        .into_iter()
        .map(|(k, pts)| {
            let pts = pts
                .into_iter()
                .map(|(s, v)| (s, v.unwrap_or(f64::NAN)))
                .collect();
            (k, pts)
        })
        .collect())
}

fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(u64, f64)>, D::Error> {
    let points: Vec<(u64, Option<f64>)> = Deserialize::deserialize(d)?;
    Ok(points
        .into_iter()
        .map(|(s, v)| (s, v.unwrap_or(f64::NAN)))
        .collect())
}

impl Curves {
    /// The file name inside a run directory.
    pub const FILE: &'static str = "curves.json";

    /// Read `curves.json` from a run directory; errors name the file.
    pub fn read(run_dir: &Path) -> Result<Curves, ArtefactError> {
        read_json(&run_dir.join(Self::FILE))
    }
}

/// A run artefact that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArtefactError {
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is damaged or not what fp8 writes there: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
}

impl ArtefactError {
    /// Whether the file simply does not exist (as opposed to existing but unreadable or damaged).
    pub fn is_missing(&self) -> bool {
        matches!(self, ArtefactError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Read a JSON artefact of type `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ArtefactError> {
    let bytes = std::fs::read(path).map_err(|source| ArtefactError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ArtefactError::Malformed {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Write `value` as (pretty) JSON to `path` through [`write_atomic`].
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ArtefactError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| ArtefactError::Malformed {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Replace `path` with `bytes` atomically: write a temporary file in the same directory (so the
/// rename cannot cross file systems), flush it to disk, and rename it over `path`. A reader, or a
/// later step after a crash, sees the old content or the new, never a prefix. On any error (a
/// full disk, say) the temporary file is removed and the error names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtefactError> {
    let io_err = |source| ArtefactError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| io_err(io::Error::other("not a file path")))?;
    // The process id keeps concurrent writers (sweep shards sharing a directory) apart.
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(())
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
    /// The first step's training loss (`None` in files written before it was recorded).
    #[serde(default, with = "nonfinite_opt")]
    pub initial_loss: Option<f64>,
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

/// serde for a map of f64 values, non-finite ones as strings (see [`nonfinite`]).
pub mod nonfinite_map {
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Str(String),
    }

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            if v.is_finite() {
                map.serialize_entry(k, v)?;
            } else {
                map.serialize_entry(k, super::nonfinite::to_str(*v))?;
            }
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        BTreeMap::<String, Repr>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| match v {
                Repr::Num(x) => Ok((k, x)),
                Repr::Str(s) => super::nonfinite::from_str(&s).map(|x| (k, x)),
            })
            .collect()
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
            initial_loss: Some(4.1),
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

#[cfg(test)]
mod artefact_tests {
    use super::*;

    #[test]
    // 2.2250738585072011e-308 is written as the classic parser edge case it is (it rounds to the
    // largest subnormal boundary), so clippy's excessive-precision lint does not apply.
    #[allow(clippy::excessive_precision)]
    fn f64_values_round_trip_bit_for_bit() {
        // Values whose shortest decimal form the default (non-round-trip) parser can misread by
        // one ulp: many-digit mantissas near the ends of the exponent range, and a sample of a
        // deterministic sequence like a loss curve.
        let mut x = 4.852030263919617_f64;
        let mut values = vec![
            f64::MIN_POSITIVE,
            f64::MAX,
            5e-324,
            0.1 + 0.2,
            2.2250738585072011e-308,
        ];
        for _ in 0..2000 {
            x = (x * 1.000123456789 + 1e-7).fract() * 7.0 + 1e-3;
            values.push(x);
        }
        let curves = Curves {
            losses: values
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as u64, v))
                .collect(),
            ..Default::default()
        };
        let back: Curves = serde_json::from_slice(&serde_json::to_vec(&curves).unwrap()).unwrap();
        for (a, b) in curves.losses.iter().zip(&back.losses) {
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "{} read back as {}", a.1, b.1);
        }
    }

    #[test]
    fn summary_reads_what_it_writes_and_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        let s = Summary {
            outcome: Outcome::Diverged,
            diverged_step: Some(7),
            reason: Some("non-finite loss (NaN)".into()),
            steps: 7,
            initial_loss: Some(4.158883083359672),
            final_train_loss: Some(f64::NAN),
            best_train_loss: Some(3.9),
            final_val_loss: None,
            best_val_loss: None,
            entropy_floor: Some(2.5),
            spike_count: 0,
            max_sharpness: None,
            diagnostics: BTreeMap::from([("stagnation".to_string(), f64::INFINITY)]),
            tokens_per_s: 100.0,
            wall_seconds: 1.5,
            recipe: "fp32".into(),
            model: "tiny".into(),
            lr: 0.01,
            seed: 3,
        };
        write_json(&path, &s).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""outcome": "diverged""#), "{text}");
        assert!(text.contains(r#""step": 7"#), "{text}");
        let back = Summary::read(&path).unwrap();
        assert!(back.final_train_loss.unwrap().is_nan());
        assert_eq!(back.initial_loss, s.initial_loss);
        assert_eq!(back.recipe, "fp32");
        // A summary written before `initial_loss` existed (NaN as null) still reads.
        std::fs::write(
            &path,
            r#"{"outcome":"converged","steps":5,"final_train_loss":null,"best_train_loss":3.0,
            "final_val_loss":3.1,"best_val_loss":3.1,"entropy_floor":null,"spike_count":0,
            "max_sharpness":0.2,"tokens_per_s":1.0,"wall_seconds":2.0,"recipe":"r","model":"m",
            "lr":0.001,"seed":0}"#,
        )
        .unwrap();
        let old = Summary::read(&path).unwrap();
        assert_eq!((old.outcome, old.initial_loss), (Outcome::Converged, None));
        // A truncated file is a `Malformed` error naming it, not a missing one.
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let e = Summary::read(&path).unwrap_err();
        assert!(
            !e.is_missing() && e.to_string().contains("summary.json"),
            "{e}"
        );
        assert!(Summary::read(&dir.path().join("none.json"))
            .unwrap_err()
            .is_missing());
    }

    #[test]
    fn atomic_write_replaces_and_failed_write_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        // A path whose directory does not exist: the error names the path, nothing is left.
        let bad = dir.path().join("missing/b.json");
        let e = write_atomic(&bad, b"x").unwrap_err().to_string();
        assert!(e.contains("missing/b.json"), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
    }

    #[test]
    fn stalled_is_an_outcome_name() {
        assert_eq!(
            serde_json::to_string(&Outcome::Stalled).unwrap(),
            r#""stalled""#
        );
        let o: Outcome = serde_json::from_str(r#""stalled""#).unwrap();
        assert_eq!(o.to_string(), "stalled");
    }
}
