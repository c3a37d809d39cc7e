//! Cluster options: a sweep file's `slurm:` section, merged with command-line flags.
//!
//! Every field is optional; a field left out is left to the cluster's defaults (no `#SBATCH` line),
//! except `cpus_per_task`, which is 1 unless set, and the array size, which is one task per grid
//! point unless set. Flags win over the file ([`SlurmOptions::merged`]), and
//! [`SlurmOptions::validate`] turns a bad value into an error that names the option, the value and
//! what is allowed — before anything is submitted.

use crate::Error;
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// The `slurm:` section of a sweep file, or the same options given as flags.
///
/// ```text
/// slurm: (
///     partition: "gpu",
///     account: "proj42",
///     time: "2:00:00",
///     cpus_per_task: 4,
///     gpus_per_task: 1,
///     array_size: 16,
///     max_concurrent: 8,
///     extra: ["--qos=normal", "--mem-per-cpu=2G"],
/// )
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmOptions {
    /// Job name of the array; the collect job is named `<job_name>-collect` (default `fp8-sweep`).
    pub job_name: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Wall-clock limit of each array task and of the collect job, in one of Slurm's formats.
    pub time: Option<TimeLimit>,
    /// CPUs per array task (default 1).
    pub cpus_per_task: Option<u32>,
    pub gpus_per_task: Option<u32>,
    /// Array tasks, each running one shard of the grid (default and maximum: one per grid point).
    pub array_size: Option<u32>,
    /// Array tasks running at once (`--array=…%N`; default: as many as the cluster allows).
    pub max_concurrent: Option<u32>,
    /// Further `#SBATCH` options for both jobs, each one option such as `--qos=high`.
    pub extra: Vec<String>,
}

/// The job name when none is given.
pub const DEFAULT_JOB_NAME: &str = "fp8-sweep";

impl SlurmOptions {
    /// `self` (the sweep file's section) overridden by every option `flags` sets. `extra` lines add
    /// up: the file's first, then the flags'.
    pub fn merged(&self, flags: &SlurmOptions) -> SlurmOptions {
        fn pick<T: Clone>(file: &Option<T>, flag: &Option<T>) -> Option<T> {
            flag.clone().or_else(|| file.clone())
        }
        SlurmOptions {
            job_name: pick(&self.job_name, &flags.job_name),
            partition: pick(&self.partition, &flags.partition),
            account: pick(&self.account, &flags.account),
            time: pick(&self.time, &flags.time),
            cpus_per_task: pick(&self.cpus_per_task, &flags.cpus_per_task),
            gpus_per_task: pick(&self.gpus_per_task, &flags.gpus_per_task),
            array_size: pick(&self.array_size, &flags.array_size),
            max_concurrent: pick(&self.max_concurrent, &flags.max_concurrent),
            extra: self.extra.iter().chain(&flags.extra).cloned().collect(),
        }
    }

    /// Check every value that would end up in a `#SBATCH` line.
    pub fn validate(&self) -> Result<(), Error> {
        for (option, value) in [
            ("job_name", &self.job_name),
            ("partition", &self.partition),
            ("account", &self.account),
        ] {
            if let Some(v) = value {
                check_word(option, v)?;
            }
        }
        for (option, value) in [
            ("cpus_per_task", self.cpus_per_task),
            ("gpus_per_task", self.gpus_per_task),
            ("array_size", self.array_size),
            ("max_concurrent", self.max_concurrent),
        ] {
            if value == Some(0) {
                return Err(Error::option(option, "0", "a count of at least 1"));
            }
        }
        for line in &self.extra {
            let plain = !line.is_empty() && !line.chars().any(|c| c.is_control());
            if !plain || !line.starts_with('-') {
                return Err(Error::option(
                    "extra",
                    line,
                    "one sbatch option per entry, starting with `-`, on one line (e.g. `--qos=high`)",
                ));
            }
        }
        Ok(())
    }

    pub fn job_name(&self) -> &str {
        self.job_name.as_deref().unwrap_or(DEFAULT_JOB_NAME)
    }

    pub fn cpus_per_task(&self) -> u32 {
        self.cpus_per_task.unwrap_or(1)
    }

    /// Array tasks for a grid of `grid_points` points: `array_size` if set, never more than the
    /// points (a task without a point would only start and stop), and at least 1.
    pub fn array_tasks(&self, grid_points: usize) -> u32 {
        let points = u32::try_from(grid_points).unwrap_or(u32::MAX).max(1);
        self.array_size.map_or(points, |n| n.clamp(1, points))
    }
}

/// Partition, account and job names go into `#SBATCH --opt=VALUE` lines: one plain word.
fn check_word(option: &'static str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(Error::option(
            option,
            value,
            "a non-empty name without spaces, quotes or backslashes",
        ))
    }
}

