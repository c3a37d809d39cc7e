//! The training configuration: one serde value, filled from defaults, an optional `--config`
//! RON file and command-line flags (in that order), and written resolved into the run directory.
//!
//! [`TrainConfig::validate`] checks every option on its own (ranges, finiteness, consistency);
//! what needs the files it names (recipe, model, data) is checked by
//! [`crate::setup::resolve`], before any work is done.

use fp8_core::fused::adamw::AdamWConfig;
use fp8_formats::DynamicRangeBlocks;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything one training run needs. Field docs are the flag docs of `fp8 train`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Recipe file (RON).
    pub recipe: PathBuf,
    /// Model preset (`tiny`, `gpt2-mini`, `gpt2-124m`, `llama-120m`, …), model RON file, or
    /// `hf:DIR`: a Hugging Face checkpoint (`config.json` and safetensors weights) to fine-tune.
    pub model: String,
    /// Data: `synthetic[:k=v,…]`, a text file or directory, `bpe:PATH[:VOCAB]`, or a directory of
    /// nanoGPT `train.bin`/`val.bin` shards.
    pub data: String,
    /// Optimizer steps.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Tokens per sequence (at most the model's context).
    pub seq: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// Final learning rate of the cosine decay.
    pub min_lr: f64,
    /// Decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off), as PyTorch's `clip_grad_norm_`.
    pub clip: f64,
    /// Micro-batches accumulated per optimizer step.
    pub grad_accum: usize,
    /// Seed for initialization and data order.
    pub seed: u64,
    /// Evaluate validation loss (and sharpness) every N steps (0 = only at the end).
    pub eval_every: u64,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    /// Log training scalars every N steps.
    pub log_every: u64,
    /// Write a checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Log weight and gradient histograms every N steps (0 = never).
    pub histogram_every: u64,
    /// Estimate the loss Hessian's top eigenvalue every N steps (0 = never), logged as
    /// `stability/hessian_top_eig`: power iteration on finite-difference Hessian-vector products
    /// on validation batch 0, on a copy of the model (see `fp8_cli::hessian`). Each estimate
    /// costs up to 40 forward+backward passes of one batch.
    pub hessian_every: u64,
    /// Measure the gradient's quantization noise every N steps (0 = never), logged as
    /// `stability/grad_noise_ratio`: the norm of the unquantized gradient over the norm of the
    /// error the recipe's casts add to it (same weights and batch). Each measurement costs one
    /// extra unquantized forward+backward of the step's batch; training is unchanged by it. Not
    /// measured under data parallelism.
    pub grad_noise_every: u64,
    /// Debug statistics of the recipe's casts on logging steps, as TransformerEngine's
    /// `LogTensorStats`/`LogFp8TensorStats` compute them (logged as
    /// `inspect/<site>/<role>/…`): dynamic range, the largest per-block dynamic range over
    /// blocks of this geometry (`1xN`: N consecutive elements of a row; `NxN`: N×N tiles), MSE,
    /// underflow and overflow percentages, and the scale inverses' min and max. Off when absent;
    /// steps that do not log pay nothing for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inspect: Option<String>,
    /// Recipe files measured on the same tensors on logging steps without being applied
    /// (`counterfactual/<name>/<site>/<role>/…`, `<name>` the file's stem): "what would MXFP8's
    /// underflow be during this delayed-scaling run?". Training is unchanged by them. They turn
    /// `inspect` on (1x32) when it is off. Their scaling state sees only logging steps' tensors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub counterfactuals: Vec<PathBuf>,
    /// ε of the logit sharpness (paper §3.1).
    pub sharpness_eps: f64,
    /// A loss above this multiple of the first loss counts as divergence.
    pub divergence_threshold: f64,
    /// Run directory (default `runs/<recipe>-<model>-lr<lr>-s<seed>-<id>`, where `<id>` is the
    /// run's identity hash, see [`crate::identity`]).
    pub run_dir: Option<PathBuf>,
    /// The recipe's name in results, run names and reports (default: the recipe file's stem).
    /// Sweeps set it when two different recipe files share a stem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipe_label: Option<String>,
    /// Device: `cpu`, `cuda:N` (feature `cuda`) or `wgpu[:N]` (feature `wgpu`).
    pub device: String,
    /// AdamW β₁, β₂, ε.
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            recipe: PathBuf::from("recipes/fp32.ron"),
            model: "gpt2-mini".into(),
            data: "synthetic".into(),
            steps: 1000,
            batch: 16,
            seq: 64,
            lr: 3e-3,
            warmup: 100,
            min_lr: 3e-4,
            weight_decay: 0.1,
            clip: 1.0,
            grad_accum: 1,
            seed: 0,
            eval_every: 100,
            eval_batches: 4,
            log_every: 10,
            checkpoint_every: 250,
            histogram_every: 250,
            hessian_every: 0,
            grad_noise_every: 50,
            inspect: None,
            counterfactuals: Vec::new(),
            sharpness_eps: fp8_stats::sharpness::DEFAULT_EPS,
            divergence_threshold: fp8_stats::divergence::DEFAULT_THRESHOLD,
            run_dir: None,
            recipe_label: None,
            device: "cpu".into(),
            beta1: 0.9,
            beta2: 0.95,
            adam_eps: 1e-8,
        }
    }
}

