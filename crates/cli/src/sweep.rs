//! Sweeps: the grid of recipes × learning rates × seeds (× models × data), run as worker
//! processes of `fp8 train`, resumable and shardable.
//!
//! Each grid point has its own run directory under `OUT/runs/`. A point whose run directory holds
//! `summary.json` is finished and skipped; any other point is started with `--resume`, so an
//! interrupted run continues from its last checkpoint. `--shard i/n` takes the points whose grid
//! index is `i` modulo `n`, so job arrays cover the grid exactly once. After each run, its line is
//! appended to `OUT/results.jsonl`; at the end the file is rewritten from every finished run so
//! that loss gaps to the baseline (same model, data, learning rate and seed) are complete.

use crate::train::TrainConfig;
use anyhow::{bail, Context};
use fp8_stats::results::{Outcome as ResultOutcome, RunResult};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A sweep file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Recipe files. The first is the baseline for loss gaps unless `baseline` names another.
    pub recipes: Vec<PathBuf>,
    pub learning_rates: Vec<f64>,
    pub seeds: Vec<u64>,
    pub steps: u64,
    /// Model presets or files (default: the `fp8 train` default).
    #[serde(default)]
    pub models: Vec<String>,
    /// Data specs (default: the `fp8 train` default).
    #[serde(default)]
    pub data: Vec<String>,
    /// Recipe name (file stem) of the baseline.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Every other training option, as in an `fp8 train --config` file.
    #[serde(default)]
    pub train: Option<TrainConfig>,
}

impl SweepFile {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let s: SweepFile = crate::train::config::read_ron(path, "sweep file")?;
        if s.recipes.is_empty() || s.learning_rates.is_empty() || s.seeds.is_empty() {
            bail!(
                "{}: `recipes`, `learning_rates` and `seeds` must each name at least one value",
                path.display()
            );
        }
        // Recipe paths are relative to the working directory, like `fp8 train --recipe`.
        for r in &s.recipes {
            fp8_core::recipe::from_file(r)?;
        }
        Ok(s)
    }

    /// Worker processes when `--jobs` is not given: one per CPU core, or one in all when the
    /// runs train on a GPU (they would share the one device).
    pub fn default_jobs(&self) -> usize {
        match &self.train {
            Some(t) if t.device != "cpu" => 1,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    pub fn baseline_name(&self) -> String {
        self.baseline
            .clone()
            .unwrap_or_else(|| stem(&self.recipes[0]))
    }

    /// Every grid point's training configuration, in a fixed order, with its run directory under
    /// `out`.
    pub fn grid(&self, out: &Path) -> Vec<TrainConfig> {
        let base = self.train.clone().unwrap_or_default();
        let models = if self.models.is_empty() {
            vec![base.model.clone()]
        } else {
            self.models.clone()
        };
        let datas = if self.data.is_empty() {
            vec![base.data.clone()]
        } else {
            self.data.clone()
        };
        let mut grid = Vec::new();
        for model in &models {
            for data in &datas {
                for recipe in &self.recipes {
                    for &lr in &self.learning_rates {
                        for &seed in &self.seeds {
                            let mut c = base.clone();
                            c.recipe = recipe.clone();
                            c.model = model.clone();
                            c.data = data.clone();
                            c.lr = lr;
                            c.seed = seed;
                            c.steps = self.steps;
                            c.min_lr = base.min_lr.min(lr);
                            let mut name =
                                format!("{}-{}-lr{lr}-s{seed}", stem(recipe), safe(model));
                            if datas.len() > 1 {
                                name.push_str(&format!("-d{}", safe(data)));
                            }
                            c.run_dir = Some(out.join("runs").join(name));
                            grid.push(c);
                        }
                    }
                }
            }
        }
        grid
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map_or_else(|| "recipe".into(), |s| s.to_string_lossy().into_owned())
}

fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `i/n`: this worker's share of the grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard `{s}`: expected i/n with 0 ≤ i < n, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    pub fn all() -> Self {
        Shard { index: 0, count: 1 }
    }
    pub fn take<T: Clone>(&self, grid: &[T]) -> Vec<T> {
        grid.iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index)
            .map(|(_, c)| c.clone())
            .collect()
    }
}

/// The loss curve and summary a finished run left.
pub struct FinishedRun {
    pub config: TrainConfig,
    pub summary: serde_json::Value,
    pub curves: Curves,
}