/// A Slurm time limit, kept in seconds and written as `D-HH:MM:SS`, or unlimited.
///
/// Accepts what `sbatch --time` accepts: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, and
/// `INFINITE`/`UNLIMITED`. After the first field, minutes and seconds are below 60 and hours below
/// 24. Zero is refused: Slurm reads `--time=0` as "no limit", which `INFINITE` says plainly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TimeLimit {
    Seconds(u64),
    Infinite,
}

impl TimeLimit {
    const ALLOWED: &'static str =
        "a Slurm time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (e.g. 90, 1:30:00, 2-00:00:00) or INFINITE";
}

impl FromStr for TimeLimit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::option("time", s, Self::ALLOWED);
        if s.eq_ignore_ascii_case("infinite") || s.eq_ignore_ascii_case("unlimited") {
            return Ok(TimeLimit::Infinite);
        }
        let number = |f: &str| -> Result<u64, Error> {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            f.parse().map_err(|_| bad())
        };
        let (days, clock) = match s.split_once('-') {
            Some((d, rest)) => (Some(number(d)?), rest),
            None => (None, s),
        };
        let fields = clock
            .split(':')
            .map(number)
            .collect::<Result<Vec<_>, _>>()?;
        // (hours, minutes, seconds), and the bound on each field after the first.
        let (h, m, sec) = match (days.is_some(), fields.as_slice()) {
            (false, [m]) => (0, *m, 0),
            (false, [m, s]) => (0, *m, *s),
            (false, [h, m, s]) => (*h, *m, *s),
            (true, [h]) => (*h, 0, 0),
            (true, [h, m]) => (*h, *m, 0),
            (true, [h, m, s]) => (*h, *m, *s),
            _ => return Err(bad()),
        };
        let leading_minutes = days.is_none() && fields.len() <= 2;
        let in_range = (days.is_none() || h < 24)
            && (leading_minutes || m < 60)
            && ((fields.len() == 1 && days.is_none()) || sec < 60);
        if !in_range {
            return Err(bad());
        }
        let total = days
            .unwrap_or(0)
            .checked_mul(86_400)
            .and_then(|d| d.checked_add(h.checked_mul(3600)?))
            .and_then(|t| t.checked_add(m.checked_mul(60)?))
            .and_then(|t| t.checked_add(sec))
            .ok_or_else(bad)?;
        if total == 0 {
            return Err(Error::option(
                "time",
                s,
                "a positive time (Slurm reads 0 as no limit: write INFINITE for that)",
            ));
        }
        Ok(TimeLimit::Seconds(total))
    }
}

