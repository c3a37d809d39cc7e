//! From a configuration to what a run needs: every option checked, the recipe read once (its
//! text is part of the run's identity and is what gets built), the model configuration resolved
//! with the run's seed, the run's identity and directory. Nothing here writes a file.

use crate::config::TrainConfig;
use crate::identity::RunIdentity;
use anyhow::{bail, Context};
use fp8_io::data::{DataSpec, TokenDataset};
use fp8_models::ModelConfig;
use std::path::PathBuf;

/// A configuration with everything it names read and checked.
pub struct Resolved {
    pub cfg: TrainConfig,
    /// The recipe file's text (built by [`Resolved::recipe`]).
    pub recipe_text: String,
    pub model: ModelConfig,
    pub identity: RunIdentity,
    pub data: DataSpec,
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
    let mut model = ModelConfig::from_preset_or_file(&cfg.model)
        .with_context(|| format!("`model` = {:?}", cfg.model))?;
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
    let identity = RunIdentity::new(cfg, &recipe_text, &model);
    Ok(Resolved {
        cfg: cfg.clone(),
        recipe_text,
        model,
        identity,
        data,
    })
}

impl Resolved {
    /// The run directory: the configured one, or `runs/<prefix>-<id>`.
    pub fn run_dir(&self) -> PathBuf {
        self.cfg
            .run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(self.identity.dir_name(&self.cfg)))
    }

    /// A fresh instance of the recipe.
    pub fn recipe(&self) -> anyhow::Result<Box<dyn fp8_core::Recipe>> {
        Ok(fp8_core::recipe::from_ron_str(
            &self.recipe_text,
            &self.cfg.recipe.display().to_string(),
        )?)
    }

    /// Load the data and check that it fits the model and sequence length.
    pub fn load_data(&self) -> anyhow::Result<TokenDataset> {
        let data = self
            .data
            .load()
            .with_context(|| format!("loading `data` = {:?}", self.cfg.data))?;
        if data.vocab_size > self.model.vocab_size {
            bail!(
                "the data uses {} token ids but the model's vocabulary has {}: pick a model with \
                 a larger vocab_size",
                data.vocab_size,
                self.model.vocab_size
            );
        }
        for (name, split) in [("train", &data.train), ("validation", &data.val)] {
            if split.len() <= self.cfg.seq + 1 {
                bail!(
                    "the {name} split has {} tokens, too few for `seq` = {}",
                    split.len(),
                    self.cfg.seq
                );
            }
        }
        Ok(data)
    }
}