/// Read a RON file in fp8's dialect; errors name the file (as `what`), line and column.
pub fn read_ron<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
    fp8_core::recipe::ron_options()
        .from_str(&text)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: {}",
                path.display(),
                e.position.line,
                e.position.col,
                e.code
            )
        })
}

impl TrainConfig {
    /// Read a `--config` RON file; errors name the file, line and column.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        read_ron(path, "config")
    }

    /// The recipe's name in run names and results: `recipe_label`, or the file stem.
    pub fn recipe_name(&self) -> String {
        self.recipe_label
            .clone()
            .unwrap_or_else(|| recipe_stem(&self.recipe))
    }

    /// AdamW with this run's β₁, β₂, ε and weight decay (training and `fp8 bench train` step
    /// the same optimizer).
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(self.beta1 as f32)
            .with_beta_2(self.beta2 as f32)
            .with_epsilon(self.adam_eps as f32)
            .with_weight_decay(self.weight_decay as f32)
    }

    /// The model's name in run directory names: the spec, or `hf-<directory name>` for a
    /// Hugging Face checkpoint `hf:DIR` (its full path would make unreadable names).
    pub fn model_name(&self) -> String {
        match fp8_models::hf::spec_dir(&self.model) {
            Some(dir) => {
                let name = dir
                    .canonicalize()
                    .ok()
                    .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
                format!("hf-{}", name.unwrap_or_else(|| "checkpoint".into()))
            }
            None => self.model.clone(),
        }
    }

    /// The readable part of a run directory's name: recipe, model, learning rate and seed.
    pub fn run_name_prefix(&self) -> String {
        format!(
            "{}-{}-lr{}-s{}",
            safe_name(&self.recipe_name()),
            safe_name(&self.model_name()),
            self.lr,
            self.seed
        )
    }

    /// Reject values that cannot work or mean nothing, naming the option, the value and what is
    /// allowed. Options are named as in a config file; each is also the flag `--name-with-dashes`.
    pub fn validate(&self) -> anyhow::Result<()> {
        fn bad(field: &str, value: impl std::fmt::Display, allowed: &str) -> anyhow::Result<()> {
            Err(anyhow::anyhow!("`{field}` = {value}: {allowed}"))
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let unit = |v: f64| v.is_finite() && (0.0..1.0).contains(&v);
        if self.steps == 0 {
            return bad("steps", self.steps, "must be at least 1");
        }
        if self.batch == 0 {
            return bad("batch", self.batch, "must be at least 1");
        }
        if self.seq < 2 {
            return bad(
                "seq",
                self.seq,
                "must be at least 2 (inputs and next-token targets)",
            );
        }
        if self.grad_accum == 0 {
            return bad("grad_accum", self.grad_accum, "must be at least 1");
        }
        if !positive(self.lr) {
            return bad("lr", self.lr, "must be a finite number > 0");
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0) {
            return bad("min_lr", self.min_lr, "must be a finite number ≥ 0");
        }
        if self.min_lr > self.lr {
            return bad(
                "min_lr",
                self.min_lr,
                &format!("must not exceed the peak `lr` = {}", self.lr),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                self.weight_decay,
                "must be a finite number ≥ 0",
            );
        }
        if !(self.clip.is_finite() && self.clip >= 0.0) {
            return bad(
                "clip",
                self.clip,
                "must be a finite number ≥ 0 (0 turns clipping off)",
            );
        }
        if !unit(self.beta1) {
            return bad("beta1", self.beta1, "must be in [0, 1)");
        }
        if !unit(self.beta2) {
            return bad("beta2", self.beta2, "must be in [0, 1)");
        }
        if !positive(self.adam_eps) {
            return bad("adam_eps", self.adam_eps, "must be a finite number > 0");
        }
        if !(self.divergence_threshold.is_finite() && self.divergence_threshold > 1.0) {
            return bad(
                "divergence_threshold",
                self.divergence_threshold,
                "must be a finite number > 1 (a multiple of the first loss)",
            );
        }
        if !positive(self.sharpness_eps) {
            return bad(
                "sharpness_eps",
                self.sharpness_eps,
                "must be a finite number > 0",
            );
        }
        if self.eval_batches == 0 {
            return bad("eval_batches", self.eval_batches, "must be at least 1");
        }
        if self.log_every == 0 {
            return bad("log_every", self.log_every, "must be at least 1");
        }
        self.inspect_blocks()?;
        let mut names = std::collections::BTreeSet::new();
        for path in &self.counterfactuals {
            let name = recipe_stem(path);
            if !names.insert(name.clone()) {
                return bad(
                    "counterfactuals",
                    path.display(),
                    &format!("a second recipe named `{name}` (names are file stems; rename one)"),
                );
            }
        }
        if let Some(label) = &self.recipe_label {
            if label.trim().is_empty() {
                return bad("recipe_label", "\"\"", "must not be empty");
            }
        }
        Ok(())
    }

    /// The block geometry of `inspect`, `None` when inspection is off; with counterfactuals
    /// and no `inspect`, 1×32 blocks.
    pub fn inspect_blocks(&self) -> anyhow::Result<Option<DynamicRangeBlocks>> {
        let Some(text) = &self.inspect else {
            return Ok(
                (!self.counterfactuals.is_empty()).then_some(DynamicRangeBlocks {
                    size: 32,
                    two_d: false,
                }),
            );
        };
        let parsed = text.split_once(['x', 'X']).and_then(|(r, c)| {
            let (r, c) = (
                r.trim().parse::<usize>().ok()?,
                c.trim().parse::<usize>().ok()?,
            );
            match (r, c) {
                (_, 0) => None,
                (1, c) => Some(DynamicRangeBlocks {
                    size: c,
                    two_d: false,
                }),
                (r, c) if r == c => Some(DynamicRangeBlocks {
                    size: c,
                    two_d: true,
                }),
                _ => None,
            }
        });
        match parsed {
            Some(b) => Ok(Some(b)),
            None => anyhow::bail!(
                "`inspect` = {text:?}: must be 1xN (blocks of N elements along a row) or NxN \
                 (N×N tiles), N ≥ 1"
            ),
        }
    }

    /// Learning rate at `step`: linear warm-up to `lr`, then cosine decay to `min_lr` at the
    /// last step (nanoGPT's schedule).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + coeff * (self.lr - self.min_lr)
    }
}