/// `curves.json` of a run: `[step, value]` pairs. serde_json writes a NaN or infinite loss (a
/// diverged run's last point) as `null`; it reads back as NaN.
#[derive(Clone, Debug, Default, serde::Serialize, Deserialize)]
pub struct Curves {
    #[serde(default, deserialize_with = "nan_for_null")]
    pub losses: Vec<(u64, f64)>,
    #[serde(default, deserialize_with = "nan_for_null")]
    pub val_losses: Vec<(u64, f64)>,
    #[serde(default, deserialize_with = "nan_for_null")]
    pub sharpness: Vec<(u64, f64)>,
}

fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(u64, f64)>, D::Error> {
    let points: Vec<(u64, Option<f64>)> = Deserialize::deserialize(d)?;
    Ok(points
        .into_iter()
        .map(|(s, v)| (s, v.unwrap_or(f64::NAN)))
        .collect())
}

impl Curves {
    /// Read `curves.json` from a run directory.
    pub fn read(run_dir: &Path) -> anyhow::Result<Curves> {
        let file = run_dir.join("curves.json");
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is malformed", file.display()))
    }
}

/// Read a run directory's results, if the run finished.
pub fn finished(config: &TrainConfig) -> anyhow::Result<Option<FinishedRun>> {
    let dir = config.resolved_run_dir();
    let Ok(bytes) = std::fs::read(dir.join("summary.json")) else {
        return Ok(None);
    };
    let summary: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}/summary.json is malformed", dir.display()))?;
    let curves = Curves::read(&dir).unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; this run's loss gap is left out");
        Curves::default()
    });
    Ok(Some(FinishedRun {
        config: config.clone(),
        summary,
        curves,
    }))
}

/// One results.jsonl line; the gap is measured against `baseline` when given.
pub fn result_line(run: &FinishedRun, baseline: Option<&FinishedRun>, out: &Path) -> RunResult {
    let s = &run.summary;
    let f = |k: &str| s.get(k).and_then(|v| v.as_f64());
    let diverged = s.get("outcome").and_then(|v| v.as_str()) == Some("diverged");
    let dir = run.config.resolved_run_dir();
    RunResult {
        recipe: run.config.recipe_name(),
        model: run.config.model.clone(),
        lr: run.config.lr,
        seed: run.config.seed,
        outcome: if diverged {
            ResultOutcome::Diverged
        } else {
            ResultOutcome::Converged
        },
        diverged_step: s.get("step").and_then(|v| v.as_u64()).filter(|_| diverged),
        final_loss: f("final_train_loss").unwrap_or(f64::NAN),
        best_loss: f("best_train_loss").unwrap_or(f64::NAN),
        spike_count: s.get("spike_count").and_then(|v| v.as_u64()).unwrap_or(0),
        loss_gap: baseline
            .and_then(|b| fp8_stats::loss_gap::loss_gap(&run.curves.losses, &b.curves.losses, 0.9)),
        max_sharpness: f("max_sharpness"),
        steps: s.get("steps").and_then(|v| v.as_u64()).unwrap_or(0),
        run_dir: dir.strip_prefix(out).unwrap_or(&dir).display().to_string(),
    }
}

/// The finished baseline run matching `c` (same model, data, learning rate and seed).
fn baseline_of<'a>(
    c: &TrainConfig,
    name: &str,
    runs: &'a [FinishedRun],
) -> Option<&'a FinishedRun> {
    runs.iter().find(|b| is_baseline_for(&b.config, c, name))
}

/// Is `b` the run of baseline recipe `name` that `c` is compared with?
fn is_baseline_for(b: &TrainConfig, c: &TrainConfig, name: &str) -> bool {
    b.recipe_name() == name
        && b.model == c.model
        && b.data == c.data
        && b.lr == c.lr
        && b.seed == c.seed
}

