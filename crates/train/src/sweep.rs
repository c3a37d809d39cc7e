//! Sweeps: the grid of recipes × learning rates × seeds (× models × data), each point one run
//! with its own identity (see [`crate::identity`]), run in this process or as worker processes of
//! `fp8 train`, resumable and shardable.
//!
//! Expanding the grid resolves every point up front (so a bad option or file fails before any
//! training), drops exact duplicates with a warning (`seeds: [0, 0]` is one run, and counts once
//! in the results), and gives every distinct configuration its own directory
//! `OUT/runs/<recipe>-<model>-lr<lr>-s<seed>-<id>`: two recipe files with the same stem, or a
//! changed `steps`, make different points. When different recipe files share a stem, their
//! names in the results are their paths without the extension.
//!
//! A point is finished when its directory holds a readable `summary.json` and `curves.json` and
//! the identity stored there is the point's; a point with a damaged file is run again (resumed
//! from its newest intact checkpoint), never stopping the sweep. Any other point is started with
//! `resume`, so an interrupted run continues from its last checkpoint. `--shard i/n` takes the
//! points whose grid index is `i` modulo `n`, so job arrays cover the grid exactly once. Before a
//! point runs it is claimed (`OUT/claims/<run name>/`, see [`crate::claim`]), so runners sharing
//! `OUT` never run one point at once and a dead runner's point is taken over. After each run, its
//! line is appended to `OUT/results.jsonl`; at the end of a run of the whole grid (one shard) the
//! file is rewritten (atomically) from every finished point so that loss gaps to the baseline
//! (same model, data, learning rate and seed) are complete. A shard of several leaves that to a
//! collect step ([`write_results`], `fp8 sweep --collect`): its view of the grid is partial.

use crate::claim::{Claim, ClaimRules, Claimed};
use crate::config::TrainConfig;
use crate::identity::RunIdentity;
use crate::ladder::Ladder;
use crate::observer::Silent;
use crate::setup::resolve;
use anyhow::{bail, Context};
use fp8_core::FusedAutodiffBackend;
use fp8_stats::results::{append_result, write_atomic, Curves, RunResult, Summary};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A sweep file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Recipe files. The first is the baseline for loss gaps unless `baseline` names another.
    pub recipes: Vec<PathBuf>,
    /// Recipe templates expanded over lists of formats (see [`crate::ladder`]); their rungs
    /// follow `recipes`, written as recipe files under `OUT/recipes/`.
    #[serde(default)]
    pub ladders: Vec<Ladder>,
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
    /// Cluster options of `fp8 sweep --slurm` (flags override them); ignored otherwise.
    #[serde(default)]
    pub slurm: Option<fp8_slurm::SlurmOptions>,
}