/// A recipe file's name in results, tags and checkpoints: its file's stem (`recipe` when it has
/// none).
pub fn recipe_stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "recipe".into(), |s| s.to_string_lossy().into_owned())
}

/// `s` with every character other than ASCII letters, digits, `-` and `.` replaced by `_`, for
/// directory names.
pub fn safe_name(s: &str) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    let name: String = s.chars().map(|c| if keep(c) { c } else { '_' }).collect();
    name.trim_start_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let c = TrainConfig {
            lr: 1.0,
            min_lr: 0.1,
            warmup: 4,
            steps: 14,
            ..TrainConfig::default()
        };
        assert_eq!(c.lr_at(0), 0.25);
        assert_eq!(c.lr_at(3), 1.0);
        assert_eq!(c.lr_at(4), 1.0);
        // Half-way through the decay: min + (max-min)/2.
        assert!((c.lr_at(9) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(14) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn config_file_round_trips_and_errors_have_positions() {
        let c = TrainConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.ron");
        std::fs::write(
            &p,
            ron::ser::to_string_pretty(&c, Default::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(TrainConfig::from_file(&p).unwrap(), c);
        std::fs::write(&p, "(steps: 10,\n lr: \"fast\")").unwrap();
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("run.ron:2:"), "{e}");
        std::fs::write(&p, "(stepz: 10)").unwrap();
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("stepz"), "{e}");
    }

    #[test]
    fn meaningless_options_are_rejected_by_name() {
        let ok = TrainConfig::default();
        ok.validate().unwrap();
        let cases: Vec<(TrainConfig, &str)> = vec![
            (
                TrainConfig {
                    beta1: 2.0,
                    ..ok.clone()
                },
                "`beta1` = 2",
            ),
            (
                TrainConfig {
                    beta2: 1.5,
                    ..ok.clone()
                },
                "`beta2` = 1.5",
            ),
            (
                TrainConfig {
                    adam_eps: -1.0,
                    ..ok.clone()
                },
                "`adam_eps` = -1",
            ),
            (
                TrainConfig {
                    weight_decay: -0.1,
                    ..ok.clone()
                },
                "`weight_decay` = -0.1",
            ),
            (
                TrainConfig {
                    min_lr: 1.0,
                    lr: 0.1,
                    ..ok.clone()
                },
                "`min_lr` = 1",
            ),
            (
                TrainConfig {
                    sharpness_eps: f64::NAN,
                    ..ok.clone()
                },
                "`sharpness_eps` = NaN",
            ),
            (
                TrainConfig {
                    divergence_threshold: f64::INFINITY,
                    ..ok.clone()
                },
                "`divergence_threshold` = inf",
            ),
            (
                TrainConfig {
                    divergence_threshold: f64::NAN,
                    ..ok.clone()
                },
                "`divergence_threshold` = NaN",
            ),
            (
                TrainConfig {
                    log_every: 0,
                    ..ok.clone()
                },
                "`log_every` = 0",
            ),
            (
                TrainConfig {
                    lr: f64::NAN,
                    ..ok.clone()
                },
                "`lr` = NaN",
            ),
        ];
        for (c, needle) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with(needle), "{e} should start with {needle}");
        }
    }
}