/// Rewrite `results.jsonl` from every finished run of the grid (atomically).
pub fn write_results(sweep: &SweepFile, out: &Path) -> anyhow::Result<usize> {
    let mut runs = Vec::new();
    for c in sweep.grid(out) {
        if let Some(r) = finished(&c)? {
            runs.push(r);
        }
    }
    let name = sweep.baseline_name();
    let mut text = String::new();
    for r in &runs {
        let line = result_line(r, baseline_of(&r.config, &name, &runs), out);
        text.push_str(&serde_json::to_string(&line)?);
        text.push('\n');
    }
    // Shards may share `out`: each writes its own temporary file before the rename.
    let tmp = out.join(format!("results.jsonl.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, out.join("results.jsonl"))?;
    Ok(runs.len())
}

/// Run this shard of the sweep with `jobs` worker processes of `exe train`.
pub fn run_sweep(
    sweep: &SweepFile,
    out: &Path,
    shard: Shard,
    jobs: usize,
    exe: &Path,
) -> anyhow::Result<SweepReport> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let grid = sweep.grid(out);
    let mine = shard.take(&grid);
    let mut todo = Vec::new();
    let mut report = SweepReport {
        total: mine.len(),
        ..Default::default()
    };
    for c in mine {
        if finished(&c)?.is_some() {
            report.skipped += 1;
        } else {
            todo.push(c);
        }
    }
    eprintln!(
        "sweep: shard {}/{} holds {} of the grid's {} runs; {} already finished, {} to run with {} worker(s)",
        shard.index, shard.count, report.total, grid.len(), report.skipped, todo.len(), jobs
    );
    let results_path = out.join("results.jsonl");
    let baseline = sweep.baseline_name();
    let mut queue = todo.into_iter();
    let mut running: Vec<(TrainConfig, std::process::Child)> = Vec::new();
    let total_todo = report.total - report.skipped;
    let mut done = 0;
    loop {
        while running.len() < jobs.max(1) {
            let Some(c) = queue.next() else { break };
            let child = spawn(&c, exe)?;
            running.push((c, child));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].1.try_wait()? {
                let (c, _) = running.swap_remove(i);
                done += 1;
                let name = c
                    .resolved_run_dir()
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                match finished(&c)? {
                    Some(run) => {
                        let base = match grid.iter().find(|b| is_baseline_for(b, &c, &baseline)) {
                            Some(b) => finished(b)?,
                            None => None,
                        };
                        let line = result_line(&run, base.as_ref(), out);
                        if let Some(w) = fp8_stats::results::append_result(&results_path, &line)? {
                            eprintln!("warning: {w}");
                        }
                        let outcome = if line.outcome == ResultOutcome::Diverged {
                            "diverged"
                        } else {
                            "converged"
                        };
                        eprintln!(
                            "[{done}/{total_todo}] {name}: {outcome}, final loss {:.4}",
                            line.final_loss
                        );
                        report.finished += 1;
                    }
                    None => {
                        eprintln!(
                            "[{done}/{total_todo}] {name}: FAILED ({status}); see {}/train.log",
                            c.resolved_run_dir().display()
                        );
                        report.failed.push(name);
                    }
                }
            } else {
                i += 1;
            }
        }
    }
    write_results(sweep, out)?;
    Ok(report)
}

/// What a sweep invocation did.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub total: usize,
    pub skipped: usize,
    pub finished: usize,
    pub failed: Vec<String>,
}

fn spawn(c: &TrainConfig, exe: &Path) -> anyhow::Result<std::process::Child> {
    let dir = c.resolved_run_dir();
    std::fs::create_dir_all(&dir)?;
    let cfg_path = dir.join("sweep-config.ron");
    std::fs::write(
        &cfg_path,
        ron::ser::to_string_pretty(c, Default::default())?,
    )?;
    // Append: a resumed run keeps the log of its interrupted segment.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("train.log"))?;
    Command::new(exe)
        .arg("train")
        .arg("--config")
        .arg(&cfg_path)
        .arg("--resume")
        .env("RAYON_NUM_THREADS", "1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {} train", exe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep() -> SweepFile {
        SweepFile {
            recipes: vec!["recipes/fp32.ron".into(), "recipes/bf16.ron".into()],
            learning_rates: vec![1e-3, 1e-2],
            seeds: vec![1, 2, 3],
            steps: 5,
            models: vec![],
            data: vec![],
            baseline: None,
            train: None,
        }
    }

    #[test]
    fn shards_cover_the_grid_exactly_once() {
        let grid = sweep().grid(Path::new("out"));
        assert_eq!(grid.len(), 2 * 2 * 3);
        for n in 1..=5 {
            let mut seen: Vec<PathBuf> = (0..n)
                .flat_map(|i| Shard { index: i, count: n }.take(&grid))
                .map(|c| c.run_dir.unwrap())
                .collect();
            seen.sort();
            let mut all: Vec<PathBuf> = grid.iter().map(|c| c.run_dir.clone().unwrap()).collect();
            all.sort();
            assert_eq!(seen, all, "n = {n}");
        }
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        assert!("4/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn run_dirs_are_distinct() {
        let grid = sweep().grid(Path::new("out"));
        let mut dirs: Vec<_> = grid.iter().map(|c| c.run_dir.clone()).collect();
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), grid.len());
    }

    #[test]
    fn gpu_sweeps_default_to_one_worker() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(sweep().default_jobs(), cores);
        let on = |device: &str| SweepFile {
            train: Some(TrainConfig {
                device: device.into(),
                ..TrainConfig::default()
            }),
            ..sweep()
        };
        assert_eq!(on("cpu").default_jobs(), cores);
        assert_eq!(on("cuda:0").default_jobs(), 1);
    }
}