impl TryFrom<String> for TimeLimit {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl fmt::Display for TimeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TimeLimit::Infinite => f.write_str("INFINITE"),
            TimeLimit::Seconds(t) => write!(
                f,
                "{}-{:02}:{:02}:{:02}",
                t / 86_400,
                t % 86_400 / 3600,
                t % 3600 / 60,
                t % 60
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ron(text: &str) -> Result<SlurmOptions, ron::error::SpannedError> {
        ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str(text)
    }

    #[test]
    fn time_formats_become_seconds() {
        // (text, hand-computed seconds)
        for (text, secs) in [
            ("90", 90 * 60),
            ("5:30", 5 * 60 + 30),
            ("1:30:00", 5400),
            ("100:00", 6000),
            ("2-0", 2 * 86_400),
            ("1-12", 86_400 + 12 * 3600),
            ("1-02:03", 86_400 + 2 * 3600 + 3 * 60),
            ("3-04:05:06", 3 * 86_400 + 4 * 3600 + 5 * 60 + 6),
            ("48:00:00", 48 * 3600),
        ] {
            assert_eq!(
                text.parse::<TimeLimit>().unwrap(),
                TimeLimit::Seconds(secs),
                "{text}"
            );
        }
        assert_eq!(
            "INFINITE".parse::<TimeLimit>().unwrap(),
            TimeLimit::Infinite
        );
        assert_eq!(
            "unlimited".parse::<TimeLimit>().unwrap(),
            TimeLimit::Infinite
        );
    }

    #[test]
    fn time_is_written_as_days_hours_minutes_seconds() {
        assert_eq!(TimeLimit::Seconds(5400).to_string(), "0-01:30:00");
        assert_eq!(
            TimeLimit::Seconds(3 * 86_400 + 4 * 3600 + 5 * 60 + 6).to_string(),
            "3-04:05:06"
        );
        assert_eq!(TimeLimit::Seconds(59).to_string(), "0-00:00:59");
        assert_eq!(TimeLimit::Infinite.to_string(), "INFINITE");
    }

    #[test]
    fn bad_times_are_refused_with_the_value_and_the_formats() {
        for text in [
            "",
            "0",
            "0:00",
            "abc",
            "1:2:3:4",
            "1:60:00",
            "1:00:60",
            "5:60",
            "1-24",
            "1-2:3:4:5",
            "-5",
            "1-",
            "1.5",
            "+5",
            " 5",
            "1--2",
            "99999999999999999999",
        ] {
            let err = text.parse::<TimeLimit>().unwrap_err().to_string();
            assert!(err.contains("time"), "{text}: {err}");
            assert!(err.contains(&format!("`{text}`")), "{text}: {err}");
        }
        let err = "0".parse::<TimeLimit>().unwrap_err().to_string();
        assert!(err.contains("INFINITE"), "{err}");
    }

    #[test]
    fn the_ron_section_reads_every_field() {
        let o = ron(r#"(
            job_name: "lr-sweep",
            partition: "gpu",
            account: "proj42",
            time: "2:00:00",
            cpus_per_task: 4,
            gpus_per_task: 1,
            array_size: 16,
            max_concurrent: 8,
            extra: ["--qos=normal", "--mem-per-cpu=2G"],
        )"#)
        .unwrap();
        assert_eq!(
            o,
            SlurmOptions {
                job_name: Some("lr-sweep".into()),
                partition: Some("gpu".into()),
                account: Some("proj42".into()),
                time: Some(TimeLimit::Seconds(7200)),
                cpus_per_task: Some(4),
                gpus_per_task: Some(1),
                array_size: Some(16),
                max_concurrent: Some(8),
                extra: vec!["--qos=normal".into(), "--mem-per-cpu=2G".into()],
            }
        );
        assert_eq!(ron("()").unwrap(), SlurmOptions::default());
    }

    #[test]
    fn the_ron_section_refuses_unknown_fields_and_bad_times() {
        let err = ron(r#"(partition: "gpu", gpus: 2)"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpus"), "{err}");
        let err = ron(r#"(time: "1:75:00")"#).unwrap_err().to_string();
        assert!(err.contains("1:75:00"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file_and_extra_lines_add_up() {
        let file = SlurmOptions {
            partition: Some("cpu".into()),
            account: Some("proj42".into()),
            cpus_per_task: Some(2),
            extra: vec!["--qos=low".into()],
            ..Default::default()
        };
        let flags = SlurmOptions {
            partition: Some("gpu".into()),
            time: Some(TimeLimit::Seconds(60)),
            extra: vec!["--mem=4G".into()],
            ..Default::default()
        };
        let m = file.merged(&flags);
        assert_eq!(m.partition.as_deref(), Some("gpu"));
        assert_eq!(m.account.as_deref(), Some("proj42"));
        assert_eq!(m.time, Some(TimeLimit::Seconds(60)));
        assert_eq!(m.cpus_per_task, Some(2));
        assert_eq!(m.gpus_per_task, None);
        assert_eq!(m.extra, ["--qos=low", "--mem=4G"]);
    }

    #[test]
    fn validation_names_the_option_and_value() {
        let cases: [(SlurmOptions, &str, &str); 6] = [
            (
                SlurmOptions {
                    cpus_per_task: Some(0),
                    ..Default::default()
                },
                "cpus_per_task",
                "`0`",
            ),
            (
                SlurmOptions {
                    array_size: Some(0),
                    ..Default::default()
                },
                "array_size",
                "`0`",
            ),
            (
                SlurmOptions {
                    max_concurrent: Some(0),
                    ..Default::default()
                },
                "max_concurrent",
                "`0`",
            ),
            (
                SlurmOptions {
                    partition: Some("a b".into()),
                    ..Default::default()
                },
                "partition",
                "`a b`",
            ),
            (
                SlurmOptions {
                    account: Some(String::new()),
                    ..Default::default()
                },
                "account",
                "``",
            ),
            (
                SlurmOptions {
                    extra: vec!["qos=high".into()],
                    ..Default::default()
                },
                "extra",
                "`qos=high`",
            ),
        ];
        for (o, option, value) in cases {
            let err = o.validate().unwrap_err().to_string();
            assert!(err.contains(option) && err.contains(value), "{err}");
        }
        let newline = SlurmOptions {
            extra: vec!["--qos=a\n#SBATCH --x".into()],
            ..Default::default()
        };
        assert!(newline.validate().is_err());
        assert!(SlurmOptions::default().validate().is_ok());
    }

    #[test]
    fn array_tasks_default_to_one_per_point_and_never_exceed_the_grid() {
        let none = SlurmOptions::default();
        assert_eq!(none.array_tasks(48), 48);
        assert_eq!(none.array_tasks(0), 1);
        let sixteen = SlurmOptions {
            array_size: Some(16),
            ..Default::default()
        };
        assert_eq!(sixteen.array_tasks(48), 16);
        assert_eq!(sixteen.array_tasks(5), 5);
    }
}