impl SweepFile {
    /// Read a sweep file; errors name the file, line and column. Recipe paths are relative to
    /// the working directory, like `fp8 train --recipe`.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let s: SweepFile = crate::config::read_ron(path, "sweep file")?;
        if (s.recipes.is_empty() && s.ladders.is_empty())
            || s.learning_rates.is_empty()
            || s.seeds.is_empty()
        {
            bail!(
                "{}: `recipes` (or `ladders`), `learning_rates` and `seeds` must each name at \
                 least one value",
                path.display()
            );
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

    /// Every recipe file of the sweep: `recipes`, then the ladders' rungs (written under
    /// `out/recipes/`).
    pub fn recipe_files(&self, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut files = self.recipes.clone();
        for l in &self.ladders {
            files.extend(l.write(&out.join("recipes"))?);
        }
        Ok(files)
    }

    /// The recipes' names in results: file stems, or, for different files that share a stem,
    /// the shortest tail of their paths (without the extension) that tells them apart.
    fn labels(recipes: &[PathBuf]) -> anyhow::Result<Vec<String>> {
        let mut texts = Vec::new();
        for r in recipes {
            texts.push(
                std::fs::read_to_string(r)
                    .with_context(|| format!("cannot read recipe file {}", r.display()))?,
            );
        }
        let tail = |p: &Path, n: usize| {
            let p = p.with_extension("");
            let parts: Vec<String> = p
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .filter(|c| c != "/")
                .collect();
            parts[parts.len().saturating_sub(n)..].join("/")
        };
        let mut labels = Vec::new();
        for (i, r) in recipes.iter().enumerate() {
            let clash: Vec<usize> = (0..recipes.len())
                .filter(|&j| stem(&recipes[j]) == stem(r) && texts[j] != texts[i])
                .collect();
            if clash.is_empty() {
                labels.push(stem(r));
                continue;
            }
            let depth = r.components().count();
            let n = (2..=depth)
                .find(|&n| clash.iter().all(|&j| tail(&recipes[j], n) != tail(r, n)))
                .unwrap_or(depth);
            labels.push(tail(r, n));
        }
        Ok(labels)
    }

    /// Every distinct grid point, in a fixed order, each with its run directory under `out`.
    pub fn grid(&self, out: &Path) -> anyhow::Result<Grid> {
        let base = self.train.clone().unwrap_or_default();
        let or_default = |v: &Vec<String>, d: &String| {
            if v.is_empty() {
                vec![d.clone()]
            } else {
                v.clone()
            }
        };
        let models = or_default(&self.models, &base.model);
        let datas = or_default(&self.data, &base.data);
        let recipes = self.recipe_files(out)?;
        let labels = Self::labels(&recipes)?;
        let baseline = self.baseline.clone().unwrap_or_else(|| labels[0].clone());
        if !labels.contains(&baseline) {
            bail!(
                "`baseline` = {baseline:?} is not one of the sweep's recipes ({})",
                labels.join(", ")
            );
        }
        let mut grid = Grid {
            points: Vec::new(),
            duplicates: Vec::new(),
            baseline,
        };
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for model in &models {
            for data in &datas {
                for (recipe, label) in recipes.iter().zip(&labels) {
                    for &lr in &self.learning_rates {
                        for &seed in &self.seeds {
                            let mut c = base.clone();
                            c.recipe = recipe.clone();
                            c.recipe_label = (*label != stem(recipe)).then(|| label.clone());
                            c.model = model.clone();
                            c.data = data.clone();
                            c.lr = lr;
                            c.seed = seed;
                            c.steps = self.steps;
                            c.min_lr = base.min_lr.min(lr);
                            c.run_dir = None;
                            let what = format!(
                                "recipe {}, model {model}, data {data}, lr {lr}, seed {seed}",
                                recipe.display()
                            );
                            let resolved =
                                resolve(&c).with_context(|| format!("sweep point {what}"))?;
                            let id = resolved.identity.id();
                            if let Some(first) = seen.get(&id) {
                                grid.duplicates.push(format!(
                                    "{what} is the same run as {first}; it is trained and \
                                     counted once"
                                ));
                                continue;
                            }
                            seen.insert(id.clone(), what);
                            let mut name = c.run_name_prefix();
                            if datas.len() > 1 {
                                name.push_str(&format!("-d{}", crate::config::safe_name(data)));
                            }
                            c.run_dir = Some(out.join("runs").join(format!("{name}-{id}")));
                            grid.points.push(SweepPoint {
                                config: c,
                                identity: resolved.identity,
                                id,
                            });
                        }
                    }
                }
            }
        }
        Ok(grid)
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map_or_else(|| "recipe".into(), |s| s.to_string_lossy().into_owned())
}

/// One distinct run of a sweep.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    /// Its configuration, `run_dir` set.
    pub config: TrainConfig,
    pub identity: RunIdentity,
    /// The identity's id.
    pub id: String,
}

impl SweepPoint {
    pub fn run_dir(&self) -> PathBuf {
        self.config.run_dir.clone().unwrap_or_default()
    }

