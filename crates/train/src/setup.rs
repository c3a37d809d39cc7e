//! From a configuration to what a run needs: every option checked, the recipe read once (its
//! text is part of the run's identity and is what gets built), the model configuration resolved
//! with the run's seed (for `hf:DIR`, the checkpoint read, checked and hashed), the run's
//! identity and directory. Nothing here writes a file.

use crate::config::TrainConfig;
use crate::identity::RunIdentity;
use anyhow::{bail, Context};
use fp8_io::data::{DataSpec, TokenDataset};
use fp8_models::{HfCheckpoint, Model, ModelConfig};
use std::path::PathBuf;

/// A configuration with everything it names read and checked.
pub struct Resolved {
    pub cfg: TrainConfig,
    /// The recipe file's text (built by [`Resolved::recipe`]).
    pub recipe_text: String,
    pub model: ModelConfig,
    /// The Hugging Face checkpoint the run starts from (`model` = `hf:DIR`), checked and hashed.
    pub hf: Option<HfCheckpoint>,
    pub identity: RunIdentity,
    pub data: DataSpec,
    /// The counterfactual recipes' names and texts (`cfg.counterfactuals`), checked.
    pub counterfactuals: Vec<(String, String)>,
}

/// Check every option of `cfg` and read the recipe and model files it names; see the module
/// docs. Loading the data (which may take a while) is left to [`Resolved::load_data`].
pub fn resolve(cfg: &TrainConfig) -> anyhow::Result<Resolved> {
    cfg.validate()?;
    crate::backend::check_device(&cfg.device)?;
    let origin = cfg.recipe.display().to_string();
    let recipe_text = std::fs::read_to_string(&cfg.recipe)
        .with_context(|| format!("cannot read recipe file {origin}"))?;
    // Built once here to report a bad recipe before any work; the run builds its own.
    fp8_core::recipe::from_ron_str(&recipe_text, &origin)?;
    let hf = match fp8_models::hf::spec_dir(&cfg.model) {
        Some(dir) => {
            Some(HfCheckpoint::open(dir).with_context(|| format!("`model` = {:?}", cfg.model))?)
        }
        None => None,
    };
    let mut model = match &hf {
        Some(ckpt) => ckpt.config.clone(),
        None => ModelConfig::from_preset_or_file(&cfg.model)
            .with_context(|| format!("`model` = {:?}", cfg.model))?,
    };
    // The run's seed draws the initial weights too, so a seed sweep varies initialization.
    model.seed = cfg.seed;
    crate::recipe_check::check(&recipe_text, &origin, &model.sites())?;
    if cfg.seq > model.context {
        bail!(
            "`seq` = {}: exceeds the model's context of {} tokens",
            cfg.seq,
            model.context
        );
    }
    let data = DataSpec::parse(&cfg.data).with_context(|| format!("`data` = {:?}", cfg.data))?;
    let weights = hf.as_ref().map(|c| c.sha256.as_str());
    let counterfactuals = read_counterfactuals(cfg, &model)?;
    let identity = RunIdentity::new(cfg, &recipe_text, &model, weights)
        .with_counterfactuals(counterfactuals.clone());
    Ok(Resolved {
        cfg: cfg.clone(),
        recipe_text,
        model,
        hf,
        identity,
        data,
        counterfactuals,
    })
}

/// Read and check every counterfactual recipe file: `(name, text)` in the configured order.
fn read_counterfactuals(
    cfg: &TrainConfig,
    model: &ModelConfig,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for path in &cfg.counterfactuals {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("`counterfactuals`: cannot read recipe file {origin}"))?;
        fp8_core::recipe::from_ron_str(&text, &origin)
            .with_context(|| format!("`counterfactuals`: {origin}"))?;
        crate::recipe_check::check(&text, &origin, &model.sites())
            .with_context(|| format!("`counterfactuals`: {origin}"))?;
        out.push((crate::config::recipe_stem(path), text));
    }
    Ok(out)
}

/// Refuse data the model cannot train on: token ids beyond its vocabulary (they would index past
/// the embedding), or a split too short for one sequence of `seq` tokens and its target.
pub fn check_data(data: &TokenDataset, model: &ModelConfig, seq: usize) -> anyhow::Result<()> {
    if data.vocab_size > model.vocab_size {
        bail!(
            "the data uses {} token ids but the model's vocabulary has {}: pick a model with \
             a larger vocab_size",
            data.vocab_size,
            model.vocab_size
        );
    }
    for (name, split) in [("train", &data.train), ("validation", &data.val)] {
        if split.len() <= seq + 1 {
            bail!(
                "the {name} split has {} tokens, too few for `seq` = {}",
                split.len(),
                seq
            );
        }
    }
    Ok(())
}

impl Resolved {
    /// The run directory: the configured one, or `runs/<prefix>-<id>`.
    pub fn run_dir(&self) -> PathBuf {
        self.cfg
            .run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(self.identity.dir_name(&self.cfg)))
    }

    /// The model the run starts from: the HF checkpoint's weights, or a fresh initialization
    /// from the run's seed.
    pub fn init_model<B: burn::tensor::backend::Backend>(
        &self,
        device: &B::Device,
    ) -> anyhow::Result<Model<B>> {
        match &self.hf {
            Some(ckpt) => ckpt
                .load(device)
                .with_context(|| format!("`model` = {:?}", self.cfg.model)),
            None => Ok(self.model.init(device)),
        }
    }

    /// A fresh instance of the recipe.
    pub fn recipe(&self) -> anyhow::Result<Box<dyn fp8_core::Recipe>> {
        Ok(fp8_core::recipe::from_ron_str(
            &self.recipe_text,
            &self.cfg.recipe.display().to_string(),
        )?)
    }

    /// The precision context of a training run: the recipe bound to the model's sites, with
    /// the configured inspection and counterfactual recipes.
    pub fn context(&self) -> anyhow::Result<fp8_core::PrecisionContext> {
        let sites = self.model.sites();
        let mut ctx = fp8_core::PrecisionContext::for_sites(self.recipe()?, &sites)?;
        ctx.set_inspection(self.cfg.inspect_blocks()?);
        for (name, text) in &self.counterfactuals {
            let mut recipe = fp8_core::recipe::from_ron_str(text, name)?;
            recipe.bind_sites(&sites)?;
            ctx.add_counterfactual(name, recipe);
        }
        Ok(ctx)
    }

    /// Load the data and check that it fits the model and sequence length.
    pub fn load_data(&self) -> anyhow::Result<TokenDataset> {
        let data = self
            .data
            .load()
            .with_context(|| format!("loading `data` = {:?}", self.cfg.data))?;
        check_data(&data, &self.model, self.cfg.seq)?;
        Ok(data)
    }
}