    /// The run directory's name.
    pub fn name(&self) -> String {
        let d = self.run_dir();
        d.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }
}

/// The expanded grid of a sweep.
#[derive(Clone, Debug)]
pub struct Grid {
    pub points: Vec<SweepPoint>,
    /// One line per grid entry dropped as an exact duplicate of an earlier one.
    pub duplicates: Vec<String>,
    /// The baseline recipe's name.
    pub baseline: String,
}

impl Grid {
    /// The baseline point `p` is compared with: the baseline recipe's point with the same
    /// model, data, learning rate and seed.
    pub fn baseline_of(&self, p: &SweepPoint) -> Option<&SweepPoint> {
        self.points.iter().find(|b| {
            let (b, c) = (&b.config, &p.config);
            b.recipe_name() == self.baseline
                && b.model == c.model
                && b.data == c.data
                && b.lr == c.lr
                && b.seed == c.seed
        })
    }
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

/// The summary and curves a finished run left.
pub struct FinishedRun {
    pub point: SweepPoint,
    pub summary: Summary,
    pub curves: Curves,
}

/// Where a sweep point stands.
pub enum PointStatus {
    Finished(Box<FinishedRun>),
    NotRun,
    /// Started or finished, but a file a finished run leaves is damaged or missing, or the
    /// directory holds another run; the reason.
    Damaged(String),
}

/// Read what `point`'s run directory holds.
pub fn status(point: &SweepPoint) -> PointStatus {
    let dir = point.run_dir();
    let summary = match Summary::read(&dir.join("summary.json")) {
        Ok(s) => s,
        Err(e) if e.is_missing() => return PointStatus::NotRun,
        Err(e) => return PointStatus::Damaged(e.to_string()),
    };
    let curves = match Curves::read(&dir) {
        Ok(c) => c,
        Err(e) => return PointStatus::Damaged(e.to_string()),
    };
    match RunIdentity::load(&dir) {
        Ok(Some(stored)) if stored.id() == point.id => {}
        Ok(_) => {
            return PointStatus::Damaged(format!(
                "{} does not hold this point's identity {}",
                dir.display(),
                point.id
            ))
        }
        Err(e) => return PointStatus::Damaged(format!("{e:#}")),
    }
    PointStatus::Finished(Box::new(FinishedRun {
        point: point.clone(),
        summary,
        curves,
    }))
}

fn finished(point: &SweepPoint) -> Option<FinishedRun> {
    match status(point) {
        PointStatus::Finished(r) => Some(*r),
        _ => None,
    }
}

/// One results.jsonl line; the gap is measured against `baseline` when given.
pub fn result_line(run: &FinishedRun, baseline: Option<&FinishedRun>, out: &Path) -> RunResult {
    let s = &run.summary;
    let dir = run.point.run_dir();
    RunResult {
        recipe: run.point.config.recipe_name(),
        model: run.point.config.model.clone(),
        lr: run.point.config.lr,
        seed: run.point.config.seed,
        outcome: s.outcome,
        diverged_step: s.diverged_step,
        final_loss: s.final_train_loss.unwrap_or(f64::NAN),
        best_loss: s.best_train_loss.unwrap_or(f64::NAN),
        initial_loss: s.initial_loss,
        spike_count: s.spike_count,
        loss_gap: baseline
            .and_then(|b| fp8_stats::loss_gap::loss_gap(&run.curves.losses, &b.curves.losses, 0.9)),
        max_sharpness: s.max_sharpness,
        steps: s.steps,
        run_dir: dir.strip_prefix(out).unwrap_or(&dir).display().to_string(),
    }
}

/// Rewrite `results.jsonl` from every finished point of the grid (atomically). Returns the
/// number of lines.
pub fn write_results(grid: &Grid, out: &Path) -> anyhow::Result<usize> {
    let runs: Vec<FinishedRun> = grid.points.iter().filter_map(finished).collect();
    let mut text = String::new();
    for r in &runs {
        let base = grid
            .baseline_of(&r.point)
            .and_then(|b| runs.iter().find(|x| x.point.id == b.id));
        text.push_str(&serde_json::to_string(&result_line(r, base, out))?);
        text.push('\n');
    }
    write_atomic(&out.join("results.jsonl"), text.as_bytes())?;
    Ok(runs.len())
}

/// What a sweep invocation did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Distinct points of this shard.
    pub total: usize,
    /// Points already finished before this invocation.
    pub skipped: usize,
    /// Points finished now.
    pub finished: usize,
    /// Run names of the points that failed.
    pub failed: Vec<String>,
    /// Points left to another runner that holds their claim.
    pub held_elsewhere: usize,
    /// Grid entries dropped as exact duplicates.
    pub duplicates: usize,
}

/// Receives a sweep's progress. Every method has an empty default.
pub trait SweepObserver {
    /// A line worth showing: the plan, a duplicate dropped, a damaged point re-run.
    fn note(&mut self, _line: &str) {}
    /// Point `name` finished (`done` of `of` this invocation runs).
    fn finished(&mut self, _done: usize, _of: usize, _name: &str, _result: &RunResult) {}
    /// Point `name` failed, for the reason given.
    fn failed(&mut self, _done: usize, _of: usize, _name: &str, _why: &str) {}
}

impl SweepObserver for Silent {}

/// The grid, this shard's points still to run, and the report so far.
fn plan(
    sweep: &SweepFile,
    out: &Path,
    shard: Shard,
    jobs: usize,
    observer: &mut dyn SweepObserver,
) -> anyhow::Result<(Grid, Vec<SweepPoint>, SweepReport)> {
    if jobs == 0 {
        bail!("`--jobs` = 0: at least one worker is needed");
    }
    let grid = sweep.grid(out)?;
    for d in &grid.duplicates {
        observer.note(&format!("warning: duplicate grid entry dropped: {d}"));
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mine = shard.take(&grid.points);
    let mut report = SweepReport {
        total: mine.len(),
        duplicates: grid.duplicates.len(),
        ..Default::default()
    };
    let mut todo = Vec::new();
    for p in mine {
        match status(&p) {
            PointStatus::Finished(_) => report.skipped += 1,
            PointStatus::NotRun => todo.push(p),
            PointStatus::Damaged(why) => {
                observer.note(&format!("warning: {why}; running {} again", p.name()));
                todo.push(p);
            }
        }
    }
    observer.note(&format!(
        "sweep: shard {}/{} holds {} of the grid's {} runs; {} already finished, {} to run with \
         {jobs} worker(s)",
        shard.index,
        shard.count,
        report.total,
        grid.points.len(),
        report.skipped,
        todo.len()
    ));
    Ok((grid, todo, report))
}

/// After a point's run ended: append its result line, or record the failure.
fn conclude(
    grid: &Grid,
    point: &SweepPoint,
    failure: Option<String>,
    out: &Path,
    (done, of): (usize, usize),
    report: &mut SweepReport,
    observer: &mut dyn SweepObserver,
) -> anyhow::Result<()> {
    let name = point.name();
    match (failure, status(point)) {
        (None, PointStatus::Finished(run)) => {
            let base = grid.baseline_of(point).and_then(finished);
            let line = result_line(&run, base.as_ref(), out);
            if let Some(w) = append_result(&out.join("results.jsonl"), &line)? {
                observer.note(&format!("warning: {w}"));
            }
            observer.finished(done, of, &name, &line);
            report.finished += 1;
        }
        (failure, status) => {
            let why = failure.unwrap_or_else(|| match status {
                PointStatus::Damaged(why) => why,
                _ => "the run left no summary".into(),
            });
            observer.failed(done, of, &name, &why);
            report.failed.push(name);
        }
    }
    Ok(())
}

/// Run this shard of the sweep here, one point after another, on backend `B`.
pub fn run_in_process<B: FusedAutodiffBackend>(
    sweep: &SweepFile,
    out: &Path,
    shard: Shard,
    device: &B::Device,
    observer: &mut dyn SweepObserver,
) -> anyhow::Result<SweepReport> {
    let (grid, todo, mut report) = plan(sweep, out, shard, 1, observer)?;
    let of = todo.len();
    for (i, p) in todo.iter().enumerate() {
        let Some(_claim) = claim_point(p, out, &mut report, observer)? else {
            continue;
        };
        let failure = crate::train::train::<B>(&p.config, device, true, &mut Silent)
            .err()
            .map(|e| format!("{e:#}"));
        conclude(&grid, p, failure, out, (i + 1, of), &mut report, observer)?;
    }
    if shard.count == 1 {
        write_results(&grid, out)?;
        crate::sweep_tb::write_tensorboard(&grid, out)?;
    }
    Ok(report)
}

/// Run this shard of the sweep with `jobs` worker processes of `exe train` (an `fp8` binary, or
/// any binary whose `main` is `fp8_cli::main`), each with one compute thread.
pub fn run_workers(
    sweep: &SweepFile,
    out: &Path,
    shard: Shard,
    jobs: usize,
    exe: &Path,
    observer: &mut dyn SweepObserver,
) -> anyhow::Result<SweepReport> {
    let (grid, todo, mut report) = plan(sweep, out, shard, jobs, observer)?;
    let of = todo.len();
    let mut queue = todo.into_iter();
    let mut running: Vec<(SweepPoint, std::process::Child, Claim)> = Vec::new();
    let mut done = 0;
    loop {
        while running.len() < jobs {
            let Some(p) = queue.next() else { break };
            let Some(claim) = claim_point(&p, out, &mut report, observer)? else {
                continue;
            };
            let child = spawn(&p.config, exe)?;
            running.push((p, child, claim));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            if let Some(exit) = running[i].1.try_wait()? {
                let (p, _, _claim) = running.swap_remove(i);
                done += 1;
                let failure = (!exit.success() && exit.code() != Some(3)).then(|| {
                    format!(
                        "FAILED ({exit}); see {}",
                        p.run_dir().join("train.log").display()
                    )
                });
                conclude(&grid, &p, failure, out, (done, of), &mut report, observer)?;
            } else {
                i += 1;
            }
        }
    }
    if shard.count == 1 {
        write_results(&grid, out)?;
        crate::sweep_tb::write_tensorboard(&grid, out)?;
    }
    Ok(report)
}

/// Claim `point` for this runner (see [`crate::claim`]). `None`, counted in the report, when
/// another runner holds it, or finished it between [`plan`] and the claim.
fn claim_point(
    point: &SweepPoint,
    out: &Path,
    report: &mut SweepReport,
    observer: &mut dyn SweepObserver,
) -> anyhow::Result<Option<Claim>> {
    let name = point.name();
    let dir = out.join("claims").join(&name);
    match crate::claim::claim(&dir, &ClaimRules::default())? {
        Claimed::Held(holder) => {
            let by = holder.map_or_else(|| "another runner".into(), |h| h.to_string());
            observer.note(&format!("{name} is being run by {by}; left to it"));
            report.held_elsewhere += 1;
            Ok(None)
        }
        Claimed::Won(claim) => {
            if let Some(gone) = claim.taken_over() {
                let by = gone
                    .as_ref()
                    .map_or_else(|| "a runner".into(), |h| h.to_string());
                observer.note(&format!(
                    "{name} was claimed by {by}, which is gone; taking it over (claim {})",
                    claim.generation()
                ));
            }
            if matches!(status(point), PointStatus::Finished(_)) {
                report.skipped += 1;
                return Ok(None);
            }
            Ok(Some(claim))
        }
    }
}

/// Start `exe train --config <run dir>/sweep-config.ron --resume`, logging into the run
/// directory's `train.log`.
fn spawn(c: &TrainConfig, exe: &Path) -> anyhow::Result<std::process::Child> {
    let dir = c.run_dir.clone().unwrap_or_default();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg_path = dir.join("sweep-config.ron");
    write_atomic(
        &cfg_path,
        ron::ser::to_string_pretty(c, Default::default())?.as_bytes(),
    )?;
    // Append: a resumed run keeps the log of its interrupted segment.
    let log_path = dir.join("train.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
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
            recipes: vec![
                "../../recipes/fp32.ron".into(),
                "../../recipes/bf16.ron".into(),
            ],
            learning_rates: vec![1e-3, 1e-2],
            seeds: vec![1, 2, 3],
            steps: 5,
            models: vec!["tiny".into()],
            data: vec![],
            baseline: None,
            // The tiny model's context is 16 tokens.
            train: Some(TrainConfig {
                seq: 16,
                ..TrainConfig::default()
            }),
            ..SweepFile::default()
        }
    }

    fn dirs(grid: &Grid) -> Vec<PathBuf> {
        grid.points.iter().map(|p| p.run_dir()).collect()
    }

    #[test]
    fn shards_cover_the_grid_exactly_once() {
        let grid = sweep().grid(Path::new("out")).unwrap();
        assert_eq!(grid.points.len(), 2 * 2 * 3);
        for n in 1..=5 {
            let mut seen: Vec<PathBuf> = (0..n)
                .flat_map(|i| Shard { index: i, count: n }.take(&grid.points))
                .map(|p| p.run_dir())
                .collect();
            seen.sort();
            let mut all = dirs(&grid);
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
    fn duplicates_are_dropped_and_distinct_configurations_get_distinct_dirs() {
        let dup = SweepFile {
            recipes: vec![
                "../../recipes/fp32.ron".into(),
                "../../recipes/fp32.ron".into(),
            ],
            learning_rates: vec![1e-3, 1e-3, 1e-2],
            seeds: vec![0, 0],
            ..sweep()
        };
        let grid = dup.grid(Path::new("out")).unwrap();
        assert_eq!(grid.points.len(), 2);
        assert_eq!(grid.duplicates.len(), 2 * 3 * 2 - 2);
        let mut d = dirs(&grid);
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 2);

        // The same stem with different content: two points, told apart by name.
        let tmp = tempfile::tempdir().unwrap();
        let alt = tmp.path().join("alt");
        std::fs::create_dir_all(&alt).unwrap();
        std::fs::copy("../../recipes/bf16.ron", alt.join("fp32.ron")).unwrap();
        let two = SweepFile {
            recipes: vec!["../../recipes/fp32.ron".into(), alt.join("fp32.ron")],
            learning_rates: vec![1e-3],
            seeds: vec![0],
            ..sweep()
        };
        let grid = two.grid(Path::new("out")).unwrap();
        assert_eq!(grid.points.len(), 2);
        assert_ne!(grid.points[0].run_dir(), grid.points[1].run_dir());
        let names: Vec<String> = grid.points.iter().map(|p| p.config.recipe_name()).collect();
        assert_ne!(names[0], names[1]);
        assert!(names[1].ends_with("alt/fp32"), "{names:?}");

        // Changed steps: new points.
        let longer = SweepFile {
            steps: 6,
            ..sweep()
        };
        let a = dirs(&sweep().grid(Path::new("out")).unwrap());
        let b = dirs(&longer.grid(Path::new("out")).unwrap());
        assert!(a.iter().all(|d| !b.contains(d)));
    }

    #[test]
    fn ladders_expand_into_recipes_after_the_listed_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let ladder = SweepFile {
            ladders: vec![Ladder {
                template: "../../recipes/bit_reduction_e8m3.ron".into(),
                formats: vec!["e8m5".into(), "e5m7".into()],
            }],
            learning_rates: vec![1e-3],
            seeds: vec![0],
            ..sweep()
        };
        let grid = ladder.grid(tmp.path()).unwrap();
        let names: Vec<String> = grid.points.iter().map(|p| p.config.recipe_name()).collect();
        assert_eq!(
            names,
            ["fp32", "bf16", "bit_reduction_e8m5", "bit_reduction_e5m7"]
        );
        let rung = std::fs::read_to_string(tmp.path().join("recipes/bit_reduction_e5m7.ron"));
        assert!(rung.unwrap().contains("format: \"e5m7\""));
        // A rung is a recipe like any other: its identity is its content.
        assert_ne!(grid.points[2].id, grid.points[3].id);
    }

    #[test]
    fn bad_points_fail_before_any_work() {
        let bad = SweepFile {
            train: Some(TrainConfig {
                beta1: 2.0,
                ..TrainConfig::default()
            }),
            ..sweep()
        };
        let e = format!("{:#}", bad.grid(Path::new("out")).unwrap_err());
        assert!(e.contains("`beta1` = 2"), "{e}");
        let e = format!(
            "{:#}",
            SweepFile {
                baseline: Some("nope".into()),
                ..sweep()
            }
            .grid(Path::new("out"))
            .unwrap_err()
        );
        assert!(e.contains("`baseline` = \"nope\""), "{e}");
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
